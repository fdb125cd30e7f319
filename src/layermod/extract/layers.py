"""Find a model's layers and choose which ones to measure.

Discover, then select. :func:`trace_calls` runs one small forward pass with a hook on every submodule and
records the order in which they are called and the shape of what they return; :func:`select_layers` turns a
user's choice into module names.

Selection grammar (one item or a list of items, results concatenated without repeats):

* ``"auto"``: the points of :func:`auto_layers` (below), in forward order;
* an exact module name as in ``model.named_modules()`` (e.g. ``"layer1.0"``);
* a glob pattern over module names (``"features.*"``, ``"blocks.?"``), matches in forward order;
* an int: index into the ``"auto"`` points, negatives count from the end (``-1`` is the last point).

A string is read like the CLI's ``--layers`` (:func:`parse_layers`): comma-separated items (commas inside a
glob's ``[...]`` do not split), and an item that is a whole number (``"0"``, ``"-1"``) is an index, so
``"features.0,features.3"`` is two layers and ``"0,-1"`` the first and last auto points. Inside a list, a
string is one name or pattern and an int an index, so ``["0"]`` names the module ``0`` of an ``nn.Sequential``.

``"auto"`` rules, first that applies:

1. **Residual networks**: the stem plus every residual block. A residual block is a module whose own
   ``forward`` (traced with :mod:`torch.fx`, children kept opaque) adds two tensors that both depend on its
   input; of nested blocks the innermost win. The stem is the last convolution or linear layer called before
   the first block. ResNet18 gives 9 points, ResNet152 51, a ViT its patch embedding and every block.
2. **Convolutional stacks** (two or more convolutions): every convolution's output (VGG: 13 for VGG16).
3. **Stacks of blocks**: the children of the longest ``nn.Sequential``/``nn.ModuleList`` holding two or more
   non-leaf modules of one class (e.g. transformer layers whose code torch.fx cannot trace).
4. **MLPs** (two or more linear layers): every ``nn.Linear``.

Anything else raises :class:`LayerError` asking for names. A module that is called more than once in one
forward pass keeps its last call's output. A forward pass that fails inside the model (the exceptions in
``FORWARD_ERRORS``) is a :class:`ModelError` saying on which inputs it failed.
"""

from __future__ import annotations

import difflib
import fnmatch
import operator
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from layermod.errors import LayerError, ModelError

__all__ = [
    "FORWARD_ERRORS",
    "LayerCall",
    "LayerSpec",
    "auto_layers",
    "first_tensor",
    "layer_items",
    "parse_layers",
    "residual_blocks",
    "select_layers",
    "trace_calls",
]

LayerSpec = str | int | Sequence[str | int]

# what a model's forward raises on inputs it cannot take (shape, dtype or device mismatches, asserts)
FORWARD_ERRORS = (RuntimeError, ValueError, TypeError, IndexError, AssertionError)
_ITEM_SEPARATOR = re.compile(r",(?![^\[]*\])")  # a comma outside [...]
_INDEX = re.compile(r"[+-]?\d+")

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}


@dataclass(frozen=True)
class LayerCall:
    """What one forward pass showed about a module.

    Attributes:
        name: qualified module name.
        kind: the module's class name.
        order: position of its first call among all module calls (a parent comes before its children).
        calls: how many times it was called.
        shape: shape of its (unwrapped) output tensor on the traced batch, or None if it returned no tensor.
    """

    name: str
    kind: str
    order: int
    calls: int
    shape: tuple[int, ...] | None


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


@torch.no_grad()
def trace_calls(model: nn.Module, example: torch.Tensor) -> dict[str, LayerCall]:
    """Run ``model(example)`` once in eval mode with a hook on every submodule.

    Args:
        model: any module; its training mode is restored afterwards.
        example: an input batch (B, ...) on the model's device (two samples are plenty).

    Returns:
        Called modules by name, in call order. Modules that are never called are absent.

    Raises:
        ModelError: the model cannot run on ``example`` (e.g. data of the wrong shape for it).
    """
    seen: dict[str, dict] = {}
    handles = []

    def start(name: str, module: nn.Module):
        def record(_module, _inputs):
            entry = seen.setdefault(name, {"order": len(seen), "calls": 0, "kind": type(module).__name__})
            entry["calls"] += 1

        return record

    def finish(name: str):
        def record(_module, _inputs, output):
            tensor = first_tensor(output)
            seen[name]["shape"] = tuple(tensor.shape) if tensor is not None else None

        return record

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_pre_hook(start(name, module)))
            handles.append(module.register_forward_hook(finish(name)))
    was_training = model.training
    try:
        model.eval()
        model(example)
    except FORWARD_ERRORS as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(
            f"the model fails on inputs of shape {tuple(example.shape)} ({reason}); check that the data fit the model"
        ) from None
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return {name: LayerCall(name, e["kind"], e["order"], e["calls"], e.get("shape")) for name, e in seen.items()}


class _ShallowTracer(torch.fx.Tracer):
    """Traces only a module's own forward: every child stays one opaque call."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def _has_residual_add(module: nn.Module) -> bool:
    """True if ``module.forward`` adds two tensors that both depend on its first input."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = _ShallowTracer().trace(module)
    except Exception:  # untraceable code (data-dependent control flow, ...) is simply not recognised
        return False
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    if not placeholders:
        return False
    depends = {placeholders[0]}
    for node in graph.nodes:
        if any(arg in depends for arg in node.all_input_nodes):
            depends.add(node)
        is_add = (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
            node.op == "call_method" and node.target in _ADD_METHODS
        )
        if is_add and len(node.args) >= 2 and all(arg in depends for arg in node.args[:2]):
            return True
    return False


def residual_blocks(model: nn.Module) -> list[str]:
    """Names of the innermost modules whose forward has a residual addition (see module doc)."""
    found = [name for name, m in model.named_modules() if name and any(True for _ in m.children()) and _has_residual_add(m)]
    return [name for name in found if not any(other.startswith(name + ".") for other in found)]


def _leaves_of_type(model: nn.Module, kinds: tuple[type, ...], calls: dict[str, LayerCall]) -> list[str]:
    return [name for name, m in model.named_modules() if name in calls and isinstance(m, kinds)]


def _longest_stack(model: nn.Module, calls: dict[str, LayerCall]) -> list[str]:
    best: list[str] = []
    for name, container in model.named_modules():
        if not isinstance(container, (nn.Sequential, nn.ModuleList)):
            continue
        children = list(container.named_children())
        kinds = {type(child) for _, child in children}
        if len(children) >= 2 and len(kinds) == 1 and any(True for _ in children[0][1].children()):
            members = [f"{name}.{child}" if name else child for child, _ in children]
            members = [m for m in members if m in calls]
            if len(members) > len(best):
                best = members
    return best


def auto_layers(model: nn.Module, calls: dict[str, LayerCall]) -> list[str]:
    """The default measurement points of ``model`` in forward order (rules in the module doc).

    Args:
        model: the network.
        calls: :func:`trace_calls` of the same model.
    """
    by_order = lambda names: sorted(names, key=lambda n: calls[n].order)  # noqa: E731
    blocks = by_order([b for b in residual_blocks(model) if b in calls])
    if blocks:
        start = calls[blocks[0]].order
        stem = [n for n in _leaves_of_type(model, _CONV + (nn.Linear,), calls) if calls[n].order < start]
        return by_order(stem)[-1:] + blocks
    convs = _leaves_of_type(model, _CONV, calls)
    if len(convs) >= 2:
        return by_order(convs)
    stack = _longest_stack(model, calls)
    if stack:
        return by_order(stack)
    linears = _leaves_of_type(model, (nn.Linear,), calls)
    if len(linears) >= 2:
        return by_order(linears)
    raise LayerError(
        "cannot choose layers automatically for this model (no residual blocks, convolutions, block stacks or "
        "linear layers found); pass layer names (see `layermod layers`)"
    )


def _unknown(name: str, names: list[str]) -> LayerError:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
    hint = f"; closest: {', '.join(close)}" if close else ""
    return LayerError(f"no layer named {name!r}{hint} (run `layermod layers` to list them all)")


def parse_layers(text: str) -> list[str | int]:
    """A layer choice written as text (the CLI's ``--layers``): comma-separated items, whole numbers as ints.

    ``"features.0, features.3"`` -> ``["features.0", "features.3"]``; ``"0,-1"`` -> ``[0, -1]``;
    ``"blocks.[0,2]"`` stays one glob. Empty items are dropped.
    """
    items = [item.strip() for item in _ITEM_SEPARATOR.split(text)]
    return [int(item) if _INDEX.fullmatch(item) else item for item in items if item]


def layer_items(spec: LayerSpec) -> list[str | int]:
    """``spec`` as a flat list of items: a string through :func:`parse_layers`, an int (numpy's too) as a
    one-item list, the items of a list or other iterable as they are (numpy ints as ints).

    Raises:
        LayerError: anything else (e.g. a float).
    """
    if isinstance(spec, str):
        return parse_layers(spec)
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        return [int(spec)]
    try:
        items = list(spec)
    except TypeError:
        raise LayerError(f"cannot read layer choice {spec!r}; use names, glob patterns, ints or 'auto'") from None
    return [int(item) if isinstance(item, np.integer) else item for item in items]


def select_layers(model: nn.Module, spec: LayerSpec, calls: dict[str, LayerCall]) -> list[str]:
    """Resolve a layer choice (grammar in the module doc) into module names.

    Args:
        model: the network.
        spec: ``"auto"``, a name, a glob, an int index into the auto points, a comma-separated string of
            those, or a list (see the module doc).
        calls: :func:`trace_calls` of the same model, used for order and to check every layer runs.

    Raises:
        LayerError: unknown name (with the closest real names), a pattern matching nothing, an index out of
            range, or a layer that is never called in forward.
    """
    items = layer_items(spec)
    if not items:
        raise LayerError("no layers selected; pass 'auto', names, patterns or indices")
    names = [name for name, _ in model.named_modules() if name]
    auto: list[str] | None = None
    chosen: list[str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise LayerError(f"cannot read layer choice {item!r}; use names, glob patterns, ints or 'auto'")
        if isinstance(item, int) or item == "auto":
            if auto is None:
                auto = auto_layers(model, calls)
            if item == "auto":
                chosen += auto
                continue
            if not -len(auto) <= item < len(auto):
                raise LayerError(f"layer index {item} is out of range for {len(auto)} auto layers")
            chosen.append(auto[item])
        elif item in names:
            chosen.append(item)
        elif any(c in item for c in "*?["):
            matches = [n for n in names if fnmatch.fnmatchcase(n, item)]
            if not matches:
                raise LayerError(f"layer pattern {item!r} matches no layer (run `layermod layers` to list them)")
            chosen += sorted(matches, key=lambda n: calls[n].order if n in calls else len(calls))
        else:
            raise _unknown(item, names)
    chosen = list(dict.fromkeys(chosen))
    for name in chosen:
        if name not in calls:
            raise LayerError(f"layer {name!r} is never called in forward, so it has no output; choose another layer")
        if calls[name].shape is None:
            raise LayerError(f"layer {name!r} returns no tensor; choose another layer")
    return chosen
