"""The in-memory labelled dataset, and the accessors every reader, draw and measurement uses on any data.

Data comes in three forms: an :class:`ArrayDataset` (what every loader of :mod:`layermod.data` returns), any
torch ``Dataset`` of ``(x, y)`` pairs, or an ``(X, y)`` pair of tensors/arrays. :func:`dataset_labels`,
:func:`gather` and :func:`as_dataset` accept all three; :func:`label_array` checks labels for them.

Decisions, on purpose:

* **Labels are integers.** Float, boolean or string labels are a :class:`LabelError`, never rounded.
* **Labels are class indices, kept as given.** :func:`as_dataset` names the classes ``"0" .. str(max label)``
  so that ``classes[label]`` names ``label``; labels are not renumbered, because a model's outputs, and the
  other split of the same data, use the same indices. A label of ``_MAX_CLASSES`` (65536) or more is a
  :class:`LabelError` (renumber the classes), so a label like 2**40 never builds 2**40 class names.
* **Map-style datasets only.** Draws pick samples by index, so a Dataset needs ``__len__`` and
  ``__getitem__``; an ``IterableDataset`` or a class without ``__len__`` is a :class:`DatasetError`. Inputs
  ``X`` that require grad are detached, small sparse ones made dense, complex ones refused
  (:func:`layermod.coerce.as_real_tensor`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from layermod.coerce import as_real_tensor
from layermod.errors import DatasetError, LabelError, one_line

__all__ = ["ArrayDataset", "as_dataset", "dataset_labels", "gather", "label_array"]

_MAX_CLASSES = 2**16  # class indices of (X, y) labels must be below this


class ArrayDataset(Dataset):
    """In-memory labelled samples.

    Attributes:
        data: (N, C, H, W) or (N, D) float32 tensor, already normalised.
        targets: (N,) int64 tensor of class indices.
        classes: class names, ``classes[label]`` names ``label``.
        name: dataset name, e.g. ``"fashion-mnist"``.
        normalization: ``{"mean": [...], "std": [...]}`` per channel as applied, ``{}`` if none.
    """

    def __init__(
        self,
        data: torch.Tensor,
        targets: torch.Tensor,
        classes: list[str],
        name: str,
        normalization: dict | None = None,
    ) -> None:
        if len(data) != len(targets):
            raise LabelError(f"{len(data)} samples but {len(targets)} labels; pass one label per sample")
        self.data = data
        self.targets = targets
        self.classes = list(classes)
        self.name = name
        self.normalization = dict(normalization or {})

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i) -> tuple[torch.Tensor, int]:
        return self.data[i], int(self.targets[i])

    def __repr__(self) -> str:
        return f"ArrayDataset(name={self.name!r}, n={len(self)}, shape={tuple(self.data.shape[1:])})"


def dataset_labels(data) -> np.ndarray:
    """Labels (N,) int64 of an ``(X, y)`` pair, an object with ``.targets``, or a Dataset of ``(x, y)`` pairs.

    A dataset without ``.targets`` is read once, item by item. Raises :class:`LabelError` for labels that
    are not integers or not one-dimensional.
    """
    if _is_pair(data):
        return label_array(data[1])
    if hasattr(data, "targets"):
        return label_array(data.targets)
    return label_array([_label_value(_item(data, i)[1]) for i in range(_length(data))])


def as_dataset(data) -> Dataset:
    """Return ``data`` as a torch Dataset: an ``(X, y)`` pair becomes an :class:`ArrayDataset`.

    ``X`` becomes a float32 tensor (N, ...), ``y`` int64 class indices (>= 0); ``classes`` are
    ``"0" .. str(max label)``, name ``"tensors"``, no normalisation. A map-style Dataset is returned unchanged.

    Raises:
        DatasetError: neither a pair nor a Dataset, a Dataset without ``__len__`` (e.g. an IterableDataset),
            or inputs X that are not real numbers.
        LabelError: labels that are not one non-negative integer per sample.
    """
    if isinstance(data, Dataset):
        _length(data)
        return data
    if not _is_pair(data):
        raise DatasetError(
            f"expected a torch Dataset or an (X, y) pair, got {type(data).__name__}; pass one of those"
        )
    x = as_real_tensor(data[0], "inputs X", DatasetError).float()
    y = label_array(data[1])
    if x.ndim < 1 or len(x) != len(y):
        n = len(x) if x.ndim else 0
        raise LabelError(f"{n} features but {len(y)} labels; pass one label per sample")
    if len(y) and y.min() < 0:
        raise LabelError(f"labels must be class indices >= 0, got {y.min()}; renumber the classes from 0")
    return ArrayDataset(x, torch.from_numpy(y), _label_names(y), "tensors", {})


def gather(data, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the samples at ``indices``: (X (n, ...) float32 tensor, y (n,) int64 tensor).

    ``data`` is an ``(X, y)`` pair, an :class:`ArrayDataset` (indexed directly) or any Dataset of ``(x, y)``
    pairs (read item by item, so its transforms apply).

    Raises:
        DatasetError: items that are not ``(x, y)`` pairs, or inputs that are not real numbers of one shape.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if isinstance(data, ArrayDataset):
        take = torch.from_numpy(idx)
        return data.data[take].float(), data.targets[take].long()
    if _is_pair(data):
        y = label_array(data[1])
        x = as_real_tensor(data[0], "inputs X", DatasetError)
        return x[torch.from_numpy(idx)].float(), torch.from_numpy(y[idx])
    items = [_item(data, int(i)) for i in idx]
    xs = [as_real_tensor(x, f"item {i} of {type(data).__name__}", DatasetError) for i, (x, _) in zip(idx, items)]
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise DatasetError(
            f"the inputs of {type(data).__name__} have different shapes ({', '.join(map(str, sorted(shapes)[:3]))}); "
            "make its items one shape (resize or crop them)"
        )
    x = torch.stack(xs).float() if xs else torch.empty(0)
    y = label_array([_label_value(label) for _, label in items])
    return x, torch.from_numpy(y)


def label_array(labels) -> np.ndarray:
    """Labels as a (N,) int64 array; :class:`LabelError` unless they are one-dimensional integers."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    try:
        y = np.asarray(labels)
    except (ValueError, TypeError) as e:
        raise LabelError(f"labels cannot be read as an array ({one_line(e)}); pass (N,) integer labels") from None
    if y.ndim != 1:
        raise LabelError(f"labels must have shape (N,), got {y.shape}; pass one integer label per sample")
    if y.dtype.kind not in "iu" and not (len(y) == 0 and y.dtype.kind == "f"):
        raise LabelError(f"labels must be integers, got dtype {y.dtype}; convert them to class indices")
    return y.astype(np.int64)


def _is_pair(data) -> bool:
    """True for a tuple or list ``(X, y)`` (not a Dataset)."""
    return isinstance(data, (tuple, list)) and len(data) == 2


def _length(data) -> int:
    """``len(data)`` of a map-style dataset; :class:`DatasetError` for an IterableDataset or a dataset without
    ``__len__`` (draws pick samples by index)."""
    try:
        if not isinstance(data, IterableDataset):
            return len(data)
    except TypeError:
        pass
    kind = "an IterableDataset" if isinstance(data, IterableDataset) else "a dataset without __len__"
    raise DatasetError(
        f"{type(data).__name__} is {kind}, so samples cannot be drawn by index; give a map-style Dataset "
        "with __len__ and __getitem__ returning (x, y)"
    )


def _item(data, i: int) -> tuple[Any, Any]:
    """``data[i]`` checked to be an ``(x, y)`` pair."""
    item = data[i]
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise DatasetError(
            f"item {i} of {type(data).__name__} is a {type(item).__name__}, not an (x, y) pair; "
            "wrap the dataset so that it returns (input, label)"
        )
    return item[0], item[1]


def _label_value(label):
    """A single label as a Python scalar (one-element tensors and arrays are unwrapped)."""
    if isinstance(label, torch.Tensor):
        label = label.detach().cpu().numpy()
    if isinstance(label, np.ndarray) and label.size == 1:
        return label.item()
    return label


def _label_names(y: np.ndarray) -> list[str]:
    """Class names ``"0" .. str(max label)`` of (N,) class indices >= 0; :class:`LabelError` past ``_MAX_CLASSES``."""
    if not len(y):
        return []
    top = int(y.max())
    if top >= _MAX_CLASSES:
        raise LabelError(
            f"labels go up to {top} but class indices must be below {_MAX_CLASSES}; renumber the classes from 0, "
            "e.g. y = np.unique(y, return_inverse=True)[1]"
        )
    return [str(c) for c in range(top + 1)]
