"""The report's plots: accuracy vs cost, learning curves, per-epoch effects, expected best accuracy vs tuning budget,
and Optuna's history and importance plots."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from slowai.study.analysis.results import StudyResult
from slowai.utils import slug

# fANOVA fits a random forest to (hyperparameters -> valid accuracy) of the completed trials; with only a few points
# per hyperparameter the importances are noise that reads like a finding (and they change with the forest's seed).
MIN_IMPORTANCE_TRIALS = 8
TARGET = "valid accuracy"


def make_plots(res: StudyResult, out: Path) -> tuple[list[Path], list[str]]:
    """Every plot the report embeds, plus notes on plots skipped for lack of data, so the report says why a plot is
    missing instead of failing or showing a meaningless one."""
    plt = _pyplot()
    colors = {c.name: f"C{i}" for i, c in enumerate(res.candidates)}  # one colour per candidate in every plot
    figs: dict[str, Callable[[], Any]] = {
        "cost": lambda: _plot_cost(res, plt, colors),
        "curves": lambda: _plot_curves(res, plt),
        "epoch_effects": lambda: plot_epoch_effects(res.epoch_effects, plt, colors),
        "expected_max": lambda: plot_expected_max(res.expected_max, plt, colors),
    }
    paths = [_save(fig, out / f"{name}.png", plt) for name, draw in figs.items() if (fig := draw()) is not None]
    studies = _tune_studies(res)
    with warnings.catch_warnings(), plt.rc_context():  # optuna's plots are experimental and switch to ggplot style
        warnings.simplefilter("ignore")
        notes = []
        try:
            if (ax := _plot_history(studies)) is not None:
                paths.append(_save(ax.figure, out / "optuna_history.png", plt))
        except Exception as e:  # noqa: BLE001 - a missing plot should not cost the report
            notes.append(f"tuning history skipped: {type(e).__name__}: {e}")
        for c in res.candidates:
            ax, note = _plot_importance(c.name, studies.get(c.name))
            if ax is not None:
                paths.append(_save(ax.figure, out / f"optuna_importance_{slug(c.name)}.png", plt))
            notes += [note] if note else []
            plt.close("all")
    return paths, notes


def _pyplot() -> Any:
    """pyplot on the Agg backend: reports are written by workers without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # "tight" keeps legends placed outside the axes
    plt.close(fig)
    return path


def _tune_studies(res: StudyResult) -> dict[str, optuna.Study]:
    """Candidate -> its tune study, for the candidates that have one yet."""
    out = {}
    for c in res.candidates:
        try:
            out[c.name] = res.optuna_study(c.name, "tune")
        except KeyError:  # not created yet
            continue
    return out


def _plain_formatter() -> Any:
    """Plain numbers ("1.4", "8,000", "200k", "11M", not "2 × 10^5") with just enough decimals to tell the ticks
    apart; thousands and millions are shortened so a parameter axis's labels do not run into each other."""
    from matplotlib import ticker

    class Plain(ticker.Formatter):
        digits = 0

        def set_locs(self, locs: Sequence[float]) -> None:
            lo, hi = sorted(self.axis.get_view_interval()) if self.axis is not None else (-math.inf, math.inf)
            self.digits = _decimals([x for x in locs if lo <= x <= hi] or locs)  # ticks drawn, not the ones past

        def __call__(self, x: float, pos: int | None = None) -> str:
            for at, unit, suffix in ((1e6, 1e6, "M"), (1e4, 1e3, "k")):
                if abs(x) >= at:
                    return f"{x / unit:g}{suffix}"
            return f"{x:,.{self.digits}f}"

    return Plain()


def _decimals(locs: Sequence[float]) -> int:
    """Fewest decimals that keep the ticks distinct and no nonzero tick reading "0" (1.2/1.4/1.6 -> 1, not "1 1 1")."""
    vals = [float(v) for v in locs if v and math.isfinite(v)]
    for d in range(7):
        s = [f"{v:.{d}f}" for v in vals]
        if len(set(s)) == len(s) and all(float(x) != 0 for x in s):
            return d
    return 6


def _set_x_scale(ax: Any, xs: Sequence[float]) -> None:
    """Log x only when the values span 10× or more; a log axis over a narrow range has no readable ticks."""
    from matplotlib import ticker

    pos = [x for x in xs if math.isfinite(x) and x > 0]
    if pos and max(pos) / min(pos) >= 10:
        ax.set_xscale("log")
        if max(pos) / min(pos) < 100:  # one or two decades: label 1-2-5 steps, else one label or none
            ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    else:
        ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins=5))  # room for labels such as "192,500"
    ax.xaxis.set_major_formatter(_plain_formatter())


def _plot_cost(res: StudyResult, plt: Any, colors: Mapping[str, str]) -> Any:
    done = [c for c in res.candidates if c.acc is not None]
    if not done:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (xlabel, xs) in zip(
        axes, [("parameters", [c.params for c in done]), ("wall time per confirm run (s)", [c.wall_s for c in done])]
    ):
        for c, x in zip(done, xs):
            err = 0 if math.isnan(c.acc.half_width) else 100 * c.acc.half_width
            ax.errorbar(x, 100 * c.acc.mean, yerr=err, fmt="o", capsize=4, label=c.name, color=colors[c.name])
            ax.annotate(c.name, (x, 100 * c.acc.mean), textcoords="offset points", xytext=(6, 6))
        ax.set(xlabel=xlabel, ylabel="test accuracy % (95% CI)")
        _set_x_scale(ax, xs)
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


def plot_epoch_effects(
    effects: Mapping[str, Sequence[Mapping[str, float]]], plt: Any, colors: Mapping[str, str] | None = None
) -> Any:
    """Paired Δ valid accuracy per epoch with its CI band (at the table's Holm level, so a band clear of 0 is a
    marked row): shows whether a difference is there from the start or only appears (or vanishes) late in
    training. None when there is nothing to compare. `colors` maps candidate names to colours; a comparison
    "a − b" is drawn in a's."""
    from matplotlib import ticker

    colors = colors or {}
    if max((int(r["epoch"]) for rows in effects.values() for r in rows), default=0) < 2:
        return None  # one epoch is a point, not a curve: the report's table has it
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, all_rows in effects.items():
        rows = [r for r in all_rows if int(r["epoch"]) >= 1]  # epoch 0 is the curve's area, in the table only
        x = [int(r["epoch"]) for r in rows]
        color = colors.get(label.split(" − ")[0])
        (line,) = ax.plot(x, [100 * r["delta"] for r in rows], "o-", label=label, color=color)
        lo, hi = [100 * _nan(r.get("lo")) for r in rows], [100 * _nan(r.get("hi")) for r in rows]
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.axhline(0, color="black", linewidth=0.8)
    conf = next((r["conf"] for rows in effects.values() for r in rows if "conf" in r), 0.95)
    title = f"paired difference per epoch ({100 * conf:.1f}% CI: Holm's level, as the report's table)"
    ax.set(xlabel="epoch", ylabel="Δ valid accuracy (points)", title=title)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _nan(v: float | None) -> float:
    return math.nan if v is None else float(v)


def plot_expected_max(curves: Mapping[str, Sequence[float]], plt: Any, colors: Mapping[str, str] | None = None) -> Any:
    """Expected best valid accuracy after k tuning trials: compares candidates at equal tuning budget, so one that
    only won because it got more trials shows it. None when there are no curves."""
    from matplotlib import ticker

    if not any(curves.values()):
        return None
    colors = colors or {}
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, ys in curves.items():
        ax.plot(range(1, len(ys) + 1), [100 * y for y in ys], "o-", markersize=3, label=name, color=colors.get(name))
    ax.set(
        xlabel="tuning trials k",
        ylabel="expected best valid accuracy %",
        title="expected best validation accuracy vs tuning budget (Dodge et al. 2019)",
    )
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _plot_history(studies: Mapping[str, optuna.Study]) -> Any:
    """One optimization-history plot for all candidates (comparable on one y axis), legend by candidate name."""
    from matplotlib import ticker

    if not studies:
        return None
    vis = optuna.visualization.matplotlib
    ax = vis.plot_optimization_history(list(studies.values()), target_name=TARGET)
    names = {s.study_name: s.user_attrs.get("candidate", c) for c, s in studies.items()}
    for artist in [*ax.collections, *ax.lines]:
        if not artist.get_label().startswith("_"):  # matplotlib's unlabelled artists
            artist.set_label(_candidate_label(artist.get_label(), names))
    ax.legend(bbox_to_anchor=(1.02, 1.0), loc="upper left", fontsize=8)
    ax.set_title("tuning history")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # trial numbers
    ax.figure.set_size_inches(8, 4.5)
    return ax


def _candidate_label(label: str, names: Mapping[str, str]) -> str:
    """Optuna's "Best Value of <study>/<cand>/tune" -> "<cand>: best so far" (one study: its labels name none)."""
    cand = next((c for s, c in names.items() if label.endswith(f" of {s}")), None)
    if cand is None and len(names) == 1:
        cand = next(iter(names.values()))
    if cand is None:
        return label
    return f"{cand}: {'best so far' if label.startswith('Best') else 'trials'}"


def _plot_importance(name: str, study: optuna.Study | None) -> tuple[Any, str | None]:
    """fANOVA importances (seeded, so a report is reproducible), or a note saying why there are none."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if study is not None else []
    if (n := len(trials)) < MIN_IMPORTANCE_TRIALS:
        return None, f"parameter importance skipped for {name}: {n} completed trials (< {MIN_IMPORTANCE_TRIALS})"
    vis = optuna.visualization.matplotlib
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        ax = vis.plot_param_importances(study, evaluator=evaluator, target_name=TARGET)
    except Exception as e:  # noqa: BLE001 - e.g. no hyperparameter varied: a note, not a failed report
        return None, f"parameter importance skipped for {name}: {type(e).__name__}: {e}"
    ax.set_title("", loc="left")  # optuna's own title sits at the left, where it collided with ours
    ax.set_title(f"{name}\nhyperparameter importance (fANOVA, {n} trials)")
    return ax, None
