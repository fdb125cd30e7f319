"""CIFAR-style ResNets: ``"resnet18"`` ... ``"resnet152"`` and He et al.'s ``"resnet20"`` ... ``"resnet110"``.

The decisions behind it: docs/design.md, section layermod.models.resnet.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from layermod.errors import ModelError
from ._registry import MAX_UNITS, register, scaled
from .small import kaiming_init

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet44",
    "resnet50",
    "resnet56",
    "resnet101",
    "resnet110",
    "resnet152",
]


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
            bn=nn.BatchNorm2d(out_planes),
        )
    )


class BasicBlock(nn.Module):
    """``relu2(bn2(conv2(relu1(bn1(conv1(x))))) + shortcut(x))`` with two 3x3 convs; ``planes`` outputs."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return self.relu2(out)


class Bottleneck(nn.Module):
    """1x1 (``planes``) -> 3x3 (``planes``, stride) -> 1x1 (``4 * planes``), each with BN, plus the shortcut."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, *, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)
        self.relu3 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + self.shortcut(x)
        return self.relu3(out)


class ResNet(nn.Module):
    """Stem conv, stages of residual blocks, global average pooling, a linear classifier.

    Input (B, in_channels, H, W), any H, W >= 1 (28 or 32 intended); output (B, num_classes) logits.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        blocks: blocks per stage, each >= 1; one entry per stage.
        stage_widths: base channel counts (``planes``) of the stages, multiplied by ``width``.
        strides: stride of each stage's first block.
        stem_width: base channel count of the stem conv.

    Attributes:
        blocks: the block counts as built (a list).
        width: the channel multiplier.
    """

    def __init__(
        self,
        *,
        block: type[BasicBlock | Bottleneck] = BasicBlock,
        blocks: Sequence[int] = (2, 2, 2, 2),
        stage_widths: Sequence[int] = (64, 128, 256, 512),
        strides: Sequence[int] = (1, 2, 2, 2),
        stem_width: int = 64,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if len(stage_widths) != len(strides):
            raise ModelError("stage_widths and strides must have one entry per stage")
        self.blocks = check_blocks(blocks, len(stage_widths))
        self.width = float(width)
        channels = scaled(stem_width, width)
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        for index, (count, base, stride) in enumerate(zip(self.blocks, stage_widths, strides), start=1):
            planes = scaled(base, width)
            stage = []
            for j in range(count):
                stage.append(block(channels, planes, stride=stride if j == 0 else 1))
                channels = planes * block.expansion
            self.add_module(f"layer{index}", nn.Sequential(*stage))
        self.num_stages = len(self.blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)
        kaiming_init(self)

    def stages(self) -> list[nn.Sequential]:
        """``[layer1, ..., layerK]``."""
        return [getattr(self, f"layer{i}") for i in range(1, self.num_stages + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        for stage in self.stages():
            out = stage(out)
        return self.fc(self.flatten(self.avgpool(out)))


def check_blocks(blocks: Sequence[int], stages: int) -> list[int]:
    """``blocks`` as a list of ``stages`` ints >= 1 adding up to at most :data:`~layermod.models.MAX_UNITS`;
    :class:`ModelError` otherwise."""
    example = ", ".join(["2"] * stages)
    if isinstance(blocks, (str, bytes)):
        values = None
    else:
        try:
            values = list(blocks)
        except TypeError:
            values = None
    if values is None or len(values) != stages:
        raise ModelError(f"blocks={blocks!r:.60} must list the number of blocks of each of the {stages} stages, e.g. [{example}]")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ModelError(f"blocks={values!r:.60} must be integers >= 1 (every stage keeps at least one block)")
    if sum(values) > MAX_UNITS:
        raise ModelError(f"blocks={values!r:.60} adds up to {sum(values):,} blocks; at most {MAX_UNITS:,} are allowed")
    return [int(v) for v in values]


_IMAGENET_DEPTHS: dict[int, tuple[type[BasicBlock | Bottleneck], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def _wide(depth: int, num_classes: int, in_channels: int, width: float, blocks: Sequence[int] | None) -> ResNet:
    block, default = _IMAGENET_DEPTHS[depth]
    return ResNet(
        block=block,
        blocks=default if blocks is None else blocks,
        stage_widths=(64, 128, 256, 512),
        strides=(1, 2, 2, 2),
        stem_width=64,
        num_classes=num_classes,
        in_channels=in_channels,
        width=width,
    )


def _cifar(depth: int, num_classes: int, in_channels: int, width: float, blocks: Sequence[int] | None) -> ResNet:
    n = (depth - 2) // 6
    return ResNet(
        block=BasicBlock,
        blocks=(n, n, n) if blocks is None else blocks,
        stage_widths=(16, 32, 64),
        strides=(1, 2, 2),
        stem_width=16,
        num_classes=num_classes,
        in_channels=in_channels,
        width=width,
    )


@register("resnet18")
def resnet18(*, num_classes: int, in_channels: int, width: float, blocks: Sequence[int] | None = None) -> ResNet:
    """CIFAR ResNet18: basic blocks [2, 2, 2, 2]; ``blocks`` overrides the counts. See :class:`ResNet`."""
    return _wide(18, num_classes, in_channels, width, blocks)


@register("resnet34")
def resnet34(*, num_classes: int, in_channels: int, width: float, blocks: Sequence[int] | None = None) -> ResNet:
    """CIFAR ResNet34: basic blocks [3, 4, 6, 3]; ``blocks`` overrides the counts. See :class:`ResNet`."""
    return _wide(34, num_classes, in_channels, width, blocks)


@register("resnet50")
def resnet50(*, num_classes: int, in_channels: int, width: float, blocks: Sequence[int] | None = None) -> ResNet:
    """CIFAR ResNet50: bottlenecks [3, 4, 6, 3]; ``blocks`` overrides the counts. See :class:`ResNet`."""
    return _wide(50, num_classes, in_channels, width, blocks)


@register("resnet101")
def resnet101(*, num_classes: int, in_channels: int, width: float, blocks: Sequence[int] | None = None) -> ResNet:
    """CIFAR ResNet101: bottlenecks [3, 4, 23, 3]; ``blocks`` overrides the counts. See :class:`ResNet`."""
    return _wide(101, num_classes, in_channels, width, blocks)


@register("resnet152")
def resnet152(*, num_classes: int, in_channels: int, width: float, blocks: Sequence[int] | None = None) -> ResNet:
    """CIFAR ResNet152: bottlenecks [3, 8, 36, 3]; ``blocks`` overrides the counts. See :class:`ResNet`."""
    return _wide(152, num_classes, in_channels, width, blocks)


@register("resnet20")
def resnet20(*, num_classes: int, in_channels: int, width: float, blocks: Sequence[int] | None = None) -> ResNet:
    """He et al.'s CIFAR ResNet20: 3 basic blocks per stage (16/32/64 channels). See :class:`ResNet`."""
    return _cifar(20, num_classes, in_channels, width, blocks)


@register("resnet32")
def resnet32(*, num_classes: int, in_channels: int, width: float, blocks: Sequence[int] | None = None) -> ResNet:
    """He et al.'s CIFAR ResNet32: 5 basic blocks per stage (16/32/64 channels). See :class:`ResNet`."""
    return _cifar(32, num_classes, in_channels, width, blocks)


@register("resnet44")
def resnet44(*, num_classes: int, in_channels: int, width: float, blocks: Sequence[int] | None = None) -> ResNet:
    """He et al.'s CIFAR ResNet44: 7 basic blocks per stage (16/32/64 channels). See :class:`ResNet`."""
    return _cifar(44, num_classes, in_channels, width, blocks)


@register("resnet56")
def resnet56(*, num_classes: int, in_channels: int, width: float, blocks: Sequence[int] | None = None) -> ResNet:
    """He et al.'s CIFAR ResNet56: 9 basic blocks per stage (16/32/64 channels). See :class:`ResNet`."""
    return _cifar(56, num_classes, in_channels, width, blocks)


@register("resnet110")
def resnet110(*, num_classes: int, in_channels: int, width: float, blocks: Sequence[int] | None = None) -> ResNet:
    """He et al.'s CIFAR ResNet110: 18 basic blocks per stage (16/32/64 channels). See :class:`ResNet`."""
    return _cifar(110, num_classes, in_channels, width, blocks)
