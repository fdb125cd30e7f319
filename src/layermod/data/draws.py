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

import numpy as np

from layermod.coerce import MAX_DRAWN, seed_sequence
from layermod.data.arrays import Labels, label_array
from layermod.errors import LabelError

__all__ = ["MAX_DRAWN", "balanced_draws"]


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


def _check_drawn(repeats: int, per_draw: int, disjoint: bool) -> None:
    """:class:`LabelError` unless ``repeats`` draws of ``per_draw`` indices each fit ``MAX_DRAWN``."""
    if repeats * per_draw > MAX_DRAWN:
        what, fix = ("samples", "n_per_class") if disjoint else ("samples to shuffle (they overlap)", "the samples")
        raise LabelError(f"repeats={repeats} draws of {per_draw:,} {what} are {repeats * per_draw:,} sample "
                         f"indices, more than {MAX_DRAWN:,}; lower repeats or {fix}")
