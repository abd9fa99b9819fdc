"""Building blocks of the ResNets notebook: conv -> act -> norm layers, residual and plain double-conv blocks."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

ActFactory = Callable[[], nn.Module]
# True -> GeneralReLU, False/None -> no activation, a callable -> that activation (e.g. nn.ReLU for an ablation).
ActSpec = bool | None | ActFactory


class GeneralReLU(nn.Module):
    """Leaky ReLU shifted down by `b`, so activations are closer to zero-mean (optionally clamped at `maxv`)."""

    def __init__(self, a: float = 0.1, b: float = 0.4, maxv: float | None = None) -> None:
        super().__init__()
        self.a, self.b, self.maxv = a, b, maxv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(x, self.a) - self.b
        return x if self.maxv is None else x.clamp_max(self.maxv)

    def extra_repr(self) -> str:
        return f"a={self.a}, b={self.b}, maxv={self.maxv}"


def make_act(act: ActSpec) -> nn.Module | None:
    """Resolve an activation spec to a fresh module, so blocks accept True/False or any activation factory."""
    if act is True:
        return GeneralReLU()
    if not act:
        return None
    return act()


def init_leaky_weights(module: nn.Module, a: float = 0.1) -> None:
    """Kaiming-normal conv/linear weights with leak `a`: matches GeneralReLU's leaky slope, keeping activations' scale.

    Use as `model.apply(init_leaky_weights)`; biases and norms keep PyTorch's defaults.
    """
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, a=a)


class Conv(nn.Sequential):
    """Conv2d -> activation -> BatchNorm2d (the notebook's order); the conv has a bias only when there is no norm."""

    def __init__(
        self, c_in: int, c_out: int, stride: int = 2, ks: int = 3, act: ActSpec = True, norm: bool = True
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, ks, stride=stride, padding=ks // 2, bias=not norm)
        act_mod = make_act(act)
        if act_mod is not None:
            self.act = act_mod
        if norm:
            self.norm = nn.BatchNorm2d(c_out)


SHORTCUTS = ("pool", "stride")


def check_shortcut(shortcut: str) -> None:
    """Reject unknown identity-path styles with the valid ones, so a study config typo fails at build time."""
    if shortcut not in SHORTCUTS:
        raise ValueError(f"unknown shortcut {shortcut!r}; use one of {', '.join(map(repr, SHORTCUTS))}")


def identity_path(c_in: int, c_out: int, stride: int, shortcut: str = "pool") -> tuple[nn.Module, nn.Module]:
    """(pool, idconv) that bring x to the conv path's shape, parameter-free when the shapes already match."""
    # "pool" (ResNet-D): avg-pool then 1x1 conv, so the projection sees every pixel; ceil_mode keeps odd sizes in step
    # with the strided conv (7 -> 4, as padding=ks//2 gives). "stride" (the original ResNet's projection, option B): one
    # strided 1x1 conv, also 7 -> 4 (floor((7 - 1) / 2) + 1), reading only every other pixel.
    check_shortcut(shortcut)
    if shortcut == "stride":
        needs_conv = c_in != c_out or stride != 1
        return nn.Identity(), nn.Conv2d(c_in, c_out, 1, stride=stride) if needs_conv else nn.Identity()
    pool = nn.AvgPool2d(2, ceil_mode=True) if stride != 1 else nn.Identity()
    return pool, nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()


class ResidualConvBlock(nn.Module):
    """Two Convs plus an identity path (avg-pool/1x1 conv where shapes change): deep nets start near shallow ones.

    `skip=False` drops the identity path (no pool/idconv modules) and `shortcut` picks its projection (see
    `identity_path`), so a study can ablate each part while the defaults stay the notebook's block.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int = 2,
        ks: int = 3,
        act: ActSpec = True,
        norm: bool = True,
        skip: bool = True,
        shortcut: str = "pool",
    ) -> None:
        super().__init__()
        check_shortcut(shortcut)  # even when skip=False ignores it: a config typo should not pass silently
        self.skip, self.shortcut = skip, shortcut
        self.conv_a = Conv(c_in, c_out, stride=1, ks=ks, act=act, norm=norm)
        self.conv_b = Conv(c_out, c_out, stride=stride, ks=ks, act=False, norm=norm)
        if skip:
            self.pool, self.idconv = identity_path(c_in, c_out, stride, shortcut)
        self.act = make_act(act) or nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_b(self.conv_a(x))
        if self.skip:
            out = out + self.idconv(self.pool(x))
        return self.act(out)


class DoubleConvBlock(nn.Module):
    """Same two Convs as ResidualConvBlock without the identity path: the fair 'no skip' ablation partner."""

    def __init__(
        self, c_in: int, c_out: int, stride: int = 2, ks: int = 3, act: ActSpec = True, norm: bool = True
    ) -> None:
        super().__init__()
        self.conv_a = Conv(c_in, c_out, stride=1, ks=ks, act=act, norm=norm)
        self.conv_b = Conv(c_out, c_out, stride=stride, ks=ks, act=act, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x))
