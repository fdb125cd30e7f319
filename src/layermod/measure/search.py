"""The exact k-nearest-neighbour search: a blocked matmul proposes, a rounding bound certifies, float64 settles.

The decisions behind it: docs/design.md, section layermod.measure.search.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch

from layermod.errors import GraphError
from layermod.measure.config import Precision
from layermod.measure.rows import Rows, block_sizes, candidates, summed_terms, sweep

__all__ = ["MAX_SCORED_PAIRS", "MAX_TIED_EDGES", "Neighbours", "search"]

MAX_TIED_EDGES = 2**22  # edges to tied candidates in one graph (about 100 MiB of indices and weights)
MAX_SCORED_PAIRS = 2**25  # pairs scored one by one outside the k best of every row
_CAP = 1024  # candidates a row may collect from the working matmul before it is searched again in float64
_PAIR_ELEMENTS = 4 * 2**20  # candidate pairs (or float64 matmul entries) held at once
_U64 = 2.0**-53
_INPUT_ROUNDING = {"float32": 0.0, "tf32": 2.0**-11, "bf16": 2.0**-8}


class Neighbours(NamedTuple):
    """Directed kNN edges: rows (E,), cols (E,), shares (E,) float64 and scores (E,) float64 (``p``, or None
    from an approximate search); best (N, k), every row's k best others (-1 where an approximate search found
    fewer), and best_scores (N, k) float64, their ``p`` (None from an approximate search)."""

    rows: torch.Tensor
    cols: torch.Tensor
    shares: torch.Tensor
    best: torch.Tensor
    scores: torch.Tensor | None
    best_scores: torch.Tensor | None


class _Bound(NamedTuple):
    """Rounding of one matmul over D terms: u (its dtype's unit roundoff), delta (relative error of a dot product
    of prepared rows), theta (relative error of a normalised value), sq (relative error of a squared norm),
    cosine (the error of a cosine)."""

    u: float
    delta: float
    theta: float
    sq: float
    cosine: float

    @classmethod
    def of(cls, d: int, u: float, u_in: float = 0.0, u_out: float = 0.0, terms: int | None = None) -> "_Bound":
        """The bound of dot products over ``d`` values whose sums round ``terms`` times at most (default d), of
        rows prepared with norms computed in float64 and rounded once to the dtype of ``u``."""
        gamma = (terms or d) * u / (1 - (terms or d) * u)
        delta = ((1 + u_in) ** 2 * (1 + gamma) - 1) * (1 + u_out) + u_out
        norm = (d + 2) * _U64  # a float64 sum of squares and its root
        theta, sq = 2 * u + norm, u + 2 * norm
        return cls(u, delta, theta, sq, 2 * theta + theta**2 + (1 + theta) ** 2 * delta)

    def gamma(self, d: int) -> float:
        return d * self.u / (1 - d * self.u)


def _working_bound(rows: Rows, precision: Precision) -> _Bound:
    """The bound of the blocked matmul that proposes candidates, in ``precision``."""
    u = torch.finfo(rows.dtype).eps / 2
    u_in = _INPUT_ROUNDING[precision] if precision == "bf16" or rows.dtype == torch.float32 else 0.0
    return _Bound.of(rows.d, u, u_in, 2.0**-8 if precision == "bf16" else 0.0, terms=summed_terms(rows.d))


class _Search:
    """One search's thresholds, tie rule and edges (see docs/design.md)."""

    def __init__(self, rows: Rows, k: int, cols: int, precision: Precision):
        self.rows, self.k, self.cols, self.precision = rows, k, cols, precision
        self.working = _working_bound(rows, precision)
        self.exact = _Bound.of(rows.d, _U64)
        self.pair = 2 * rows.d * _U64 + 6 * _U64  # cosine: |p - cos|
        self.refine = self.working.u > _U64 or self.working.delta > self.exact.delta
        self.parts: list[tuple[torch.Tensor, ...]] = []
        n, device = rows.n, rows.device
        self.best = torch.full((n, k), -1, dtype=torch.int64, device=device)
        self.best_scores = torch.zeros((n, k), dtype=torch.float64, device=device)
        self.tied_edges = self.scored = 0

    def tolerance(self, kth: torch.Tensor) -> torch.Tensor:
        """T (same shape as ``kth``): scores closer than this to the k-th best tie with it."""
        if self.rows.cosine:
            return torch.full_like(kth, 2 * self.pair)
        return 2 * self.exact.gamma(self.rows.d + 3) * kth.abs()

    def threshold(self, ids: torch.Tensor, low: torch.Tensor, bound: _Bound) -> torch.Tensor:
        """(B,) float64: a matmul score of row ``ids`` below this (with error ``bound``) cannot reach the k
        places or tie with the k-th, given ``low`` (B,), the least ``p`` of k of its candidates."""
        tol = self.tolerance(low)
        if self.rows.cosine:
            return low - tol - (bound.cosine + self.pair) * 1.01 - 8 * bound.u
        sq = self.rows.exact_sq[ids]
        a, reach = sq.sqrt(), (tol - low).clamp_min(0)
        r = a + reach.sqrt()
        error = 2 * bound.delta * a * r + bound.sq * (r * r + sq) + bound.u * (2 * a * r + r * r) * (1 + bound.delta)
        error = error + self.exact.gamma(self.rows.d + 3) * reach
        return sq + low - tol - error * 1.01 - 8 * bound.u * (sq + r * r)

    def settle(self, ids: torch.Tensor, top: torch.Tensor, scores: torch.Tensor) -> None:
        """Rows ``ids`` (B,) keep their k proposals ``top`` (B, k) with scores (B, k) and share 1."""
        k, device = self.k, self.rows.device
        self.best[ids], self.best_scores[ids] = top, scores
        keep = scores.flatten() > 0 if self.rows.cosine else torch.ones(len(ids) * k, dtype=torch.bool, device=device)
        self.parts.append((ids.repeat_interleave(k)[keep], top.flatten()[keep],
                           torch.ones(int(keep.sum()), dtype=torch.float64, device=device), scores.flatten()[keep]))

    def resolve(self, i: torch.Tensor, j: torch.Tensor) -> None:
        """Settle the rows of ``i`` from their candidates: every pair ``(i[e], j[e])`` that could matter to row
        ``i[e]`` is there. Scores them, finds each row's k-th best, shares the ties."""
        if not len(i):
            return
        self.scored += len(i)
        if self.scored > MAX_SCORED_PAIRS:
            raise _too_many(self.k, f"scoring more than {MAX_SCORED_PAIRS:,} candidate pairs")
        p = self.rows.exact(i, j)
        # by row, then score (highest first), then column: the same order whatever order the pairs came in
        order = torch.argsort(j, stable=True)
        order = order[torch.argsort(-p[order], stable=True)]
        order = order[torch.argsort(i[order], stable=True)]
        i, j, p = i[order], j[order], p[order]
        owners, counts = torch.unique_consecutive(i, return_counts=True)
        first = torch.cumsum(counts, 0) - counts
        row = torch.repeat_interleave(torch.arange(len(owners), device=i.device), counts)
        rank = torch.arange(len(i), device=i.device) - first[row]
        kth = p[first + self.k - 1]
        tol = self.tolerance(kth)
        better = p > (kth + tol)[row]
        band = ~better & (p >= (kth - tol)[row])
        n_better = torch.zeros(len(owners), dtype=torch.float64, device=i.device).index_add_(0, row, better.double())
        n_band = torch.zeros(len(owners), dtype=torch.float64, device=i.device).index_add_(0, row, band.double())
        top = rank < self.k
        self.best[i[top], rank[top]], self.best_scores[i[top], rank[top]] = j[top], p[top]
        keep = better | band
        if self.rows.cosine:
            keep &= p > 0
        share = torch.where(better, 1.0, ((self.k - n_better) / n_band)[row])
        self.tied_edges += int(keep.sum())
        if self.tied_edges > MAX_TIED_EDGES:
            raise _too_many(self.k, f"sharing them needs more than {MAX_TIED_EDGES:,} edges")
        self.parts.append((i[keep], j[keep], share[keep], p[keep]))

    def edges(self) -> Neighbours:
        rows_, cols_, shares, scores = (torch.cat(column) for column in zip(*self.parts))
        return Neighbours(rows_, cols_, shares, self.best, scores, self.best_scores)


def _too_many(k: int, why: str) -> GraphError:
    return GraphError(f"too many samples tie for the k={k} nearest places ({why}), as with constant or heavily "
                      "duplicated features (equal within float64's rounding); measure fewer samples or another layer")


def search(rows: Rows, k: int, block: int, cols: int, precision: Precision,
           *,
           max_bytes: int | None = None) -> Neighbours:
    """The k best other rows of every row of ``rows`` (N, D), ``block`` query rows against ``cols`` columns at a
    time, ties at the k-th place shared (docs/design.md).

    Raises:
        GraphError: ties that need more than ``MAX_TIED_EDGES`` edges or ``MAX_SCORED_PAIRS`` scored pairs.
    """
    n, device = rows.n, rows.device
    state = _Search(rows, k, cols, precision)
    take = min(k + 1, n - 1)  # one spare: the (k+1)-th proposal certifies the row
    deferred: list[torch.Tensor] = []
    for start in range(0, n, block):
        stop = min(start + block, n)
        ids = torch.arange(start, stop, device=device)
        queries = rows.block(start, stop)
        proposed, idx, s = candidates(queries, ids, rows, take, cols, precision)
        top = idx[:, :k]
        scores = rows.exact_rows(start, stop, top)
        low = scores.min(dim=1).values
        thr = state.threshold(ids, low, state.working)
        open_ = proposed[:, k].double() >= thr if take > k else torch.zeros_like(low, dtype=torch.bool)
        if rows.cosine:
            open_ &= ~rows.zero[ids]  # a zero row scores 0 with every other: no edges, whoever holds its places
        state.settle(ids[~open_], top[~open_], scores[~open_])
        where = open_.nonzero().flatten()
        if not len(where):
            continue
        # past a sixteenth of the row, a float64 matmul over the row costs less than scoring pair by pair
        cap = max(k + 16, min(_CAP, n // 16)) if state.refine else None
        i, j, over = _collect(queries[where], ids[where], thr[where], rows, None if s is None else s[where],
                              cols, precision, cap)
        state.resolve(i, j)
        deferred.append(ids[where][over])
    if deferred:
        _refine(state, torch.cat(deferred), max_bytes)
    return state.edges()


def _collect(queries: torch.Tensor, ids: torch.Tensor, thr: torch.Tensor, rows: Rows, s: torch.Tensor | None,
             cols: int, precision: Precision, cap: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairs (i, j) with a working-matmul score >= ``thr`` of the rows ``ids`` (B,), and the rows (B,) bool
    that have more than ``cap`` (their pairs left out)."""
    blocks: Iterator[tuple[int, torch.Tensor]] = iter([(0, s)]) if s is not None else \
        sweep(queries, ids, rows, cols, precision)
    count = torch.zeros(len(ids), dtype=torch.int64, device=ids.device)
    found = []
    for first, st in blocks:
        mask = st >= thr[:, None]
        count += mask.sum(dim=1)
        if cap is not None:
            mask &= (count <= cap)[:, None]
        a, b = mask.nonzero(as_tuple=True)
        found.append((a, b + first))
    over = count > cap if cap is not None else torch.zeros_like(count, dtype=torch.bool)
    a, b = (torch.cat(column) for column in zip(*found))
    keep = ~over[a]
    return ids[a[keep]], b[keep], over


def _refine(state: _Search, ids: torch.Tensor, max_bytes: int | None) -> None:
    """Settle rows ``ids`` whose band is wide in the working precision: searched again with a float64 matmul
    against every column (blocks within ``max_bytes``), whose k best give the threshold and float64's bound the
    band, then their ``p`` decide."""
    rows, k = state.rows, state.k
    n = rows.n
    budget = max_bytes if max_bytes is not None else 3 * 8 * _PAIR_ELEMENTS
    block, cols = block_sizes(n, rows.d, 8, budget)
    block = max(1, min(block, _PAIR_ELEMENTS // n))  # their scores (block, N) fit too
    for start in range(0, len(ids), block):
        part = ids[start:start + block]
        queries = rows.exact_block(part)
        g = torch.empty(len(part), n, dtype=torch.float64, device=rows.device)
        for first in range(0, n, cols):
            columns = rows.exact_block(slice(first, min(first + cols, n)))
            g[:, first:first + len(columns)] = queries @ columns.T
        if not rows.cosine:
            g.mul_(2).sub_(rows.exact_sq[None, :])
        g[torch.arange(len(part), device=rows.device), part] = -torch.inf
        top = torch.topk(g, k, dim=1).indices
        low = rows.exact(part.repeat_interleave(k), top.flatten()).view(-1, k).min(dim=1).values
        a, b = (g >= state.threshold(part, low, state.exact)[:, None]).nonzero(as_tuple=True)
        state.resolve(part[a], b)
