"""Train-time augmentation: random crops of a padded image and random horizontal flips, for a whole batch.

Decisions, on purpose:

* **Vectorised.** :func:`random_crop_flip` pads the batch once, draws every sample's crop offset and flip
  with one call each, and reads all crops with a single ``gather`` of flat pixel indices; there is no Python
  loop over samples.
* **Padding colour.** The border uncovered by a shift is filled per channel with ``fill``. Data are usually
  normalised, so zero padding would be the mean colour; :func:`black_fill` gives the normalised value of
  black, ``(0 - mean) / std``, to pad as the raw images would have been padded.
* **Random draws.** The offsets (uniform in ``[0, 2 * padding]`` on each axis) are drawn first, then the
  flips (probability 1/2), from ``generator`` when given (it must live on the batch's device), so a seeded
  generator gives the same crops and flips.
* **Where it applies.** :func:`augmentation_for` is True only for CIFAR-10/100, where crop + flip is the
  standard recipe; it is False for the MNIST-like sets (a mirrored digit is another symbol) and any other
  name.
"""

from __future__ import annotations

import torch

from layermod.errors import TrainError

__all__ = ["augmentation_for", "black_fill", "random_crop_flip"]

_CROP_FLIP_DATASETS = frozenset({"cifar10", "cifar100"})


def random_crop_flip(
    batch: torch.Tensor,
    *,
    padding: int = 4,
    flip: bool = True,
    fill: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Shift every image by a random offset of at most ``padding`` pixels and mirror it with probability 1/2.

    Each output image is the (H, W) window at a random offset of the input padded by ``padding`` pixels on
    every side, then flipped left-right when ``flip`` and its coin says so.

    Args:
        batch: (B, C, H, W) images.
        padding: border width in pixels (>= 0); 0 with ``flip=False`` returns an unchanged copy.
        flip: whether to mirror left-right with probability 1/2.
        fill: (C,) value per channel for the padding; ``None`` pads with zeros.
        generator: source of the random offsets and flips; on the batch's device.

    Returns:
        (B, C, H, W) tensor of the batch's dtype and device.
    """
    if batch.ndim != 4:
        raise TrainError(f"augmentation needs a (B, C, H, W) batch, got shape {tuple(batch.shape)}; pass images")
    if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
        raise TrainError(f"padding={padding!r} must be a non-negative integer")
    b, c, h, w = batch.shape
    device = batch.device
    hp, wp = h + 2 * padding, w + 2 * padding

    padded = batch.new_zeros((b, c, hp, wp))
    if fill is not None:
        fill = torch.as_tensor(fill, dtype=batch.dtype, device=device)
        if fill.shape != (c,):
            raise TrainError(
                f"fill has shape {tuple(fill.shape)} but the batch has {c} channels; pass one value per channel"
            )
        padded.copy_(fill.view(1, c, 1, 1).expand_as(padded))
    padded[:, :, padding : padding + h, padding : padding + w] = batch

    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device=device)
    rows = offsets[0, :, None] + torch.arange(h, device=device)  # (B, H) rows of the padded image
    cols = offsets[1, :, None] + torch.arange(w, device=device)  # (B, W) columns of the padded image
    if flip:
        mirrored = torch.rand(b, generator=generator, device=device) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    index = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, hp * wp).gather(2, index).reshape(b, c, h, w)


def black_fill(normalization: dict) -> torch.Tensor | None:
    """(C,) float32 normalised value of black, ``(0 - mean) / std``; ``None`` without normalisation.

    ``normalization`` is ``{"mean": [...], "std": [...]}`` as in ``ArrayDataset.normalization``; an empty dict
    means raw pixels, for which black is 0 and ``fill=None`` already pads with it.
    """
    if not normalization:
        return None
    if "mean" not in normalization or "std" not in normalization:
        raise TrainError(f"normalization {normalization!r} lacks 'mean' or 'std'; pass the dataset's normalization")
    mean = torch.as_tensor(normalization["mean"], dtype=torch.float32).reshape(-1)
    std = torch.as_tensor(normalization["std"], dtype=torch.float32).reshape(-1)
    return (0.0 - mean) / std


def augmentation_for(dataset: str) -> bool:
    """Whether random crop + flip is the standard augmentation of ``dataset`` (CIFAR-10/100 only)."""
    return str(dataset).lower() in _CROP_FLIP_DATASETS
