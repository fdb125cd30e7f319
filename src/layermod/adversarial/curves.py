"""Clean and attacked modularity curves on the same samples (the paper's finding 6).

:func:`adversarial_curves` attacks a class-balanced pool of samples, keeps (by default) only the samples the
model classified correctly and the attack then flipped (the paper's filter), and measures two curves on the
*same* class-balanced draws of those samples: one on their clean inputs, one on their adversarial inputs.
Communities are the true labels in both. Because the draws are identical, the two curves are paired draw by
draw, like the layers of one curve (see :mod:`layermod.analysis.redundancy`).

Decisions, on purpose:

* **Pool.** ``pool_per_class`` samples of every class are attacked (default: twice what the draws need,
  ``2 * n_per_class * repeats``, capped by the smallest class). Every class must keep at least ``n_per_class``
  samples after the filter; otherwise the run stops and says which class ran short and what to change,
  rather than measuring fewer classes than the data has.
* **Where the curves part.** The gap of a layer is the mean over draws of ``Q_clean - Q_attacked`` with its
  paired standard error; a layer is *apart* when its gap exceeds ``max(z * se, min_gain)`` (a noise band
  with an absolute floor: the gap is measured against 0, not against a curve's own rise). The parting layer is the first layer from which every later layer is
  apart; None when the last layer is not.
"""

from __future__ import annotations

import math
import os
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from layermod.adversarial.attacks import AttackConfig, PixelSpace
from layermod.adversarial.attacks import attack as run_attack
from layermod.analysis.curve import DEFAULT_MAX_BYTES, Curve, modularity_curve
from layermod.data.arrays import Data, as_dataset, dataset_labels, gather
from layermod.data.draws import balanced_draws
from layermod.errors import AttackError
from layermod.io.files import ensure_writable_dir, read_json_file, save_png, write_csv, write_json
from layermod.io.rundir import ATTACK_CSV, ATTACK_JSON, ATTACK_PNG
from layermod.analysis.curve_plot import curve_axes, plot_curves
from layermod.analysis.redundancy import paired_difference
from layermod.io.table import TableResult
from layermod.extract.layers import LayerSpec
from layermod.measure.config import DrawConfig, GraphConfig, MeasureOptions, measure_configs
from layermod.io.validate import literal_text, mapping, number, required, shorten, text, within

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from typing_extensions import Unpack

__all__ = ["KEEP", "AdversarialCurves", "adversarial_curves"]

KEEP = ("flipped", "all")
_COUNTS = ("n_attacked", "n_correct", "n_flipped")
_RATES = ("success_rate", "clean_accuracy", "adversarial_accuracy")


@dataclass(frozen=True, repr=False)
class AdversarialCurves(TableResult):
    """A clean and an attacked curve measured on the same draws.

    Attributes:
        clean, attacked: curves with the same layers and ``values`` of shape (repeats, L).
        attack: the attack's settings (``AttackConfig.to_dict()``).
        summary: counts over the attacked pool: n_attacked, n_correct, n_flipped, success_rate, clean_accuracy,
            adversarial_accuracy.
        keep: ``"flipped"`` (only samples classified correctly, then flipped) or ``"all"``.
    """

    clean: Curve
    attacked: Curve
    attack: dict
    summary: dict
    _: KW_ONLY
    keep: str = "flipped"

    @property
    def gap(self) -> np.ndarray:
        """(L,) mean over draws of Q_clean - Q_attacked."""
        return paired_difference(self.clean.values, self.attacked.values)[0]

    @property
    def gap_se(self) -> np.ndarray:
        """(L,) paired standard error of :attr:`gap` (0 with a single draw)."""
        return paired_difference(self.clean.values, self.attacked.values)[1]

    @property
    def label(self) -> str:
        """The attack in a few words, e.g. ``"PGD (linf, eps 0.3, 40 steps of 0.01)"`` or ``"CW (c=1)"``."""
        method = self.attack.get("method", "attack")
        if method in ("fgsm", "pgd"):
            steps = f", {self.attack['steps']} steps of {self.attack['step_size']:g}" if method == "pgd" else ""
            return f"{method.upper()} ({self.attack['norm']}, eps {self.attack['eps']:g}{steps})"
        options = ", ".join(f"{key}={value}" for key, value in self.attack.get("options", {}).items())
        return method.removeprefix("torchattacks:") + (f" ({options})" if options else "")  # its options say it all

    def parting_index(self, *, z: float = 2.0, min_gain: float = 0.005) -> int | None:
        """Index of the first layer from which every later layer's gap exceeds ``max(z * se, min_gain)``.

        Args:
            z: the gap's margin in standard errors.
            min_gain: the smallest gap counted, in units of Q.

        Returns:
            The layer index in [0, L), or None when the last layer's gap does not exceed it.
        """
        apart = self.gap > np.maximum(z * self.gap_se, min_gain)
        if not len(apart) or not apart[-1]:
            return None
        together = np.flatnonzero(~apart)
        return int(together[-1]) + 1 if len(together) else 0

    def to_dict(self) -> dict:
        """JSON-ready dict of both curves and the attack.

        Returns:
            clean, attacked (curve dicts), attack, keep, the summary's counts, gap and gap_se (L,) and the parting
                layer (name and index, or None).
        """
        index = self.parting_index()
        return {
            "clean": self.clean.to_dict(),
            "attacked": self.attacked.to_dict(),
            "attack": self.attack,
            "keep": self.keep,
            **{key: _finite(value) for key, value in self.summary.items()},
            "gap": [_finite(float(v)) for v in self.gap],
            "gap_se": [_finite(float(v)) for v in self.gap_se],
            "parting_index": index,
            "parting_layer": None if index is None else self.clean.layers[index],
        }

    @classmethod
    def from_dict(cls, data: dict) -> AdversarialCurves:
        """Inverse of :meth:`to_dict` (gap and parting layer are recomputed), for data read from a file.

        Checked as :mod:`layermod.io.validate` says: both curves as :meth:`Curve.from_dict` checks them, on the same
        layers and draws; the attack's method and the settings :attr:`label` shows; counts integers with
        ``0 <= n_flipped <= n_correct <= n_attacked``; rates in [0, 1] or null.

        Args:
            data: a dict as :meth:`to_dict` writes it.

        Returns:
            The :class:`AdversarialCurves`.

        Raises:
            ValueError: naming the first problem.
        """
        data = mapping(data, "the attack result")
        clean = within("clean", Curve.from_dict, required(data, "clean"))
        attacked = within("attacked", Curve.from_dict, required(data, "attacked"))
        if clean.layers != attacked.layers or clean.values.shape != attacked.values.shape:
            raise ValueError("the clean and attacked curves have different layers or draws")
        summary = {key: number(required(data, key), key, low=0, integer=True) for key in _COUNTS}
        if not summary["n_flipped"] <= summary["n_correct"] <= summary["n_attacked"]:
            raise ValueError(f"{summary['n_flipped']} flipped of {summary['n_correct']} correct of "
                             f"{summary['n_attacked']} attacked samples cannot be")
        summary.update({key: number(required(data, key), key, low=0, high=1, missing=True) for key in _RATES})
        keep = data.get("keep", "flipped")
        if keep not in KEEP:
            raise ValueError(f"keep is {shorten(repr(keep))}, not one of {', '.join(KEEP)}")
        return cls(clean, attacked, _settings(required(data, "attack")), summary, keep=keep)

    @classmethod
    def load(cls, path: str | os.PathLike) -> AdversarialCurves:
        """Read ``attack.json`` (or the ``attack.json`` inside a run directory).

        Args:
            path: the file or the run directory.

        Returns:
            The :class:`AdversarialCurves`, checked by :meth:`from_dict`.

        Raises:
            ReportError: the file is missing, unreadable or malformed (one line naming it).
        """
        return read_json_file(path, ATTACK_JSON, cls.from_dict, "attack curves")

    @literal_text
    def plot(self, *, ax: Axes | None = None) -> Axes:
        """Clean and attacked curves (mean, ±1 std band) with the parting layer marked.

        Args:
            ax: the Axes to draw into (default: a new figure's).

        Returns:
            The Axes.
        """
        label = self.label
        ax = plot_curves([self.clean, self.attacked], ax=ax, labels=["clean", label],
                         title=f"clean vs {label}: {self.summary['n_flipped']} samples flipped of "
                               f"{self.summary['n_correct']} correct ({self.keep} kept), same draws")
        index = self.parting_index()
        if index is not None:
            ax.axvline(index, color="crimson", ls="--", lw=1)
            ax.annotate("curves part", (index, ax.get_ylim()[1]), color="crimson", fontsize=8, ha="left",
                        va="top", xytext=(3, -3), textcoords="offset points")
        return ax

    def _table(self) -> tuple[list[str], list[list]]:
        columns = (self.clean.mean, self.clean.std, self.attacked.mean, self.attacked.std, self.gap, self.gap_se)
        return (["layer", "clean_mean", "clean_std", "attacked_mean", "attacked_std", "gap", "gap_se"],
                [[name, *(float(column[i]) for column in columns)] for i, name in enumerate(self.clean.layers)])

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``attack.png``, ``attack.csv`` and, last, ``attack.json`` into ``path`` (created).

        Args:
            path: the run directory.

        Returns:
            The directory.

        Raises:
            OutputError: ``path`` cannot be created or written.
        """
        out = ensure_writable_dir(path)
        ax = self.plot(ax=curve_axes(len(self.clean.layers)))
        ax.figure.tight_layout()
        save_png(ax.figure, out / ATTACK_PNG)
        columns = (self.clean.mean, self.clean.std, self.attacked.mean, self.attacked.std, self.gap, self.gap_se)
        write_csv(out / ATTACK_CSV, ["index", "layer", "clean_mean", "clean_std", "attacked_mean", "attacked_std",
                                     "gap", "gap_se"],
                  ([i, name, *(float(column[i]) for column in columns)] for i, name in enumerate(self.clean.layers)))
        write_json(out / ATTACK_JSON, self.to_dict())
        return out


def adversarial_curves(
    model: nn.Module,
    data: Data,
    *,
    attack: AttackConfig,
    space: PixelSpace,
    keep: str = "flipped",
    pool_per_class: int | None = None,
    layers: LayerSpec = "auto",
    graph: GraphConfig | None = None,
    draws: DrawConfig | None = None,
    batch_size: int = 256,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: bool | str = "auto",
    pool: str = "auto",
    **options: Unpack[MeasureOptions],
) -> AdversarialCurves:
    """Attack a class-balanced pool of ``data`` and measure clean and attacked curves on the same draws.

    Args:
        model: a differentiable ``nn.Module`` taking ``data``'s inputs.
        data: ``(X, y)`` or a torch ``Dataset`` of ``(x, y)``, inputs in the model's (normalised) space.
        attack: the attack's settings (see :mod:`layermod.adversarial.attacks`).
        space: how inputs map to pixels.
        keep: ``"flipped"`` keeps only samples classified correctly and flipped by the attack; ``"all"`` keeps
            every attacked sample.
        pool_per_class: samples of each class attacked (default ``2 * n_per_class * repeats``, capped by the
            smallest class).
        layers: as for :func:`layermod.modularity_curve`.
        graph: as for :func:`layermod.modularity_curve`.
        batch_size: as for :func:`layermod.modularity_curve`.
        max_bytes: as for :func:`layermod.modularity_curve`.
        progress: as for :func:`layermod.modularity_curve`.
        pool: as for :func:`layermod.modularity_curve`.
        draws: the draws of both curves (from the kept samples); its seed also draws the pool.
        options: fields of either config as keywords (``k=5, n_per_class=30``, ...), as for the curve.

    Returns:
        :class:`AdversarialCurves`; both curves' configs record the attack.
    """
    if keep not in KEEP:
        raise AttackError(f"keep={keep!r} is not one of {', '.join(KEEP)}")
    graph, draws = measure_configs(graph=graph, draws=draws, **options)
    n_per_class = draws.n_per_class
    dataset = as_dataset(data, per_class=pool_per_class or 2 * n_per_class * draws.repeats)
    labels = dataset_labels(dataset)
    smallest = int(np.unique(labels, return_counts=True)[1].min())
    pool_size = min(pool_per_class or 2 * n_per_class * draws.repeats, smallest)
    attacked_samples = balanced_draws(labels, n_per_class=pool_size, repeats=1, seed=draws.seed)[0]
    inputs, targets = gather(dataset, attacked_samples)
    if isinstance(inputs, dict) or not inputs.is_floating_point():
        kind = "a dict of inputs" if isinstance(inputs, dict) else f"{inputs.dtype} inputs"
        raise AttackError(f"attacks move inputs along the gradient, so they need float inputs (pixels), not {kind} "
                          "such as token ids; measure clean curves with modularity_curve instead")
    result = run_attack(model, inputs, targets, attack=attack, space=space, batch_size=batch_size,
                        progress=progress)
    chosen = result.flipped if keep == "flipped" else torch.ones(len(targets), dtype=torch.bool)
    _check_enough(targets, chosen, n_per_class, keep, pool_size)
    kept_labels = targets[chosen]
    measure = dict(layers=layers, graph=graph, draws=draws, batch_size=batch_size, max_bytes=max_bytes,
                   progress=progress, pool=pool)
    clean = modularity_curve(model, (inputs[chosen], kept_labels), **measure)
    attacked = modularity_curve(model, (result.inputs[chosen], kept_labels), **measure)
    extra = {"attack": attack.to_dict(), "keep": keep, "pool_per_class": pool_size}
    return AdversarialCurves(clean.with_config(**extra, inputs="clean"),
                             attacked.with_config(**extra, inputs="attacked"),
                             attack.to_dict(), result.summary(), keep=keep)


def _check_enough(targets: torch.Tensor, chosen: torch.Tensor, n_per_class: int, keep: str, pool: int) -> None:
    """Every class of the pool must keep at least ``n_per_class`` samples."""
    classes, counts = torch.unique(targets, return_counts=True)
    kept = torch.stack([(chosen & (targets == c)).sum() for c in classes])
    short = int(torch.argmin(kept))
    if kept[short] >= n_per_class:
        return
    why = "were classified correctly and then flipped" if keep == "flipped" else "were attacked"
    hint = "raise pool_per_class or eps, keep all samples (keep='all'), or lower n_per_class"
    if pool >= int(counts.min()):
        hint = "raise eps, keep all samples (keep='all'), or lower n_per_class"
    raise AttackError(f"only {int(kept[short])} of {pool} samples of class {int(classes[short])} {why}, fewer than "
                      f"n_per_class={n_per_class}; {hint}")


def _settings(value: object) -> dict:
    """An attack's settings read from a file: a JSON object with a method and, for fgsm and pgd, the budget and
    steps that :attr:`AdversarialCurves.label` shows."""
    settings = mapping(value, "attack")
    method = text(required(settings, "method"), "attack.method")
    if method in ("fgsm", "pgd"):
        text(required(settings, "norm"), "attack.norm")
        number(required(settings, "eps"), "attack.eps", low=0)
    if method == "pgd":
        number(required(settings, "steps"), "attack.steps", low=1, integer=True)
        number(required(settings, "step_size"), "attack.step_size", low=0)
    mapping(settings.get("options", {}), "attack.options")
    return dict(settings)


def _finite(value):
    """JSON has no NaN: a non-finite float becomes None, anything else is kept."""
    return None if isinstance(value, float) and not math.isfinite(value) else value
