"""Optimizers by name, from a registry users extend (like `@register_model`), so a search space can say `opt: sgd`.

A factory is `fn(params, lr, **kw) -> torch.optim.Optimizer`. Its accepted keywords are its own named parameters
and, when it forwards `**kw`, those of the optimizer class its return annotation names (`-> torch.optim.SGD`), so
`optimizer_options` can list them and `create_optimizer` can reject a misspelt keyword before torch sees it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = ["Registry", "create_optimizer", "list_optimizers", "optimizer_options", "register_optimizer"]


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


_OPTIMIZERS = Registry("optimizer", fixed=("params", "lr"), bases=(torch.optim.Optimizer,))


def register_optimizer(name: str, description: str = "") -> Callable[[Callable], Callable]:
    """Decorator: make `fn(params, lr, **kw) -> Optimizer` creatable as `create_optimizer(name, params, lr)`."""
    return _OPTIMIZERS.register(name, description)


def list_optimizers() -> dict[str, str]:
    """Registered optimizer names with a one-line description, for help texts and error messages."""
    return _OPTIMIZERS.names()


def optimizer_options(name: str) -> list[str]:
    """Keywords optimizer `name` accepts besides `lr`, so a study can reject an unknown `opt.<kw>` up front."""
    return _OPTIMIZERS.options(name)


def create_optimizer(name: str, params: Iterable[Any], lr: float, **kw: Any) -> torch.optim.Optimizer:
    """Build a registered optimizer; bad names and keywords fail with one line before torch is called.

    `functools.partial(create_optimizer, name, **kw)` is an `opt_func` for the Learner.
    """
    return _OPTIMIZERS.check(name, kw)(params, lr, **kw)


@register_optimizer("adamw", "AdamW: Adam with decoupled weight decay (torch defaults, weight_decay=0.01)")
def adamw(params: Iterable[Any], lr: float, **kw: Any) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=lr, **kw)


@register_optimizer("adam", "Adam with torch's defaults (L2 weight decay, 0 by default)")
def adam(params: Iterable[Any], lr: float, **kw: Any) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, **kw)


@register_optimizer("sgd", "SGD with momentum 0.9 by default (nesterov=True for Nesterov momentum)")
def sgd(params: Iterable[Any], lr: float, momentum: float = 0.9, nesterov: bool = False, **kw: Any) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, **kw)


@register_optimizer("rmsprop", "RMSprop with torch's defaults")
def rmsprop(params: Iterable[Any], lr: float, **kw: Any) -> torch.optim.RMSprop:
    return torch.optim.RMSprop(params, lr=lr, **kw)
