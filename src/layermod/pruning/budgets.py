"""Pruning methods compared fairly: each removes the same share of FLOPs (or of parameters), over seeds.

The decisions behind it: docs/design.md, section layermod.pruning.budgets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from layermod.analysis.curve import Curve
from layermod.analysis.redundancy import Verdict
from layermod.errors import PlanError
from layermod.extract.inputs import Batch, batch_length, to_model
from layermod.pruning.choices import BUDGETS, MATCHES, METHODS, RETRAINS
from layermod.pruning.ablation import counting
from layermod.pruning.pareto import MatchedComparison
from layermod.pruning.plans import SCORED, budget_for_cost, method_order, select_units
from layermod.pruning.scores import angular_distances, method_scores
from layermod.pruning.study import probe_batch, reinitialise
from layermod.pruning.units import Unit, apply_plan, model_cost, unit_costs
from layermod.data.draws import balanced_subset
from layermod.training.train import TrainConfig, evaluate, train
from layermod.coerce import bar_disabled

__all__ = ["BUDGETS", "Job", "matched_comparison", "plan_at_budget", "retrain_pruned"]

Job = tuple[tuple[str, ...], str, int]  # (units removed, retrain, seed)


def plan_at_budget(
    method: str,
    units: Sequence[Unit],
    costs: dict[str, dict[str, int]],
    total: int,
    fraction: float,
    match: str,
    *,
    verdicts: Sequence[Verdict] | None = None,
    scores: dict | None = None,
    seed: int = 0,
    angular: Callable[[int], dict] | None = None,
) -> list[str]:
    """The units ``method`` removes to save ``fraction`` of the model's ``match`` cost.

    Args:
        method: a name of :data:`METHODS` other than ``none``.
        units: the removable units; ``costs`` their :func:`~layermod.pruning.units.unit_costs`.
        total: the whole model's ``match`` cost (parameters or FLOPs per sample).
        fraction: in (0, 1].
        match: ``"flops"`` or ``"params"``.
        verdicts, scores, seed: as :func:`~layermod.pruning.plans.method_order` takes them.
        angular: span -> angular distances of runs of that many units (for ``angular``).
    """
    if match not in MATCHES:
        raise PlanError(f"unknown cost {match!r} to match; use {' or '.join(MATCHES)}")

    def take(order: list[str]) -> list[str]:
        count = budget_for_cost(order, units, fraction, total, lambda unit: costs[unit.name][match], what=match)
        return select_units(order, units, count)

    if method != "angular" or isinstance((scores or {}).get("angular"), list):  # an iterative order is one order
        return take(method_order(method, units, verdicts=verdicts, scores=scores, seed=seed))
    if angular is None:
        raise PlanError("method 'angular' needs its distances: pass angular=lambda span: angular_distances(...)")
    longest = max(sum(1 for u in units if u.stage == unit.stage) for unit in units)
    for span in range(1, longest + 1):
        runs = angular(span)
        if not runs:
            break
        chosen = take(method_order("angular", units, scores={"angular": runs}))
        if len(chosen) <= span:
            return chosen
    return take(method_order("angular", units, scores={"angular": angular(1)}))


def matched_comparison(
    model: nn.Module,
    units: Sequence[Unit],
    train_data: Dataset,
    test_data: Dataset,
    verdicts: Sequence[Verdict],
    example: Batch,
    finetune: TrainConfig,
    *,
    scratch: TrainConfig | None = None,
    budgets: Sequence[float] = BUDGETS,
    matches: Sequence[str] = MATCHES,
    retrains: Sequence[str] = RETRAINS,
    methods: Sequence[str] = METHODS,
    seeds: int = 3,
    probe: tuple[Batch, torch.Tensor] | None = None,
    progress: bool | str = "auto",
    run_jobs: Callable[[list[Job]], list[dict]] | None = None,
    curve: Curve | None = None,
    iterative: bool = False,
    choice: dict | None = None,
    bn_batches: int = 0,
) -> MatchedComparison:
    """Every method at every budget of every matched cost, retrained every way with every seed.

    Args:
        model: the trained network (not modified).
        units: its removable units (:func:`~layermod.pruning.units.removable_units`).
        train_data, test_data: retraining data and held-out data.
        verdicts: :func:`~layermod.analysis.redundancy.find_redundant` of the model's curve.
        example: one input (1, ...), or a dict of them, for counting FLOPs and checking shapes.
        finetune: retraining from the trained weights; ``scratch``: from a fresh initialisation (default: the
            ``finetune`` config). Their seeds are replaced by 0..seeds-1.
        budgets: shares of the matched cost to remove, each in (0, 1).
        matches: ``"flops"`` and/or ``"params"``; retrains: ``"finetune"`` and/or ``"scratch"``.
        methods: names of :data:`METHODS` (``none`` is always run, as the reference).
        seeds: runs per network and retraining, >= 1.
        probe: (inputs (n, ...) or a dict of them, labels (n,)) for the scored methods (default: a class-balanced draw of 512
            training samples, seed 0).
        run_jobs: runs the retraining jobs ``(units removed, retrain, seed)`` elsewhere (e.g. on an executor of
            :mod:`layermod.sweep.executor`) and returns ``{"params", "flops", "acc"}`` per job, in order; default:
            one after another in this process.
        curve: the model's curve (``verdicts`` are its verdicts), for ``modularity-phase`` and
            ``modularity-ablation``.
        iterative: re-score after each removal for every score-based method (see
            :func:`~layermod.pruning.scores.method_scores`).
        choice: where the probe and the curve were drawn (:attr:`~layermod.pruning.study.ChoiceSplit.record`),
            recorded as the config's ``choice``.
        bn_batches: the removal scores re-estimate batch-norm statistics on this many batches of 256
            class-balanced training images (seed 0) before scoring (0: never).

    Returns:
        a :class:`~layermod.pruning.pareto.MatchedComparison` with one row per (method, match, budget,
        retrain, seed).
    """
    _check(budgets, matches, retrains, methods, seeds)
    scratch = finetune if scratch is None else scratch
    methods = ["none", *(m for m in dict.fromkeys(methods) if m != "none")]
    x, y = probe if probe is not None else probe_batch(balanced_subset(train_data, min(512, len(train_data))))
    x = to_model(x, model)
    scoring: dict[str, dict] = {}  # per method: the seconds and probe passes its scores took
    refresh = to_model(probe_batch(balanced_subset(train_data, min(256 * bn_batches, len(train_data))),
                                   n=256 * bn_batches)[0], model) if bn_batches else None
    scores = method_scores(model, units, [m for m in methods if m in SCORED and (m != "angular" or iterative)], x, y,
                           curve=curve, verdicts=verdicts, iterative=iterative, costs=scoring, bn_batches=bn_batches,
                           bn_inputs=refresh)
    angular = _AngularSpans(model, units, x, scoring)
    base = model_cost(model, example)
    planned = _plan(methods, units, unit_costs(model, units, example), base, budgets=budgets, matches=matches,
                    seeds=seeds, verdicts=verdicts, scores=scores, angular=angular)
    jobs = list(dict.fromkeys((removed, retrain, seed) for *_, seed, removed in planned for retrain in retrains))
    results = _run_jobs(jobs, model, example, train_data, test_data, finetune=finetune, scratch=scratch,
                        run_jobs=run_jobs, progress=progress)
    rows = [{"method": method, "match": match, "budget": budget, "retrain": retrain, "seed": seed,
             "layers_removed": list(removed), "n_removed": len(removed), **results[(removed, retrain, seed)]}
            for method, match, budget, seed, removed in planned for retrain in retrains]
    config = {"budgets": list(budgets), "matches": list(matches), "retrains": list(retrains), "seeds": seeds,
              "finetune": finetune.to_dict(), "scratch": scratch.to_dict(), "probe_samples": len(x),
              "iterative": iterative, "bn_batches": bn_batches, "scoring": scoring,
              "train_samples": len(train_data),
              "test_samples": len(test_data), "torch_threads": torch.get_num_threads(),
              **({"choice": dict(choice)} if choice is not None else {})}
    return MatchedComparison(rows, base, config)


class _AngularSpans:
    """``angular(span)``: the angular distances of runs of ``span`` units, measured once per span, their cost
    added to ``scoring["angular"]``."""

    def __init__(self, model: nn.Module, units: Sequence[Unit], x: Batch, scoring: dict[str, dict]) -> None:
        self.model, self.units, self.x, self.scoring = model, units, x, scoring
        self.spans: dict[int, dict] = {}

    def __call__(self, span: int) -> dict:
        if span not in self.spans:
            with counting(self.model, batch_length(self.x)) as cost:
                self.spans[span] = angular_distances(self.model, self.units, self.x, span)
            spent = self.scoring.setdefault("angular", {"seconds": 0.0, "probe_passes": 0.0})
            spent.update({key: round(spent[key] + value, 3) for key, value in cost.to_dict().items()})
        return self.spans[span]


def _plan(methods: Sequence[str], units: Sequence[Unit], costs: dict, base: dict, *, budgets: Sequence[float],
          matches: Sequence[str], seeds: int, verdicts: Sequence[Verdict], scores: dict,
          angular: Callable[[int], dict]) -> list[tuple]:
    """``(method, match, budget, seed, removed)`` for the reference (``methods[0]``, ``none``) and every method,
    budget, match and seed."""
    planned = []
    for match in matches:
        for seed in range(seeds):
            planned.append(("none", match, 0.0, seed, ()))
            for budget in budgets:
                for method in methods[1:]:
                    removed = plan_at_budget(method, units, costs, base[match], budget, match, verdicts=verdicts,
                                             scores=scores, seed=seed, angular=angular)
                    planned.append((method, match, budget, seed, tuple(removed)))
    return planned


def _run_jobs(jobs: list[Job], model: nn.Module, example: Batch, train_data: Dataset, test_data: Dataset, *,
              finetune: TrainConfig, scratch: TrainConfig, run_jobs: Callable[[list[Job]], list[dict]] | None,
              progress: bool | str) -> dict[Job, dict]:
    """Each job's ``{"params", "flops", "acc", "acc_pruned"}``: retrained here one after another, or by
    ``run_jobs``; ``acc_pruned`` is the pruned network's accuracy before retraining."""
    before = {removed: evaluate(apply_plan(model, list(removed), example=example), test_data)
              for removed in dict.fromkeys(job[0] for job in jobs)}
    if run_jobs is None:
        bar = tqdm(jobs, desc="prune + retrain", disable=bar_disabled(progress))
        done = [retrain_pruned(model, job, finetune if job[1] == "finetune" else scratch, train_data, test_data,
                               example) for job in bar]
    else:
        done = run_jobs(jobs)
    return {job: {**result, "acc_pruned": before[job[0]]} for job, result in zip(jobs, done)}


def retrain_pruned(model: nn.Module, job: Job, config: TrainConfig, train_data: Dataset, test_data: Dataset,
                   example: Batch) -> dict:
    """Prune, retrain with ``replace(config, seed=seed)``, evaluate: ``{"params", "flops", "acc"}`` of the job's
    network (``job`` = (units removed, ``"finetune"`` or ``"scratch"``, seed))."""
    removed, retrain, seed = job
    pruned = apply_plan(model, list(removed), example=example)
    if retrain == "scratch":
        reinitialise(pruned, seed)
    train(pruned, train_data, None, replace(config, seed=seed), progress=False)
    cost = model_cost(pruned, example)
    return {"params": cost["params"], "flops": cost["flops"], "acc": evaluate(pruned, test_data)}


def _check(budgets: Sequence[float], matches: Sequence[str], retrains: Sequence[str], methods: Sequence[str],
           seeds: int) -> None:
    if not budgets or not all(isinstance(b, (int, float)) and 0 < b < 1 for b in budgets):
        raise PlanError(f"budgets must be shares of the cost in (0, 1), e.g. 0.1,0.2,0.3,0.4; got {list(budgets)}")
    for given, known, what in ((matches, MATCHES, "cost to match"), (retrains, RETRAINS, "retraining"),
                               (methods, METHODS, "pruning method")):
        if not given:
            raise PlanError(f"no {what} given; use one or more of {', '.join(known)}")
        unknown = [value for value in given if value not in known]
        if unknown:
            raise PlanError(f"unknown {what} {unknown[0]!r}; use {', '.join(known)}")
    if not isinstance(seeds, int) or seeds < 1:
        raise PlanError(f"seeds must be an integer >= 1, got {seeds!r}")
