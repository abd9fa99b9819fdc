"""A name -> factory registry with one-line errors, shared by optimizers, schedules and models (timm's pattern).

Why one class: every registry answers the same questions (what is registered, which keywords a factory takes, is
this keyword valid) and should fail the same way, in one line naming the valid choices.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


class Registry:
    """name -> (factory, description), with the lookups and keyword checks the optimizer and schedule registries share.

    `fixed` are the parameters every factory of this kind takes positionally (not options); `bases` are the generic
    return types (`Optimizer`, `ScheduleCB`) that say nothing about which keywords a `**kw` factory forwards.
    """

    def __init__(self, kind: str, fixed: tuple[str, ...] = (), bases: tuple[type, ...] = ()) -> None:
        self.kind, self.fixed, self.bases = kind, fixed, bases
        self.entries: dict[str, tuple[Callable[..., Any], str]] = {}

    def register(self, name: str, description: str = "") -> Callable[[Callable], Callable]:
        """Decorator adding a factory under `name`; the description defaults to its docstring's first line."""

        def deco(fn: Callable) -> Callable:
            if name in self.entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self.entries[name] = (fn, description or (fn.__doc__ or "").strip().split("\n")[0])
            return fn

        return deco

    def names(self) -> dict[str, str]:
        """Registered names (sorted) with their one-line descriptions."""
        return {name: desc for name, (_, desc) in sorted(self.entries.items())}

    def get(self, name: str) -> Callable[..., Any]:
        """The factory of `name`, or a one-line ValueError listing the registered names."""
        if name not in self.entries:
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}")
        return self.entries[name][0]

    def options(self, name: str) -> list[str]:
        """Keyword names `name` accepts (sorted); a `**kw` factory without a specific return type lists its own only."""
        return sorted(self._keywords(self.get(name))[0])

    def check(self, name: str, kw: dict[str, Any]) -> Callable[..., Any]:
        """The factory of `name`, after a one-line ValueError for any keyword it does not accept."""
        fn = self.get(name)
        valid, open_ended = self._keywords(fn)
        if not open_ended and (unknown := sorted(set(kw) - valid)):
            raise ValueError(
                f"{self.kind} {name!r} has no option {', '.join(map(repr, unknown))}; valid: {', '.join(sorted(valid))}"
            )
        return fn

    def _keywords(self, fn: Callable[..., Any]) -> tuple[set[str], bool]:
        """Named keywords of `fn` plus those its `**kw` reach, and whether its `**kw` may take anything else too."""
        params = inspect.signature(fn).parameters.values()
        own = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - set(self.fixed)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return own, False
        target = _return_class(fn)
        if target is None or target in self.bases:
            return own, True
        forwarded, open_ended = self._keywords(target)
        return own | forwarded, open_ended


def _return_class(fn: Callable[..., Any]) -> type | None:
    """The class a factory's return annotation names, if it names one that can be resolved."""
    if isinstance(fn, type):
        return None
    try:
        ann = inspect.signature(fn, eval_str=True).return_annotation
    except (NameError, SyntaxError, TypeError, AttributeError):
        return None
    return ann if isinstance(ann, type) else None
