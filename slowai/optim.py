"""Optimizers by name, from a registry users extend (like `@register_model`), so a search space can say `opt: sgd`.

A factory is `fn(params, lr, **kw) -> torch.optim.Optimizer`. Its accepted keywords are its own named parameters
and, when it forwards `**kw`, those of the optimizer class its return annotation names (`-> torch.optim.SGD`), so
`optimizer_options` can list them and `create_optimizer` can reject a misspelt keyword before torch sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from slowai.registry import Registry

__all__ = ["create_optimizer", "list_optimizers", "optimizer_options", "register_optimizer"]


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
