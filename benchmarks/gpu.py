"""The GPU figures in one call, for a lent device: step time and img/s of the tutorial ResNet, fused seeds against
sequential runs, and the default study with fusion (its verdict, wall time and estimate error).

    python benchmarks/gpu.py                     # everything (about 12 minutes on an H100)
    python benchmarks/gpu.py --skip-study        # steps and fusion only (about 2 minutes)
    python benchmarks/gpu.py --device cpu --quick --skip-study   # a smoke run of the script itself on a CPU

Goals (benchmarks/README.md): a step at bs 256 in <= 3 ms, >= 150k img/s at bs 1024, 8 fused seeds >= 5x the
seeds per second of 8 runs, and the default study decided (or equivalent) for residual vs plain in <= 10 min with
its estimate within 15%. Expected output, one line per measurement, e.g.:

    step bs 256 eager: 10.8 ms, 23,700 img/s
    step bs 256 channels-last+bf16+compile: 2.9 ms, 88,000 img/s
    ...
    fused: 8 seeds of resnet_tutorial at bs 256: 6.1x the seeds per second of 8 runs
    study: took 9 min (estimated 8 min for the work run, +12% off); residual vs plain: better

Raw figures go to benchmarks/gpu/<device>.json. Data stays on the device (random CIFAR-shaped tensors: speed only;
the study reads the real CIFAR-10 or Fashion-MNIST through the registry).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import slowai

HERE = Path(__file__).resolve().parent
MODEL = "resnet_tutorial"


def step_time(device: torch.device, bs: int, variant: str, steps: int) -> dict[str, Any]:
    """Median-free wall time of `steps` training steps after warm-up, timed by the device clock (no per-step sync)."""
    torch.manual_seed(0)
    model = slowai.create_model(MODEL, in_chans=3, num_classes=10).to(device)
    x = torch.randn(bs, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (bs,), device=device)
    if "channels-last" in variant:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    fused_opt = device.type == "cuda"
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=fused_opt)
    amp = "bf16" in variant and device.type == "cuda"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    if "compile" in variant:
        mode = "max-autotune-no-cudagraphs" if device.type != "cuda" else "reduce-overhead"
        step = torch.compile(step, mode=mode)
    for _ in range(10):
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = (time.perf_counter() - t0) / steps
    return {"variant": variant, "bs": bs, "ms_per_step": 1000 * seconds, "img_per_s": bs / seconds}


def fused_part(device: torch.device, k: int, bs: int, steps: int) -> dict[str, Any]:
    make = partial(slowai.create_model, MODEL, in_chans=3, num_classes=10)
    timing = slowai.measure_fusion(make, k, (3, 32, 32), bs, steps=steps, rounds=3, device=device)
    return {"k": k, "bs": bs, "fused_s": timing.fused_s, "sequential_s": timing.sequential_s, "speedup": timing.speedup}


def study_part(minutes: float, dataset: str, out: Path) -> dict[str, Any]:
    """The default study as a new user runs it, with --fuse auto, on this device."""
    cmd = [sys.executable, "-m", "studies.residual_vs_plain", "--dataset", dataset, "--time-budget", str(minutes)]
    cmd += ["--fuse", "auto", "--out", str(out), "--no-progress", "--wandb", "offline"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=HERE.parent, capture_output=True, text=True, check=False)
    lines = proc.stdout.splitlines()
    took = next((line for line in lines if line.startswith("took ")), "")
    off = re.search(r"([+-]\d+)% off", took)
    verdicts = {}
    if (out / "verdicts.json").exists():
        verdicts = {
            v["candidate"]: v["verdict"] for v in json.loads((out / "verdicts.json").read_text())["comparisons"]
        }
    plan = [line for line in lines if line.startswith("  ")][:12]
    return {
        "command": " ".join(cmd), "returncode": proc.returncode, "wall_s": time.perf_counter() - t0, "took": took,
        "estimate_off_pct": int(off.group(1)) if off else None, "verdicts": verdicts, "plan": plan,
        "stderr_tail": proc.stderr[-1500:],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="few steps, small batches (a smoke run of the script)")
    ap.add_argument("--skip-study", action="store_true")
    ap.add_argument("--study-minutes", type=float, default=10.0)
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    out: dict[str, Any] = {"device": name, "torch": torch.__version__, "when": time.strftime("%Y-%m-%d %H:%M")}
    steps, sizes = (3, (16,)) if args.quick else (100, (256, 1024))
    variants = ["eager", "channels-last+bf16", "channels-last+bf16+compile"]
    out["steps"] = []
    for bs in sizes:
        for variant in variants[:1] if args.quick else variants:
            r = step_time(device, bs, variant, steps)
            out["steps"].append(r)
            print(f"step bs {bs} {variant}: {r['ms_per_step']:.1f} ms, {r['img_per_s']:,.0f} img/s", flush=True)
    k, bs = (2, 16) if args.quick else (8, 256)
    out["fused"] = f = fused_part(device, k, bs, 2 if args.quick else 20)
    print(f"fused: {k} seeds of {MODEL} at bs {bs}: {f['speedup']:.1f}x the seeds per second of {k} runs", flush=True)
    if not args.skip_study:
        out["study"] = s = study_part(args.study_minutes, args.dataset, HERE / "gpu" / "study-out")
        print(f"study: {s['took']}; verdicts: {s['verdicts']}; exit {s['returncode']}", flush=True)
    path = args.json or HERE / "gpu" / f"{re.sub(r'[^A-Za-z0-9]+', '_', name).strip('_').lower()}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"raw figures: {path}")


if __name__ == "__main__":
    main()
