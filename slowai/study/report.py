"""Turning results into an answer: the comparison table, report.md, CSV/JSON rows, model summaries and plots."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from optuna.trial import FrozenTrial

from slowai.study import storage as st
from slowai.study.plots import make_plots
from slowai.study.results import CandidateResult, StudyResult, collect
from slowai.study.spec import Candidate
from slowai.summary import Summary, summarize

__all__ = ["CandidateResult", "StudyResult", "collect", "markdown_table", "text_table", "write_report"]


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
