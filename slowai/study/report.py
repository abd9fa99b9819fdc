"""Turning the storage into an answer: per-candidate statistics, report.md, CSV/JSON rows and plots.

Everything here reads the Optuna storage only (no in-process state), so a report can be rebuilt at any time, by any
worker, from whatever has finished.
"""

from __future__ import annotations

import csv
import json
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from slowai.study import claims
from slowai.study import storage as st
from slowai.study.spec import Candidate
from slowai.study.stats import DiffCI, MeanCI, mean_ci, welch_diff
from slowai.summary import Summary, summarize


@dataclass
class CandidateResult:
    """The confirmed numbers of one candidate (test accuracy over seeds) and what they cost."""

    name: str
    runs: list[FrozenTrial]
    best: FrozenTrial | None
    tune_counts: dict[str, int]
    acc: MeanCI | None = None
    diff: DiffCI | None = None
    params: int = 0
    mflops: float = 0.0
    seconds_per_epoch: float = math.nan
    wall_s: float = math.nan
    published: Mapping[str, float] | None = None

    @property
    def finished_tune(self) -> int:
        return self.tune_counts.get("complete", 0) + self.tune_counts.get("pruned", 0)

    @property
    def accs(self) -> list[float]:
        return [float(t.user_attrs["test_accuracy"]) for t in self.runs]

    @property
    def valid_acc(self) -> float:
        """Mean best validation accuracy of the confirm runs (the tutorial reports the best-validation checkpoint's)."""
        return _mean([t.user_attrs.get("best_valid_accuracy") for t in self.runs])


@dataclass
class StudyResult:
    """All candidates of a study as read from the storage; `.rows` are the confirm runs (one per seed)."""

    name: str
    dataset: str
    reference: str
    storage_url: str
    candidates: list[CandidateResult]
    storage: Any = field(repr=False, default=None)
    data_source: str | None = None
    data_note: str = ""

    def optuna_study(self, candidate: str, stage: str = "tune") -> optuna.Study:
        """The underlying Optuna study, e.g. for `.trials_dataframe()` or optuna.visualization."""
        return optuna.load_study(study_name=st.optuna_name(self.name, candidate, stage), storage=self.storage)

    def trials_dataframe(self, stage: str = "tune") -> Any:
        """One pandas frame of every candidate's trials of `stage` (Optuna's own `trials_dataframe`, concatenated)."""
        import pandas as pd

        frames = []
        for c in self.candidates:
            try:
                frames.append(self.optuna_study(c.name, stage).trials_dataframe().assign(candidate=c.name))
            except KeyError:  # no such Optuna study yet
                continue
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per confirm run: what results.csv/json hold."""
        return [_row(self, c, t) for c in self.candidates for t in c.runs]


def _row(res: StudyResult, c: CandidateResult, t: FrozenTrial) -> dict[str, Any]:
    a = t.user_attrs
    return {
        "study": res.name,
        "dataset": res.dataset,
        "data_source": a.get("data_source"),
        "candidate": c.name,
        "seed": a.get("seed"),
        "trial": t.number,
        "test_accuracy": a.get("test_accuracy"),
        "test_loss": a.get("test_loss"),
        "best_valid_accuracy": a.get("best_valid_accuracy"),
        "params": a.get("params"),
        "mflops": a.get("mflops"),
        "seconds_per_epoch": a.get("seconds_per_epoch"),
        "wall_time_s": a.get("wall_time_s"),
        "wandb_run_id": a.get("wandb_run_id"),
        "git_commit": a.get("git_commit"),
        **{f"hp_{k}": v for k, v in t.params.items()},
    }


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else math.nan


def collect(
    storage: Any,
    name: str,
    candidates: list[str],
    reference: str,
    dataset: str,
    url: str,
    published: Mapping[str, Mapping[str, float]] | None = None,
) -> StudyResult:
    """Read tune/confirm trials of every candidate; confirm runs count only if they used the current best params.

    `published` maps candidate -> reference numbers to print beside ours, e.g. {"valid": 0.9184, "test": 0.91}."""
    names = st.existing_names(storage)
    out, seen = [], []
    for cand in candidates:
        tn = st.optuna_name(name, cand, "tune")
        tune = optuna.load_study(study_name=tn, storage=storage).get_trials() if tn in names else []
        complete = [t for t in tune if t.state == TrialState.COMPLETE]
        best, runs = claims.confirmed_runs(storage, name, cand)
        counts = {
            s.name.lower(): sum(t.state == s for t in tune) for s in TrialState if any(t.state == s for t in tune)
        }
        r = CandidateResult(cand, runs, best, counts, published=(published or {}).get(cand))
        seen += runs or complete
        if runs:
            r.acc = mean_ci(r.accs)
            r.params, r.mflops = int(runs[0].user_attrs["params"]), float(runs[0].user_attrs["mflops"])
            r.seconds_per_epoch = _mean([t.user_attrs.get("seconds_per_epoch") for t in runs])
            r.wall_s = _mean([t.user_attrs.get("wall_time_s") for t in runs])
        out.append(r)
    ref = next((c for c in out if c.name == reference), None)
    for c in out:
        if ref is not None and ref.runs and c.runs and c.name != reference:
            c.diff = welch_diff(c.accs, ref.accs)
    return StudyResult(name, dataset, reference, url, out, storage, *_data_source(seen))


def _data_source(trials: list[FrozenTrial]) -> tuple[str | None, str]:
    """Where the data came from and how faithful it is, as the trials recorded it (one dataset per study)."""
    t = next((t for t in reversed(trials) if "data_source" in t.user_attrs), None)
    return (None, "") if t is None else (t.user_attrs["data_source"], t.user_attrs.get("data_note", ""))


# ------------------------------------------------------------------------------------------- tables
def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.2f}"


def _signed(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:+.2f}"


def _hp(best: FrozenTrial | None) -> str:
    if best is None:
        return "n/a"
    hp = best.user_attrs.get("hyperparams") or best.params  # what trained, fixed values of the space included
    return ", ".join(f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}" for k, v in hp.items())


HEADERS = [
    "candidate",
    "n",
    "valid acc %",
    "test acc % (95% CI)",
    "Δ vs ref (95% CI)",
    "p",
    "params",
    "MFLOPs",
    "s/epoch",
    "best hp",
]
PUBLISHED = "published valid / test %"


def _has_published(res: StudyResult) -> bool:
    return any(c.published for c in res.candidates)


def headers(res: StudyResult) -> list[str]:
    """HEADERS, plus the published numbers' column when any candidate has them."""
    return HEADERS + [PUBLISHED] if _has_published(res) else HEADERS


def _published(p: Mapping[str, float] | None) -> str:
    return "" if not p else f"{_pct(p.get('valid', math.nan))} / {_pct(p.get('test', math.nan))}"


def table_rows(res: StudyResult) -> list[list[str]]:
    """The comparison table as strings, one row per candidate (reference first)."""
    extra = _has_published(res)
    order = sorted(res.candidates, key=lambda c: c.name != res.reference)
    rows = []
    for c in order:
        if c.acc is None:
            acc = "not confirmed yet"
        elif c.acc.n < 2:
            acc = _pct(c.acc.mean)
        else:
            acc = f"{_pct(c.acc.mean)} ± {100 * c.acc.half_width:.2f}"
        if c.name == res.reference:
            delta, p = "reference", ""
        elif c.diff is None:
            delta, p = "n/a", ""
        else:
            ci = "" if math.isnan(c.diff.lo) else f" [{_signed(c.diff.lo)}, {_signed(c.diff.hi)}]"
            delta, p = f"{_signed(c.diff.delta)}{ci}", "n/a" if math.isnan(c.diff.p) else f"{c.diff.p:.3g}"
        spe = "n/a" if math.isnan(c.seconds_per_epoch) else f"{c.seconds_per_epoch:.1f}"
        row = [c.name, str(len(c.runs)), _pct(c.valid_acc), acc, delta, p, f"{c.params:,}", f"{c.mflops:.1f}", spe]
        rows.append(row + [_hp(c.best)] + [_published(c.published)] * extra)
    return rows


def markdown_table(res: StudyResult) -> str:
    hs = headers(res)
    align = ["---" if h in ("candidate", "best hp") else "---:" for h in hs]
    lines = ["| " + " | ".join(hs) + " |", "| " + " | ".join(align) + " |"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in table_rows(res)])


def text_table(res: StudyResult) -> str:
    """The same table aligned for a terminal."""
    rows = [headers(res), *table_rows(res)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# ------------------------------------------------------------------------------------------- files
def slug(name: str) -> str:
    """'timm/resnet18' -> 'timm-resnet18' for file names."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def write_rows(res: StudyResult, out: Path) -> None:
    rows = res.rows
    keys = list(dict.fromkeys(k for r in rows for k in r)) or ["candidate"]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    (out / "results.json").write_text(json.dumps(rows, indent=2, default=str))


def model_summaries(res: StudyResult, candidates: list[Candidate]) -> dict[str, Summary]:
    """Per-layer summaries of the models the confirm runs trained (tuned model kwargs and input shape included)."""
    out = {}
    for c in candidates:
        r = next((x for x in res.candidates if x.name == c.name), None)
        t = (r.runs or [r.best]) if r is not None and (r.runs or r.best) else []
        a = t[0].user_attrs if t else {}
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
    plots = make_plots(res, out)
    summaries = model_summaries(res, candidates)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"# Study `{res.name}` on {res.dataset}",
        f"_Generated {now}. Test accuracy over confirm seeds; reference: `{res.reference}`._",
        "## Comparison",
        markdown_table(res),
        "Test accuracy in %, mean ± half-width of the 95% t-interval over seeds (n); valid acc is the mean best "
        "validation accuracy of the same runs. Δ is candidate minus reference in accuracy points with its Welch 95% "
        "CI; p is Welch's two-sided t-test. MFLOPs are per sample (forward), s/epoch is the mean training-epoch time "
        "of the confirm runs. Best hp: the tuned hyperparameters retrained.",
        "## Data",
        _data_text(res),
        "## Tuning",
        "\n".join(
            f"- `{c.name}`: {_counts(c)}; best valid acc {_pct(c.best.value if c.best else math.nan)} %"
            for c in res.candidates
        ),
    ]
    if plan_text:
        parts += ["## Plan", f"```\n{plan_text}\n```"]
    parts += ["## Plots", *(f"![{p.stem}]({p.name})" for p in plots)]
    parts += ["## Model summaries", *(f"### {k}\n\n{s.to_markdown()}" for k, s in summaries.items())]
    parts += [
        "## Trained models",
        "Each confirm run's final weights are in `artifacts/` (Optuna's artifact store, linked to their trials):\n\n"
        f"```python\nimport slowai\n\nmodel = slowai.load_model({str(out)!r}, {res.reference!r})  # best valid acc"
        f"\nmodel = slowai.load_model({str(out)!r}, {res.reference!r}, seed=0)\n```",
        "## Where the trials are",
        f"```\n{st.cli_hint(res.storage_url)}\n"
        f"optuna trials --study-name '{st.optuna_name(res.name, res.reference, 'tune')}' "
        f"--storage {res.storage_url}\n```",
    ]
    if sync_command or wandb_project:
        wb = [f"W&B project `{wandb_project}`, group `{res.name}`; one run per trial."] if wandb_project else []
        if sync_command:
            wb.append(f"Runs were written offline; upload them with:\n\n```\n{sync_command}\n```")
        parts += ["## W&B", *wb]
    path = out / "report.md"
    path.write_text("\n\n".join(parts) + "\n")
    return path


def _data_text(res: StudyResult) -> str:
    """Which copy of the dataset the numbers come from, and how faithful it is (it bounds the comparison with
    published numbers)."""
    if res.data_source is None:
        return f"{res.dataset}; source not recorded (trials from an older slowai)."
    text = f"{res.dataset} read from `{res.data_source}`" + (f": {res.data_note}." if res.data_note else ".")
    if _has_published(res):
        gaps = [
            f"`{c.name}` {_signed(c.acc.mean - c.published['test'])}"
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


# ------------------------------------------------------------------------------------------- plots
def make_plots(res: StudyResult, out: Path) -> list[Path]:
    """Accuracy vs cost, learning curves, and Optuna's history/importance plots; a plot that cannot be drawn
    (e.g. importances from one trial) is skipped rather than failing the report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for fn in (_plot_cost, _plot_curves):
        fig = fn(res, plt)
        if fig is not None:
            paths.append(_save(fig, out / f"{fn.__name__.removeprefix('_plot_')}.png", plt))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c in res.candidates:
            for kind in ("history", "importance"):
                try:
                    study = res.optuna_study(c.name, "tune")
                    vis = optuna.visualization.matplotlib
                    fn = vis.plot_optimization_history if kind == "history" else vis.plot_param_importances
                    ax = fn(study)
                    ax.set_title(f"{c.name}: {ax.get_title()}")
                    paths.append(_save(ax.figure, out / f"optuna_{kind}_{slug(c.name)}.png", plt))
                except Exception:  # noqa: BLE001 - too few trials for this plot
                    plt.close("all")
    return paths


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_cost(res: StudyResult, plt: Any) -> Any:
    from matplotlib import ticker

    done = [c for c in res.candidates if c.acc is not None]
    if not done:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (xlabel, xs) in zip(
        axes, [("parameters", [c.params for c in done]), ("wall time per confirm run (s)", [c.wall_s for c in done])]
    ):
        for c, x in zip(done, xs):
            err = 0 if math.isnan(c.acc.half_width) else 100 * c.acc.half_width
            ax.errorbar(x, 100 * c.acc.mean, yerr=err, fmt="o", capsize=4, label=c.name)
            ax.annotate(c.name, (x, 100 * c.acc.mean), textcoords="offset points", xytext=(6, 6))
        ax.set(xscale="log", xlabel=xlabel, ylabel="test accuracy % (95% CI)")
        plain = ticker.FuncFormatter(lambda v, _: f"{v:,.0f}")  # "200", not "2 × 10^2"
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain if max(xs) / min(xs) < 10 else ticker.NullFormatter())
        ax.grid(alpha=0.3)
    axes[0].set_title("accuracy vs size")
    axes[1].set_title("accuracy vs time")
    return fig


def _plot_curves(res: StudyResult, plt: Any) -> Any:
    from matplotlib import ticker

    done = [c for c in res.candidates if c.runs]
    if not done:
        return None
    fig, axes = plt.subplots(1, len(done), figsize=(4 * len(done), 3.5), squeeze=False, sharey=True)
    for ax, c in zip(axes[0], done):
        for t in c.runs:
            h = t.user_attrs.get("history", [])
            ax.plot(
                [r["epoch"] + 1 for r in h],
                [100 * (r.get("valid_accuracy") or 0) for r in h],
                "o-",
                label=f"seed {t.user_attrs['seed']}",
            )
        ax.set(title=c.name, xlabel="epoch", ylabel="valid accuracy %")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return fig
