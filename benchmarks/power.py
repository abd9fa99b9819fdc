"""The verdict procedure's error rates and power, now (calibrated group-sequential boundaries) vs before (the
union bound over looks), on simulated studies under every noise model of `slowai.study.analysis.simulation`.

Each cell decides the same simulated studies both ways (4 candidates: 3 comparisons, looks at 3..10 seeds, margin
0.3 points, per-run sd 0.3 points): false better/worse (every Δ = 0), false equivalent (every |Δ| = margin), and
power to call "better" a candidate truly 0.3 or 0.5 points ahead (two null candidates beside it).

    python benchmarks/power.py                 # 2,000 studies per cell (~4 min on one core)
    python benchmarks/power.py --studies 500   # a quick look
"""

from __future__ import annotations

import argparse
import time
import types

import numpy as np
from scipy import special
from scipy import stats as scipy_stats

import slowai.study.analysis.stats as study_stats
from slowai.study.analysis.simulation import MARGIN, MODELS, SEEDS, decide_all, simulate
from slowai.study.analysis.verdicts import Design

BOUNDARIES = ("calibrated", "union")
CASES = {  # name: (Δ per candidate, what is counted)
    "false better/worse": ({"ref": 0.0, "a": 0.0, "b": 0.0, "c": 0.0}, "any difference"),
    "false equivalent": ({"ref": 0.0, "a": MARGIN, "b": -MARGIN, "c": MARGIN}, "any equivalent"),
    "power Δ=0.3": ({"ref": 0.0, "a": 0.003, "b": 0.0, "c": 0.0}, "a better"),
    "power Δ=0.5": ({"ref": 0.0, "a": 0.005, "b": 0.0, "c": 0.0}, "a better"),
}
ROWS = [(m, 0.05) for m in MODELS if m != "diverged"] + [("diverged", 0.02), ("diverged", 0.05)]


def _fast_t() -> None:
    """scipy.stats.t's functions without argument checks (the same special functions; proved identical in
    tests/test_verdicts.py): a study is decided in ~2 ms instead of ~10."""
    t = types.SimpleNamespace(
        ppf=lambda q, df: special.stdtrit(df, q),
        sf=lambda x, df: special.stdtr(df, -x),
        cdf=lambda x, df: special.stdtr(df, x),
    )
    study_stats.stats = types.SimpleNamespace(t=t, norm=scipy_stats.norm, nct=scipy_stats.nct)


def rate(studies: list[dict], what: str) -> float:
    if what == "any difference":
        return float(np.mean([any(v.verdict in ("better", "worse") for v in s.values()) for s in studies]))
    if what == "any equivalent":
        return float(np.mean([any(v.verdict == "equivalent" for v in s.values()) for s in studies]))
    return float(np.mean([s["a"].verdict == "better" for s in studies]))


def cell(model: str, diverge: float, case: str, n: int, seed: int) -> dict[str, float]:
    deltas, what = CASES[case]
    runs = simulate(np.random.default_rng(seed), model, deltas, n, diverge=diverge)
    return {b: rate(decide_all(runs, Design(SEEDS, 3, 10, MARGIN, boundary=b)), what) for b in BOUNDARIES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=2000)
    args = ap.parse_args()
    _fast_t()
    start = time.perf_counter()
    print(f"{args.studies} studies per cell; each cell: now (calibrated) / before (union bound), in %\n")
    print("| noise model | " + " | ".join(CASES) + " |")
    print("| --- |" + " ---: |" * len(CASES))
    for i, (model, diverge) in enumerate(ROWS):
        name = f"{model} ({100 * diverge:.0f}%)" if model == "diverged" else model
        cells = [cell(model, diverge, case, args.studies, 1000 * i + j) for j, case in enumerate(CASES)]
        shown = [f"{100 * c['calibrated']:.1f} / {100 * c['union']:.1f}" for c in cells]
        print(f"| {name} | " + " | ".join(shown) + " |")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
