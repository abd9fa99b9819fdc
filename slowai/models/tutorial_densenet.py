"""The CNN tutorial's CIFAR-10 DenseNet (239,146 parameters at 10 classes), ablatable by activation.

Module and attribute names follow the tutorial's PyTorch code, so its state-dict keys carry over unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from slowai.models.registry import register_model
from slowai.models.tutorial import ActFn, act_fn_by_name, classifier_head, init_tutorial_params


class DenseLayer(nn.Module):
    """BN-act-1x1 bottleneck then BN-act-3x3, concatenated onto the input: later layers reuse every earlier feature."""

    def __init__(self, c_in: int, bn_size: int, growth_rate: int, act_fn: ActFn) -> None:
        super().__init__()
        c_mid = bn_size * growth_rate
        self.net = nn.Sequential(
            nn.BatchNorm2d(c_in),
            act_fn(),
            nn.Conv2d(c_in, c_mid, kernel_size=1, bias=False),
            nn.BatchNorm2d(c_mid),
            act_fn(),
            nn.Conv2d(c_mid, growth_rate, kernel_size=3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.net(x), x], dim=1)


class DenseBlock(nn.Module):
    """`num_layers` DenseLayers; each widens the feature map by `growth_rate` channels."""

    def __init__(self, c_in: int, num_layers: int, bn_size: int, growth_rate: int, act_fn: ActFn) -> None:
        super().__init__()
        self.block = nn.Sequential(
            *(DenseLayer(c_in + i * growth_rate, bn_size, growth_rate, act_fn) for i in range(num_layers))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class TransitionLayer(nn.Module):
    """BN-act-1x1 conv then 2x2 average pool: shrinks channels and resolution between dense blocks."""

    def __init__(self, c_in: int, c_out: int, act_fn: ActFn) -> None:
        super().__init__()
        self.transition = nn.Sequential(
            nn.BatchNorm2d(c_in),
            act_fn(),
            nn.Conv2d(c_in, c_out, kernel_size=1, bias=False),
            nn.AvgPool2d(kernel_size=2, stride=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transition(x)


class DenseNet(nn.Module):
    """The tutorial's small DenseNet: dense blocks separated by transitions that halve channels and resolution."""

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 10,
        num_layers: Sequence[int] = (6, 6, 6, 6),
        bn_size: int = 2,
        growth_rate: int = 16,
        act: str = "relu",
    ) -> None:
        super().__init__()
        act_fn = act_fn_by_name(act)
        self.act = act
        c_hidden = growth_rate * bn_size
        # No BN/act here: every DenseLayer starts with its own.
        self.input_net = nn.Sequential(nn.Conv2d(in_chans, c_hidden, kernel_size=3, padding=1))
        blocks: list[nn.Module] = []
        for i, n in enumerate(num_layers):
            blocks.append(DenseBlock(c_hidden, n, bn_size, growth_rate, act_fn))
            c_hidden += n * growth_rate
            if i < len(num_layers) - 1:
                blocks.append(TransitionLayer(c_hidden, c_hidden // 2, act_fn))
                c_hidden //= 2
        self.blocks = nn.Sequential(*blocks)
        # The last dense block's output has not been through a non-linearity yet.
        self.output_net = nn.Sequential(nn.BatchNorm2d(c_hidden), act_fn(), *classifier_head(c_hidden, num_classes))
        init_tutorial_params(self, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_net(self.blocks(self.input_net(x)))


@register_model("densenet_tutorial", "tutorial CIFAR DenseNet, 4 blocks of 6 layers, growth 16 (239,146 params)")
def densenet_tutorial(in_chans: int = 3, num_classes: int = 10, **kw: Any) -> DenseNet:
    """Tutorial DenseNet; accepts act, num_layers, bn_size, growth_rate."""
    return DenseNet(in_chans=in_chans, num_classes=num_classes, **kw)
