"""The answer as files and runs other tools read: results.csv/json (one row per confirm run), verdicts.json (the
analysis), and one W&B summary run holding the verdict tables."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from slowai.study.analysis.answer import pairing_gain, test_error
from slowai.study.analysis.results import CandidateResult, StudyResult
from slowai.study.report import tables


def verdicts(res: StudyResult) -> dict[str, Any]:
    """verdicts.json: the design, every comparison's verdict, effects over the curve and factorial effects."""
    comparisons = [
        {
            "candidate": c.name,
            "reference": res.reference,
            "verdict": c.verdict.verdict,
            "delta": c.diff.delta,
            "ci": [c.diff.lo, c.diff.hi],
            "ci_level": 1 - c.verdict.alpha_look,
            "equivalence_ci": [c.verdict.equiv.lo, c.verdict.equiv.hi] if c.verdict.equiv else None,
            "delta_adjusted": c.adjusted,
            "p_improvement": list(c.p_improve) if c.p_improve else None,
            "method": c.diff.method,
            "pairs": c.diff.n,
            "p_adj": c.verdict.p_adj,
            "p_equiv_adj": c.verdict.p_equiv_adj,
            "decided_at_seeds": c.verdict.decided_at_seeds,
            "look_seeds": c.verdict.n,
            "alpha_look": c.verdict.alpha_look,
            "margin": c.verdict.margin,
            "mde": c.verdict.mde,
            "pairing_gain": pairing_gain(c),
            "test_set_error": test_error(c),
            "diverged_seeds": [t.user_attrs.get("seed") for t in c.diverged],
        }
        for c in res.candidates
        if c.verdict is not None
    ]
    effects = [
        {
            "effect": e.name,
            "levels": e.levels,
            "estimate": e.diff.delta,
            "ci": [e.diff.lo, e.diff.hi],
            "p_adj": e.p_adj,
            "verdict": e.verdict,
        }
        for e in res.effects
    ]
    design = res.design.describe() if res.design is not None else None
    return {"design": design, "comparisons": comparisons, "effects": effects, "epoch_effects": res.epoch_effects}


def write_rows(res: StudyResult, out: Path) -> None:
    """results.csv/json: one row per confirm run, with its candidate's verdict; verdicts.json: the analysis."""
    by_name = {c.name: c for c in res.candidates}
    rows = [{**r, **_verdict_fields(by_name[r["candidate"]])} for r in res.rows]
    keys = list(dict.fromkeys(k for r in rows for k in r)) or ["candidate"]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    (out / "results.json").write_text(json.dumps(rows, indent=2, default=str))
    (out / "verdicts.json").write_text(json.dumps(verdicts(res), indent=2, default=str))


def _verdict_fields(c: CandidateResult) -> dict[str, Any]:
    v = c.verdict
    if v is None:
        return {}
    return {"verdict": v.verdict, "delta_vs_ref": c.diff.delta, "p_adj": v.p_adj, "margin": v.margin, "mde": v.mde}


def log_wandb(tracker: Any, res: StudyResult) -> None:
    """One W&B run per report: the comparison (and ablation/effects) tables and each verdict in its summary."""
    if not tracker.enabled:
        return
    design = res.design.describe() if res.design is not None else {}
    run = tracker.start(f"{res.name}-verdicts", "summary", [res.dataset, "verdicts"], {"design": design})
    run.table("comparison", *tables.comparison(res))
    if res.effects:
        run.table("factorial_effects", *tables.effects(res))
    elif res.levels:
        run.table("ablation", *tables.ablation(res))
    if res.epoch_effects:
        run.table("curve_effects", *tables.curve(res))
    run.summary({f"verdict/{c['candidate']}": c["verdict"] for c in verdicts(res)["comparisons"]})
    run.finish(0)
