"""Where a curve's rise is complete: the layer from which a plateau is redundant rather than a silent phase.

A network often passes its input through a stretch of layers whose Q stays flat *before* the classes separate
(the silent phase), then Q rises, then it flattens again. Both flat stretches are plateaus to
:func:`~layermod.analysis.redundancy.find_redundant`, but only the one after the rise is cheap to remove: the
early one is where nothing has been decided yet.

The rise is complete at the first layer whose Q reaches ``Q_0 + (1 - share) (Q_max - Q_0)``, ``Q_0`` the first
layer's Q and ``Q_max`` the highest (``share`` = 0.1: within a tenth of the total rise). It is found on the mean
curve, and on each draw alone for its uncertainty: the earliest and the latest layer any draw puts it at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from layermod.analysis.curve import Curve
from layermod.errors import CurveError

__all__ = ["RISE_SHARE", "Rise", "find_rise"]

RISE_SHARE = 0.1
"""The default share of the total rise within which Q counts as risen."""


@dataclass(frozen=True)
class Rise:
    """Where a curve's rise is complete.

    Attributes:
        index: the layer's position in the curve (0 when Q never rises above its first value).
        layer: its name.
        earliest, latest: the range of that position over the curve's draws, each draw taken alone.
        share: the share of the total rise used.
    """

    index: int
    layer: str
    earliest: int
    latest: int
    share: float


def _rise_index(q: np.ndarray, share: float) -> int:
    """The first position of ``q`` (L,) within ``share`` of its total rise; 0 without a rise."""
    finite = np.where(np.isfinite(q), q, -np.inf)
    total = float(finite.max() - q[0]) if math.isfinite(q[0]) else 0.0
    if not total > 0:
        return 0
    return int(np.argmax(finite >= q[0] + (1 - share) * total))


def find_rise(curve: Curve, *, share: float = RISE_SHARE) -> Rise:
    """The :class:`Rise` of ``curve`` (its values (R, L)).

    Raises:
        CurveError: ``share`` outside [0, 1) or a curve without layers.
    """
    if not (isinstance(share, (int, float)) and 0 <= share < 1):
        raise CurveError(f"share={share!r} must be a number in [0, 1)")
    if not curve.layers:
        raise CurveError("the curve has no layers; measure at least one")
    index = _rise_index(curve.mean, share)
    per_draw = [_rise_index(row, share) for row in curve.values]
    return Rise(index, curve.layers[index], min(per_draw), max(per_draw), float(share))
