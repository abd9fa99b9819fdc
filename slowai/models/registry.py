"""A timm-style model registry: one name -> one factory, so studies can name candidates as strings."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from slowai.registry import Registry

_MODELS = Registry("model")


def register_model(name: str, description: str = "") -> Callable:
    """Decorator: make `fn(in_chans=..., num_classes=..., **kw)` creatable as `create_model(name)`."""
    return _MODELS.register(name, description)


def list_models() -> dict[str, str]:
    """Registered names with a one-line description; `timm/<name>` reaches any timm model too."""
    return _MODELS.names()


def create_model(name: str, in_chans: int | None = None, num_classes: int | None = None, **kw) -> nn.Module:
    """Build a registered model, or any timm model as `timm/<name>`; `in_chans`/`num_classes` left out keep the
    factory's own defaults (a CIFAR-10 model stays 3-channel)."""
    kw |= {k: v for k, v in (("in_chans", in_chans), ("num_classes", num_classes)) if v is not None}
    if name.startswith("timm/"):
        import timm

        timm_name = name.removeprefix("timm/")
        if not timm.is_model(timm_name):
            raise ValueError(f"unknown timm model {timm_name!r}; see timm.list_models()")
        return timm.create_model(timm_name, pretrained=False, **kw)
    if name not in _MODELS.entries:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(list_models())}, timm/<any timm model>")
    return _MODELS.get(name)(**kw)
