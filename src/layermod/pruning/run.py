"""The prune run (``layermod prune``): a checkpoint's redundant units chosen from its modularity curve, removed,
fine-tuned, and compared with other methods at the same budget, into one run directory.

The decisions behind it: docs/design.md, section layermod.pruning.run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from layermod.analysis.curve import Curve, modularity_curve
from layermod.analysis.redundancy import Verdict, find_redundant
from layermod.data.arrays import gather
from layermod.errors import DatasetError, PlanError, TrainError
from layermod.extract.inputs import Batch, to_model
from layermod.extract.layers import auto_layers, trace_calls
from layermod.io.files import ensure_writable_dir
from layermod.io.rundir import PRUNED
from layermod.measure.config import DrawConfig, GraphConfig
from layermod.models.cache import cached_data, cached_model
from layermod.models.checkpoint import read_sidecar, save_checkpoint, sidecar_path
from layermod.data.spec import resolve_data
from layermod.models.spec import resolve_model, text_options
from layermod.models.units import removed_outputs
from layermod.pruning.budgets import Job, matched_comparison, plan_at_budget, retrain_pruned
from layermod.pruning.choices import AUTO, FINETUNE, METHODS
from layermod.pruning.pareto import MatchedComparison
from layermod.pruning.plans import SCORED, Plan, method_order, select_units
from layermod.pruning.scores import angular_distances, method_scores
from layermod.pruning.study import ChoiceSplit, PruningComparison, choice_split, compare_methods, probe_batch
from layermod.pruning.units import Unit, apply_plan, removable_units
from layermod.data.draws import balanced_subset
from layermod.training.train import TrainConfig

__all__ = ["FINETUNE", "PruneTarget", "choice_data", "choose_plan", "matched_study", "prepare", "prune_and_compare",
           "target_curve"]

_EXAMPLE = [0, 1]  # two samples: a module whose output has a batch dimension of 1 (GPT-2's position embedding)
# is told apart from the ones that keep the batch, as in a curve's batches
_SIDECAR_KEPT = ("arch", "arch_args", "dataset", "test_dataset", "normalization", "text")


@dataclass(frozen=True)
class PruneTarget:
    """A checkpoint to prune.

    Attributes:
        weights: the checkpoint's ``.safetensors`` file.
        model: its model, rebuilt from the sidecar, in eval mode.
        meta: its sidecar.
        dataset: the training data's specification (the caller's, else the sidecar's).
        trusted: whether the caller named the data (only then may they be ``module:function``).
        data_dir: folder holding the dataset files, or None.
        test_data: the held-out data the curve and the accuracies are measured on.
        example: (2, ...) two test inputs (or a dict of them), to trace the model and count its costs.
        units: its removable units (empty: nothing to prune).
        test_dataset: the held-out data's specification.
        text: the text keywords of :func:`~layermod.data.spec.resolve_data` both sets are read with
            (``{}``: not texts).
    """

    weights: str
    model: nn.Module
    meta: dict
    dataset: str
    trusted: bool
    data_dir: str | None
    test_data: Dataset
    example: Batch
    units: list[Unit]
    test_dataset: str
    text: dict


def prepare(weights: str | os.PathLike, *, dataset: str | None = None, data_dir: str | os.PathLike | None = None,
            test_dataset: str | None = None, text: dict | None = None) -> PruneTarget:
    """The checkpoint ``weights`` with its data and removable units.

    Args:
        weights: a layermod checkpoint.
        dataset: the training data (default: the sidecar's, see the module doc).
        data_dir: folder holding the dataset files.
        test_dataset: the held-out data (default: with ``dataset``, ``dataset`` again (its test split); else the
            sidecar's).
        text: the text keywords of :func:`~layermod.data.spec.resolve_data` (default: the sidecar's).

    Raises:
        LayermodError: the checkpoint cannot be read (WeightsError), names no dataset or its data cannot be loaded
            (DatasetError).
    """
    model, _ = resolve_model(None, weights=weights)
    meta = read_sidecar(weights)
    if dataset is not None:
        spec, test_spec = dataset, test_dataset if test_dataset is not None else dataset
    else:
        spec, test_spec = meta.get("dataset"), test_dataset if test_dataset is not None else meta.get("test_dataset")
    if not isinstance(spec, str) or not spec:
        raise DatasetError("the checkpoint names no dataset; pass dataset=NAME")
    test_spec = test_spec if isinstance(test_spec, str) and test_spec else spec
    trusted = dataset is not None  # data named in the sidecar may not be code
    text = text if text is not None else text_options(meta, sidecar_path(weights))
    test_set, _ = resolve_data(test_spec, split="test", data_dir=data_dir, allow_import=trusted, **text)
    example, _ = gather(test_set, _EXAMPLE[:len(test_set)])
    return PruneTarget(str(weights), model, meta, spec, trusted, None if data_dir is None else str(data_dir),
                       test_set, example, removable_units(model, example), test_spec, text)


def choice_data(target: PruneTarget, *, probe: str = "train-heldout", finetune_subset: int = 0,
                test_subset: int = 0, draws: DrawConfig | None = None) -> ChoiceSplit:
    """The target's data split into fine-tuning, choice and evaluation
    (:func:`~layermod.pruning.study.choice_split` of its training and test data); ``finetune_subset`` and
    ``test_subset``: class-balanced subsets of this many samples (0: all; seed 0); ``draws``: those of the curve
    measured on the choice's pool."""
    train_set, test_set, same = _study_data(_data_of(target))
    return choice_split(train_set, test_set, probe=probe, finetune_subset=finetune_subset, test_subset=test_subset,
                        same_images=same, draws=draws)


def choose_plan(
    target: PruneTarget,
    out: str | os.PathLike,
    *,
    curve: str | os.PathLike | Curve | None = None,
    graph: GraphConfig | None = None,
    draws: DrawConfig | None = None,
    remove: int | None = None,
    target_params: float | None = None,
    plan: str | os.PathLike | None = None,
    z: float = 2.0,
    rel_gain: float = 0.5,
    min_gain: float = 0.0,
    progress: bool = False,
    data: Dataset | None = None,
    method: str = "auto",
    bn_batches: int = 0,
) -> Plan:
    """The units to remove, in ``method``'s order; written as ``out/plan.json`` with the curve's verdicts.

    Args:
        target: from :func:`prepare`, with at least one removable unit.
        out: the run directory (created).
        curve: a curve measured on this checkpoint (a :class:`~layermod.Curve` or the directory of its
            ``curve.json``); None measures it now on ``data`` with ``graph`` and ``draws`` (default configs
            when None).
        remove, target_params, plan: the budget, exactly one of: a number of units, a share of the parameters
            (e.g. 0.3), or an (edited) ``plan.json`` whose units are taken as they are.
        z, rel_gain, min_gain: the plateau band of :func:`layermod.find_redundant`.
        progress: progress bars while measuring.
        data: the images a curve measured now is drawn from (default: the test data; the ``pool`` of
            :func:`choice_data` keeps them apart from the fine-tuning and the evaluation).
        method: a method of :data:`METHODS` other than ``none``, or ``"auto"`` (:data:`AUTO`); ``random``
            draws with seed 0. Not used with ``plan``.
        bn_batches: a removal score re-estimates batch-norm statistics on this many batches of 256 training
            images before scoring (:func:`~layermod.pruning.ablation.ablation_accuracy`; 0: never).

    Raises:
        PlanError: a curve of other layers, a budget that cannot be met, a plan that breaks the model, an
            unknown method.
    """
    if sum(choice is not None for choice in (remove, target_params, plan)) != 1:
        raise PlanError("give exactly one budget: a number of units, a share of the parameters, or a plan")
    resolved = AUTO if method == "auto" else method
    if resolved not in METHODS or resolved == "none":
        raise PlanError(f"unknown method {method!r} to choose the plan; use auto or one of "
                        f"{', '.join(m for m in METHODS if m != 'none')}")
    model, example, units = target.model, target.example, target.units
    measured = target_curve(target, curve=curve, graph=graph, draws=draws, progress=progress, data=data)
    verdicts = find_redundant(measured, z=z, rel_gain=rel_gain, min_gain=min_gain)
    if plan is not None:
        chosen = Plan.load(plan).remove
        apply_plan(model, chosen, example=example)  # refuses a plan that breaks the structure
        resolved, asked = f"edited {plan}", None
    else:
        chosen = _choose(target, resolved, measured, verdicts, remove, target_params, bn_batches, data)
        asked = method if method != resolved else None
    result = Plan(chosen, method=resolved, verdicts=verdicts, budget=len(chosen),
                  graph=GraphConfig.from_dict(measured.config),
                  draws=DrawConfig.from_dict(measured.config), asked=asked, bn_batches=bn_batches)
    result.save(out)
    return result


def _choose(target: PruneTarget, method: str, curve: Curve, verdicts: Sequence[Verdict], remove: int | None,
            target_params: float | None, bn_batches: int, pool: Dataset | None) -> list[str]:
    """The units ``method`` removes: ``remove`` of them, or enough for ``target_params`` of the parameters; a
    scored method scores the model on ``pool`` or on the training images (:func:`_training_probe`)."""
    model, units = target.model, target.units
    scores, angular = None, None
    if method in SCORED:
        x, y, refresh = _training_probe(target, bn_batches, pool)
        scores = method_scores(model, units, [method], x, y, span=remove or 1, curve=curve, verdicts=verdicts,
                               bn_batches=bn_batches, bn_inputs=refresh)
        angular = partial(angular_distances, model, units, x)  # span -> distances of runs that long
    if remove is not None:
        return select_units(method_order(method, units, verdicts=verdicts, scores=scores), units, remove)
    costs = {unit.name: {"params": unit.params} for unit in units}
    total = sum(p.numel() for p in model.parameters())
    return plan_at_budget(method, units, costs, total, target_params, "params", verdicts=verdicts, scores=scores,
                          angular=angular)


def _training_probe(target: PruneTarget, bn_batches: int,
                    pool: Dataset | None) -> tuple[Batch, torch.Tensor, Batch | None]:
    """(inputs (512, ...), labels (512,)) of a class-balanced draw (seed 0) of ``pool`` (default: the training
    data), and, with ``bn_batches``, the inputs of a draw of ``256 * bn_batches`` for re-estimating batch norm
    (else None)."""
    train_set = pool if pool is not None else resolve_data(target.dataset, split="train", data_dir=target.data_dir,
                                                           allow_import=target.trusted, **target.text)[0]
    x, y = probe_batch(balanced_subset(train_set, min(512, len(train_set))))
    refresh = probe_batch(balanced_subset(train_set, min(256 * bn_batches, len(train_set))),
                          n=256 * bn_batches)[0] if bn_batches else None
    return x, y, refresh


def target_curve(target: PruneTarget, *, curve: str | os.PathLike | Curve | None = None,
                 graph: GraphConfig | None = None, draws: DrawConfig | None = None, progress: bool = False,
                 data: Dataset | None = None) -> Curve:
    """The checkpoint's curve: ``curve`` itself, read from the ``curve`` directory (either refused unless measured
    on the model's auto points), or measured now with ``graph`` and ``draws`` on ``data`` (default: the test
    data; the ``pool`` of :func:`choice_data` for a choice apart from the evaluation)."""
    if curve is None:
        return modularity_curve(target.model, target.test_data if data is None else data, graph=graph, draws=draws,
                                progress=progress)
    measured = curve if isinstance(curve, Curve) else Curve.load(curve)
    if measured.layers != auto_layers(target.model, trace_calls(target.model, target.example)):
        raise PlanError(f"the curve in {curve} was measured on other layers than this model's auto points; "
                            "measure it on this checkpoint (drop curve=)")
    return measured


def matched_study(
    target: PruneTarget,
    out: str | os.PathLike,
    verdicts: Sequence[Verdict],
    *,
    finetune: TrainConfig = FINETUNE,
    scratch: TrainConfig | None = None,
    curve: Curve | None = None,
    train_subset: int = 0,
    test_subset: int = 0,
    probe: str = "train-heldout",
    split: ChoiceSplit | None = None,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    device: str = "cpu",
    progress: bool = False,
    **options: Any,
) -> MatchedComparison:
    """Every method at budgets matched by FLOPs and by parameters, retrained every way over seeds
    (:func:`layermod.pruning.budgets.matched_comparison`, which takes ``options``: budgets, matches, retrains,
    methods, seeds); written into ``out``.

    Args:
        target: from :func:`prepare`; verdicts: of its curve (:func:`target_curve`), ``curve`` itself for the
            methods that need it (``modularity-phase``, ``modularity-ablation``).
        finetune, scratch: the two retrainings (``scratch`` defaults to ``finetune``).
        train_subset, test_subset: retrain on / evaluate on class-balanced subsets of this many samples (0: all;
            seed 0, the same for every network).
        probe: where the scored methods' probe is drawn (:data:`~layermod.pruning.study.PROBE_SPLITS`); the
            curve is the caller's.
        split: ``choice_data(target, probe=probe, finetune_subset=train_subset, test_subset=test_subset,
            draws=...)`` when the caller has it already (to measure the curve on its pool; it then decides the
            subsets); its record goes into the config.
        backend, workers, address: where the retraining jobs run (:func:`layermod.sweep.executor.run_items`):
            in this process (``"local"``, ``workers`` None or 1), in ``workers`` processes, or on Ray actors (one
            torch thread each); every job loads the checkpoint and data itself (:func:`retrain_job`).
        device: where every network is scored, retrained and evaluated (e.g. ``"cuda"``).
    """
    model = target.model.to(device)
    example = to_model(target.example, model)
    if split is None:
        split = choice_data(target, probe=probe, finetune_subset=train_subset, test_subset=test_subset)
    run_jobs = None
    if backend != "local" or (workers or 1) > 1:
        def run_jobs(jobs):
            return _run_elsewhere(jobs, target, finetune, scratch or finetune, split.options, backend, workers,
                                  address, device, progress)
    comparison = matched_comparison(model, target.units, split.finetune, split.test, verdicts, example, finetune,
                                    scratch=scratch, progress=progress, run_jobs=run_jobs, curve=curve,
                                    probe=split.probe(), choice=split.record, **options)
    comparison.save(ensure_writable_dir(out))
    return comparison


def _study_data(data: dict) -> tuple[Dataset, Dataset, bool]:
    """(training data, test data, same): the whole sets of ``data`` (where a target's data come from,
    :func:`_data_of`), and whether they are the same samples (one file or function without splits: their loads
    describe themselves alike), so that their indices count as one set. In an executor's worker they are read once
    for its jobs (:func:`layermod.models.cache.cached_data`; a ``module:function`` dataset is code, called by every
    job, and text tables are read by every job)."""
    train_set, described = cached_data(data["dataset"], split="train", data_dir=data["data_dir"],
                                       allow_import=data["trusted"], **data["text"])
    test_set, test_described = cached_data(data["test_dataset"], split="test", data_dir=data["data_dir"],
                                           allow_import=data["trusted"], **data["text"])
    return train_set, test_set, described == test_described


def _study_sets(data: dict, choice: dict) -> tuple[Dataset, Dataset]:
    """(retraining data, test data) of a study's ``data`` (:func:`_study_data`), split again as the study's
    split was drawn (``choice``: its :attr:`~layermod.pruning.study.ChoiceSplit.options`)."""
    train_set, test_set, _ = _study_data(data)
    split = choice_split(train_set, test_set, **choice)
    return split.finetune, split.test


def _data_of(target: PruneTarget) -> dict:
    """Where a target's data come from, as plain values a job can be sent: specifications, folder, trust, text
    keywords."""
    return {"dataset": target.dataset, "test_dataset": target.test_dataset, "data_dir": target.data_dir,
            "trusted": target.trusted, "text": dict(target.text)}


def retrain_job(weights: str, data: dict, choice: dict, device: str, removed: list[str], retrain: str, seed: int,
                config: dict) -> dict:
    """One retraining job of :func:`matched_study`, run where the executor puts it: loads the checkpoint and its
    ``data`` (where they come from, as plain values) (a worker reads them once for all its jobs, each job
    getting its own copy of the model), split as the study split them (``choice``: the options of its
    :class:`~layermod.pruning.study.ChoiceSplit`), then :func:`layermod.pruning.budgets.retrain_pruned` on
    ``device``."""
    train_set, test_set = _study_sets(data, choice)
    example, _ = gather(test_set, _EXAMPLE[:len(test_set)])
    model, _ = cached_model(None, weights=weights)
    model = model.to(device)
    return retrain_pruned(model, (tuple(removed), retrain, seed), TrainConfig(**config), train_set, test_set,
                          to_model(example, model))


def _run_elsewhere(jobs: list[Job], target: PruneTarget, finetune: TrainConfig, scratch: TrainConfig,
                   choice: dict, backend: str, workers: int | None,
                   address: str | None, device: str, progress: bool | str) -> list[dict]:
    """The jobs as :func:`retrain_job` items of :func:`layermod.sweep.executor.run_items`; the first failure is one
    TrainError."""
    from layermod.sweep.executor import run_items

    common = {"weights": target.weights, "data": _data_of(target), "choice": choice, "device": device}
    items = [(f"job-{i}", {**common, "removed": list(removed), "retrain": retrain, "seed": seed,
                           "config": (finetune if retrain == "finetune" else scratch).to_dict()})
             for i, (removed, retrain, seed) in enumerate(jobs)]
    results = run_items(retrain_job, items, backend=backend, workers=workers, address=address, threads=1,
                        progress=progress)
    failed = [result for result in results if not result.ok]
    if failed:
        raise TrainError(f"{len(failed)} of {len(results)} retraining jobs failed; the first: {failed[0].error}")
    return [result.value for result in results]


def prune_and_compare(
    target: PruneTarget,
    plan: Plan,
    out: str | os.PathLike,
    *,
    finetune: TrainConfig = FINETUNE,
    methods: Sequence[str] = METHODS,
    seeds: int = 3,
    finetune_subset: int = 0,
    from_scratch: bool = False,
    progress: bool = False,
    curve: Curve | None = None,
    probe: str = "train-heldout",
    split: ChoiceSplit | None = None,
    bn_batches: int = 0,
) -> PruningComparison:
    """Prune as many units as ``plan`` by every method, fine-tune, evaluate; write the comparison into
    ``out`` and the model of the plan's method (its row removes ``plan``'s units; ``modularity`` for a plan
    edited by hand), compared whether or not ``methods`` names it, as ``out/pruned.safetensors``.

    Args:
        target, plan: from :func:`prepare` and :func:`choose_plan`.
        finetune: the fine-tuning of every pruned model (its seed is replaced by 0..seeds-1); its batch size is
            also the batch timed for latency.
        methods, seeds, from_scratch: see :func:`layermod.pruning.study.compare_methods`.
        finetune_subset: fine-tune on a class-balanced subset of this many training samples (0: all).
        curve: the curve behind ``plan``, for ``modularity-phase`` and ``modularity-ablation``.
        probe: where the scored methods' probe is drawn (:data:`~layermod.pruning.study.PROBE_SPLITS`).
        split: ``choice_data(target, probe=probe, finetune_subset=finetune_subset)`` when the caller has it
            already (the one whose pool the plan's curve was measured on); its record is the comparison's
            ``config["choice"]``.
    if split is None:
        split = choice_data(target, probe=probe, finetune_subset=finetune_subset)
    train_set, test_set = split.finetune, split.test
        bn_batches: the removal scores' batch-norm re-estimation (see :func:`choose_plan`).
    """
    planned = plan.method if plan.method in METHODS and plan.method != "none" else "modularity"
    methods = list(dict.fromkeys([*methods, planned]))
    if split is None:
        split = choice_data(target, probe=probe, finetune_subset=finetune_subset)
    train_set, test_set = split.finetune, split.test
    latency_batch, _ = gather(test_set, list(range(min(finetune.batch_size, len(test_set)))))
    comparison, finals = compare_methods(target.model, target.units, len(plan.remove), train_set, test_set, finetune,
                                         plan.verdicts, target.example, methods=methods, seeds=seeds,
                                         latency_batch=latency_batch, plan=plan.remove, from_scratch=from_scratch,
                                         progress=progress, curve=curve, probe=split.probe(), planned=planned,
                                         bn_batches=bn_batches)
    comparison = replace(comparison, config={"choice": split.record})
    out = ensure_writable_dir(out)
    comparison.save(out)
    row = next(r for r in comparison.rows if r["method"] == planned)
    meta = {key: value for key, value in target.meta.items() if key in _SIDECAR_KEPT}
    outputs = removed_outputs(finals[planned])  # the removed units that stood for a tuple
    record = {"remove": plan.remove, **({"outputs": outputs} if outputs else {})}
    save_checkpoint(finals[planned], out / PRUNED,
                    {**meta, "plan": record, "accuracy": row["accs"][0], "finetune": finetune.to_dict()})
    return comparison
