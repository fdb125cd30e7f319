"""One layer's samples in 2-D with its kNN graph (:class:`LayerView`), and the views of a run (:class:`Views`):
checked, written, read back and drawn.

:func:`layermod.analysis.views.layer_views` measures the views; :class:`Views` adds the class names and how the
views were made, and is what a run directory holds: :meth:`Views.save` writes ``embedding.png`` and
``embedding.json``, :meth:`Views.load` reads the JSON back, :meth:`Views.plot` draws one column per layer.

Decisions, on purpose:

* **Checked on construction.** A view's arrays are converted and checked (shapes agree, edge indices in range,
  finite values), and the class names must name every label; anything off is one :class:`LayermodError` line.
* **Colours by class.** ``tab10``, or ``tab20`` for more than 10 classes (colours repeat beyond 20). Graph
  edges inside a class are light grey, edges across classes red, so the red share shows what Q penalises.
* **Files.** ``embedding.json`` is written last and atomically (as ``curve.json`` is by
  :meth:`layermod.analysis.curve.Curve.save`), so its presence means the PNG is complete. :meth:`Views.from_dict`
  (and :meth:`Views.load`, which reads the file) checks everything it reads as :mod:`layermod.io.validate` says
  and raises a one-line :class:`LayermodError` on malformed data; at most :data:`MAX_VIEWS` views are read.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from layermod.errors import ViewError
from layermod.io.files import atomic_path, ensure_writable_dir, read_json_file, save_png
from layermod.io.rundir import EMBEDDING_JSON, EMBEDDING_PNG
from layermod.io.table import TableResult, new_axes
from layermod.io.validate import (
    MAX_ITEMS,
    label,
    literal_text,
    mapping,
    names,
    number,
    numbers,
    q_bounds,
    required,
    run_config,
    shorten,
    text,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["MAX_VIEWS", "LayerView", "Views"]

MAX_VIEWS = 64  # views in one file: the columns of one figure

_INTRA_COLOUR = "lightgrey"
_CROSS_COLOUR = "tab:red"
_REWRITE_HINT = "write it again with layermod.analysis.views.Views.save"


def _view_arrays(coords, labels, edges, weights, q) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Fields of a view as LayerView holds them: coords (n, 2) float64, labels (n,) int64, edges (E, 2) int64,
    weights (E,) float64, q float. Raises ValueError (or TypeError) naming the first problem."""
    coords = np.asarray(coords, dtype=np.float64)
    labels = np.asarray(labels)
    edges = np.asarray(edges)
    weights = np.asarray(weights, dtype=np.float64)
    q = float(q)
    if labels.ndim != 1:
        raise ValueError(f"labels have shape {labels.shape}, not (n,)")
    if labels.size and labels.dtype.kind not in "iu":
        raise ValueError(f"labels are {labels.dtype}, not integers")
    n = len(labels)
    if coords.shape != (n, 2):
        raise ValueError(f"coords have shape {coords.shape} for {n} labels, not ({n}, 2)")
    if edges.size == 0:  # also an empty JSON list, read as float
        edges = np.zeros((0, 2), dtype=np.int64)
    if edges.ndim != 2 or edges.shape[1] != 2 or edges.dtype.kind not in "iu":
        raise ValueError(f"edges are {edges.dtype} of shape {edges.shape}, not (E, 2) integers")
    if weights.shape != (len(edges),):
        raise ValueError(f"weights have shape {weights.shape} for {len(edges)} edges, not ({len(edges)},)")
    if len(edges) and not (edges[:, 0].min() >= 0 and (edges[:, 0] < edges[:, 1]).all() and edges[:, 1].max() < n):
        raise ValueError(f"edges must be pairs i < j of sample indices 0..{n - 1}")
    if not (np.isfinite(coords).all() and np.isfinite(weights).all() and math.isfinite(q)):
        raise ValueError("coords, weights or q are not all finite numbers")
    if weights.size and weights.min() < 0:
        raise ValueError("weights are negative")
    return coords, labels.astype(np.int64), edges.astype(np.int64), weights, q


@dataclass(frozen=True, eq=False)
class LayerView:
    """One layer's samples in 2-D and its kNN graph.

    Attributes:
        layer: module name.
        coords: (n, 2) float64 2-D embedding of the n samples.
        labels: (n,) int64 class labels.
        edges: (E, 2) int64 edges ``(i, j)`` with ``i < j`` of the kNN graph (its upper triangle).
        weights: (E,) float64 edge weights.
        q: modularity of that graph with the labels as communities.

    Arrays are converted on construction and checked (shapes agree, edge indices in range, finite values);
    anything off is a :class:`LayermodError`. Views compare by identity (``eq=False``): arrays have no single
    truth value.
    """

    layer: str
    coords: np.ndarray
    labels: np.ndarray
    edges: np.ndarray
    weights: np.ndarray
    q: float

    def __post_init__(self) -> None:
        try:
            fields = _view_arrays(self.coords, self.labels, self.edges, self.weights, self.q)
        except (ValueError, TypeError) as err:
            raise ViewError(
                f"invalid view of layer {self.layer!r}: {err}; pass coords (n, 2), labels (n,), "
                "edges (E, 2) with i < j < n and weights (E,)"
            ) from None
        for name, value in zip(("coords", "labels", "edges", "weights", "q"), fields):
            object.__setattr__(self, name, value)

    @property
    def intra_fraction(self) -> float:
        """Share of the edge weight on edges inside a class (NaN for a graph without weight)."""
        total = self.weights.sum()
        if not total > 0:
            return float("nan")
        inside = self.labels[self.edges[:, 0]] == self.labels[self.edges[:, 1]]
        return float(self.weights[inside].sum() / total)


def _class_names_problem(views: Sequence[LayerView], class_names: Sequence[str] | None) -> str | None:
    """Why ``class_names`` (when given) cannot name every label of ``views``, or None if they can."""
    if class_names is None:
        return None
    if not all(isinstance(name, str) for name in class_names):
        return "class names are not all strings"
    for view in views:
        if len(view.labels) and not 0 <= view.labels.min() <= view.labels.max() < len(class_names):
            return (f"layer {view.layer!r} has labels {view.labels.min()}..{view.labels.max()} "
                    f"but there are {len(class_names)} class names")
    return None


@dataclass(frozen=True, eq=False, repr=False)
class Views(TableResult):
    """2-D views and kNN graphs of a few layers on one draw of samples, as a run directory holds them.

    Attributes:
        views: one :class:`LayerView` per layer, in forward order.
        class_names: the name of every label (``class_names[label]``), or None to show the labels themselves.
        config: how the views were made (method, k, n_per_class, seed, metric, ...); JSON-ready.

    Raises :class:`LayermodError` on construction when ``class_names`` cannot name every label.
    """

    views: list[LayerView]
    _: KW_ONLY
    class_names: list[str] | None = None
    config: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "views", list(self.views))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", list(self.class_names))
        object.__setattr__(self, "config", dict(self.config))
        problem = _class_names_problem(self.views, self.class_names)
        if problem:
            raise ViewError(f"{problem}; pass one name per class, indexed by label")

    def to_dict(self) -> dict:
        """JSON-ready dict of the views.

        Returns:
            ``{"class_names": [...] | None, "config": {...}, "layers": [{"layer", "q", "coords", "labels", "edges",
                "weights"}, ...]}`` with coords (n, 2), labels (n,), edges (E, 2), weights (E,) as lists.
        """
        return {
            "class_names": None if self.class_names is None else list(self.class_names),
            "config": dict(self.config),
            "layers": [
                {"layer": view.layer, "q": view.q, "coords": view.coords.tolist(), "labels": view.labels.tolist(),
                 "edges": view.edges.tolist(), "weights": view.weights.tolist()}
                for view in self.views
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Views:
        """Inverse of :meth:`to_dict`; ``class_names`` and ``config`` may be absent (None and ``{}``).

        Args:
            data: a dict as :meth:`to_dict` writes it.

        Returns:
            The :class:`Views`.

        Raises:
            ViewError: anything malformed (not a dict, missing keys, arrays whose lengths disagree, edges out of
                range, non-finite or out-of-range numbers, more than :data:`MAX_VIEWS` views, labels without a
                class name), in one line.
        """
        try:
            return _views_from_json(data)
        except ValueError as err:
            raise ViewError(f"malformed embedding data ({err}); {_REWRITE_HINT}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Views:
        """Read ``embedding.json`` (or the one inside a run directory).

        Args:
            path: the file or the run directory.

        Returns:
            The :class:`Views`.

        Raises:
            ReportError: the file cannot be read (one line naming it).
        """
        return read_json_file(path, EMBEDDING_JSON, _views_from_json, "2-D views")

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``embedding.png`` and then ``embedding.json`` into ``path`` (created), each whole or not at all.

        Args:
            path: the run directory.

        Returns:
            The directory.

        Raises:
            OutputError: ``path`` cannot be created or written.
        """
        out = ensure_writable_dir(path)
        content = json.dumps(self.to_dict())
        save_png(self.figure(), out / EMBEDDING_PNG, tight=True)
        with atomic_path(out / EMBEDDING_JSON) as tmp:
            tmp.write_text(content)
        return out

    @literal_text
    def plot(self, *, ax: Axes | None = None, layer: str | None = None, graph: bool = False) -> Axes:
        """One view: the samples of ``layer`` coloured by class, or its kNN graph, with a legend of the classes.

        Args:
            ax: the Axes to draw into (default: a new figure's).
            layer: the view's layer (default: the last view).
            graph: draw the kNN graph on the same coordinates instead of the samples.

        Returns:
            The Axes.
        """
        view = self._view(layer)
        ax = ax if ax is not None else new_axes((4.8, 3.6))
        colours = self._colours()
        (_draw_graph if graph else _draw_samples)(ax, view, colours)
        ax.set_title(_title(view), fontsize=9)
        _legend(ax, colours, self.class_names)
        return ax

    @literal_text
    def figure(self) -> Figure:
        """The whole picture ``embedding.png`` holds.

        One column per view, samples coloured by class (top) and the kNN graph on the same coordinates (bottom);
        column titles give the layer, Q and the share of edge weight inside classes; names are drawn literally
        and shortened (see :mod:`layermod.io.validate`).

        Returns:
            A plain matplotlib Figure.
        """
        from matplotlib.figure import Figure

        self._view(None)
        fig = Figure(figsize=(3.2 * len(self.views) + 1.6, 6.6), layout="constrained")
        axes = fig.subplots(2, len(self.views), sharex="col", sharey="col", squeeze=False)
        colours = self._colours()
        for col, view in enumerate(self.views):
            _draw_samples(axes[0, col], view, colours)
            axes[0, col].set_title(_title(view), fontsize=9)
            _draw_graph(axes[1, col], view, colours)
            for ax in axes[:, col]:
                ax.set_xticks([])
                ax.set_yticks([])
        axes[0, 0].set_ylabel("samples by class", fontsize=9)
        axes[1, 0].set_ylabel("kNN graph (red: across classes)", fontsize=9)
        _legend(axes[0, -1], colours, self.class_names)
        return fig

    def _view(self, layer: str | None) -> LayerView:
        if not self.views:
            raise ViewError("no layer views to plot; pass at least one LayerView")
        if layer is None:
            return self.views[-1]
        for view in self.views:
            if view.layer == layer:
                return view
        raise ViewError(f"no view of layer {shorten(layer)}; pick one of {', '.join(v.layer for v in self.views)}")

    def _colours(self) -> dict[int, tuple]:
        return _class_colours(np.unique(np.concatenate([view.labels for view in self.views])))

    def _table(self) -> tuple[list[str], list[list]]:
        return (["layer", "q", "intra_fraction", "samples", "edges"],
                [[v.layer, v.q, v.intra_fraction, len(v.labels), len(v.edges)] for v in self.views])


def _view_from_json(i: int, entry: object) -> LayerView:
    """``layers[i]`` of a :meth:`Views.to_dict` dict read from a file as a LayerView; ValueError naming the first
    problem (types and bounds as :mod:`layermod.io.validate` says, at most ``MAX_ITEMS`` samples)."""
    where = f"layers[{i}]"
    entry = mapping(entry, where)
    layer = text(required(entry, "layer"), f"{where}.layer")
    labels = numbers(required(entry, "labels"), f"{where}.labels", (None,), low=0, integer=True)
    n = len(labels)
    if n > MAX_ITEMS:
        raise ValueError(f"{where} has {n:,} samples, more than {MAX_ITEMS:,}")
    coords = numbers(required(entry, "coords"), f"{where}.coords", (n, 2))
    edges = numbers(required(entry, "edges"), f"{where}.edges", (None, 2), low=0, high=n - 1, integer=True)
    weights = numbers(required(entry, "weights"), f"{where}.weights", (len(edges),), low=0)
    low, high = q_bounds({})
    q = number(required(entry, "q"), f"{where}.q", low=low, high=high)
    try:
        fields = _view_arrays(coords, labels, edges, weights, q)
    except ValueError as err:
        raise ValueError(f"{where} ({shorten(layer)}): {err}") from None
    return LayerView(layer, *fields)


def _views_from_json(data: object) -> Views:
    """:meth:`Views.from_dict` raising ValueError (for :func:`layermod.io.files.read_json_file`)."""
    data = mapping(data, "the embedding data")
    entries = required(data, "layers")
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_VIEWS:
        raise ValueError(f"layers is not a list of 1 to {MAX_VIEWS} views")
    class_names = data.get("class_names")
    if class_names is not None:
        class_names = names(class_names, "class_names")
    config = run_config(data.get("config", {}))
    views = [_view_from_json(i, entry) for i, entry in enumerate(entries)]
    problem = _class_names_problem(views, class_names)
    if problem:
        raise ValueError(problem)
    return Views(views, class_names=class_names, config=config)


def _class_colours(classes: np.ndarray) -> dict[int, tuple]:
    """A colour per class label: tab10, or tab20 for more than 10 classes (repeating beyond 20)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    return {int(c): cmap(i % cmap.N) for i, c in enumerate(classes)}


def _node_colours(view: LayerView, colours: dict[int, tuple]) -> list[tuple]:
    return [colours[int(c)] for c in view.labels]


def _title(view: LayerView) -> str:
    return f"{label(view.layer)}\nQ = {view.q:.3f}, intra-class edges {view.intra_fraction:.0%}"


def _draw_samples(ax, view: LayerView, colours: dict[int, tuple]) -> None:
    """Top panel: the samples at their 2-D coordinates, coloured by class."""
    ax.scatter(view.coords[:, 0], view.coords[:, 1], s=12, c=_node_colours(view, colours), linewidths=0)


def _draw_graph(ax, view: LayerView, colours: dict[int, tuple]) -> None:
    """Bottom panel: the kNN graph on the same coordinates; grey edges inside classes, red across."""
    from matplotlib.collections import LineCollection

    segments = view.coords[view.edges]  # (E, 2 ends, 2 coordinates)
    inside = view.labels[view.edges[:, 0]] == view.labels[view.edges[:, 1]]
    ax.add_collection(LineCollection(segments[inside], colors=_INTRA_COLOUR, linewidths=0.6, zorder=1))
    ax.add_collection(LineCollection(segments[~inside], colors=_CROSS_COLOUR, linewidths=0.6, alpha=0.8, zorder=2))
    ax.scatter(view.coords[:, 0], view.coords[:, 1], s=5, c=_node_colours(view, colours), linewidths=0, zorder=3)


def _legend(ax, colours: dict[int, tuple], class_names: Sequence[str] | None) -> None:
    """One legend of the classes, outside ``ax`` to its right."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], ls="", marker="o", ms=5, color=colour,
               label=label(class_names[c] if class_names is not None else str(c)))
        for c, colour in colours.items()
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=7,
              ncol=1 + (len(handles) - 1) // 20, title="class", title_fontsize=8)
