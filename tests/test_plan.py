"""One plan per study: a steady throughput probe, a preset choice that does not flip on reruns, and a plan stored
once per study (the first proposal wins, on a journal file and on PostgreSQL) that every worker then trains with."""

import contextlib
import multiprocessing
import os
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn as nn
from optuna.trial import TrialState

from slowai.data import from_tensors
from slowai.study import Budget, Candidate, StudySpec, main
from slowai.study.coordination import first_writer
from slowai.study.coordination.storage import existing_names, open_storage
from slowai.study.coordination.studies import epochs_trained
from slowai.study.data import StudyData
from slowai.study.planning import remembered, stored_plan
from slowai.study.planning.budget import CPU_PRESETS, RESERVE_ROUNDS, choose_budget
from slowai.study.planning.estimate import PRUNED_SHARE, DataSizes, estimate, tune_share
from slowai.study.planning.planner import Planner
from slowai.study.planning.probe import (
    EVAL_STEPS,
    GPU_BLOCK,
    MIN_PROBE_S,
    MIN_STEPS,
    PROBE_WARMUP,
    Throughput,
    median_seconds,
    probe,
)
from slowai.study.space import dry_draws
from slowai.study.spec import optuna_name

STAGES = ("tune", "confirm")
DIGITS = ["--dataset", "digits", "--candidates", "plain", "--wandb", "disabled", "--no-progress"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test plans into its own cache directory, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------ the probe
class Stalls(nn.Module):
    """Each training forward takes 20 ms, every fifth one 200 ms (a stall, as when another process takes the core)."""

    def __init__(self, in_chans: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_chans * 8 * 8, num_classes)
        self.calls = {True: 0, False: 0}  # by training mode

    def forward(self, x):
        self.calls[self.training] += 1
        time.sleep(0.2 if self.training and self.calls[True] % 5 == 0 else 0.02)
        return self.fc(x.flatten(1))


class Scripted(Candidate):
    """A candidate whose model is a `Stalls`, kept to count its calls."""

    built: list = []

    def build(self, in_chans, num_classes, **tuned):
        self.built.append(Stalls(in_chans, num_classes))
        return self.built[-1]


def test_probe_takes_the_median_of_at_least_ten_steps():
    dls = from_tensors(torch.rand(64, 1, 8, 8), torch.arange(64) % 4, bs=16, device="cpu")
    t0 = time.perf_counter()
    tp = probe(Scripted("stalls", "plain"), dls)
    model = Scripted.built[-1]
    assert model.calls[True] >= PROBE_WARMUP + MIN_STEPS  # two warm-ups, then >= 10 timed steps
    assert time.perf_counter() - t0 >= MIN_PROBE_S  # and >= 2 s of them
    assert 16 / 0.04 < tp.train_ips <= 16 / 0.02  # the median step, ~20 ms: the stalls (a mean of 56 ms) do not count
    assert model.calls[False] >= EVAL_STEPS


def test_a_gpu_probe_syncs_once_per_block_of_steps_as_training_runs(monkeypatch):
    """Training queues steps without waiting for each; a probe that synced every step would time launch latency."""
    syncs, calls = [], []
    monkeypatch.setattr("slowai.study.planning.probe._sync", lambda device: syncs.append(device.type))
    per_call = median_seconds(lambda: (calls.append(1), time.sleep(0.001)), torch.device("cuda"), 3, 0.0, 5.0)
    assert len(calls) == PROBE_WARMUP + 3 * GPU_BLOCK and len(syncs) == 1 + 3  # warm-up, then one sync a block
    assert 0.001 <= per_call < 0.008  # seconds per step: a block of ten takes >= 0.01 s
    calls.clear()
    median_seconds(lambda: calls.append(1), torch.device("cpu"), 3, 0.0, 5.0)
    assert len(calls) == PROBE_WARMUP + 3  # a CPU sample is one step


# ------------------------------------------------------------------------------------ hysteresis
PRESETS = tuple(Budget(trials=n, seeds=3) for n in (8, 6, 4))  # biggest first
TARGET = 1000.0


def choose(seconds_by_trials, previous=None):
    """The chosen preset's trials, for estimates given as fractions of the target."""
    b, _ = choose_budget(PRESETS, lambda b: (TARGET * seconds_by_trials[b.trials], 0.0), TARGET, None, previous)
    return b.trials


def test_a_previous_choice_is_kept_within_the_band_and_dropped_outside_it():
    near = {8: 1.20, 6: 1.05, 4: 0.60}  # 6 trials is 5% over the target: on its own, 4 would be chosen
    assert choose(near) == 4
    assert choose(near, previous=PRESETS[1]) == 6  # chosen last time and within 10%: kept
    assert choose({8: 1.20, 6: 1.15, 4: 0.60}, previous=PRESETS[1]) == 4  # 15% over: dropped
    assert choose({8: 0.95, 6: 0.70, 4: 0.50}, previous=PRESETS[1]) == 6  # a bigger one fits, but only just
    assert choose({8: 0.85, 6: 0.70, 4: 0.50}, previous=PRESETS[1]) == 8  # fits with room: taken


def test_the_last_answer_round_trips_through_the_user_cache(tmp_path):
    key = remembered.question_key(study="s", target=600.0)
    assert remembered.previous(key) is None
    remembered.remember(key, PRESETS[1].with_(max_seeds=7))
    assert remembered.previous(key) == PRESETS[1].with_(max_seeds=7)
    assert (tmp_path / "cache" / "slowai" / "plans.json").is_file()


def test_the_plan_uses_the_median_of_this_machines_last_probes():
    """One probe on a busy machine is noisy; the median of the last few (this one included) is what plans."""
    key = remembered.question_key(probe="rvp")
    medians = [remembered.smoothed(key, {"a": Throughput(ips, 2 * ips)})["a"] for ips in (100, 200, 110, 300)]
    assert [m.train_ips for m in medians] == [100, 150, 110, 155]
    assert medians[-1].eval_ips == 310
    for ips in (120,) * remembered.PROBES_KEPT:  # only the last PROBES_KEPT count
        last = remembered.smoothed(key, {"a": Throughput(ips, ips)})["a"]
    assert last == Throughput(120, 120)


def test_an_unwritable_cache_is_skipped(tmp_path, monkeypatch):
    (tmp_path / "not-a-dir").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-dir"))
    remembered.remember("k", PRESETS[0])  # no error: the cache is only a hint
    assert remembered.previous("k") is None


# ------------------------------------------------------------------------------------ --plan-only
def test_plan_only_with_a_new_journal_path_leaves_no_file(tmp_path):
    journal = tmp_path / "new" / "study.journal"
    argv = [*DIGITS, "--quick", "--plan-only", "--storage", str(journal), "--out", str(tmp_path / "out")]
    assert main("residual_vs_plain", ["plain"], argv) == 0
    assert not journal.exists() and not journal.parent.exists()


def biggest_preset_s(spec, ips, **budget):
    """The planner's estimate of the biggest CPU preset with its two reserve rounds, at `ips` img/s."""
    planner = Planner(spec, StudyData(spec, torch.device("cpu")), torch.device("cpu"), "memory")
    first, round_s = planner.preset_seconds(CPU_PRESETS[0].with_(**budget), {"plain": Throughput(ips, ips)})
    return first + RESERVE_ROUNDS * round_s


def test_two_plan_only_runs_on_one_machine_print_the_same_plan(tmp_path, monkeypatch, capsys):
    """The second probe measures 5% slower, which on its own would tip the biggest preset over the target."""
    spec = StudySpec(name="same", candidates=["plain"], dataset="digits", fuse="off")
    target_min = biggest_preset_s(spec, 20.0) * 1.03 / 60
    measured = iter([20.0, 19.0])

    def probe(*args, **kw):
        ips = next(measured)
        return Throughput(ips, ips)

    monkeypatch.setattr("slowai.study.planning.planner.probe", probe)
    argv = [*DIGITS, "--plan-only", "--study-name", "same", "--time-budget", str(target_min), "--out", str(tmp_path)]
    plans = []
    for _ in range(2):
        assert main("residual_vs_plain", ["plain"], [*argv, "--fuse", "off"]) == 0
        lines = capsys.readouterr().out.splitlines()
        plans.append([line for line in lines if line.lstrip().startswith(("tune:", "confirm:"))])
    assert plans[0] == plans[1] and f"{CPU_PRESETS[0].trials} trials" in plans[0][0]


def test_presets_are_judged_with_the_speed_ups_the_study_will_get(tmp_path, monkeypatch, capsys):
    """A target 5% over the biggest preset's channels-last estimate, which its eager estimate exceeds by 19%."""
    monkeypatch.setattr("slowai.study.planning.planner.probe", lambda *a, **kw: Throughput(20.0, 20.0))
    spec = StudySpec(name="fast", candidates=["plain"], dataset="digits", fuse="off", channels_last=True)
    faster, eager = biggest_preset_s(spec, 20.0), biggest_preset_s(replace(spec, channels_last=False), 20.0)
    assert faster < eager / 1.2  # plain's measured channels-last gain on the 2-core CPU is 1.25x
    minutes = str(faster * 1.05 / 60)
    for flag, trials in (("--channels-last", CPU_PRESETS[0].trials), ("--no-channels-last", CPU_PRESETS[1].trials)):
        argv = [*DIGITS, "--plan-only", "--fuse", "off", "--time-budget", minutes, flag, "--out", str(tmp_path)]
        assert main("residual_vs_plain", ["plain"], argv) == 0
        assert f"1 candidates × {trials} trials" in capsys.readouterr().out


def test_a_space_drawing_widths_is_probed_at_each_and_confirmed_at_the_costliest(tmp_path, monkeypatch, capsys):
    """Tuning trains the draws' mix (seconds per image averaged over them); confirm runs the tuned model, which
    tends to be the biggest, so the plan estimates them at the costliest drawn width."""
    ips = {4: 4000.0, 16: 1000.0}
    probed = []

    def probe(cand, dls, min_s, **kw):
        probed.append(kw["width"])
        return Throughput(ips[kw["width"]], 2 * ips[kw["width"]])

    def space(trial):
        return {"lr": trial.suggest_float("lr", 1e-3, 1e-1), "model.width": trial.suggest_categorical("w", [4, 16])}

    monkeypatch.setattr("slowai.study.planning.planner.probe", probe)
    argv = [*DIGITS, "--plan-only", "--fuse", "off", "--out", str(tmp_path)]
    assert main("widths", ["plain"], argv, space=space) == 0
    widths = [t.user_attrs["hp"]["model.width"] for t in dry_draws(space, 0)]
    assert sorted(probed) == [4, 16] and 0 < widths.count(16) < len(widths)  # each width once, both drawn
    mix = 1 / sum(1 / ips[w] for w in widths) * len(widths)
    assert f"plain {mix:,.0f} (confirm 1,000)" in capsys.readouterr().out


def test_a_stored_plan_is_kept_like_a_resumed_study(tmp_path, capsys):
    """Only trials and seeds may change; other epochs are refused with one line, as on resume."""
    journal = str(tmp_path / "optuna.journal")
    stored = Budget(trials=3, tune_epochs=1, tune_subset=256, seeds=2, confirm_epochs=1, confirm_subset=256, bs=64)
    stored_plan.claim(open_storage(journal), "kept", stored_plan.PlanRecord(asdict(stored), {}, {}, 60.0, 10.0))
    argv = [*DIGITS, "--plan-only", "--study-name", "kept", "--storage", journal, "--out", str(tmp_path / "out")]
    assert main("residual_vs_plain", ["plain"], [*argv, "--trials", "5"]) == 0
    assert "1 candidates × 5 trials × 1 epochs × 256 train" in capsys.readouterr().out
    assert main("residual_vs_plain", ["plain"], [*argv, "--epochs", "3"]) == 2
    assert "was planned with other settings: budget.confirm_epochs 1 → 3" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ the pruner's cut, learned
def test_the_estimate_learns_how_much_the_pruner_cuts_from_the_studys_finished_tune_trials(tmp_path):
    storage = open_storage(str(tmp_path / "optuna.journal"))
    tune = optuna.create_study(study_name=optuna_name("learned", "plain", "tune"), storage=storage)
    for epochs, state in [(10, TrialState.COMPLETE), (10, TrialState.COMPLETE), (1, TrialState.PRUNED)]:
        values = {e: 0.5 for e in range(epochs)}
        tune.add_trial(optuna.trial.create_trial(state=state, value=0.5 if epochs == 10 else None,
                                                 intermediate_values=values))  # fmt: skip
    tune.enqueue_trial({})  # waiting: not finished, so not counted
    spec = StudySpec(name="learned", candidates=["plain", "residual"], dataset="digits", out=tmp_path)
    trained = epochs_trained(spec, storage)
    assert trained == {"plain": [10, 10, 1], "residual": []}
    prior = 1 - PRUNED_SHARE * (1 - 1 / 10)
    assert tune_share(10, "median", trained["residual"]) == pytest.approx(prior)  # nothing learned yet
    assert tune_share(10, "median", trained["plain"]) == pytest.approx((2 * prior + 1 + 1 + 0.1) / 5)
    assert tune_share(10, "none", trained["plain"]) == 1.0
    b = Budget(trials=8, tune_epochs=10, tune_subset=256, seeds=2, confirm_epochs=1, confirm_subset=256, bs=64)
    sizes, speed = DataSizes(256, 64, 256, 64, 100), {"plain": Throughput(1000.0, 4000.0)}
    learned = estimate(b, sizes, speed, "median", trained={"plain": [10] * 20}).tune["plain"]
    assert learned > estimate(b, sizes, speed, "median").tune["plain"]  # trials that all ran to the end cost more


def test_fused_confirm_runs_are_estimated_at_their_measured_speed_even_where_it_is_slower():
    b = Budget(trials=2, tune_epochs=1, tune_subset=256, seeds=8, confirm_epochs=5, confirm_subset=256, bs=64)
    sizes, speed = DataSizes(256, 64, 256, 64, 100), {"plain": Throughput(1000.0, 4000.0)}
    runs = estimate(b, sizes, speed, "none").confirm["plain"]
    assert estimate(b, sizes, speed, "none", fused={"plain": 2.0}).confirm["plain"] < runs
    assert estimate(b, sizes, speed, "none", fused={"plain": 0.5}).confirm["plain"] > runs  # an explicit --fuse K


# ------------------------------------------------------------------------------------ first writer wins
def processes():
    """Separate OS processes forked from a server that imported slowai once: each starts in milliseconds, not in the
    8 s an import of torch takes here, so three of them really start together."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["slowai.study"])
    return ctx


def propose(url, study, trials, barrier, results):
    """One worker: open the storage, wait for the others, propose `trials` trials, report which plan it reads back."""
    storage = open_storage(url)
    mine = stored_plan.PlanRecord(asdict(Budget(trials=trials)), {}, {}, 60.0, 10.0)
    barrier.wait()
    won = stored_plan.claim(storage, study, mine)
    results.put({"mine": mine.token, "won": won.token, "trials": won.budget["trials"]})


def together(target, args_each):
    """Run `target(*args, barrier, results)` in one process per `args_each` item, all released at once."""
    ctx = processes()
    barrier, results = ctx.Barrier(len(args_each)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for args in args_each]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return [results.get(timeout=5) for _ in procs]


@pytest.mark.parametrize("backend", ["journal", "postgres"])
def test_the_first_of_three_concurrent_proposals_is_every_workers_plan(tmp_path, backend, request):
    if backend == "postgres":
        url, study = request.getfixturevalue("pg_server_url"), f"plan-{uuid.uuid4().hex[:12]}"
    else:
        url, study = str(tmp_path / "optuna.journal"), "race"
    try:
        read = together(propose, [(url, study, n) for n in (4, 5, 6)])  # each proposes a different budget
        storage = open_storage(url)
        trials = optuna.load_study(study_name=first_writer.records_name(study), storage=storage).get_trials()
        first = min(trials, key=lambda t: t.number)
        assert {r["won"] for r in read} == {first.user_attrs["token"]}  # all adopt the lowest-numbered proposal
        assert first.user_attrs["token"] in {r["mine"] for r in read}  # which is one of theirs, stored whole
        assert stored_plan.read(storage, study).budget["trials"] == read[0]["trials"]
    finally:
        if backend == "postgres":
            optuna.delete_study(study_name=first_writer.records_name(study), storage=open_storage(url))


def work(argv, cache, log, barrier, results):
    """One worker: the study command with `argv` (one thread, its own plan cache), its output in the file `log`."""
    os.environ["XDG_CACHE_HOME"] = cache
    torch.set_num_threads(1)
    barrier.wait()
    with open(log, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        code = main("residual_vs_plain", ["plain"], argv)
    results.put(code)


def test_three_workers_started_in_the_same_second_share_one_budget(tmp_path):
    """Each would choose another preset on its own (their time budgets differ); the stored plan makes them agree."""
    journal = str(tmp_path / "optuna.journal")
    argv = [*DIGITS, "--seeds", "2", "--study-name", "race", "--storage", journal]
    minutes = ["0.05", "0.4", "1000"]  # the smallest preset, one in between, the biggest
    each = [
        (
            [*argv, "--out", str(tmp_path / f"w{i}"), "--time-budget", m],
            str(tmp_path / "cache"),
            str(tmp_path / f"w{i}.log"),
        )
        for i, m in enumerate(minutes)
    ]
    codes = together(work, each)
    logs = [Path(log).read_text() for _, _, log in each]
    assert codes == [0, 0, 0], "\n".join(logs)
    storage = open_storage(journal)
    plan = stored_plan.read(storage, "race")
    tune, confirm = (optuna.load_study(study_name=optuna_name("race", "plain", s), storage=storage) for s in STAGES)
    assert tune.user_attrs["budget"] == confirm.user_attrs["budget"] == plan.budget
    finished = tune.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == plan.budget["trials"]
    assert {t.user_attrs["epochs"] for t in finished} == {plan.budget["tune_epochs"]}
    runs = confirm.get_trials(states=(TrialState.COMPLETE,))
    assert len(runs) == 2 and {t.user_attrs["epochs"] for t in runs} == {plan.budget["confirm_epochs"]}
    assert existing_names(storage) == {"race/plan", "race/plain/tune", "race/plain/confirm"}
    assert all("took " in log for log in logs)
