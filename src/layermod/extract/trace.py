"""One traced forward pass: every module call, in order, with what it took and gave.

:func:`trace_calls` runs ``model(example)`` once with a hook on every submodule and records each **call** (a
module called three times in one forward pass, like ALBERT's shared layer, gives three records: ``name``,
``name#2``, ``name#3``), who called it, the shape of its output and where the batch dimension of that output is.
The auto points (:mod:`layermod.extract.auto`) are read from these records; selection
(:mod:`layermod.extract.layers`) checks names against them.

**Batch dimension.** The output dimension whose size is the batch size ``B``. When exactly one dimension has
size ``B`` it is that one. When several do (``B == T`` for a sequence-first ``(T, B, C)`` output, or a tiny
spatial map at ``B == 2``), the model is run once more on a batch of another size and the batch dimension is the
one whose size followed it; if that second pass fails (a model that takes one batch size only) or more than one
dimension followed the batch size, the layer's batch dimension is **ambiguous**: it is recorded as such and
selecting the layer is refused in one line, never guessed.

TorchScript modules (``torch.jit.script``/``torch.jit.trace``) take no Python hooks: they are refused with a
:class:`LayerError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import KW_ONLY, dataclass

import torch
from torch import nn

from layermod.errors import LayerError, ModelError
from layermod.extract.inputs import Batch, batch_length, call_model, describe_batch, failure_hint, slice_batch
from layermod.extract.modes import evaluating

__all__ = ["FORWARD_ERRORS", "LayerCall", "first_tensor", "locate_batch_dim", "split_point", "trace_calls"]

# what a model's forward raises on inputs it cannot take (shape, dtype or device mismatches, asserts)
FORWARD_ERRORS = (RuntimeError, ValueError, TypeError, IndexError, AssertionError)
_SCRIPTED = "hooks are not supported on TorchScript modules; pass the eager model"


@dataclass(frozen=True)
class LayerCall:
    """What one forward pass showed about one call of a module.

    Attributes:
        name: the point's name: the module's qualified name for its first call, ``name#k`` for its k-th call.
        kind: the module's class name.
        order: position of this call's start among all calls (a parent starts before its children).
        calls: how many times the module was called in the pass (the same on every call of it).
        shape: shape of its (unwrapped) output tensor on the traced batch, or None if it returned no tensor.
        batch_dim: the output's batch dimension; None when it has none or it is ``ambiguous``.
        ambiguous: several output dimensions may be the batch dimension (see the module doc).
        module: the module's qualified name (``name`` without ``#k``).
        call: which call of the module this is (1 for the first).
        caller: ``name`` of the call that was running when this one started; None for calls made by the model's
            own forward.
        end: position, among all calls, of the moment this call returned (a parent ends after its children).
        takes: identity number of the first tensor among its inputs (None if no tensor): two calls share a
            number when they handled the very same tensor object.
        gives: identity number of its output tensor (same numbering).
    """

    name: str
    kind: str
    order: int
    calls: int
    shape: tuple[int, ...] | None
    _: KW_ONLY
    batch_dim: int | None = 0
    ambiguous: bool = False
    module: str = ""
    call: int = 1
    caller: str | None = None
    end: int = 0
    takes: int | None = None
    gives: int | None = None


def first_tensor(output: object) -> torch.Tensor | None:
    """The tensor a layer's output stands for: itself, or the first tensor found depth-first in a tuple,
    list or dict (dict order, so a Hugging Face ``ModelOutput`` gives its first field)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def split_point(name: str) -> tuple[str, int]:
    """``"layer#3"`` -> ``("layer", 3)``; a plain module name is its first call: ``("layer", 1)``."""
    base, sep, k = name.rpartition("#")
    if sep and k.isdigit() and int(k) >= 1:
        return base, int(k)
    return name, 1


def locate_batch_dim(shape: tuple[int, ...] | None, batch: int) -> tuple[int | None, bool]:
    """``(dim, ambiguous)`` of the batch dimension in ``shape`` judged from the batch size alone: the one
    dimension of size ``batch``; ``(None, False)`` when none has it, ``(None, True)`` when several do."""
    if not shape:
        return None, False
    dims = [d for d, size in enumerate(shape) if size == batch]
    if len(dims) == 1:
        return dims[0], False
    return None, len(dims) > 1


def check_eager(model: nn.Module) -> None:
    """Raise :class:`LayerError` (one line) for a TorchScript module."""
    if isinstance(model, torch.jit.ScriptModule):
        raise LayerError(_SCRIPTED)


def _forward(model: nn.Module, example: Batch) -> list[dict]:
    """Run the model on ``example`` with hooks on every submodule; one record per call, in start order."""
    records: list[dict] = []
    stack: list[int] = []
    serials: dict[int, int] = {}
    alive: list[torch.Tensor] = []  # keeps every recorded tensor alive so that ids are not reused in the pass
    counts: dict[str, int] = {}
    clock = [0]

    def serial(tensor: torch.Tensor | None) -> int | None:
        if tensor is None:
            return None
        if id(tensor) not in serials:
            serials[id(tensor)] = len(serials)
            alive.append(tensor)
        return serials[id(tensor)]

    def start(name: str, kind: str):
        def record(_module, args, kwargs):
            counts[name] = counts.get(name, 0) + 1
            taken = first_tensor(args)
            if taken is None:
                taken = first_tensor(kwargs)
            records.append({
                "module": name, "call": counts[name], "kind": kind, "order": clock[0],
                "caller": stack[-1] if stack else None, "takes": serial(taken), "shape": None, "gives": None,
                "end": None,
            })
            clock[0] += 1
            stack.append(len(records) - 1)

        return record

    def finish(name: str):
        def record(_module, _args, _kwargs, output):
            while stack and records[stack[-1]]["module"] != name:  # a call that raised and was caught inside
                stack.pop()
            if not stack:
                return
            entry = records[stack.pop()]
            tensor = first_tensor(output)
            entry["shape"] = tuple(tensor.shape) if tensor is not None else None
            entry["gives"] = serial(tensor)
            entry["end"] = clock[0]
            clock[0] += 1

        return record

    handles = []
    for name, module in _traced_modules(model):
        handles.append(module.register_forward_pre_hook(start(name, type(module).__name__), with_kwargs=True))
        handles.append(module.register_forward_hook(finish(name), with_kwargs=True))
    try:
        with evaluating(model):
            call_model(model, example)
    finally:
        for handle in handles:
            handle.remove()
    return records


def _traced_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` of every submodule the trace hooks, in ``named_modules`` order; a scripted part of an
    eager model (a ``torch.jit.ScriptModule``) is left out with its submodules."""
    skip: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(prefix + ".") for prefix in skip):
            continue
        if isinstance(module, torch.jit.ScriptModule):
            skip.append(name)
            continue
        yield name, module


def _key(entry: dict) -> str:
    return entry["module"] if entry["call"] == 1 else f"{entry['module']}#{entry['call']}"


def _other_batch(example: Batch, size: int) -> Batch | None:
    """``example`` with another batch size (1 sample, or 2 when it has 1)."""
    if size > 1:
        return slice_batch(example, 0, stop=1)
    if isinstance(example, torch.Tensor):
        return torch.cat([example, example]) if example.ndim else None
    return {k: torch.cat([v, v]) if isinstance(v, torch.Tensor) and v.ndim else v for k, v in example.items()}


@torch.no_grad()
def trace_calls(model: nn.Module, example: Batch) -> dict[str, LayerCall]:
    """Run ``model(example)`` once in eval mode with a hook on every submodule (module doc).

    Args:
        model: any eager module; every module's training mode is restored afterwards.
        example: an input batch (B, ...), or a dict of such tensors (keyword arguments), as
            :func:`layermod.extract.inputs.call_model` takes it (two samples are plenty).

    Returns:
        Every call by point name (``name``, ``name#2``, ...), in call order. Modules never called are absent.

    Raises:
        LayerError: a TorchScript module.
        ModelError: the model cannot run on ``example`` (e.g. data of the wrong shape for it).
    """
    check_eager(model)
    try:
        records = _forward(model, example)
    except FORWARD_ERRORS as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(
            f"the model fails on inputs of {describe_batch(example)} ({reason}){failure_hint(model, example)}"
        ) from None
    batch = batch_length(example)
    located = {_key(e): locate_batch_dim(e["shape"], batch) for e in records}
    unsure = {k for k, e in zip(located, records) if located[k][1] or (located[k][0] not in (0, None))}
    if unsure and (other := _other_batch(example, batch)) is not None:
        try:
            second = {_key(e): e["shape"] for e in _forward(model, other)}
        except Exception:  # noqa: BLE001 - optional pass: a model that takes one batch size only leaves them ambiguous
            second = {}
        for entry in records:
            key = _key(entry)
            if key in unsure and second.get(key) is not None and len(second[key]) == len(entry["shape"]):
                moved = [d for d, (a, b) in enumerate(zip(entry["shape"], second[key])) if a != b]
                if len(moved) == 1 and entry["shape"][moved[0]] == batch:
                    located[key] = (moved[0], False)
                elif not moved:
                    located[key] = (None, False)
    counts: dict[str, int] = {}
    for entry in records:
        counts[entry["module"]] = max(counts.get(entry["module"], 0), entry["call"])
    keys = [_key(e) for e in records]
    return {
        key: LayerCall(
            key, e["kind"], e["order"], counts[e["module"]], e["shape"], batch_dim=located[key][0],
            ambiguous=located[key][1], module=e["module"], call=e["call"],
            caller=keys[e["caller"]] if e["caller"] is not None else None,
            end=e["end"] if e["end"] is not None else e["order"], takes=e["takes"], gives=e["gives"],
        )
        for key, e in zip(keys, records)
    }
