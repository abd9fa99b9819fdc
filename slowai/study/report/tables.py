"""The study's tables as rows of strings: the comparison with verdicts, the ablation table, factorial effects and
the learning-curve effects; rendered as markdown (report.md) or aligned text (the terminal)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from optuna.trial import FrozenTrial

from slowai.study.analysis.answer import pairing_gain, test_error
from slowai.study.analysis.results import CandidateResult, StudyResult
from slowai.study.analysis.testset import share

Table = tuple[list[str], list[list[str]]]
AGREES = (
    "Each Δ's interval is the one its verdict was taken on (its look's level after Holm and the sequential "
    "boundary), so it excludes 0 exactly when the verdict is better or worse."
)


def population(res: StudyResult) -> str:
    """One line on what a verdict generalises to: which sources of variation its interval averages over."""
    seeded = all(c.images and len(c.images) == len(c.runs) for c in res.candidates if c.runs)
    if seeded:
        return (
            "Population: a verdict speaks about these candidates with their tuned settings on this dataset's task: "
            "averaged over seeds, each drawing its own train/valid split (where valid is not the test set), "
            "initialisation, batch order and augmentation, and over test images like these (the test set's sampling "
            "error is in every interval)."
        )
    return (
        "Population: a verdict speaks about these candidates with their tuned settings, averaged over seeds, on "
        "this one test set: its runs stored no per-image results, so the test set's sampling error ('± test "
        "set') is not in the intervals."
    )


DELTA_HEAD = "Δ vs ref (CI that decided)"  # the look's interval at its Holm and sequential level, see verdicts.py


def pct(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.2f}"


def signed(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{round(100 * x, 2) + 0.0:+.2f}"  # + 0.0: no "-0.00"


def _ci(lo: float, hi: float) -> str:
    return "" if math.isnan(lo) else f" [{signed(lo)}, {signed(hi)}]"


def _p(p: float) -> str:
    return "n/a" if p is None or math.isnan(p) else f"{p:.3g}"


def _hp(best: FrozenTrial | None) -> str:
    if best is None:
        return "n/a"
    hp = best.user_attrs.get("hyperparams") or best.params  # what trained, fixed values of the space included
    return ", ".join(f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}" for k, v in hp.items())


def _published(p: Mapping[str, float] | None) -> str:
    return "" if not p else f"{pct(p.get('valid', math.nan))} / {pct(p.get('test', math.nan))}"


def _expected(res: StudyResult, name: str) -> str:
    """E[best valid acc] after one trial → after all N (Dodge et al.): a lucky tuning run shows as a steep curve."""
    curve = res.expected_max.get(name)
    return f"{pct(curve[0])} → {pct(curve[-1])} (N={len(curve)})" if curve else "n/a"


def verdict_text(c: CandidateResult) -> str:
    """'better', 'equivalent (±0.30): [−0.12, +0.20] inside', 'inconclusive: an effect of 1.20 would be found with
    80% probability at n=5', 'inconclusive: too few seeds to say (n=2)', '' for the reference."""
    v = c.verdict
    if v is None:
        return ""
    if v.verdict == "equivalent":
        inside = _ci(v.equiv.lo, v.equiv.hi) + " inside" if v.equiv is not None else ""
        return f"equivalent (±{100 * v.margin:.2f}):{inside}"
    if v.verdict == "inconclusive":
        if v.too_few:
            return f"inconclusive: too few seeds to say (n={v.n})"
        if not v.mde < 1:  # an effect beyond 100 points: nothing was detectable
            return f"inconclusive: no effect detectable at n={v.n}"
        return f"inconclusive: an effect of {100 * v.mde:.2f} would be found with 80% probability at n={v.n}"
    return v.verdict


def _improvement(c: CandidateResult) -> str:
    """P(candidate > reference) over the look's paired seeds with its 95% bootstrap interval."""
    if c.p_improve is None:
        return "n/a"
    p, lo, hi = c.p_improve
    return f"{p:.2f} [{lo:.2f}, {hi:.2f}]"


def comparison(res: StudyResult) -> Table:
    """One row per candidate (reference first): accuracy, Δ with the interval that decided, verdict, adjusted p,
    P(better), Δ adjusted for stopping early (sequential designs), cost."""
    sequential = res.design is not None and res.design.sequential
    heads = ["candidate", "n", "valid acc %", "test acc % (95% CI)", "± test set", DELTA_HEAD, "verdict", "adj. p"]
    heads += ["P(better) (95% CI)"] + ["Δ adj. for early stop"] * sequential
    heads += ["params", "MFLOPs", "s/epoch", "E[best valid] 1→N trials", "best hp"]
    published = any(c.published for c in res.candidates)
    rows = []
    for c in sorted(res.candidates, key=lambda c: c.name != res.reference):
        if c.acc is None:
            acc = "not confirmed yet"
        else:
            acc = pct(c.acc.mean) + ("" if c.acc.n < 2 else f" ± {100 * c.acc.half_width:.2f}")
        delta, p = ("reference", "") if c.name == res.reference else ("n/a", "")
        if c.name != res.reference and c.diff is not None:
            delta = signed(c.diff.delta) + _ci(c.diff.lo, c.diff.hi)
            p = _p(c.verdict.p_adj if c.verdict else c.diff.p)
        spe = "n/a" if math.isnan(c.seconds_per_epoch) else f"{c.seconds_per_epoch:.1f}"
        err = test_error(c)
        row = [c.name, str(len(c.runs)), pct(c.valid_acc), acc, "n/a" if math.isnan(err) else f"{100 * err:.2f}"]
        row += [delta, verdict_text(c), p, "" if c.name == res.reference else _improvement(c)]
        row += ["" if c.name == res.reference else signed(c.adjusted)] * sequential
        row += [f"{c.params:,}", f"{c.mflops:.1f}", spe, _expected(res, c.name)]
        rows.append(row + [_hp(c.best)] + [_published(c.published)] * published)
    return heads + ["published valid / test %"] * published, rows


def ablation(res: StudyResult) -> Table:
    """The classic ablation table: what changed vs the base, Δ accuracy (CI), verdict and the cost deltas."""
    ref = next((c for c in res.candidates if c.name == res.reference), None)
    heads = ["changed vs " + res.reference, DELTA_HEAD, "verdict", "Δ params", "Δ MFLOPs", "Δ s/epoch"]
    rows = []
    for c in res.candidates:
        if c.name == res.reference or ref is None:
            continue
        d = c.diff
        delta = "not confirmed yet" if d is None else signed(d.delta) + _ci(d.lo, d.hi)
        rows.append(
            [
                c.name,
                delta,
                verdict_text(c),
                f"{c.params - ref.params:+,}" if c.runs and ref.runs else "n/a",
                f"{c.mflops - ref.mflops:+.2f}" if c.runs and ref.runs else "n/a",
                _delta_s(c.seconds_per_epoch, ref.seconds_per_epoch),
            ]
        )
    return heads, rows


def _delta_s(a: float, b: float) -> str:
    return "n/a" if math.isnan(a) or math.isnan(b) else f"{round(a - b, 1) + 0.0:+.1f}"


def effects(res: StudyResult) -> Table:
    """Factorial main effects and interactions (accuracy points) with CIs at Holm's level and Holm-adjusted p."""
    heads = ["effect", "levels", "estimate (CI at Holm's level)", "adj. p", "verdict"]
    rows = [
        [
            e.name,
            "; ".join(f"{f}: {a} → {b}" for f, (a, b) in zip(e.factors, e.levels)),
            signed(e.diff.delta) + _ci(e.diff.lo, e.diff.hi),
            _p(e.p_adj),
            e.verdict,
        ]
        for e in res.effects
    ]
    return heads, rows


def curve(res: StudyResult) -> Table:
    """Paired Δ validation accuracy per epoch and of the curve's area, marked where Holm-significant."""
    epochs = max((int(r["epoch"]) for rows in res.epoch_effects.values() for r in rows), default=0)
    area = any(int(r["epoch"]) == 0 for rows in res.epoch_effects.values() for r in rows)
    heads = ["comparison", *(f"epoch {e}" for e in range(1, epochs + 1))] + ["area (mean over epochs)"] * area
    out = []
    for name, rows in res.epoch_effects.items():
        by_epoch = {int(r["epoch"]): r for r in rows}
        cells = [_curve_cell(by_epoch.get(e)) for e in [*range(1, epochs + 1), *[0] * area]]
        out.append([name, *cells])
    return heads, out


def _curve_cell(r: Mapping[str, float] | None) -> str:
    if r is None:
        return "n/a"
    mark = {"better": " ▲", "worse": " ▼"}.get(str(r.get("verdict")), "")
    return signed(r["delta"]) + _ci(r["lo"], r["hi"]) + mark


def notes(res: StudyResult) -> list[str]:
    """What the numbers can and cannot say: method, population, pairing gain, diverged runs."""
    d, out = res.design, []
    if d is not None:
        looks = f"sequential looks at {d.first}..{d.last} seeds" if d.sequential else f"one look at {d.first} seeds"
        out.append(f"Verdicts: {d.method}; {looks}; α = {d.alpha}; margin ±{100 * d.margin:.2f} points. {AGREES}")
        out.append(population(res))
    for c in res.candidates:
        if c.diff is not None and c.diff.test_var > 0:
            out.append(
                f"`{c.name}`: the test set is {100 * share(c.diff):.0f}% of the variance of Δ (±"
                f"{100 * math.sqrt(c.diff.test_var):.2f} points, one standard error), a part no number of seeds "
                "shrinks; its interval and test include it."
            )
        gain = pairing_gain(c)
        if c.diff is not None and c.diff.method == "Welch" and c.name != res.reference:
            out.append(f"`{c.name}`: fewer than 2 paired seeds with the reference, so Welch's unpaired test is used.")
        elif not math.isnan(gain):
            w = c.welch
            how = (
                f"narrowed the CI of Δ by {100 * gain:.0f}%"
                if gain >= 0
                else (
                    f"widened the CI of Δ by {-100 * gain:.0f}% (the seeds' noise was not shared, and pairing "
                    "costs degrees of freedom)"
                )
            )
            out.append(
                f"`{c.name}`: pairing seeds {how}: ±{100 * c.paired.half_width:.2f} paired vs "
                f"±{100 * w.half_width:.2f} unpaired, same runs and level, seeds' variance only."
            )
        if c.best is None and c.tune_counts:
            out.append(unconfirmed(c))
        for t in c.diverged:
            out.append(
                f"`{c.name}` seed {t.user_attrs.get('seed')} diverged ({t.user_attrs.get('stop_reason')}); it is "
                f"counted at its test accuracy {pct(t.user_attrs.get('test_accuracy'))} %, not dropped (dropping "
                "would hide a recipe's instability and bias Δ in its favour)."
            )
    return out


def markdown(table: Table) -> str:
    heads, rows = table
    align = ["---" if i == 0 or h in ("best hp", "verdict") else "---:" for i, h in enumerate(heads)]
    lines = ["| " + " | ".join(heads) + " |", "| " + " | ".join(align) + " |"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def text(table: Table) -> str:
    """The same table aligned for a terminal."""
    rows = [table[0], *table[1]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def unconfirmed(c: CandidateResult) -> str:
    """Why a candidate has no verdict: every tune trial was pruned or failed."""
    counts = ", ".join(f"{n} {k}" for k, n in c.tune_counts.items())
    return f"`{c.name}`: no tune trial completed ({counts}), so it was not confirmed and has no verdict."


def failures(res: StudyResult) -> list[str]:
    """One line per failed trial: what failed, why, and what happened next (retried, or failed for good)."""
    lines = []
    for c in res.candidates:
        for t in sorted(c.failures, key=lambda t: (t.user_attrs.get("stage", ""), t.number)):
            a = t.user_attrs
            what = f"seed {a['seed']} (t{t.number})" if a.get("stage") == "confirm" and "seed" in a else f"t{t.number}"
            then = "failed for good" if a.get("final") else "retried"
            if a.get("failure") == "interrupted":
                then = "left for the next run"
            lines.append(
                f"- `{c.name}` {a.get('stage', '')} {what}: {a.get('fail_reason', 'no reason recorded')}; {then}"
            )
    return lines
