"""Redundant layers from the modularity curve: one verdict per layer.

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

Plans that remove redundant units are made in :mod:`layermod.pruning.plans`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from layermod.analysis.curve import Curve
from layermod.errors import PlanError

__all__ = ["VERDICTS", "Verdict", "find_redundant", "paired_difference", "verdict_table"]

VERDICTS = ("keep", "plateau", "drop")


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
