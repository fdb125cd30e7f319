"""Per-layer features of a model on a batch of samples, through forward hooks.

Each chosen layer's output is unwrapped (:func:`layermod.layers.first_tensor`) and made one vector per sample
(:mod:`layermod.extract.pooling`: a 3-D token output is pooled as ``pool`` says, anything else flattened per
sample) and kept as float32 on the CPU. The forward pass stops as soon as every hooked layer has produced its
output, so measuring early layers does not pay for the rest of the network.

Inputs are a tensor (N, ...) or a dict of tensors (N, ...) (``input_ids``, ``attention_mask``, ...); each
batch goes to the model through :func:`layermod.extract.inputs.call_model` (its device, its floating dtype,
integers kept, a dict as keyword arguments), and a dict's ``attention_mask`` is kept beside the features so
that padding never changes a pooled feature.

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
from layermod.extract.inputs import Batch, batch_length, call_model, describe_batch, model_device, slice_batch
from layermod.extract.layers import FORWARD_ERRORS, LayerCall, first_tensor, split_point
from layermod.extract.pooling import batch_mask, pool_output, resolve_pool

__all__ = ["extract_features", "plan_passes", "iter_layer_features", "model_device"]


class _Done(Exception):
    """Raised inside a hook to end a forward pass once every wanted output is in."""


def feature_size(call: LayerCall, pool: str = "flatten") -> int:
    """Values per sample in a layer's features: its hidden size for a 3-D output pooled to one token, else
    its flattened output."""
    if not call.shape:
        return 0
    if len(call.shape) == 3 and pool not in ("flatten", "auto"):
        return call.shape[-1]
    return math.prod(call.shape[1:])


def plan_passes(
    layers: list[str], calls: dict[str, LayerCall], n_samples: int, max_bytes: int, pool: str = "flatten"
) -> list[list[str]]:
    """Group ``layers`` (kept in order) so that each group's float32 features for ``n_samples`` fit in
    ``max_bytes``. A single layer larger than the budget gets a pass of its own."""
    groups: list[list[str]] = []
    used = max_bytes + 1
    for name in layers:
        size = 4 * n_samples * feature_size(calls[name], pool)
        if used + size > max_bytes:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += size
    return groups


@torch.no_grad()
def extract_features(
    model: nn.Module,
    inputs: Batch,
    layers: list[str],
    batch_size: int = 256,
    progress: bool = False,
    stop_early: bool = True,
    pool: str = "auto",
) -> dict[str, torch.Tensor]:
    """Outputs of ``layers`` for every sample of ``inputs``.

    Args:
        model: the network; run in eval mode (its mode is restored afterwards) on its own device.
        inputs: (N, ...) samples as the model takes them, or a dict of such tensors (keyword arguments).
        layers: module names (see :func:`layermod.layers.select_layers`).
        batch_size: samples per forward pass.
        progress: show a progress bar over batches (when stderr is a terminal).
        stop_early: end each forward pass once every layer has fired. A module called several times per pass
            gives one point per call: ``name`` its first call, ``name#k`` its k-th (see
            :func:`layermod.extract.trace.trace_calls`).
        pool: how a 3-D token output becomes one vector per sample (see :mod:`layermod.extract.pooling`).

    Returns:
        ``{name: (N, D_name) float32 CPU tensor}`` in the order of ``layers``.

    Raises:
        LayerError: a layer that returns no tensor or is not called.
        FeatureError: a layer whose output does not carry the batch dimension, an unknown pool, or a
            batch_size < 1.
        ModelError: the model fails on a batch.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise FeatureError(f"batch_size={batch_size!r} must be a positive integer")
    modules = dict(model.named_modules())
    n_inputs = batch_length(inputs)
    pool = resolve_pool(model, pool, inputs)
    layouts: dict[str, str | None] = {name: None for name in layers}
    wanted = set(layers)
    batch_out: dict[str, torch.Tensor] = {}
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers}

    wanted_calls: dict[str, dict[int, str]] = {}  # module -> {call number: point name} ("name#k": k-th call)
    for name in layers:
        module, k = split_point(name)
        wanted_calls.setdefault(module, {})[k] = name
    seen_calls: dict[str, int] = {}

    def hook(module_name: str):
        def record(_module, _inputs, output):
            seen_calls[module_name] = seen_calls.get(module_name, 0) + 1
            name = wanted_calls[module_name].get(seen_calls[module_name])
            if name is None:
                return
            tensor = first_tensor(output)
            if tensor is None:
                raise LayerError(f"layer {name!r} returns no tensor; choose another layer")
            batch_out[name] = tensor.detach()
            if stop_early and len(batch_out) == len(wanted):
                raise _Done

        return record

    handles = [modules[module].register_forward_hook(hook(module)) for module in wanted_calls]
    was_training = model.training
    model.eval()
    try:
        starts = range(0, n_inputs, batch_size)
        bar = tqdm(starts, desc="forward", disable=None if progress else True, leave=False)
        for number, start in enumerate(bar):
            batch = slice_batch(inputs, start, start + batch_size)
            size, mask = batch_length(batch), batch_mask(batch)
            batch_out.clear()
            seen_calls.clear()
            try:
                call_model(model, batch)
            except _Done:
                pass
            except FORWARD_ERRORS as err:
                raise _batch_failure(err, number, len(starts), start, batch, layers) from None
            for name in layers:
                if name not in batch_out:
                    raise LayerError(f"layer {name!r} is never called in forward; choose another layer")
                features, layouts[name] = pool_output(batch_out[name], pool, size, name, mask, layouts[name])
                parts[name].append(features)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


def _batch_failure(
    err: Exception, number: int, batches: int, start: int, batch: Batch, layers: list[str]
) -> ModelError:
    """The one-line error for a forward pass that failed on batch ``number`` (0-based) of ``batches``."""
    reason = one_line(err)
    size = batch_length(batch)
    names = ", ".join(repr(name) for name in layers[:3]) + (f" and {len(layers) - 3} more" if len(layers) > 3 else "")
    return ModelError(
        f"the model fails on batch {number + 1} of {batches} (samples {start}..{start + size - 1}, "
        f"{describe_batch(batch)}) while extracting {names}: {reason}; check that it takes batches of any size "
        "(or set batch_size / --batch-size so that every batch has a size it takes)"
    )


def iter_layer_features(
    model: nn.Module,
    inputs: Batch,
    layers: list[str],
    calls: dict[str, LayerCall],
    max_bytes: int,
    batch_size: int = 256,
    progress: bool = False,
    pool: str = "auto",
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, features (N, D))`` for each layer in order, holding at most one pass's worth of
    features (about ``max_bytes``) at a time; ``pool`` as for :func:`extract_features`."""
    pool = resolve_pool(model, pool, inputs)
    for group in plan_passes(layers, calls, batch_length(inputs), max_bytes, pool):
        features = extract_features(model, inputs, group, batch_size, progress, pool=pool)
        for name in group:
            yield name, features.pop(name)
