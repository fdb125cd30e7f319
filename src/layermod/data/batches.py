"""Inputs as samples and batches: a tensor per sample, or a dict of them (Hugging Face style), and labels.

What :mod:`layermod.data.arrays` builds on:

* **A labelled item** is an ``(x, y)`` pair (``x`` a tensor or a dict of tensors), or a dict holding its label
  under ``labels`` or ``label`` (popped out of the inputs): ``{"input_ids": ..., "attention_mask": ...,
  "labels": 3}``.
* **Dtypes.** Floating inputs are held as float32 and integer inputs (token ids) are kept as they are; the
  model's own floating dtype is applied when the model is called (:mod:`layermod.extract.inputs`).
* **Collation.** Samples are stacked into one tensor, or a dict of tensors with the same keys; samples of
  different shapes are refused in one line (padding is the dataset's job, e.g. ``padding="max_length"``).
* **A DataLoader** is read once, batch by batch, keeping at most ``per_class`` samples of every class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from layermod.coerce import as_real_tensor
from layermod.errors import DatasetError

__all__ = ["LABEL_KEYS", "cast_inputs", "input_length", "read_loader", "split_item", "stack_inputs", "take"]

LABEL_KEYS = ("labels", "label")

Inputs = torch.Tensor | dict[str, torch.Tensor]


def cast_inputs(x: Any, what: str, *, float32: bool = True) -> Inputs:
    """``x`` (tensor, array, lists, or a dict of them) as real tensors: floating as float32 (kept as they are
    with ``float32=False``), others kept."""
    if isinstance(x, Mapping):
        if not x:
            raise DatasetError(f"{what} is an empty dict; give the model's inputs (input_ids, ...)")
        return {str(key): cast_inputs(value, f"{what}[{key!r}]", float32=float32) for key, value in x.items()}
    tensor = as_real_tensor(x, what, DatasetError)
    return tensor.float() if float32 and tensor.is_floating_point() else tensor


def split_item(item: Any, where: str) -> tuple[Any, Any]:
    """``(x, y)`` of an ``(x, y)`` pair or of a dict holding its label under ``labels`` / ``label``."""
    if isinstance(item, Mapping):
        key = next((key for key in LABEL_KEYS if key in item), None)
        if key is None:
            raise DatasetError(
                f"{where} is a dict with keys {', '.join(map(repr, list(item)[:6]))} but no 'labels' or 'label'; "
                "add the class under 'labels' or return (inputs, label) pairs"
            )
        return {k: v for k, v in item.items() if k not in LABEL_KEYS}, item[key]
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise DatasetError(
            f"{where} is a {type(item).__name__}, not an (x, y) pair or a dict with 'labels'; "
            "wrap the dataset so that it returns (input, label)"
        )
    return item[0], item[1]


def input_length(x: Inputs) -> int:
    """Samples in ``x``: its first dimension, the same for every entry of a dict (else :class:`DatasetError`)."""
    if isinstance(x, Mapping):
        lengths = {key: len(value) if value.ndim else 0 for key, value in x.items()}
        if len(set(lengths.values())) > 1:
            raise DatasetError(f"the inputs' entries have different numbers of samples ({lengths}); "
                               "give one per sample")
        return next(iter(lengths.values()))
    return len(x) if x.ndim else 0


def take(x: Inputs, index: int | slice | Sequence[int] | np.ndarray | torch.Tensor) -> Inputs:
    """Samples ``index`` (an int, a slice or an index tensor) of a tensor or of every entry of a dict."""
    if isinstance(x, Mapping):
        return {key: value[index] for key, value in x.items()}
    return x[index]


def stack_inputs(xs: list[Inputs], what: str) -> Inputs:
    """Stack per-sample inputs into a batch: one tensor, or a dict of tensors (the same keys in every sample).

    Raises:
        DatasetError: samples mixing tensors and dicts, dicts with different keys, or entries of different
            shapes (ragged sequences: pad them to one length in the dataset).
    """
    if not xs:
        return torch.empty(0)
    dicts = {isinstance(x, Mapping) for x in xs}
    if len(dicts) > 1:
        raise DatasetError(f"the inputs of {what} mix dicts and tensors; return one kind")
    if dicts == {False}:
        return _stack(xs, what, "inputs")
    keys = list(xs[0])
    for x in xs:
        if list(x) != keys and set(x) != set(keys):
            raise DatasetError(f"the inputs of {what} have different keys ({sorted(keys)} and {sorted(x)}); "
                               "give every sample the same entries")
    return {key: _stack([x[key] for x in xs], what, repr(key)) for key in keys}


def _stack(tensors: list[torch.Tensor], what: str, entry: str) -> torch.Tensor:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        listed = ", ".join(map(str, sorted(shapes)[:3]))
        raise DatasetError(
            f"the {entry} of {what} have different shapes ({listed}); pad or resize them to one shape in the "
            "dataset (e.g. a tokenizer's padding='max_length')"
        )
    return torch.stack(tensors)


def read_loader(loader: Iterable[Any], per_class: int | None) -> tuple[Inputs, list]:
    """Read a DataLoader once: its samples (stacked) and labels, at most ``per_class`` samples of each class.

    Batches are ``(x, y)`` pairs (``x`` a tensor or a dict of tensors) or dicts with ``labels`` / ``label``.
    """
    xs: list[Inputs] = []
    labels: list = []
    kept: dict[Any, int] = {}
    for number, batch in enumerate(loader):
        x, y = split_item(batch, f"batch {number} of the DataLoader")
        x = cast_inputs(x, f"batch {number} of the DataLoader")
        y = np.asarray(y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y).reshape(-1)
        if input_length(x) != len(y):
            raise DatasetError(f"batch {number} of the DataLoader has {input_length(x)} inputs but {len(y)} labels; "
                               "give one label per sample")
        for i, label in enumerate(y.tolist()):
            if per_class is not None and kept.get(label, 0) >= per_class:
                continue
            kept[label] = kept.get(label, 0) + 1
            xs.append(take(x, i))
            labels.append(label)
    return stack_inputs(xs, "the DataLoader"), labels
