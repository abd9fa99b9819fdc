"""A whole study with fused confirm seeds against the same study unfused: the digits study at `--seeds 8`, once with
`--fuse 8` and once with `--fuse off`, same plan (explicit trials, epochs and seeds), each a new process, rounds
alternating which goes first. Prints and stores wall times, per-seed test accuracies and the verdicts of both.

    python benchmarks/fuse_study.py                       # 1 round (about 5 minutes on 2 cores)
    python benchmarks/fuse_study.py --rounds 2 --trials 4

Tuning is identical in both (seeded TPE, unfused): only the confirm runs differ, so the end-to-end speed-up is
bounded by the confirm share of the study.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run_study(fuse: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One study in a fresh process; its wall time, plan lines, per-seed test accuracy and verdicts."""
    argv = ["--seeds", str(args.seeds), "--trials", str(args.trials), "--epochs", str(args.epochs), "--fuse", fuse]
    cmd = [sys.executable, "-m", "studies.digits", *argv, "--out", str(out), "--no-progress", "--wandb", "offline"]
    env = {**os.environ, "WANDB_SILENT": "true"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    rows = json.loads((out / "results.json").read_text())
    verdicts = json.loads((out / "verdicts.json").read_text())["comparisons"]
    lines = proc.stdout.splitlines()
    return {
        "wall_s": wall,
        "took": next((line for line in lines if line.startswith("took ")), ""),
        "fused_line": next((line.strip() for line in lines if "fused runs:" in line), ""),
        "test_acc": {f"{r['candidate']}/{r['seed']}": r["test_accuracy"] for r in rows},
        "verdicts": {v["candidate"]: v["verdict"] for v in verdicts},
        "delta": {v["candidate"]: v["delta"] for v in verdicts},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", type=Path, default=HERE / "fuse_study.json")
    args = ap.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"fused": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = [("fused", str(args.seeds)), ("off", "off")]
            for name, fuse in order if r % 2 == 0 else order[::-1]:
                runs[name].append(last := run_study(fuse, args, Path(tmp) / f"{name}-{r}"))
                print(f"round {r + 1} {name:5}: {last['wall_s']:6.1f} s  {last['took']}", flush=True)
    fused_s = statistics.median(x["wall_s"] for x in runs["fused"])
    off_s = statistics.median(x["wall_s"] for x in runs["off"])
    last_f, last_o = runs["fused"][-1], runs["off"][-1]
    gaps = {k: 100 * (last_f["test_acc"][k] - v) for k, v in last_o["test_acc"].items()}
    out = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "load_1min": os.getloadavg()[0],
        "plan": {"seeds": args.seeds, "trials": args.trials, "epochs": args.epochs, "study": "studies.digits"},
        "runs": runs,
        "fused_s": fused_s,
        "off_s": off_s,
        "speedup": off_s / fused_s,
        "per_seed_gap_points": gaps,
        "max_gap_points": max(abs(g) for g in gaps.values()),
        "same_verdicts": last_f["verdicts"] == last_o["verdicts"],
    }
    print(f"{last_f['fused_line']}\nmedian wall: fused {fused_s:.1f} s, off {off_s:.1f} s: {out['speedup']:.2f}x")
    print(f"verdicts fused {last_f['verdicts']} / off {last_o['verdicts']}; same: {out['same_verdicts']}")
    print(f"per-seed test accuracy, fused - off (points): max |gap| {out['max_gap_points']:.2f}")
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"raw figures: {args.json}")


if __name__ == "__main__":
    main()
