"""Where each key of a search space goes: the routing from `space(trial) -> dict` to model, optimizer, schedule,
batch size, loss and data, and the dry run that checks a space before the first trial.

Routing (a key is either bare or `<group>.<name>`):

| key                     | goes to                                                   |
| ----------------------- | --------------------------------------------------------- |
| `lr`                    | the peak learning rate (required)                         |
| `weight_decay`          | the optimizer (same as `opt.weight_decay`)                |
| `opt`                   | optimizer by name (`slowai.optim` registry)               |
| `opt.<kw>`              | that optimizer's keyword, e.g. `opt.momentum`             |
| `sched`                 | lr schedule by name (`slowai.schedules` registry)         |
| `sched.<kw>`            | that schedule's keyword, e.g. `sched.warmup`              |
| `model.<kw>`            | the model factory, e.g. `model.width`                     |
| `data.<kw>`             | the dataset factory, e.g. `data.augment`                  |
| `train.bs`              | batch size                                                |
| `train.label_smoothing` | cross-entropy label smoothing                             |

`opt`/`sched` default to the candidate's recipe; when a space names another optimizer or schedule, the recipe's
keywords for it are dropped (AdamW's defaults do not leak into SGD).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import optuna
import torch
import torch.nn.functional as F

from slowai.optim import create_optimizer, list_optimizers, optimizer_options
from slowai.schedules import check_schedule, list_schedules, schedule_options
from slowai.study.spec import Candidate, StudyError, json_safe
from slowai.train import RECIPES
from slowai.utils import first_line

BARE = ("lr", "weight_decay", "opt", "sched")
GROUPS = ("opt", "sched", "model", "data", "train")
TRAIN_KEYS = ("bs", "label_smoothing")
VALID_KEYS = (
    "lr, weight_decay, opt, opt.<kw>, sched, sched.<kw>, model.<kw>, data.<kw>, train.bs, train.label_smoothing"
)
DRY_DRAWS = 8  # seeded random draws of a space: enough to see the branches of a small conditional space


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs, resolved from a candidate's recipe and a drawn set of hyperparameters."""

    lr: float
    opt: str
    sched: str
    opt_kw: dict[str, Any] = field(default_factory=dict)
    sched_kw: dict[str, Any] = field(default_factory=dict)
    model_kw: dict[str, Any] = field(default_factory=dict)
    data_kw: dict[str, Any] = field(default_factory=dict)
    bs: int | None = None
    label_smoothing: float = 0.0

    def loss_func(self) -> Callable[..., torch.Tensor]:
        """Cross-entropy, with label smoothing when the space asks for it."""
        if not self.label_smoothing:
            return F.cross_entropy
        return partial(F.cross_entropy, label_smoothing=float(self.label_smoothing))

    def describe(self) -> dict[str, Any]:
        """Flat, JSON-safe view for trial attrs and W&B config (e.g. `opt`, `opt.momentum`, `train.bs`)."""
        flat: dict[str, Any] = {"lr": self.lr, "opt": self.opt, "sched": self.sched}
        for group, kw in (("opt", self.opt_kw), ("sched", self.sched_kw), ("model", self.model_kw)):
            flat |= {f"{group}.{k}": json_safe(v) for k, v in kw.items()}
        flat |= {f"data.{k}": json_safe(v) for k, v in self.data_kw.items()}
        if self.bs is not None:
            flat["train.bs"] = self.bs
        if self.label_smoothing:
            flat["train.label_smoothing"] = self.label_smoothing
        return flat


def route(hp: Mapping[str, Any], recipe: str = "onecycle", where: str = "the search space") -> TrainConfig:
    """Split a drawn hyperparameter dict by the routing table; StudyError (one line) for any key it cannot place."""
    groups: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}
    for key, value in hp.items():
        group, _, name = key.partition(".")
        if not name and key not in BARE:
            raise StudyError(f"unknown key {key!r} in {where}; valid: {VALID_KEYS} (model kwargs are 'model.{key}')")
        if name and (group not in GROUPS or (group == "train" and name not in TRAIN_KEYS)):
            raise StudyError(f"unknown key {key!r} in {where}; valid: {VALID_KEYS}")
        if name:
            groups[group][name] = value
    if "lr" not in hp:
        raise StudyError(f"{where} must return an 'lr'")
    base = RECIPES[recipe]
    opt, sched = hp.get("opt", base.opt), hp.get("sched", base.sched)
    opt_kw = dict(base.opt_kw) if opt == base.opt else {}
    if "weight_decay" in hp:
        opt_kw["weight_decay"] = hp["weight_decay"]
    sched_kw = dict(base.sched_kw) if sched == base.sched else {}
    train = groups["train"]
    return TrainConfig(
        lr=float(hp["lr"]),
        opt=str(opt),
        sched=str(sched),
        opt_kw=opt_kw | groups["opt"],
        sched_kw=sched_kw | groups["sched"],
        model_kw=groups["model"],
        data_kw=groups["data"],
        bs=int(train["bs"]) if "bs" in train else None,
        label_smoothing=float(train.get("label_smoothing", 0.0)),
    )


def check_config(cfg: TrainConfig, cand: Candidate, in_chans: int, n_classes: int, data_options: list[str] | None):
    """Build the model, optimizer and schedule once (on CPU), so a bad value fails here and not inside a worker."""
    who = f"candidate {cand.name!r}"
    if cfg.opt not in list_optimizers():
        raise StudyError(f"{who}: unknown optimizer {cfg.opt!r}; registered: {', '.join(list_optimizers())}")
    if cfg.sched not in list_schedules():
        raise StudyError(f"{who}: unknown schedule {cfg.sched!r}; registered: {', '.join(list_schedules())}")
    _check_keys(who, f"optimizer {cfg.opt!r}", cfg.opt_kw, optimizer_options(cfg.opt), "opt")
    _check_keys(who, f"schedule {cfg.sched!r}", cfg.sched_kw, schedule_options(cfg.sched), "sched")
    if data_options is not None:
        _check_keys(who, "the dataset", cfg.data_kw, data_options, "data")
    if cfg.bs is not None and cfg.bs < 1:
        raise StudyError(f"{who}: train.bs must be >= 1, got {cfg.bs}")
    if not 0 <= cfg.label_smoothing < 1:
        raise StudyError(f"{who}: train.label_smoothing must be in [0, 1), got {cfg.label_smoothing}")
    try:
        model = cand.build(in_chans, n_classes, **cfg.model_kw)
    except (TypeError, ValueError) as e:
        raise StudyError(f"{who}: model {cand.model!r} rejects {_kw(cfg.model_kw, 'model')}: {first_line(e)}") from None
    try:
        create_optimizer(cfg.opt, model.parameters(), lr=cfg.lr, **cfg.opt_kw)
        check_schedule(cfg.sched, cfg.sched_kw, lr=cfg.lr)
    except (TypeError, ValueError) as e:
        raise StudyError(f"{who}: {first_line(e)}") from None


def _check_keys(who: str, what: str, given: Mapping[str, Any], valid: list[str], group: str) -> None:
    if bad := sorted(set(given) - set(valid)):
        raise StudyError(
            f"{who}: {what} has no option {', '.join(f'{group}.{k}' for k in bad)}; valid: "
            + (", ".join(f"{group}.{k}" for k in valid) or "none")
        )


def _kw(kw: Mapping[str, Any], group: str) -> str:
    return ", ".join(f"{group}.{k}={v!r}" for k, v in kw.items()) or "its fixed kwargs"


def dry_draws(space: Callable[[optuna.Trial], dict[str, Any]], seed: int, n: int = DRY_DRAWS) -> list[optuna.Trial]:
    """`n` seeded random draws of a space in a throwaway in-memory study (what a real trial would see)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory" line per draw
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    finally:
        optuna.logging.set_verbosity(verbosity)
    trials = []
    for _ in range(n):
        t = study.ask()
        t.set_user_attr("hp", space(t))
        trials.append(t)
    return trials


def describe_space(trials: list[optuna.Trial]) -> dict[str, Any]:
    """The space as its distributions (union over the dry draws) plus the values it fixes: a resume fingerprint."""
    dists: dict[str, str] = {}
    fixed: dict[str, Any] = {}
    for t in trials:
        dists |= {k: repr(d) for k, d in t.distributions.items()}
        fixed |= {k: json_safe(v) for k, v in t.user_attrs["hp"].items() if k not in t.distributions}
    return {"distributions": dict(sorted(dists.items())), "fixed": dict(sorted(fixed.items()))}
