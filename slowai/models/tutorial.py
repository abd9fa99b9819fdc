"""The CNN tutorial's CIFAR-10 reference models (GoogleNet, ResNet, PreActResNet; DenseNet is in
`tutorial_densenet`), ablatable by activation, and the init and layer helpers they share.

Module and attribute names follow the tutorial's PyTorch code, so its state-dict keys carry over unchanged.
At 10 classes: GoogleNet 260,650 parameters (259,338 with `bias=False`), ResNet 272,378, PreActResNet 272,250,
DenseNet 239,146.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from slowai.models.registry import register_model

ACT_FNS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "gelu": nn.GELU}
# Gain names for `kaiming_normal_`, which knows no "leakyrelu" or "gelu"; GELU is closest to ReLU, so borrows its gain.
_GAIN_NAME = {"tanh": "tanh", "relu": "relu", "leakyrelu": "leaky_relu", "gelu": "relu"}
_LEAKY_SLOPE = 0.01  # nn.LeakyReLU's default negative slope

ActFn = type[nn.Module]


def act_fn_by_name(name: str) -> ActFn:
    """The activation class for `name`, so studies can sweep activations as plain strings."""
    if name not in ACT_FNS:
        raise ValueError(f"unknown act {name!r}; valid choices: {', '.join(ACT_FNS)}")
    return ACT_FNS[name]


def init_tutorial_params(model: nn.Module, act: str, mode: str = "fan_in") -> None:
    """Kaiming-normal convs with the gain of `act`, BatchNorm as identity: keeps activations' scale through depth."""
    act_fn_by_name(act)  # reject unknown names before touching any weight
    slope = _LEAKY_SLOPE if act == "leakyrelu" else 0.0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=slope, mode=mode, nonlinearity=_GAIN_NAME[act])
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def conv_bn_act(c_in: int, c_out: int, kernel_size: int, act_fn: ActFn, bias: bool) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel_size=kernel_size, padding=kernel_size // 2, bias=bias),
        nn.BatchNorm2d(c_out),
        act_fn(),
    ]


def classifier_head(c_in: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(c_in, num_classes))


# ----------------------------------------------------------------------------------------------- GoogleNet
class InceptionBlock(nn.Module):
    """1x1, 3x3, 5x5 and max-pool branches side by side: several receptive fields per layer at 1x1-reduced cost."""

    def __init__(
        self, c_in: int, c_red: Mapping[str, int], c_out: Mapping[str, int], act_fn: ActFn, bias: bool = True
    ) -> None:
        super().__init__()
        self.conv_1x1 = nn.Sequential(*conv_bn_act(c_in, c_out["1x1"], 1, act_fn, bias))
        self.conv_3x3 = nn.Sequential(
            *conv_bn_act(c_in, c_red["3x3"], 1, act_fn, bias),
            *conv_bn_act(c_red["3x3"], c_out["3x3"], 3, act_fn, bias),
        )
        self.conv_5x5 = nn.Sequential(
            *conv_bn_act(c_in, c_red["5x5"], 1, act_fn, bias),
            *conv_bn_act(c_red["5x5"], c_out["5x5"], 5, act_fn, bias),
        )
        self.max_pool = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, padding=1, stride=1), *conv_bn_act(c_in, c_out["max"], 1, act_fn, bias)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.conv_1x1, self.conv_3x3, self.conv_5x5, self.max_pool)
        return torch.cat([branch(x) for branch in branches], dim=1)


# (c_red, c_out) per InceptionBlock; "pool" halves the resolution (32 -> 16 -> 8). Input widths follow from c_out.
GOOGLENET_LAYOUT: tuple[tuple[dict[str, int], dict[str, int]] | str, ...] = (
    ({"3x3": 32, "5x5": 16}, {"1x1": 16, "3x3": 32, "5x5": 8, "max": 8}),
    ({"3x3": 32, "5x5": 16}, {"1x1": 24, "3x3": 48, "5x5": 12, "max": 12}),
    "pool",
    ({"3x3": 32, "5x5": 16}, {"1x1": 24, "3x3": 48, "5x5": 12, "max": 12}),
    ({"3x3": 32, "5x5": 16}, {"1x1": 16, "3x3": 48, "5x5": 16, "max": 16}),
    ({"3x3": 32, "5x5": 16}, {"1x1": 16, "3x3": 48, "5x5": 16, "max": 16}),
    ({"3x3": 32, "5x5": 16}, {"1x1": 32, "3x3": 48, "5x5": 24, "max": 24}),
    "pool",
    ({"3x3": 48, "5x5": 16}, {"1x1": 32, "3x3": 64, "5x5": 16, "max": 16}),
    ({"3x3": 48, "5x5": 16}, {"1x1": 32, "3x3": 64, "5x5": 16, "max": 16}),
)


class GoogleNet(nn.Module):
    """The tutorial's reduced GoogleNet for 32x32 inputs; `bias=False` drops every conv bias (BatchNorm follows)."""

    def __init__(
        self, in_chans: int = 3, num_classes: int = 10, act: str = "relu", bias: bool = True, c_stem: int = 64
    ) -> None:
        super().__init__()
        act_fn = act_fn_by_name(act)
        self.act = act
        self.input_net = nn.Sequential(*conv_bn_act(in_chans, c_stem, 3, act_fn, bias))
        blocks: list[nn.Module] = []
        c_in = c_stem
        for entry in GOOGLENET_LAYOUT:
            if entry == "pool":
                blocks.append(nn.MaxPool2d(3, stride=2, padding=1))
                continue
            c_red, c_out = entry
            blocks.append(InceptionBlock(c_in, c_red, c_out, act_fn, bias))
            c_in = sum(c_out.values())
        self.inception_blocks = nn.Sequential(*blocks)
        self.output_net = classifier_head(c_in, num_classes)
        init_tutorial_params(self, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_net(self.inception_blocks(self.input_net(x)))


# ----------------------------------------------------------------------------------------------- ResNet
def _check_width(c_in: int, c_out: int | None, subsample: bool) -> int:
    """Without subsampling the skip is the identity, so the block cannot change its width."""
    c_out = c_in if c_out is None else c_out
    if not subsample and c_out != c_in:
        raise ValueError(f"a block without subsample keeps its width: c_in={c_in} but c_out={c_out}")
    return c_out


class ResNetBlock(nn.Module):
    """Post-activation residual block: act(F(x) + x), with a strided 1x1 conv on the skip when subsampling."""

    def __init__(self, c_in: int, act_fn: ActFn, subsample: bool = False, c_out: int | None = None) -> None:
        super().__init__()
        c_out = _check_width(c_in, c_out, subsample)
        self.net = nn.Sequential(
            nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=2 if subsample else 1, bias=False),
            nn.BatchNorm2d(c_out),
            act_fn(),
            nn.Conv2d(c_out, c_out, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.downsample = nn.Conv2d(c_in, c_out, kernel_size=1, stride=2) if subsample else None
        self.act_fn = act_fn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        return self.act_fn(self.net(x) + skip)


class PreActResNetBlock(nn.Module):
    """Pre-activation residual block: F(x) + x with BN/act inside F, so the identity path stays untouched."""

    def __init__(self, c_in: int, act_fn: ActFn, subsample: bool = False, c_out: int | None = None) -> None:
        super().__init__()
        c_out = _check_width(c_in, c_out, subsample)
        self.net = nn.Sequential(
            nn.BatchNorm2d(c_in),
            act_fn(),
            nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=2 if subsample else 1, bias=False),
            nn.BatchNorm2d(c_out),
            act_fn(),
            nn.Conv2d(c_out, c_out, kernel_size=3, padding=1, bias=False),
        )
        # The input has not been through a non-linearity yet, so the projection normalises and activates it first.
        self.downsample = (
            nn.Sequential(nn.BatchNorm2d(c_in), act_fn(), nn.Conv2d(c_in, c_out, kernel_size=1, stride=2, bias=False))
            if subsample
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        return self.net(x) + skip


RESNET_BLOCKS: dict[str, type[nn.Module]] = {"ResNetBlock": ResNetBlock, "PreActResNetBlock": PreActResNetBlock}


def resnet_block_by_name(name: str) -> type[nn.Module]:
    """The block class for `name`, so the block type is a plain-string hyperparameter."""
    if name not in RESNET_BLOCKS:
        raise ValueError(f"unknown block {name!r}; valid choices: {', '.join(RESNET_BLOCKS)}")
    return RESNET_BLOCKS[name]


class ResNet(nn.Module):
    """The tutorial's small CIFAR ResNet: groups of blocks, the first block of every group but the first subsamples."""

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 10,
        num_blocks: Sequence[int] = (3, 3, 3),
        c_hidden: Sequence[int] = (16, 32, 64),
        act: str = "relu",
        block: str = "ResNetBlock",
    ) -> None:
        super().__init__()
        if len(num_blocks) != len(c_hidden) or not num_blocks:
            raise ValueError(f"num_blocks and c_hidden need the same non-zero length, got {num_blocks}, {c_hidden}")
        act_fn, block_cls = act_fn_by_name(act), resnet_block_by_name(block)
        self.act, self.block = act, block
        stem: list[nn.Module] = [nn.Conv2d(in_chans, c_hidden[0], kernel_size=3, padding=1, bias=False)]
        if block_cls is ResNetBlock:  # pre-activation blocks normalise and activate their own input
            stem += [nn.BatchNorm2d(c_hidden[0]), act_fn()]
        self.input_net = nn.Sequential(*stem)
        blocks = []
        for group, (count, c_out) in enumerate(zip(num_blocks, c_hidden)):
            for i in range(count):
                subsample = i == 0 and group > 0
                c_in = c_hidden[group - 1] if subsample else c_out
                blocks.append(block_cls(c_in=c_in, act_fn=act_fn, subsample=subsample, c_out=c_out))
        self.blocks = nn.Sequential(*blocks)
        self.output_net = classifier_head(c_hidden[-1], num_classes)
        init_tutorial_params(self, act, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_net(self.blocks(self.input_net(x)))


# ----------------------------------------------------------------------------------------------- registry
@register_model("googlenet", "tutorial CIFAR-10 GoogleNet, 8 Inception blocks (260,650 params; bias=False: 259,338)")
def googlenet(in_chans: int = 3, num_classes: int = 10, **kw: Any) -> GoogleNet:
    """Tutorial GoogleNet; accepts act, bias, c_stem."""
    return GoogleNet(in_chans=in_chans, num_classes=num_classes, **kw)


@register_model("resnet_tutorial", "tutorial CIFAR ResNet, 3x3 post-activation blocks of 16/32/64 ch (272,378 params)")
def resnet_tutorial(in_chans: int = 3, num_classes: int = 10, **kw: Any) -> ResNet:
    """Tutorial ResNet; accepts act, block, num_blocks, c_hidden."""
    return ResNet(in_chans=in_chans, num_classes=num_classes, **kw)


@register_model("preact_resnet_tutorial", "tutorial CIFAR ResNet with pre-activation blocks (272,250 params)")
def preact_resnet_tutorial(in_chans: int = 3, num_classes: int = 10, **kw: Any) -> ResNet:
    """Tutorial PreActResNet; accepts act, num_blocks, c_hidden."""
    return ResNet(in_chans=in_chans, num_classes=num_classes, block="PreActResNetBlock", **kw)
