"""Confirm seeds trained fused in a study (`--fuse`): each member is still its own Optuna trial, W&B run, saved model
and results row, with the numbers of the unfused run of its seed."""

import json
import re

import optuna
import pytest
import torch

import slowai
from slowai.study import Budget, StudySpec, main, read_offline_run, run_study
from slowai.study.coordination.storage import open_storage
from slowai.study.execution.tracking import offline_runs
from slowai.study.planning import fusion
from slowai.study.spec import optuna_name

CANDS = ["conv", "plain"]
SEEDS = 3
BUDGET = Budget(trials=1, tune_epochs=1, tune_subset=256, seeds=SEEDS, confirm_epochs=2, confirm_subset=None, bs=64)


def fixed_space(trial):
    """One point: both studies confirm the same hyperparameters, so their runs of seed s are the same run."""
    return {"lr": trial.suggest_categorical("lr", [3e-3]), "weight_decay": 1e-4}


def run(out, fuse):
    # Neither trains channels-last or compiled: those change the float sums of the unfused runs on their own.
    spec = StudySpec(
        name="fused",
        candidates=CANDS,
        dataset="digits",
        out=out,
        progress=False,
        space=fixed_space,
        fuse=fuse,
        channels_last=False,
        compile=False,
    )
    run_study(spec, budget=BUDGET, log=lambda s: None)
    return out


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("wandb_home")
        for k, v in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(home)}.items():
            mp.setenv(k, v)
        yield run(tmp_path_factory.mktemp("off"), "off"), run(tmp_path_factory.mktemp("fused"), SEEDS)


def confirm_trials(out, cand):
    study = optuna.load_study(
        study_name=optuna_name("fused", cand, "confirm"), storage=open_storage(str(out / "optuna.journal"))
    )
    return sorted(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: t.user_attrs["seed"])


@pytest.mark.slow
def test_each_fused_member_has_the_numbers_of_the_unfused_run_of_its_seed(studies):
    off, fused = studies
    for cand in CANDS:
        alone, together = confirm_trials(off, cand), confirm_trials(fused, cand)
        assert [t.user_attrs["seed"] for t in together] == [t.user_attrs["seed"] for t in alone] == [0, 1, 2]
        for a, b in zip(alone, together):
            assert "fused" not in a.user_attrs and b.user_attrs["fused"] == SEEDS
            assert abs(a.value - b.value) <= 0.005  # test accuracy within half a point (fp32 sums in another order)
            losses = [[r["train_loss"] for r in t.user_attrs["history"]] for t in (a, b)]
            assert losses[1] == pytest.approx(losses[0], rel=1e-3)  # fp32: float sums in another order


@pytest.mark.slow
def test_each_fused_member_is_its_own_trial_wandb_run_saved_model_and_row(studies):
    _, out = studies
    for cand in CANDS:
        runs = confirm_trials(out, cand)
        assert len({t.user_attrs["wandb_run_id"] for t in runs}) == SEEDS
        for t in runs:
            model = slowai.load_model(out, cand, seed=t.user_attrs["seed"])
            dls = slowai.digits(bs=128)
            assert slowai.evaluate(model, dls.test)["accuracy"] == pytest.approx(t.value, abs=1e-9)
    members = [read_offline_run(d) for d in offline_runs(out / "wandb")]
    confirm = [r for r in members if r["job_type"] == "confirm"]
    assert len(confirm) == SEEDS * len(CANDS) and all(len(r["history"]) == 2 for r in confirm)
    rows = json.loads((out / "results.json").read_text())
    assert sorted((r["candidate"], r["seed"]) for r in rows) == sorted((c, s) for c in CANDS for s in range(SEEDS))


def plan_lines(argv, capsys):
    assert main("digits", ["plain"], ["--dataset", "digits", "--plan-only", *argv]) == 0
    return [line.strip() for line in capsys.readouterr().out.splitlines() if "fused runs" in line]


@pytest.mark.slow
def test_the_plan_says_which_candidates_fuse_and_why_not(tmp_path, capsys):
    out = ["--out", str(tmp_path)]
    (line,) = plan_lines(["--fuse", "3", "--candidates", "plain", "densenet_tutorial", *out], capsys)
    assert line.startswith("fused runs: plain 3 at once (--fuse 3") and " · densenet_tutorial off: " in line
    assert "cannot fuse" in line or "torch.cat" in line or "concatenat" in line, line
    (quick,) = plan_lines(["--quick", *out], capsys)  # auto: two seeds a round, too little work to measure
    assert quick.startswith("fused runs: off: too little confirm work to be worth measuring")
    assert plan_lines(["--fuse", "off", *out], capsys) == ["fused runs: off (--fuse off)"]


def test_an_explicit_fuse_is_measured_where_the_confirm_work_is_worth_it_so_the_estimate_counts_it():
    spec = StudySpec(name="explicit", candidates=["plain"], dataset="digits", fuse=8)
    budget = Budget(trials=2, tune_epochs=1, tune_subset=256, seeds=8, confirm_epochs=1, confirm_subset=256, bs=64)
    shapes, cpu = {"plain": ((1, 8, 8), 10, 64)}, torch.device("cpu")

    def decided(confirm_s):
        return fusion.decide(spec, budget, {"plain": confirm_s}, shapes, cpu, {}, {"plain": []})["plain"]

    big = decided(fusion.EXPLICIT_MIN_S)
    assert big.k == 8 and big.speedup != 1.0
    assert re.fullmatch(r"8 at once \(--fuse 8; 8 fused measured \d+\.\d× the seeds per second\)", big.why)
    assert decided(fusion.EXPLICIT_MIN_S - 1) == fusion.Fusion(8, "8 at once (--fuse 8)")  # not worth measuring


@pytest.mark.parametrize("bad", ["0", "x", "-2", "2.5"])
def test_a_bad_fuse_value_is_one_error_line(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main("digits", ["plain"], ["--dataset", "digits", "--fuse", bad, "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: argument --fuse: must be auto, off or a number of seeds >= 1") and "\n" not in err


def test_a_spec_refuses_a_fuse_setting_it_cannot_run():
    with pytest.raises(slowai.StudyError, match="fuse must be 'auto', 'off' or a number of seeds >= 2"):
        StudySpec(name="s", candidates=["plain"], fuse=1)


# ------------------------------------------------------------------------------------------- fused tune trials
def varied_space(trial):
    """Draws that keep the model's shapes: members differ in lr, weight decay, label smoothing and warm-up only."""
    return {
        "lr": trial.suggest_float("lr", 1e-3, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True),
        "train.label_smoothing": trial.suggest_float("train.label_smoothing", 0.0, 0.2),
        "sched": "cosine",
        "sched.warmup": trial.suggest_float("sched.warmup", 0.0, 0.5),
    }


def tune_trials(fuse, out, wandb="disabled"):
    spec = StudySpec(
        name="tunefused", candidates=["plain"], dataset="digits", out=out, progress=False, space=varied_space,
        fuse=fuse, channels_last=False, compile=False, pruner="none", wandb=wandb,
    )  # fmt: skip
    # two trials: both are TPE's random start-up draws, the same whether drawn one after the other or together (a
    # fused batch past the start-up is drawn like K parallel workers': without each other's results)
    budget = Budget(trials=2, tune_epochs=2, tune_subset=256, seeds=1, confirm_epochs=1, confirm_subset=256, bs=64)
    run_study(spec, budget=budget, log=lambda s: None)
    study = optuna.load_study(
        study_name=optuna_name("tunefused", "plain", "tune"), storage=open_storage(str(out / "optuna.journal"))
    )
    return sorted(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: t.user_attrs["slot"])


@pytest.mark.slow
def test_tune_trials_that_keep_the_shapes_train_fused_each_with_its_own_lr_decay_smoothing_and_warm_up(
    tmp_path, monkeypatch
):
    for k, v in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path / "home")}.items():
        monkeypatch.setenv(k, v)
    alone, together = tune_trials("off", tmp_path / "off"), tune_trials(2, tmp_path / "fused", wandb="offline")
    for run in (read_offline_run(d) for d in offline_runs(tmp_path / "fused" / "wandb")):
        if run["job_type"] == "tune":  # every epoch in each member's run, the model summary table too
            assert [h["_step"] for h in run["history"] if "valid/accuracy" in h] == [0, 1]
    assert sum(any(k.startswith("model_summary") for h in r["history"] for k in h) for r in map(
        read_offline_run, offline_runs(tmp_path / "fused" / "wandb"))) == 1  # fmt: skip
    assert [t.user_attrs.get("fused") for t in together] == [2, 2] and len({t.params["lr"] for t in together}) == 2
    assert len({t.params["sched.warmup"] for t in together}) == 2
    for a, b in zip(alone, together):
        assert a.params == b.params  # each slot draws with its own seeded sampler, whoever pops it
        losses = [[r["train_loss"] for r in t.user_attrs["history"]] for t in (a, b)]
        assert losses[1] == pytest.approx(losses[0], rel=1e-3)
        assert b.value == pytest.approx(a.value, abs=0.01)


class Trial:
    """Stands in for an Optuna trial: prunes where told, records what it was told."""

    def __init__(self, prune_at: int | None) -> None:
        self.prune_at, self.reports, self.attrs = prune_at, [], {}

    def report(self, value, step):
        self.reports.append(step)

    def should_prune(self):
        return self.prune_at is not None and self.reports[-1] >= self.prune_at

    def set_user_attr(self, k, v):
        self.attrs[k] = v


def test_a_pruned_member_stops_counting_while_the_others_train_on():
    from functools import partial

    from slowai.study.execution.fused_trial import FusedPruningCB

    trials = [Trial(None), Trial(0), Trial(None)]
    make = partial(slowai.create_model, "conv", in_chans=1, num_classes=10, width=4)
    pruning = FusedPruningCB(trials)
    learn = slowai.fit_fused(make, [0, 1, 2], slowai.digits(bs=64), 1e-3, 3, cbs=[pruning])
    assert (
        pruning.pruned == {1: "pruned after epoch 1/3"} and trials[1].attrs["stop_reason"] == "pruned after epoch 1/3"
    )
    assert [t.reports for t in trials] == [[0, 1, 2], [0], [0, 1, 2]]  # never pruned after the last epoch
    assert learn.cb(slowai.FusedTrainCB).stopped == {1: "pruned after epoch 1/3"}
