"""Redundant layers from the modularity curve, and plans that remove them.

A layer is redundant when it adds no modularity: its increment ``Q_l - Q_(l-1)`` is about zero (a
*plateau*) or negative (a *drop*). Both verdicts mark a layer that can be removed; removing plateau layers
costs almost nothing after retraining, removing layers that raised Q costs more the more Q they added.

Noise. The increment is the mean over draws of the per-draw increments ``d_r = Q[r, l] - Q[r, l-1]``. Both
layers are measured on the same samples in draw ``r``, so the two values are paired: whatever a draw does to
Q (an easy or a hard sample set) moves both layers together and cancels in ``d_r``. The standard error of the
increment is therefore ``std(d, ddof=1) / sqrt(R)`` over the ``R`` draws, which is much smaller than one
built from the two layers' separate spreads. With a single draw there is no spread to measure and the noise
is 0.

Threshold. An increment is judged against the band ``max(z * noise, min_gain)``:

* ``z`` (default 2) is the number of standard errors an increment must exceed to count: an increment
  within two standard errors of 0 is not significantly above 0, so the layer is a plateau.
* ``min_gain`` (default 0.005) is the smallest increment worth keeping a layer for: half a percent of Q is
  negligible even when the draws agree perfectly (zero noise, or a single draw).

Verdicts: ``"drop"`` when the increment is below ``-threshold``, ``"plateau"`` when it is within the band,
``"keep"`` above it. The first layer has no predecessor; its increment is NaN and it is always kept.

Plans. :func:`rank_by_increment` orders removable units (duck-typed objects with ``name``, ``layers``,
``stage`` and ``params``, see :class:`layermod.prune.Unit`) by the smallest increment among their layers,
ascending, so drops come before plateaus and plateaus before layers that raised Q. :func:`select_units`
walks such an order and takes units while every stage keeps at least one unit; :func:`budget_for_params`
turns a parameter fraction into a number of units. :func:`plan_dict` and :func:`read_plan` write and read an
editable ``plan.json``.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from layermod.analysis.curve import Curve
from layermod.errors import PlanError
from layermod.io.files import read_json_file
from layermod.io.validate import mapping, names, required, text

__all__ = [
    "Verdict",
    "budget_for_params",
    "find_redundant",
    "paired_difference",
    "plan_dict",
    "rank_by_increment",
    "read_plan",
    "select_units",
    "verdict_table",
]

@dataclass(frozen=True)
class Verdict:
    """Whether one layer of a curve adds modularity.

    Attributes:
        layer: the curve's layer name.
        increment: mean Q of this layer minus mean Q of the previous layer (NaN for the first layer).
        noise: standard error of that increment over the paired draws (NaN for the first layer).
        threshold: the band used, ``max(z * noise, min_gain)`` (NaN for the first layer).
        verdict: ``"drop"`` (increment < -threshold), ``"plateau"`` (|increment| <= threshold) or ``"keep"``.
    """

    layer: str
    increment: float
    noise: float
    threshold: float
    verdict: str


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over draws of ``a - b`` and its paired standard error ``std(a - b, ddof=1) / sqrt(R)``.

    ``a`` and ``b`` are (R, ...) values measured on the same R draws; returns two arrays of shape (...). With a
    single draw there is no spread to measure and the standard error is 0.
    """
    diffs = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    repeats = len(diffs)
    noise = diffs.std(axis=0, ddof=1) / math.sqrt(repeats) if repeats > 1 else np.zeros(diffs.shape[1:])
    return diffs.mean(axis=0), noise


def find_redundant(curve: Curve, z: float = 2.0, min_gain: float = 0.005) -> list[Verdict]:
    """One :class:`Verdict` per layer of ``curve``, in the curve's order.

    A layer whose increment cannot be judged (the first layer, or NaN values in the curve) is kept: without
    evidence a layer is not called redundant.
    """
    if not (math.isfinite(z) and z >= 0):
        raise PlanError(f"z must be a finite number >= 0, got {z}")
    if not (math.isfinite(min_gain) and min_gain >= 0):
        raise PlanError(f"min_gain must be a finite number >= 0, got {min_gain}")
    values = curve.values
    verdicts = [Verdict(curve.layers[0], math.nan, math.nan, math.nan, "keep")] if curve.layers else []
    for index in range(1, len(curve.layers)):
        increment, noise = map(float, paired_difference(values[:, index], values[:, index - 1]))
        threshold = max(z * noise, min_gain)
        if not (math.isfinite(increment) and math.isfinite(threshold)) or increment > threshold:
            verdict = "keep"
        elif increment < -threshold:
            verdict = "drop"
        else:
            verdict = "plateau"
        verdicts.append(Verdict(curve.layers[index], increment, noise, threshold, verdict))
    return verdicts


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
    if not 0 < fraction <= 1:
        raise PlanError(f"fraction must be in (0, 1], got {fraction}")
    if total_params < 1:
        raise PlanError(f"total_params must be positive, got {total_params}")
    target = fraction * total_params
    freed = 0
    for count, unit in enumerate(_walk(order, _units_by_name(units)), start=1):
        freed += unit.params
        if freed >= target:
            return count
    raise PlanError(f"removing every removable unit frees {freed} of {total_params} parameters "
                    f"({freed / total_params:.1%}), short of {fraction:.1%}; lower the fraction")


def _fmt(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else "-"


def verdict_table(verdicts: Sequence[Verdict]) -> str:
    """Fixed-width text table: layer, increment, noise, threshold, verdict (``-`` where undefined)."""
    width = max([len("layer"), *(len(v.layer) for v in verdicts)])
    lines = [f"{'layer':<{width}}  {'increment':>9}  {'noise':>9}  {'threshold':>9}  verdict"]
    for v in verdicts:
        lines.append(f"{v.layer:<{width}}  {_fmt(v.increment):>9}  {_fmt(v.noise):>9}  "
                     f"{_fmt(v.threshold):>9}  {v.verdict}")
    return "\n".join(lines)


def plan_dict(remove: Sequence[str], method: str, verdicts: Sequence[Verdict] | None = None,
              budget: int | None = None) -> dict:
    """JSON-ready plan ``{"method", "remove", "budget", "verdicts"}``.

    ``budget`` defaults to the number of units removed; undefined numbers of the verdicts become null so the
    file stays strict JSON.
    """
    rows = [{key: (None if isinstance(value, float) and not math.isfinite(value) else value)
             for key, value in asdict(v).items()} for v in verdicts or ()]
    return {"method": method, "remove": list(remove), "budget": len(remove) if budget is None else budget,
            "verdicts": rows}


def _plan_from_json(data: object) -> dict:
    """A plan read from a file: a JSON object with a ``"remove"`` list of unit names (and a method name, if
    any), checked as :mod:`layermod.validate` says; ValueError naming the first problem."""
    plan = mapping(data, "the plan")
    names(required(plan, "remove"), "remove", empty=True)
    if "method" in plan:
        text(plan["method"], "method")
    return plan


def read_plan(path: str | os.PathLike) -> dict:
    """Read a ``plan.json`` (possibly edited by hand, e.g. to ``{"remove": ["layer3.4"]}``), or the one inside a
    run directory; it must hold a ``"remove"`` list of unit names. Raises a one-line :class:`PlanError` naming
    the file otherwise."""
    return read_json_file(path, "plan.json", _plan_from_json, "a plan", PlanError)
