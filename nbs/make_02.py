"""Generate nbs/02_residual_vs_plain.ipynb (outputs empty; CI executes it with SLOWAI_NB_QUICK=1)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell(
        "# Residual vs plain vs timm ResNet18\n\n"
        "Runs the study behind `python -m studies.residual_vs_plain` through the public API, then reads the "
        "results back: the Optuna trials, the report, the model summaries and the offline W&B runs. "
        "With `SLOWAI_NB_QUICK=1` (as in CI) it runs the `--quick` budget in a temporary directory."
    ),
    new_code_cell(
        "import os, tempfile\n"
        "from pathlib import Path\n"
        "from IPython.display import Image, Markdown, display\n"
        "from slowai.study import StudySpec, read_offline_run, run_study\n"
        "from slowai.study.tracking import offline_runs\n\n"
        "QUICK = os.environ.get('SLOWAI_NB_QUICK') == '1'\n"
        "os.environ.setdefault('WANDB_MODE', 'offline')\n"
        "out = Path(tempfile.mkdtemp()) / 'study' if QUICK else Path('runs/residual_vs_plain-nb')\n"
        "candidates = ['residual', 'plain'] if QUICK else ['residual', 'plain', 'timm/resnet18']"
    ),
    new_markdown_cell("## Run (or resume) the study\nThe plan and its time estimate print first."),
    new_code_cell(
        "spec = StudySpec(name='residual_vs_plain-nb', candidates=candidates, out=out, progress=not QUICK)\n"
        "res = run_study(spec, quick=QUICK)"
    ),
    new_markdown_cell("## Every trial, from the Optuna storage"),
    new_code_cell(
        "df = res.trials_dataframe('tune')\n"
        "df[['candidate', 'number', 'state', 'value', 'params_lr', 'params_weight_decay']]"
    ),
    new_code_cell("res.optuna_study('residual', 'confirm').trials_dataframe()[['number', 'value', 'user_attrs_seed']]"),
    new_markdown_cell("## The report"),
    new_code_cell(
        "display(Markdown((out / 'report.md').read_text().split('## Plan')[0]))\n"
        "display(Image(filename=str(out / 'cost.png')))"
    ),
    new_markdown_cell("## Model summaries"),
    new_code_cell(
        "from slowai.study.report import model_summaries\n"
        "for name, s in model_summaries(res, spec.candidates).items():\n"
        "    display(Markdown(f'### {name}\\n\\n' + s.to_markdown()))"
    ),
    new_markdown_cell("## The offline W&B runs, read back from their files"),
    new_code_cell(
        "runs = [read_offline_run(d) for d in offline_runs(out / 'wandb')]\n"
        "trials = [r for r in runs if r['job_type'] != 'summary']  # the other one holds the verdict table\n"
        "[(r['name'], r['config']['lr'], r['summary'].get('test_accuracy')) for r in trials]"
    ),
]


def main() -> None:
    nb = new_notebook(
        cells=CELLS, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    )
    nbformat.write(nb, Path(__file__).with_name("02_residual_vs_plain.ipynb"))


if __name__ == "__main__":
    main()
