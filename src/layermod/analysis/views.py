"""Pictures of single layers: the samples in 2-D coloured by class, and the layer's kNN graph drawn on them.

:func:`layer_views` takes ONE class-balanced draw of samples, extracts the chosen layers' features, and for
each layer builds the kNN graph, measures its modularity Q with the classes as communities (exactly as
:func:`layermod.modularity_curve` does for one draw) and embeds the features in 2-D
(:mod:`layermod.analysis.embedding`). Its :class:`LayerView` results, with the class names and how they were
made, form a :class:`Views` (:mod:`layermod.analysis.layer_view`), which draws one column per layer
(:meth:`Views.figure`) and writes ``embedding.png`` and ``embedding.json`` (:meth:`Views.save`). This module is the
front of the three: it re-exports what they offer.

Decisions, on purpose:

* **The graph drawn is the graph measured.** A view's edges and weights are the upper triangle of the very
  adjacency whose Q it reports (built and scored as its :class:`~layermod.measure.config.GraphConfig` says,
  as the curve's graphs are), so the picture cannot disagree with the number in its title.
* **Same samples as a curve's draw.** The draw is
  ``balanced_draws(labels, n_per_class=n_per_class, repeats=1, seed=seed)[0]``: the samples of a curve measured
  with the same ``n_per_class``, ``seed`` and ``repeats=1``. With ``repeats > 1`` the curve's draws are made
  differently, so they need not match.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from layermod.analysis.embedding import METHODS, check_method, embed_2d
from layermod.analysis.layer_view import MAX_VIEWS, LayerView, Views
from layermod.data.arrays import Data, as_dataset, dataset_labels, gather
from layermod.data.draws import balanced_draws
from layermod.errors import FeatureError, GraphError, ViewError
from layermod.extract.features import extract_features, traced_layouts
from layermod.extract.inputs import slice_batch
from layermod.extract.pooling import check_pool
from layermod.extract.layers import LayerSpec, select_layers, trace_calls
from layermod.measure.config import GraphConfig, GraphOptions, graph_config
from layermod.measure.graph import build_graph
from layermod.measure.modularity import modularity

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "MAX_VIEWS",
    "METHODS",
    "LayerView",
    "Views",
    "check_method",
    "embed_2d",
    "layer_views",
    "pick_layers",
]


def _upper_edges(adjacency: sp.csr_array) -> tuple[np.ndarray, np.ndarray]:
    """Edges (E, 2) with i < j, in row-major order, and their weights (E,), of a symmetric adjacency."""
    upper = sp.coo_array(sp.triu(adjacency, k=1, format="csr"))
    order = np.lexsort((upper.col, upper.row))
    return np.stack([upper.row[order], upper.col[order]], axis=1).astype(np.int64), upper.data[order]


def _view(name: str, features: torch.Tensor, labels: np.ndarray, graph: GraphConfig, method: str,
          seed: int) -> LayerView:
    """The view of one layer's features (n, D) with labels (n,), its graph and Q as ``graph`` says."""
    try:
        adjacency = build_graph(features, graph=graph, seed=seed).adjacency  # the curve's search: exact or approximate
        q = modularity(adjacency, labels, resolution=graph.resolution)
    except (FeatureError, GraphError) as err:
        raise type(err)(f"layer {name!r}: {err}") from None
    edges, weights = _upper_edges(adjacency)
    return LayerView(name, embed_2d(features, method=method, seed=seed), labels, edges, weights, q)


def layer_views(
    model: nn.Module,
    data: Data,
    *,
    layers: LayerSpec = "auto",
    n_per_class: int = 30,
    seed: int = 0,
    method: str = "pca",
    batch_size: int = 256,
    graph: GraphConfig | None = None,
    pool: str = "auto",
    **options: Unpack[GraphOptions],
) -> list[LayerView]:
    """2-D views and kNN graphs of ``layers`` on one class-balanced draw of ``data``.

    Args:
        model: any ``nn.Module``; evaluated in eval mode without gradients on its own device.
        data: ``(X, y)`` tensors/arrays or a torch ``Dataset`` of ``(x, y)`` (as for the curve).
        layers: ``"auto"``, names, glob patterns or indices (see :mod:`layermod.extract.layers`); see
            :func:`pick_layers` for a few evenly spaced ones.
        n_per_class: samples of each class in the draw (n = n_per_class * classes).
        seed: seed of the draw and of t-SNE.
        method: ``"pca"`` or ``"tsne"`` (see :func:`embed_2d`).
        batch_size: samples per forward pass.
        graph: the kNN graph and the resolution of Q (default :class:`GraphConfig`'s).
        pool: how a 3-D token output becomes one vector per sample, as for the curve.
        options: fields of :class:`GraphConfig` as keywords (``k=5``, ...), as for the curve.

    Returns:
        One :class:`LayerView` per selected layer, in forward order of the selection.
    """
    graph = graph_config(graph=graph, **options)
    check_method(method)  # before the forward pass
    check_pool(pool)
    dataset = as_dataset(data, per_class=n_per_class)
    draw = balanced_draws(dataset_labels(dataset), n_per_class=n_per_class, repeats=1, seed=seed)[0]
    if not graph.k < len(draw):
        raise GraphError(f"k={graph.k} needs 1 <= k < {len(draw)} samples per draw; lower k or raise n_per_class")
    inputs, targets = gather(dataset, draw)
    calls = trace_calls(model, slice_batch(inputs, 0, stop=2))
    names = select_layers(model, layers, calls)
    once = all(calls[name].calls == 1 for name in names)
    features = extract_features(model, inputs, layers=names, batch_size=batch_size, stop_early=once, pool=pool,
                                layouts=traced_layouts(calls, names))
    labels = targets.numpy()
    return [_view(name, features[name], labels, graph, method, seed) for name in names]


def pick_layers(names: Sequence[str], *, count: int = 3) -> list[str]:
    """``count`` evenly spaced layers of ``names``, first and last included (positions rounded half up).

    Fewer names than ``count``: all of them. ``count=1`` gives the last layer. E.g. 9 names, count 3: the
    first, fifth and ninth.
    """
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ViewError(f"count={count!r} must be a positive integer; pass how many layers to show")
    names = list(names)
    if len(names) <= count:
        return names
    if count == 1:
        return names[-1:]
    span, steps = len(names) - 1, count - 1
    return [names[(2 * i * span + steps) // (2 * steps)] for i in range(count)]
