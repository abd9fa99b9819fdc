"""ResNet-18 to ResNet-200 ("Deep Residual Learning for Image Recognition") with the standard block layout.

The stride sits on each block's 3x3 conv (in the bottleneck too: the "v1.5" variant) and the skip's 1x1 conv + BN
projection carries the same stride. Attribute names (conv1, bn1, layer1..4, fc, downsample) match the common PyTorch
layout, so such state dicts load as they are. At 1000 classes with the ImageNet stem the parameter counts are
11,689,512 / 21,797,672 / 25,557,032 / 44,549,160 / 60,192,808 / 64,673,832.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from slowai.models.registry import register_model

STEMS = ("imagenet", "cifar")
STAGE_WIDTHS = (64, 128, 256, 512)


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False)


def projection(c_in: int, c_out: int, stride: int) -> nn.Sequential | None:
    """1x1 conv + BN on the skip when the block changes shape; None keeps the skip an identity."""
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(conv1x1(c_in, c_out, stride), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34): relu(bn(conv(relu(bn(conv(x))))) + skip(x))."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv3x3(c_in, width, stride), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = conv3x3(width, width), nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = projection(c_in, width, stride)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + skip)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4 (ResNet-50+): depth at a fraction of BasicBlock's cost."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.conv1, self.bn1 = conv1x1(c_in, width), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = conv3x3(width, width, stride), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = conv1x1(width, c_out), nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = projection(c_in, c_out, stride)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + skip)


Block = type[BasicBlock] | type[Bottleneck]


def make_stem(stem: str, in_chans: int) -> tuple[nn.Conv2d, nn.Module]:
    """(first conv, pool): 224 px inputs need the 4x downsampling stem; 28-32 px inputs would shrink to 8x8 by it."""
    if stem == "imagenet":
        return nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False), nn.MaxPool2d(3, stride=2, padding=1)
    if stem == "cifar":
        return conv3x3(in_chans, 64), nn.Identity()
    raise ValueError(f"unknown stem {stem!r}; valid choices: {', '.join(STEMS)}")


class ResNet(nn.Module):
    """Stem, four stages of residual blocks (stride 2 from stage 2 on), global average pool, linear head."""

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        in_chans: int = 3,
        num_classes: int = 1000,
        stem: str = "imagenet",
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != len(STAGE_WIDTHS):
            raise ValueError(f"layers needs {len(STAGE_WIDTHS)} stage sizes, got {tuple(layers)}")
        self.stem_name = stem
        self.conv1, self.maxpool = make_stem(stem, in_chans)
        self.bn1, self.relu = nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        c_in = 64
        for i, (n_blocks, width) in enumerate(zip(layers, STAGE_WIDTHS)):
            stage = self._stage(block, c_in, width, n_blocks, stride=1 if i == 0 else 2)
            setattr(self, f"layer{i + 1}", stage)
            c_in = width * block.expansion
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c_in, num_classes)
        self._init_params(zero_init_residual)

    @staticmethod
    def _stage(block: Block, c_in: int, width: int, n_blocks: int, stride: int) -> nn.Sequential:
        c_out = width * block.expansion
        return nn.Sequential(block(c_in, width, stride), *(block(c_out, width) for _ in range(n_blocks - 1)))

    def _init_params(self, zero_init_residual: bool) -> None:
        """Kaiming fan-out for convs; `zero_init_residual` starts every block as the identity (helps large batches)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.constant_(m.last_bn().weight, 0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map before pooling, for probes and summaries."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


RESNET_CONFIGS: dict[str, tuple[Block, tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
    "resnet200": (Bottleneck, (3, 24, 36, 3)),
}
_STEM_NOTE = "stem='cifar' (3x3 s1, no maxpool, for 28-32 px) by default, stem='imagenet' for 224 px"


def _build(name: str, in_chans: int, num_classes: int, stem: str, **kw: Any) -> ResNet:
    block, layers = RESNET_CONFIGS[name]
    return ResNet(block, layers, in_chans=in_chans, num_classes=num_classes, stem=stem, **kw)


@register_model("resnet18", f"ResNet-18, BasicBlock [2,2,2,2]; {_STEM_NOTE}")
def resnet18(in_chans: int = 3, num_classes: int = 10, stem: str = "cifar", **kw: Any) -> ResNet:
    """ResNet-18; accepts stem, zero_init_residual."""
    return _build("resnet18", in_chans, num_classes, stem, **kw)


@register_model("resnet34", f"ResNet-34, BasicBlock [3,4,6,3]; {_STEM_NOTE}")
def resnet34(in_chans: int = 3, num_classes: int = 10, stem: str = "cifar", **kw: Any) -> ResNet:
    """ResNet-34; accepts stem, zero_init_residual."""
    return _build("resnet34", in_chans, num_classes, stem, **kw)


@register_model("resnet50", f"ResNet-50, Bottleneck [3,4,6,3]; {_STEM_NOTE}")
def resnet50(in_chans: int = 3, num_classes: int = 10, stem: str = "cifar", **kw: Any) -> ResNet:
    """ResNet-50 (stride on the 3x3 conv); accepts stem, zero_init_residual."""
    return _build("resnet50", in_chans, num_classes, stem, **kw)


@register_model("resnet101", f"ResNet-101, Bottleneck [3,4,23,3]; {_STEM_NOTE}")
def resnet101(in_chans: int = 3, num_classes: int = 10, stem: str = "cifar", **kw: Any) -> ResNet:
    """ResNet-101; accepts stem, zero_init_residual."""
    return _build("resnet101", in_chans, num_classes, stem, **kw)


@register_model("resnet152", f"ResNet-152, Bottleneck [3,8,36,3]; {_STEM_NOTE}")
def resnet152(in_chans: int = 3, num_classes: int = 10, stem: str = "cifar", **kw: Any) -> ResNet:
    """ResNet-152; accepts stem, zero_init_residual."""
    return _build("resnet152", in_chans, num_classes, stem, **kw)


@register_model("resnet200", f"ResNet-200, Bottleneck [3,24,36,3]; {_STEM_NOTE}")
def resnet200(in_chans: int = 3, num_classes: int = 10, stem: str = "cifar", **kw: Any) -> ResNet:
    """ResNet-200; accepts stem, zero_init_residual."""
    return _build("resnet200", in_chans, num_classes, stem, **kw)
