"""End-to-end studies on tiny budgets: storage contents, offline W&B files, report files, resume, pruning, CLI."""

import json
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from slowai.study import Budget, Candidate, StudySpec, main, read_offline_run, run_study
from slowai.study.coordination.storage import open_storage
from slowai.study.execution.tracking import offline_runs
from slowai.study.spec import optuna_name

CANDS = ["conv", "plain"]
TINY = Budget(trials=2, tune_epochs=1, tune_subset=512, seeds=2, confirm_epochs=1, confirm_subset=512, bs=128)


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("wandb_home")
        for k, v in {
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
            "WANDB_DIR": str(home),
            "WANDB_CONFIG_DIR": str(home),
            "WANDB_CACHE_DIR": str(home),
        }.items():
            mp.setenv(k, v)
        yield


def spec(out, name="tiny", cands=CANDS, **kw):
    return StudySpec(name=name, candidates=cands, out=out, progress=False, **kw)


def trials(out, name, cand, stage, states=(TrialState.COMPLETE, TrialState.PRUNED)):
    study = optuna.load_study(
        study_name=optuna_name(name, cand, stage), storage=open_storage(str(out / "optuna.journal"))
    )
    return study.get_trials(states=states)


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory, wandb_env):
    out = tmp_path_factory.mktemp("study")
    run_study(spec(out), budget=TINY, log=lambda s: None)
    return out


@pytest.mark.slow
def test_storage_holds_every_trial_with_attrs(study_dir):
    for cand in CANDS:
        tune = trials(study_dir, "tiny", cand, "tune")
        conf = trials(study_dir, "tiny", cand, "confirm")
        assert len(tune) == 2 and len(conf) == 2
        assert sorted(t.user_attrs["seed"] for t in conf) == [0, 1]
        assert {t.params["lr"] for t in conf} == {
            max((t for t in tune if t.value is not None), key=lambda t: t.value).params["lr"]
        }
        for t in tune + conf:
            a = t.user_attrs
            assert a["candidate"] == cand and a["dataset"] == "fashion_mnist" and a["params"] > 0
            assert a["stage"] in ("tune", "confirm") and a["mflops"] > 0 and a["wall_time_s"] > 0
            assert "git_commit" in a and a["wandb_run_id"]
        assert all(0 <= t.user_attrs["test_accuracy"] <= 1 for t in conf)


@pytest.mark.slow
def test_one_offline_wandb_run_per_trial(study_dir):
    every = [read_offline_run(d) for d in offline_runs(study_dir / "wandb")]
    runs = [r for r in every if r["job_type"] != "summary"]
    assert len(runs) == 8  # 2 candidates x (2 tune + 2 confirm)
    (verdicts,) = [r for r in every if r["job_type"] == "summary"]  # one per report: the verdict table
    assert verdicts["name"] == "tiny-verdicts" and verdicts["config"]["design"]["first"] == 2
    assert any(k.startswith("comparison") for h in verdicts["history"] for k in h)
    assert verdicts["summary"]["verdict/conv"] in ("better", "worse", "equivalent", "inconclusive")
    names = {r["name"] for r in runs}
    assert names == {f"{c}-{s}-t{i}" for c in CANDS for s in ("tune", "confirm") for i in (0, 1)}
    for r in runs:
        cfg = r["config"]
        assert (
            r["group"] == "tiny" and r["job_type"] == cfg["stage"] and r["tags"] == [cfg["candidate"], "fashion_mnist"]
        )
        assert {"lr", "weight_decay", "seed", "trial", "params", "mflops", "study"} <= cfg.keys()
        epochs = [h for h in r["history"] if "valid/accuracy" in h]
        assert len(epochs) == 1 and {"train/loss", "valid/loss", "lr"} <= epochs[0].keys()
        assert "best_valid_accuracy" in r["summary"]
        if cfg["stage"] == "confirm":
            assert 0 <= r["summary"]["test_accuracy"] <= 1
    assert sum(any(k.startswith("model_summary") for h in r["history"] for k in h) for r in runs) == len(CANDS)
    dirs = offline_runs(study_dir / "wandb")
    assert sum((d / "files" / "requirements.txt").exists() for d in dirs) == 1  # the packages, once per process


@pytest.mark.slow
def test_report_files_name_every_candidate(study_dir):
    report = (study_dir / "report.md").read_text()
    rows = json.loads((study_dir / "results.json").read_text())
    assert len(rows) == 4 and {r["candidate"] for r in rows} == set(CANDS)
    csv_text = (study_dir / "results.csv").read_text()
    for cand in CANDS:
        assert f"| {cand} |" in report and cand in csv_text
        assert (study_dir / "optuna_history.png").stat().st_size > 0
    for png in ("cost.png", "curves.png"):
        assert (study_dir / png).stat().st_size > 0
    assert "wandb sync" in report and "optuna studies --storage" in report
    assert "| valid acc % |" in report and "published" not in report  # no candidate has published numbers
    assert "## Data\n\nfashion_mnist read from `" in report and "original Zalando IDX files" in report
    assert all(r["data_source"] and 0 <= r["best_valid_accuracy"] <= 1 for r in rows)


@pytest.mark.slow
def test_resume_adds_only_missing_trials(tmp_path):
    out = tmp_path / "resume"
    run_study(spec(out, wandb="disabled"), budget=TINY, log=lambda s: None)
    first = {c: [(t.number, t.datetime_start, t.params["lr"]) for t in trials(out, "tiny", c, "tune")] for c in CANDS}
    run_study(spec(out, wandb="disabled"), budget=TINY.with_(trials=3), log=lambda s: None)
    run_study(spec(out, wandb="disabled"), budget=TINY.with_(trials=3), log=lambda s: None)  # nothing left to do
    for c in CANDS:
        tune = trials(out, "tiny", c, "tune", states=None)
        assert [t.number for t in tune] == [0, 1, 2] and all(t.state == TrialState.COMPLETE for t in tune)
        assert [(t.number, t.datetime_start, t.params["lr"]) for t in tune[:2]] == first[c]
        assert len({t.params["lr"] for t in tune}) == 3
        best = max(tune, key=lambda t: t.value)
        current = [t for t in trials(out, "tiny", c, "confirm") if t.params == best.params]
        assert sorted(t.user_attrs["seed"] for t in current) == [0, 1]


def absurd_after_two(trial):
    """A sane lr for the first two trials, then an lr so small nothing is learned: the median pruner must stop it."""
    lr = 3e-3 if trial.number < 2 else 1e-9
    return {"lr": trial.suggest_float("lr", lr, lr), "weight_decay": 1e-4}


@pytest.mark.slow
def test_median_pruner_prunes_hopeless_trials(tmp_path):
    budget = Budget(trials=4, tune_epochs=2, tune_subset=1024, seeds=1, confirm_epochs=1, confirm_subset=256, bs=64)
    run_study(
        spec(tmp_path, cands=["conv"], wandb="disabled", space=absurd_after_two), budget=budget, log=lambda s: None
    )
    tune = trials(tmp_path, "tiny", "conv", "tune", states=None)
    assert [t.state for t in tune] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED] * 2
    assert all(t.user_attrs["stop_reason"] == "pruned after epoch 1/2" for t in tune[2:])


def test_candidates_with_model_kwargs_validate_names():
    s = StudySpec(name="x", candidates=[Candidate("relu", "residual", {"init": "default"}), "plain"])
    assert s.reference == "plain" and s.candidate("relu").describe() == {
        "model": "residual",
        "recipe": "onecycle",
        "init": "default",
    }


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--candidates", "plain", "nosuchnet"], "unknown candidate model 'nosuchnet'"),
        (["--candidates", "plain", "timm/nosuchnet"], "unknown timm model"),
        (["--storage", "foo://bar"], "unreadable storage URL"),
        (["--data-root", "/nonexistent/slowai-data"], "fashion_mnist data not found"),
        (["--reference", "residual", "--candidates", "plain", "conv"], "reference 'residual' is not a candidate"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main("residual_vs_plain", ["residual", "plain"], ["--out", str(out), "--quick", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--trials", "--seeds", "--epochs"])
def test_counts_below_one_are_usage_errors(tmp_path, capsys, flag):
    with pytest.raises(SystemExit) as e:
        main("residual_vs_plain", ["plain"], ["--out", str(tmp_path / "o"), flag, "0"])
    assert e.value.code == 2 and "must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_command_help_documents_every_flag():
    out = subprocess.run(
        [sys.executable, "-m", "studies.residual_vs_plain", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in (
        "--dataset",
        "--candidates",
        "--trials",
        "--epochs",
        "--seeds",
        "--pruner",
        "--storage",
        "--study-name",
        "--out",
        "--data-root",
        "--device",
        "--wandb",
        "--quick",
    ):
        assert flag in out


@pytest.mark.slow
def test_residual_vs_plain_runs_every_default_candidate_on_cifar10(tmp_path, cifar_root):
    argv = ["--dataset", "cifar10", "--quick", "--subset", "64", "--out", str(tmp_path), "--data-root", str(cifar_root)]
    assert main("residual_vs_plain", ["residual", "plain", "timm/resnet18"], [*argv, "--wandb", "disabled"]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    params = {r["candidate"]: r["params"] for r in rows}
    # built for 3 input channels (on 1-channel Fashion-MNIST: 321,438 / 309,012 / 11,175,370)
    assert params == {"residual": 321_854, "plain": 309_412, "timm/resnet18": 11_181_642}
    assert len(rows) == 6 and all(r["dataset"] == "cifar10" for r in rows)


def test_published_numbers_get_a_column_and_the_gap_is_stated(tmp_path):
    from optuna.trial import create_trial

    from slowai.study.analysis.stats import mean_ci
    from slowai.study.report import markdown as report

    def run(seed, test, valid):
        attrs = {"seed": seed, "test_accuracy": test, "best_valid_accuracy": valid, "params": 10, "mflops": 1.0}
        attrs["history"] = [{"epoch": 0}, {"epoch": 1}]
        return create_trial(value=test, params={}, distributions={}, user_attrs=attrs)

    ours = report.CandidateResult("resnet", [run(0, 0.89, 0.90), run(1, 0.91, 0.92)], None, {"complete": 1})
    ours.acc, ours.published = mean_ci(ours.accs), {"valid": 0.9184, "test": 0.91}
    res = report.StudyResult("s", "cifar10", "resnet", "url", [ours], None, "/data/c.npz", "90% JPEG-decoded")
    table = report.markdown_table(res)
    assert "| published valid / test % |" in table
    assert "| resnet | 2 | 91.00 | 90.00 ± 12.71 | n/a | reference |" in table and "| 91.84 / 91.00 |" in table
    text = report._data_text(res)
    assert "cifar10 read from `/data/c.npz`: 90% JPEG-decoded." in text and "`resnet` -1.00" in text
    assert "these confirm runs trained 2 epochs" in text
