"""The report's plots: accuracy vs cost, learning curves, and Optuna's history and importance plots."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import optuna

from slowai.study.results import StudyResult
from slowai.utils import slug


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
