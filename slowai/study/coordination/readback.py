"""Reading a study's finished work back from the storage: the best tune trial, the confirm runs under it, and the
whole `StudyResult` the analysis and report work from.

Everything here reads the Optuna storage only (no in-process state), so results can be rebuilt at any time, by any
worker, from whatever has finished. Confirm runs count only if they used the current best hyperparameters
(`runs_under_best`): results of an older best trial are never mixed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from slowai.study.analysis.results import CandidateResult, StudyResult, mean_of
from slowai.study.analysis.stats import mean_ci, welch_diff
from slowai.study.coordination.storage import existing_names, load_if_exists
from slowai.study.spec import optuna_name

COMPLETE = (TrialState.COMPLETE,)


def confirm_key(params: dict[str, Any]) -> str:
    """Identifies the hyperparameters a confirm run used: results of an older best trial are never mixed in."""
    return ";".join(f"{k}={params[k]!r}" for k in sorted(params))


def best_trial(trials: Iterable[FrozenTrial]) -> FrozenTrial | None:
    """The completed tune trial with the highest value: the hyperparameters a candidate is confirmed with."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return max(done, key=lambda t: t.value) if done else None


def runs_under_best(
    tune: optuna.Study | None,
    confirm: optuna.Study | None,
    states: tuple[TrialState, ...] | None = COMPLETE,
    deepcopy: bool = False,
) -> tuple[FrozenTrial | None, list[FrozenTrial]]:
    """(best tune trial, the confirm runs in `states` that used its hyperparameters, by seed): the one rule for which
    confirm runs count."""
    best = best_trial(tune.get_trials(deepcopy=False)) if tune is not None else None
    if best is None or confirm is None:
        return best, []
    key = confirm_key(best.params)
    conf = confirm.get_trials(deepcopy=deepcopy, states=states)
    runs = [t for t in conf if t.user_attrs.get("params_key") == key and "seed" in t.user_attrs]
    return best, sorted(runs, key=lambda t: (t.user_attrs.get("seed", -1), t.number))


def candidate_studies(
    storage: Any, study: str, candidate: str, names: set[str] | None = None
) -> tuple[optuna.Study | None, optuna.Study | None]:
    """(tune, confirm) Optuna studies of a candidate, each None until it exists."""
    names = existing_names(storage) if names is None and storage is not None else names
    tune, confirm = (load_if_exists(storage, optuna_name(study, candidate, s), names) for s in ("tune", "confirm"))
    return tune, confirm


def confirmed_runs(storage: Any, study: str, candidate: str) -> tuple[FrozenTrial | None, list[FrozenTrial]]:
    """(best tune trial, its completed confirm runs, one per seed in seed order)."""
    best, runs = runs_under_best(*candidate_studies(storage, study, candidate), deepcopy=True)
    by_seed = {t.user_attrs["seed"]: t for t in runs}
    return best, [by_seed[s] for s in sorted(by_seed)]


def collect(
    storage: Any,
    name: str,
    candidates: list[str],
    reference: str,
    dataset: str,
    url: str,
    published: Mapping[str, Mapping[str, float]] | None = None,
) -> StudyResult:
    """Read tune/confirm trials of every candidate; confirm runs count only if they used the current best params.

    `published` maps candidate -> reference numbers to print beside ours, e.g. {"valid": 0.9184, "test": 0.91}."""
    names = existing_names(storage)
    out, seen = [], []
    for cand in candidates:
        tune_study, confirm_study = candidate_studies(storage, name, cand, names)
        tune = tune_study.get_trials() if tune_study is not None else []
        confirm = confirm_study.get_trials() if confirm_study is not None else []
        best, runs = confirmed_runs(storage, name, cand)
        counts = {
            s.name.lower(): sum(t.state == s for t in tune) for s in TrialState if any(t.state == s for t in tune)
        }
        r = CandidateResult(cand, runs, best, counts, published=(published or {}).get(cand))
        complete = [t for t in tune if t.state == TrialState.COMPLETE]
        r.tune_values = [float(t.value) for t in complete if t.value is not None]
        r.failures = [t for t in tune + confirm if t.state == TrialState.FAIL and _real_failure(t)]
        seen += runs or complete
        if runs:
            _fill_runs(r, runs)
        out.append(r)
    ref = next((c for c in out if c.name == reference), None)
    for c in out:  # a first answer; slowai.study.analysis.answer.analyze replaces it with the paired verdicts
        if ref is not None and ref.runs and c.runs and c.name != reference:
            c.diff = welch_diff(c.accs, ref.accs)
    return StudyResult(name, dataset, reference, url, out, storage, *_data_source(seen))


def _fill_runs(r: CandidateResult, runs: list[FrozenTrial]) -> None:
    """Test accuracy over seeds, and what one run cost."""
    r.acc = mean_ci(r.accs)
    r.params, r.mflops = int(runs[0].user_attrs["params"]), float(runs[0].user_attrs["mflops"])
    r.seconds_per_epoch = mean_of([t.user_attrs.get("seconds_per_epoch") for t in runs])
    r.wall_s = mean_of([t.user_attrs.get("wall_time_s") for t in runs])


def _real_failure(t: FrozenTrial) -> bool:
    """A failure worth reporting: not a popped trial that stood for no work (surplus)."""
    return not str(t.user_attrs.get("fail_reason", "")).startswith("surplus")


def _data_source(trials: list[FrozenTrial]) -> tuple[str | None, str]:
    """Where the data came from and how faithful it is, as the trials recorded it (one dataset per study)."""
    t = next((t for t in reversed(trials) if "data_source" in t.user_attrs), None)
    return (None, "") if t is None else (t.user_attrs["data_source"], t.user_attrs.get("data_note", ""))
