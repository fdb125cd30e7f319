"""Remove whole layers from a network, and measure what that saves.

A **unit** is the piece of a network that a pruning plan may remove: it is replaced by ``nn.Identity``, so the
tensor that entered it flows on unchanged. Units are found generically, with no per-architecture code:

* **Candidates.** For every measurement point of :func:`layermod.layers.auto_layers` take the outermost
  module among the point and its ancestors that (a) is a direct child of an ``nn.Sequential`` or
  ``nn.ModuleList`` and (b) contains no other measurement point. A ResNet gives its blocks (``layer3.4``), a VGG
  or ``"smallcnn"`` its ``conv -> bn -> relu`` units (``features.7``, holding the point ``features.7.conv``). A
  point with no such module (a ResNet's stem conv, a child of the model itself) gives no unit.
* **Removable.** A candidate is removable only if, on the example batch, its input tensor (first positional
  argument) has the same shape as its output tensor (last call if it runs more than once). Downsampling blocks
  and convolutions that change the channel count are therefore kept: removing them would break the shapes.
* **Stages.** Within one container, consecutive candidates form a stage; any other child (a max-pool, a
  dropout) ends it, ``nn.Identity`` children (units already removed) are skipped. The stage key is
  ``"{container}#{run}"`` (``"<root>"`` when the model itself is the container), runs counted from 0 in forward
  order: VGG's ``features#0`` ... ``features#4`` between its max-pools, a ResNet's ``layer3#0`` (one stage per
  ``layerK``, its downsampling first block a kept member). A plan must leave at least one candidate per stage,
  so a stage whose only candidate is not removable is fine.

Decisions, on purpose:

* **Warm start.** :func:`apply_plan` deep-copies the model and swaps units for ``nn.Identity``; every surviving
  parameter and buffer is the original's, ready to fine-tune. A pruned registry model is saved like any other,
  with ``{"plan": {"remove": [...]}}`` in its checkpoint sidecar (:func:`layermod.checkpoint.load_checkpoint`
  rebuilds the architecture, applies the plan, then loads the weights).
* **Costs per sample.** :func:`model_cost` counts FLOPs with :class:`torch.utils.flop_counter.FlopCounterMode`,
  which counts only matmul- and convolution-like operators (``mm``, ``addmm``, ``bmm``, ``convolution``,
  attention, ...) at 2 FLOPs per multiply-add; batch norm, activations, pooling and additions count 0. MACs are
  FLOPs // 2. A ``Linear(10, 20)`` on one sample is 400 FLOPs, 200 MACs.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from layermod.models.units import remove_units, unknown_unit
from layermod.errors import PlanError
from layermod.extract.layers import auto_layers, first_tensor, trace_calls

__all__ = ["Unit", "apply_plan", "latency", "model_cost", "removable_units", "unit_costs"]

_CONTAINERS = (nn.Sequential, nn.ModuleList)
_ROOT = "<root>"


@dataclass(frozen=True)
class Unit:
    """One removable piece of a network.

    Attributes:
        name: module name, e.g. ``"layer3.4"`` (a residual block) or ``"features.7"`` (a VGG conv unit).
        layers: the auto measurement points inside or equal to it, e.g. ``("features.7.conv",)`` or
            ``("layer3.4",)``.
        stage: units with the same stage key form one stage; a plan must leave >= 1 unit per stage.
        params: number of parameters of the unit.
        kept: members of its stage that are never removed (e.g. the downsampling block of a ResNet stage);
            with one, every removable unit of the stage may go.
    """

    name: str
    layers: tuple[str, ...]
    stage: str
    params: int
    kept: int = 0


@dataclass(frozen=True)
class _Candidate:
    unit: Unit
    shape_in: tuple[int, ...] | None  # one sample's shape, batch dimension dropped
    shape_out: tuple[int, ...] | None

    @property
    def removable(self) -> bool:
        return self.shape_in is not None and self.shape_in == self.shape_out


def _parent_name(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _in_container(model: nn.Module, name: str) -> bool:
    return isinstance(model.get_submodule(_parent_name(name)), _CONTAINERS)


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


@torch.no_grad()
def _candidates(model: nn.Module, example: torch.Tensor) -> list[_Candidate]:
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

    shapes: dict[str, tuple[tuple[int, ...] | None, tuple[int, ...] | None]] = {}
    handles = []

    def hook(name: str):
        def record(_module, inputs, output):
            t_in, t_out = first_tensor(inputs), first_tensor(output)
            shapes[name] = (
                tuple(t_in.shape[1:]) if t_in is not None else None,
                tuple(t_out.shape[1:]) if t_out is not None else None,
            )

        return record

    for name in by_unit:
        handles.append(model.get_submodule(name).register_forward_hook(hook(name)))
    was_training = model.training
    try:
        model.eval()
        model(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()

    found = []
    for name in sorted(by_unit, key=lambda n: calls[n].order):
        params = sum(p.numel() for p in model.get_submodule(name).parameters())
        shape_in, shape_out = shapes.get(name, (None, None))
        found.append(_Candidate(Unit(name, tuple(by_unit[name]), stages[name], params), shape_in, shape_out))
    return found


def removable_units(model: nn.Module, example: torch.Tensor) -> list[Unit]:
    """The units a plan may remove (rules in the module doc), in forward order.

    Args:
        model: the network; its training mode is restored afterwards.
        example: an input batch (B, ...) on the model's device (two samples are plenty).
    """
    candidates = _candidates(model, example)
    kept = Counter(c.unit.stage for c in candidates if not c.removable)
    return [replace(c.unit, kept=kept[c.unit.stage]) for c in candidates if c.removable]


def _fmt(shape: tuple[int, ...] | None) -> str:
    return "x".join(str(s) for s in shape) if shape else "?"


def _why_kept(candidate: _Candidate) -> str:
    a, b = candidate.shape_in, candidate.shape_out
    if a is None or b is None:
        return "takes or returns no tensor"
    kind = ""
    if len(a) == len(b) and len(a) >= 2 and any(y < x for x, y in zip(a[1:], b[1:])):
        kind = " (downsampling)"
    elif len(a) == len(b) and a[1:] == b[1:]:
        kind = " (changes the channels)"
    return f"changes shape {_fmt(a)} -> {_fmt(b)}{kind}"


def apply_plan(model: nn.Module, remove: Sequence[str], example: torch.Tensor | None = None) -> nn.Module:
    """A copy of ``model`` with the named units replaced by ``nn.Identity``; all other weights are the original's.

    Args:
        model: the network (left unchanged).
        remove: unit names, e.g. ``["layer3.4", "layer3.5"]``; may be empty.
        example: an input batch (B, ...) to check the plan against the units found on it; without it only the
            names are checked (each must be a module of ``model``).

    Raises:
        PlanError: a name listed twice, an unknown name (with the closest unit names), a unit that is not
            removable (with its shape change) or a plan that removes every unit of a stage.
    """
    if example is not None:
        candidates = {c.unit.name: c for c in _candidates(model, example)}
        removable = [n for n, c in candidates.items() if c.removable]
        for name in map(str, remove):
            if name not in candidates:
                raise unknown_unit(name, removable)
            if not candidates[name].removable:
                raise PlanError(
                    f"unit {name!r} cannot be removed: it {_why_kept(candidates[name])}; remove only units that "
                    "keep their input's shape (see removable_units)"
                )
        for stage in dict.fromkeys(c.unit.stage for c in candidates.values()):
            members = [n for n, c in candidates.items() if c.unit.stage == stage]
            if all(n in remove for n in members):
                raise PlanError(
                    f"pruning plan removes every unit of stage {stage} ({', '.join(members)}); keep at least one"
                )
    return remove_units(model, remove)


@torch.no_grad()
def model_cost(model: nn.Module, example: torch.Tensor) -> dict:
    """Parameters and compute of one forward pass for ONE sample.

    Args:
        model: the network; run in eval mode, its training mode restored afterwards.
        example: an input batch (B, ...); only its first sample is used.

    Returns:
        ``{"params": int, "macs": int, "flops": int}``: ``params`` counts every parameter (units replaced by
        ``nn.Identity`` have none); ``flops`` are torch's FlopCounterMode count (matmul/conv-like operators only,
        2 per multiply-add); ``macs`` = ``flops // 2`` multiply-accumulates.
    """
    params = sum(p.numel() for p in model.parameters())
    was_training = model.training
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with counter:
            model(example[:1])
    finally:
        model.train(was_training)
    flops = int(counter.get_total_flops())
    return {"params": int(params), "macs": flops // 2, "flops": flops}


@torch.no_grad()
def latency(model: nn.Module, batch: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall-clock seconds of one forward pass of ``batch`` (B, ...), eval mode, no gradients.

    ``warmup`` untimed passes come first; on CUDA each pass is synchronised. The training mode is restored.
    """
    cuda = batch.device.type == "cuda"
    was_training = model.training
    times = []
    try:
        model.eval()
        for i in range(warmup + max(1, repeats)):
            start = time.perf_counter()
            model(batch)
            if cuda:
                torch.cuda.synchronize(batch.device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return float(statistics.median(times))


def unit_costs(model: nn.Module, units: Sequence[Unit], example: torch.Tensor) -> dict[str, dict[str, int]]:
    """What removing each unit on its own saves: ``{unit name: {"params": int, "flops": int}}``.

    ``flops`` is :func:`model_cost`'s count for one sample of ``example`` (B, ...) of the whole model minus that
    of the model without the unit; ``params`` the unit's parameters. Both add up over a plan when units do not
    share work, which holds for residual blocks and for the shape-keeping units :func:`removable_units` finds.
    """
    total = model_cost(model, example)["flops"]
    saved = {}
    for unit in units:
        without = model_cost(remove_units(model, [unit.name]), example)["flops"]
        saved[unit.name] = {"params": unit.params, "flops": total - without}
    return saved
