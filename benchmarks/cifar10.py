"""CIFAR-10 speed and accuracy of the tutorial architectures: seconds per epoch, img/s and test accuracy per model.

    python benchmarks/cifar10.py --models resnet_tutorial --epochs 15 --bs 256 --amp --channels-last --compile

Recipes: `tutorial` (its optimizer per model, lr ×0.1 at 60% and 85%) or `onecycle` (AdamW, one-cycle). The GPU
target is the tutorial ResNet at ≥ 91% test accuracy within 60 s of training on one H100.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import slowai as sa
from slowai.train import TUTORIAL_ADAMW, TUTORIAL_SGD

MODELS = ("googlenet", "resnet_tutorial", "preact_resnet_tutorial", "densenet_tutorial")
# The tutorial's optimizer and lr per model (AdamW 1e-3 for GoogleNet/DenseNet, SGD 0.1 for the ResNets).
TUTORIAL = {
    "googlenet": (TUTORIAL_ADAMW, 1e-3),
    "resnet_tutorial": (TUTORIAL_SGD, 0.1),
    "preact_resnet_tutorial": (TUTORIAL_SGD, 0.1),
    "densenet_tutorial": (TUTORIAL_ADAMW, 1e-3),
}


def run(name: str, dls: sa.DataLoaders, args: argparse.Namespace) -> dict:
    """Train one model with the chosen recipe and measure wall time and test accuracy."""
    sa.set_seed(args.seed)
    model = sa.create_model(name, in_chans=3, num_classes=10)
    cbs = sa.accel_cbs(amp=args.amp, channels_last=args.channels_last, compile=args.compile)
    start = time.perf_counter()
    if args.recipe == "tutorial":
        opt_func, lr = TUTORIAL[name]
        learn = sa.train_multistep(model, dls, lr=lr, n_epochs=args.epochs, opt_func=opt_func, cbs=cbs)
    else:
        learn = sa.train_1cycle(model, dls, lr=args.lr, n_epochs=args.epochs, cbs=cbs)
    if dls.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    train_s = sum(r["seconds"] for r in learn.cb(sa.MetricsCB).train_history)
    return {
        "model": name,
        "recipe": args.recipe,
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": args.epochs,
        "valid_acc": learn.cb(sa.MetricsCB).valid_history[-1]["accuracy"],
        "test_acc": sa.evaluate(learn.model, dls.test)["accuracy"],
        "wall_s": seconds,
        "train_s_per_epoch": train_s / args.epochs,
        "img_per_s": dls.train.n * args.epochs / train_s,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--recipe", choices=("tutorial", "onecycle"), default="onecycle")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-2, help="max lr of the one-cycle recipe")
    p.add_argument("--bs", type=int, default=256)
    p.add_argument("--subset", type=int, default=None, help="train on this many images (quick checks)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--amp", action="store_true", help="bf16 autocast (GPU only; a no-op on CPU)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()

    try:
        dls = sa.cifar10(bs=args.bs, root=args.data_root, device=args.device, subset=args.subset)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None
    print(dls)
    results = [run(name, dls, args) for name in args.models]
    device = torch.cuda.get_device_name() if dls.device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\n{device}, torch {torch.__version__}, data: {dls.source} ({dls.note})")
    print(f"{'model':<24}{'params':>10}{'epochs':>8}{'valid':>8}{'test':>8}{'s/epoch':>9}{'img/s':>9}{'wall s':>9}")
    for r in results:
        print(
            f"{r['model']:<24}{r['params']:>10,}{r['epochs']:>8}{r['valid_acc']:>8.3f}{r['test_acc']:>8.3f}"
            f"{r['train_s_per_epoch']:>9.1f}{r['img_per_s']:>9.0f}{r['wall_s']:>9.1f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"device": device, "results": results}, indent=2))


if __name__ == "__main__":
    main()
