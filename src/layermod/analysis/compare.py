"""Layer against layer: the paper's modularity difference D_ij beside linear CKA, on the same samples.

:func:`compare_layers` measures a model's modularity curve and, in the same pass over its layers, the centred
Gram matrix of every layer on every draw; CKA between two layers is the minibatch CKA over the draws (see
:mod:`layermod.measure.similarity`). With a second model, both are measured on the same draws of the same data and
the matrices are model A's layers (rows) against model B's (columns).

``D_ij = |Q_i - Q_j|`` uses the curves' mean Q over draws. Small D and high CKA both mean "these layers see
the samples alike": the paper's claim is that the two heat maps show the same block structure.

Memory: the Grams of every layer are held at once, ``L x repeats x n^2`` float64 values for n samples per
draw (for 20 layers, 5 draws of 500 samples: 200 MB, and as much again while the CKA matrix is computed).
"""

from __future__ import annotations

import os
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from layermod.analysis.curve import Curve, modularity_curve
from layermod.data.arrays import Data
from layermod.errors import CurveError
from layermod.io.files import ensure_writable_dir, read_json_file, save_png, write_csv, write_json
from layermod.io.rundir import CKA_CSV, COMPARE_JSON, COMPARE_PNG, D_CSV
from layermod.io.table import TableResult, new_axes
from layermod.measure.similarity import cka_matrix, draw_heatmap, heatmap_inches, layer_grams, modularity_difference
from layermod.io.validate import literal_text, mapping, names, numbers, required, within
from layermod.measure.config import DrawConfig, GraphConfig
from layermod.extract.layers import LayerSpec

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["LayerComparison", "compare_layers"]


@dataclass(frozen=True, repr=False)
class LayerComparison(TableResult):
    """D and CKA between the layers of model A (rows) and model B (columns; B is A when compared with itself).

    Attributes:
        curve_a, curve_b: the two modularity curves (the same object for one model).
        cka: (La, Lb) linear CKA on the same draws.
        names: display names of the two models, e.g. their weights files.
        config: how CKA was computed (unbiased or not).
    """

    curve_a: Curve
    curve_b: Curve
    cka: np.ndarray
    _: KW_ONLY
    names: tuple[str, str] = ("model", "model")
    config: dict | None = None

    @property
    def d(self) -> np.ndarray:
        """(La, Lb) the paper's layer difference ``|Q_i - Q_j|`` from the mean curves."""
        return modularity_difference(self.curve_a.mean, q_b=self.curve_b.mean)

    @property
    def same_model(self) -> bool:
        return self.curve_a is self.curve_b

    def to_dict(self) -> dict:
        """JSON-ready: layers_a, layers_b, names, d, cka, the curves (curve_b only for two models), config.

        Returns:
            The dict; d and cka as (La, Lb) nested lists.
        """
        out = {
            "layers_a": list(self.curve_a.layers),
            "layers_b": list(self.curve_b.layers),
            "names": list(self.names),
            "d": self.d.tolist(),
            "cka": self.cka.tolist(),
            "curve_a": self.curve_a.to_dict(),
            "config": dict(self.config or {}),
        }
        if not self.same_model:
            out["curve_b"] = self.curve_b.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> LayerComparison:
        """Inverse of :meth:`to_dict` (D is recomputed from the curves), for data read from a file.

        Checked: the curves as :meth:`Curve.from_dict` checks them, cka (La, Lb) in [-1, 1] or null (NaN for a
        layer without variance), two model names.

        Args:
            data: a dict as :meth:`to_dict` writes it.

        Returns:
            The :class:`LayerComparison`.

        Raises:
            ValueError: naming the first problem.
        """
        data = mapping(data, "the comparison")
        curve_a = within("curve_a", Curve.from_dict, required(data, "curve_a"))
        curve_b = within("curve_b", Curve.from_dict, data["curve_b"]) if "curve_b" in data else curve_a
        cka = numbers(required(data, "cka"), "cka", (len(curve_a.layers), len(curve_b.layers)), low=-1, high=1,
                      missing=True)
        models = names(data.get("names", ["model", "model"]), "names")
        if len(models) != 2:
            raise ValueError(f"names holds {len(models)} names, not the 2 of the models compared")
        return cls(curve_a, curve_b, cka, names=(models[0], models[1]), config=mapping(data.get("config", {}),
                                                                                       "config"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> LayerComparison:
        """Read ``compare.json`` (or the ``compare.json`` inside a run directory).

        Args:
            path: the file or the run directory.

        Returns:
            The :class:`LayerComparison`, checked by :meth:`from_dict`.

        Raises:
            ReportError: the file is missing, unreadable or malformed (one line naming it).
        """
        return read_json_file(path, COMPARE_JSON, cls.from_dict, "a layer comparison")

    @literal_text
    def plot(self, *, ax: Axes | None = None, matrix: str = "d") -> Axes:
        """The heat map of ``matrix``.

        Args:
            ax: the Axes to draw into (default: a new figure's).
            matrix: ``"d"`` or ``"cka"``.

        Returns:
            The Axes.

        Raises:
            CurveError: ``matrix`` is neither.
        """
        if matrix not in ("d", "cka"):
            raise CurveError(f"matrix={matrix!r} is not one of d, cka")
        names = (None, None) if self.same_model else self.names
        panel = heatmap_inches(max(self.d.shape))
        ax = ax if ax is not None else new_axes((panel + 1.5, panel))
        return draw_heatmap(ax, self.d if matrix == "d" else self.cka, matrix, self.curve_a.layers,
                            self.curve_b.layers, label_a=names[0], label_b=names[1])

    @literal_text
    def figure(self) -> Figure:
        """The whole picture ``compare.png`` holds: D and CKA side by side.

        Returns:
            A plain matplotlib Figure.
        """
        from matplotlib.figure import Figure

        panel = heatmap_inches(max(self.d.shape))
        fig = Figure(figsize=(2 * panel + 1.5, panel), layout="constrained")
        for ax, matrix in zip(fig.subplots(1, 2), ("d", "cka")):
            self.plot(ax=ax, matrix=matrix)
        return fig

    def _table(self) -> tuple[list[str], list[list]]:
        rows = [[a, b, float(self.d[i, j]), float(self.cka[i, j])]
                for i, a in enumerate(self.curve_a.layers) for j, b in enumerate(self.curve_b.layers)]
        return ["layer_a", "layer_b", "d", "cka"], rows

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``compare.png``, ``d.csv``, ``cka.csv`` and, last, ``compare.json`` into ``path`` (created).

        Args:
            path: the run directory.

        Returns:
            The directory.

        Raises:
            OutputError: ``path`` cannot be created or written.
        """
        out = ensure_writable_dir(path)
        save_png(self.figure(), out / COMPARE_PNG)
        for name, matrix in ((D_CSV, self.d), (CKA_CSV, self.cka)):
            write_csv(out / name, ["layer", *self.curve_b.layers],
                      ([row_name, *map(float, row)] for row_name, row in zip(self.curve_a.layers, matrix)))
        write_json(out / COMPARE_JSON, self.to_dict())
        return out


def compare_layers(
    model_a: nn.Module,
    data: Data,
    *,
    model_b: nn.Module | None = None,
    layers: LayerSpec = "auto",
    layers_b: LayerSpec | None = None,
    unbiased: bool = False,
    names: tuple[str, str] = ("model", "model"),
    graph: GraphConfig | None = None,
    draws: DrawConfig | None = None,
    **curve_options: Any,
) -> LayerComparison:
    """Modularity curves and CKA between all pairs of layers, on the same class-balanced draws.

    Args:
        model_a: the model whose layers are the rows.
        data: ``(X, y)`` or a torch ``Dataset`` of ``(x, y)`` pairs; X (N, ...) inputs, y (N,) ints.
        model_b: a second model taking the same inputs (columns); None compares ``model_a`` with itself.
        layers: the layer selection of ``model_a``.
        layers_b: that of ``model_b`` (default ``layers``).
        unbiased: the unbiased HSIC estimator in the minibatch CKA (see :mod:`layermod.measure.similarity`).
        names: display names of the two models.
        graph: the kNN graph of both curves (see :func:`layermod.modularity_curve`).
        draws: the draws of both curves: both models see the same draws.
        curve_options: passed to :func:`layermod.modularity_curve` (batch_size, progress, pool, or the configs'
            fields as keywords: k, n_per_class, ...).

    Returns:
        The :class:`LayerComparison`: both curves, d and cka (La, Lb).
    """
    grams_a: list[torch.Tensor] = []
    curve_options.update(graph=graph, draws=draws)  # the same configs for both models
    curve_a = modularity_curve(model_a, data, layers=layers, visit=_collect(grams_a), **curve_options)
    if model_b is None:
        curve_b, grams_b = curve_a, None
    else:
        grams_b = []
        chosen_b = layers if layers_b is None else layers_b
        curve_b = modularity_curve(model_b, data, layers=chosen_b, visit=_collect(grams_b), **curve_options)
    cka = cka_matrix(grams_a, grams_b=grams_b, unbiased=unbiased)
    return LayerComparison(curve_a, curve_b, cka, names=names,
                           config={"unbiased": unbiased, "cka": "linear, minibatch over draws"})


def _collect(grams: list[torch.Tensor]):
    """A ``modularity_curve`` visitor appending each layer's (repeats, n, n) centred Grams to ``grams``."""
    def visit(_name: str, features: torch.Tensor, positions: list[np.ndarray]) -> None:
        grams.append(layer_grams(features, positions).cpu())  # the features may be on the model's device

    return visit
