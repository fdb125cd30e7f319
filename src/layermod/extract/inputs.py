"""Batches as the model wants them: the one way layermod moves a batch to a model and calls it.

A batch is a tensor ``(B, ...)`` or a dict of tensors that all start with the batch dimension (a Hugging Face
style batch: ``input_ids``, ``attention_mask``, ``token_type_ids``, ``pixel_values``, ...).

Decisions, on purpose:

* **Integer inputs stay integer** (token ids for an ``nn.Embedding``); **floating inputs are cast to the model's
  floating dtype**, the dtype of its first floating parameter (or buffer), so a half, bfloat16 or float64
  model takes float32 data. Booleans are kept. Everything moves to the model's device.
* **A dict batch goes in as keyword arguments**: ``model(**batch)``; a tensor as ``model(batch)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["Batch", "batch_length", "call_model", "describe_batch", "expected_inputs", "failure_hint",
           "model_device", "model_float_dtype", "slice_batch", "to_model"]

Batch = torch.Tensor | Mapping[str, torch.Tensor]


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def model_float_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating parameter (else buffer), None for a model with neither."""
    for group in (model.parameters(), model.buffers()):
        for tensor in group:
            if tensor.is_floating_point():
                return tensor.dtype
    return None


def _convert(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is not None and tensor.is_floating_point():
        return tensor.to(device=device, dtype=dtype)
    return tensor.to(device)


def to_model(batch: Batch, model: nn.Module) -> Batch:
    """``batch`` on the model's device, floating tensors in the model's floating dtype, integers kept."""
    device, dtype = model_device(model), model_float_dtype(model)
    if isinstance(batch, Mapping):
        return {key: _convert(value, device, dtype) if isinstance(value, torch.Tensor) else value
                for key, value in batch.items()}
    return _convert(batch, device, dtype)


def call_model(model: nn.Module, batch: Batch) -> Any:
    """``model(batch)``, or ``model(**batch)`` for a dict, after :func:`to_model`; returns what the model returns."""
    batch = to_model(batch, model)
    if isinstance(batch, Mapping):
        return model(**batch)
    return model(batch)


def batch_length(batch: Batch) -> int:
    """Samples in ``batch`` (the first dimension of its tensor, or of the dict's first tensor)."""
    if isinstance(batch, Mapping):
        for value in batch.values():
            if isinstance(value, torch.Tensor):
                return len(value) if value.ndim else 1
        return 0
    return len(batch) if batch.ndim else 1


def slice_batch(batch: Batch, start: int, *, stop: int | None = None) -> Batch:
    """Samples ``start:stop`` of ``batch`` (every tensor of a dict sliced alike)."""
    if isinstance(batch, Mapping):
        return {key: value[start:stop] if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
    return batch[start:stop]


def describe_batch(batch: Batch) -> str:
    """``shape (2, 3)`` or ``input_ids (2, 7) int64, attention_mask (2, 7) int64`` for a message."""
    if isinstance(batch, Mapping):
        parts = [f"{key} {tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
                 for key, value in batch.items() if isinstance(value, torch.Tensor)]
        return ", ".join(parts) or "an empty dict"
    return f"shape {tuple(batch.shape)} {str(batch.dtype).removeprefix('torch.')}"


def expected_inputs(model: nn.Module) -> str | None:
    """What the first module of ``model`` that names its ``main_input_name`` (a transformers model, also inside a
    wrapper) takes, for a message: ``"T5Model takes input_ids, attention_mask, decoder_input_ids, ..."``: its
    main input and the ``*input_ids`` / ``*attention_mask`` arguments of its forward. None for other models."""
    for module in model.modules():
        main = getattr(module, "main_input_name", None)
        if isinstance(main, str):
            try:
                names = list(inspect.signature(module.forward).parameters)
            except (TypeError, ValueError):
                names = []
            wanted = [main, *(n for n in names if n != main and n.endswith(("input_ids", "attention_mask")))]
            return f"{type(module).__name__} takes {', '.join(wanted)}"
    return None


def failure_hint(model: nn.Module, batch: Batch) -> str:
    """``"; T5Model takes input_ids, ...; given input_ids, attention_mask"`` for a model whose inputs have
    names (:func:`expected_inputs`), else ``"; check that the data fit the model"``."""
    expected = expected_inputs(model)
    if expected is None:
        return "; check that the data fit the model"
    given = ", ".join(batch) if isinstance(batch, Mapping) else "one tensor (its first input)"
    return f"; {expected}; given {given}"
