"""The report's plots from a StudyResult built by hand (no training): which files appear, and what they say."""

import math

import optuna
import pytest

from slowai.study.analysis.results import CandidateResult, StudyResult
from slowai.study.analysis.stats import mean_ci
from slowai.study.report.plots import (
    MIN_IMPORTANCE_TRIALS,
    _plot_cost,
    _pyplot,
    make_plots,
    plot_epoch_effects,
    plot_expected_max,
)
from slowai.study.spec import optuna_name

NAME = "demo"
DISTS = {
    "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
    "weight_decay": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True),
}
EFFECTS = {  # the last epoch had one seed: no interval
    "residual − plain": [
        {"epoch": 1, "delta": 0.01, "lo": -0.01, "hi": 0.03},
        {"epoch": 2, "delta": 0.02, "lo": 0.005, "hi": 0.035},
        {"epoch": 3, "delta": 0.015, "lo": math.nan, "hi": math.nan},
    ],
    "wide − plain": [{"epoch": e, "delta": -0.005 * e, "lo": -0.01 * e - 0.01, "hi": 0.01} for e in (1, 2, 3)],
}


def _tune(storage: optuna.storages.BaseStorage, cand: str, n: int) -> None:
    """A tune study with `n` complete trials whose accuracy depends mostly on lr."""
    study = optuna.create_study(study_name=optuna_name(NAME, cand, "tune"), storage=storage, direction="maximize")
    study.set_user_attr("candidate", cand)
    for i in range(n):
        lr, wd = 10 ** (-4 + 3 * i / max(n - 1, 1)), 10 ** (-6 + (4 * i * 7 % 11) / 11)
        study.add_trial(
            optuna.trial.create_trial(params={"lr": lr, "weight_decay": wd}, distributions=DISTS, value=0.8 + lr)
        )


def _candidate(name: str, wall_s: float) -> CandidateResult:
    runs = [
        optuna.trial.create_trial(
            value=0.9,
            user_attrs={
                "seed": seed,
                "test_accuracy": 0.9 + seed / 100,
                "history": [{"epoch": e, "valid_accuracy": 0.8 + e / 50} for e in range(3)],
            },
        )
        for seed in range(2)
    ]
    c = CandidateResult(name, runs, None, {}, params=200_000, wall_s=wall_s)
    c.acc = mean_ci(c.accs)
    return c


def _result(n_trials: dict[str, int], with_extras: bool = True) -> StudyResult:
    storage = optuna.storages.InMemoryStorage()
    for cand, n in n_trials.items():
        _tune(storage, cand, n)
    cands = [_candidate(c, 1.2 + 0.2 * i) for i, c in enumerate(n_trials)]
    res = StudyResult(NAME, "fashion_mnist", "plain", "sqlite:///x.db", cands, storage)
    if with_extras:
        res.epoch_effects = EFFECTS
        res.expected_max = {c: [0.80 + i / 100, 0.83 + i / 100, 0.84, 0.845] for i, c in enumerate(n_trials)}
    return res


@pytest.fixture(scope="module")
def plotted(tmp_path_factory):
    out = tmp_path_factory.mktemp("plots")
    return out, *make_plots(_result({"plain": MIN_IMPORTANCE_TRIALS, "residual": 2}), out)


def test_new_plots_written_when_data_present(plotted):
    out, paths, _ = plotted
    for png in ("epoch_effects.png", "expected_max.png", "cost.png", "curves.png"):
        assert out / png in paths and (out / png).stat().st_size > 0


def test_new_plots_skipped_without_data(tmp_path):
    paths, _ = make_plots(_result({"plain": 1}, with_extras=False), tmp_path)
    names = {p.name for p in paths}
    assert "epoch_effects.png" not in names and "expected_max.png" not in names
    assert not (tmp_path / "epoch_effects.png").exists() and not (tmp_path / "expected_max.png").exists()


def test_importance_needs_minimum_trials(plotted):
    out, paths, notes = plotted
    assert out / "optuna_importance_plain.png" in paths  # exactly MIN_IMPORTANCE_TRIALS: drawn
    assert not (out / "optuna_importance_residual.png").exists()
    assert notes == [f"parameter importance skipped for residual: 2 completed trials (< {MIN_IMPORTANCE_TRIALS})"]


def test_one_history_plot_for_all_candidates(plotted):
    out, paths, _ = plotted
    assert [p.name for p in paths if "history" in p.name] == ["optuna_history.png"]
    assert (out / "optuna_history.png").stat().st_size > 0


def _cost_tick_labels(res: StudyResult, axis: int) -> list[str]:
    """The x tick labels drawn inside the view of the cost plot's panel `axis` (0: parameters, 1: wall time)."""
    plt = _pyplot()
    fig = _plot_cost(res, plt, {c.name: "C0" for c in res.candidates})
    try:
        fig.canvas.draw()
        ax = fig.axes[axis]
        lo, hi = ax.get_xlim()
        return [t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi]
    finally:
        plt.close(fig)


def test_time_axis_ticks_distinguish_close_values():
    labels = _cost_tick_labels(_result({"a": 0, "b": 0, "c": 0}, with_extras=False), 1)  # 1.2, 1.4, 1.6 s
    assert len(labels) >= 3 and len(set(labels)) == len(labels), labels
    assert {"1.2", "1.4", "1.6"} <= set(labels), labels


def test_parameter_axis_labels_are_short_enough_not_to_overlap():
    res = _result({"plain": 0, "timm": 0}, with_extras=False)
    res.candidates[0].params, res.candidates[1].params = 309_012, 11_175_370  # the default study's span
    labels = _cost_tick_labels(res, 0)
    assert labels == ["500k", "1M", "2M", "5M", "10M"], labels  # not "500,0001,000,000..."


def test_a_candidate_has_one_colour_in_every_plot():
    from matplotlib.colors import to_hex

    plt = _pyplot()
    res = _result({"plain": 2, "residual": 2, "wide": 2})
    colors = {"plain": "C0", "residual": "C1", "wide": "C2"}
    hexes = {name: to_hex(c) for name, c in colors.items()}
    effects = plot_epoch_effects(res.epoch_effects, plt, colors).axes[0]
    best = plot_expected_max(res.expected_max, plt, colors).axes[0]
    cost = _plot_cost(res, plt, colors).axes[0]
    assert {ln.get_label(): to_hex(ln.get_color()) for ln in effects.get_lines() if "−" in ln.get_label()} == {
        "residual − plain": hexes["residual"],  # a comparison takes its candidate's colour, not the reference's
        "wide − plain": hexes["wide"],
    }
    assert {ln.get_label(): to_hex(ln.get_color()) for ln in best.get_lines()} == hexes
    assert {c.get_label(): to_hex(c.lines[0].get_color()) for c in cost.containers} == hexes
    plt.close("all")
