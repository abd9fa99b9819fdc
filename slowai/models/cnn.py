"""The ResNets notebook's CNNs, registered by name so studies can ablate block type, activation and init."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from slowai.layers import (
    ActFactory,
    Conv,
    DoubleConvBlock,
    GeneralReLU,
    ResidualConvBlock,
    check_shortcut,
    init_leaky_weights,
)
from slowai.models.registry import register_model

# Called as block(c_in, c_out, [stride=, ks=,] act=, norm=): Conv, DoubleConvBlock and ResidualConvBlock all fit.
Block = Callable[..., nn.Module]
# Options of ResidualConvBlock's identity path: only the `residual` model has one to ablate.
RESIDUAL_ONLY = ("skip", "shortcut")


class CNN(nn.Module):
    """Stride-2 conv stack ending in `n_outputs` channels; `self.layers` holds the blocks so summaries can list them.

    `norm=False` builds every block (head included) without BatchNorm, for the 'no norm' ablation.
    """

    def __init__(
        self,
        nfs: tuple[int, ...] = (8, 16, 32, 64),
        n_outputs: int = 10,
        block: Block | None = None,
        in_chans: int = 1,
        act: ActFactory = GeneralReLU,
        norm: bool = True,
    ) -> None:
        super().__init__()
        if len(nfs) < 1:
            raise ValueError("nfs needs at least one channel count")
        self.in_chans, self.n_outputs = in_chans, n_outputs
        block = partial(block or Conv, norm=norm)
        self.layers = nn.Sequential(*self.get_layers(tuple(nfs), n_outputs, block, in_chans, act))

    def get_layers(
        self, nfs: tuple[int, ...], n_outputs: int, block: Block, in_chans: int, act: ActFactory
    ) -> list[nn.Module]:
        """First a 5x5 stride-2 block, then one stride-2 block per channel step, then a head block without act."""
        return self._stack(block(in_chans, nfs[0], ks=5, stride=2, act=act), nfs, n_outputs, block, act)

    @staticmethod
    def _stack(
        first: nn.Module, nfs: tuple[int, ...], n_outputs: int, block: Block, act: ActFactory
    ) -> list[nn.Module]:
        middle = [block(c_in, c_out, act=act) for c_in, c_out in zip(nfs, nfs[1:])]
        return [first, *middle, block(nfs[-1], n_outputs, act=False)]

    @classmethod
    def kaiming(cls, *args: Any, **kw: Any) -> CNN:
        """Build with Kaiming init matched to GeneralReLU's leak (the notebook's recipe)."""
        model = cls(*args, **kw)
        model.apply(init_leaky_weights)
        return model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        # Global average pool: the identity when the stack already reaches 1x1 (28x28 and 32x32), any size otherwise.
        return self.layers(x).mean(dim=(2, 3))

    def _check_input(self, x: torch.Tensor) -> None:
        """Fail with a fix-it message instead of a cryptic conv error (shape-only check: no host sync)."""
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects a (B, C, H, W) batch but got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"{type(self).__name__} expects {self.in_chans} input channel(s) but got {x.shape[1]}: "
                f"build it with in_chans={x.shape[1]}"
            )


class DeeperCNN(CNN):
    """CNN with a stride-1 first block, which fits one more block (the notebook's 'going deeper'); needs 5 nfs."""

    def __init__(self, nfs: tuple[int, ...] = (8, 16, 32, 64, 128), *args: Any, **kw: Any) -> None:
        if len(nfs) != 5:
            raise ValueError(f"DeeperCNN needs exactly 5 channel counts in nfs, got {len(nfs)}: {tuple(nfs)}")
        super().__init__(nfs, *args, **kw)

    def get_layers(
        self, nfs: tuple[int, ...], n_outputs: int, block: Block, in_chans: int, act: ActFactory
    ) -> list[nn.Module]:
        return self._stack(block(in_chans, nfs[0], ks=5, stride=1, act=act), nfs, n_outputs, block, act)


def _reject_residual_only(name: str, kw: dict[str, Any]) -> None:
    """Name the model that takes skip/shortcut instead of letting CNN.__init__ raise a bare 'unexpected keyword'."""
    given = [k for k in RESIDUAL_ONLY if k in kw]
    if given:
        raise TypeError(
            f"{name!r} got {', '.join(given)}: only the 'residual' model takes them (they shape its identity path)"
        )


def _build(
    cls: type[CNN], in_chans: int, num_classes: int, init: str = "leaky", width: int | None = None, **kw: Any
) -> CNN:
    """Registry helper: `init="leaky"` applies init_leaky_weights, `init="default"` keeps PyTorch's init;
    `width=w` sets nfs to (w, 2w, 4w, ...), one knob for a search space (the notebook's nets are width 8)."""
    if init not in ("leaky", "default"):
        raise ValueError(f"unknown init {init!r}; use 'leaky' or 'default'")
    if width is not None:
        if "nfs" in kw:
            raise ValueError("give either width or nfs, not both")
        if int(width) < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        kw["nfs"] = tuple(int(width) * 2**i for i in range(5 if issubclass(cls, DeeperCNN) else 4))
    make = cls.kaiming if init == "leaky" else cls
    return make(n_outputs=num_classes, in_chans=in_chans, **kw)


@register_model("cnn", "5-block stride-2 CNN of Conv blocks (notebook baseline)")
def cnn(in_chans: int = 1, num_classes: int = 10, **kw: Any) -> CNN:
    """Notebook baseline CNN; accepts nfs or width, block, act, norm, init."""
    _reject_residual_only("cnn", kw)
    return _build(CNN, in_chans, num_classes, **kw)


@register_model("conv", "DeeperCNN of single Conv blocks (6 convs)")
def conv(in_chans: int = 1, num_classes: int = 10, **kw: Any) -> CNN:
    """DeeperCNN with one Conv per block; accepts nfs or width, act, norm, init."""
    _reject_residual_only("conv", kw)
    return _build(DeeperCNN, in_chans, num_classes, block=Conv, **kw)


@register_model("plain", "DeeperCNN of DoubleConvBlocks: residual's depth without skips")
def plain(in_chans: int = 1, num_classes: int = 10, **kw: Any) -> CNN:
    """DeeperCNN with two Convs per block and no identity path; accepts nfs or width, act, norm, init."""
    _reject_residual_only("plain", kw)
    return _build(DeeperCNN, in_chans, num_classes, block=DoubleConvBlock, **kw)


@register_model("residual", "DeeperCNN of ResidualConvBlocks (skip connections)")
def residual(in_chans: int = 1, num_classes: int = 10, skip: bool = True, shortcut: str = "pool", **kw: Any) -> CNN:
    """DeeperCNN with ResidualConvBlocks; accepts nfs or width, act, norm, init, and skip/shortcut for ablations."""
    check_shortcut(shortcut)
    block = partial(ResidualConvBlock, skip=skip, shortcut=shortcut)
    return _build(DeeperCNN, in_chans, num_classes, block=block, **kw)
