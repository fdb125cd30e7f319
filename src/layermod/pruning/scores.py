"""Scores that other layer-pruning methods rank units by, measured on a probe batch of the trained model.

The decisions behind it: docs/design.md, section layermod.pruning.scores.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields

import torch
from torch import nn

from layermod.analysis.curve import Curve
from layermod.analysis.redundancy import Verdict
from layermod.coerce import torch_seed
from layermod.errors import PlanError
from layermod.extract.inputs import Batch, batch_length, call_model, slice_batch
from layermod.extract.layers import first_tensor
from layermod.extract.modes import evaluating
from layermod.measure.config import GraphConfig
from layermod.measure.similarity import centered_gram, hsic
from layermod.pruning.ablation import (ablation_accuracy, ablation_modularity, counting, iterative_order, phase_scores,
                                       probe_fit)
from layermod.pruning.plans import method_order
from layermod.pruning.units import Unit

__all__ = ["angular_distances", "block_influence", "cka_redundancy", "method_scores", "reinit_sensitivity"]


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape) if shape else "?"


def _unit_ends(model: nn.Module, names: Sequence[str], inputs: Batch,
               batch_size: int) -> Iterator[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Per batch of ``inputs`` (N, ...): ``{unit name: (its input, its output)}``, each (B, D) float64 flattened.

    Raises PlanError for a unit whose output shape differs from its input's.
    """
    ends: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name: str):
        def record(_module, args, kwargs, output):
            x, y = first_tensor(args[0] if args else kwargs.get("hidden_states")), first_tensor(output)
            if x is None or y is None or x.shape != y.shape:
                shapes = (_fmt(tuple(t.shape[1:])) if t is not None else "?" for t in (x, y))
                raise PlanError(f"unit {name!r} changes shape {' -> '.join(shapes)}; its score needs in == out")
            ends[name] = (x.detach().flatten(1).double(), y.detach().flatten(1).double())

        return record

    handles = [model.get_submodule(name).register_forward_hook(hook(name), with_kwargs=True)
               for name in dict.fromkeys(names)]
    try:
        with evaluating(model), torch.no_grad():
            for start in range(0, batch_length(inputs), batch_size):
                ends.clear()
                call_model(model, slice_batch(inputs, start, stop=start + batch_size))
                yield ends
    finally:
        for handle in handles:
            handle.remove()


def block_influence(model: nn.Module, units: Sequence[Unit], inputs: Batch, *,
                    batch_size: int = 256) -> dict[str, float]:
    """Mean over samples of ``1 - cos(unit input, unit output)`` (each flattened) for every unit.

    Higher means the unit changes its input more; 0 means it passes it on (up to a positive scale).

    Args:
        model: the network; run in eval mode, its training mode restored afterwards.
        units: units of ``model`` (e.g. :func:`layermod.pruning.units.removable_units`); each must keep its
            input's shape.
        inputs: samples (N, ...) on the model's device, run in batches of ``batch_size``.

    Returns:
        ``{unit name: influence}`` in the order of ``units``.

    Raises:
        PlanError: a unit whose output shape differs from its input's.
    """
    runs = _run_scores(model, units, inputs, 1, lambda cos: 1.0 - cos, batch_size)
    return {run[0]: score for run, score in runs.items()}


def angular_distances(model: nn.Module, units: Sequence[Unit], inputs: Batch, span: int,
                      *,
                      batch_size: int = 256) -> dict[tuple[str, ...], float]:
    """Angular distance ``arccos(cos(x_in, x_out)) / pi`` across every run of ``span`` consecutive units of one
    stage (Gromov et al.): ``x_in`` the first unit's input, ``x_out`` the last one's output, each flattened, the
    distance averaged over samples. In [0, 1]; 0 means the run passes its input on (up to a positive scale).

    Args and errors as :func:`block_influence`; ``span`` >= 1.

    Returns:
        ``{(unit names of the run): distance}`` in forward order; no run when no stage has ``span`` units.
    """
    return _run_scores(model, units, inputs, span, lambda cos: torch.arccos(cos.clamp(-1.0, 1.0)) / torch.pi,
                       batch_size)


def _runs(units: Sequence[Unit], span: int) -> list[tuple[str, ...]]:
    """Every ``span`` consecutive units of one stage, in forward order."""
    runs = []
    for start in range(len(units) - span + 1):
        members = units[start : start + span]
        if len({unit.stage for unit in members}) == 1:
            runs.append(tuple(unit.name for unit in members))
    return runs


def _run_scores(model: nn.Module, units: Sequence[Unit], inputs: Batch, span: int,
                score: Callable[[torch.Tensor], torch.Tensor], batch_size: int) -> dict[tuple[str, ...], float]:
    """Mean over samples of ``score(cos(first unit's input, last unit's output))`` for every run of ``span``
    units (:func:`_runs`)."""
    runs = _runs(units, span)
    sums = dict.fromkeys(runs, 0.0)
    needed = [name for run in runs for name in (run[0], run[-1])]
    for ends in _unit_ends(model, needed, inputs, batch_size):
        for run in runs:
            cos = nn.functional.cosine_similarity(ends[run[0]][0], ends[run[-1]][1], dim=1)
            sums[run] += float(score(cos).sum())
    n = max(1, batch_length(inputs))
    return {run: total / n for run, total in sums.items()}


def cka_redundancy(model: nn.Module, units: Sequence[Unit], inputs: Batch, *,
                   batch_size: int = 256) -> dict[str, float]:
    """Minibatch linear CKA between every unit's input and output over ``inputs`` (N, ...), in [0, 1].

    The batches are ``batch_size`` consecutive samples (a shorter last batch is left out when there is more
    than one batch, as minibatch CKA needs equal batch sizes); each needs >= 2 samples. A unit whose input or
    output does not vary across the probe gets NaN (CKA is 0/0 there). Errors as :func:`block_influence`.

    Returns:
        ``{unit name: CKA}`` in the order of ``units``; 1 means the unit's output has its input's geometry.
    """
    n = batch_length(inputs)
    if n < 2:
        raise PlanError(f"CKA needs at least 2 probe samples, got {n}")
    size = min(batch_size, n)
    used = slice_batch(inputs, 0, stop=n - n % size) if n > size else inputs
    sums = {unit.name: [0.0, 0.0, 0.0] for unit in units}  # HSIC(in, out), HSIC(in, in), HSIC(out, out)
    for ends in _unit_ends(model, list(sums), used, size):
        for name, total in sums.items():
            k, l = (centered_gram(t) for t in ends[name])
            total[0] += hsic(k, l)
            total[1] += hsic(k, k)
            total[2] += hsic(l, l)
    scores = {}
    for name, (cross, self_in, self_out) in sums.items():
        denominator = (self_in * self_out) ** 0.5
        scores[name] = min(1.0, max(0.0, cross / denominator)) if denominator > 0 else float("nan")
    return scores


def reinit_sensitivity(model: nn.Module, units: Sequence[Unit], inputs: Batch, labels: torch.Tensor,
                       *,
                       seed: int = 0, batch_size: int = 256) -> dict[str, tuple[float, float]]:
    """How much probe accuracy and loss suffer when one unit is re-initialised (SR-init's criterion).

    Args:
        model: the trained classifier (not modified: each unit is re-initialised in a copy).
        units: its removable units.
        inputs: probe samples (N, ...) on the model's device; labels (N,) their classes.
        seed: seeds the fresh initialisation of every unit (``torch.manual_seed(seed)`` before each).

    Returns:
        ``{unit name: (accuracy drop, loss rise)}``: the trained model's probe accuracy minus the one with the
        unit re-initialised, and likewise for the mean cross-entropy (reversed sign). Smaller is more redundant.
    """
    if batch_length(inputs) != len(labels) or not batch_length(inputs):
        raise PlanError(f"the probe has {batch_length(inputs)} inputs and {len(labels)} labels; pass one label per input")
    accuracy, loss = probe_fit(model, inputs, labels, batch_size=batch_size)
    scores = {}
    for unit in units:
        scrambled = copy.deepcopy(model)
        torch.manual_seed(torch_seed(seed, PlanError))
        for module in scrambled.get_submodule(unit.name).modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
        acc_r, loss_r = probe_fit(scrambled, inputs, labels, batch_size=batch_size)
        scores[unit.name] = (accuracy - acc_r, loss_r - loss)
    return scores


def method_scores(model: nn.Module, units: Sequence[Unit], methods: Sequence[str], inputs: Batch,
                  labels: torch.Tensor, *, span: int = 1, seed: int = 0, curve: Curve | None = None,
                  verdicts: Sequence[Verdict] | None = None, iterative: bool = False, steps: int | None = None,
                  costs: dict[str, dict] | None = None, bn_batches: int = 0,
                  bn_inputs: Batch | None = None) -> dict[str, dict | list]:
    """The scores that :func:`layermod.pruning.plans.method_order` needs for every scored method among
    ``methods``, measured on the probe ``inputs`` (N, ...) with ``labels`` (N,): ``{"cosine": ..., "angular":
    ..., ...}`` (only those asked for). ``angular`` runs over ``span`` units, or single units when no stage is that
    long.

    Args:
        curve, verdicts: the model's curve and its verdicts, for ``modularity-phase`` (both) and
            ``modularity-ablation`` (the curve's layers, graph and pooling).
        iterative: every model-based method's scores become its order, built one removal at a time with every
            remaining unit re-scored on the pruned network (:func:`~layermod.pruning.ablation.iterative_order`,
            ``steps`` removals, default every unit; ``angular`` then scores single units).
        costs: filled with ``{method: {"seconds", "probe_passes"}}``, what each method's scoring took.
        bn_batches, bn_inputs: the removal scores (``ablation-accuracy``, ``modularity-ablation``) re-estimate
            batch-norm statistics on this many batches of these training images (M, ...) before scoring
            (:func:`~layermod.pruning.ablation.ablation_accuracy`; 0: never).

    Raises:
        PlanError: ``modularity-phase`` or ``modularity-ablation`` without the curve (and verdicts).
    """
    scores: dict[str, dict | list] = {}
    refresh = {"bn_batches": bn_batches, "bn_inputs": bn_inputs}
    for method in (m for m in dict.fromkeys(methods) if m in _SCORERS):
        if method in ("modularity-phase", "modularity-ablation") and curve is None or \
                method == "modularity-phase" and verdicts is None:
            raise PlanError(f"method {method!r} needs the model's curve and verdicts; pass curve= and verdicts=")
        with counting(model, batch_length(inputs)) as cost:
            def score(net: nn.Module, some: Sequence[Unit], width: int = span, method: str = method) -> dict:
                return _SCORERS[method](net, some, inputs, labels, width, seed, curve, verdicts, refresh)

            if iterative and method != "modularity-phase":
                scores[method] = iterative_order(
                    model, units, lambda net, some, method=method: method_order(
                        method, some, verdicts=verdicts, scores={method: score(net, some, 1)}),
                    steps=steps or len(units))
            else:
                scores[method] = score(model, units)
        if costs is not None:
            costs[method] = cost.to_dict()
    return scores


def _curve_graph(curve: Curve) -> GraphConfig:
    """The graph ``curve`` was measured with, from its config."""
    return GraphConfig(**{f.name: curve.config[f.name] for f in fields(GraphConfig) if f.name in curve.config})


def _ablation_modularity(model, units, inputs, labels, _span, _seed, curve, _verdicts, refresh):
    pool = curve.config.get("pool", "auto")
    return ablation_modularity(model, units, inputs, labels, layers=curve.layers, graph=_curve_graph(curve),
                               pool=pool if isinstance(pool, str) else "auto", **refresh)


def _ablation_accuracy(model, units, inputs, labels, _span, _seed, _curve, _verdicts, refresh):
    return ablation_accuracy(model, units, inputs, labels, **refresh)


def _phase(_model, units, _inputs, _labels, _span, _seed, curve, verdicts, _refresh):
    return phase_scores(curve, verdicts, units)


_SCORERS: dict[str, Callable] = {
    "modularity-phase": _phase,
    "modularity-ablation": _ablation_modularity,
    "cosine": lambda model, units, inputs, *_: block_influence(model, units, inputs),
    "angular": lambda model, units, inputs, labels, span, *_: angular_distances(model, units, inputs, span)
    or angular_distances(model, units, inputs, 1),
    "cka": lambda model, units, inputs, *_: cka_redundancy(model, units, inputs),
    "reinit": lambda model, units, inputs, labels, span, seed, *_: reinit_sensitivity(model, units, inputs, labels,
                                                                                      seed=seed),
    "ablation-accuracy": _ablation_accuracy,
}
"""Per scored method: ``(model, units, inputs, labels, span, seed, curve, verdicts, refresh) -> scores``,
``refresh`` the batch-norm keywords of the removal scores."""
