"""Class-balanced, seeded draws of sample indices: the samples a modularity curve is measured on.

Decisions, on purpose:

* **Balanced draws.** Every draw holds exactly ``n_per_class`` samples of each class. Draws are disjoint
  (as in the paper) when every class has ``n_per_class * repeats`` samples; otherwise each draw is sampled
  without replacement on its own and draws may overlap.
* **Bounded.** The draws hold at most ``MAX_DRAWN`` sample indices (512 MiB as int64): ``repeats`` times the
  samples of a draw when they are disjoint, ``repeats`` times all samples when they overlap (each draw is then
  a shuffle of every sample); more is refused before anything is allocated.
* **Seeds.** Draws take any integer seed (:mod:`layermod.coerce`); the same seed gives the same draws.
* **Labels** are checked as everywhere in :mod:`layermod.data` (:func:`layermod.data.arrays.label_array`):
  one-dimensional integers, never rounded.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from layermod.coerce import MAX_DRAWN, seed_sequence
from layermod.data.arrays import ArrayDataset, Labels, dataset_labels, label_array
from layermod.data.text import TokenDataset
from layermod.errors import DatasetError, LabelError

__all__ = ["MAX_DRAWN", "balanced_draws", "balanced_subset"]


def balanced_draws(labels: Labels, *, n_per_class: int, repeats: int, seed: int = 0) -> list[np.ndarray]:
    """Class-balanced, seeded draws of sample indices.

    Args:
        labels: (N,) integer labels (tensor, array or list).
        n_per_class: samples of every class present in ``labels`` per draw.
        repeats: number of draws.
        seed: seed of ``numpy.random.default_rng``, any integer (a negative one as in :mod:`layermod.coerce`);
            the same seed gives the same draws.

    Returns:
        ``repeats`` sorted int64 arrays of ``n_per_class * n_classes`` indices each. The draws are disjoint
            when every class has at least ``n_per_class * repeats`` samples; otherwise they may overlap.
    """
    y = label_array(labels)
    for arg, value in (("n_per_class", n_per_class), ("repeats", repeats)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise LabelError(f"{arg}={value!r} must be a positive integer")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise LabelError(f"balanced draws need at least 2 classes, got {len(classes)}; check the labels")
    smallest = int(np.argmin(counts))
    if counts[smallest] < n_per_class:
        raise LabelError(
            f"class {classes[smallest]} has {counts[smallest]} samples but n_per_class={n_per_class} was asked; "
            f"lower n_per_class to at most {counts[smallest]}"
        )
    rng = np.random.default_rng(seed_sequence(seed, LabelError))
    disjoint = counts[smallest] >= n_per_class * repeats
    _check_drawn(repeats, n_per_class * len(classes) if disjoint else len(y), disjoint)
    blocks = []
    for c in classes:
        members = np.flatnonzero(y == c)
        if disjoint:
            blocks.append(rng.permutation(members)[: n_per_class * repeats].reshape(repeats, n_per_class))
        else:
            blocks.append(rng.permuted(np.tile(members, (repeats, 1)), axis=1)[:, :n_per_class])
    draws = np.sort(np.concatenate(blocks, axis=1), axis=1).astype(np.int64)
    return list(draws)


def balanced_subset(data: Dataset, size: int, *, seed: int = 0) -> Dataset:
    """A seeded class-balanced subset of ``data``: ``size // C`` samples of each of its C classes.

    An :class:`~layermod.data.arrays.ArrayDataset` gives an ArrayDataset and a
    :class:`~layermod.data.text.TokenDataset` a TokenDataset (the in-memory fast path stays), any other dataset a
    ``torch.utils.data.Subset``.

    Args:
        data: a map-style Dataset of ``(x, y)`` pairs.
        size: the samples wanted, >= C.
        seed: the draw's seed.

    Returns:
        The subset, ``size // C * C`` samples.

    Raises:
        DatasetError: ``size`` below C or a class with fewer than ``size // C`` samples.
    """
    labels = dataset_labels(data)
    classes, counts = np.unique(labels, return_counts=True)
    if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < len(classes):
        raise DatasetError(f"a subset of {size} samples cannot hold the {len(classes)} classes; "
                           f"use a subset size >= {len(classes)}")
    per_class = size // len(classes)
    smallest = int(np.argmin(counts))
    if counts[smallest] < per_class:
        raise DatasetError(f"a subset of {size} needs {per_class} samples of each class but class "
                           f"{classes[smallest]} has {counts[smallest]}; use a subset size <= "
                           f"{counts[smallest] * len(classes)}")
    (indices,) = balanced_draws(labels, n_per_class=per_class, repeats=1, seed=seed)
    rows = torch.from_numpy(indices)
    if isinstance(data, ArrayDataset):
        return ArrayDataset(data.data[rows], data.targets[rows], data.classes, data.name,
                            normalization=data.normalization)
    if isinstance(data, TokenDataset):
        return TokenDataset(data.input_ids[rows], data.attention_mask[rows], data.targets[rows], data.classes,
                            data.name)
    return Subset(data, indices.tolist())


def _check_drawn(repeats: int, per_draw: int, disjoint: bool) -> None:
    """:class:`LabelError` unless ``repeats`` draws of ``per_draw`` indices each fit ``MAX_DRAWN``."""
    if repeats * per_draw > MAX_DRAWN:
        what, fix = ("samples", "n_per_class") if disjoint else ("samples to shuffle (they overlap)", "the samples")
        raise LabelError(f"repeats={repeats} draws of {per_draw:,} {what} are {repeats * per_draw:,} sample "
                         f"indices, more than {MAX_DRAWN:,}; lower repeats or {fix}")
