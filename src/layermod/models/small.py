"""Small built-in models: ``"smallcnn"`` (VGG-style CNN) and ``"mlp"``.

Both expose the layers worth measuring the same way: ``model.features`` is an ``nn.Sequential`` whose
children are the units (``conv -> bn -> relu`` or ``fc -> relu``, each a named ``nn.Sequential``) and, for the
CNN, the pools between stages; ``model.classifier`` is the final ``nn.Linear``.

Decisions, on purpose:

* **Any input size.** The CNN ends in ``AdaptiveAvgPool2d(1)`` before the classifier, so the same weights run
  on 28x28 (Fashion-MNIST) or 8x8 (sklearn digits) images; with the default three stages the input must be at
  least 4x4 (two ``MaxPool2d(2)``), 8x8 or more is the intended range.
* **Width.** Stage ``i`` has ``round(16 * 2**i * width)`` channels (at least 1); the MLP's hidden layers have
  ``round(256 * width)`` units.
* **No in-place ReLU.** A forward hook on a conv or batch-norm output must see that output, not the
  tensor a following in-place ReLU overwrote.
* **Depth.** ``convs`` gives the number of conv units per stage (default ``(2, 2, 2)``) so that a model with
  units removed from a stage can be rebuilt from its arguments; every stage keeps at least one unit. Counts are
  bounded (:data:`~layermod.models.MAX_UNITS` units in all, :data:`~layermod.models.MAX_STAGES` stages; MLP
  ``depth`` <= ``MAX_UNITS``, ``input_size`` <= :data:`~layermod.models.MAX_INPUT_SIZE`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from layermod.errors import ModelError
from ._registry import MAX_INPUT_SIZE, MAX_STAGES, MAX_UNITS, check_count, register, scaled

__all__ = ["MLP", "SmallCNN", "conv_unit", "kaiming_init", "mlp", "smallcnn"]

CNN_BASE_WIDTH = 16
MLP_BASE_WIDTH = 256


def conv_unit(in_channels: int, out_channels: int) -> nn.Sequential:
    """``Conv2d(3x3, padding 1, no bias) -> BatchNorm2d -> ReLU``; keeps the spatial size."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            bn=nn.BatchNorm2d(out_channels),
            relu=nn.ReLU(),
        )
    )


def kaiming_init(model: nn.Module) -> None:
    """He-normal (fan-out) weights for every ``Conv2d``; weight 1 and bias 0 for every ``BatchNorm2d``."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class SmallCNN(nn.Module):
    """VGG-style CNN: stages of conv units separated by ``MaxPool2d(2)``, then global average pooling and a linear
    classifier.

    Input (B, in_channels, H, W) with H, W >= 2**(stages - 1); output (B, num_classes) logits.
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 1,
        width: float = 1.0,
        convs: Sequence[int] = (2, 2, 2),
    ) -> None:
        super().__init__()
        convs = _check_convs(convs)
        layers: list[nn.Module] = []
        channels = in_channels
        for stage, n_units in enumerate(convs):
            if stage > 0:
                layers.append(nn.MaxPool2d(2))
            out = scaled(CNN_BASE_WIDTH * 2**stage, width)
            for _ in range(n_units):
                layers.append(conv_unit(channels, out))
                channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


class MLP(nn.Module):
    """Flatten, ``depth`` hidden ``Linear -> ReLU`` units, then a linear classifier.

    Input (B, in_channels, ...) with ``in_channels * input_size`` values per sample; output (B, num_classes).
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 1,
        width: float = 1.0,
        depth: int = 4,
        input_size: int = 28 * 28,
    ) -> None:
        super().__init__()
        depth = check_count("depth", depth, 0, MAX_UNITS)
        input_size = check_count("input_size", input_size, 1, MAX_INPUT_SIZE)
        hidden = scaled(MLP_BASE_WIDTH, width)
        self.flatten = nn.Flatten()
        units: list[nn.Module] = []
        features = in_channels * input_size
        for _ in range(depth):
            units.append(nn.Sequential(OrderedDict(fc=nn.Linear(features, hidden), relu=nn.ReLU())))
            features = hidden
        self.features = nn.Sequential(*units)
        self.classifier = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.flatten(x)))


@register("smallcnn")
def smallcnn(*, num_classes: int, in_channels: int, width: float, convs: Sequence[int] = (2, 2, 2)) -> SmallCNN:
    """Small VGG-style CNN for 28x28 grey images (any size >= 8 works); see :class:`SmallCNN`."""
    return SmallCNN(num_classes=num_classes, in_channels=in_channels, width=width, convs=convs)


@register("mlp")
def mlp(*, num_classes: int, in_channels: int, width: float, depth: int = 4, input_size: int = 28 * 28) -> MLP:
    """Multi-layer perceptron over flattened inputs; see :class:`MLP`."""
    return MLP(num_classes=num_classes, in_channels=in_channels, width=width, depth=depth, input_size=input_size)


def _check_convs(convs: Sequence[int]) -> tuple[int, ...]:
    try:
        values = tuple(convs)
    except TypeError:
        raise ModelError(f"convs={convs!r:.60} must be a sequence of unit counts per stage, e.g. (2, 2, 2)") from None
    counts_ok = all(not isinstance(v, bool) and isinstance(v, int) and v >= 1 for v in values)
    if not 1 <= len(values) <= MAX_STAGES or not counts_ok or sum(values) > MAX_UNITS:
        raise ModelError(f"convs={convs!r:.60} must list 1 to {MAX_STAGES} stages of integers >= 1 (units per stage), "
                         f"at most {MAX_UNITS:,} units in all")
    return values
