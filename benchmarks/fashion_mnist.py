"""Reproduce the seed notebook's 3-epoch Fashion-MNIST results with slowai, and time them against a bare PyTorch loop.

Every model gets the same seed before it is built and again before it trains, so all runs see the same batch order
(and the bare loop's `residual` starts from the very weights the Learner's run started from).

    python benchmarks/fashion_mnist.py                              # full run: 4 models + bare loop, 3 epochs
    python benchmarks/fashion_mnist.py --subset 5000 --epochs 1     # quick check
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from bare_loop import fit_1cycle, plain_batches

import slowai
from slowai import MetricsCB

MODELS = ["conv", "plain", "residual", "timm/resnet18"]
# The seed notebook's 3-epoch test accuracy per model (residual: the aim is >= 92%).
TARGETS = {"residual": 0.915, "plain": 0.910, "conv": 0.895, "timm/resnet18": 0.906}
LR, BS = 1e-2, 512


def run_slowai(name: str, dls: slowai.DataLoaders, args: argparse.Namespace) -> dict[str, Any]:
    """Train `name` with `train_1cycle` and measure test accuracy, wall time and training throughput."""
    slowai.set_seed(args.seed)
    model = slowai.create_model(name, in_chans=1, num_classes=10)
    slowai.set_seed(args.seed)  # same batch order for every model, whatever its init consumed
    t0 = time.perf_counter()
    learn = slowai.train_1cycle(model, dls, lr=LR, n_epochs=args.epochs, progress=False, device=dls.device)
    wall = time.perf_counter() - t0
    train_s = sum(r["seconds"] for r in learn.cb(MetricsCB).train_history)
    test = slowai.evaluate(learn.model, dls.test)
    return {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "accuracy": test["accuracy"],
        "loss": test["loss"],
        "wall_s": wall,
        "train_img_per_s": args.epochs * dls.train.n / train_s,
        "target": TARGETS.get(name),
    }


def run_bare(dls: slowai.DataLoaders, args: argparse.Namespace) -> dict[str, Any]:
    """The same recipe for `residual` as a plain torch loop over the same uint8 tensors (no Learner/TensorLoader)."""
    slowai.set_seed(args.seed)
    model = slowai.create_model("residual", in_chans=1, num_classes=10).to(dls.device)
    slowai.set_seed(args.seed)
    (xtr, ytr), (xte, yte) = (dls.train.x, dls.train.y), (dls.test.x, dls.test.y)
    train = lambda: plain_batches(xtr, ytr, BS, dls.mean, dls.std, shuffle=True)  # noqa: E731
    valid = lambda: plain_batches(xte, yte, BS, dls.mean, dls.std, shuffle=False)  # noqa: E731
    n_batches = -(-len(xtr) // BS)
    t0 = time.perf_counter()
    history = fit_1cycle(model, train, valid, n_batches, lr=LR, n_epochs=args.epochs)
    wall = time.perf_counter() - t0
    return {"model": "residual (bare PyTorch)", "accuracy": history[-1]["accuracy"], "wall_s": wall}


def mark(acc: float, target: float | None) -> str:
    """The seed's figure with ✓ when reached, ✗ when not."""
    return "-" if target is None else f"{100 * target:.1f}% {'✓' if acc >= target else '✗'}"


def print_table(results: list[dict[str, Any]], bare: dict[str, Any] | None) -> None:
    """One aligned row per model, then the bare-loop reference."""
    head = f"{'model':<24} {'params':>11} {'test acc':>9} {'wall s':>8} {'img/s':>8}  seed target"
    print(head, "-" * len(head), sep="\n")
    for r in results:
        print(
            f"{r['model']:<24} {r['params']:>11,} {100 * r['accuracy']:>8.2f}% {r['wall_s']:>8.1f} "
            f"{r['train_img_per_s']:>8.0f}  {mark(r['accuracy'], r['target'])}"
        )
    if bare is not None:
        print(f"{bare['model']:<24} {'':>11} {100 * bare['accuracy']:>8.2f}% {bare['wall_s']:>8.1f}")
        ref = next((r for r in results if r["model"] == "residual"), None)
        if ref is not None:
            print(f"slowai / bare wall time for residual: {ref['wall_s'] / bare['wall_s']:.3f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=MODELS, help="names for slowai.create_model")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--subset", type=int, default=None, help="train on the first N images (quick checks)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default=None, help="default: cuda if present, else cpu")
    p.add_argument("--no-bare", action="store_true", help="skip the bare PyTorch reference")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args()

    dls = slowai.fashion_mnist(bs=BS, val_size=0, subset=args.subset, device=args.device)
    print(f"{dls}\ntorch {torch.__version__}, {torch.get_num_threads()} threads")
    results = []
    for name in args.models:
        results.append(run_slowai(name, dls, args))
        r = results[-1]
        print(f"  {name}: {100 * r['accuracy']:.2f}% in {r['wall_s']:.1f} s", flush=True)
    bare = None if args.no_bare else run_bare(dls, args)
    print()
    print_table(results, bare)
    if args.json is not None:
        meta = {"torch": torch.__version__, "device": str(dls.device), "threads": torch.get_num_threads()}
        meta |= {"epochs": args.epochs, "subset": args.subset, "seed": args.seed, "bs": BS, "lr": LR}
        args.json.write_text(json.dumps({"meta": meta, "results": results, "bare": bare}, indent=2))


if __name__ == "__main__":
    main()
