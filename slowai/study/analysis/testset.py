"""The test set's own sampling error in a Δ: per-image correctness of each confirm run, stored compactly, and the
variance of Δ that no number of seeds removes.

Why: seeds vary initialisation, batch order and the train/valid split, but every run is scored on the same N test
images. Two models that disagree on 5% of 10,000 images carry a test-set standard error of ≈ 0.22 points in Δ, and a
verdict that ignores it speaks about this test set, not the task. With D_si = A_si − B_si (run pairs s = 1..n,
images i = 1..N, 1 = correct) a crossed two-way model D_si = Δ + u_s + v_i + w_si gives

    Var(Δ̂) = σ_u²/n + σ_v²/N + σ_w²/(nN),

and the paired t-test's s_d²/n estimates only σ_u²/n + σ_w²/(nN) (v_i is common to every seed). The missing image
term τ² = σ_v²/N is estimated by moments: σ̂_w² = the two-way residual mean square
Σ(D_si − D̄_s· − D̄_·i + D̄)²/((n−1)(N−1)), and σ̂_v² = max(0, var_i(D̄_·i) − σ̂_w²/n).
"""

from __future__ import annotations

import base64
import math
from dataclasses import replace

import numpy as np

from slowai.study.analysis.stats import DiffCI, t_interval

ATTR = "test_correct"  # the confirm trial's user attr: base64 of the bit-packed per-image correctness


def pack(correct: np.ndarray) -> str:
    """Per-image correctness as base64 of its bits: 10,000 test images take 1,668 characters."""
    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool)).tobytes()).decode("ascii")


def unpack(text: str, n: int) -> np.ndarray:
    """The n booleans `pack` stored."""
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8), count=n).astype(bool)


def image_variance(a: np.ndarray, b: np.ndarray) -> float:
    """τ² = σ̂_v²/N, the test images' share of Var(Δ̂), from n × N correctness matrices of the paired runs."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n, big_n = d.shape
    if n < 2 or big_n < 2:
        return math.nan
    rows, cols, grand = d.mean(axis=1, keepdims=True), d.mean(axis=0, keepdims=True), d.mean()
    residual = float(((d - rows - cols + grand) ** 2).sum()) / ((n - 1) * (big_n - 1))
    sigma_v2 = max(0.0, float(cols.var(ddof=1)) - residual / n)
    return sigma_v2 / big_n


def with_images(d: DiffCI, tau2: float, n_images: int, conf: float = 0.95) -> DiffCI:
    """The paired Δ with the test-set variance added: se² = s_d²/n + τ², Satterthwaite's
    df = se⁴ / ((s_d²/n)²/(n−1) + τ⁴/(N−1)), and p and the interval recomputed from them."""
    if not (math.isfinite(tau2) and tau2 > 0 and math.isfinite(d.se)):
        return d
    seed_var = d.se**2
    se = math.sqrt(seed_var + tau2)
    df = se**4 / (seed_var**2 / d.df + tau2**2 / (n_images - 1))
    return replace(t_interval(d.delta, se, df, conf, d.n, d.method, d.sd), test_var=tau2)


def share(d: DiffCI) -> float:
    """The test set's share of Var(Δ̂): τ²/se² (0 when τ² was not estimated)."""
    return d.test_var / d.se**2 if d.se > 0 and math.isfinite(d.se) else math.nan
