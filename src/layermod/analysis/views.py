"""Pictures of single layers: the samples in 2-D coloured by class, and the layer's kNN graph drawn on them.

:func:`layer_views` takes ONE class-balanced draw of samples, extracts the chosen layers' features, and for
each layer builds the kNN graph, measures its modularity Q with the classes as communities (exactly as
:func:`layermod.modularity_curve` does for one draw) and embeds the features in 2-D. :func:`plot_views` draws
one column per layer; :func:`save_views` writes ``embedding.png`` and ``embedding.json``.

Decisions, on purpose:

* **The graph drawn is the graph measured.** A view's edges and weights are the upper triangle of the very
  adjacency whose Q it reports (same ``k`` and metric, ``symmetrize="mean"``, weighted, as in the curve's
  defaults), so the picture cannot disagree with the number in its title.
* **Same samples as a curve's draw.** The draw is ``balanced_draws(labels, n_per_class, 1, seed)[0]``: the
  samples of a curve measured with the same ``n_per_class``, ``seed`` and ``repeats=1``. With ``repeats > 1``
  the curve's draws are made differently, so they need not match.
* **PCA by default, deterministic.** ``"pca"`` gives the scores on the top two principal components, computed
  in float64 from the (n, n) Gram matrix of the centred features (cheap when a layer has many more values than
  there are samples). Each component's sign is fixed so that its largest-magnitude score is positive: the same
  features always give the same picture, and so do negated features. ``"tsne"`` is opt-in and needs the
  optional scikit-learn, imported only when asked for.
* **Colours by class.** ``tab10``, or ``tab20`` for more than 10 classes (colours repeat beyond 20). Graph
  edges inside a class are light grey, edges across classes red, so the red share shows what Q penalises.
* **Files.** ``embedding.json`` is written last and atomically (as ``curve.json`` is by
  :func:`layermod.report.save_curve`), so its presence means the PNG is complete. :func:`views_from_dict`
  (and :func:`load_views`, which reads the file) checks everything it reads as :mod:`layermod.validate` says
  and raises a one-line :class:`LayermodError` on malformed data.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from layermod.data.datasets import as_dataset, balanced_draws, dataset_labels, gather
from layermod.errors import FeatureError, GraphError, LayermodError
from layermod.extract.features import extract_features, model_device
from layermod.io.files import atomic_path, ensure_writable_dir, read_json_file, save_png
from layermod.measure.graph import Metric, Symmetrize, as_feature_matrix, knn_graph
from layermod.extract.layers import LayerSpec, select_layers, trace_calls
from layermod.measure.modularity import modularity
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

__all__ = [
    "MAX_VIEWS",
    "METHODS",
    "LayerView",
    "check_method",
    "embed_2d",
    "layer_views",
    "load_views",
    "pick_layers",
    "plot_views",
    "save_views",
    "views_from_dict",
    "views_to_dict",
]

METHODS: tuple[str, ...] = ("pca", "tsne")
MAX_VIEWS = 64  # views in one file: the columns of one figure

_INTRA_COLOUR = "lightgrey"
_CROSS_COLOUR = "tab:red"
_REWRITE_HINT = "write it again with layermod.embedding.save_views"


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
            raise LayermodError(
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


def _pca_2d(x: torch.Tensor, _seed: int) -> np.ndarray:
    """Scores (n, 2) on the top two principal components of ``x`` (n, D), sign-fixed (module doc). Takes the
    seed like every method's function, but has no use for it."""
    x = x.double()
    centred = x - x.mean(dim=0)
    values, vectors = torch.linalg.eigh(centred @ centred.T)  # ascending eigenvalues
    scores = vectors[:, [-1, -2]] * values[[-1, -2]].clamp_min(0).sqrt()
    biggest = scores.abs().argmax(dim=0)
    signs = torch.sign(scores[biggest, torch.arange(2)])
    return (scores * torch.where(signs == 0, 1.0, signs)).cpu().numpy()


def _tsne_class():
    """scikit-learn's TSNE class, or a :class:`LayermodError` saying how to get it."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise LayermodError(
            "t-SNE needs scikit-learn; install it (pip install scikit-learn) or use --view-method pca"
        ) from None
    return TSNE


def _tsne_2d(x: torch.Tensor, seed: int) -> np.ndarray:
    """t-SNE (n, 2) of ``x`` (n, D), PCA-initialised and seeded."""
    n = len(x)
    tsne = _tsne_class()(n_components=2, init="pca", random_state=seed, perplexity=min(30.0, (n - 1) / 3))
    return np.asarray(tsne.fit_transform(x.cpu().numpy()), dtype=np.float64)


def _embedder(method: str) -> Callable[[torch.Tensor, int], np.ndarray]:
    """The function embedding (n, D) features for ``method``; fails for an unknown method or missing
    scikit-learn (t-SNE), so callers can check before any work."""
    if method == "pca":
        return _pca_2d
    if method == "tsne":
        _tsne_class()
        return _tsne_2d
    raise LayermodError(f"unknown embedding method {method!r}; use one of {', '.join(METHODS)}")


def check_method(method: str) -> None:
    """Raise :class:`LayermodError` now for an unknown method, or for t-SNE without scikit-learn, so that a
    caller can fail before long work whose results the views would sit beside."""
    _embedder(method)


def embed_2d(features: torch.Tensor | np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D embedding of the rows of ``features``.

    Args:
        features: (n, D) tensor or array, n >= 2 (trailing dimensions are flattened).
        method: ``"pca"`` (top-2 principal component scores, deterministic signs) or ``"tsne"`` (scikit-learn's
            ``TSNE(init="pca", random_state=seed, perplexity=min(30, (n - 1) / 3))``).
        seed: random state of t-SNE (PCA does not use it).

    Returns:
        (n, 2) float64 array.

    Raises:
        LayermodError: unknown method, or t-SNE without scikit-learn.
        FeatureError: fewer than 2 samples, or NaN/Inf values.
    """
    embed = _embedder(method)
    x = as_feature_matrix(torch.as_tensor(features).detach())
    if len(x) < 2:
        raise FeatureError(f"a 2-D embedding needs at least 2 samples, got {len(x)}; pass more samples")
    if not torch.isfinite(x).all():
        raise FeatureError("features contain NaN or Inf; check the model and inputs")
    return embed(x, seed)


def _upper_edges(adjacency: sp.csr_array) -> tuple[np.ndarray, np.ndarray]:
    """Edges (E, 2) with i < j, in row-major order, and their weights (E,), of a symmetric adjacency."""
    upper = sp.coo_array(sp.triu(adjacency, k=1, format="csr"))
    order = np.lexsort((upper.col, upper.row))
    return np.stack([upper.row[order], upper.col[order]], axis=1).astype(np.int64), upper.data[order]


def _view(name: str, features: torch.Tensor, labels: np.ndarray, graph: dict, method: str, seed: int) -> LayerView:
    """The view of one layer's features (n, D) with labels (n,); ``graph`` holds knn_graph's options."""
    try:
        adjacency = knn_graph(features, **graph)
        q = modularity(adjacency, labels)
    except (FeatureError, GraphError) as err:
        raise type(err)(f"layer {name!r}: {err}") from None
    edges, weights = _upper_edges(adjacency)
    return LayerView(name, embed_2d(features, method, seed), labels, edges, weights, q)


def layer_views(
    model: nn.Module,
    data,
    layers: LayerSpec = "auto",
    n_per_class: int = 30,
    k: int = 3,
    seed: int = 0,
    method: str = "pca",
    batch_size: int = 256,
    metric: Metric = "cosine",
    symmetrize: Symmetrize = "mean",
    weighted: bool = True,
) -> list[LayerView]:
    """2-D views and kNN graphs of ``layers`` on one class-balanced draw of ``data``.

    Args:
        model: any ``nn.Module``; evaluated in eval mode without gradients on its own device.
        data: ``(X, y)`` tensors/arrays or a torch ``Dataset`` of ``(x, y)`` (as for the curve).
        layers: ``"auto"``, names, glob patterns or indices (see :mod:`layermod.layers`); see
            :func:`pick_layers` for a few evenly spaced ones.
        n_per_class: samples of each class in the draw (n = n_per_class * classes).
        k, metric, symmetrize, weighted: the kNN graph (see :func:`layermod.knn_graph`).
        seed: seed of the draw and of t-SNE.
        method: ``"pca"`` or ``"tsne"`` (see :func:`embed_2d`).
        batch_size: samples per forward pass.

    Returns:
        One :class:`LayerView` per selected layer, in forward order of the selection.
    """
    check_method(method)  # before the forward pass
    dataset = as_dataset(data)
    draw = balanced_draws(dataset_labels(dataset), n_per_class, 1, seed)[0]
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k < len(draw):
        raise GraphError(f"k={k} needs 1 <= k < {len(draw)} samples per draw; lower k or raise n_per_class")
    inputs, targets = gather(dataset, draw)
    calls = trace_calls(model, inputs[:2].to(model_device(model)))
    names = select_layers(model, layers, calls)
    once = all(calls[name].calls == 1 for name in names)
    features = extract_features(model, inputs, names, batch_size, stop_early=once)
    labels = targets.numpy()
    graph = {"k": k, "metric": metric, "symmetrize": symmetrize, "weighted": weighted}
    return [_view(name, features[name], labels, graph, method, seed) for name in names]


def pick_layers(names: Sequence[str], count: int = 3) -> list[str]:
    """``count`` evenly spaced layers of ``names``, first and last included (positions rounded half up).

    Fewer names than ``count``: all of them. ``count=1`` gives the last layer. E.g. 9 names, count 3: the
    first, fifth and ninth.
    """
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise LayermodError(f"count={count!r} must be a positive integer; pass how many layers to show")
    names = list(names)
    if len(names) <= count:
        return names
    if count == 1:
        return names[-1:]
    span, steps = len(names) - 1, count - 1
    return [names[(2 * i * span + steps) // (2 * steps)] for i in range(count)]


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


def _check_class_names(views: Sequence[LayerView], class_names: Sequence[str] | None) -> None:
    """Raise unless every label of ``views`` indexes a string in ``class_names`` (when given)."""
    problem = _class_names_problem(views, class_names)
    if problem:
        raise LayermodError(f"{problem}; pass one name per class, indexed by label")


def views_to_dict(
    views: Sequence[LayerView],
    class_names: Sequence[str] | None = None,
    config: dict | None = None,
) -> dict:
    """JSON-ready dict: ``{"class_names": [...] | None, "config": {...}, "layers": [{"layer", "q", "coords",
    "labels", "edges", "weights"}, ...]}`` with coords (n, 2), labels (n,), edges (E, 2), weights (E,) as lists.

    ``config`` records how the views were made (method, k, n_per_class, seed, metric, ...) and must itself be
    JSON-ready.
    """
    _check_class_names(views, class_names)
    return {
        "class_names": None if class_names is None else list(class_names),
        "config": dict(config or {}),
        "layers": [
            {"layer": view.layer, "q": view.q, "coords": view.coords.tolist(), "labels": view.labels.tolist(),
             "edges": view.edges.tolist(), "weights": view.weights.tolist()}
            for view in views
        ],
    }


def _malformed(why: str) -> LayermodError:
    return LayermodError(f"malformed embedding data ({why}); {_REWRITE_HINT}")


def _view_from_json(i: int, entry: object) -> LayerView:
    """``layers[i]`` of a :func:`views_to_dict` dict read from a file as a LayerView; ValueError naming the first
    problem (types and bounds as :mod:`layermod.validate` says, at most ``MAX_ITEMS`` samples)."""
    where = f"layers[{i}]"
    entry = mapping(entry, where)
    layer = text(required(entry, "layer"), f"{where}.layer")
    labels = numbers(required(entry, "labels"), f"{where}.labels", (None,), 0, integer=True)
    n = len(labels)
    if n > MAX_ITEMS:
        raise ValueError(f"{where} has {n:,} samples, more than {MAX_ITEMS:,}")
    coords = numbers(required(entry, "coords"), f"{where}.coords", (n, 2))
    edges = numbers(required(entry, "edges"), f"{where}.edges", (None, 2), 0, n - 1, integer=True)
    weights = numbers(required(entry, "weights"), f"{where}.weights", (len(edges),), 0)
    q = number(required(entry, "q"), f"{where}.q", *q_bounds({}))
    try:
        fields = _view_arrays(coords, labels, edges, weights, q)
    except ValueError as err:
        raise ValueError(f"{where} ({shorten(layer)}): {err}") from None
    return LayerView(layer, *fields)


def _views_from_json(data: object) -> tuple[list[LayerView], list[str] | None, dict]:
    """:func:`views_from_dict` raising ValueError (for :func:`layermod.fileio.read_json_file`)."""
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
    return views, class_names, config


def views_from_dict(data: dict) -> tuple[list[LayerView], list[str] | None, dict]:
    """Inverse of :func:`views_to_dict`: ``(views, class_names, config)``.

    ``class_names`` and ``config`` may be absent (None and ``{}``). Anything malformed (not a dict, missing
    keys, arrays whose lengths disagree, edges out of range, non-finite or out-of-range numbers, more than
    :data:`MAX_VIEWS` views, labels without a class name) raises a one-line :class:`LayermodError`.
    """
    try:
        return _views_from_json(data)
    except ValueError as err:
        raise _malformed(str(err)) from None


def load_views(path: str | os.PathLike) -> tuple[list[LayerView], list[str] | None, dict]:
    """:func:`views_from_dict` of ``embedding.json`` (or the one inside a run directory); a one-line
    :class:`~layermod.errors.ReportError` naming the file when it cannot be read."""
    return read_json_file(path, "embedding.json", _views_from_json, "2-D views")


def _class_colours(classes: np.ndarray) -> dict[int, tuple]:
    """A colour per class label: tab10, or tab20 for more than 10 classes (repeating beyond 20)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    return {int(c): cmap(i % cmap.N) for i, c in enumerate(classes)}


def _node_colours(view: LayerView, colours: dict[int, tuple]) -> list[tuple]:
    return [colours[int(c)] for c in view.labels]


def _draw_samples(ax, view: LayerView, colours: dict[int, tuple]) -> None:
    """Top panel: the samples at their 2-D coordinates, coloured by class."""
    ax.scatter(view.coords[:, 0], view.coords[:, 1], s=12, c=_node_colours(view, colours), linewidths=0)
    ax.set_title(f"{label(view.layer)}\nQ = {view.q:.3f}, intra-class edges {view.intra_fraction:.0%}", fontsize=9)


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


@literal_text
def plot_views(views: Sequence[LayerView], path: str | os.PathLike | None = None,
               class_names: Sequence[str] | None = None):
    """One column per view: samples coloured by class (top) and the kNN graph on the same coordinates (bottom).

    Column titles give the layer, Q and the share of edge weight inside classes; one legend names the classes
    (``class_names[label]``, else the label); names are drawn literally and shortened (see
    :mod:`layermod.validate`). Returns the matplotlib Figure; with ``path`` it is saved as PNG
    (written atomically) without involving pyplot.
    """
    if not views:
        raise LayermodError("no layer views to plot; pass at least one LayerView")
    _check_class_names(views, class_names)
    size = (3.2 * len(views) + 1.6, 6.6)
    if path is None:  # interactive: let pyplot show it
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=size, layout="constrained")
    else:  # file only: no GUI backend involved
        from matplotlib.figure import Figure

        fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(2, len(views), sharex="col", sharey="col", squeeze=False)
    colours = _class_colours(np.unique(np.concatenate([view.labels for view in views])))
    for col, view in enumerate(views):
        _draw_samples(axes[0, col], view, colours)
        _draw_graph(axes[1, col], view, colours)
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("samples by class", fontsize=9)
    axes[1, 0].set_ylabel("kNN graph (red: across classes)", fontsize=9)
    _legend(axes[0, -1], colours, class_names)
    if path is not None:
        save_png(fig, path, tight=True)
    return fig


def save_views(
    views: Sequence[LayerView],
    out_dir: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    config: dict | None = None,
) -> Path:
    """Write ``embedding.png`` and then ``embedding.json`` (see :func:`views_to_dict`) into ``out_dir``, each
    whole or not at all. Returns ``out_dir`` as a Path."""
    out = ensure_writable_dir(out_dir)
    text = json.dumps(views_to_dict(views, class_names, config))
    plot_views(views, out / "embedding.png", class_names)
    with atomic_path(out / "embedding.json") as tmp:
        tmp.write_text(text)
    return out
