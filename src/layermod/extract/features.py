"""Per-layer features of a model on a batch of samples, through forward hooks.

Each chosen layer's output is unwrapped (:func:`layermod.layers.first_tensor`), flattened per sample to
(N, D) with no pooling, and kept as float32 on the CPU. The forward pass stops as soon as every hooked layer
has produced its output, so measuring early layers does not pay for the rest of the network.

When all chosen layers at once would exceed a memory budget, :func:`plan_passes` splits them into groups,
each extracted by its own pass over the samples.

A model that fails on one batch (e.g. it only takes one batch size, so the short last batch breaks it) is a
:class:`ModelError` naming the batch, its samples and shape and the layers being extracted, not a raw
exception from inside the model.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from layermod.errors import FeatureError, LayerError, ModelError, one_line
from layermod.extract.layers import FORWARD_ERRORS, LayerCall, first_tensor

__all__ = ["extract_features", "plan_passes", "iter_layer_features", "model_device"]


class _Done(Exception):
    """Raised inside a hook to end a forward pass once every wanted output is in."""


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def feature_size(call: LayerCall) -> int:
    """Values per sample in a layer's flattened output."""
    return math.prod(call.shape[1:]) if call.shape else 0


def plan_passes(layers: list[str], calls: dict[str, LayerCall], n_samples: int, max_bytes: int) -> list[list[str]]:
    """Group ``layers`` (kept in order) so that each group's float32 features for ``n_samples`` fit in
    ``max_bytes``. A single layer larger than the budget gets a pass of its own."""
    groups: list[list[str]] = []
    used = max_bytes + 1
    for name in layers:
        size = 4 * n_samples * feature_size(calls[name])
        if used + size > max_bytes:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += size
    return groups


@torch.no_grad()
def extract_features(
    model: nn.Module,
    inputs: torch.Tensor,
    layers: list[str],
    batch_size: int = 256,
    progress: bool = False,
    stop_early: bool = True,
) -> dict[str, torch.Tensor]:
    """Outputs of ``layers`` for every sample of ``inputs``.

    Args:
        model: the network; run in eval mode (its mode is restored afterwards) on its own device.
        inputs: (N, ...) samples as the model takes them.
        layers: module names (see :func:`layermod.layers.select_layers`).
        batch_size: samples per forward pass.
        progress: show a progress bar over batches (when stderr is a terminal).
        stop_early: end each forward pass once every layer has fired; pass False when a layer is called more
            than once per pass (its last call's output is kept).

    Returns:
        ``{name: (N, D_name) float32 CPU tensor}`` in the order of ``layers``.

    Raises:
        LayerError: a layer that returns no tensor or is not called.
        FeatureError: a layer whose output does not start with the batch dimension, or a batch_size < 1.
        ModelError: the model fails on a batch.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise FeatureError(f"batch_size={batch_size!r} must be a positive integer")
    modules = dict(model.named_modules())
    device = model_device(model)
    wanted = set(layers)
    batch_out: dict[str, torch.Tensor] = {}
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers}

    def hook(name: str):
        def record(_module, _inputs, output):
            tensor = first_tensor(output)
            if tensor is None:
                raise LayerError(f"layer {name!r} returns no tensor; choose another layer")
            batch_out[name] = tensor.detach()
            if stop_early and len(batch_out) == len(wanted):
                raise _Done

        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
    was_training = model.training
    model.eval()
    try:
        starts = range(0, len(inputs), batch_size)
        bar = tqdm(starts, desc="forward", disable=None if progress else True, leave=False)
        for number, start in enumerate(bar):
            batch = inputs[start : start + batch_size].to(device)
            batch_out.clear()
            try:
                model(batch)
            except _Done:
                pass
            except FORWARD_ERRORS as err:
                raise _batch_failure(err, number, len(starts), start, batch, layers) from None
            for name in layers:
                if name not in batch_out:
                    raise LayerError(f"layer {name!r} is never called in forward; choose another layer")
                out = batch_out[name]
                if out.ndim == 0 or out.shape[0] != len(batch):
                    raise FeatureError(
                        f"layer {name!r} returns shape {tuple(out.shape)}, whose first dimension is not the batch "
                        f"size {len(batch)}; choose another layer"
                    )
                parts[name].append(out.reshape(len(batch), -1).float().cpu())
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


def _batch_failure(
    err: Exception, number: int, batches: int, start: int, batch: torch.Tensor, layers: list[str]
) -> ModelError:
    """The one-line error for a forward pass that failed on batch ``number`` (0-based) of ``batches``."""
    reason = one_line(err)
    names = ", ".join(repr(name) for name in layers[:3]) + (f" and {len(layers) - 3} more" if len(layers) > 3 else "")
    return ModelError(
        f"the model fails on batch {number + 1} of {batches} (samples {start}..{start + len(batch) - 1}, shape "
        f"{tuple(batch.shape)}) while extracting {names}: {reason}; check that it takes batches of any size "
        "(or set batch_size / --batch-size so that every batch has a size it takes)"
    )


def iter_layer_features(
    model: nn.Module,
    inputs: torch.Tensor,
    layers: list[str],
    calls: dict[str, LayerCall],
    max_bytes: int,
    batch_size: int = 256,
    progress: bool = False,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, features (N, D))`` for each layer in order, holding at most one pass's worth of
    features (about ``max_bytes``) at a time."""
    for group in plan_passes(layers, calls, len(inputs), max_bytes):
        once = all(calls[name].calls == 1 for name in group)
        features = extract_features(model, inputs, group, batch_size, progress, stop_early=once)
        for name in group:
            yield name, features.pop(name)
