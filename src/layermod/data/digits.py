"""scikit-learn's 8x8 handwritten digits as a train/test dataset (``load_dataset("digits", split)``).

Decisions, on purpose:

* **Digits split.** A stratified 80/20 split with seed 0: per class, a seeded permutation puts
  ``round(0.2 * n_c)`` samples in "test" and the rest in "train".
* **Normalisation.** Pixels (0..16) are scaled to [0, 1] and normalised with the mean/std of the whole set
  (both splits), recorded in ``ArrayDataset.normalization``.
* scikit-learn is imported only when the digits are loaded (it is optional: ``pip install layermod[digits]``).
"""

from __future__ import annotations

import numpy as np
import torch

from layermod.data.arrays import ArrayDataset
from layermod.errors import DatasetError

__all__ = ["load_digits"]

_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SEED = 0


def load_digits(split: str) -> ArrayDataset:
    """Split ``"train"`` or ``"test"`` of the digits as images (N, 1, 8, 8) float32, normalised."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise DatasetError("the digits dataset needs scikit-learn; pip install layermod[digits]") from None
    bunch = sklearn_digits()
    images = bunch.images.astype(np.float32) / 16.0
    labels = bunch.target.astype(np.int64)
    mean, std = float(images.mean()), float(images.std())

    rng = np.random.default_rng(_DIGITS_SEED)
    test_parts = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        test_parts.append(members[: round(_DIGITS_TEST_FRACTION * len(members))])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test_parts)] = True
    keep = np.flatnonzero(is_test if split == "test" else ~is_test)

    x = torch.from_numpy((images[keep, None] - mean) / std)
    y = torch.from_numpy(labels[keep])
    return ArrayDataset(x, y, [str(d) for d in range(10)], "digits", normalization={"mean": [mean], "std": [std]})
