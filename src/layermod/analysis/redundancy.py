"""Redundant layers from the modularity curve: one verdict per layer.

The decisions behind it: docs/design.md, section layermod.analysis.redundancy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import KW_ONLY, asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from layermod.analysis.curve import Curve
from layermod.analysis.curve_plot import curve_axes
from layermod.errors import PlanError
from layermod.io.files import ensure_writable_dir, read_json_file, save_png, write_csv, write_json
from layermod.io.rundir import REDUNDANCY_CSV, REDUNDANCY_JSON, REDUNDANCY_PNG
from layermod.io.table import TableResult
from layermod.io.validate import MAX_ITEMS, label, literal_text, mapping, number, required, shorten, text

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["VERDICTS", "Redundancy", "Verdict", "find_redundant", "mean_step", "paired_difference", "verdict_from_dict",
           "verdict_table", "verdict_to_dict"]

VERDICTS = ("keep", "plateau", "drop")


@dataclass(frozen=True)
class Verdict:
    """Whether one layer of a curve adds modularity.

    Attributes:
        layer: the curve's layer name.
        increment: mean Q of this layer minus mean Q of the previous layer (NaN for the first layer).
        noise: standard error of that increment over the paired draws (NaN for the first layer).
        threshold: the band used, ``max(z * noise, rel_gain * step, min_gain)`` (NaN for the first layer).
        verdict: ``"drop"`` (increment < -threshold), ``"plateau"`` (|increment| <= threshold) or ``"keep"``.
    """

    layer: str
    increment: float
    noise: float
    threshold: float
    verdict: str


def verdict_to_dict(verdict: Verdict) -> dict:
    """JSON-ready ``{"layer", "increment", "noise", "threshold", "verdict"}``; undefined numbers as None."""
    return {key: (None if isinstance(value, float) and not math.isfinite(value) else value)
            for key, value in asdict(verdict).items()}


def verdict_from_dict(i: int, row: object) -> Verdict:
    """``verdicts[i]`` read from a file, checked: a layer name, increment, noise and threshold numbers or null,
    a verdict of :data:`VERDICTS`; ValueError naming the first problem."""
    where = f"verdicts[{i}]"
    row = mapping(row, where)
    verdict = required(row, "verdict")
    if verdict not in VERDICTS:
        raise ValueError(f"{where}.verdict is {shorten(repr(verdict))}, not one of {', '.join(VERDICTS)}")
    increment, noise, threshold = (float(number(required(row, key), f"{where}.{key}", missing=True))
                                   for key in ("increment", "noise", "threshold"))
    return Verdict(text(required(row, "layer"), f"{where}.layer"), increment, noise, threshold, verdict)


_COLOURS = {"keep": "tab:green", "plateau": "tab:orange", "drop": "tab:red"}


@dataclass(frozen=True, repr=False)
class Redundancy(TableResult, Sequence):
    """The verdicts of :func:`find_redundant`, one per layer in the curve's order; a sequence of
    :class:`Verdict`.

    Attributes:
        verdicts: one :class:`Verdict` per layer.
        config: the band's settings, ``{"z", "rel_gain", "min_gain", "step"}`` (``step``: the curve's mean rise
            per layer, see docs/design.md).
    """

    verdicts: list[Verdict]
    _: KW_ONLY
    config: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdicts", list(self.verdicts))
        object.__setattr__(self, "config", dict(self.config))

    def __getitem__(self, index):
        return self.verdicts[index]

    def __len__(self) -> int:
        return len(self.verdicts)

    @property
    def redundant(self) -> list[str]:
        """Names of the plateau and drop layers."""
        return [v.layer for v in self.verdicts if v.verdict != "keep"]

    def to_dict(self) -> dict:
        """JSON-ready ``{"verdicts": [...], "config": {...}}``; undefined numbers as null.

        Returns:
            One dict per verdict under ``"verdicts"``, in the curve's layer order, and the config.
        """
        return {"verdicts": [verdict_to_dict(v) for v in self.verdicts], "config": dict(self.config)}

    @classmethod
    def from_dict(cls, data: object) -> Redundancy:
        """Inverse of :meth:`to_dict`, for data read from a file.

        Checked: 1 to ``MAX_ITEMS`` verdicts checked as :func:`verdict_from_dict` says, z, rel_gain, min_gain and
        step numbers >= 0.

        Args:
            data: a dict as :meth:`to_dict` writes it.

        Returns:
            The :class:`Redundancy`.

        Raises:
            ValueError: naming the first problem.
        """
        data = mapping(data, "the verdicts")
        rows = required(data, "verdicts")
        if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_ITEMS:
            raise ValueError(f"verdicts is not a list of 1 to {MAX_ITEMS:,} verdicts")
        config = mapping(data.get("config", {}), "config")
        for key in ("z", "rel_gain", "min_gain", "step"):
            if key in config:
                number(config[key], f"config.{key}", low=0)
        return cls([verdict_from_dict(i, row) for i, row in enumerate(rows)], config=config)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Redundancy:
        """Read ``redundancy.json`` (or the one inside a run directory), checked by :meth:`from_dict`.

        Args:
            path: the file or the run directory.

        Returns:
            The :class:`Redundancy`.

        Raises:
            ReportError: the file is missing, unreadable or malformed (one line naming it).
        """
        return read_json_file(path, REDUNDANCY_JSON, cls.from_dict, "redundant layers")

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``redundancy.png``, ``redundancy.csv`` and, last, ``redundancy.json`` into ``path`` (created).

        Each file is whole or not at all.

        Args:
            path: the run directory.

        Returns:
            The directory.

        Raises:
            OutputError: ``path`` cannot be created or written.
        """
        out = ensure_writable_dir(path)
        ax = self.plot(ax=curve_axes(len(self.verdicts)))
        ax.figure.tight_layout()
        save_png(ax.figure, out / REDUNDANCY_PNG)
        columns, rows = self._table()
        write_csv(out / REDUNDANCY_CSV, ["index", *columns], ([i, *row] for i, row in enumerate(rows)))
        write_json(out / REDUNDANCY_JSON, self.to_dict())
        return out

    @literal_text
    def plot(self, *, ax: Axes | None = None) -> Axes:
        """Each layer's increment as a bar coloured by its verdict, with the band ``±threshold`` it was judged against.

        Args:
            ax: the Axes to draw into (default: a new figure's).

        Returns:
            The Axes.
        """
        ax = ax if ax is not None else curve_axes(len(self.verdicts), interactive=True)
        x = np.arange(len(self.verdicts))
        increments = np.array([v.increment for v in self.verdicts])
        thresholds = np.array([v.threshold for v in self.verdicts])
        ax.bar(x, np.nan_to_num(increments), color=[_COLOURS[v.verdict] for v in self.verdicts])
        ax.fill_between(x, -thresholds, thresholds, color="grey", alpha=0.2, lw=0, label="band ±threshold")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, [label(v.layer) for v in self.verdicts], rotation=60, ha="right", fontsize=8)
        ax.set_xlabel("layer")
        ax.set_ylabel("increment of mean Q")
        ax.set_title(f"redundant layers: {len(self.redundant)} of {len(self.verdicts)} (plateau orange, drop red)",
                     fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        return ax

    def _table(self) -> tuple[list[str], list[list]]:
        return (["layer", "increment", "noise", "threshold", "verdict"],
                [[v.layer, v.increment, v.noise, v.threshold, v.verdict] for v in self.verdicts])


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over draws of ``a - b`` and its paired standard error ``std(a - b, ddof=1) / sqrt(R)``.

    ``a`` and ``b`` are (R, ...) values measured on the same R draws; returns two arrays of shape (...). With a
    single draw there is no spread to measure and the standard error is 0.
    """
    diffs = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    repeats = len(diffs)
    noise = diffs.std(axis=0, ddof=1) / math.sqrt(repeats) if repeats > 1 else np.zeros(diffs.shape[1:])
    return diffs.mean(axis=0), noise


def mean_step(curve: Curve) -> float:
    """The curve's mean rise per layer, ``(max - min) / (L - 1)`` of its mean Q over its L layers (NaN values
    left out); 0 for fewer than two values."""
    means = np.asarray(curve.mean, dtype=float)
    means = means[np.isfinite(means)]
    return float((means.max() - means.min()) / (len(curve.layers) - 1)) if len(means) > 1 else 0.0


def find_redundant(curve: Curve, *, z: float = 2.0, rel_gain: float = 0.5, min_gain: float = 0.0) -> Redundancy:
    """One :class:`Verdict` per layer of ``curve``, in the curve's order, as a :class:`Redundancy`.

    A layer is a plateau when its increment lies within ``max(z * noise, rel_gain * mean_step(curve), min_gain)``
    of 0 (see docs/design.md). A layer whose increment cannot be judged (the first layer, or NaN values in the
    curve) is kept: without evidence a layer is not called redundant.

    Args:
        curve: the modularity curve, values (draws, L).
        z: the noise band in standard errors of the increment.
        rel_gain: the band as a share of the curve's mean step.
        min_gain: the smallest band, in units of Q.

    Returns:
        The :class:`Redundancy`: L verdicts.

    Raises:
        PlanError: ``z``, ``rel_gain`` or ``min_gain`` not a finite number >= 0.
    """
    for name, value in (("z", z), ("rel_gain", rel_gain), ("min_gain", min_gain)):
        if not (math.isfinite(value) and value >= 0):
            raise PlanError(f"{name} must be a finite number >= 0, got {value}")
    values = curve.values
    step = mean_step(curve)
    verdicts = [Verdict(curve.layers[0], math.nan, math.nan, math.nan, "keep")] if curve.layers else []
    for index in range(1, len(curve.layers)):
        increment, noise = map(float, paired_difference(values[:, index], values[:, index - 1]))
        threshold = max(z * noise, rel_gain * step, min_gain)
        if not (math.isfinite(increment) and math.isfinite(threshold)) or increment > threshold:
            verdict = "keep"
        elif increment < -threshold:
            verdict = "drop"
        else:
            verdict = "plateau"
        verdicts.append(Verdict(curve.layers[index], increment, noise, threshold, verdict))
    return Redundancy(verdicts, config={"z": z, "rel_gain": rel_gain, "min_gain": min_gain, "step": step})


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
