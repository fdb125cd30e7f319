"""k-nearest-neighbour graphs over samples.

The default is the construction of Lu et al. (ECCV 2022): cosine similarity, each sample points to its k most
similar *other* samples with the cosine as edge weight, and the directed graph is symmetrised as
``A = (A_dir + A_dir^T) / 2`` (a mutual pair keeps weight ``s_ij``, a one-way pair gets ``s_ij / 2``).

Decisions, on purpose:

* **Blockwise.** Similarities are computed ``block_size`` rows at a time (matmul + ``topk``), so an
  ``N x N`` dense matrix never exists for large ``N``; there is no Python loop over samples.
* **Ties.** Among equally similar candidates for the k-th place, the lower sample index wins, so the graph
  does not depend on the matmul backend's tie order. "Equal" allows a few rounding errors (``4 eps`` of the
  score's scale): a matmul need not give bitwise equal values for duplicated rows.
* **Zero vectors.** Cosine uses ``x / max(||x||, 1e-8)``: a zero vector has similarity 0 to everything, so
  its edges have weight 0 and are dropped from the sparse result (its neighbours are then the lowest indices).
* **Negative cosine.** Modularity needs non-negative weights, so a negative similarity is clamped to 0:
  a neighbour that points away is no edge at all. With ReLU features cosines are never negative.
* **Euclidean.** Neighbours are the k nearest in L2 distance; weights are a heat kernel
  ``exp(-d^2 / median(d_kNN^2))``, which is scale-free (1 for duplicates, about 0.37 at the typical
  neighbour distance).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from .errors import FeatureError, GraphError

__all__ = ["knn_graph", "as_feature_matrix", "default_block_size"]

Metric = Literal["cosine", "euclidean"]
Symmetrize = Literal["mean", "union", "mutual"]

COSINE_EPS = 1e-8
_CHUNK = 64  # columns per chunk in the two-stage top-k
_BLOCK_ELEMENTS = 4 * 2**20  # similarity entries held at once (16 MiB in float32: the allocator reuses it)


def as_feature_matrix(features: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Return ``features`` as a floating tensor of shape (N, D).

    Trailing dimensions are flattened: (N, C, H, W) becomes (N, C*H*W). float64 input stays float64,
    anything else becomes float32. Raises :class:`FeatureError` on a scalar or empty input.
    """
    x = torch.as_tensor(features)
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
    k: int = 3,
    metric: Metric = "cosine",
    symmetrize: Symmetrize = "mean",
    weighted: bool = True,
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
            (cosine: only to neighbours with positive similarity, the edges of the weighted graph).
        block_size: rows of the similarity matrix computed at once (default: about 4M entries per block).

    Returns:
        (N, N) symmetric ``scipy.sparse.csr_array`` of float64 weights, at most ``2 k N`` stored entries,
        no explicit zeros.
    """
    x = as_feature_matrix(features)
    n = x.shape[0]
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= n - 1:
        raise GraphError(f"k={k} needs 1 <= k <= N-1 = {n - 1}; lower k or use more samples")
    if metric not in ("cosine", "euclidean"):
        raise GraphError(f"unknown metric {metric!r}; use 'cosine' or 'euclidean'")
    if symmetrize not in ("mean", "union", "mutual"):
        raise GraphError(f"unknown symmetrize {symmetrize!r}; use 'mean', 'union' or 'mutual'")
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
    scores, neighbours = _top_k(x, sq, k, block)

    if not weighted:
        # one per directed edge, but only where the weighted graph has an edge: a cosine neighbour with
        # similarity <= 0 (zero vector, pointing away) is no edge in either graph
        weights = torch.ones_like(scores) if metric == "euclidean" else (scores > 0).to(scores.dtype)
    elif metric == "cosine":
        weights = scores.clamp_min(0.0)
    else:
        # scores hold 2 x_i.x_j - |x_j|^2, so d_ij^2 = |x_i|^2 - score
        d2 = (sq[:, None] - scores).clamp_min(0.0)
        scale = float(np.median(d2.double().cpu().numpy()))  # torch's median is the lower middle value
        weights = torch.exp(-d2 / scale) if scale > 0 else torch.ones_like(d2)

    rows = np.repeat(np.arange(n), k)
    directed = sp.csr_array(
        (weights.double().cpu().numpy().ravel(), (rows, neighbours.cpu().numpy().ravel())), shape=(n, n)
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


def _top_k(x: torch.Tensor, sq: torch.Tensor | None, k: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best k other rows for each row of ``x``: (scores (N, k), indices (N, k)), best first.

    Score is ``x_i . x_j`` (cosine on normalised rows) or ``2 x_i . x_j - |x_j|^2`` (euclidean, same order
    as ``-d_ij^2``). Ties at the k-th place (equal up to rounding, see the module doc) go to the lower index;
    the scores of such rows come in index order rather than best first.
    """
    n = x.shape[0]
    take = min(k + 1, n - 1)  # one spare to detect a tie across the k-th place
    # identical columns of one matmul (duplicated rows) can differ in the last bits, by about 2 eps of the
    # score's scale; a wider band would also catch genuine near-ties that the computation resolves
    rel = 4 * torch.finfo(x.dtype).eps
    all_scores, all_index = [], []
    for start in range(0, n, block):
        stop = min(start + block, n)
        s = x[start:stop] @ x.T
        if sq is not None:
            s.mul_(2).sub_(sq[None, :])
        rows = torch.arange(stop - start, device=x.device)
        s[rows, rows + start] = -torch.inf
        vals, idx = _chunked_topk(s, take)
        if take > k:
            kth = vals[:, k - 1]
            if sq is None:  # unit (or zero) rows: |score| <= 1
                tol = torch.full_like(kth, rel)
            else:  # candidates near the k-th place have |x_j| <= |x_i| + d_ik
                r = sq[start:stop].sqrt() + (sq[start:stop] - kth).clamp_min(0).sqrt()
                tol = rel * (r * r + kth.abs())
            tied = (kth - vals[:, k] <= tol).nonzero().flatten()
            if len(tied):
                st, t, tt = s[tied], kth[tied, None], tol[tied, None]
                # clearly better than the k-th value first, then the tie band in index order (stable sort)
                key = (st > t + tt).to(torch.int8) * 2 + (st >= t - tt).to(torch.int8)
                order = torch.sort(key, dim=1, descending=True, stable=True).indices[:, :take]
                idx[tied] = order
                vals[tied] = torch.gather(st, 1, order)
        all_scores.append(vals[:, :k])
        all_index.append(idx[:, :k])
    return torch.cat(all_scores), torch.cat(all_index)


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
