"""A whole study fused against the same study unfused: the digits study at `--seeds 8`, with `--fuse 8`, with
`--fuse off`, and with `--fuse off --no-channels-last` (the noise floor), same plan (explicit trials, epochs and
seeds), each a new process, rounds alternating the order. Prints and stores wall times, best hyperparameters,
per-seed test accuracies and the verdicts of each.

    python benchmarks/fuse_study.py                       # 1 round (about 4 minutes on 2 cores)
    python benchmarks/fuse_study.py --rounds 3

Fused, a confirm round's 8 seeds train as one model, and so do TPE's random start-up tune draws that keep the
model's shapes; later tune draws run one at a time in both. Per-seed gaps are compared only for candidates whose
tuning chose the same hyperparameters in both. The noise floor: two unfused runs of one seed whose only difference is
the float summation order (memory layout) part as far as a fused and an unfused run do (`tests/test_fuse.py`).
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
OFF_NCHW = ["--fuse", "off", "--no-channels-last"]  # the noise floor: unfused, only the float summation order changes


def run_study(flags: list[str], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One study in a fresh process: wall time, plan lines, best hyperparameters, per-seed test accuracy, verdicts."""
    argv = ["--seeds", str(args.seeds), "--trials", str(args.trials), "--epochs", str(args.epochs), *flags]
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
        "flags": flags,
        "wall_s": wall,
        "took": next((line for line in lines if line.startswith("took ")), ""),
        "fused_line": next((line.strip() for line in lines if "fused runs:" in line), ""),
        "best_hp": {r["candidate"]: {k[3:]: v for k, v in r.items() if k.startswith("hp_")} for r in rows},
        "test_acc": {f"{r['candidate']}/{r['seed']}": r["test_accuracy"] for r in rows},
        "verdicts": {v["candidate"]: v["verdict"] for v in verdicts},
        "delta": {v["candidate"]: v["delta"] for v in verdicts},
    }


def gaps(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """Per-seed test accuracy a - b in points, for the candidates both confirmed under the same hyperparameters."""
    same = {c for c, hp in a["best_hp"].items() if b["best_hp"].get(c) == hp}
    return {k: 100 * (v - b["test_acc"][k]) for k, v in a["test_acc"].items() if k.split("/")[0] in same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", type=Path, default=HERE / "fuse_study.json")
    args = ap.parse_args()
    arms = {"fused": ["--fuse", str(args.seeds)], "off": ["--fuse", "off"], "off_nchw": OFF_NCHW}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(arms.items())
            for name, flags in order if r % 2 == 0 else order[::-1]:
                runs[name].append(last := run_study(flags, args, Path(tmp) / f"{name}-{r}"))
                print(f"round {r + 1} {name:8}: {last['wall_s']:6.1f} s  {last['took']}", flush=True)
    wall = {name: statistics.median(x["wall_s"] for x in rs) for name, rs in runs.items()}
    last = {name: rs[-1] for name, rs in runs.items()}
    fused_gaps, floor_gaps = gaps(last["fused"], last["off"]), gaps(last["off_nchw"], last["off"])
    out = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "load_1min": os.getloadavg()[0],
        "plan": {"seeds": args.seeds, "trials": args.trials, "epochs": args.epochs, "study": "studies.digits"},
        "runs": runs,
        "wall_s": wall,
        "speedup": wall["off"] / wall["fused"],
        "per_seed_gap_points": {"fused_vs_off": fused_gaps, "off_nchw_vs_off": floor_gaps},
        "max_gap_points": {"fused_vs_off": _max_abs(fused_gaps), "off_nchw_vs_off": _max_abs(floor_gaps)},
        "same_verdicts": last["fused"]["verdicts"] == last["off"]["verdicts"],
    }
    print(f"{last['fused']['fused_line']}\nmedian wall: fused {wall['fused']:.1f} s, off {wall['off']:.1f} s: "
          f"{out['speedup']:.2f}x (off, NCHW: {wall['off_nchw']:.1f} s)")  # fmt: skip
    print(f"verdicts fused {last['fused']['verdicts']} / off {last['off']['verdicts']}; same: {out['same_verdicts']}")
    for name, g in out["max_gap_points"].items():
        print(
            f"per-seed test accuracy {name.replace('_vs_', ' - ')} (points): max |gap| {g:.2f} over {len(fused_gaps)}"
        )
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"raw figures: {args.json}")


def _max_abs(values: dict[str, float]) -> float | None:
    return max((abs(v) for v in values.values()), default=None)


if __name__ == "__main__":
    main()
