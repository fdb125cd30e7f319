"""Curves drawn: the figure of one or several curves (PNG) and a plain-text table.

A :class:`~layermod.analysis.curve.Curve` writes its files itself (:meth:`~layermod.analysis.curve.Curve.save`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from layermod.io.files import save_png
from layermod.io.validate import TITLE_CHARS, label, literal_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from layermod.analysis.curve import Curve

__all__ = ["MAX_TICKS", "MAX_WIDTH", "curve_axes", "curve_table", "plot_curves"]


MAX_WIDTH = 24.0  # inches of a curve figure; beyond it, layer names are thinned rather than the figure widened
MAX_TICKS = 50  # layer names on the axis at most


def curve_axes(n_layers: int, *, interactive: bool = False) -> Axes:
    """New axes for a curve of ``n_layers`` layers: 0.45 in per layer, 6 to :data:`MAX_WIDTH` in wide, 4.2 in
    high; on a pyplot figure when ``interactive``, else on a plain Figure (no GUI backend involved)."""
    size = (min(max(6.0, 0.45 * n_layers + 2), MAX_WIDTH), 4.2)
    if interactive:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=size).add_subplot()
    from matplotlib.figure import Figure

    return Figure(figsize=size).add_subplot()


@literal_text
def plot_curves(
    curves: Sequence[Curve],
    *,
    path: str | os.PathLike | None = None,
    ax: Axes | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Axes:
    """Mean Q (line) with a ±1 std band per curve against layer names; the null mean dashed if present and
    the ceiling ``1 - 1/C`` for C balanced classes dotted.

    Curves are drawn on the first curve's layer axis. Names and labels are drawn literally and shortened (see
    :mod:`layermod.io.validate`); with more than :data:`MAX_TICKS` layers only every n-th name is shown. Returns
    the matplotlib Axes; with ``path`` the figure is saved as PNG (written atomically) and closed.
    """
    layers = curves[0].layers
    if ax is None:
        ax = curve_axes(len(layers), interactive=path is None)
    x = np.arange(len(layers))
    for i, curve in enumerate(curves):
        name = label(labels[i]) if labels else None
        line, = ax.plot(x[: len(curve.layers)], curve.mean, marker="o", ms=4, label=name)
        ax.fill_between(x[: len(curve.layers)], curve.mean - curve.std, curve.mean + curve.std,
                        color=line.get_color(), alpha=0.2, lw=0)
        if curve.null_mean is not None:
            ax.plot(x[: len(curve.layers)], curve.null_mean, ls="--", color=line.get_color(), alpha=0.6,
                    label=f"{name} (shuffled labels)" if name else "shuffled labels")
    n_classes = curves[0].config.get("n_classes")
    if n_classes:
        ax.axhline(1 - 1 / n_classes, ls=":", color="grey", lw=1, label=f"ceiling 1 - 1/{n_classes}")
    ticks = x[:: math.ceil(len(layers) / MAX_TICKS)]
    ax.set_xticks(ticks, [label(layers[i]) for i in ticks], rotation=60, ha="right", fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel("modularity Q")
    ax.grid(alpha=0.3)
    config = curves[0].config
    ax.set_title(label(title or f"modularity curve (k={config.get('k', '?')}, {config.get('samples_per_draw', '?')} "
                       f"samples x {len(curves[0].values)} draws, mean ± std)", limit=TITLE_CHARS), fontsize=10)
    if labels or n_classes or any(c.null_mean is not None for c in curves):
        ax.legend(fontsize=8, loc="best")
    if path is not None:
        ax.figure.tight_layout()
        save_png(ax.figure, path)
    return ax


def curve_table(curve: Curve) -> str:
    """Fixed-width text table: index, layer, mean Q, std, increment (and z when there is a null), then the
    pooling of 3-D token outputs the curve used (``pool: cls (auto)`` when ``"auto"`` chose it)."""
    width = max(len("layer"), *(len(name) for name in curve.layers))
    head = f"{'#':>3}  {'layer':<{width}}  {'Q mean':>8}  {'std':>7}  {'dQ':>8}"
    if curve.z is not None:
        head += f"  {'null Q':>8}  {'z':>7}"
    rows = [head, "-" * len(head)]
    for i, name in enumerate(curve.layers):
        row = f"{i:>3}  {name:<{width}}  {curve.mean[i]:8.4f}  {curve.std[i]:7.4f}  {curve.increments[i]:+8.4f}"
        if curve.z is not None:
            row += f"  {curve.null_mean[i]:8.4f}  {curve.z[i]:7.1f}"
        rows.append(row)
    resolved = curve.config.get("resolved_pool")
    if resolved is not None:
        asked = curve.config.get("pool")
        rows.append(f"pool: {resolved}" + (f" ({asked})" if asked not in (None, resolved) else ""))
    return "\n".join(rows)

