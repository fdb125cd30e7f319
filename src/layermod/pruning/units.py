"""Remove whole layers from a network, and measure what that saves.

The decisions behind it: docs/design.md, section layermod.pruning.units.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import KW_ONLY, dataclass, replace

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from layermod.errors import PlanError
from layermod.extract.inputs import Batch, call_model, model_device, slice_batch
from layermod.extract.layers import auto_layers, first_tensor, trace_calls
from layermod.extract.modes import evaluating
from layermod.models.units import PassThrough, remove_units, unknown_unit

__all__ = ["Unit", "apply_plan", "kept_units", "latency", "model_cost", "removable_units", "unit_costs"]

_CONTAINERS = (nn.Sequential, nn.ModuleList)
_ROOT = "<root>"
KEEP_PER_STAGE = 1
"""The default stage rule: every stage keeps at least one of its candidates."""


@dataclass(frozen=True)
class Unit:
    """One removable piece of a network.

    Attributes:
        name: module name, e.g. ``"layer3.4"`` (a residual block) or ``"features.7"`` (a VGG conv unit).
        layers: the auto measurement points inside or equal to it, e.g. ``("features.7.conv",)`` or
            ``("layer3.4",)``.
        stage: units with the same stage key form one stage; a plan must leave ``keep_per_stage`` of its members.
        params: number of parameters of the unit.
        kept: members of its stage that are never removed (e.g. the downsampling block of a ResNet stage).
        outputs: None when the unit returns a tensor; ``n`` when it returns a tuple of ``n`` led by one.
    """

    name: str
    layers: tuple[str, ...]
    stage: str
    params: int
    _: KW_ONLY
    kept: int = 0
    outputs: int | None = None


@dataclass(frozen=True)
class _Candidate:
    unit: Unit
    why_kept: str | None  # None: removable; else what it does that keeps it ("changes shape 4x8 -> 8x4", ...)

    @property
    def removable(self) -> bool:
        return self.why_kept is None


def _parent_name(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _in_container(model: nn.Module, name: str) -> bool:
    """``name`` is a child of an ``nn.Sequential``/``nn.ModuleList``, or of a stage: a module whose children are
    two or more blocks (modules with submodules) of one class (a RegNet stage, a features_only wrapper's)."""
    parent = model.get_submodule(_parent_name(name))
    if isinstance(parent, _CONTAINERS):
        return True
    children = list(parent.children())
    return (len(children) >= 2 and len({type(child) for child in children}) == 1
            and all(any(True for _ in child.children()) for child in children))


def _candidate_name(model: nn.Module, point: str, points: list[str]) -> str | None:
    """Outermost of ``point`` and its ancestors that is a container's child and holds no other point."""
    found = None
    name = point
    while name:
        if any(other != point and (other == name or other.startswith(name + ".")) for other in points):
            break
        if _in_container(model, name):
            found = name
        name = _parent_name(name)
    return found


def _shapes(output: object) -> list:
    """The structure of ``output`` with every tensor replaced by its shape (tuples, lists and dicts kept,
    e.g. a transformers ``ModelOutput``); other values as None."""
    if isinstance(output, torch.Tensor):
        return [tuple(output.shape)]
    if isinstance(output, dict):
        return [(key, _shapes(value)) for key, value in output.items()]
    if isinstance(output, (tuple, list)):
        return [_shapes(item) for item in output]
    return [None]


def _outputs(output: object) -> int | None | str:
    """What a unit returned, as :class:`PassThrough` ``outputs``: None for a tensor, ``n`` for a tuple of ``n``
    led by a tensor; a string saying why neither."""
    if isinstance(output, torch.Tensor):
        return None
    if type(output) is tuple and output and isinstance(output[0], torch.Tensor):
        return len(output)
    return f"returns {type(output).__name__}, not a tensor or a tuple led by one"


def _unit_input(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The tensor a :class:`PassThrough` would hand on: the first positional argument, else ``hidden_states``."""
    return first_tensor(args[0] if args else kwargs.get("hidden_states"))


@contextlib.contextmanager
def _swapped(model: nn.Module, name: str, outputs: int | None) -> Iterator[None]:
    """Run the block with the module ``name`` of ``model`` (in place) replaced by a :class:`PassThrough`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    original = getattr(parent, child)
    setattr(parent, child, PassThrough(outputs=outputs))
    try:
        yield
    finally:
        setattr(parent, child, original)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__


def _shape_change(shape_in: tuple[int, ...], shape_out: tuple[int, ...]) -> str:
    a, b = shape_in, shape_out
    kind = ""
    if len(a) == len(b) and len(a) >= 2 and any(y < x for x, y in zip(a[1:], b[1:])):
        kind = " (downsampling)"
    elif len(a) == len(b) and a[1:] == b[1:]:
        kind = " (changes the channels)"
    return f"changes shape {_fmt(a)} -> {_fmt(b)}{kind}"


@torch.no_grad()
def _candidates(model: nn.Module, example: Batch) -> list[_Candidate]:
    """Every candidate unit of ``model`` (see module doc), removable or not, in forward order."""
    calls = trace_calls(model, example)
    # a module called several times per pass (a shared layer) is one candidate: its later calls add nothing
    points = list(dict.fromkeys(calls[p].module for p in auto_layers(model, calls)))
    by_unit: dict[str, list[str]] = {}
    for point in points:
        name = _candidate_name(model, point, points)
        if name is not None:
            by_unit.setdefault(name, []).append(point)

    stages: dict[str, str] = {}
    containers = dict.fromkeys(_parent_name(name) for name in by_unit)
    for container in containers:
        run, in_run = 0, False
        for child, module in model.get_submodule(container).named_children():
            full = f"{container}.{child}" if container else child
            if full in by_unit:
                stages[full] = f"{container or _ROOT}#{run}"
                in_run = True
            elif not isinstance(module, nn.Identity) and in_run:
                run, in_run = run + 1, False

    seen: dict[str, tuple[torch.Tensor | None, object]] = {}

    def hook(name: str):
        def record(_module, args, kwargs, output):
            seen[name] = (_unit_input(args, kwargs), output)

        return record

    handles = [model.get_submodule(name).register_forward_hook(hook(name), with_kwargs=True) for name in by_unit]
    try:
        with evaluating(model):
            reference = _shapes(call_model(model, example))
    finally:
        for handle in handles:
            handle.remove()

    found = []
    for name in sorted(by_unit, key=lambda n: calls[n].order):
        taken, output = seen.get(name, (None, None))
        given = first_tensor(output)
        outputs = _outputs(output)
        if taken is None or given is None:
            why = "takes or returns no tensor"
        elif taken.shape != given.shape:
            why = _shape_change(tuple(taken.shape[1:]), tuple(given.shape[1:]))
        elif isinstance(outputs, str):
            why, outputs = outputs, None
        else:
            why = _trial(model, name, outputs, example, reference)
        params = sum(p.numel() for p in model.get_submodule(name).parameters())
        unit = Unit(name, tuple(by_unit[name]), stages[name], params, outputs=None if why else outputs)
        found.append(_Candidate(unit, why))
    return found


def _trial(model: nn.Module, name: str, outputs: int | None, example: Batch, reference: list) -> str | None:
    """None when ``model`` without the unit ``name`` runs on ``example`` and returns ``reference``'s shapes; else
    why not."""
    try:
        with _swapped(model, name, outputs), evaluating(model):
            pruned = _shapes(call_model(model, example))
    except Exception as err:  # noqa: BLE001 - whatever the model raises without the unit, it cannot lose it
        return f"breaks the model when removed ({_first_line(err)})"
    if pruned != reference:
        return "changes the shape of the model's output when removed"
    return None


def _check_keep(keep_per_stage: object) -> int:
    if not isinstance(keep_per_stage, int) or isinstance(keep_per_stage, bool) or keep_per_stage < 0:
        raise PlanError(f"keep_per_stage={keep_per_stage!r} must be an integer >= 0")
    return keep_per_stage


def removable_units(model: nn.Module, example: Batch, *, keep_per_stage: int = KEEP_PER_STAGE) -> list[Unit]:
    """The units a plan may remove (rules in the module doc), in forward order.

    Args:
        model: the network; every module's training mode is restored afterwards.
        example: an input batch (B, ...), or a dict of such tensors (``input_ids``, ``attention_mask``,
            ``pixel_values``, ...), as :func:`layermod.extract.inputs.call_model` takes it (two samples are
            plenty).
        keep_per_stage: candidates every stage keeps; a unit is offered only if its stage has more members.

    Returns:
        The :class:`Unit` list.

    Raises:
        ModelError: the model cannot run on ``example``.
        PlanError: ``keep_per_stage`` is not an integer >= 0.
    """
    keep = _check_keep(keep_per_stage)
    candidates = _candidates(model, example)
    size = Counter(c.unit.stage for c in candidates)
    kept = Counter(c.unit.stage for c in candidates if not c.removable)
    return [replace(c.unit, kept=kept[c.unit.stage]) for c in candidates
            if c.removable and size[c.unit.stage] - 1 >= keep]


def kept_units(model: nn.Module, example: Batch, *, keep_per_stage: int = KEEP_PER_STAGE) -> dict[str, str]:
    """Why each candidate :func:`removable_units` does not offer is kept, in forward order.

    Args:
        model: the network.
        example: an input batch (B, ...) or dict batch, as :func:`removable_units` takes it.
        keep_per_stage: candidates every stage keeps.

    Returns:
        ``{unit name: why it is kept}``, e.g. ``{"layer2.0": "changes shape 16x32x32 -> 32x16x16
            (downsampling)"}``; empty when it offers them all or the model has no candidate (no measured block is a
            child of a container or stage).

    Raises:
        ModelError: the model cannot run on ``example``.
        PlanError: ``keep_per_stage`` is not an integer >= 0.
    """
    keep = _check_keep(keep_per_stage)
    candidates = _candidates(model, example)
    size = Counter(c.unit.stage for c in candidates)
    return {c.unit.name: c.why_kept or f"is one of {size[c.unit.stage]} in stage {c.unit.stage}, which keeps {keep}"
            for c in candidates if not c.removable or size[c.unit.stage] - 1 < keep}


def _fmt(shape: tuple[int, ...] | None) -> str:
    return "x".join(str(s) for s in shape) if shape else "?"


def apply_plan(model: nn.Module, remove: Sequence[str], *, example: Batch | None = None,
               keep_per_stage: int = KEEP_PER_STAGE) -> nn.Module:
    """A copy of ``model`` with the named units replaced by stand-ins; all other weights are the original's.

    Args:
        model: the network (left unchanged).
        remove: unit names, e.g. ``["layer3.4", "layer3.5"]``; may be empty.
        example: an input batch (B, ...) or dict batch (as :func:`removable_units` takes it) to check the plan
            against the units found on it, and to run the pruned model on once; without it only the names are
            checked (each must be a module of ``model``) and every removed unit is taken to return a tensor.
        keep_per_stage: candidates every stage must keep (checked with ``example``).

    Returns:
        The pruned copy.

    Raises:
        PlanError: a name listed twice, an unknown name (with the closest unit names), a unit that is not
            removable (with what keeps it), a plan that leaves a stage fewer than ``keep_per_stage`` units, or a
            pruned model that fails on ``example``.
    """
    keep = _check_keep(keep_per_stage)
    if example is None:
        return remove_units(model, remove)
    candidates = {c.unit.name: c for c in _candidates(model, example)}
    removable = [n for n, c in candidates.items() if c.removable]
    names = [str(name) for name in remove]
    for name in names:
        if name not in candidates:
            raise unknown_unit(name, removable)
        if not candidates[name].removable:
            raise PlanError(f"unit {name!r} cannot be removed: it {candidates[name].why_kept}; remove only the "
                            "units removable_units offers")
    for stage in dict.fromkeys(c.unit.stage for c in candidates.values()):
        members = [n for n, c in candidates.items() if c.unit.stage == stage]
        left = sum(n not in names for n in members)
        if left < keep:
            what = "removes every unit" if left == 0 else f"leaves {left} unit{'s' * (left != 1)}"
            raise PlanError(f"pruning plan {what} of stage {stage} ({', '.join(members)}); keep at least "
                            f"{'one' if keep == 1 else keep} (keep_per_stage={keep})")
    outputs = {n: candidates[n].unit.outputs for n in names if candidates[n].unit.outputs is not None}
    pruned = remove_units(model, names, outputs=outputs)
    try:
        with torch.no_grad(), evaluating(pruned):
            call_model(pruned, example)
    except Exception as err:  # noqa: BLE001 - whatever the pruned model raises, the plan is what broke it
        raise PlanError(f"the model pruned by this plan fails on the example ({_first_line(err)}); remove fewer "
                        "units") from None
    return pruned


@torch.no_grad()
def model_cost(model: nn.Module, example: Batch) -> dict:
    """Parameters and compute of one forward pass for ONE sample.

    Args:
        model: the network; run in eval mode, every module's training mode restored afterwards.
        example: an input batch (B, ...) or dict batch; only its first sample is used.

    Returns:
        ``{"params": int, "macs": int, "flops": int}``: ``params`` counts every parameter (removed units have
            none); ``flops`` are torch's FlopCounterMode count (matmul/conv-like operators only, 2 per multiply-add);
            ``macs`` = ``flops // 2`` multiply-accumulates.
    """
    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with evaluating(model), counter:
        call_model(model, slice_batch(example, 0, stop=1))
    flops = int(counter.get_total_flops())
    return {"params": int(params), "macs": flops // 2, "flops": flops}


@torch.no_grad()
def latency(model: nn.Module, batch: Batch, *, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall-clock seconds of one forward pass of ``batch`` (B, ...) or a dict batch, eval mode, no
    gradients.

    ``warmup`` untimed passes come first; on CUDA each pass is synchronised. Every module's training mode is
    restored.
    """
    device = model_device(model)
    times = []
    with evaluating(model):
        for i in range(warmup + max(1, repeats)):
            start = time.perf_counter()
            call_model(model, batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return float(statistics.median(times))


def unit_costs(model: nn.Module, units: Sequence[Unit], example: Batch) -> dict[str, dict[str, int]]:
    """What removing each unit on its own saves: ``{unit name: {"params": int, "flops": int}}``.

    ``flops`` is :func:`model_cost`'s count for one sample of ``example`` (B, ...) of the whole model minus that
    of the model without the unit; ``params`` the unit's parameters. Both add up over a plan when units do not
    share work, which holds for residual blocks and for the shape-keeping units :func:`removable_units` finds.
    """
    total = model_cost(model, example)["flops"]
    saved = {}
    for unit in units:
        outputs = {} if unit.outputs is None else {unit.name: unit.outputs}
        without = model_cost(remove_units(model, [unit.name], outputs=outputs), example)["flops"]
        saved[unit.name] = {"params": unit.params, "flops": total - without}
    return saved
