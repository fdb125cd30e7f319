"""Prune the same number of layers by several methods, fine-tune each identically, and compare.

Each method of :data:`~layermod.pruning.plans.METHODS` is an order of the removable units (most removable
first, :func:`~layermod.pruning.plans.method_order`) from which :func:`~layermod.pruning.plans.select_units`
takes the budget under the stage rule; ``none`` removes nothing: the original model, fine-tuned the same way,
as the reference.

Every pruned model starts from the original's weights (:func:`layermod.pruning.units.apply_plan`), is
fine-tuned with the same :class:`~layermod.training.train.TrainConfig` once per seed, and evaluated before and
after fine-tuning. A row per method reports what was removed (for the first seed), parameters, MACs and FLOPs
per sample, CPU latency of one batch, and test accuracy mean and std over seeds: a :class:`PruningComparison`,
written as ``comparison.json`` (the source of truth) with ``.csv``, ``.md`` and ``.png`` twins and read back by
:meth:`PruningComparison.load`, which refuses rows that cannot be (see :meth:`PruningComparison.from_dict`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from layermod.analysis.curve import Curve
from layermod.analysis.redundancy import Verdict
from layermod.coerce import bar_disabled, torch_seed
from layermod.errors import PlanError
from layermod.extract.inputs import Batch
from layermod.io.files import atomic_path, ensure_writable_dir, read_json_file, save_png, write_csv, write_json
from layermod.io.table import TableResult, new_axes
from layermod.io.rundir import COMPARISON_CSV, COMPARISON_JSON, COMPARISON_MD, COMPARISON_PNG
from layermod.io.validate import literal_text, mapping, names, number, numbers, required, shorten
from layermod.pruning.plans import METHODS, SCORED, method_order, select_units
from layermod.pruning.scores import method_scores
from layermod.pruning.units import Unit, apply_plan, latency, model_cost
from layermod.training.train import TrainConfig, evaluate, train

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["PruningComparison", "check_removed", "compare_methods", "probe_batch", "reinitialise"]

_COLUMNS = ["method", "n_removed", "params", "macs", "flops", "latency_ms", "acc_pruned_mean", "acc_mean", "acc_std"]


def compare_methods(
    model: nn.Module,
    units: Sequence[Unit],
    budget: int,
    train_data: Dataset,
    test_data: Dataset,
    finetune: TrainConfig,
    verdicts: Sequence[Verdict],
    example: Batch,
    *,
    methods: Sequence[str] = METHODS,
    seeds: int = 3,
    latency_batch: Batch | None = None,
    plan: Sequence[str] | None = None,
    from_scratch: bool = False,
    progress: bool | str = "auto",
    curve: Curve | None = None,
    planned: str = "modularity",
    bn_batches: int = 0,
) -> tuple[PruningComparison, dict[str, nn.Module]]:
    """Prune ``budget`` units by every method, fine-tune per seed, evaluate.

    Args:
        model: the trained network (not modified).
        units: its removable units (:func:`layermod.pruning.units.removable_units`).
        budget: units to remove per method.
        train_data, test_data: fine-tuning data and held-out data.
        finetune: fine-tuning settings; its seed is replaced by 0..seeds-1.
        verdicts: :func:`layermod.analysis.redundancy.find_redundant` of the model's curve.
        example: one input (1, ...), or a dict of them, for counting MACs/FLOPs and checking shapes.
        methods: names from :data:`~layermod.pruning.plans.METHODS`.
        seeds: fine-tuning runs per method (random also draws a new plan per seed).
        latency_batch: (B, ...) inputs (or a dict of them) timed for CPU latency (default: ``example``).
        plan: units for the ``planned`` method instead of its own choice (the plan.json of its choice, or one
            edited by hand).
        from_scratch: re-initialise every pruned model (seeded) before training, as the paper retrained its
            pruned networks, instead of fine-tuning from the surviving weights.
        curve: the model's curve (``verdicts`` are its verdicts), for ``modularity-phase`` and
            ``modularity-ablation``.
        bn_batches: the removal scores re-estimate batch-norm statistics on this many batches of 256 training
            images before scoring (:func:`~layermod.pruning.ablation.ablation_accuracy`; 0: never).

    Returns:
        (comparison, models): a :class:`PruningComparison` with one row per method, and the seed-0 fine-tuned
        model per method.
    """
    for method in methods:
        if method not in METHODS:
            raise PlanError(f"unknown pruning method {method!r}; use {', '.join(METHODS)}")
    scores = {}
    if set(SCORED) & set(methods):  # runs of angular as long as the budget
        refresh = probe_batch(train_data, n=256 * bn_batches)[0] if bn_batches else None
        scores = method_scores(model, units, methods, *probe_batch(test_data), span=budget, curve=curve,
                               verdicts=verdicts, bn_batches=bn_batches, bn_inputs=refresh)
    timed = latency_batch if latency_batch is not None else example
    rows, finals = [], {}
    bar = tqdm(total=len(methods) * seeds, desc="prune + fine-tune", disable=bar_disabled(progress))
    for method in methods:
        accs, pruned_accs, plans = [], [], []
        for seed in range(seeds):
            if method == "none":
                remove: list[str] = []
            elif method == planned and plan is not None:
                remove = list(plan)
            else:
                order = method_order(method, units, verdicts=verdicts, scores=scores, seed=seed)
                remove = select_units(order, units, budget)
            pruned = apply_plan(model, remove, example=example) if remove else copy.deepcopy(model)
            pruned_accs.append(evaluate(pruned, test_data))
            if from_scratch:
                reinitialise(pruned, seed)
            train(pruned, train_data, None, replace(finetune, seed=seed), progress=False)
            accs.append(evaluate(pruned, test_data))
            plans.append(remove)
            if seed == 0:
                finals[method] = pruned
            bar.update()
        cost = model_cost(finals[method], example)
        rows.append({
            "method": method,
            "layers_removed": plans[0],
            "n_removed": len(plans[0]),
            **cost,
            "latency_ms": 1000 * latency(finals[method], timed),
            "acc_pruned_mean": float(np.mean(pruned_accs)),
            "acc_mean": float(np.mean(accs)),
            "acc_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
            "accs": accs,
        })
    bar.close()
    return PruningComparison(rows), finals


@dataclass(frozen=True, repr=False)
class PruningComparison(TableResult):
    """Pruning methods compared at the same budget, as :func:`compare_methods` measured them.

    Attributes:
        rows: one dict per method with keys method, layers_removed, n_removed, params, macs, flops, latency_ms,
            acc_pruned_mean, acc_mean, acc_std and accs (the accuracy after fine-tuning with each seed).
    """

    rows: list[dict]

    def to_dict(self) -> dict:
        """JSON-ready ``{"rows": [...]}``."""
        return {"rows": list(self.rows)}

    @classmethod
    def from_dict(cls, data: object) -> PruningComparison:
        """The comparison of a ``comparison.json`` read from a file, checked as :mod:`layermod.io.validate` says:
        one row per method of :data:`~layermod.pruning.plans.METHODS`, each with the units removed (as many as
        ``n_removed``), params, MACs and FLOPs (integers, FLOPs >= 1), a latency >= 0 and accuracies (and their
        std) in [0, 1]. Raises ValueError naming the first problem."""
        rows = required(mapping(data, "the comparison"), "rows")
        if not isinstance(rows, list) or not 1 <= len(rows) <= len(METHODS):
            raise ValueError(f"rows is not a list of 1 to {len(METHODS)} rows")
        checked = [_row(i, row) for i, row in enumerate(rows)]
        methods = [row["method"] for row in checked]
        if len(set(methods)) < len(methods):
            raise ValueError(f"a method has two rows: {', '.join(methods)}")
        return cls(checked)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PruningComparison:
        """Read ``comparison.json`` (or the one inside a run directory), checked by :meth:`from_dict`; a one-line
        :class:`~layermod.errors.ReportError` naming the file otherwise."""
        return read_json_file(path, COMPARISON_JSON, cls.from_dict, "a pruning comparison")

    def markdown(self) -> str:
        """The rows as a Markdown table (``comparison.md``), accuracies in percent."""
        lines = ["| method | removed | params | MACs | FLOPs | latency (ms) | acc. pruned | acc. fine-tuned |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for row in self.rows:
            lines.append(f"| {row['method']} | {row['n_removed']} | {row['params']:,} | {row['macs']:,} | "
                         f"{row['flops']:,} | {row['latency_ms']:.2f} | {100 * row['acc_pruned_mean']:.2f} % | "
                         f"{100 * row['acc_mean']:.2f} ± {100 * row['acc_std']:.2f} % |")
        return "\n".join(lines) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Write comparison.csv, .md, .png (accuracy against removed FLOPs, mean with std bars) and, last,
        comparison.json (the source of truth) into ``path`` (created), each file whole or not at all; returns
        the directory."""
        out = ensure_writable_dir(path)
        write_csv(out / COMPARISON_CSV, [*_COLUMNS, "layers_removed"],
                  ([*(row[c] for c in _COLUMNS), " ".join(row["layers_removed"])] for row in self.rows))
        with atomic_path(out / COMPARISON_MD) as tmp:
            tmp.write_text(self.markdown())
        ax = self.plot(ax=new_axes((6.4, 4.2), interactive=False))
        ax.figure.tight_layout()
        save_png(ax.figure, out / COMPARISON_PNG)
        write_json(out / COMPARISON_JSON, self.to_dict())
        return out

    @literal_text
    def plot(self, *, ax: Axes | None = None) -> Axes:
        """Accuracy after fine-tuning (mean with std bars) against the FLOPs each method removed, one point per
        row, into ``ax`` (default: a new figure's); returns the Axes."""
        base = next((row for row in self.rows if row["method"] == "none"), self.rows[0])
        ax = ax if ax is not None else new_axes((6.4, 4.2))
        for row in self.rows:
            saved = 100 * (1 - row["flops"] / base["flops"])
            ax.errorbar(saved, 100 * row["acc_mean"], yerr=100 * row["acc_std"], fmt="o", capsize=3,
                        label=row["method"])
        ax.set_xlabel("FLOPs removed (%)")
        ax.set_ylabel("test accuracy after fine-tuning (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return ax

    def _table(self) -> tuple[list[str], list[list]]:
        return [*_COLUMNS, "layers_removed"], [[*(row[c] for c in _COLUMNS), " ".join(row["layers_removed"])]
                                               for row in self.rows]


def check_removed(row: dict, where: str) -> list[str]:
    """The unit names of a row read from a file (``layers_removed``), as many as its ``n_removed`` says;
    ValueError naming ``where`` otherwise."""
    removed = names(required(row, "layers_removed"), f"{where}.layers_removed", empty=True)
    if number(required(row, "n_removed"), f"{where}.n_removed", low=0, integer=True) != len(removed):
        raise ValueError(f"{where}.n_removed is {row['n_removed']} for {len(removed)} layers removed")
    return removed


def _row(i: int, row: object) -> dict:
    """``rows[i]`` of a comparison, checked (see :meth:`PruningComparison.from_dict`)."""
    where = f"rows[{i}]"
    row = mapping(row, where)
    method = required(row, "method")
    if method not in METHODS:
        raise ValueError(f"{where}.method is {shorten(repr(method))}, not one of {', '.join(METHODS)}")
    check_removed(row, where)
    for key in ("params", "macs"):
        number(required(row, key), f"{where}.{key}", low=0, integer=True)
    number(required(row, "flops"), f"{where}.flops", low=1, integer=True)
    number(required(row, "latency_ms"), f"{where}.latency_ms", low=0)
    for key in ("acc_pruned_mean", "acc_mean", "acc_std"):
        number(required(row, key), f"{where}.{key}", low=0, high=1)
    numbers(required(row, "accs"), f"{where}.accs", (None,), low=0, high=1)
    return dict(row)


def reinitialise(model: nn.Module, seed: int) -> None:
    """Fresh default initialisation of every layer that has one, seeded."""
    torch.manual_seed(torch_seed(seed, PlanError))
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()


def probe_batch(data: Dataset, *, n: int = 512) -> tuple[Batch, torch.Tensor]:
    """The first ``n`` samples of ``data``: inputs (n, ...) or a dict of them, and labels (n,), the probe of the
    scored methods."""
    from layermod.data.arrays import gather

    x, y = gather(data, np.arange(min(n, len(data))))
    return x, torch.as_tensor(y)
