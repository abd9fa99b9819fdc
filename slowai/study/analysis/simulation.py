"""Simulated studies for proving the verdict procedure: final test accuracies under the noise models a reviewer
asks about, decided by the very `decide` studies call (used by tests/test_sequential.py and benchmarks/power.py).

Every model: accuracy_{c,s} = 0.9 + Δ_c + u_s + e_{c,s}, with a seed effect u_s ~ N(0, sd²·ρ) every candidate
shares and its own noise e_{c,s} of variance sd²·(1 − ρ), standardised before scaling:
- gaussian: e normal; t3: Student t₃ / √3 (heavy tails); skew: (Gamma(2) − 2)/√2 (right-skewed);
- diverged: gaussian, then each run independently diverges with probability `diverge` and scores 0.1 (chance on
  10 classes), counted as it is (the project's rule: a diverged run is never dropped);
- unequal: gaussian with each candidate's sd scaled by 1, 2, 0.5, 1.5, ... (unequal variances);
- rho0: gaussian with ρ = 0 (seeds share nothing, so pairing cannot help).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from slowai.study.analysis.verdicts import Design, Verdict, decide

SEEDS = tuple(range(10))
MARGIN = 0.003
SD = 0.003  # per-run sd: with ρ = 0.5 the paired difference has sd 0.3 points too
CHANCE = 0.1
MODELS = ("gaussian", "t3", "skew", "diverged", "unequal", "rho0")
UNEQUAL = (1.0, 2.0, 0.5, 1.5)


def standard_noise(rng: np.random.Generator, model: str, shape: tuple[int, ...]) -> np.ndarray:
    """Noise of mean 0 and variance 1 with the model's shape (tails, skew)."""
    if model == "t3":
        return rng.standard_t(3, shape) / math.sqrt(3)
    if model == "skew":
        return (rng.gamma(2.0, 1.0, shape) - 2.0) / math.sqrt(2.0)
    return rng.standard_normal(shape)


def simulate(
    rng: np.random.Generator,
    model: str,
    deltas: Mapping[str, float],
    studies: int,
    sd: float = SD,
    rho: float = 0.5,
    diverge: float = 0.05,
) -> list[dict[str, dict[int, float]]]:
    """`studies` studies' accuracies {candidate: {seed: accuracy}} on every seed under `model` (module docstring)."""
    if model not in MODELS:
        raise ValueError(f"unknown noise model {model!r}; valid: {', '.join(MODELS)}")
    rho = 0.0 if model == "rho0" else rho
    k, n = len(deltas), len(SEEDS)
    scale = np.resize(UNEQUAL, k) if model == "unequal" else np.ones(k)
    u = rng.normal(0.0, sd * math.sqrt(rho), (studies, 1, n))
    e = standard_noise(rng, model, (studies, k, n)) * sd * math.sqrt(1 - rho) * scale[None, :, None]
    acc = 0.9 + np.asarray(list(deltas.values()))[None, :, None] + u + e
    if model == "diverged":
        acc = np.where(rng.random(acc.shape) < diverge, CHANCE, acc)
    return [{c: dict(zip(SEEDS, row)) for c, row in zip(deltas, study.tolist())} for study in acc]


def decide_all(studies: list[dict[str, dict[int, float]]], design: Design, reference: str = "ref"):
    """The verdicts of every simulated study: list of {candidate: Verdict}."""
    out: list[dict[str, Verdict]] = [decide(runs, reference, design) for runs in studies]
    return out


def simulate_images(
    rng: np.random.Generator, candidates: int, studies: int, n_images: int = 1000, spread: float = 2.0
) -> list[tuple[dict[str, dict[int, float]], dict[str, dict[int, np.ndarray]]]]:
    """Studies whose test set is a fresh sample of `n_images` from an image population on which every candidate
    has the same accuracy (the null about the task), but not the same images right: image i has a difficulty
    θ_i ~ N(2, 2²), candidate c a taste γ_ci ~ N(0, spread²), and seed s of c is right with probability
    sigmoid(θ_i + γ_ci). So on any one test set the candidates differ, and only the test-set term can say so.
    Returns [(runs, images)], candidates named "ref", "c1", "c2", ..."""
    names = ["ref", *(f"c{k}" for k in range(1, candidates))]
    out = []
    for _ in range(studies):
        theta = rng.normal(2.0, 2.0, n_images)
        logit = theta[None, :] + rng.normal(0.0, spread, (candidates, n_images))
        p = 1 / (1 + np.exp(-logit))
        right = rng.random((candidates, len(SEEDS), n_images)) < p[:, None, :]
        runs = {c: dict(zip(SEEDS, right[k].mean(axis=1).tolist())) for k, c in enumerate(names)}
        out.append((runs, {c: dict(zip(SEEDS, right[k])) for k, c in enumerate(names)}))
    return out
