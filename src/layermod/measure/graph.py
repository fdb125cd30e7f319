"""k-nearest-neighbour graphs over samples.

The default is the construction of Lu et al. (ECCV 2022): cosine similarity, each sample points to its k most
similar *other* samples with the cosine as edge weight, and the directed graph is symmetrised as
``A = (A_dir + A_dir^T) / 2`` (a mutual pair keeps weight ``s_ij``, a one-way pair gets ``s_ij / 2``).

Decisions, on purpose:

* **Blockwise.** Similarities are computed ``block_size`` rows at a time (matmul + ``topk``), so an
  ``N x N`` dense matrix never exists for large ``N``; there is no Python loop over samples.
* **Ties are shared.** When several candidates are equally similar at the k-th place ("equal" allows a few
  rounding errors, ``4 eps`` of the score's scale: a matmul need not give bitwise equal values for duplicated
  rows), none of them is preferred: with ``a`` candidates clearly better than the k-th value and ``m`` tied
  with it, every tied one gets an edge whose weight is multiplied by ``(k - a) / m``. Each sample still
  spends k edges' worth of weight, and the graph depends only on the samples, not on their order: permuting
  the samples permutes the graph, so Q does not change (a lower-index rule would make Q depend on the order
  whenever samples tie, e.g. duplicated rows with different labels). The price is one edge per tied
  candidate: more than ``MAX_TIED_EDGES`` of them in one graph (about 2,000 samples with identical features)
  is refused with a :class:`GraphError` rather than building a dense graph.
* **Constant features** (every sample's vector equal, or all parallel for cosine) carry no information:
  every pair ties, the graph is complete with equal weights, and Q is the no-structure value
  ``sum_c n_c (n_c - 1) / (N (N - 1)) - sum_c (n_c / N)^2`` (``-(C - 1) / (C (N - 1))`` for C balanced classes),
  the same for any order and any arrangement of the labels.
* **Zero vectors.** Cosine uses ``x / max(||x||, 1e-8)``: a zero vector has similarity 0 to everything, so
  it ties with every sample and all its edges weigh 0: it has no edges at all. All-zero features (cosine)
  give a graph without edges, whose modularity is undefined (:func:`layermod.modularity` refuses it).
* **Negative cosine.** Modularity needs non-negative weights, so a negative similarity is clamped to 0:
  a neighbour that points away is no edge at all. With ReLU features cosines are never negative.
* **Euclidean.** Neighbours are the k nearest in L2 distance; weights are a heat kernel
  ``exp(-d^2 / median(d_kNN^2))``, which is scale-free (1 for duplicates, about 0.37 at the typical
  neighbour distance; all 1 when most nearest neighbours are duplicates, median 0). Neighbours are ranked
  by the matmul expansion ``|x_i|^2 - 2 x_i.x_j + |x_j|^2``, but the weights use ``d^2`` computed from the
  differences of the chosen pairs, which is exactly 0 for duplicates (the expansion leaves rounding noise,
  and noise divided by a noise-level median would give arbitrary weights).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from layermod.coerce import as_real_tensor
from layermod.errors import FeatureError, GraphError
from layermod.measure.config import GraphConfig, Metric, Symmetrize, check_options

__all__ = ["knn_graph", "as_feature_matrix", "default_block_size"]

COSINE_EPS = 1e-8
_CHUNK = 64  # columns per chunk in the two-stage top-k
_BLOCK_ELEMENTS = 4 * 2**20  # similarity entries held at once (16 MiB in float32: the allocator reuses it)
MAX_TIED_EDGES = 2**22  # edges to tied candidates in one graph (about 100 MiB of indices and weights)


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


def _check_finite(x: torch.Tensor, row_norms: torch.Tensor) -> None:
    """Raise :class:`FeatureError` unless every row of ``x`` (N, D) is finite.

    ``row_norms`` (N,) are norms the caller needs anyway; they are NaN or Inf whenever a row is, so the full
    (N, D) scan runs only when one of them is, to name the sample (or report an overflow of finite values).
    """
    if torch.isfinite(row_norms).all():
        return
    bad = (~torch.isfinite(x)).any(dim=1).nonzero()
    if len(bad):
        raise FeatureError(f"features contain NaN or Inf (first at sample {int(bad[0, 0])}); check the model and inputs")
    raise FeatureError(f"features are too large for {x.dtype} (their norms overflow); rescale them")


def default_block_size(n: int) -> int:
    """Rows per block so that one block of similarities holds about 4M entries."""
    return max(1, min(n, _BLOCK_ELEMENTS // max(n, 1)))


def knn_graph(
    features: torch.Tensor | np.ndarray,
    k: int = GraphConfig.k,
    metric: Metric = GraphConfig.metric,
    symmetrize: Symmetrize = GraphConfig.symmetrize,
    weighted: bool = GraphConfig.weighted,
    block_size: int | None = None,
) -> sp.csr_array:
    """Symmetric k-nearest-neighbour graph over the rows of ``features``.

    Args:
        features: (N, D) tensor or array (extra trailing dimensions are flattened).
        k: neighbours per sample, 1 <= k <= N - 1. Self-loops are never formed.
        metric: ``"cosine"`` (paper) or ``"euclidean"``.
        symmetrize: ``"mean"`` (paper: ``(A + A^T) / 2``), ``"union"`` (``max(A, A^T)``: an edge when either
            side points) or ``"mutual"`` (``min(A, A^T)``: only pairs that point at each other).
        weighted: edge weights from the metric (see module doc); ``False`` gives weight 1 per directed edge
            (a tied place's 1 shared; cosine: only to neighbours with positive similarity, the edges of the
            weighted graph).
        block_size: rows of the similarity matrix computed at once (default: about 4M entries per block).

    Returns:
        (N, N) symmetric ``scipy.sparse.csr_array`` of float64 weights, no explicit zeros; at most ``2 k N``
        stored entries unless samples tie for the k-th place (then one more per tied candidate).

    Raises:
        FeatureError: features that are not (N, D) real finite numbers (see :func:`as_feature_matrix`).
        GraphError: an invalid option, or ties needing more than ``MAX_TIED_EDGES`` edges.
    """
    x = as_feature_matrix(features)
    n = x.shape[0]
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= n - 1:
        raise GraphError(f"k={k} needs 1 <= k <= N-1 = {n - 1}; lower k or use more samples")
    check_options(metric, symmetrize)
    block = default_block_size(n) if block_size is None else block_size
    if not isinstance(block, (int, np.integer)) or isinstance(block, bool) or block < 1:
        raise GraphError(f"block_size={block_size} must be positive")

    if metric == "cosine":
        norms = x.norm(dim=1, keepdim=True)
        _check_finite(x, norms)
        x = x / norms.clamp_min(COSINE_EPS)
        sq = None
    else:
        sq = (x * x).sum(dim=1)
        _check_finite(x, sq)
    edges = _neighbours(x, sq, k, block)

    scores = edges.scores
    if not weighted:
        # one per directed edge, but only where the weighted graph has an edge: a cosine neighbour with
        # similarity <= 0 (zero vector, pointing away) is no edge in either graph
        weights = torch.ones_like(scores) if metric == "euclidean" else (scores > 0).to(scores.dtype)
    elif metric == "cosine":
        weights = scores.clamp_min(0.0)
    else:
        # the kernel's scale is the median of the N k nearest squared distances (with ties: the same values
        # whichever tied sample holds the place)
        d2 = _squared_distances(x, edges.rows, edges.cols)
        nearest = _squared_distances(x, torch.arange(n, device=x.device).repeat_interleave(k), edges.best.flatten())
        scale = float(np.median(nearest.double().cpu().numpy()))  # torch's median is the lower middle value
        weights = torch.exp(-d2 / scale) if scale > 0 else torch.ones_like(d2)

    directed = sp.csr_array(
        ((weights.double() * edges.shares).cpu().numpy(), (edges.rows.cpu().numpy(), edges.cols.cpu().numpy())),
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


class _Neighbours(NamedTuple):
    """Directed kNN edges: row (E,), col (E,), score (E,) and share (E,) float64 of each; and best (N, k),
    every row's k best others (with ties: some of the tied ones in the last places)."""

    rows: torch.Tensor
    cols: torch.Tensor
    scores: torch.Tensor
    shares: torch.Tensor
    best: torch.Tensor


def _neighbours(x: torch.Tensor, sq: torch.Tensor | None, k: int, block: int) -> _Neighbours:
    """The k best other rows of every row of ``x`` (N, D), ties at the k-th place shared (module doc).

    Score is ``x_i . x_j`` (cosine on normalised rows) or ``2 x_i . x_j - |x_j|^2`` (euclidean, same order
    as ``-d_ij^2``). A row without a tie across the k-th place gets its k best with share 1; a tied row gets
    its ``a`` clearly better candidates with share 1 and its ``m`` tied ones with share ``(k - a) / m``
    (cosine: only those with a positive score, the others are no edge whatever their share).

    Raises:
        GraphError: ties that would need more than ``MAX_TIED_EDGES`` edges.
    """
    n = x.shape[0]
    take = min(k + 1, n - 1)  # one spare to detect a tie across the k-th place
    # identical columns of one matmul (duplicated rows) can differ in the last bits, by about 2 eps of the
    # score's scale; a wider band would also catch genuine near-ties that the computation resolves
    rel = 4 * torch.finfo(x.dtype).eps
    parts: list[tuple[torch.Tensor, ...]] = []
    best = []
    tied_edges = 0
    for start in range(0, n, block):
        stop = min(start + block, n)
        s = x[start:stop] @ x.T
        if sq is not None:
            s.mul_(2).sub_(sq[None, :])
        rows = torch.arange(stop - start, device=x.device)
        s[rows, rows + start] = -torch.inf
        vals, idx = _chunked_topk(s, take)
        best.append(idx[:, :k])
        kth = vals[:, k - 1]
        if sq is None:  # unit (or zero) rows: |score| <= 1
            tol = torch.full_like(kth, rel)
        else:  # candidates near the k-th place have |x_j| <= |x_i| + d_ik
            r = sq[start:stop].sqrt() + (sq[start:stop] - kth).clamp_min(0).sqrt()
            tol = rel * (r * r + kth.abs())
        tied = kth - vals[:, k] <= tol if take > k else torch.zeros_like(kth, dtype=torch.bool)

        clear = (~tied).nonzero().flatten()
        parts.append((
            (clear + start).repeat_interleave(k), idx[clear, :k].flatten(), vals[clear, :k].flatten(),
            torch.ones(len(clear) * k, dtype=torch.float64, device=x.device),
        ))
        tied_rows = tied.nonzero().flatten()
        if len(tied_rows):
            st = s[tied_rows]
            better = st > (kth + tol)[tied_rows, None]
            band = (st >= (kth - tol)[tied_rows, None]) & ~better
            share = (k - better.sum(dim=1)).double() / band.sum(dim=1).double()
            keep = better | band
            if sq is None:
                keep &= st > 0
            tied_edges += int(keep.sum())
            if tied_edges > MAX_TIED_EDGES:
                raise GraphError(
                    f"too many samples tie for the k={k} nearest places (sharing them needs more than "
                    f"{MAX_TIED_EDGES:,} edges), as with constant or heavily duplicated features; "
                    "measure fewer samples or another layer"
                )
            i, j = keep.nonzero(as_tuple=True)
            parts.append((tied_rows[i] + start, j, st[i, j], torch.where(better[i, j], 1.0, share[i])))
    rows, cols, scores, shares = (torch.cat(column) for column in zip(*parts))
    return _Neighbours(rows, cols, scores, shares, torch.cat(best))


def _squared_distances(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``|x_i - x_j|^2`` (E,) for the pairs ``(rows[e], cols[e])``, from the differences (exactly 0 for
    duplicated rows, where the expansion used for ranking leaves rounding errors), about ``_BLOCK_ELEMENTS``
    values at a time."""
    step = max(1, _BLOCK_ELEMENTS // x.shape[1])
    return torch.cat([(x[rows[s : s + step]] - x[cols[s : s + step]]).square().sum(dim=1)
                      for s in range(0, len(rows), step)])


def _chunked_topk(s: torch.Tensor, take: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(s, take, dim=1)`` for a small ``take``, exact in values, in about one read of ``s``.

    ``s`` (B, N) contiguous. The best ``take`` values of a row lie in the ``take`` whole chunks of ``_CHUNK``
    columns with the largest maxima or in the last ``N % _CHUNK`` columns, so a topk over chunk maxima
    (a strided view, no copy) and then over those few columns replaces a topk over the row. Which of several
    equal values is returned may differ from ``torch.topk``; callers settle ties themselves.
    """
    b, n = s.shape
    whole = n // _CHUNK
    if whole <= take:
        return torch.topk(s, take, dim=1)
    chunks = s.as_strided((b, whole, _CHUNK), (s.stride(0), _CHUNK, 1))
    best_chunks = torch.topk(chunks.amax(dim=2), take, dim=1).indices  # (B, take)
    offsets = torch.arange(_CHUNK, device=s.device)
    columns = (best_chunks[:, :, None] * _CHUNK + offsets).view(b, -1)
    tail = torch.arange(whole * _CHUNK, n, device=s.device).expand(b, -1)
    columns = torch.cat([columns, tail], dim=1)
    vals, pos = torch.topk(torch.gather(s, 1, columns), take, dim=1)
    return vals, torch.gather(columns, 1, pos)
