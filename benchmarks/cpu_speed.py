"""What torch.compile and channels-last buy on this CPU: training throughput side by side, and whole fits with compile.

(a) Throughput: for each model, four Learners on the same data (eager, channels-last, compile, compile +
channels-last) train one epoch each in turn, interleaved over several rounds (A B C D, then D C B A, ...) after a
warm-up epoch, so machine load hits every variant alike; img/s is the median over rounds, and the compile time is
the warm-up epoch minus the median epoch (compiled into a fresh, cold cache).
(b) Whole fits: one epoch (train + valid) of `residual` on 10k images, each in a new process: eager, compiled with a
cold cache (a new cache dir) and compiled with a warm one (the cold run's dir), compile costs included.

    python benchmarks/cpu_speed.py                                  # both parts (about 30 minutes on 2 cores)
    python benchmarks/cpu_speed.py --models residual --rounds 2 --fit-rounds 1 --fit-subset 2000   # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import slowai
from slowai import Callback, Learner, MetricsCB, OneCycleCB
from slowai.accel import ChannelsLastCB, CompileCB, enable_compile_cache

LR, BS = 1e-2, 512
VARIANTS = {"eager": (), "channels-last": ("cl",), "compile": ("compile",), "compile+cl": ("cl", "compile")}


class BatchTimesCB(Callback):
    """Wall seconds of every batch, per phase: the slow outliers are where compiling happened."""

    order = 100

    def before_fit(self) -> None:
        self.times: dict[bool, list[float]] = {True: [], False: []}

    def before_batch(self) -> None:
        self._t0 = time.perf_counter()

    def after_batch(self) -> None:
        self.times[self.learn.training].append(time.perf_counter() - self._t0)

    def compile_seconds(self) -> float:
        """Time above the median of the later batches in batches taking over twice it (first calls, recompiles)."""
        extra = 0.0
        for ts in self.times.values():
            if len(ts) > 1:
                med = statistics.median(ts[1:])
                extra += sum(t - med for t in ts if t > 2 * med)
        return extra


def variant_cbs(flags: tuple[str, ...]) -> list[Callback]:
    """The accel callbacks for one variant (they act on CPU by default)."""
    return [*([ChannelsLastCB()] if "cl" in flags else []), *([CompileCB()] if "compile" in flags else [])]


def learner(name: str, dls: slowai.DataLoaders, flags: tuple[str, ...], seed: int) -> Learner:
    """A Learner as the studies build it (AdamW, one-cycle, metrics) plus the variant's callbacks."""
    slowai.set_seed(seed)
    model = slowai.create_model(name, in_chans=1, num_classes=10)
    cbs = [MetricsCB(), OneCycleCB(), *variant_cbs(flags)]
    return Learner(model, dls, lr=LR, cbs=cbs, opt_func=torch.optim.AdamW)


def train_epoch(learn: Learner) -> float:
    """Seconds for one training epoch (no validation)."""
    t0 = time.perf_counter()
    learn.fit(1, valid=False)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------- (a) throughput
def throughput(name: str, dls: slowai.DataLoaders, rounds: int, seed: int) -> dict[str, Any]:
    """Median img/s of each variant over interleaved rounds, and the compile time its warm-up epoch paid."""
    learns = {v: learner(name, dls, flags, seed) for v, flags in VARIANTS.items()}
    warmup = {v: train_epoch(learn) for v, learn in learns.items()}
    times: dict[str, list[float]] = {v: [] for v in learns}
    order = list(learns)
    for r in range(rounds):
        for v in order if r % 2 == 0 else order[::-1]:
            times[v].append(train_epoch(learns[v]))
        print(f"  {name} round {r + 1}: " + ", ".join(f"{v} {times[v][-1]:.2f}s" for v in order), flush=True)
    med = {v: statistics.median(ts) for v, ts in times.items()}
    return {
        "seconds": times,
        "img_per_s": {v: dls.train.n / med[v] for v in learns},
        "speedup": {v: med["eager"] / med[v] for v in learns},
        # each round's eager/variant ratio compares epochs run a few seconds apart: robust to load drift
        "round_speedup": {v: statistics.median(e / t for e, t in zip(times["eager"], ts)) for v, ts in times.items()},
        "compile_s": {v: max(warmup[v] - med[v], 0.0) for v in learns},
    }


def print_table(results: dict[str, dict[str, Any]]) -> None:
    print("\nimg/s = images / median epoch; (median-based speed-up vs eager, median of per-round speed-ups)")
    print(f"| model | {' | '.join(VARIANTS)} |")
    print("| --- |" + " ---: |" * len(VARIANTS))
    for name, res in results.items():
        cells = [
            f"{res['img_per_s'][v]:,.0f} img/s ({res['speedup'][v]:.2f}x, {res['round_speedup'][v]:.2f}x)"
            for v in VARIANTS
        ]
        print(f"| {name} | {' | '.join(cells)} |")
    print("\ncompile time of the warm-up epoch (cold cache), seconds:")
    for name, res in results.items():
        print(f"  {name}: " + ", ".join(f"{v} {res['compile_s'][v]:.0f}" for v in VARIANTS if "compile" in v))


# ----------------------------------------------------------------------------------------------- (b) whole fits
def one_fit(variant: str, cache: str | None, subset: int, seed: int) -> dict[str, Any]:
    """One epoch (train + valid) of residual in this process; compile time and costs included in `wall_s`."""
    if cache:
        enable_compile_cache(cache)
    t0 = time.perf_counter()
    dls = slowai.fashion_mnist(bs=BS, device="cpu", subset=subset)
    learn = learner("residual", dls, VARIANTS[variant], seed)
    learn.add_cbs(timer := BatchTimesCB())
    t1 = time.perf_counter()
    learn.fit(1)
    fit_s = time.perf_counter() - t1
    valid = learn.cb(MetricsCB).valid_history[-1]
    out = {"variant": variant, "fit_s": fit_s, "wall_s": time.perf_counter() - t0, "compile_s": timer.compile_seconds()}
    return out | {"valid_accuracy": valid["accuracy"], "train_images": dls.train.n, "load": os.getloadavg()[0]}


def fit_in_new_process(variant: str, cache: str | None, args: argparse.Namespace) -> dict[str, Any]:
    """Run `one_fit` in a fresh Python process: nothing compiled in memory, only what the cache dir holds."""
    cmd = [
        sys.executable,
        __file__,
        "--one-fit",
        variant,
        "--fit-subset",
        str(args.fit_subset),
        "--seed",
        str(args.seed),
    ]
    out = subprocess.run([*cmd, *(["--cache", cache] if cache else [])], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"    fit {res['fit_s']:6.1f}s, compile {res['compile_s']:5.1f}s, load {res['load']:.1f}", flush=True)
    return res


def whole_fits(args: argparse.Namespace, variant: str, root: Path) -> dict[str, list[dict[str, Any]]]:
    """Eager, cold-cache and warm-cache fits in new processes, interleaved: round 1 E C W, round 2 W C E, ..."""
    runs: dict[str, list[dict[str, Any]]] = {"eager": [], "cold": [], "warm": []}
    first = str(root / "run0")
    for r in range(args.fit_rounds):
        cold_dir = str(root / f"run{r}")
        steps = [("eager", None), ("cold", cold_dir), ("warm", first)]
        for kind, cache in steps if r % 2 == 0 else steps[::-1]:  # round 1's warm run follows its cold one
            print(f"  round {r + 1}: {kind}", flush=True)
            runs[kind].append(fit_in_new_process("eager" if kind == "eager" else variant, cache, args))
    return runs


def print_fits(runs: dict[str, list[dict[str, Any]]], variant: str) -> None:
    eager = statistics.median(r["fit_s"] for r in runs["eager"])
    print(f"\none epoch (train + valid) of residual on {runs['eager'][0]['train_images']} images, medians:")
    for kind, rs in runs.items():
        fit, comp = statistics.median(r["fit_s"] for r in rs), statistics.median(r["compile_s"] for r in rs)
        label = "eager" if kind == "eager" else f"{variant}, {kind} cache"
        print(f"  {label:<28} {fit:7.1f}s  (compile {comp:5.1f}s)  {eager / fit:.2f}x vs eager")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["residual", "plain"], help="slowai.create_model names")
    p.add_argument("--subset", type=int, default=5120, help="training images per throughput epoch (10 batches)")
    p.add_argument("--rounds", type=int, default=6, help="interleaved timed epochs per variant")
    p.add_argument("--fit-subset", type=int, default=10000, help="training images of the whole fits")
    p.add_argument("--fit-rounds", type=int, default=2, help="rounds of (eager, cold, warm) whole fits")
    p.add_argument("--fit-variant", choices=["compile", "compile+cl"], default="compile+cl")
    p.add_argument("--only", choices=["throughput", "fits"], default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--one-fit", choices=list(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one_fit:
        print(json.dumps(one_fit(args.one_fit, args.cache, args.fit_subset, args.seed)))
        return

    root = Path(tempfile.mkdtemp(prefix="slowai-cpu-speed-"))  # the compile caches: removed at the end
    try:
        out = run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Both parts, with every compile cache under `root`."""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    out: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    if args.only in (None, "throughput"):
        enable_compile_cache(root / "throughput")  # empty: the compile times are cold ones
        dls = slowai.fashion_mnist(bs=BS, device="cpu", subset=args.subset)
        out["throughput"] = {m: throughput(m, dls, args.rounds, args.seed) for m in args.models}
        print_table(out["throughput"])
    if args.only in (None, "fits"):
        print(f"\n(b) whole fits, {args.fit_variant} vs eager, each in a new process:")
        out["fits"] = whole_fits(args, args.fit_variant, root)
        print_fits(out["fits"], args.fit_variant)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return out


if __name__ == "__main__":
    main()
