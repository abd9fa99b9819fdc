"""report.md: the comparison, the answer to the study's question and how to read it, the data, tuning, failures,
the plan, plots, model summaries, and where everything is."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

from slowai.study.analysis.results import CandidateResult, StudyResult
from slowai.study.report import tables
from slowai.study.report.files import write_rows
from slowai.study.report.plots import make_plots
from slowai.study.spec import Candidate, optuna_name
from slowai.summary import Summary, summarize


def markdown_table(res: StudyResult) -> str:
    """The comparison table (with verdicts) as markdown."""
    return tables.markdown(tables.comparison(res))


def text_table(res: StudyResult) -> str:
    """What the terminal shows at the end: the comparison, then the ablation or factorial tables when there are."""
    parts = [tables.text(tables.comparison(res))]
    if res.effects:
        parts.append(tables.text(tables.effects(res)))
    elif _is_ablation(res):
        parts.append(tables.text(tables.ablation(res)))
    unconfirmed = [tables.unconfirmed(c) for c in res.candidates if c.best is None and c.tune_counts]
    return "\n\n".join(parts + tables.notes(res)[:1] + unconfirmed)


def _is_ablation(res: StudyResult) -> bool:
    return bool(res.levels)


def _answer(res: StudyResult) -> list[str]:
    """The sections that answer the question: ablation/factorial tables, curve effects, notes."""
    parts = []
    if res.effects:
        parts += [
            "## Factorial effects",
            tables.markdown(tables.effects(res)),
            "Main effect: mean test accuracy at a factor's second level minus at its first, averaged over the other "
            "factors; interaction: the difference of differences. Paired over seeds; Holm across effects (a family "
            "of its own) at α = 0.05.",
        ]
    elif _is_ablation(res):
        parts += ["## Ablation", tables.markdown(tables.ablation(res))]
    if res.epoch_effects:
        parts += [
            "## Over the learning curve",
            tables.markdown(tables.curve(res)),
            "Paired Δ validation accuracy (points) at each epoch of the confirm runs and of the curve's area (its "
            "mean); ▲/▼ where significant with Holm across this table (a family separate from the final verdicts).",
        ]
    return parts + ["## How to read the verdicts", READING, *[f"- {n}" for n in tables.notes(res)]]


READING = (
    "Each comparison is candidate − reference on test accuracy, paired by seed (seed s gives every candidate the "
    "same batches and augmentations). **better/worse**: the difference test rejects Δ = 0, and the printed "
    "interval (the one that decided, at its look's level) excludes 0; **equivalent**: the 1 − 2α interval shown "
    "lies inside ±margin (two one-sided tests); **inconclusive**: neither; the effect that many seeds would have "
    "found with 80% probability is given from 3 pairs on. adj. p is Holm-adjusted across comparisons on p-values "
    "of group-sequential boundaries that spend exactly α over the looks, so it is compared with 0.05 directly. "
    "P(better) is the chance a run of the candidate beats a run of the reference (rliable's probability of "
    "improvement, 0.5 = no difference) with a bootstrap interval over seeds. Δ adj. for early stop removes the "
    "mean bias of stopping when an effect looks large (Whitehead's estimate). ± test set is half the 95% Wilson "
    "interval of one run's accuracy on a test set that size, which no number of seeds removes."
)


def model_summaries(res: StudyResult, candidates: list[Candidate]) -> dict[str, Summary]:
    """Per-layer summaries of the models the confirm runs trained (tuned model kwargs and input shape included)."""
    out, results = {}, {r.name: r for r in res.candidates}
    for c in candidates:
        r = results.get(c.name)
        trial = (r.runs[0] if r.runs else r.best) if r is not None else None
        a = trial.user_attrs if trial is not None else {}
        if "input_shape" not in a:
            continue  # not trained yet, or trials from an older slowai that did not record the input shape
        tuned = {k.removeprefix("model."): v for k, v in a.get("train_config", {}).items() if k.startswith("model.")}
        shape = tuple(a["input_shape"])
        out[c.name] = summarize(c.build(shape[0], a["n_classes"], **tuned), input_shape=shape)
    return out


def write_report(
    res: StudyResult,
    out: Path,
    candidates: list[Candidate],
    plan_text: str = "",
    sync_command: str | None = None,
    wandb_project: str | None = None,
) -> Path:
    """report.md + results.csv/json + plots in `out`; returns the report path."""
    out.mkdir(parents=True, exist_ok=True)
    write_rows(res, out)
    plots, plot_notes = make_plots(res, out)
    parts = [*_comparison(res), *_answer(res), *_data_and_tuning(res)]
    if failed := tables.failures(res):
        parts += [
            "## Failures",
            "Trials that failed, why, and what became of them (nothing is retried forever).",
            *failed,
        ]
    if plan_text:
        parts += ["## Plan", f"```\n{plan_text}\n```"]
    parts += ["## Plots", *(f"![{p.stem}]({p.name})" for p in plots), *plot_notes]
    summaries = model_summaries(res, candidates)
    parts += ["## Model summaries", *(f"### {k}\n\n{s.to_markdown()}" for k, s in summaries.items())]
    parts += _where(res, out, sync_command, wandb_project)
    path = out / "report.md"
    path.write_text("\n\n".join(parts) + "\n")
    return path


def _comparison(res: StudyResult) -> list[str]:
    """The title and the comparison table with how to read its columns."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"# Study `{res.name}` on {res.dataset}",
        f"_Generated {now}. Test accuracy over confirm seeds; reference: `{res.reference}`._",
        "## Comparison",
        markdown_table(res),
        "Test accuracy in %, mean ± half-width of the 95% t-interval over seeds (n); valid acc is the mean best "
        "validation accuracy of the same runs. Δ is candidate minus reference in accuracy points with its 95% CI "
        "(paired by seed). MFLOPs are per sample (forward), s/epoch is the mean training-epoch time of the confirm "
        "runs. E[best valid]: expected best validation accuracy after 1 and after all N completed "
        "tuning trials (pruned ones are left out, so N may differ between arms). Best hp: "
        "the tuned hyperparameters retrained.",
    ]


def _data_and_tuning(res: StudyResult) -> list[str]:
    return [
        "## Data",
        _data_text(res),
        "## Tuning",
        "\n".join(
            f"- `{c.name}`: {_counts(c)}; best valid acc {tables.pct(c.best.value if c.best else math.nan)} %"
            for c in res.candidates
        ),
    ]


def _where(res: StudyResult, out: Path, sync_command: str | None, wandb_project: str | None) -> list[str]:
    """Where the trained models, the trials and the W&B runs are, with the commands that read them."""
    tune = optuna_name(res.name, res.reference, "tune")
    parts = [
        "## Trained models",
        "Each confirm run's final weights are in `artifacts/` (Optuna's artifact store, linked to their trials):\n\n"
        f"```python\nimport slowai\n\nmodel = slowai.load_model({_py(out)}, {_py(res.reference)})  # best valid acc"
        f"\nmodel = slowai.load_model({_py(out)}, {_py(res.reference)}, seed=0)\n```",
        "## Where the trials are",
        f"```\noptuna studies --storage {res.storage_url}\noptuna-dashboard {res.storage_url}\n"
        f"optuna trials --study-name '{tune}' --storage {res.storage_url}\n```",
    ]
    if sync_command or wandb_project:
        wb = [f"W&B project `{wandb_project}`, group `{res.name}`; one run per trial."] if wandb_project else []
        if sync_command:
            wb.append(f"Runs were written offline; upload them with:\n\n```\n{sync_command}\n```")
        parts += ["## W&B", *wb]
    return parts


def _data_text(res: StudyResult) -> str:
    """Which copy of the dataset the numbers come from, and how faithful it is (it bounds the comparison with
    published numbers)."""
    if res.data_source is None:
        return f"{res.dataset}; source not recorded (trials from an older slowai)."
    text = f"{res.dataset} read from `{res.data_source}`" + (f": {res.data_note}." if res.data_note else ".")
    if any(c.published for c in res.candidates):
        gaps = [
            f"`{c.name}` {tables.signed(c.acc.mean - c.published['test'])}"
            for c in res.candidates
            if c.acc is not None and c.published and "test" in c.published
        ]
        epochs = sorted({len(t.user_attrs.get("history", [])) for c in res.candidates for t in c.runs})
        text += (
            " Published numbers are the reference's own runs (its copy of the data, its training length; these "
            f"confirm runs trained {'/'.join(map(str, epochs)) or 'n/a'} epochs), so the gap to them, in test "
            "accuracy points, mixes both: " + (", ".join(gaps) if gaps else "n/a (nothing confirmed yet)") + "."
        )
    return text


def _counts(c: CandidateResult) -> str:
    return ", ".join(f"{n} {k}" for k, n in c.tune_counts.items()) or "no trials"


def _py(value: object) -> str:
    """A double-quoted Python string literal, as ruff formats code blocks in the Markdown a user may commit."""
    return json.dumps(str(value))
