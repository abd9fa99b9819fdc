"""Ablation designs: a base model and factors with levels, expanded into named candidates the study tunes alike.

    Ablation(Candidate("full", "residual"),
             {"skip": {"on": {}, "off": {"skip": False}}, "act": {"generalrelu": {}, "relu": {"act": nn.ReLU}}},
             design="leave-one-out")

A factor's first level is the base's own (its kwargs usually empty); every other level is model kwargs applied on
top of the base's. Designs:
- "one-at-a-time": the base, plus every other level of each factor alone (vary one factor, hold the rest at base);
- "leave-one-out": the base, plus each factor switched to its last level alone (remove one component at a time);
- "factorial": every combination of levels (main effects and interactions can be estimated, see `verdicts`).
The base is the reference of every comparison; each candidate records its levels for the ablation table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from itertools import product
from typing import Any

from slowai.study.spec import Candidate, StudyError

DESIGNS = ("one-at-a-time", "leave-one-out", "factorial")
Levels = Mapping[str, Mapping[str, Any]]  # level name -> model kwargs


@dataclass
class Ablation:
    """A base candidate, factors {name: {level: model kwargs}} and a design; `.candidates` are the study's arms."""

    base: Candidate
    factors: Mapping[str, Levels]
    design: str = "one-at-a-time"
    candidates: list[Candidate] = field(init=False)

    def __post_init__(self) -> None:
        if self.design not in DESIGNS:
            raise StudyError(f"unknown ablation design {self.design!r}; valid: {', '.join(DESIGNS)}")
        if not self.factors:
            raise StudyError("an ablation needs at least one factor")
        for f, levels in self.factors.items():
            if len(levels) < 2:
                raise StudyError(f"factor {f!r} needs at least two levels (the base's first), got {list(levels)}")
            for level, kw in levels.items():
                if not isinstance(kw, Mapping):
                    raise StudyError(f"factor {f!r} level {level!r}: give model kwargs as a dict, got {kw!r}")
        self.candidates = [self._candidate(cell) for cell in self.cells()]

    @property
    def reference(self) -> str:
        return self.base.name

    def base_cell(self) -> tuple[str, ...]:
        return tuple(next(iter(levels)) for levels in self.factors.values())

    def cells(self) -> list[tuple[str, ...]]:
        """The level combinations the design runs, base first."""
        base, names = self.base_cell(), list(self.factors)
        if self.design == "factorial":
            return [base] + [c for c in product(*(list(v) for v in self.factors.values())) if c != base]
        cells = [base]
        for i, f in enumerate(names):
            others = list(self.factors[f])[1:]
            for level in others if self.design == "one-at-a-time" else others[-1:]:
                cells.append(base[:i] + (level,) + base[i + 1 :])
        return cells

    def name_of(self, cell: tuple[str, ...]) -> str:
        """The base's name for the base; otherwise the changed factors, e.g. "skip=off" or "act=relu,init=default"."""
        changed = [f"{f}={lv}" for f, lv, b in zip(self.factors, cell, self.base_cell()) if lv != b]
        return ",".join(changed) or self.base.name

    def _candidate(self, cell: tuple[str, ...]) -> Candidate:
        kwargs = dict(self.base.kwargs)
        for f, level in zip(self.factors, cell):
            kwargs.update(self.factors[f][level])
        levels = dict(zip(self.factors, cell))
        return replace(self.base, name=self.name_of(cell), kwargs=kwargs, levels=levels)

    def describe(self) -> dict[str, Any]:
        """JSON-safe: design, base and factor levels (stored with the study so reports can rebuild the table)."""
        return {"design": self.design, "base": self.base.name, "factors": {f: list(v) for f, v in self.factors.items()}}
