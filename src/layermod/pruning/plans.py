"""Pruning plans: the order in which a method would remove a model's units, how many it takes, and the plan file.

The decisions behind it: docs/design.md, section layermod.pruning.plans.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

import numpy as np

from layermod.analysis.redundancy import Verdict, verdict_from_dict, verdict_to_dict
from layermod.coerce import seed_sequence
from layermod.errors import PlanError
from layermod.pruning.units import Unit
from layermod.io.files import ensure_writable_dir, read_json_file, write_json
from layermod.io.rundir import PLAN_JSON
from layermod.io.validate import MAX_ITEMS, mapping, names, number, required, text
from layermod.measure.config import DrawConfig, GraphConfig
from layermod.pruning.choices import METHODS

__all__ = ["METHODS", "SCORED", "Plan", "budget_for_cost", "budget_for_params", "method_order", "rank_by_increment",
           "select_units"]


SCORED = ("modularity-phase", "modularity-ablation", "cosine", "angular", "cka", "reinit", "ablation-accuracy")
"""The methods whose order comes from a score measured on the trained model (:mod:`layermod.pruning.scores`)."""


def _units_by_name(units: Iterable) -> dict:
    by_name = {}
    for unit in units:
        if unit.name in by_name:
            raise PlanError(f"unit {unit.name!r} is listed twice; give every removable unit once")
        by_name[unit.name] = unit
    if not by_name:
        raise PlanError("there are no removable units; the model has no layers that can be pruned")
    return by_name


def rank_by_increment(verdicts: Sequence[Verdict], units: Iterable) -> list[str]:
    """Unit names, most redundant first.

    A unit's score is the smallest finite increment among its layers that the curve measured; ties keep the
    units' order. Units with no finite increment (only the first layer) follow the scored ones, and units none
    of whose layers are in the curve come last, since there is no evidence that they are redundant.
    """
    by_name = _units_by_name(units)
    increments = {v.layer: v.increment for v in verdicts}
    if not any(layer in increments for unit in by_name.values() for layer in unit.layers):
        example = next(iter(by_name.values()))
        raise PlanError(f"the curve's layers do not match the model: no layer of its {len(by_name)} units "
                        f"(e.g. {example.layers[0] if example.layers else example.name!r}) is in the curve; "
                        "measure the curve on the model being pruned")

    def key(unit) -> tuple[bool, float]:
        measured = [increments[layer] for layer in unit.layers if layer in increments]
        finite = [value for value in measured if math.isfinite(value)]
        return (not measured, min(finite) if finite else math.inf)

    return [unit.name for unit in sorted(by_name.values(), key=key)]


def method_order(
    method: str,
    units: Sequence[Unit],
    *,
    verdicts: Sequence[Verdict] | None = None,
    scores: Mapping[str, Mapping] | None = None,
    seed: int = 0,
) -> list[str]:
    """Unit names in the order ``method`` would remove them (see the module doc).

    Args:
        method: a name of :data:`METHODS` other than ``none``.
        units: the model's removable units.
        verdicts: the curve's verdicts, for ``modularity`` and ``steepest``.
        scores: for a method of :data:`SCORED`, ``scores[method]``: unit name -> block influence (``cosine``),
            CKA (``cka``), (accuracy drop, loss rise) (``reinit``, ``ablation-accuracy``), fall of Q
            (``modularity-ablation``) or (before the rise, increment) (``modularity-phase``); run of unit names ->
            angular distance (``angular``); or, for any of them, the unit names in order (iterative).
        seed: the shuffle of ``random``.
    """
    if method in SCORED and (scores is None or method not in scores):
        raise PlanError(f"method {method!r} needs its scores measured on the model (layermod.pruning.scores)")
    score = scores[method] if method in SCORED else {}
    names = [unit.name for unit in units]
    if isinstance(score, (list, tuple)):  # an order measured iteratively
        ordered = [name for name in score if name in names]
        return ordered + [name for name in names if name not in ordered]
    if method == "angular":
        runs = sorted(score, key=lambda run: score[run])  # stable: ties keep forward order
        ordered = list(dict.fromkeys(name for run in runs for name in run))
        return ordered + [name for name in names if name not in ordered]
    if method == "modularity":
        return rank_by_increment(verdicts, units)
    if method == "steepest":
        return rank_by_increment(verdicts, units)[::-1]
    if method in ("cosine", "reinit", "ablation-accuracy", "modularity-ablation", "modularity-phase"):
        return sorted(names, key=lambda name: score[name])
    if method == "cka":  # undefined CKA (a constant input or output) last: no evidence either way
        return sorted(names, key=lambda name: -score[name] if math.isfinite(score[name]) else math.inf)
    if method == "random":
        return [names[i] for i in np.random.default_rng(seed_sequence(seed, PlanError)).permutation(len(names))]
    if method == "first":
        return names
    if method == "last":
        return names[::-1]
    raise PlanError(f"unknown pruning method {method!r}; use {', '.join(METHODS)}")


def _stage_sizes(by_name: dict) -> Counter:
    """Members per stage: its removable units plus the ones that always stay (``unit.kept``)."""
    sizes = Counter(unit.stage for unit in by_name.values())
    kept = {unit.stage: getattr(unit, "kept", 0) for unit in by_name.values()}
    return Counter({stage: n + kept[stage] for stage, n in sizes.items()})


def _removable(by_name: dict) -> int:
    return sum(size - 1 for size in _stage_sizes(by_name).values())


def _walk(order: Sequence[str], by_name: dict) -> Iterator:
    """Units of ``order`` that can be taken in turn while every stage keeps at least one unit."""
    unknown = [name for name in order if name not in by_name]
    if unknown:
        raise PlanError(f"unknown unit {unknown[0]!r} in the order; choose from the model's units, "
                        f"e.g. {next(iter(by_name))!r}")
    left = _stage_sizes(by_name)
    taken = set()
    for name in order:
        unit = by_name[name]
        if name not in taken and left[unit.stage] > 1:
            left[unit.stage] -= 1
            taken.add(name)
            yield unit


def select_units(order: Sequence[str], units: Iterable, budget: int) -> list[str]:
    """The first ``budget`` units of ``order`` that can be removed while every stage keeps a unit.

    Units whose stage is already down to one unit are skipped, not counted.
    """
    by_name = _units_by_name(units)
    removable = _removable(by_name)
    if budget < 1 or budget > removable:
        raise PlanError(f"budget {budget} is out of range: between 1 and {removable} units can be removed "
                        "while every stage keeps at least one")
    chosen = [unit.name for _, unit in zip(range(budget), _walk(order, by_name))]
    if len(chosen) < budget:
        raise PlanError(f"the order allows only {len(chosen)} removals, fewer than the budget {budget}; "
                        "list more units in the order or lower the budget")
    return chosen


def budget_for_params(order: Sequence[str], units: Iterable, fraction: float, total_params: int) -> int:
    """Smallest number of units, taken as :func:`select_units` takes them, whose params reach
    ``fraction * total_params`` (the share of the whole model's parameters to remove)."""
    return budget_for_cost(order, units, fraction, total_params, lambda unit: unit.params, what="parameters")


def budget_for_cost(order: Sequence[str], units: Iterable, fraction: float, total: int,
                    cost: Callable[[Unit], int], *, what: str = "cost") -> int:
    """Smallest number of units, taken in ``order`` as :func:`select_units` takes them, whose summed ``cost``
    (e.g. parameters, or the FLOPs of :func:`layermod.pruning.units.unit_costs`) reaches ``fraction * total``
    (the share of the whole model's ``what`` to remove)."""
    if not 0 < fraction <= 1:
        raise PlanError(f"fraction must be in (0, 1], got {fraction}")
    if total < 1:
        raise PlanError(f"the model's total {what} must be positive, got {total}")
    target = fraction * total
    freed = 0
    for count, unit in enumerate(_walk(order, _units_by_name(units)), start=1):
        freed += cost(unit)
        if freed >= target:
            return count
    raise PlanError(f"removing every removable unit frees {freed} of {total} {what} "
                    f"({freed / total:.1%}), short of {fraction:.1%}; lower the fraction")


@dataclass(frozen=True)
class Plan:
    """Units to remove from a model, and why.

    Attributes:
        remove: unit names, in the order chosen.
        method: how they were chosen (e.g. ``"modularity"``, ``"edited plan.json"``); None for a plan written by
            hand without one.
        verdicts: the curve's verdicts behind the choice (none for a plan written by hand).
        budget: the number of units asked for; None means as many as ``remove`` names.
        graph, draws: how the curve behind the verdicts was measured (None for a plan written by hand).
        asked: the method asked for when it named another (``"auto"``, which resolved to ``method``), else None.
        bn_batches: batches of training images the removal scores re-estimated batch-norm statistics on (0: none).
    """

    remove: list[str]
    _: KW_ONLY
    method: str | None = None
    verdicts: list[Verdict] = field(default_factory=list)
    budget: int | None = None
    graph: GraphConfig | None = None
    draws: DrawConfig | None = None
    asked: str | None = None
    bn_batches: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "remove", list(self.remove))
        object.__setattr__(self, "verdicts", list(self.verdicts))

    def to_dict(self) -> dict:
        """JSON-ready plan ``{"method", "asked", "remove", "budget", "verdicts", "graph", "draws", "bn_batches"}``
        (the configs as dicts, or null); undefined numbers of the verdicts become null so the file stays strict
        JSON."""
        rows = [verdict_to_dict(v) for v in self.verdicts]
        return {"method": self.method, "asked": self.asked, "remove": list(self.remove),
                "budget": len(self.remove) if self.budget is None else self.budget, "verdicts": rows,
                "graph": None if self.graph is None else self.graph.to_dict(),
                "draws": None if self.draws is None else self.draws.to_dict(), "bn_batches": self.bn_batches}

    @classmethod
    def from_dict(cls, data: object) -> Plan:
        """Inverse of :meth:`to_dict`, for a plan read from a file: a JSON object with a ``"remove"`` list of unit
        names and, if present, a method name and the one asked for, a budget and ``bn_batches`` (integers >= 0),
        at most ``MAX_ITEMS`` verdicts (layer, increment, noise and threshold numbers or null, and a verdict of
        :data:`~layermod.analysis.redundancy.VERDICTS`) and the graph and draw configs, checked as
        :mod:`layermod.io.validate` and the configs say. Raises ValueError (a LayermodError for a config)
        naming the first problem."""
        plan = mapping(data, "the plan")
        remove = names(required(plan, "remove"), "remove", empty=True)
        method, asked = plan.get("method"), plan.get("asked")
        for key, value in (("method", method), ("asked", asked)):
            if value is not None:
                text(value, key)
        bn_batches = number(plan.get("bn_batches", 0), "bn_batches", low=0, integer=True)
        budget = plan.get("budget")
        if budget is not None:
            number(budget, "budget", low=0, integer=True)
        rows = plan.get("verdicts", [])
        if not isinstance(rows, list) or len(rows) > MAX_ITEMS:
            raise ValueError(f"verdicts is not a list of at most {MAX_ITEMS:,} verdicts")
        graph, draws = (None if plan.get(key) is None else config.from_dict(mapping(plan[key], key))
                        for key, config in (("graph", GraphConfig), ("draws", DrawConfig)))
        verdicts = [verdict_from_dict(i, row) for i, row in enumerate(rows)]
        return cls(remove, method=method, verdicts=verdicts, budget=budget, graph=graph, draws=draws, asked=asked,
                   bn_batches=bn_batches)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Plan:
        """Read a ``plan.json`` (possibly edited by hand), or the one inside a run directory; a one-line
        :class:`PlanError` naming the file when it cannot be read."""
        return read_json_file(path, PLAN_JSON, cls.from_dict, "a plan", error=PlanError)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``plan.json`` into ``path`` (created), whole or not at all; returns the directory."""
        out = ensure_writable_dir(path)
        write_json(out / PLAN_JSON, self.to_dict())
        return out
