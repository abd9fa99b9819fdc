"""What a study is: named candidates, a define-by-run search space, a dataset and a budget, all validated up front.

Why validate here: a study runs for an hour, so every bad value (unknown model, trials < 1, ...) must fail in the
first second with one clear line, before any output directory or storage is created.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import torch.nn as nn

from slowai.models import create_model, list_models

PRUNERS = ("none", "median", "hyperband")
WANDB_MODES = ("auto", "online", "offline", "disabled")
DEVICE_TYPES = ("cpu", "cuda", "mps")  # what `slowai.utils.default_device` can pick and training supports
STAGES = ("tune", "confirm")  # each candidate has one Optuna study per stage (`optuna_name`)

SearchSpace = Callable[[optuna.Trial], dict[str, Any]]
# Called once per training run with its `slowai.study.TrialContext`; returns callbacks to add (or None).
CallbackFactory = Callable[[Any], Any]


class StudyError(ValueError):
    """A bad study setting or state, reported to the user as one line (the CLI exits with status 2)."""


def default_space(trial: optuna.Trial) -> dict[str, Any]:
    """AdamW's peak one-cycle lr and weight decay, both log-uniform: the two knobs every candidate needs tuned."""
    return {
        "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True),
    }


def check_model_name(model: str) -> None:
    """Raise StudyError unless `model` is a registered name or an existing `timm/<name>` (no model is built)."""
    if model.startswith("timm/"):
        import timm

        if not timm.is_model(model.removeprefix("timm/")):
            raise StudyError(f"unknown timm model {model.removeprefix('timm/')!r} (see timm.list_models())")
        return
    if model not in list_models():
        raise StudyError(f"unknown candidate model {model!r}; valid: {', '.join(list_models())}, timm/<name>")


@dataclass(frozen=True)
class Candidate:
    """One arm of the comparison: a registry model name, fixed model kwargs (e.g. `act=nn.ReLU`), a training recipe
    (see `slowai.train.RECIPES`), optionally its own search space (else the study's) and published accuracies to
    print beside ours (`{"valid": 0.9184, "test": 0.91}`, fractions)."""

    name: str
    model: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    recipe: str = "onecycle"
    space: SearchSpace | None = None
    published: Mapping[str, float] | None = None
    levels: Mapping[str, str] | None = None  # factor -> level, for candidates made by an `Ablation`

    def __post_init__(self) -> None:
        from slowai.train import RECIPES

        if self.recipe not in RECIPES:
            raise StudyError(f"candidate {self.name!r}: unknown recipe {self.recipe!r}; valid: {', '.join(RECIPES)}")
        for k, v in (self.published or {}).items():
            if k not in ("valid", "test") or not 0 <= v <= 1:
                raise StudyError(f"candidate {self.name!r}: published {k}={v!r}; use keys valid/test, fractions 0..1")

    def build(self, in_chans: int, num_classes: int, **tuned: Any) -> nn.Module:
        """A fresh model; `tuned` are model kwargs drawn by the search space."""
        return create_model(self.model, in_chans=in_chans, num_classes=num_classes, **{**self.kwargs, **tuned})

    def describe(self) -> dict[str, str]:
        """JSON-safe description for storage attrs and W&B config (kwargs such as classes become their names)."""
        return {"model": self.model, "recipe": self.recipe, **{k: _describe(v) for k, v in self.kwargs.items()}}


def _describe(v: Any) -> str:
    return v if isinstance(v, str) else getattr(v, "__name__", None) or repr(v)


def json_safe(v: Any) -> Any:
    """Scalars as they are, anything else (an activation class, a function) by its name: storable in attrs and W&B."""
    return v if isinstance(v, (bool, int, float)) or v is None else _describe(v)


def as_candidates(cands: Sequence[str | Candidate] | Mapping[str, Candidate]) -> list[Candidate]:
    """Names or Candidates → validated Candidates with unique names (a plain name is `Candidate(name, name)`)."""
    items = list(cands.values()) if isinstance(cands, Mapping) else list(cands)
    out = [c if isinstance(c, Candidate) else Candidate(str(c), str(c)) for c in items]
    if not out:
        raise StudyError("a study needs at least one candidate")
    names = [c.name for c in out]
    if dup := sorted({n for n in names if names.count(n) > 1}):
        raise StudyError(f"duplicate candidate names: {', '.join(dup)}")
    for c in out:
        check_model_name(c.model)
    return out


@dataclass(frozen=True)
class Budget:
    """How much work each stage gets; `None` subsets mean the full split. Same for every candidate: a fair race."""

    trials: int = 6
    tune_epochs: int = 2
    tune_subset: int | None = 10_000
    seeds: int = 3
    confirm_epochs: int = 3
    confirm_subset: int | None = None
    bs: int = 512
    max_seeds: int | None = None  # sequential: start with `seeds`, add rounds up to this while undecided

    def __post_init__(self) -> None:
        for name in ("trials", "tune_epochs", "seeds", "confirm_epochs", "bs"):
            if int(getattr(self, name)) < 1:
                raise StudyError(f"{name.replace('_', ' ')} must be >= 1, got {getattr(self, name)}")
        if self.max_seeds is not None and self.max_seeds < self.seeds:
            raise StudyError(f"max seeds ({self.max_seeds}) must be >= seeds ({self.seeds})")
        if self.max_seeds is not None and self.max_seeds > self.seeds < 2:
            raise StudyError(
                f"sequential seeds start with >= 2 seeds (the first look needs a spread), got {self.seeds}"
            )
        for name in ("tune_subset", "confirm_subset"):
            v = getattr(self, name)
            if v is not None and v < 10:
                raise StudyError(f"{name.replace('_', ' ')} must be >= 10 images or None (full data), got {v}")

    def fingerprint(self) -> dict[str, Any]:
        """The settings a resumed study must keep: all but `trials`. Seeds and max seeds are the sequential design's
        looks, fixed before the first look: moving them after seeing a verdict would re-spend α (a null study
        re-run at 3, 5 then 10 seeds claims a false difference 12.9% of the time, not 5%)."""
        d = asdict(self)
        del d["trials"]
        return d

    @property
    def last_seeds(self) -> int:
        """Seeds per candidate at the study's last look (= `seeds` unless sequential)."""
        return self.max_seeds if self.max_seeds is not None else self.seeds

    def with_(self, **kw: Any) -> Budget:
        """A copy with the non-None values of `kw` replaced."""
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass
class StudySpec:
    """Everything that defines one study run; `validate()` checks it without touching the disk or the network."""

    name: str
    candidates: list[Candidate]
    dataset: str | Callable[..., Any] = "fashion_mnist"  # a registered name, or a factory returning DataLoaders
    data_kwargs: Mapping[str, Any] = field(default_factory=dict)  # extra settings for the dataset factory
    budget: Budget = field(default_factory=Budget)
    space: SearchSpace = default_space
    reference: str | None = None
    pruner: str = "median"
    storage: str | None = None
    out: Path | None = None
    data_root: str | None = None
    device: str | None = None
    wandb: str = "auto"
    wandb_project: str = "slowai"
    seed: int = 0
    progress: bool = True
    callbacks: Sequence[CallbackFactory] = ()
    amp: bool = False
    channels_last: bool | None = None  # None: wherever it measurably pays (see slowai.accel)
    compile: bool | None = None  # None: when a run is long enough to amortize the compile
    margin: float = 0.003  # equivalence margin, as an accuracy fraction (0.003 = ±0.3 points)
    fuse: str | int = "auto"  # confirm seeds trained as one model: "auto" (measured), "off", or K >= 2

    def __post_init__(self) -> None:
        self.candidates = as_candidates(self.candidates)
        self.validate()

    def validate(self) -> None:
        """One StudyError naming the first bad setting."""
        if not _NAME_RE.match(self.name):
            raise StudyError(f"study name {self.name!r} must be letters, digits, '_', '-' or '.'")
        if isinstance(self.dataset, str):
            from slowai.data import UnknownDatasetError, dataset_factory

            try:
                dataset_factory(self.dataset)
            except UnknownDatasetError as e:
                raise StudyError(str(e)) from None
            self._check_data_kwargs()
        elif not callable(self.dataset):
            raise StudyError(
                f"dataset must be a registered name or a callable returning DataLoaders, got {self.dataset!r}"
            )
        if bad := [cb for cb in self.callbacks if not callable(cb)]:
            raise StudyError(f"callbacks must be callables taking the trial context, got {bad[0]!r}")
        if self.pruner not in PRUNERS:
            raise StudyError(f"unknown pruner {self.pruner!r}; valid: {', '.join(PRUNERS)}")
        if self.wandb not in WANDB_MODES:
            raise StudyError(f"unknown W&B mode {self.wandb!r}; valid: {', '.join(WANDB_MODES)}")
        names = [c.name for c in self.candidates]
        if self.reference is None:
            self.reference = "plain" if "plain" in names else names[0]
        if self.reference not in names:
            raise StudyError(f"reference {self.reference!r} is not a candidate ({', '.join(names)})")
        if self.device is not None:
            check_device(self.device)
        if self.fuse not in ("auto", "off") and not (isinstance(self.fuse, int) and self.fuse >= 2):
            raise StudyError(f"fuse must be 'auto', 'off' or a number of seeds >= 2, got {self.fuse!r}")
        if not 0 <= self.margin < 1:
            raise StudyError(f"margin must be an accuracy fraction in [0, 1), got {self.margin!r}")

    def _check_data_kwargs(self) -> None:
        from slowai.data import dataset_options

        valid = dataset_options(self.dataset)
        if valid is not None and (bad := sorted(set(self.data_kwargs) - set(valid))):
            raise StudyError(f"dataset {self.dataset!r} has no setting {bad[0]!r}; valid: {', '.join(valid)}")

    @property
    def out_dir(self) -> Path:
        """`out`, else `runs/<study name>`."""
        return Path(self.out) if self.out is not None else Path("runs") / self.name

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)

    def space_of(self, candidate: Candidate) -> SearchSpace:
        """The candidate's own search space if it has one, else the study's."""
        return candidate.space or self.space

    @property
    def dataset_name(self) -> str:
        """The registry name, or the factory's name for a callable dataset."""
        return self.dataset if isinstance(self.dataset, str) else getattr(self.dataset, "__name__", "custom")


def check_device(device: str) -> None:
    """A device torch can name but this machine lacks (cuda:7, mps on Linux, meta) would fail only mid-run."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise StudyError(f"bad device {device!r}: {e}") from None
    if dev.type not in DEVICE_TYPES:
        raise StudyError(f"unsupported device {device!r}; use cpu, cuda, cuda:<index> or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise StudyError(f"device {device!r} requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= (n := torch.cuda.device_count()):
        raise StudyError(f"device {device!r} requested but only {n} CUDA device(s) are visible")
    if dev.type == "mps" and not (torch.backends.mps.is_built() and torch.backends.mps.is_available()):
        raise StudyError(f"device {device!r} requested but MPS is not available")


def optuna_name(study: str, candidate: str, stage: str) -> str:
    """`<study>/<candidate>/<stage>`: one Optuna study per candidate and stage (claimable, comparable panels)."""
    return f"{study}/{candidate}/{stage}"
