"""Ablation designs, paired seeds and sequential seeds in real (tiny) studies: what a reviewer of the table needs."""

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn as nn
from optuna.trial import TrialState

from slowai.core import Callback
from slowai.data import TensorLoader
from slowai.study import Ablation, Budget, Candidate, StudyError, StudySpec, main, run_study
from slowai.study.analysis.verdicts import Design, seeds_needed
from slowai.study.coordination.storage import open_storage
from slowai.study.seeds import confirm_seeds
from slowai.study.spec import optuna_name

ROOT = Path(__file__).resolve().parents[1]
TINY = Budget(trials=1, tune_epochs=1, tune_subset=256, seeds=2, confirm_epochs=2, confirm_subset=256, bs=64)
FIXED_LR = {"lr": 3e-3, "weight_decay": 1e-4}

FACTORS = {
    "skip": {"on": {}, "off": {"skip": False}},
    "act": {"generalrelu": {}, "relu": {"act": nn.ReLU}, "silu": {"act": nn.SiLU}},
}


# ------------------------------------------------------------------------------------------- designs
def test_one_at_a_time_varies_each_other_level_around_the_base():
    ab = Ablation(Candidate("full", "residual"), FACTORS, design="one-at-a-time")
    assert [c.name for c in ab.candidates] == ["full", "skip=off", "act=relu", "act=silu"]
    assert ab.reference == "full"
    assert ab.candidates[1].kwargs == {"skip": False} and ab.candidates[3].kwargs == {"act": nn.SiLU}
    assert ab.candidates[3].levels == {"skip": "on", "act": "silu"}


def test_leave_one_out_removes_each_component_once_with_its_last_level():
    ab = Ablation(Candidate("full", "residual", {"width": 4}), FACTORS, design="leave-one-out")
    assert [c.name for c in ab.candidates] == ["full", "skip=off", "act=silu"]
    assert ab.candidates[2].kwargs == {"width": 4, "act": nn.SiLU}  # the base's own kwargs stay


def test_factorial_runs_every_combination_with_the_base_first():
    ab = Ablation(Candidate("base", "residual"), FACTORS, design="factorial")
    assert len(ab.candidates) == 6 and ab.candidates[0].name == "base"
    assert "skip=off,act=silu" in [c.name for c in ab.candidates]


@pytest.mark.parametrize(
    "factors, design, message",
    [
        (FACTORS, "random", "unknown ablation design 'random'"),
        ({}, "factorial", "at least one factor"),
        ({"skip": {"on": {}}}, "factorial", "needs at least two levels"),
        ({"skip": {"on": {}, "off": False}}, "factorial", "give model kwargs as a dict"),
    ],
)
def test_bad_ablations_say_what_to_fix(factors, design, message):
    with pytest.raises(StudyError, match=message):
        Ablation(Candidate("full", "residual"), factors, design=design)


# ------------------------------------------------------------------------------------------- paired seeds
def _epoch_batches(loader: TensorLoader, model_draws: int) -> list[torch.Tensor]:
    """One epoch's label batches while a 'model' draws `model_draws` numbers from the global RNG per batch."""
    out = []
    for _, yb in loader:
        torch.randn(model_draws)  # e.g. dropout in one architecture and not in another
        out.append(yb)
    return out


def test_a_reseeded_loader_gives_the_same_batches_whatever_the_model_draws():
    x, y = torch.zeros(100, 1, 2, 2, dtype=torch.uint8), torch.arange(100)
    loader = TensorLoader(x, y, bs=16, shuffle=True)
    loader.reseed(7)
    a = _epoch_batches(loader, 0)
    torch.manual_seed(123)
    loader.reseed(7)
    b = _epoch_batches(loader, 1000)
    assert all(torch.equal(i, j) for i, j in zip(a, b))
    loader.reseed(8)
    assert not all(torch.equal(i, j) for i, j in zip(a, _epoch_batches(loader, 0)))


# ------------------------------------------------------------------------------------------- studies
def spec(out, candidates, **kw):
    kw = {"name": "abl", "dataset": "digits", "space": lambda t: dict(FIXED_LR)} | kw
    return StudySpec(candidates=candidates, out=out, progress=False, wandb="disabled", **kw)


def test_sequential_seeds_run_rounds_until_the_rule_stops(tmp_path):
    """Confirm runs per candidate are exactly what the sequential rule asks for, and the report says so."""
    s = spec(tmp_path, ["plain", "residual"], reference="plain")
    budget = TINY.with_(max_seeds=4)
    res = run_study(s, budget=budget, log=lambda m: None)
    runs = {c.name: c.by_seed for c in res.candidates}
    need = seeds_needed(runs, "plain", Design(confirm_seeds(s, budget, 4), 2, 4, s.margin))
    assert {c: len(r) for c, r in runs.items()} == need
    assert need["plain"] >= need["residual"] >= 2
    verdicts = json.loads((tmp_path / "verdicts.json").read_text())
    (comp,) = verdicts["comparisons"]
    assert comp["method"] == "paired" and comp["pairs"] == need["residual"]
    assert comp["verdict"] in ("better", "worse", "equivalent", "inconclusive")
    assert verdicts["design"]["first"] == 2 and verdicts["design"]["last"] == 4
    rows = json.loads((tmp_path / "results.json").read_text())
    assert {r["verdict"] for r in rows if r["candidate"] == "residual"} == {comp["verdict"]}
    text = (tmp_path / "report.md").read_text()
    assert "How to read the verdicts" in text and "sequential looks at 2..4 seeds" in text
    assert "Over the learning curve" in text and (tmp_path / "epoch_effects.png").exists()


def test_factorial_study_reports_main_effects_and_the_interaction(tmp_path):
    ab = Ablation(
        Candidate("relu+default", "plain", {"act": nn.ReLU, "init": "default", "width": 4}),
        {"act": {"relu": {}, "generalrelu": {"act": True}}, "init": {"default": {}, "leaky": {"init": "leaky"}}},
        design="factorial",
    )
    res = run_study(spec(tmp_path, ab.candidates, reference=ab.reference), budget=TINY, log=lambda m: None)
    assert [e.name for e in res.effects] == ["act", "init", "act×init"]
    text = (tmp_path / "report.md").read_text()
    assert "## Factorial effects" in text and "act: relu → generalrelu; init: default → leaky" in text


class DivergeCB(Callback):
    """Turns the loss into NaN in the second epoch: a confirm run that blows up after tuning went fine."""

    def after_loss(self) -> None:
        if self.learn.epoch == 1:
            self.learn.loss = self.learn.loss * float("nan")


def diverge_wild_confirms(ctx):
    return DivergeCB() if ctx.stage == "confirm" and ctx.candidate.name == "wild" else None


def test_a_diverged_confirm_run_is_counted_and_named(tmp_path):
    """A run whose loss blows up is reported with its reason and kept in the numbers, never silently dropped."""
    s = spec(tmp_path, ["plain", Candidate("wild", "plain", {"width": 4})], reference="plain")
    s.callbacks = (diverge_wild_confirms,)
    res = run_study(s, budget=TINY, log=lambda m: None)
    wild = next(c for c in res.candidates if c.name == "wild")
    assert len(wild.runs) == 2 and len(wild.diverged) == 2
    assert wild.diff.n == 2  # both diverged runs are in the comparison
    text = (tmp_path / "report.md").read_text()
    assert "`wild` seed 0 diverged (non-finite train loss" in text and "counted at its test accuracy" in text


def test_resnet_ablation_command_prints_the_ablation_table(tmp_path, capsys):
    argv = ["--dataset", "digits", "--quick", "--trials", "1", "--seeds", "2", "--out", str(tmp_path)]
    assert main("resnet_ablation", _resnet_ablation(), argv + ["--wandb", "disabled", "--no-progress"]) == 0
    out = capsys.readouterr().out
    for arm in ("skip=off", "act=relu", "init=default", "norm=none", "shortcut=stride"):
        assert arm in out
    assert "changed vs full" in out and "Δ params" in out


def _resnet_ablation() -> Ablation:
    from studies.resnet_ablation import ABLATION

    return ABLATION


@pytest.mark.slow
def test_sequential_rounds_are_shared_by_local_workers(tmp_path):
    """With two worker processes every round is claimed once: seeds per candidate follow the rule, no duplicates."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "studies.digits", "--quick", "--max-seeds", "4", "--workers", "2", "--epochs", "2"]
    cmd += ["--out", str(out), "--wandb", "disabled", "--no-progress"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=600)
    storage = open_storage(str(out / "optuna.journal"))
    runs = {}
    for cand in ("residual", "plain"):
        conf = optuna.load_study(study_name=optuna_name("digits-digits-quick", cand, "confirm"), storage=storage)
        seeds = [t.user_attrs["seed"] for t in conf.get_trials(states=(TrialState.COMPLETE,))]
        assert len(seeds) == len(set(seeds))
        runs[cand] = {s: t.value for s, t in zip(seeds, conf.get_trials(states=(TrialState.COMPLETE,)))}
    need = seeds_needed(runs, "plain", Design(list(range(4)), 2, 4, 0.003))
    assert {c: len(r) for c, r in runs.items()} == need
    assert all(t.state != TrialState.RUNNING for c in runs for t in _all(storage, c))


def _all(storage, cand):
    return optuna.load_study(
        study_name=optuna_name("digits-digits-quick", cand, "confirm"), storage=storage
    ).get_trials()
