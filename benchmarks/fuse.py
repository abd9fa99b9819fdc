"""Fused seeds vs sequential runs on this machine: seeds per second, interleaved rounds, medians.

(a) digits (8×8), K seeds of `residual`: `slowai.fit_fused` (one fused model, member k on seed k's batch stream)
against K ordinary `Learner` fits one after another (what a confirm round does today), same recipe (AdamW +
one-cycle, bs 64), train + valid every epoch. Rounds alternate the order (fused first, then sequential first).
Also each seed's final valid accuracy both ways (float32 runs part after a few steps under any change of summation
order, so they agree statistically, not bit for bit) and `measure_fusion`'s per-step ratio.
(b) Fashion-MNIST shape (1×28×28, random tensors: speed only), K members of `residual` at bs 256: `measure_fusion`,
one fused step against K unfused steps.

    python benchmarks/fuse.py                          # both parts, writes benchmarks/fuse.json (a few minutes)
    python benchmarks/fuse.py --rounds 1 --epochs 1    # quick check
    python benchmarks/fuse.py --steps-only --step-rounds 9 --json benchmarks/fuse_steps.json   # step timings only
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

import slowai
from slowai import FusedMetricsCB, Learner, MetricsCB, OneCycleCB

LR = 1e-2
HERE = Path(__file__).resolve().parent


def fused_fit(dls: slowai.DataLoaders, seeds: list[int], epochs: int) -> list[float]:
    """One fused fit of every seed; each member's last valid accuracy."""
    make = partial(slowai.create_model, "residual", in_chans=1, num_classes=10)
    learn = slowai.fit_fused(make, seeds, dls, LR, epochs, cbs=[OneCycleCB()])
    return [rows[-1]["accuracy"] for rows in learn.cb(FusedMetricsCB).history]


def sequential_fits(dls: slowai.DataLoaders, seeds: list[int], epochs: int) -> list[float]:
    """One ordinary fit per seed, as a study's confirm round runs them."""
    accs = []
    for seed in seeds:
        slowai.set_seed(seed)
        model = slowai.create_model("residual", in_chans=1, num_classes=10)
        dls.train.reseed(seed)
        learn = Learner(model, dls, lr=LR, opt_func=torch.optim.AdamW, cbs=[MetricsCB(), OneCycleCB()])
        accs.append(learn.fit(epochs).cb(MetricsCB).valid_history[-1]["accuracy"])
    dls.train.reseed(None)
    return accs


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def step_part(k: int, input_shape: tuple[int, ...], bs: int, steps: int, rounds: int) -> dict[str, Any]:
    """`measure_fusion` on random tensors: one fused training step against K unfused ones."""
    make = partial(slowai.create_model, "residual", in_chans=1, num_classes=10)
    step = slowai.measure_fusion(make, k, input_shape, bs=bs, steps=steps, rounds=rounds)
    timing = {"step_fused_s": step.fused_s, "step_sequential_s": step.sequential_s, "step_speedup": step.speedup}
    return {"k": k, "bs": bs, "input_shape": list(input_shape), "steps": steps, "rounds": rounds, **timing}


def digits_part(k: int, epochs: int, rounds: int) -> dict[str, Any]:
    dls = slowai.digits(bs=64, device="cpu")
    seeds = list(range(k))
    fused_fit(dls, seeds, 1), sequential_fits(dls, seeds[:1], 1)  # warm-up: oneDNN primitives, first allocations
    times: dict[str, list[float]] = {"fused": [], "sequential": []}
    accs: dict[str, list[float]] = {}
    for r in range(rounds):
        order = [("fused", fused_fit), ("sequential", sequential_fits)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            seconds, accs[name] = timed(fn, dls, seeds, epochs)
            times[name].append(seconds)
    fused_s, seq_s = statistics.median(times["fused"]), statistics.median(times["sequential"])
    return {
        "k": k, "epochs": epochs, "bs": 64, "train_images": dls.train.n, "raw_seconds": times,
        "fused_s": fused_s, "sequential_s": seq_s, "fused_seeds_per_s": k / fused_s,
        "sequential_seeds_per_s": k / seq_s, "speedup": seq_s / fused_s,
        "valid_acc_fused": accs["fused"], "valid_acc_sequential": accs["sequential"],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=8, help="seeds fused on digits (default 8)")
    ap.add_argument("--fashion-k", type=int, default=4, help="members fused at 28×28 (default 4)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of whole fits")
    ap.add_argument("--step-rounds", type=int, default=9, help="interleaved rounds of step timings")
    ap.add_argument("--steps-only", action="store_true", help="only the step timings (measure_fusion)")
    ap.add_argument("--json", type=Path, default=HERE / "fuse.json")
    args = ap.parse_args()
    out: dict[str, Any] = {"env": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                                   "when": time.strftime("%Y-%m-%d %H:%M")}}  # fmt: skip
    if not args.steps_only:
        out["digits"] = d = digits_part(args.k, args.epochs, args.rounds)
        print(
            f"digits, {args.k} seeds of residual, {args.epochs} epochs (train+valid), medians of {args.rounds} rounds:"
        )
        print(f"  fused      {d['fused_s']:7.2f} s  {d['fused_seeds_per_s']:.2f} seeds/s")
        print(f"  sequential {d['sequential_s']:7.2f} s  {d['sequential_seeds_per_s']:.2f} seeds/s")
        print(f"  speed-up   {d['speedup']:.2f}x")
        print(f"  valid acc fused      {[round(a, 4) for a in d['valid_acc_fused']]}")
        print(f"  valid acc sequential {[round(a, 4) for a in d['valid_acc_sequential']]}")
    steps = {"digits_step": (args.k, (1, 8, 8), 64, 5), "fashion_mnist_step": (args.fashion_k, (1, 28, 28), 256, 2)}
    for name, (k, shape, bs, n) in steps.items():
        out[name] = r = step_part(k, shape, bs, n, args.step_rounds)
        print(f"{name}: {k} members of residual at {shape}, bs {bs}, one training step, medians of "
              f"{args.step_rounds} rounds: fused {r['step_fused_s'] * 1000:.1f} ms, sequential "
              f"{r['step_sequential_s'] * 1000:.1f} ms: {r['step_speedup']:.2f}x")  # fmt: skip
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"raw figures: {args.json}")


if __name__ == "__main__":
    main()
