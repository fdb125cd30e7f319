"""k-nearest-neighbour graphs over samples.

The decisions behind it: docs/design.md, section layermod.measure.graph.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from layermod.coerce import as_real_tensor, seed_sequence
from layermod.errors import FeatureError, GraphError
from layermod.measure.ann import ann_neighbours, recall, sketch
from layermod.measure.config import (GraphConfig, Knn, Metric, Precision, Symmetrize, check_budget, check_options,
                                     check_search, check_sketch_size)
from layermod.measure.rows import COSINE_EPS, Rows, block_sizes, matmul_precision
from layermod.measure.search import MAX_TIED_EDGES, Neighbours, search

__all__ = ["COSINE_EPS", "MAX_TIED_EDGES", "Graph", "as_feature_matrix", "build_graph", "default_block_size", "knn_graph"]

_BLOCK_ELEMENTS = 4 * 2**20  # similarity entries held at once (16 MiB in float32: the allocator reuses it)
_GPU_BLOCK_ELEMENTS = 32 * 2**20  # on a GPU, fewer and larger blocks (128 MiB)
_RECALL_BYTES = 256 * 2**20  # budget of the exact reference search of the recall when none is given


def as_feature_matrix(features: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Return ``features`` as a floating tensor of shape (N, D).

    Trailing dimensions are flattened: (N, C, H, W) becomes (N, C*H*W). float64 input stays float64,
    anything else becomes float32. A tensor that requires grad is detached, a small sparse input made dense
    (see :func:`layermod.coerce.as_real_tensor`).

    Raises:
        FeatureError: a scalar, empty, complex or non-numeric input, or a sparse one too large to make dense.
    """
    x = as_real_tensor(features, "features", FeatureError)
    if x.ndim == 0:
        raise FeatureError("features must have shape (N, D); got a scalar")
    if x.numel() == 0:
        raise FeatureError(f"features are empty (shape {tuple(x.shape)}); pass at least 2 samples with D >= 1 values")
    x = x.reshape(x.shape[0], -1)
    return x if x.dtype == torch.float64 else x.float()


def default_block_size(n: int, *, device: torch.device | str = "cpu") -> int:
    """Rows per block so that one block of similarities holds about 4M entries (32M on a GPU)."""
    elements = _GPU_BLOCK_ELEMENTS if torch.device(device).type == "cuda" else _BLOCK_ELEMENTS
    return max(1, min(n, elements // max(n, 1)))


class Graph(NamedTuple):
    """A kNN graph and how its neighbours were found: ``adjacency`` (N, N) as :func:`knn_graph` returns it, and
    ``recall``, the fraction of exact k nearest neighbours the approximate search found (None when exact)."""

    adjacency: sp.csr_array
    recall: float | None


def knn_graph(
    features: torch.Tensor | np.ndarray,
    *,
    k: int = GraphConfig.k,
    metric: Metric = GraphConfig.metric,
    symmetrize: Symmetrize = GraphConfig.symmetrize,
    weighted: bool = GraphConfig.weighted,
    block_size: int | None = None,
    knn: Knn = GraphConfig.knn,
    sketch_dim: int | None = GraphConfig.sketch_dim,
    precision: Precision = GraphConfig.precision,
    max_bytes: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> sp.csr_array:
    """Symmetric k-nearest-neighbour graph over the rows of ``features``.

    Args:
        features: (N, D) tensor or array (extra trailing dimensions are flattened); a numpy memmap is read
            block by block when ``max_bytes`` is given.
        k: neighbours per sample, 1 <= k <= N - 1. Self-loops are never formed.
        metric: ``"cosine"`` (paper) or ``"euclidean"``.
        symmetrize: ``"mean"`` (paper: ``(A + A^T) / 2``), ``"union"`` (``max(A, A^T)``: an edge when either
            side points) or ``"mutual"`` (``min(A, A^T)``: only pairs that point at each other).
        weighted: edge weights from the metric (see docs/design.md); ``False`` gives weight 1 per directed edge
            (a tied place's 1 shared; cosine: only to neighbours with positive similarity, the edges of the
            weighted graph).
        block_size: rows of the similarity matrix computed at once (default: about 4M entries per block).
        knn: ``"exact"`` (default), or faiss's approximate ``"ivf"`` or ``"hnsw"`` (needs ``layermod[ann]``).
        sketch_dim: project the features to this many dimensions first (approximate; default None: no sketch).
        precision: ``"float32"`` (default, exact), ``"tf32"`` or ``"bf16"`` (faster, approximate).
        max_bytes: memory budget of the search; features whose N x D exceeds it are read in blocks.
        device: where the search runs (default: the features' device).
        seed: any integer: the sketch's projection, IVF's k-means and the recall's rows.

    Returns:
        (N, N) symmetric ``scipy.sparse.csr_array`` of float64 weights, no explicit zeros; at most ``2 k N``
            stored entries unless samples tie for the k-th place (then one more per tied candidate).

    Raises:
        FeatureError: features that are not (N, D) real finite numbers (see :func:`as_feature_matrix`).
        GraphError: an invalid option, ties needing more than ``MAX_TIED_EDGES`` edges, or an approximate
            search without faiss.
    """
    return _build(features, k, metric, symmetrize, weighted, block_size, knn, sketch_dim, precision,
                  max_bytes, device, seed).adjacency


def build_graph(
    features: torch.Tensor | np.ndarray,
    *,
    graph: GraphConfig,
    seed: int = 0,
    max_bytes: int | None = None,
    device: torch.device | str | None = None,
) -> Graph:
    """The kNN graph that ``graph`` describes over ``features``, with the recall of an approximate search.

    Args:
        features: (N, D) tensor or ndarray (as for :func:`knn_graph`).
        graph: k, metric, symmetrize, weights, search, sketch and precision.
        seed: any integer: the sketch's projection, IVF's k-means and the recall's rows.
        max_bytes: memory budget of the search; features whose N x D exceeds it are read in blocks.
        device: where the search runs (default: the features' device).

    Returns:
        :class:`Graph`: adjacency (N, N) as :func:`knn_graph` returns it, and the recall (None when exact).

    Raises:
        FeatureError: features that are not (N, D) real finite numbers.
        GraphError: as :func:`knn_graph`.
    """
    return _build(features, graph.k, graph.metric, graph.symmetrize, graph.weighted, None, graph.knn,
                  graph.sketch_dim, graph.precision, max_bytes, device, seed)


def _features(features: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """A 2-D float32/float64 numpy memmap as it is (read in blocks later), anything else as a feature matrix."""
    if isinstance(features, np.memmap) and features.ndim == 2 and features.dtype in (np.float32, np.float64) \
            and features.shape[0] > 0 and features.shape[1] > 0:
        return features
    return as_feature_matrix(features)


def _build(features, k, metric, symmetrize, weighted, block_size, knn, sketch_dim, precision, max_bytes,
           device, seed) -> Graph:
    """:func:`knn_graph`'s work (same arguments), with the recall of an approximate search."""
    x = _features(features)
    n = x.shape[0]
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= n - 1:
        raise GraphError(f"k={k} needs 1 <= k <= N-1 = {n - 1}; lower k or use more samples")
    check_options(metric, symmetrize)
    sketch_dim = check_search(knn, sketch_dim, precision)
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer))
                                  or max_bytes < 1):
        raise GraphError(f"max_bytes={max_bytes!r} must be a positive number of bytes")
    if max_bytes is not None:
        check_budget(max_bytes, x.shape[1])
        check_sketch_size(sketch_dim, n, max_bytes)
    if block_size is not None and (not isinstance(block_size, (int, np.integer)) or isinstance(block_size, bool)
                                   or block_size < 1):
        raise GraphError(f"block_size={block_size} must be positive")
    seed = int(seed_sequence(seed, GraphError).generate_state(1)[0] % 2**31)  # any integer -> one for faiss too
    device = torch.device(device) if device is not None else \
        (x.device if isinstance(x, torch.Tensor) else torch.device("cpu"))
    original = x
    if sketch_dim is not None:
        x = sketch(x, sketch_dim, seed, device)
    itemsize = x.element_size() if isinstance(x, torch.Tensor) else x.itemsize
    lazy = max_bytes is not None and n * x.shape[1] * itemsize > max_bytes
    block, cols = (block_sizes(n, x.shape[1], itemsize, max_bytes) if lazy
                   else (default_block_size(n, device=device), n))
    block = block if block_size is None else int(block_size)
    rows = _rows(x, metric, device, lazy, block)

    with matmul_precision(precision):
        if knn == "exact":
            edges = search(rows, k, block, cols, precision, max_bytes=max_bytes)
        else:
            approx = ann_neighbours(rows, k, knn, seed).to(device)
            valid = (approx >= 0).flatten()
            edges = Neighbours(torch.arange(n, device=device).repeat_interleave(k)[valid], approx.flatten()[valid],
                                torch.ones(int(valid.sum()), dtype=torch.float64, device=device), approx,
                                scores=None, best_scores=None)
    found = None
    if knn != "exact" or sketch_dim is not None:
        # against the exact neighbours of the features as given (not of their sketch), read in blocks
        size = original.element_size() if isinstance(original, torch.Tensor) else original.itemsize
        budget = _RECALL_BYTES if max_bytes is None else max_bytes
        first, columns = block_sizes(n, original.shape[1], size, budget)
        reference = rows if sketch_dim is None else _rows(original, metric, device, True, first)
        with matmul_precision("float32"):
            found = recall(reference, edges.best, k, seed, cols if sketch_dim is None else columns)
    return Graph(_adjacency(rows, edges, k, metric, weighted, symmetrize), found)


def _rows(x: torch.Tensor | np.ndarray, metric: str, device: torch.device, lazy: bool, block: int) -> Rows:
    """:class:`Rows` of ``x``; :class:`FeatureError` unless every row is finite."""
    rows = Rows(x, metric, device, lazy, block)
    if not torch.isfinite(rows.norms if rows.cosine else rows.sq).all():
        bad = rows.bad_row()
        if bad is not None:
            raise FeatureError(f"features contain NaN or Inf (first at sample {bad}); check the model and inputs")
        raise FeatureError(f"features are too large for {rows.dtype} (their norms overflow); rescale them")
    return rows


def _adjacency(rows: Rows, edges: Neighbours, k: int, metric: str, weighted: bool,
               symmetrize: str) -> sp.csr_array:
    """The symmetrised (N, N) graph of the directed ``edges``, weighted as docs/design.md says."""
    n = rows.n
    # per pair, in float64: the same floats however the search was blocked
    scores = edges.scores if edges.scores is not None else rows.exact(edges.rows, edges.cols)
    if not weighted:
        # one per directed edge, but only where the weighted graph has an edge: a cosine neighbour with
        # similarity <= 0 (zero vector, pointing away) is no edge in either graph
        weights = torch.ones_like(scores) if metric == "euclidean" else (scores > 0).double()
    elif metric == "cosine":
        weights = scores.clamp_min(0.0)
    else:
        # the kernel's scale is the median of the N k nearest squared distances (with ties: the same values
        # whichever tied sample holds the place)
        if edges.best_scores is not None:
            nearest = -edges.best_scores.flatten()
        else:
            found = edges.best.flatten() >= 0  # an approximate search may find fewer than k (-1)
            nearest = -rows.exact(torch.arange(n, device=rows.device).repeat_interleave(k)[found],
                                  edges.best.flatten()[found])
        scale = float(np.median(nearest.cpu().numpy()))  # torch's median is the lower middle value
        weights = torch.exp(scores / scale) if scale > 0 else torch.ones_like(scores)

    directed = sp.csr_array(
        ((weights * edges.shares).cpu().numpy(), (edges.rows.cpu().numpy(), edges.cols.cpu().numpy())),
        shape=(n, n),
    )
    if symmetrize == "mean":
        adjacency = (directed + directed.T) * 0.5
    elif symmetrize == "union":
        adjacency = directed.maximum(directed.T)
    else:
        adjacency = directed.minimum(directed.T)
    adjacency = sp.csr_array(adjacency)
    adjacency.eliminate_zeros()
    adjacency.sort_indices()
    return adjacency
