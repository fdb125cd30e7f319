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

**Which images choose the layers** (:func:`choice_split`): with ``probe="train-heldout"`` (the default of the
prune runs) the curve's draws and the probe of the scored methods come from training images the fine-tuning
never sees, class-balanced and seeded, so neither the retraining nor the evaluation shares an image with the
choice; with ``"test"`` they come from the test data, as the paper measured its curves. The split's record (its
name, its size, and whether it shares an image with the evaluation or the fine-tuning, computed from the
indices) goes into the result's config; files written before it was recorded chose on the test split
(:func:`choice_of`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset
from tqdm.auto import tqdm

from layermod.analysis.curve import Curve
from layermod.analysis.redundancy import Verdict
from layermod.coerce import bar_disabled, torch_seed
from layermod.data.arrays import ArrayDataset, dataset_labels
from layermod.data.batches import take
from layermod.data.draws import balanced_draws, balanced_subset
from layermod.data.text import TokenDataset
from layermod.errors import PlanError
from layermod.extract.inputs import Batch
from layermod.io.files import atomic_path, ensure_writable_dir, read_json_file, save_png, write_csv, write_json
from layermod.io.table import TableResult, new_axes
from layermod.measure.config import DrawConfig
from layermod.io.rundir import COMPARISON_CSV, COMPARISON_JSON, COMPARISON_MD, COMPARISON_PNG
from layermod.io.validate import literal_text, mapping, names, number, numbers, required, shorten
from layermod.pruning.choices import PROBE_SPLITS
from layermod.pruning.plans import METHODS, SCORED, method_order, select_units
from layermod.pruning.scores import method_scores
from layermod.pruning.units import Unit, apply_plan, latency, model_cost
from layermod.training.train import TrainConfig, evaluate, train

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["PROBE_SPLITS", "ChoiceSplit", "PruningComparison", "check_removed", "choice_of", "choice_split",
           "compare_methods", "probe_batch", "reinitialise"]

HELDOUT_SHARE = 10  # fine-tuning on the whole training set holds out at least a class-balanced tenth for the choice
_TEST_CHOICE = {"split": "test", "samples": None, "disjoint_from_eval": False}  # files without a record

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
    probe: tuple[Batch, torch.Tensor] | None = None,
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
        probe: (inputs (n, ...) or a dict of them, labels (n,)) that score the scored methods (default: the
            first 512 samples of ``test_data``; :meth:`ChoiceSplit.probe` gives one disjoint from it).
        bn_batches: the removal scores re-estimate batch-norm statistics on this many batches of 256 training
            images before scoring (:func:`~layermod.pruning.ablation.ablation_accuracy`; 0: never).

    Returns:
        (comparison, models): a :class:`PruningComparison` with one row per method, and the seed-0 fine-tuned
        model per method.
    """
    for method in methods:
        if method not in METHODS:
            raise PlanError(f"unknown pruning method {method!r}; use {', '.join(METHODS)}")
    scores = _scores(model, units, methods, probe or probe_batch(test_data), train_data, budget=budget, curve=curve,
                     verdicts=verdicts, bn_batches=bn_batches)
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
                remove = select_units(method_order(method, units, verdicts=verdicts, scores=scores, seed=seed),
                                      units, budget)
            pruned, before, after = _prune_and_train(model, remove, example, train_data, test_data,
                                                     replace(finetune, seed=seed), from_scratch=from_scratch)
            pruned_accs.append(before)
            accs.append(after)
            plans.append(remove)
            if seed == 0:
                finals[method] = pruned
            bar.update()
        rows.append({"method": method, "layers_removed": plans[0], "n_removed": len(plans[0]),
                     **model_cost(finals[method], example), "latency_ms": 1000 * latency(finals[method], timed),
                     "acc_pruned_mean": float(np.mean(pruned_accs)), "acc_mean": float(np.mean(accs)),
                     "acc_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0, "accs": accs})
    bar.close()
    return PruningComparison(rows), finals



def _scores(model: nn.Module, units: Sequence[Unit], methods: Sequence[str], probe: tuple[Batch, torch.Tensor],
            train_data: Dataset, *, budget: int, curve: Curve | None, verdicts: Sequence[Verdict],
            bn_batches: int) -> dict:
    """The scores of the scored methods among ``methods`` on ``probe`` (runs of angular as long as the budget;
    batch norm re-estimated on the first ``256 * bn_batches`` training images); {} when there are none."""
    if not set(SCORED) & set(methods):
        return {}
    refresh = probe_batch(train_data, n=256 * bn_batches)[0] if bn_batches else None
    return method_scores(model, units, methods, *probe, span=budget, curve=curve, verdicts=verdicts,
                         bn_batches=bn_batches, bn_inputs=refresh)

def _prune_and_train(model: nn.Module, remove: list[str], example: Batch, train_data: Dataset, test_data: Dataset,
                     config: TrainConfig, *, from_scratch: bool) -> tuple[nn.Module, float, float]:
    """(the pruned network, trained with ``config``; its test accuracy before and after training)."""
    pruned = apply_plan(model, remove, example=example) if remove else copy.deepcopy(model)
    before = evaluate(pruned, test_data)
    if from_scratch:
        reinitialise(pruned, config.seed)
    train(pruned, train_data, None, config, progress=False)
    return pruned, before, evaluate(pruned, test_data)


@dataclass(frozen=True, repr=False)
class PruningComparison(TableResult):
    """Pruning methods compared at the same budget, as :func:`compare_methods` measured them.

    Attributes:
        rows: one dict per method with keys method, layers_removed, n_removed, params, macs, flops, latency_ms,
            acc_pruned_mean, acc_mean, acc_std and accs (the accuracy after fine-tuning with each seed).
        config: what the run recorded about itself: ``choice``, the record of :func:`choice_split` (``{}``:
            nothing, as in files written before it).
    """

    rows: list[dict]
    config: dict = field(default_factory=dict, kw_only=True)

    def to_dict(self) -> dict:
        """JSON-ready ``{"rows": [...], "config": {...}}`` (no ``config`` when it is empty).

        Returns:
            The dict, one row per method.
        """
        return {"rows": list(self.rows), **({"config": dict(self.config)} if self.config else {})}

    @classmethod
    def from_dict(cls, data: object) -> PruningComparison:
        """The comparison of a ``comparison.json`` read from a file.

        Checked as :mod:`layermod.io.validate` says: one row per method of :data:`~layermod.pruning.plans.METHODS`,
        each with the units removed (as many as ``n_removed``), params, MACs and FLOPs (integers, FLOPs >= 1), a
        latency >= 0 and accuracies (and their std) in [0, 1].

        Args:
            data: a dict as :meth:`to_dict` writes it.

        Returns:
            The :class:`PruningComparison`.

        Raises:
            ValueError: naming the first problem.
        """
        rows = required(mapping(data, "the comparison"), "rows")
        if not isinstance(rows, list) or not 1 <= len(rows) <= len(METHODS):
            raise ValueError(f"rows is not a list of 1 to {len(METHODS)} rows")
        checked = [_row(i, row) for i, row in enumerate(rows)]
        methods = [row["method"] for row in checked]
        if len(set(methods)) < len(methods):
            raise ValueError(f"a method has two rows: {', '.join(methods)}")
        return cls(checked, config=dict(mapping(data.get("config", {}), "config")))

    @classmethod
    def load(cls, path: str | os.PathLike) -> PruningComparison:
        """Read ``comparison.json`` (or the one inside a run directory), checked by :meth:`from_dict`.

        Args:
            path: the file or the run directory.

        Returns:
            The :class:`PruningComparison`.

        Raises:
            ReportError: the file cannot be read (one line naming it).
        """
        return read_json_file(path, COMPARISON_JSON, cls.from_dict, "a pruning comparison")

    def markdown(self) -> str:
        """The rows as a Markdown table (``comparison.md``), accuracies in percent.

        Returns:
            The Markdown text.
        """
        lines = ["| method | removed | params | MACs | FLOPs | latency (ms) | acc. pruned | acc. fine-tuned |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for row in self.rows:
            lines.append(f"| {row['method']} | {row['n_removed']} | {row['params']:,} | {row['macs']:,} | "
                         f"{row['flops']:,} | {row['latency_ms']:.2f} | {100 * row['acc_pruned_mean']:.2f} % | "
                         f"{100 * row['acc_mean']:.2f} ± {100 * row['acc_std']:.2f} % |")
        return "\n".join(lines) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Write comparison.csv, .md, .png and, last, comparison.json into ``path`` (created).

        The figure shows accuracy against removed FLOPs, mean with std bars; ``comparison.json`` is the source of
        truth. Each file is whole or not at all.

        Args:
            path: the run directory.

        Returns:
            The directory.

        Raises:
            OutputError: ``path`` cannot be created or written.
        """
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
        """Accuracy after fine-tuning (mean with std bars) against the FLOPs each method removed.

        One point per row.

        Args:
            ax: the Axes to draw into (default: a new figure's).

        Returns:
            The Axes.
        """
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


@dataclass(frozen=True)
class ChoiceSplit:
    """The images that choose the layers, those that retrain and those that score (:func:`choice_split`).

    Attributes:
        split: a name of :data:`PROBE_SPLITS`.
        finetune: the retraining data; test: the evaluation data.
        pool: the images the choice draws from: the curve's draws and :meth:`probe`.
        record: ``{"split", "samples" (the pool's size), "disjoint_from_eval", "disjoint_from_finetune"}``, the
            two booleans computed from the index sets.
        options: the keywords of :func:`choice_split` that drew it, as plain values (``draws`` as a dict), so
            that a worker given the same data draws it again.
    """

    split: str
    finetune: Dataset
    pool: Dataset
    test: Dataset
    record: dict
    options: dict

    def with_curve(self, curve: Curve | None, *, measured_here: bool) -> ChoiceSplit:
        """This split, its record saying where the curve whose verdicts choose was measured.

        Args:
            curve: that curve (None: no curve-based method).
            measured_here: whether it was measured now on :attr:`pool`; else it was read from a file, and the
                record takes the split its config names (``"split"``: ``"test"``, ``"train"``, or unknown).

        Returns:
            the split with ``record["curve"]``: ``"pool"``, or the file's split. A curve of the test split shares
            the evaluation's images (``disjoint_from_eval`` False); one of the training split may share the
            fine-tuning's (``disjoint_from_finetune`` False); one of an unknown split, either.
        """
        if curve is None or measured_here:
            return replace(self, record={**self.record, "curve": "pool"})
        where = str(curve.config.get("split", "unknown"))
        record = {**self.record, "curve": where,
                  "disjoint_from_eval": self.record["disjoint_from_eval"] and where == "train",
                  "disjoint_from_finetune": self.record["disjoint_from_finetune"] and where == "test"}
        return replace(self, record=record)

    def probe(self, *, n: int = 512) -> tuple[Batch, torch.Tensor]:
        """The probe of the scored methods, inputs (n, ...) and labels (n,): a class-balanced draw of ``n`` (at
        most) of the held-out pool (seed 0), or the first ``n`` test samples, as ``layermod prune`` took them."""
        if self.split == "test":
            return probe_batch(self.pool, n=n)
        counts = np.bincount(dataset_labels(self.pool))
        per_class = min(n // len(counts[counts > 0]), int(counts[counts > 0].min()))
        return probe_batch(balanced_subset(self.pool, per_class * len(counts[counts > 0]), seed=0), n=n)


def choice_split(train_data: Dataset, test_data: Dataset, *, probe: str = "train-heldout", finetune_subset: int = 0,
                 test_subset: int = 0, same_images: bool = False, draws: DrawConfig | dict | None = None,
                 seed: int = 0) -> ChoiceSplit:
    """Split the data of a prune run into what retrains, what chooses the layers and what scores.

    The fine-tuning takes a class-balanced subset of ``finetune_subset`` training samples (seed 0, as
    :func:`~layermod.data.draws.balanced_subset` draws it), or the whole training set; the evaluation a
    class-balanced ``test_subset`` (seed 0) of the test data, or all of it. The choice draws from, with
    ``probe="train-heldout"``, every training sample outside the fine-tuning subset; with no subset, a
    class-balanced share of the training set drawn with ``seed``, the fine-tuning taking the rest: a tenth, or
    more where the curve's draws need it (``repeats`` disjoint draws of ``n_per_class`` of each class, as far as
    half of the smallest class allows). With ``"test"``, from the whole test data.

    Args:
        train_data, test_data: the whole training and test data (N,) and (M,) samples.
        same_images: ``train_data`` and ``test_data`` are the same samples (a file without splits), so their
            indices are compared as one set.
        draws: the draws of the curve measured on the pool, or their dict (default :class:`~layermod.DrawConfig`'s).

    Raises:
        PlanError: an unknown ``probe``, or no training sample left out of the fine-tuning subset.
    """
    draws = DrawConfig.from_dict(draws) if isinstance(draws, dict) else draws
    if probe not in PROBE_SPLITS:
        raise PlanError(f"unknown probe split {probe!r}; use {' or '.join(PROBE_SPLITS)}")
    labels = dataset_labels(train_data)
    everything = np.arange(len(labels))
    finetune, tuned = train_data, everything
    if finetune_subset:
        finetune = balanced_subset(train_data, finetune_subset, seed=0)
        (tuned,) = balanced_draws(labels, n_per_class=finetune_subset // len(np.unique(labels)), repeats=1, seed=0)
    test, scored = test_data, np.arange(len(test_data))
    if test_subset:
        test = balanced_subset(test_data, test_subset, seed=0)
        test_labels = dataset_labels(test_data)
        (scored,) = balanced_draws(test_labels, n_per_class=test_subset // len(np.unique(test_labels)), repeats=1,
                                   seed=0)
    if probe == "test":
        pool, chosen, on_test = test_data, np.arange(len(test_data)), True
    else:
        if finetune_subset:
            chosen = np.setdiff1d(everything, tuned)
        else:
            drawn = draws if draws is not None else DrawConfig()
            counts = np.unique(labels, return_counts=True)[1]
            need = min(drawn.n_per_class * drawn.repeats, int(counts.min()) // 2)
            per_class = max(1, len(labels) // HELDOUT_SHARE // len(counts), need)
            (chosen,) = balanced_draws(labels, n_per_class=per_class, repeats=1, seed=seed)
            tuned = np.setdiff1d(everything, chosen)
            finetune = _take(train_data, tuned)
        if len(np.unique(labels[chosen])) < len(np.unique(labels)):
            raise PlanError(f"the fine-tuning subset of {finetune_subset} leaves no training sample of some class "
                            "to choose the layers on; fine-tune on fewer samples or use probe='test'")
        pool, on_test = _take(train_data, chosen), same_images
    nothing = np.empty(0, dtype=np.int64)
    record = {"split": probe, "samples": len(chosen),
              "disjoint_from_eval": not np.intersect1d(chosen if on_test else nothing, scored).size,
              "disjoint_from_finetune": not np.intersect1d(chosen if probe != "test" or same_images else nothing,
                                                           tuned).size}
    options = {"probe": probe, "finetune_subset": finetune_subset, "test_subset": test_subset,
               "same_images": same_images, "draws": None if draws is None else draws.to_dict(), "seed": seed}
    return ChoiceSplit(probe, finetune, pool, test, record, options)


def choice_of(config: dict) -> dict:
    """The choice record of a result's ``config`` (:attr:`ChoiceSplit.record`); a file written before it was
    recorded chose on the test split: ``{"split": "test", "samples": None, "disjoint_from_eval": False}``."""
    recorded = config.get("choice")
    return dict(recorded) if isinstance(recorded, dict) else dict(_TEST_CHOICE)


def _take(data: Dataset, indices: np.ndarray) -> Dataset:
    """The samples ``indices`` of ``data``: an ArrayDataset or TokenDataset of them (the in-memory fast path
    stays), else a ``torch.utils.data.Subset``."""
    rows = torch.from_numpy(np.asarray(indices, dtype=np.int64))
    if isinstance(data, ArrayDataset):
        return ArrayDataset(take(data.data, rows), data.targets[rows], data.classes, data.name,
                            normalization=data.normalization)
    if isinstance(data, TokenDataset):
        return TokenDataset(data.input_ids[rows], data.attention_mask[rows], data.targets[rows], data.classes,
                            data.name)
    return Subset(data, rows.tolist())
