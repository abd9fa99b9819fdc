"""Wall time of a whole study with and without slowai's automatic CPU speed-ups, at the same plan.

Runs `residual_vs_plain` twice, each in a fresh process with its own empty output directory and an empty compile
cache (so compile costs are included): once with `compile=False, channels_last=False` (eager, the old default),
once with the default automatic choice. Prints both wall times, the ratio, and each run's comparison table.

    python benchmarks/study_speed.py                  # the default study's CPU plan (preset 1, ~1.5 h in total)
    python benchmarks/study_speed.py --preset 4       # the smallest CPU preset (~15 min in total)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CANDIDATES = ["residual", "plain", "timm/resnet18"]


def one(mode: str, preset: int, out: Path) -> None:
    """A single study run in this process (called by the parent in a fresh process)."""
    from slowai.study import StudySpec, run_study
    from slowai.study.planning.budget import CPU_PRESETS

    accel = {"compile": False, "channels_last": False} if mode == "eager" else {}
    spec = StudySpec(name=f"speed-{mode}", candidates=CANDIDATES, out=out, wandb="disabled", progress=False, **accel)
    t0 = time.perf_counter()
    run_study(spec, budget=CPU_PRESETS[preset], log=print)
    (out / "wall.json").write_text(json.dumps({"mode": mode, "wall_s": time.perf_counter() - t0}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", type=int, default=1, help="index into planning.budget.CPU_PRESETS (default: 1)")
    p.add_argument("--one", choices=["eager", "auto"], help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return one(args.one, args.preset, Path(args.out))
    from slowai.study.planning.budget import CPU_PRESETS

    print(f"plan: {CPU_PRESETS[args.preset]}  candidates: {', '.join(CANDIDATES)}", flush=True)
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("eager", "auto"):
            out, cache = Path(tmp) / mode, Path(tmp) / f"cache-{mode}"
            env = os.environ | {"XDG_CACHE_HOME": str(cache), "WANDB_MODE": "disabled"}
            cmd = [sys.executable, __file__, "--one", mode, "--preset", str(args.preset), "--out", str(out)]
            subprocess.run(cmd, env=env, check=True)
            walls[mode] = json.loads((out / "wall.json").read_text())["wall_s"]
            print(f"{mode}: {walls[mode]:.0f} s wall", flush=True)
    print(
        f"\nstudy wall time: eager {walls['eager']:.0f} s, automatic speed-ups {walls['auto']:.0f} s "
        f"(compile included, cold cache): {walls['eager'] / walls['auto']:.2f}x shorter"
    )


if __name__ == "__main__":
    main()
