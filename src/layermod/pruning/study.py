"""Prune the same number of layers by several methods, fine-tune each identically, and compare.

Methods, each an order of the removable units (most removable first) from which
:func:`layermod.redundancy.select_units` takes the budget under the stage rule:

* ``modularity``: smallest modularity increment first (drops, then plateaus): the paper's criterion;
* ``steepest``: largest increment first, the opposite choice, to test whether losing Q costs accuracy;
* ``cosine``: smallest block influence ``1 - cos(input, output)`` first (the score used to prune LLM layers);
* ``random``: a seeded shuffle, a new one per seed;
* ``first`` / ``last``: the earliest / the deepest units;
* ``none``: nothing removed: the original model, fine-tuned the same way, as the reference.

Every pruned model starts from the original's weights (:func:`layermod.prune.apply_plan`), is fine-tuned with
the same :class:`~layermod.train.TrainConfig` once per seed, and evaluated before and after fine-tuning. A row
per method reports what was removed (for the first seed), parameters, MACs and FLOPs per sample, CPU latency of
one batch, and test accuracy mean and std over seeds. :func:`read_comparison` reads the rows back from
``comparison.json`` and refuses rows that cannot be (see :func:`comparison_from_dict`).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from layermod.errors import PlanError
from layermod.io.files import atomic_path, ensure_writable_dir, read_json_file, save_png, write_csv
from layermod.pruning.units import Unit, apply_plan, block_influence, latency, model_cost
from layermod.analysis.redundancy import Verdict, rank_by_increment, select_units
from layermod.training.train import TrainConfig, evaluate, train
from layermod.io.validate import literal_text, mapping, names, number, numbers, required, shorten

__all__ = ["METHODS", "compare_methods", "comparison_from_dict", "method_order", "plot_comparison", "read_comparison",
           "save_comparison"]

METHODS = ("none", "modularity", "steepest", "cosine", "random", "first", "last")


def method_order(
    method: str,
    units: Sequence[Unit],
    verdicts: Sequence[Verdict] | None = None,
    influence: dict[str, float] | None = None,
    seed: int = 0,
) -> list[str]:
    """Unit names in the order ``method`` would remove them (see module doc)."""
    names = [unit.name for unit in units]
    if method == "modularity":
        return rank_by_increment(verdicts, units)
    if method == "steepest":
        return rank_by_increment(verdicts, units)[::-1]
    if method == "cosine":
        return sorted(names, key=lambda name: influence[name])
    if method == "random":
        return [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    if method == "first":
        return names
    if method == "last":
        return names[::-1]
    raise PlanError(f"unknown pruning method {method!r}; use {', '.join(METHODS)}")


def compare_methods(
    model: nn.Module,
    units: Sequence[Unit],
    budget: int,
    train_data: Dataset,
    test_data: Dataset,
    finetune: TrainConfig,
    verdicts: Sequence[Verdict],
    example: torch.Tensor,
    methods: Sequence[str] = METHODS,
    seeds: int = 3,
    latency_batch: torch.Tensor | None = None,
    plan: Sequence[str] | None = None,
    from_scratch: bool = False,
    progress: bool = True,
) -> tuple[list[dict], dict[str, nn.Module]]:
    """Prune ``budget`` units by every method, fine-tune per seed, evaluate.

    Args:
        model: the trained network (not modified).
        units: its removable units (:func:`layermod.prune.removable_units`).
        budget: units to remove per method.
        train_data, test_data: fine-tuning data and held-out data.
        finetune: fine-tuning settings; its seed is replaced by 0..seeds-1.
        verdicts: :func:`layermod.redundancy.find_redundant` of the model's curve.
        example: one input (1, ...) for counting MACs/FLOPs and checking shapes.
        methods: names from :data:`METHODS`.
        seeds: fine-tuning runs per method (random also draws a new plan per seed).
        latency_batch: (B, ...) inputs timed for CPU latency (default: ``example``).
        plan: units for the ``modularity`` method instead of its own choice (an edited plan.json).
        from_scratch: re-initialise every pruned model (seeded) before training, as the paper retrained its
            pruned networks, instead of fine-tuning from the surviving weights.

    Returns:
        (rows, models): one row per method with keys method, layers_removed, params, macs, flops,
        latency_ms, acc_pruned_mean, acc_mean, acc_std, accs; and the seed-0 fine-tuned model per method.
    """
    for method in methods:
        if method not in METHODS:
            raise PlanError(f"unknown pruning method {method!r}; use {', '.join(METHODS)}")
    influence = block_influence(model, units, _probe_inputs(test_data)) if "cosine" in methods else None
    timed = latency_batch if latency_batch is not None else example
    rows, finals = [], {}
    bar = tqdm(total=len(methods) * seeds, desc="prune + fine-tune", disable=None if progress else True)
    for method in methods:
        accs, pruned_accs, plans = [], [], []
        for seed in range(seeds):
            if method == "none":
                remove: list[str] = []
            elif method == "modularity" and plan is not None:
                remove = list(plan)
            else:
                order = method_order(method, units, verdicts, influence, seed)
                remove = select_units(order, units, budget)
            pruned = apply_plan(model, remove, example) if remove else copy.deepcopy(model)
            pruned_accs.append(evaluate(pruned, test_data))
            if from_scratch:
                _reinitialise(pruned, seed)
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
    return rows, finals


def save_comparison(rows: Sequence[dict], out_dir: str | os.PathLike) -> None:
    """Write comparison.json (the source of truth), .csv, .md and comparison.png (accuracy against removed
    FLOPs, mean with std bars) into ``out_dir``, each file whole or not at all."""
    out = ensure_writable_dir(out_dir)
    columns = ["method", "n_removed", "params", "macs", "flops", "latency_ms", "acc_pruned_mean", "acc_mean",
               "acc_std"]
    write_csv(out / "comparison.csv", [*columns, "layers_removed"],
              ([*(row[c] for c in columns), " ".join(row["layers_removed"])] for row in rows))
    lines = ["| method | removed | params | MACs | FLOPs | latency (ms) | acc. pruned | acc. fine-tuned |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['method']} | {row['n_removed']} | {row['params']:,} | {row['macs']:,} | "
                     f"{row['flops']:,} | {row['latency_ms']:.2f} | {100 * row['acc_pruned_mean']:.2f} % | "
                     f"{100 * row['acc_mean']:.2f} ± {100 * row['acc_std']:.2f} % |")
    with atomic_path(out / "comparison.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    plot_comparison(rows, out / "comparison.png")
    with atomic_path(out / "comparison.json") as tmp:
        tmp.write_text(json.dumps({"rows": list(rows)}, indent=2))


def comparison_from_dict(data: object) -> list[dict]:
    """The rows of a ``comparison.json`` read from a file, checked as :mod:`layermod.validate` says: one row per
    method of :data:`METHODS`, each with the units removed (as many as ``n_removed``), params, MACs and FLOPs
    (integers, FLOPs >= 1), a latency >= 0 and accuracies (and their std) in [0, 1]. Raises ValueError naming
    the first problem."""
    rows = required(mapping(data, "the comparison"), "rows")
    if not isinstance(rows, list) or not 1 <= len(rows) <= len(METHODS):
        raise ValueError(f"rows is not a list of 1 to {len(METHODS)} rows")
    checked = [_row(i, row) for i, row in enumerate(rows)]
    methods = [row["method"] for row in checked]
    if len(set(methods)) < len(methods):
        raise ValueError(f"a method has two rows: {', '.join(methods)}")
    return checked


def _row(i: int, row: object) -> dict:
    """``rows[i]`` of a comparison, checked (see :func:`comparison_from_dict`)."""
    where = f"rows[{i}]"
    row = mapping(row, where)
    method = required(row, "method")
    if method not in METHODS:
        raise ValueError(f"{where}.method is {shorten(repr(method))}, not one of {', '.join(METHODS)}")
    removed = names(required(row, "layers_removed"), f"{where}.layers_removed", empty=True)
    if number(required(row, "n_removed"), f"{where}.n_removed", 0, integer=True) != len(removed):
        raise ValueError(f"{where}.n_removed is {row['n_removed']} for {len(removed)} layers removed")
    for key in ("params", "macs"):
        number(required(row, key), f"{where}.{key}", 0, integer=True)
    number(required(row, "flops"), f"{where}.flops", 1, integer=True)
    number(required(row, "latency_ms"), f"{where}.latency_ms", 0)
    for key in ("acc_pruned_mean", "acc_mean", "acc_std"):
        number(required(row, key), f"{where}.{key}", 0, 1)
    numbers(required(row, "accs"), f"{where}.accs", (None,), 0, 1)
    return dict(row)


def read_comparison(path: str | os.PathLike) -> list[dict]:
    """The rows of ``comparison.json`` (or the one inside a run directory), checked by
    :func:`comparison_from_dict`; a one-line :class:`~layermod.errors.ReportError` naming the file otherwise."""
    return read_json_file(path, "comparison.json", comparison_from_dict, "a pruning comparison")


@literal_text
def plot_comparison(rows: Sequence[dict], path: str | os.PathLike | None = None):
    """Accuracy after fine-tuning (mean with std bars) against the FLOPs each method removed, one point per
    row of a comparison; returns the Figure, written as PNG (atomically) with ``path``."""
    from matplotlib.figure import Figure

    base = next((row for row in rows if row["method"] == "none"), rows[0])
    ax = Figure(figsize=(6.4, 4.2)).add_subplot()
    for row in rows:
        saved = 100 * (1 - row["flops"] / base["flops"])
        ax.errorbar(saved, 100 * row["acc_mean"], yerr=100 * row["acc_std"], fmt="o", capsize=3, label=row["method"])
    ax.set_xlabel("FLOPs removed (%)")
    ax.set_ylabel("test accuracy after fine-tuning (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    if path is not None:
        save_png(ax.figure, path)
    return ax.figure


def _reinitialise(model: nn.Module, seed: int) -> None:
    """Fresh default initialisation of every layer that has one, seeded."""
    torch.manual_seed(seed)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()


def _probe_inputs(data: Dataset, n: int = 512) -> torch.Tensor:
    """The first ``n`` inputs of ``data`` (N, ...), for the block-influence score."""
    from layermod.data.datasets import gather

    x, _ = gather(data, np.arange(min(n, len(data))))
    return x
