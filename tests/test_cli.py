"""The study command line's promise: every bad flag value ends as one `error: ...` line and exit status 2, before
any file or storage is created (an hour-long study must not fail, or litter, after its first second)."""

import os

import pytest
import torch

from slowai.study.cli import main

STUDY = ("residual_vs_plain", ["residual", "plain"])
# digits is bundled and tiny; --plan-only trains nothing, so a bad value that is wrongly accepted fails in seconds
BASE = ["--dataset", "digits", "--quick", "--wandb", "disabled", "--no-progress"]
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False
as_root = pytest.mark.skipif(ROOT, reason="root writes into read-only directories")
has_mps = pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")

CASES = [
    # --dataset, --candidates, --reference
    (["--dataset", "mnist"], "invalid choice: 'mnist'"),
    (["--candidates"], "expected at least one argument"),
    (["--candidates", "plain", "nosuchnet"], "unknown candidate model 'nosuchnet'"),
    (["--candidates", "plain", "timm/nosuchnet"], "unknown timm model"),
    (["--candidates", "plain", "plain"], "duplicate candidate names: plain"),
    (["--reference", "conv"], "reference 'conv' is not a candidate"),
    (["--reference", ""], "argument --reference: must not be empty"),
    # budget: --trials, --epochs, --seeds, --max-seeds, --subset, --time-budget
    (["--trials", "0"], "argument --trials: must be >= 1"),
    (["--trials", "two"], "expected an integer, got 'two'"),
    (["--epochs", "-1"], "argument --epochs: must be >= 1"),
    (["--seeds", "0"], "must be >= 1 or auto"),
    (["--seeds", "many"], "must be >= 1 or auto"),
    (["--max-seeds", "0"], "argument --max-seeds: must be >= 1"),
    (["--seeds", "5", "--max-seeds", "3"], "--max-seeds 3 must be >= --seeds 5"),
    (["--seeds", "1", "--max-seeds", "3"], "sequential seeds start with >= 2 seeds"),
    (["--max-seeds", "1"], "below the >= 2 seeds --seeds auto starts with"),
    (["--subset", "5"], "argument --subset: must be >= 10 images"),
    (["--time-budget", "-5"], "argument --time-budget: must be a positive, finite number"),
    (["--time-budget", "0"], "must be a positive, finite number"),
    (["--time-budget", "nan"], "must be a positive, finite number"),
    (["--time-budget", "inf"], "must be a positive, finite number"),
    (["--time-budget", "soon"], "expected a number of minutes"),
    # --margin, --pruner, --seed
    (["--margin", "-1"], "must be in [0, 100) accuracy points"),
    (["--margin", "100"], "must be in [0, 100) accuracy points"),
    (["--margin", "nan"], "must be in [0, 100) accuracy points"),
    (["--margin", "wide"], "expected a number of accuracy points"),
    (["--pruner", "bogus"], "argument --pruner: invalid choice"),
    (["--seed", "-1"], "argument --seed: must be >= 0"),
    (["--seed", str(2**32)], "must be <= 2**32 - 1"),
    (["--seed", "1.5"], "expected an integer, got '1.5'"),
    (["--fuse", "0"], "argument --fuse: must be auto, off or a number of seeds >= 1"),
    (["--workers-per-gpu", "0"], "argument --workers-per-gpu: must be >= 1"),
    pytest.param(["--workers-per-gpu", "2"], "--workers-per-gpu needs a visible CUDA device", marks=no_gpu),
    (["--workers", "2", "--workers-per-gpu", "2"], "give --workers or --workers-per-gpu, not both"),
    # --storage
    (["--storage", ""], "argument --storage: must not be empty"),
    (["--storage", "foo://bar"], "unreadable storage URL"),
    (["--storage", "postgresql:/broken"], "malformed storage URL"),
    (["--storage", "{tmp}"], "is a directory"),
    (["--storage", "{file}"], "exists but is not an Optuna journal file"),
    (["--storage", "{file}/optuna.journal"], "is not a directory"),
    (["--storage", "sqlite:///{tmp}/nodir/x.db"], "does not exist"),
    (["--storage", "/proc/x/optuna.journal"], "/proc is not writable"),
    pytest.param(["--storage", "{ro}/optuna.journal"], "is not writable", marks=as_root),
    pytest.param(["--storage", "sqlite:///{ro}/x.db"], "is not writable", marks=as_root),
    (["--report-only", "--storage", "{tmp}/new.journal"], "nothing to report: no storage at"),
    # --study-name, --out, --data-root
    (["--study-name", "a/b"], "study name 'a/b' must be letters"),
    (["--study-name", ""], "argument --study-name: must not be empty"),
    (["--out", ""], "argument --out: must not be empty"),
    (["--out", "/proc/x"], "--out /proc/x cannot be created: /proc is not writable"),
    (["--out", "{file}/out"], "cannot be created: {file} is not a directory"),
    (["--out", "{file}"], "--out {file} is not a directory"),
    pytest.param(["--out", "{ro}/out"], "cannot be created: {ro} is not writable", marks=as_root),
    pytest.param(["--out", "{ro}"], "--out {ro} is not writable", marks=as_root),
    (["--data-root", "{tmp}/nodata"], "digits data not found: --data-root {tmp}/nodata does not exist"),
    (["--data-root", ""], "argument --data-root: must not be empty"),
    # --device
    (["--device", ""], "argument --device: must not be empty"),
    (["--device", "bogus"], "bad device 'bogus'"),
    (["--device", "meta"], "unsupported device 'meta'"),
    (["--device", "cuda:99"], "device 'cuda:99' requested but"),
    pytest.param(["--device", "mps"], "MPS is not available", marks=has_mps),
    # --wandb, --wandb-project
    (["--wandb", "sometimes"], "argument --wandb: invalid choice"),
    (["--wandb-project", ""], "argument --wandb-project: must not be empty"),
    (["--wandb-project", "team/project"], "contains /"),
    (["--wandb-project", "x" * 129], "longer than 128 characters"),
    # switches
    (["--quick=yes"], "ignored explicit argument"),
    (["--compile=yes"], "ignored explicit argument"),
    (["--plan-only", "--report-only"], "argument --report-only: not allowed with argument --plan-only"),
    # --workers, liveness, the hidden --worker-id, unknown flags
    (["--workers", "0"], "argument --workers: must be >= 1"),
    (["--heartbeat-interval", "0"], "argument --heartbeat-interval: must be >= 1"),
    (["--grace-period", "0"], "argument --grace-period: must be >= 1"),
    (["--heartbeat-interval", "10", "--grace-period", "10"], "must exceed the heartbeat interval"),
    (["--heartbeat-interval", "1", "--grace-period", "3"], "too short for a journal file storage: a worker killed"),
    (["--storage-patience", "-1"], "argument --storage-patience: must be a finite number of seconds >= 0"),
    (["--storage-patience", "inf"], "argument --storage-patience: must be a finite number of seconds >= 0"),
    (["--trial-timeout", "soon"], "argument --trial-timeout: expected a number of seconds"),
    (["--max-retries", "-1"], "argument --max-retries: must be >= 0"),
    (["--worker-id", "-1"], "argument --worker-id: must be >= 0"),
    (["--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.fixture
def places(tmp_path):
    """{tmp}: an empty directory; {file}: a regular file in it; {ro}: a read-only directory in it."""
    (tmp_path / "file").write_text("not a directory, not a journal")
    (tmp_path / "ro").mkdir(mode=0o555)
    yield {"tmp": str(tmp_path), "file": str(tmp_path / "file"), "ro": str(tmp_path / "ro")}
    (tmp_path / "ro").chmod(0o755)


def run(argv: list[str]) -> int:
    """main's exit status, whether it returns it or argparse raises SystemExit."""
    try:
        return main(*STUDY, argv)
    except SystemExit as e:
        return e.code


def snapshot(root: str) -> set[tuple[str, int]]:
    """Every path under `root` with its size: what a rejected command must leave exactly as it was."""
    return {(p, os.path.getsize(p)) for d, ds, fs in os.walk(root) for p in (os.path.join(d, n) for n in ds + fs)}


@pytest.mark.parametrize("argv, message", CASES)
def test_every_bad_flag_is_one_error_line_and_exit_2(places, capsys, argv, message):
    argv = [a.format(**places) for a in argv]
    out = [] if "--out" in argv else ["--out", f"{places['tmp']}/out"]
    only = [] if "--report-only" in argv else ["--plan-only"]  # a wrongly accepted value plans, never trains
    before = snapshot(places["tmp"])
    assert run([*BASE, *only, *out, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    assert message.format(**places) in err and "Traceback" not in err, err
    assert snapshot(places["tmp"]) == before and not os.path.exists(f"{places['tmp']}/out")


def test_a_good_plan_only_run_exits_0_and_writes_nothing(tmp_path, capsys):
    argv = [*BASE, "--plan-only", "--out", str(tmp_path / "out"), "--time-budget", "0.5", "--seed", str(2**32 - 1)]
    argv += ["--seeds", "2", "--max-seeds", "4", "--margin", "0", "--subset", "10", "--wandb-project", "my-project"]
    assert run(argv) == 0, capsys.readouterr().err
    assert "error" not in capsys.readouterr().err and not (tmp_path / "out").exists()
