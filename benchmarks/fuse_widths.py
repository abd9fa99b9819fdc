"""Where fusing pays on this CPU: one fused training step of K members against K unfused steps, for the digits
study's candidates at each width its space draws (8×8 inputs, bs 64, AdamW), contiguous and channels-last.

Why: a step is either dispatch-bound (small widths: K members share each op's fixed cost, so fusing pays several
times over) or arithmetic-bound (width 16: the unfused step already runs the convolutions at the CPU's sustained
rate, so K members cost K times one). The digits study's end-to-end speed-up with `--fuse 8` is bounded by the widths
its tuning picks (`benchmarks/fuse_study.py`). Also prints each unfused step's sustained GFLOP/s (forward MFLOPs per
image from `slowai.summarize`, ×3 for forward and backward).

    python benchmarks/fuse_widths.py                    # about 2 minutes on 2 cores; writes fuse_widths.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from functools import partial
from pathlib import Path

import torch

import slowai

HERE = Path(__file__).resolve().parent
SHAPE, BS = (1, 8, 8), 64


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path, default=HERE / "fuse_widths.json")
    args = ap.parse_args()
    rows = []
    print(f"{'model':9} {'width':>5} {'layout':>13} {'fused ms':>9} {'K× one ms':>10} {'speed-up':>8} {'GFLOP/s':>8}")
    for name in ("residual", "plain"):
        for width in (4, 8, 16):
            make = partial(slowai.create_model, name, in_chans=SHAPE[0], num_classes=10, width=width)
            mflops = slowai.summarize(make(), input_shape=SHAPE).total_mflops
            for channels_last in (False, True):
                t = slowai.measure_fusion(
                    make, args.k, SHAPE, BS, steps=args.steps, rounds=args.rounds, channels_last=channels_last
                )
                gflops = 3 * mflops * BS * args.k / t.sequential_s / 1e3
                layout = "channels-last" if channels_last else "contiguous"
                timing = {"fused_s": t.fused_s, "sequential_s": t.sequential_s, "speedup": t.speedup}
                rows.append({"model": name, "width": width, "layout": layout, **timing, "gflops_unfused": gflops})
                print(f"{name:9} {width:5} {layout:>13} {1e3 * t.fused_s:9.1f} {1e3 * t.sequential_s:10.1f} "
                      f"{t.speedup:7.2f}x {gflops:8.1f}", flush=True)  # fmt: skip
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "when": time.strftime("%Y-%m-%d %H:%M")}
    out = {"env": env | {"load_1min": os.getloadavg()[0]}, "k": args.k, "bs": BS, "input_shape": SHAPE, "rows": rows}
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"raw figures: {args.json}")


if __name__ == "__main__":
    main()
