# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Residual vs plain vs timm ResNet18
#
# Runs the study behind `python -m studies.residual_vs_plain` through the public API, then reads the results back:
# the Optuna trials, the report, the model summaries and the offline W&B runs. With `SLOWAI_NB_QUICK=1` (as in CI)
# it runs the `--quick` budget, in `runs/residual_vs_plain-nb-quick` (the full one goes to `runs/residual_vs_plain-nb`);
# run again, it resumes the study found there.
#
# **The outputs saved in this notebook come from the quick budget** (`SLOWAI_NB_QUICK=1`: residual and plain only,
# 512 images, 1 epoch, 2 trials, 2 seeds), not from the full study: without it the notebook adds timm's ResNet-18 and
# takes the biggest budget that fits 50 minutes, too long for a notebook run on a CPU. The saved accuracies are
# therefore low and the verdict inconclusive: they show what the outputs look like, not the answer.

# %%
import os
from pathlib import Path

from IPython.display import Image, Markdown, display

from slowai.study import StudySpec, model_summaries, offline_runs, read_offline_run, run_study

QUICK = os.environ.get("SLOWAI_NB_QUICK") == "1"
os.environ.setdefault("WANDB_MODE", "offline")
out = Path("runs/residual_vs_plain-nb-quick" if QUICK else "runs/residual_vs_plain-nb")
candidates = ["residual", "plain"] if QUICK else ["residual", "plain", "timm/resnet18"]

# %% [markdown]
# ## Run (or resume) the study
# The plan and its time estimate print first.

# %%
spec = StudySpec(name="residual_vs_plain-nb", candidates=candidates, out=out, progress=not QUICK)
res = run_study(spec, quick=QUICK)

# %% [markdown]
# ## Every trial, from the Optuna storage

# %%
df = res.trials_dataframe("tune")
df[["candidate", "number", "state", "value", "params_lr", "params_weight_decay"]]

# %%
res.optuna_study("residual", "confirm").trials_dataframe()[["number", "value", "user_attrs_seed"]]

# %% [markdown]
# ## The report

# %%
display(Markdown((out / "report.md").read_text().split("## Plan")[0]))
display(Image(filename=str(out / "cost.png")))

# %% [markdown]
# ## Model summaries

# %%
for name, s in model_summaries(res, spec.candidates).items():
    display(Markdown(f"### {name}\n\n" + s.to_markdown()))

# %% [markdown]
# ## The offline W&B runs, read back from their files

# %%
runs = [read_offline_run(d) for d in offline_runs(out / "wandb")]
trials = [r for r in runs if r["job_type"] != "summary"]  # the other one holds the verdict table
[(r["name"], r["config"]["lr"], r["summary"].get("test_accuracy")) for r in trials]
