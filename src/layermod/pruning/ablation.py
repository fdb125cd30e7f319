"""Scores measured by removing a unit, the order a curve's rise allows, and re-scoring after each removal.

* **Accuracy ablation** (:func:`ablation_accuracy`, method ``ablation-accuracy``): each unit alone is replaced
  by its pass-through stand-in (no retraining) and the score is the drop in probe accuracy, ties broken by the
  rise in cross-entropy: the measured damage of the removal, which cosine-style scores only estimate.
* **Modularity ablation** (:func:`ablation_modularity`, method ``modularity-ablation``): the same removal, scored
  by how much Q falls (label graph, no training): at the final measured layer by default, the representation the
  classifier reads and the one place every removal can show; ``points="later"`` averages over every measured
  layer after the unit instead. One graph over all probe samples per layer.
* **Batch-norm re-estimation** (``bn_batches`` of both removal scores, :func:`refresh_batch_norm`): a removal
  shifts what the next batch-norm layers see, so their trained running statistics no longer fit; with
  ``bn_batches=N`` the network with the unit removed, and the intact one it is compared with, get running
  statistics re-estimated on N batches of training images before they are scored, so the score is the damage that
  is left once the statistics fit again (what a fine-tuning repairs first). Each runs in a copy.
* **Phase-aware plateaus** (:func:`phase_scores`, method ``modularity-phase``): the paper's smallest-increment
  order, but a unit whose layers all come before the curve's rise (:func:`~layermod.analysis.phase.find_rise`)
  is taken only after every unit past it.
* **Iterative** (:func:`iterative_order`): a score-based order built one unit at a time, every remaining unit
  re-scored on the network with the units chosen so far removed.
* **Cost** (:class:`ScoringCost`): the seconds a scoring took and the probe passes it made (samples through the
  whole network, over the probe's size).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from layermod.analysis.curve import Curve
from layermod.analysis.phase import RISE_SHARE, find_rise
from layermod.analysis.redundancy import Verdict
from layermod.errors import PlanError
from layermod.extract.features import extract_features
from layermod.extract.inputs import Batch, batch_length, call_model, slice_batch
from layermod.extract.layers import first_tensor
from layermod.extract.modes import evaluating
from layermod.measure.config import GraphConfig
from layermod.measure.graph import build_graph
from layermod.measure.modularity import modularity
from layermod.models.units import remove_units
from layermod.pruning.units import Unit

__all__ = ["POINTS", "ScoringCost", "ablation_accuracy", "ablation_modularity", "counting", "iterative_order",
           "phase_scores", "probe_fit", "refresh_batch_norm", "without"]

POINTS = ("final", "later")
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def without(model: nn.Module, units: Sequence[Unit], names: Sequence[str]) -> nn.Module:
    """A copy of ``model`` with the units ``names`` (of ``units``) replaced by their stand-ins."""
    structure = {unit.name: unit.outputs for unit in units if unit.name in names and unit.outputs is not None}
    return remove_units(model, list(names), outputs=structure)


def refresh_batch_norm(model: nn.Module, inputs: Batch, *, batches: int, batch_size: int = 256) -> nn.Module:
    """Re-estimate, in place, the running mean and variance of every batch-norm layer of ``model`` that tracks
    them: reset, then the cumulative average (momentum None) over the first ``batches`` batches of ``batch_size``
    of ``inputs`` (N, ...; all of them when fewer), run without gradients with only those layers in training
    mode. Every module's mode and every momentum are restored. Returns ``model``."""
    norms = [m for m in model.modules() if isinstance(m, _BATCH_NORMS) and m.track_running_stats]
    momenta = [norm.momentum for norm in norms]
    with evaluating(model), torch.no_grad():
        try:
            for norm in norms:
                norm.reset_running_stats()
                norm.momentum = None
                norm.train()
            for start in range(0, min(batch_length(inputs), batches * batch_size), batch_size):
                call_model(model, slice_batch(inputs, start, stop=start + batch_size))
        finally:
            for norm, momentum in zip(norms, momenta):
                norm.momentum = momentum
    return model


def _refreshed(model: nn.Module, bn_batches: int, bn_inputs: Batch | None, batch_size: int, *,
               own: bool = False) -> nn.Module:
    """``model`` itself (``bn_batches=0``), or with its batch-norm statistics re-estimated: in place when it is
    the caller's ``own`` copy, else in a copy."""
    if not bn_batches or bn_inputs is None:  # no inputs with bn_batches: refused by _check_refresh
        return model
    return refresh_batch_norm(model if own else copy.deepcopy(model), bn_inputs, batches=bn_batches,
                              batch_size=batch_size)


def _check_refresh(bn_batches: int, bn_inputs: Batch | None) -> None:
    if not isinstance(bn_batches, int) or bn_batches < 0:
        raise PlanError(f"bn_batches must be an integer >= 0, got {bn_batches!r}")
    if bn_batches and (bn_inputs is None or not batch_length(bn_inputs)):
        raise PlanError("re-estimating batch norm needs training images; pass bn_inputs")


def ablation_accuracy(model: nn.Module, units: Sequence[Unit], inputs: Batch, labels: torch.Tensor, *,
                      batch_size: int = 256, bn_batches: int = 0,
                      bn_inputs: Batch | None = None) -> dict[str, tuple[float, float]]:
    """``{unit name: (accuracy drop, loss rise)}`` on the probe ``inputs`` (N, ...) with ``labels`` (N,) when
    that unit alone is removed (``model`` is not modified). Smaller is more redundant.

    Args:
        bn_batches: re-estimate the batch-norm statistics of the intact and of every pruned network on this many
            batches of ``batch_size`` of ``bn_inputs`` (M, ...), training images, before scoring (0: never).

    Raises:
        PlanError: inputs and labels of different lengths, an empty probe, or ``bn_batches`` without
            ``bn_inputs``.
    """
    if batch_length(inputs) != len(labels) or not batch_length(inputs):
        raise PlanError(f"the probe has {batch_length(inputs)} inputs and {len(labels)} labels; pass one label per input")
    _check_refresh(bn_batches, bn_inputs)
    accuracy, loss = probe_fit(_refreshed(model, bn_batches, bn_inputs, batch_size), inputs, labels,
                               batch_size=batch_size)
    scores = {}
    for unit in units:
        pruned = _refreshed(without(model, units, [unit.name]), bn_batches, bn_inputs, batch_size, own=True)
        acc_r, loss_r = probe_fit(pruned, inputs, labels, batch_size=batch_size)
        scores[unit.name] = (accuracy - acc_r, loss_r - loss)
    return scores


def probe_fit(model: nn.Module, inputs: Batch, labels: torch.Tensor, *, batch_size: int = 256) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on the probe, eval mode, every module's mode restored; the
    logits are the output tensor (the first tensor of a tuple or dict output, e.g. a transformers ``logits``)."""
    correct, total_loss = 0, 0.0
    n = batch_length(inputs)
    with evaluating(model), torch.no_grad():
        for start in range(0, n, batch_size):
            logits = first_tensor(call_model(model, slice_batch(inputs, start, stop=start + batch_size)))
            y = labels[start : start + batch_size].to(logits.device)
            correct += int((logits.argmax(dim=1) == y).sum())
            total_loss += float(nn.functional.cross_entropy(logits.double(), y, reduction="sum"))
    return correct / n, total_loss / n


def _later_layers(unit: Unit, layers: Sequence[str], points: str) -> list[str]:
    """The measured layers whose Q a removal of ``unit`` is scored on."""
    if points == "final":
        return [layers[-1]]
    inside = [layers.index(layer) for layer in unit.layers if layer in layers]
    after = [layer for i, layer in enumerate(layers) if not inside or i > max(inside)]
    return after or [layers[-1]]


def _q(model: nn.Module, inputs: Batch, labels: np.ndarray, layers: Sequence[str], graph: GraphConfig, pool: str,
       batch_size: int) -> dict[str, float]:
    """``{layer: Q}`` of ``model`` at ``layers``, each read where :func:`_reading_points` says."""
    at = _reading_points(model, layers)
    features = extract_features(model, inputs, layers=list(dict.fromkeys(at.values())), batch_size=batch_size,
                                pool=pool)
    q = {name: modularity(build_graph(x, graph=graph).adjacency, labels, resolution=graph.resolution)
         for name, x in features.items()}
    return {layer: q[at[layer]] for layer in layers}


def _reading_points(model: nn.Module, layers: Sequence[str]) -> dict[str, str]:
    """``{layer: the module it is read at}``: itself, or where a removal took it (a VGG unit's conv), the nearest
    enclosing module still there: the removed unit's stand-in, which passes on what entered the unit."""
    names = dict(model.named_modules())
    out = {}
    for layer in layers:
        point = layer
        while point not in names and "." in point:
            point = point.rsplit(".", 1)[0]
        out[layer] = point
    return out


def ablation_modularity(model: nn.Module, units: Sequence[Unit], inputs: Batch, labels: torch.Tensor, *,
                        layers: Sequence[str], graph: GraphConfig | None = None, points: str = "final",
                        pool: str = "auto", batch_size: int = 256, bn_batches: int = 0,
                        bn_inputs: Batch | None = None) -> dict[str, float]:
    """``{unit name: fall of Q}`` when that unit alone is removed: Q of ``model`` minus Q of the model without
    it, on one graph over the probe ``inputs`` (N, ...) with ``labels`` (N,) as communities, at the final layer of
    ``layers`` (``points="final"``) or averaged over the layers of ``layers`` after the unit (``"later"``).
    Smaller is more redundant; a unit whose removal raises Q scores below 0.

    Args:
        layers: the curve's measured layers, in depth order (names in ``model``); "later" never scores a removed
            unit's own layers, and a point that a removal took (the final one, when the last unit holds it; any
            point of a unit removed earlier in an iterative order) is read at the unit's stand-in, which passes on
            what entered the unit.
        graph: the curve's graph (default :class:`GraphConfig`'s); pool: its pooling of token outputs.
        bn_batches, bn_inputs: batch-norm re-estimation before scoring, as :func:`ablation_accuracy`.

    Raises:
        PlanError: ``points`` not one of :data:`POINTS`, no layers, inputs and labels of different lengths, or
            ``bn_batches`` without ``bn_inputs``.
    """
    if points not in POINTS:
        raise PlanError(f"points={points!r}: use one of {', '.join(POINTS)}")
    if not layers:
        raise PlanError("ablation_modularity needs the curve's layers; pass layers=curve.layers")
    if batch_length(inputs) != len(labels):
        raise PlanError(f"the probe has {batch_length(inputs)} inputs and {len(labels)} labels; pass one label per input")
    _check_refresh(bn_batches, bn_inputs)
    graph = graph or GraphConfig()
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    scored = {unit.name: _later_layers(unit, list(layers), points) for unit in units}
    needed = sorted({layer for names in scored.values() for layer in names}, key=list(layers).index)
    base = _q(_refreshed(model, bn_batches, bn_inputs, batch_size), inputs, y, needed, graph, pool, batch_size)
    scores = {}
    for unit in units:
        pruned = _refreshed(without(model, units, [unit.name]), bn_batches, bn_inputs, batch_size, own=True)
        after = _q(pruned, inputs, y, scored[unit.name], graph, pool, batch_size)
        scores[unit.name] = float(np.mean([base[layer] - after[layer] for layer in scored[unit.name]]))
    return scores


def phase_scores(curve: Curve, verdicts: Sequence[Verdict], units: Sequence[Unit], *,
                 share: float = RISE_SHARE) -> dict[str, tuple[int, float]]:
    """``{unit name: (before the rise, smallest increment)}``, sorted ascending by ``modularity-phase``: units
    past the curve's rise in the paper's order, then the ones whose measured layers all come at or before it.
    Units without a measured layer, or with no finite increment, come last of their group."""
    rise = find_rise(curve, share=share).index
    position = {layer: i for i, layer in enumerate(curve.layers)}
    increments = {v.layer: v.increment for v in verdicts}
    scores = {}
    for unit in units:
        measured = [layer for layer in unit.layers if layer in position]
        finite = [increments[layer] for layer in measured if np.isfinite(increments.get(layer, np.nan))]
        before = not measured or max(position[layer] for layer in measured) <= rise
        scores[unit.name] = (int(before), min(finite) if finite else float("inf"))
    return scores


def iterative_order(model: nn.Module, units: Sequence[Unit], rank: Callable[[nn.Module, list[Unit]], list[str]], *,
                    steps: int, keep_per_stage: int = 1) -> list[str]:
    """Unit names in the order an iterative method removes them: ``rank(pruned, remaining)`` orders the remaining
    units (best first) on the network without the units chosen so far; its first unit whose stage keeps
    ``keep_per_stage`` others is taken, ``steps`` times (or until none can go). The last ranking's other units
    follow, so the order covers every unit. ``steps=1`` gives the one-shot order."""
    stage_size = {stage: sum(u.stage == stage for u in units) + max((u.kept for u in units if u.stage == stage),
                                                                      default=0) for stage in {u.stage for u in units}}
    chosen: list[str] = []
    order: list[str] = []
    for _ in range(max(1, steps)):
        remaining = [unit for unit in units if unit.name not in chosen]
        if not remaining:
            break
        pruned = without(model, units, chosen) if chosen else model
        order = rank(pruned, remaining)
        taken = {u.name: u.stage for u in units if u.name in chosen}
        stage_of = {u.name: u.stage for u in units}
        pick = next((name for name in order if stage_size[stage_of[name]] - 1
                     - sum(s == stage_of[name] for s in taken.values()) >= keep_per_stage), None)
        if pick is None:
            break
        chosen.append(pick)
    return chosen + [name for name in order if name not in chosen] + \
        [unit.name for unit in units if unit.name not in chosen and unit.name not in order]


@dataclass(kw_only=True)
class ScoringCost:
    """What one scoring took: ``seconds`` of wall time and ``passes``, samples run through the whole network
    over the probe's size."""

    seconds: float = 0.0
    passes: float = 0.0

    def to_dict(self) -> dict:
        return {"seconds": round(self.seconds, 3), "probe_passes": round(self.passes, 2)}


@contextmanager
def counting(model: nn.Module, probe_size: int) -> Iterator[ScoringCost]:
    """Time the block and count the samples that run through ``model`` and through the copies made of it while
    the block runs (pruned copies carry the counting hook with them)."""
    cost = ScoringCost()

    def seen(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        batch = args[0] if args and isinstance(args[0], (torch.Tensor, dict)) else kwargs
        cost.passes += batch_length(batch) / max(1, probe_size)

    handle = model.register_forward_pre_hook(seen, with_kwargs=True)
    start = time.perf_counter()
    try:
        yield cost
    finally:
        cost.seconds += time.perf_counter() - start
        handle.remove()
