"""What a resumed study must keep: a fingerprint of everything that changes results, stored with its trials.

Why: a study resumed with another dataset setting, epoch count, model kwarg, recipe, search space, pruner or seed
would silently mix two experiments in one table; one resumed with other seeds, max seeds, margin or α would change
the sequential design after its looks were seen, and void its error rate. Only `--trials` may grow (tuning reads
validation data only); new candidates may join.
Accelerations (compile, channels-last, bf16) are recorded per trial but not fingerprinted: workers on different
machines may differ there, and the numbers agree within float tolerance.
"""

from __future__ import annotations

from typing import Any

import optuna

from slowai.study.analysis.stats import ALPHA
from slowai.study.coordination.storage import existing_names, load_if_exists
from slowai.study.space import describe_space, dry_draws
from slowai.study.spec import Budget, Candidate, StudyError, StudySpec, optuna_name

ATTR = "fingerprint"
SHOWN_CHARS = 60


def of(
    spec: StudySpec, cand: Candidate, budget: Budget, data: dict[str, Any], draws: list[optuna.Trial] | None = None
) -> dict[str, Any]:
    """JSON-safe description of one candidate's experiment (its space from seeded dry draws)."""
    return {
        "data": data,
        "budget": budget.fingerprint(),
        "candidate": cand.describe(),
        "space": describe_space(draws if draws is not None else dry_draws(spec.space_of(cand), spec.seed)),
        "pruner": spec.pruner,
        "seed": spec.seed,
        "margin": spec.margin,  # the sequential stopping rule uses it: fixed before the first look
        "alpha": ALPHA,
    }


def stored_attrs(storage: Any, spec: StudySpec) -> dict[str, dict[str, Any]]:
    """User attrs of each candidate's existing tune study (none for a new study, a new candidate, or a study whose
    attrs another worker is writing at this moment: they are written one by one)."""
    names = existing_names(storage) if storage is not None else set()
    out = {}
    for c in spec.candidates:
        tune = load_if_exists(storage, optuna_name(spec.name, c.name, "tune"), names)
        if tune is not None and "budget" in tune.user_attrs:  # else another worker is creating it right now
            out[c.name] = tune.user_attrs
    return out


def stored_budget(stored: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The budget the study was started with (every candidate shares it)."""
    return next((a["budget"] for a in stored.values() if "budget" in a), None)


def check(spec: StudySpec, stored: dict[str, dict[str, Any]], fingerprints: dict[str, dict[str, Any]]) -> None:
    """StudyError naming what changed since the stored run, for the first candidate that differs."""
    for cand, attrs in stored.items():
        if ATTR not in attrs:  # a study from before fingerprints: at least the dataset and budget must match
            old = {"dataset": attrs.get("dataset"), "budget": Budget(**attrs["budget"]).fingerprint()}
            new = {"dataset": spec.dataset_name, "budget": fingerprints[cand]["budget"]}
        else:
            old, new = _upgraded(attrs), fingerprints[cand]
        if changes := diff(old, new):
            raise StudyError(refusal(f"study {spec.name!r} ({cand}) was run", changes))


def refusal(what: str, changes: list[str]) -> str:
    """The one line a changed resume gets: what changed, why it cannot, and what to do instead."""
    return (
        f"{what} with other settings: {'; '.join(changes)}. Only --trials may grow on resume (seeds, max seeds, "
        "margin and α are the design the verdicts' error rate rests on): use a new --study-name"
    )


def _upgraded(attrs: dict[str, Any]) -> dict[str, Any]:
    """A stored fingerprint with what older versions left out filled in as they ran: the default margin and α,
    and the seeds of the budget stored beside it."""
    fp = {"margin": 0.003, "alpha": ALPHA, **attrs[ATTR]}
    stored = attrs.get("budget", {})
    budget = {k: stored[k] for k in ("seeds", "max_seeds") if k in stored}
    return {**fp, "budget": {**budget, **fp.get("budget", {})}}


def diff(old: Any, new: Any, path: str = "") -> list[str]:
    """'budget.tune_epochs 2 → 3'-style lines for every leaf that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for k in sorted(set(old) | set(new)) for line in diff(old.get(k), new.get(k), _join(path, k))]
    if old == new or (isinstance(old, (list, tuple)) and list(old) == list(new or [])):
        return []
    return [f"{path or 'value'} {_short(old)} → {_short(new)}"]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def _short(v: Any) -> str:
    text = "(none)" if v is None else repr(v)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"
