"""What slowai costs and saves: (a) the Learner's callback overhead vs a bare loop, (b) TensorLoader vs per-item data.

Both parts run their two contenders in ONE process, interleaved (A B, then B A, ...) after a warm-up, and report
medians, so drift in machine load hits both sides alike.

    python benchmarks/overhead.py                       # full: 5 training epochs and 5 data epochs per contender
    python benchmarks/overhead.py --subset 5000 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bare_loop import one_cycle, run_epoch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

import slowai
from slowai import DeviceCB, Learner, MetricsCB, OneCycleCB

LR, BS = 1e-2, 512


def interleave(contenders: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each contender once to warm up, then `repeats` times alternating the order (A B, B A, ...): seconds each."""
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            times[name].append(contenders[name]())
            print(f"  {name:<10} {times[name][-1]:8.3f} s", flush=True)
    return times


# ----------------------------------------------------------------------------------------------- (a) Learner overhead
def learner_overhead(dls: slowai.DataLoaders, repeats: int, seed: int) -> dict[str, Any]:
    """One training epoch of `residual`: Learner with the default callbacks vs the same work in a bare loop."""
    model = slowai.create_model("residual", in_chans=1, num_classes=10).to(dls.device)
    init = {k: v.clone() for k, v in model.state_dict().items()}

    def reset() -> None:
        model.load_state_dict(init)  # same weights and batch order on every run: identical work
        slowai.set_seed(seed)

    def with_learner() -> float:
        reset()
        t0 = time.perf_counter()
        cbs = [DeviceCB(dls.device), MetricsCB(), OneCycleCB()]  # + TrainCB, added by the Learner
        Learner(model, dls, lr=LR, cbs=cbs, opt_func=torch.optim.AdamW).fit(1, valid=False)
        return time.perf_counter() - t0

    def bare() -> float:
        reset()
        t0 = time.perf_counter()
        opt, sched = one_cycle(model, LR, len(dls.train))
        run_epoch(model, dls.train, opt, sched)
        return time.perf_counter() - t0

    times = interleave({"learner": with_learner, "bare": bare}, repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "images_per_epoch": dls.train.n,
        "seconds": times,
        "img_per_s": {k: dls.train.n / v for k, v in med.items()},
        "ratio": med["learner"] / med["bare"],
        "pairwise_ratio_median": statistics.median(a / b for a, b in zip(times["learner"], times["bare"])),
    }


# ----------------------------------------------------------------------------------------------- (b) data pipeline
class PerItemFashionMNIST(Dataset):
    """torchvision's FashionMNIST item path on the same uint8 tensors: PIL image per item, then `transform`.

    `Image.fromarray` on a 2-D uint8 array infers mode "L", which is what torchvision passes explicitly.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.data, self.targets, self.transform = x[:, 0].cpu(), y.cpu(), transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img, target = self.data[index], int(self.targets[index])
        return self.transform(Image.fromarray(img.numpy())), target


def time_epoch(dl: Any) -> float:
    """Seconds to draw every batch of one epoch."""
    t0 = time.perf_counter()
    for _xb, _yb in dl:
        pass
    return time.perf_counter() - t0


def data_pipeline(dls: slowai.DataLoaders, repeats: int) -> dict[str, Any]:
    """One training epoch of batches: slowai's TensorLoader vs torchvision-style per-item PIL + ToTensor + Normalize."""
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(dls.mean, dls.std)])
    ds = PerItemFashionMNIST(dls.train.x, dls.train.y, tf)
    torch_dl = DataLoader(ds, batch_size=BS, shuffle=True, num_workers=0)
    same = (ds[0][0] - dls.train.one_batch()[0][0].cpu()).abs().max().item()
    print(f"  max |difference| between the two pipelines' first image: {same:.2e}")
    times = interleave({"tensor": lambda: time_epoch(dls.train), "per-item": lambda: time_epoch(torch_dl)}, repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "images_per_epoch": dls.train.n,
        "seconds": times,
        "median_s": med,
        "speedup": med["per-item"] / med["tensor"],
        "max_abs_diff_first_image": same,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per contender (after one warm-up each)")
    p.add_argument("--subset", type=int, default=None, help="use the first N training images (quick checks)")
    p.add_argument("--only", choices=["learner", "data"], default=None, help="run just one part")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default=None, help="default: cuda if present, else cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    dls = slowai.fashion_mnist(bs=BS, subset=args.subset, device=args.device)
    print(f"{dls}\ntorch {torch.__version__}, {torch.get_num_threads()} threads")
    out: dict[str, Any] = {"torch": torch.__version__, "device": str(dls.device), "repeats": args.repeats}
    out["threads"] = torch.get_num_threads()
    if args.only in (None, "learner"):
        print("(a) Learner vs bare loop, one training epoch of residual:")
        a = out["learner"] = learner_overhead(dls, args.repeats, args.seed)
        ips = a["img_per_s"]
        print(f"  img/s: learner {ips['learner']:.0f}, bare {ips['bare']:.0f}")
        print(f"  Learner/bare time: {a['ratio']:.3f}x (median of pairs {a['pairwise_ratio_median']:.3f}x)")
        print(f"  target <= 1.03x: {'✓' if a['ratio'] <= 1.03 else '✗'}")
    if args.only in (None, "data"):
        print(f"(b) one epoch of {dls.train.n} training images, bs {BS}:")
        b = out["data"] = data_pipeline(dls, args.repeats)
        med = b["median_s"]
        print(f"  seconds/epoch: TensorLoader {med['tensor']:.3f}, per-item DataLoader {med['per-item']:.3f}")
        print(f"  speed-up: {b['speedup']:.1f}x  target >= 10x: {'✓' if b['speedup'] >= 10 else '✗'}")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
