"""The open study engine: a user's dataset, optimizer, schedule, width and callbacks in a study, validated up front,
fingerprinted on resume, and the winner's weights loadable afterwards."""

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

import slowai
from slowai.study import Budget, Candidate, StudyError, StudySpec, main, route, run_study
from slowai.study.coordination.storage import open_storage
from slowai.study.spec import optuna_name
from slowai.train import evaluate

ROOT = Path(__file__).resolve().parents[1]
TINY = Budget(trials=2, tune_epochs=1, tune_subset=256, seeds=2, confirm_epochs=1, confirm_subset=256, bs=64)


def digits_space(trial):
    """The README's example space: optimizer, schedule (with a conditional warm-up) and width."""
    hp = {
        "lr": trial.suggest_float("lr", 1e-3, 3e-1, log=True),
        "opt": trial.suggest_categorical("opt", ["adamw", "sgd"]),
        "sched": trial.suggest_categorical("sched", ["onecycle", "cosine"]),
        "model.width": trial.suggest_categorical("model.width", [4, 8]),
        "train.bs": 32,
    }
    if hp["sched"] == "cosine":
        hp["sched.warmup"] = trial.suggest_float("sched.warmup", 0.0, 0.3)
    return hp


def spec(out, **kw):
    kw = {"name": "eng", "candidates": ["plain", "residual"], "dataset": "digits", "space": digits_space} | kw
    return StudySpec(out=out, progress=False, wandb="disabled", **kw)


def tune_trials(out, name, cand, stage="tune"):
    storage = open_storage(str(out / "optuna.journal"))
    return optuna.load_study(study_name=optuna_name(name, cand, stage), storage=storage).get_trials()


# ------------------------------------------------------------------------------------------- routing
def test_space_keys_route_to_model_optimizer_schedule_data_and_training():
    hp = {"lr": 0.1, "opt": "sgd", "opt.nesterov": True, "sched": "cosine", "sched.warmup": 0.1}
    hp |= {"model.width": 4, "data.augment": True, "train.bs": 32, "train.label_smoothing": 0.1}
    cfg = route(hp, recipe="onecycle")
    assert (cfg.lr, cfg.opt, cfg.sched, cfg.bs, cfg.label_smoothing) == (0.1, "sgd", "cosine", 32, 0.1)
    assert cfg.opt_kw == {"nesterov": True}  # the recipe's AdamW weight decay does not leak into SGD
    assert cfg.sched_kw == {"warmup": 0.1} and cfg.model_kw == {"width": 4} and cfg.data_kw == {"augment": True}


def test_bare_lr_and_weight_decay_keep_working_with_the_recipe_defaults():
    cfg = route({"lr": 3e-3, "weight_decay": 1e-4}, recipe="tutorial_sgd")
    assert (cfg.opt, cfg.sched) == ("sgd", "multistep")
    assert cfg.opt_kw == {"momentum": 0.9, "weight_decay": 1e-4}


@pytest.mark.parametrize(
    "key, message",
    [("width", "model kwargs are 'model.width'"), ("train.epochs", "unknown key 'train.epochs'"), ("foo.x", "valid:")],
)
def test_unroutable_keys_are_one_line_errors(key, message):
    with pytest.raises(StudyError, match=message) as e:
        route({"lr": 0.1, key: 1})
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------- bad input, up front
def bad_space(extra):
    return lambda trial: {"lr": trial.suggest_float("lr", 1e-3, 1e-1, log=True), **extra}


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"opt": "adamx"}, "unknown optimizer 'adamx'; registered: adam, adamw"),
        ({"opt": "sgd", "opt.betas": (0.9, 0.99)}, "optimizer 'sgd' has no option opt.betas; valid:"),
        ({"sched": "cosine", "sched.warmup": 1.5}, "warmup"),
        ({"model.widht": 4}, "model 'plain' rejects model.widht=4"),
        ({"data.augmnet": True}, "the dataset has no option data.augmnet; valid: data."),
        ({"train.bs": 0}, "train.bs must be >= 1"),
    ],
)
def test_bad_spaces_fail_before_any_trial_with_one_line(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    code = main(
        "eng", ["plain"], ["--quick", "--out", str(out), "--no-progress"], space=bad_space(extra), dataset="digits"
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and message in err and "\n" not in err, err
    assert not out.exists()


def test_unknown_dataset_settings_are_one_line_errors():
    with pytest.raises(StudyError, match="dataset 'digits' has no setting 'val_size'; valid: valid_pct, split_seed"):
        StudySpec(name="x", candidates=["plain"], dataset="digits", data_kwargs={"val_size": 100})


def test_unknown_dataset_lists_the_registered_ones(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # argparse: the registry's names are the choices
        main("eng", ["plain"], ["--dataset", "mnist", "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "digits" in capsys.readouterr().err
    with pytest.raises(StudyError, match="unknown dataset 'mnist'; registered: .*digits.*fashion_mnist"):
        StudySpec(name="x", candidates=["plain"], dataset="mnist")


# ------------------------------------------------------------------------------------------- a user's study
@pytest.fixture(scope="module")
def digits_study(tmp_path_factory):
    """A quick study on digits tuning optimizer, schedule and width, with a study callback counting its calls."""
    out = tmp_path_factory.mktemp("digits")
    seen = []

    class CountBatches(slowai.Callback):
        def __init__(self):
            self.n = 0

        def after_batch(self):
            self.n += 1

    def count(ctx):
        seen.append((ctx.candidate.name, ctx.stage, ctx.config.model_kw.get("width"), ctx.dls.train.bs))
        return CountBatches()

    res = run_study(spec(out, callbacks=[count]), budget=TINY, log=lambda s: None)
    return out, res, seen


@pytest.mark.slow
def test_study_callbacks_see_every_run_with_its_routed_config(digits_study):
    out, _, seen = digits_study
    assert len(seen) == 2 * (TINY.trials + TINY.seeds)
    assert {s[1] for s in seen} == {"tune", "confirm"} and {s[3] for s in seen} == {32}  # train.bs from the space
    assert {s[2] for s in seen} <= {4, 8}


@pytest.mark.slow
def test_params_and_flops_are_those_of_the_model_actually_trained(digits_study):
    out, res, _ = digits_study
    for t in tune_trials(out, "eng", "plain"):
        width = t.params["model.width"]
        expected = sum(
            p.numel() for p in slowai.create_model("plain", in_chans=1, num_classes=10, width=width).parameters()
        )
        assert t.user_attrs["params"] == expected and t.user_attrs["train_config"]["model.width"] == width
    rows = json.loads((out / "results.json").read_text())
    assert {r["candidate"] for r in rows} == {"plain", "residual"} and all(r["dataset"] == "digits" for r in rows)


@pytest.mark.slow
def test_load_model_returns_the_trained_winner_with_its_reported_test_accuracy(digits_study):
    out, res, _ = digits_study
    for cand in res.candidates:
        for t in cand.runs:
            model = slowai.load_model(out, cand.name, seed=t.user_attrs["seed"])
            dls = slowai.create_dataset("digits", bs=64, device="cpu", subset=TINY.confirm_subset)
            assert evaluate(model, dls.test)["accuracy"] == t.user_attrs["test_accuracy"]
    best = slowai.load_model(out, "residual")
    assert (
        best.slowai_run["seed"]
        == max(
            res.candidates[1].runs, key=lambda t: (t.user_attrs["best_valid_accuracy"], -t.user_attrs["seed"])
        ).user_attrs["seed"]
    )
    assert not best.training and isinstance(best, torch.nn.Module)


@pytest.mark.slow
@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"candidates": [Candidate("plain", "plain", {"init": "default"}), "residual"]},
            "candidate.init (none) → 'default'",
        ),
        ({"pruner": "none"}, "pruner 'median' → 'none'"),
        ({"seed": 1}, "seed 0 → 1"),
        ({"space": lambda t: {"lr": t.suggest_float("lr", 1e-3, 1e-1, log=True)}}, "space.distributions"),
        ({"data_kwargs": {"split_seed": 7}}, "data.settings.split_seed 42 → 7"),
    ],
)
def test_resuming_with_changed_settings_is_refused_naming_the_change(digits_study, tmp_path, change, message):
    out = digits_study[0]
    before = (out / "optuna.journal").read_bytes()
    with pytest.raises(StudyError, match="was run with other settings") as e:
        run_study(spec(out, **change), budget=TINY, log=lambda s: None)
    assert message in str(e.value) and "new --study-name" in str(e.value), str(e.value)
    assert (out / "optuna.journal").read_bytes() == before  # nothing written


@pytest.mark.slow
def test_the_digits_study_script_runs_quick_from_the_command_line(tmp_path):
    env = os.environ | {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path)}
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "studies.digits", "--quick", "--no-progress", "--out", str(out)]
    proc = subprocess.run(
        [*cmd, "--no-compile", "--amp"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "on digits" in proc.stdout and "| residual |" in (out / "report.md").read_text()
    assert len(list((out / "artifacts").iterdir())) == 4  # 2 candidates × 2 confirm seeds
    assert "note: --amp (bf16 autocast) is a GPU speed-up; ignored on cpu" in proc.stdout


@pytest.mark.slow
def test_a_study_with_compile_trains_compiled_models_and_records_it(tmp_path):
    fixed = lambda trial: {"lr": 3e-3, "train.bs": 32}  # noqa: E731 - one architecture: one compile
    s = spec(tmp_path, candidates=["conv"], space=fixed, compile=True, channels_last=True)
    run_study(s, budget=TINY.with_(trials=1, seeds=1), log=lambda m: None)
    for stage in ("tune", "confirm"):
        (t,) = tune_trials(tmp_path, "eng", "conv", stage)
        assert t.user_attrs["accel"] == ["ChannelsLastCB", "CompileCB"] and t.state.name == "COMPLETE"
    model = slowai.load_model(tmp_path, "conv")
    assert not hasattr(model, "_slowai_compiled")  # saved weights load into a plain, uncompiled module


def test_a_compiled_module_is_reused_with_each_new_trials_seeded_weights():
    from types import SimpleNamespace

    from slowai.study.execution.trial import TrialRunner
    from slowai.study.space import TrainConfig

    runner = TrialRunner(spec(Path("unused")), tracker=None, accel={}, commit=None)
    dls = SimpleNamespace(input_shape=(1, 8, 8), n_classes=10)
    ctx = SimpleNamespace(candidate=Candidate("plain", "plain"), config=TrainConfig(1e-3, "adamw", "onecycle"), dls=dls)
    first = slowai.create_model("plain", in_chans=1, num_classes=10)
    assert runner._reuse_compiled(ctx, first) is first
    torch.manual_seed(1)
    second = slowai.create_model("plain", in_chans=1, num_classes=10)
    reused = runner._reuse_compiled(ctx, second)
    assert reused is first  # the already compiled module, now holding the new trial's initial weights
    assert all(torch.equal(a, b) for a, b in zip(reused.state_dict().values(), second.state_dict().values()))


def test_the_estimate_counts_channels_last_as_measured_on_cpu_and_not_on_a_gpu():
    from slowai import accel
    from slowai.study.planning import speedups

    s = spec(Path("unused"), candidates=["plain"])
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    cl = accel.CHANNELS_LAST_SPEEDUP["plain"]
    assert speedups.speedups(s, {"plain": ["channels_last"]}, cpu) == {"plain": (cl, 0.0)}
    assert speedups.speedups(s, {"plain": ["channels_last"]}, gpu) == {"plain": (1.0, 0.0)}  # not measured there
    factor, once = speedups.speedups(s, {"plain": ["channels_last", "compile"]}, cpu)["plain"]
    assert factor == pytest.approx(cl * accel.COMPILE_SPEEDUP["plain"])  # compile's gain is over channels-last's
    assert once == accel.COMPILE_COST_S["cold"]
    other = spec(Path("unused"), candidates=["conv"])
    assert speedups.speedups(other, {"conv": []}, cpu) == {"conv": (1.0, 0.0)}


def test_speed_ups_are_chosen_by_rule_kept_on_resume_and_overridden_by_flags():
    from slowai.study.planning import speedups
    from slowai.study.planning.plan import DataSizes, Throughput

    s = spec(Path("unused"), candidates=["plain"])
    sizes = DataSizes(10_000, 2_000, 50_000, 10_000, 10_000)
    slow, fast = {"plain": Throughput(50.0, 500.0)}, {"plain": Throughput(1e6, 1e6)}
    cpu, quiet = torch.device("cpu"), lambda msg: None
    big = Budget(trials=6, tune_epochs=2, seeds=3, confirm_epochs=3)
    assert "compile" in speedups.decide(s, big, sizes, slow, cpu, {}, quiet)["plain"]  # hours of training: compile
    assert "compile" not in speedups.decide(s, TINY, sizes, fast, cpu, {}, quiet)["plain"]  # seconds: not worth it
    stored = {"plain": {"accel": {"plain": ["channels_last"]}}}
    assert speedups.decide(s, big, sizes, slow, cpu, stored, quiet)["plain"] == ["channels_last"]  # a resume keeps it
    forced = spec(Path("unused"), candidates=["plain"], compile=True, channels_last=False)
    assert speedups.decide(forced, TINY, sizes, fast, cpu, stored, quiet)["plain"] == ["compile"]
