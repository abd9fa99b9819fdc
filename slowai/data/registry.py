"""A timm-style dataset registry: one name -> one factory returning DataLoaders, so studies can name data as strings.

Factory contract: keyword arguments `bs`, `device`, `subset` (train keeps `subset` items, valid and test
`max(subset // 5, 1)`: see `subset_sizes`) and `root` (ignored by datasets that need no files), plus any
dataset-specific settings; it returns `DataLoaders` whose `settings` records those dataset-specific settings.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slowai.data.loader import DataLoaders

Factory = Callable[..., "DataLoaders"]
CONTRACT = ("bs", "device", "subset", "root")  # what every factory is called with; the rest are its settings

_REGISTRY: dict[str, tuple[Factory, str]] = {}
_ALIASES: dict[str, str] = {}  # normalized alias -> registered name


class UnknownDatasetError(ValueError):
    """A dataset name nobody registered; the message is one line naming every valid name."""


def _key(name: str) -> str:
    """How aliases are matched: case and spaces do not matter ('Fashion MNIST' finds 'fashionmnist')."""
    return name.lower().replace(" ", "")


def register_dataset(name: str, description: str = "", aliases: Sequence[str] = ()) -> Callable[[Factory], Factory]:
    """Decorator: make `fn(bs=, device=, subset=, root=, **settings)` creatable as `create_dataset(name)` (or alias)."""

    def deco(fn: Factory) -> Factory:
        taken = [n for n in (name, *aliases) if n in _REGISTRY or _key(n) in _ALIASES]
        if taken:
            raise ValueError(f"dataset name {taken[0]!r} is already registered")
        _REGISTRY[name] = (fn, description or (fn.__doc__ or "").strip().split("\n")[0])
        _ALIASES.update({_key(a): name for a in aliases})
        return fn

    return deco


def list_datasets() -> dict[str, str]:
    """Registered names with a one-line description (aliases are accepted by `create_dataset` but not listed)."""
    return {name: desc for name, (_, desc) in sorted(_REGISTRY.items())}


def canonical_name(name: str) -> str:
    """The registered name for `name` or one of its aliases ('fmnist' -> 'fashion_mnist'); UnknownDatasetError else."""
    if name in _REGISTRY:
        return name
    key = _key(name)
    hit = _ALIASES.get(key) or next((n for n in _REGISTRY if _key(n) == key), None)
    if hit is None:
        aliases = f" (aliases: {', '.join(sorted(_ALIASES))})" if _ALIASES else ""
        raise UnknownDatasetError(f"unknown dataset {name!r}; registered: {', '.join(list_datasets())}{aliases}")
    return hit


def dataset_factory(name: str) -> Factory:
    """The factory registered as `name` (or an alias), to call with the contract's keywords."""
    return _REGISTRY[canonical_name(name)][0]


def dataset_settings(name: str) -> list[str]:
    """The keyword names the factory accepts, from its signature (for error messages and search spaces)."""
    params = inspect.signature(dataset_factory(name)).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def dataset_options(factory: str | Factory) -> list[str] | None:
    """The settings a dataset (name or factory) accepts beyond the contract; None when it takes any keyword."""
    fn = dataset_factory(factory) if isinstance(factory, str) else factory
    if _takes_any_keyword(fn):
        return None
    params = inspect.signature(fn).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in CONTRACT]


def _takes_any_keyword(fn: Factory) -> bool:
    """A factory with **kwargs accepts any setting, so only it can say which are wrong."""
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())


def create_dataset(name: str, **kw) -> DataLoaders:
    """Build the DataLoaders of a registered dataset; a setting the factory does not take is one ValueError line."""
    fn = dataset_factory(name)
    known = dataset_settings(name)
    if not _takes_any_keyword(fn) and (bad := [k for k in kw if k not in known]):
        raise ValueError(f"dataset {canonical_name(name)!r} has no setting {bad[0]!r}; settings: {', '.join(known)}")
    return fn(**kw)
