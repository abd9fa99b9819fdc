"""The test set's sampling error in Δ: compact per-image correctness, and the image term of Var(Δ̂).

See `slowai.study.analysis.testset` for the model: D_si = Δ + u_s + v_i + w_si over run pairs s and test images i."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slowai.study.analysis.stats import paired_diff
from slowai.study.analysis.testset import image_variance, pack, share, unpack, with_images


def test_correctness_packs_into_a_few_kilobytes_and_back():
    """10,000 test images' correctness is 1,668 base64 characters and comes back bit for bit."""
    right = np.random.default_rng(1).random(10_000) < 0.9
    text = pack(right)
    assert len(text) == 1668 and np.array_equal(unpack(text, 10_000), right)


def test_image_variance_of_seed_independent_disagreement_is_var_over_n():
    """When every seed makes the same per-image mistakes (rows identical: no seed or interaction term), τ² is the
    variance of the per-image differences over N; identical models (no disagreement) give 0."""
    d_image = np.array([1, 0, 0, -1, 0, 1, 0, 0], dtype=float)  # A right and B wrong on images 0 and 5, etc.
    a = np.tile((d_image > 0).astype(float), (4, 1))
    b = np.tile((d_image < 0).astype(float), (4, 1))
    assert image_variance(a, b) == pytest.approx(d_image.var(ddof=1) / len(d_image))
    assert image_variance(a, a) == 0.0
    assert math.isnan(image_variance(a[:1], b[:1]))


def test_with_images_adds_the_variance_with_satterthwaite_df():
    """se² = s_d²/n + τ², df = se⁴/((s_d²/n)²/(n−1) + τ⁴/(N−1)); the test set's share is τ²/se²."""
    d = paired_diff([0.91, 0.915, 0.905, 0.92], [0.90, 0.902, 0.899, 0.905])
    tau2, n_images = 2e-5, 4000
    w = with_images(d, tau2, n_images)
    se = math.sqrt(d.se**2 + tau2)
    assert w.se == pytest.approx(se) and w.delta == d.delta and w.test_var == tau2
    assert w.df == pytest.approx(se**4 / (d.se**4 / 3 + tau2**2 / (n_images - 1)))
    assert w.lo < d.lo and w.hi > d.hi and w.p > d.p
    assert share(w) == pytest.approx(tau2 / se**2) and share(d) == 0.0
    assert with_images(d, 0.0, n_images) == d
