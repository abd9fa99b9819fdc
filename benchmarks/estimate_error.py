"""Where a finished study's time estimate went wrong: per candidate and stage, the measured training seconds per
epoch and seconds per run outside training against what the plan assumed (its stored probe throughput with the
speed-ups' factors; validation and test passes and `estimate.RUN_OVERHEAD_S` outside training).

    python benchmarks/estimate_error.py runs/digits-digits/optuna.journal --dataset digits
    python benchmarks/estimate_error.py runs/residual_vs_plain-fashion_mnist/optuna.journal --json /tmp/err.json

A trial's time outside training is its duration in the storage (claim to result) less the epochs it trained × its
measured training seconds per epoch: validation passes, the test set, building the model, W&B, saving. Fused
members share their epochs, so confirm runs that trained fused are counted apart and left out of the figures.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from pathlib import Path

import optuna
import torch

from slowai.study import StudySpec
from slowai.study.coordination.storage import open_storage
from slowai.study.data import StudyData
from slowai.study.execution.fused_trial import FUSED
from slowai.study.planning import speedups, stored_plan
from slowai.study.planning.estimate import RUN_OVERHEAD_S, DataSizes, sizes_for
from slowai.study.planning.probe import Throughput
from slowai.study.spec import Budget, optuna_name

STAGES = ("tune", "confirm")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("journal", help="the study's Optuna storage (a journal path or a database URL)")
    p.add_argument("--study", help="study name (default: the only one planned in the storage)")
    p.add_argument("--dataset", default="fashion_mnist", help="the study's dataset (default: %(default)s)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    storage = open_storage(args.journal)
    name = args.study or _only_study(storage)
    record = stored_plan.read(storage, name)
    if record is None:
        raise SystemExit(f"error: no stored plan for study {name!r} in {args.journal}")
    rows = [_row(storage, name, record, args.dataset, c, stage) for c in record.accel for stage in STAGES]
    rows = [r for r in rows if r is not None]
    for r in rows:
        outside = f"{r['outside_s']:5.2f} s a run (estimated {r['outside_s_est']:5.2f}"
        print(
            f"{r['candidate']:>14} {r['stage']:<7} {r['runs']:>3} runs: training {r['epoch_s']:6.2f} s/epoch "
            f"(estimated {r['epoch_s_est']:6.2f}, {_pct(r['epoch_s'], r['epoch_s_est'])}), outside training "
            f"{outside}, {_pct(r['outside_s'], r['outside_s_est'])})"
            + (f"; {r['fused']} fused runs left out" if r["fused"] else "")
        )
    total = _total(storage, name, record)
    wall, est = total["wall_s"], total["estimate_s"]
    print(
        f"work: {wall:.0f} s from the first claim to the last result, estimated {est:.0f} s ({_pct(wall, est)}; "
        f"the first look and {total['extra_runs']} confirm runs beyond it)"
    )
    if args.json:
        args.json.write_text(json.dumps({"study": name, "rows": rows, "total": total}, indent=1))


def _total(storage, study: str, record) -> dict:
    """The study's work, first trial claimed to last told, against the plan's estimate for the work it ran: its
    first look plus each confirm run beyond it at an average round's cost per candidate."""
    names = [optuna_name(study, c, stage) for c in record.accel for stage in STAGES]
    have = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    trials = [t for n in names if n in have for t in optuna.load_study(study_name=n, storage=storage).trials]
    done = [t for t in trials if t.datetime_start and t.datetime_complete]
    wall = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    first_look = Budget(**record.budget).seeds * len(record.accel)
    confirms = sum(1 for t in done if t.user_attrs.get("stage") == "confirm")
    extra = max(confirms - first_look, 0)
    estimate = record.estimate_s + extra * record.per_round_s / len(record.accel)
    return {"wall_s": wall, "estimate_s": estimate, "extra_runs": extra}


def _only_study(storage: optuna.storages.BaseStorage) -> str:
    """The one study planned in `storage` (each stores its plan as `<study>/plan`)."""
    planned = [
        s.study_name[: -len("/plan")] for s in optuna.get_all_study_summaries(storage) if s.study_name.endswith("/plan")
    ]
    if len(planned) != 1:
        raise SystemExit(f"error: give --study, one of {planned}")
    return planned[0]


def _row(storage, study: str, record, dataset: str, cand: str, stage: str) -> dict | None:
    """The measured and estimated figures of one candidate's stage, or None where it has no finished runs."""
    try:
        trials = optuna.load_study(study_name=optuna_name(study, cand, stage), storage=storage).trials
    except KeyError:
        return None
    done = [t for t in trials if t.state.is_finished() and t.duration and t.user_attrs.get("seconds_per_epoch")]
    fused = [t for t in done if t.user_attrs.get(FUSED, 1) > 1]
    solo = [t for t in done if t not in fused]
    if not solo:
        return None
    epochs = [len(t.intermediate_values) or t.user_attrs.get("epochs", 1) for t in solo]
    per_epoch = [t.user_attrs["seconds_per_epoch"] for t in solo]
    outside = [t.duration.total_seconds() - e * s for t, e, s in zip(solo, epochs, per_epoch, strict=True)]
    train_s, valid_s, test_s = _estimates(record, dataset, cand, stage)
    return {
        "candidate": cand,
        "stage": stage,
        "runs": len(solo),
        "fused": len(fused),
        "epoch_s": statistics.median(per_epoch),
        "epoch_s_est": train_s,
        "outside_s": statistics.median(outside),
        "outside_s_est": statistics.median(epochs) * valid_s + test_s + RUN_OVERHEAD_S,
    }


def _estimates(record, dataset: str, cand: str, stage: str) -> tuple[float, float, float]:
    """Seconds of one training epoch, one validation pass and the test set (0 when tuning) as the plan estimated
    them: split sizes over the probe's img/s times the speed-ups."""
    spec = StudySpec(name="estimate", candidates=[cand], dataset=dataset)
    sizes = _sizes(dataset, Budget(**record.budget))
    factor, _ = speedups.speedups(spec, {cand: record.accel[cand]}, torch.device("cpu"))[cand]
    measured = Throughput(**record.throughput[cand])
    tp = (measured if stage == "tune" else measured.confirm()).scaled(factor)
    train_ips, eval_ips = tp.train_ips, tp.eval_ips
    if stage == "tune":
        return sizes.tune_train / train_ips, sizes.tune_valid / eval_ips, 0.0
    return sizes.confirm_train / train_ips, sizes.confirm_valid / eval_ips, sizes.confirm_test / eval_ips


@functools.cache
def _sizes(dataset: str, budget: Budget) -> DataSizes:
    """Split sizes under the study's budget, the dataset read once for all rows."""
    data = StudyData(StudySpec(name="estimate", candidates=["plain"], dataset=dataset), torch.device("cpu"))
    return sizes_for(budget, data.sizes)


def _pct(measured: float, estimated: float) -> str:
    return f"{100 * (measured / estimated - 1):+.0f}%"


if __name__ == "__main__":
    main()
