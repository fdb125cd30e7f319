"""The in-memory labelled dataset, and the accessors every reader, draw and measurement uses on any data.

The decisions behind it: docs/design.md, section layermod.data.arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from layermod.data.batches import cast_inputs, input_length, read_loader, split_item, stack_inputs, take
from layermod.errors import DatasetError, LabelError, one_line

__all__ = ["ArrayDataset", "Data", "Labels", "as_dataset", "dataset_labels", "gather", "label_array"]

Labels: TypeAlias = torch.Tensor | np.ndarray | Sequence[int]
"""(N,) integer class indices."""
Data: TypeAlias = Dataset | DataLoader | tuple[torch.Tensor | np.ndarray | Mapping[str, torch.Tensor], Labels]
"""Labelled samples in any of the four forms :func:`as_dataset` takes: a Dataset of ``(x, y)`` (an
:class:`ArrayDataset`, ...), a DataLoader, or an ``(X, y)`` pair with X (N, ...) and y (N,)."""

_MAX_CLASSES = 2**16  # class indices of (X, y) labels must be below this


class ArrayDataset(Dataset):
    """In-memory labelled samples.

    Attributes:
        data: (N, C, H, W) or (N, D) float32 tensor, already normalised; or integer token ids, or a dict of
            such tensors (``input_ids``, ``attention_mask``, ...) all (N, ...).
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
        *,
        normalization: dict | None = None,
    ) -> None:
        if input_length(data) != len(targets):
            raise LabelError(f"{input_length(data)} samples but {len(targets)} labels; pass one label per sample")
        self.data = data
        self.targets = targets
        self.classes = list(classes)
        self.name = name
        self.normalization = dict(normalization or {})

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i) -> tuple[torch.Tensor | dict[str, torch.Tensor], int]:
        return take(self.data, i), int(self.targets[i])

    def __repr__(self) -> str:
        if isinstance(self.data, dict):
            shape = {key: tuple(value.shape[1:]) for key, value in self.data.items()}
        else:
            shape = tuple(self.data.shape[1:])
        return f"ArrayDataset(name={self.name!r}, n={len(self)}, shape={shape})"


def dataset_labels(data: Data) -> np.ndarray:
    """Labels (N,) int64 of an ``(X, y)`` pair, an object with ``.targets``, a Dataset of ``(x, y)`` pairs or of
    dicts with ``labels`` / ``label``, or a DataLoader (read whole, see :func:`as_dataset`).

    A dataset without ``.targets`` is read once, item by item. Raises :class:`LabelError` for labels that
    are not integers or not one-dimensional.
    """
    if isinstance(data, DataLoader):
        data = as_dataset(data)
    if _is_pair(data):
        return label_array(data[1])
    if hasattr(data, "targets"):
        return label_array(data.targets)
    return label_array([_label_value(_item(data, i)[1]) for i in range(_length(data))])


def as_dataset(data: Data, *, per_class: int | None = None) -> Dataset:
    """Return ``data`` as a torch Dataset: an ``(X, y)`` pair or a DataLoader becomes an :class:`ArrayDataset`.

    ``X`` (a tensor/array, or a dict of them: ``{"input_ids": ..., "attention_mask": ...}``) keeps integer
    inputs as they are and makes floating ones float32 (N, ...); ``y`` becomes int64 class indices (>= 0);
    ``classes`` are ``"0" .. str(max label)``, name ``"tensors"``, no normalisation. A map-style Dataset is
    returned unchanged.

    Args:
        data: ``(X, y)`` with X (N, ...) and y (N,) ints, a DataLoader of such batches, or a Dataset.
        per_class: for a DataLoader, read once: the first ``per_class`` samples of each class kept (all of
            them when None).

    Returns:
        The Dataset.

    Raises:
        DatasetError: neither a pair, a DataLoader nor a Dataset, a Dataset without ``__len__`` (e.g. an
            IterableDataset), inputs X that are not real numbers, or a DataLoader of batches of different shapes.
        LabelError: labels that are not one non-negative integer per sample.
    """
    if isinstance(data, Dataset):
        _length(data)
        return data
    if isinstance(data, DataLoader):
        data = read_loader(data, per_class)
    elif not _is_pair(data):
        raise DatasetError(
            f"expected a torch Dataset, a DataLoader or an (X, y) pair, got {type(data).__name__}; pass one of those"
        )
    x = cast_inputs(data[0], "inputs X")
    y = label_array(data[1])
    if (not isinstance(x, dict) and x.ndim < 1) or input_length(x) != len(y):
        raise LabelError(f"{input_length(x)} features but {len(y)} labels; pass one label per sample")
    if len(y) and y.min() < 0:
        raise LabelError(f"labels must be class indices >= 0, got {y.min()}; renumber the classes from 0")
    return ArrayDataset(x, torch.from_numpy(y), _label_names(y), "tensors", normalization={})


def gather(data: Data, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the samples at ``indices``: (X, y (n,) int64 tensor), X an (n, ...) tensor (float32, or integer
    as given) or a dict of them (dict samples, e.g. ``input_ids`` and ``attention_mask``).

    ``data`` is an ``(X, y)`` pair, an :class:`ArrayDataset` (indexed directly), a DataLoader (through
    :func:`as_dataset`), or any Dataset of ``(x, y)`` pairs or dicts with ``labels`` (read item by item, so its
    transforms apply).

    Raises:
        DatasetError: items that are neither pairs nor labelled dicts, or inputs that are not real numbers of one
            shape (ragged samples are refused: padding is the dataset's job).
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if isinstance(data, DataLoader):
        data = as_dataset(data)
    if isinstance(data, ArrayDataset):
        rows = torch.from_numpy(idx)
        return cast_inputs(take(data.data, rows), "inputs X"), data.targets[rows].long()
    if _is_pair(data):
        y = label_array(data[1])
        rows = take(cast_inputs(data[0], "inputs X", float32=False), torch.from_numpy(idx))
        return cast_inputs(rows, "inputs X"), torch.from_numpy(y[idx])
    items = [_item(data, int(i)) for i in idx]
    xs = [cast_inputs(x, f"item {i} of {type(data).__name__}") for i, (x, _) in zip(idx, items)]
    x = stack_inputs(xs, type(data).__name__)
    y = label_array([_label_value(label) for _, label in items])
    return x, torch.from_numpy(y)


def label_array(labels: Labels) -> np.ndarray:
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
    """``data[i]`` as ``(x, y)``: an ``(x, y)`` pair, or a dict whose ``labels`` / ``label`` is popped out."""
    return split_item(data[i], f"item {i} of {type(data).__name__}")


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
