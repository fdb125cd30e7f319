"""Per-layer features of a model on a batch of samples, through forward hooks.

Each chosen layer's output is unwrapped (:func:`layermod.extract.trace.first_tensor`: a layer returning several
tensors of one batch size, such as ``(aux, main)``, is measured on the first, and a warning naming the layer and
the shapes says so once) and made one vector per sample
(:mod:`layermod.extract.pooling`: a 3-D token output is pooled as ``pool`` says, anything else flattened per
sample) and kept as float32 on the CPU (or, asked to, on the model's device: pooled there, no per-batch copy
to the host). The forward pass stops as soon as every hooked layer has produced its
output, so measuring early layers does not pay for the rest of the network.

Inputs are a tensor (N, ...) or a dict of tensors (N, ...) (``input_ids``, ``attention_mask``, ...); each
batch goes to the model through :func:`layermod.extract.inputs.call_model` (its device, its floating dtype,
integers kept, a dict as keyword arguments), and a dict's ``attention_mask`` is kept beside the features so
that padding never changes a pooled feature.

When all chosen layers at once would exceed a memory budget, :func:`plan_passes` splits them into groups,
each extracted by its own pass over the samples, so the features held at once stay within the budget however
many layers are measured. A layer whose features alone exceed the budget is written, batch by batch, to a
float32 numpy memmap in a temporary directory (:func:`iter_layer_features`), deleted once the next layer is
asked for; its readers search it in blocks (:func:`layermod.knn_graph` with ``max_bytes``).

A model that fails on one batch (e.g. it only takes one batch size, so the short last batch breaks it) is a
:class:`ModelError` naming the batch, its samples and shape and the layers being extracted, not a raw
exception from inside the model.
"""

from __future__ import annotations

import math
import numbers
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import torch
from torch import nn
from tqdm.auto import tqdm

from layermod.errors import FeatureError, LayerError, ModelError, one_line
from layermod.io.files import release_pages
from layermod.extract.inputs import Batch, batch_length, call_model, describe_batch, model_device, slice_batch
from layermod.extract.layers import FORWARD_ERRORS, LayerCall, first_tensor, split_point
from layermod.extract.modes import evaluating
from layermod.extract.pooling import batch_mask, pool_output, resolve_pool
from layermod.coerce import bar_disabled

__all__ = ["extract_features", "plan_passes", "iter_layer_features", "model_device", "traced_layouts"]


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
    layers: list[str], calls: dict[str, LayerCall], n_samples: int, max_bytes: int, *, pool: str = "flatten"
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


def traced_layouts(calls: dict[str, LayerCall], layers: list[str]) -> dict[str, str]:
    """``{name: "batch_first" | "sequence_first"}`` for the 3-D outputs among ``layers`` whose batch dimension
    (0 or 1) the trace found, so that a batch size equal to the sequence length is not ambiguous."""
    found = {}
    for name in layers:
        call = calls[name]
        if call.shape is not None and len(call.shape) == 3 and call.batch_dim in (0, 1):
            found[name] = ("batch_first", "sequence_first")[call.batch_dim]
    return found


@torch.no_grad()
def extract_features(
    model: nn.Module,
    inputs: Batch,
    *,
    layers: list[str],
    batch_size: int = 256,
    progress: bool = False,
    stop_early: bool = True,
    pool: str = "auto",
    on_device: bool = False,
    layouts: dict[str, str] | None = None,
) -> dict[str, torch.Tensor]:
    """Outputs of ``layers`` for every sample of ``inputs``.

    Args:
        model: the network; run in eval mode (its mode is restored afterwards) on its own device.
        inputs: (N, ...) samples as the model takes them, or a dict of such tensors (keyword arguments).
        layers: module names (see :func:`layermod.extract.layers.select_layers`).
        batch_size: samples per forward pass.
        progress: show a progress bar over batches (when stderr is a terminal).
        stop_early: end each forward pass once every layer has fired. A module called several times per pass
            gives one point per call: ``name`` its first call, ``name#k`` its k-th (see
            :func:`layermod.extract.trace.trace_calls`).
        pool: how a 3-D token output becomes one vector per sample (see :mod:`layermod.extract.pooling`).
        on_device: keep the features on the model's device (pooled there, never copied to the host).
        layouts: ``{name: "batch_first" | "sequence_first"}`` of 3-D outputs whose batch dimension is known
            (:func:`traced_layouts`); the others are read from the first batch (ambiguous when ``B == T``).

    Returns:
        ``{name: (N, D_name) float32 tensor}`` in the order of ``layers``, on the CPU unless ``on_device``.

    Raises:
        LayerError: a layer that returns no tensor or is not called.
        FeatureError: a layer whose output does not carry the batch dimension, an unknown pool, or a
            batch_size < 1.
        ModelError: the model fails on a batch.
    """
    n = batch_length(inputs)
    out: dict[str, torch.Tensor] = {}
    for start, features in _batches(model, inputs, layers, batch_size, progress, stop_early, pool, layouts):
        for name, part in features.items():
            part = part if on_device else part.cpu()
            if name not in out:  # one (N, D) tensor filled batch by batch: no second copy for a concatenation
                # made outside inference mode, so that the caller may change it in place
                out[name] = torch.empty((n, *part.shape[1:]), dtype=part.dtype, device=part.device)
            out[name][start:start + len(part)] = part
    return {name: out[name] for name in layers}


@torch.inference_mode()
def _batches(model: nn.Module, inputs: Batch, layers: list[str], batch_size: int, progress: bool, stop_early: bool,
             pool: str, known: dict[str, str] | None = None) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """``(first sample, {name: (B, D_name) features})`` for every batch of ``inputs`` (see
    :func:`extract_features`); hooks are removed and the model's mode restored when the generator ends."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise FeatureError(f"batch_size={batch_size!r} must be a positive integer")
    modules = dict(model.named_modules())
    n_inputs = batch_length(inputs)
    pool = resolve_pool(model, pool, inputs)
    layouts: dict[str, str | None] = {name: (known or {}).get(name) for name in layers}
    wanted = set(layers)
    batch_out: dict[str, torch.Tensor] = {}

    wanted_calls: dict[str, dict[int, str]] = {}  # module -> {call number: point name} ("name#k": k-th call)
    for name in layers:
        module, k = split_point(name)
        wanted_calls.setdefault(module, {})[k] = name
    seen_calls: dict[str, int] = {}
    warned: set[str] = set()

    def hook(module_name: str):
        def record(_module, _inputs, output):
            seen_calls[module_name] = seen_calls.get(module_name, 0) + 1
            name = wanted_calls[module_name].get(seen_calls[module_name])
            if name is None:
                return
            tensor = first_tensor(output)
            if tensor is None:
                raise LayerError(f"layer {name!r} returns no tensor; choose another layer")
            if name not in warned and not isinstance(output, torch.Tensor):
                warned.add(name)
                _warn_other_tensors(name, output)
            batch_out[name] = tensor.detach()
            if stop_early and len(batch_out) == len(wanted):
                raise _Done

        return record

    handles = [modules[module].register_forward_hook(hook(module)) for module in wanted_calls]
    try:
        with evaluating(model):
            starts = range(0, n_inputs, batch_size)
            bar = tqdm(starts, desc="forward", disable=bar_disabled(progress), leave=False)
            for number, start in enumerate(bar):
                batch = slice_batch(inputs, start, stop=start + batch_size)
                size, mask = batch_length(batch), batch_mask(batch)
                batch_out.clear()
                seen_calls.clear()
                try:
                    call_model(model, batch)
                except _Done:
                    pass
                except FORWARD_ERRORS as err:
                    raise _batch_failure(err, number, len(starts), start, batch, layers) from None
                yield start, _pooled(batch_out, layouts, pool=pool, size=size, mask=mask)
    finally:
        for handle in handles:
            handle.remove()


def _pooled(outputs: dict[str, torch.Tensor], layouts: dict[str, str | None], *, pool: str, size: int,
            mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``{name: (B, D_name) features}`` of one batch's recorded ``outputs``, in the order of ``layouts`` (one
    entry per chosen layer, updated with each output's layout)."""
    features = {}
    for name in layouts:
        if name not in outputs:
            raise LayerError(f"layer {name!r} is never called in forward; choose another layer")
        features[name], layouts[name] = pool_output(outputs[name], pool, size, name, mask=mask, layout=layouts[name])
    return features


def _tensors(output: object) -> list[torch.Tensor]:
    """Every tensor in ``output``, depth-first in the order :func:`first_tensor` searches."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _tensors(item)]
    return []


def _warn_other_tensors(name: str, output: object) -> None:
    """One warning when a layer returns several tensors with the first one's batch dimension (B, ...): only the
    first is measured, so ``(aux, main)`` is measured on ``aux``. Tensors without it (T5's position bias
    (1, heads, T, T) beside its hidden states) are not other outputs per sample and say nothing."""
    tensors = _tensors(output)
    first = tensors[0]
    if not first.ndim or first.shape[0] < 2:  # one sample: no telling which tensors are per sample
        return
    tensors = [t for t in tensors if t.ndim and t.shape[0] == first.shape[0]]
    if len(tensors) > 1:
        shapes = ", ".join("x".join(map(str, t.shape)) or "scalar" for t in tensors[:4])
        more = f" and {len(tensors) - 4} more" if len(tensors) > 4 else ""
        warnings.warn(f"layer {name!r} returns {len(tensors)} tensors ({shapes}{more}); the first is measured; "
                      "to measure another, choose the submodule that returns it", stacklevel=2)


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
        "(or set batch_size so that every batch has a size it takes)"
    )


def iter_layer_features(
    model: nn.Module,
    inputs: Batch,
    layers: list[str],
    calls: dict[str, LayerCall],
    max_bytes: int,
    *,
    batch_size: int = 256,
    progress: bool = False,
    pool: str = "auto",
    memmap: bool = False,
    on_device: bool = False,
) -> Iterator[tuple[str, torch.Tensor | np.memmap]]:
    """Yield ``(name, features (N, D))`` for each layer in order, holding at most one pass's worth of
    features (about ``max_bytes``) at a time; ``pool`` as for :func:`extract_features`.

    A layer whose float32 features alone exceed ``max_bytes`` is written to a file in a temporary directory,
    removed when the generator moves on or ends, and comes as a CPU tensor over that file (as a
    ``numpy.memmap`` with ``memmap``); the others as tensors, on the model's device with ``on_device``, else
    on the CPU."""
    pool = resolve_pool(model, pool, inputs)
    n = batch_length(inputs)
    layouts = traced_layouts(calls, layers)
    for group in plan_passes(layers, calls, n, max_bytes, pool=pool):
        if len(group) == 1 and 4 * n * feature_size(calls[group[0]], pool) > max_bytes:
            with tempfile.TemporaryDirectory(prefix="layermod-features-") as folder:
                stored = _extract_to_disk(model, inputs, group[0], Path(folder), batch_size, progress, pool,
                                          layouts)
                yield group[0], stored if memmap else torch.from_numpy(stored)
                del stored
            continue
        features = extract_features(model, inputs, layers=group, batch_size=batch_size, progress=progress, pool=pool,
                                    on_device=on_device, layouts=layouts)
        for name in group:
            yield name, features.pop(name)


def _extract_to_disk(model: nn.Module, inputs: Batch, name: str, folder: Path, batch_size: int, progress: bool,
                     pool: str, layouts: dict[str, str]) -> np.memmap:
    """The features (N, D) of layer ``name`` written batch by batch to a file ``folder / "features.npy"`` that
    is unlinked as soon as it is mapped, so that not even a killed process leaves it behind."""
    n = batch_length(inputs)
    stored = None
    for start, features in _batches(model, inputs, [name], batch_size, progress, True, pool, layouts):
        part = features[name].cpu().numpy()
        if stored is None:
            stored = np.lib.format.open_memmap(folder / "features.npy", mode="w+", dtype=np.float32,
                                               shape=(n, part.shape[1]))
            (folder / "features.npy").unlink()  # the mapping keeps the pages; the name is not needed again
        stored[start:start + len(part)] = part
        release_pages(stored)  # written pages leave this process's resident memory (the file keeps them)
    return stored
