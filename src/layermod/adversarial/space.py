"""Where an attack's budget is measured: the pixels behind a dataset's normalised inputs (:class:`PixelSpace`).

Decisions, on purpose:

* **Pixel space.** Datasets hold normalised inputs, ``input = (pixel - mean) / std`` per channel, but a budget
  means something in pixels: an L-inf ``eps`` of 8/255 changes each pixel by at most 8/255 whatever the
  normalisation. Attacks map inputs to pixels (:meth:`PixelSpace.to_pixels`), step, project and clip there, and
  map back (:meth:`PixelSpace.to_inputs`), so the returned inputs' pixels lie in ``[low, high]`` and within
  ``eps`` of the clean pixels. Samples whose pixels fall outside the range are refused
  (:meth:`PixelSpace.check`) rather than clipped: a wrong range would make both the budget and the clipping
  wrong.
* **Float32 slack.** Pixels outside the range by at most ``_RANGE_TOLERANCE`` (1e-4) of its width pass:
  normalised float32 samples round that far.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

from layermod.errors import AttackError

__all__ = ["PixelSpace"]

_RANGE_TOLERANCE = 1e-4  # of the pixel range's width, for samples normalised in float32


@dataclass(frozen=True, kw_only=True)
class PixelSpace:
    """How model inputs map to pixels: ``input = (pixel - mean) / std`` per channel (dim 1), pixels in
    ``[low, high]``.

    Attributes:
        mean, std: one value per channel, or one value for all; both empty for inputs that are pixels.
        low, high: the pixel range, ``low < high``; :attr:`width` is ``high - low``.
    """

    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _floats(self.mean, "mean"))
        object.__setattr__(self, "std", _floats(self.std, "std"))
        if len(self.mean) != len(self.std):
            raise AttackError(
                f"the normalization has {len(self.mean)} means but {len(self.std)} stds; "
                "pass one mean and one std per channel"
            )
        if not all(math.isfinite(v) for v in self.mean) or not all(math.isfinite(v) and v > 0 for v in self.std):
            raise AttackError(
                f"the normalization mean {list(self.mean)} / std {list(self.std)} must be finite with std > 0; "
                "pass the mean and std the inputs were normalised with"
            )
        if not (isinstance(self.low, numbers.Real) and isinstance(self.high, numbers.Real)) or not (
            math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high
        ):
            raise AttackError(
                f"the pixel range [{self.low}, {self.high}] is not an interval; pass finite low < high "
                "(PixelSpace(low, high))"
            )

    @classmethod
    def from_normalization(cls, normalization: dict | None, *, low: float = 0.0, high: float = 1.0) -> PixelSpace:
        """The space of a dataset's inputs from its ``normalization``.

        Args:
            normalization: ``{"mean": [...], "std": [...]}`` per channel, as
                :attr:`layermod.data.ArrayDataset.normalization`; ``{}`` or None for pixel inputs.
            low: the lowest pixel value.
            high: the highest pixel value.

        Returns:
            The :class:`PixelSpace`.

        Raises:
            AttackError: a normalization without mean or std.
        """
        if not normalization:
            return cls(low=low, high=high)
        missing = [key for key in ("mean", "std") if key not in normalization]
        if missing:
            raise AttackError(
                f"the normalization {normalization!r} has no {' or '.join(missing)}; pass "
                "{'mean': [...], 'std': [...]} with one value per channel, or {} for none"
            )
        return cls(mean=normalization["mean"], std=normalization["std"], low=low, high=high)

    @property
    def width(self) -> float:
        """``high - low``."""
        return self.high - self.low

    def to_pixels(self, inputs: Tensor) -> Tensor:
        """Model inputs to pixels of the same shape.

        Args:
            inputs: (N, C, ...) model inputs; (N, D) or any shape with a single mean.

        Returns:
            The pixels, the shape of ``inputs``.
        """
        if not self.mean:
            return inputs
        return inputs * self._per_channel(self.std, inputs) + self._per_channel(self.mean, inputs)

    def to_inputs(self, pixels: Tensor) -> Tensor:
        """Pixels to model inputs of the same shape; the inverse of :meth:`to_pixels`.

        Args:
            pixels: (N, C, ...) pixels.

        Returns:
            The model inputs, the shape of ``pixels``.
        """
        if not self.mean:
            return pixels
        return (pixels - self._per_channel(self.mean, pixels)) / self._per_channel(self.std, pixels)

    def check(self, inputs: Tensor) -> None:
        """Check that the pixels of ``inputs`` are finite and within ``[low, high]``.

        Args:
            inputs: (N, ...) model inputs.

        Raises:
            AttackError: pixels not finite, or outside ``[low, high]`` by more than a float32 rounding slack.
        """
        if inputs.numel() == 0:
            return
        pixels = self.to_pixels(inputs.detach())
        if not bool(torch.isfinite(pixels).all()):
            raise AttackError("the samples hold NaN or infinite values; pass finite inputs")
        lo, hi = float(pixels.min()), float(pixels.max())
        slack = _RANGE_TOLERANCE * self.width
        if lo < self.low - slack or hi > self.high + slack:
            raise AttackError(
                f"the samples' pixels span [{lo:.4g}, {hi:.4g}], outside the pixel range [{self.low:g}, "
                f"{self.high:g}]; pass the data's pixel range (PixelSpace(low, high))"
            )

    @staticmethod
    def _per_channel(values: tuple[float, ...], like: Tensor) -> Tensor:
        """``values`` shaped to broadcast over dim 1 of ``like``: (C, 1, ...), or (1,) for a single value."""
        tensor = torch.tensor(values, dtype=like.dtype, device=like.device)
        if len(values) == 1:
            return tensor
        if like.ndim < 2 or like.shape[1] != len(values):
            raise AttackError(
                f"inputs of shape {tuple(like.shape)} do not have {len(values)} channels in dimension 1 as the "
                "normalization does; pass the normalization these inputs were made with"
            )
        return tensor.view(len(values), *[1] * (like.ndim - 2))


def _floats(values: object, name: str) -> tuple[float, ...]:
    """``values`` (a number or a sequence of numbers) as a tuple of floats."""
    if isinstance(values, numbers.Real):
        values = (values,)
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise AttackError(
            f"the normalization {name} {values!r} is not a list of numbers; pass one number per channel"
        ) from None
