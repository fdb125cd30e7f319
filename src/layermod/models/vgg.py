"""CIFAR-style VGG with batch norm: ``"vgg11"``, ``"vgg13"``, ``"vgg16"``, ``"vgg19"``.

The decisions behind it: docs/design.md, section layermod.models.vgg.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from layermod.errors import ModelError
from ._registry import MAX_CHANNELS, MAX_UNITS, register, scaled
from .small import conv_unit, kaiming_init

__all__ = ["CONFIGS", "VGG", "vgg11", "vgg13", "vgg16", "vgg19"]

Cfg = Sequence[int | str]

CONFIGS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


class VGG(nn.Module):
    """VGG-BN: conv units and max-pools as listed in ``cfg``, global average pooling, a linear classifier.

    Input (B, in_channels, H, W), any H, W >= 1 (8 or more intended); output (B, num_classes) logits.

    Attributes:
        cfg: the configuration as built (a list; ints are base channel counts before ``width``).
        width: the channel multiplier.
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
        cfg: Cfg = CONFIGS[16],
    ) -> None:
        super().__init__()
        self.cfg = check_cfg(cfg)
        self.width = float(width)
        layers: list[nn.Module] = []
        channels = in_channels
        for entry in self.cfg:
            if entry == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                out = scaled(entry, width)
                layers.append(conv_unit(channels, out))
                channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


def check_cfg(cfg: Cfg) -> list[int | str]:
    """``cfg`` as a list of at most :data:`~layermod.models.MAX_UNITS` entries, ints in [1,
    :data:`~layermod.models.MAX_CHANNELS`] and ``"M"``, with at least one int; :class:`ModelError` otherwise."""
    if isinstance(cfg, (str, bytes)):
        raise ModelError(f"cfg={cfg!r:.60} must be a list of channel counts and 'M' (max-pool), e.g. "
                         "[64, 'M', 128, 'M']")
    try:
        values = list(cfg)
    except TypeError:
        raise ModelError(
            f"cfg={cfg!r:.60} must be a list of channel counts and 'M' (max-pool), e.g. [64, 'M', 128, 'M']"
        ) from None
    if len(values) > MAX_UNITS:
        raise ModelError(f"cfg has {len(values):,} entries; at most {MAX_UNITS:,} are allowed")
    out: list[int | str] = []
    for value in values:
        if isinstance(value, str) and value.strip().upper() == "M":
            out.append("M")
        elif not isinstance(value, bool) and isinstance(value, int) and 1 <= value <= MAX_CHANNELS:
            out.append(int(value))
        else:
            raise ModelError(f"cfg entry {value!r:.40} is neither a channel count in [1, {MAX_CHANNELS:,}] nor 'M' "
                             "(max-pool); fix cfg")
    if not any(v != "M" for v in out):
        raise ModelError(f"cfg={values!r:.60} has no convolution; give at least one channel count")
    return out


def _build(depth: int, num_classes: int, in_channels: int, width: float, cfg: Cfg | None) -> VGG:
    return VGG(num_classes=num_classes, in_channels=in_channels, width=width,
               cfg=CONFIGS[depth] if cfg is None else cfg)


@register("vgg11")
def vgg11(*, num_classes: int, in_channels: int, width: float, cfg: Cfg | None = None) -> VGG:
    """VGG11-BN, CIFAR style (8 convs); ``cfg`` overrides the configuration. See :class:`VGG`."""
    return _build(11, num_classes, in_channels, width, cfg)


@register("vgg13")
def vgg13(*, num_classes: int, in_channels: int, width: float, cfg: Cfg | None = None) -> VGG:
    """VGG13-BN, CIFAR style (10 convs); ``cfg`` overrides the configuration. See :class:`VGG`."""
    return _build(13, num_classes, in_channels, width, cfg)


@register("vgg16")
def vgg16(*, num_classes: int, in_channels: int, width: float, cfg: Cfg | None = None) -> VGG:
    """VGG16-BN, CIFAR style (13 convs); ``cfg`` overrides the configuration. See :class:`VGG`."""
    return _build(16, num_classes, in_channels, width, cfg)


@register("vgg19")
def vgg19(*, num_classes: int, in_channels: int, width: float, cfg: Cfg | None = None) -> VGG:
    """VGG19-BN, CIFAR style (16 convs); ``cfg`` overrides the configuration. See :class:`VGG`."""
    return _build(19, num_classes, in_channels, width, cfg)
