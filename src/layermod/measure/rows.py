"""The rows a kNN search reads, block by block, on the device that computes, within a memory budget.

:class:`Rows` holds a feature matrix (N, D) prepared for one metric (cosine: rows divided by their norms,
``x / max(||x||, 1e-8)``; euclidean: as they are, with their squared norms) and hands out blocks of it on
the computing device. :func:`candidates` sweeps a block of query rows over the columns in blocks and keeps
each row's best ``take`` others.

Decisions, on purpose:

* **In memory or lazily.** When the features fit the budget (or no budget is given), they are prepared once
  and moved to the device whole, and the similarity of a row block is one matmul against all N rows, as
  before the budget existed. When N x D does not fit (e.g. a numpy memmap on disk), nothing of size N x D is
  made: a block is read, prepared and moved when asked for, and the columns are swept in blocks whose sizes
  follow the budget (:func:`block_sizes`): a query block, a column block and their similarities each take
  about a third of it.
* **Blocking does not change the result.** A row is prepared by the same elementwise operation whether it
  is prepared alone or with all others, and row norms are per-row reductions, so a block equals the
  corresponding rows of the whole prepared matrix bit for bit. A matmul's last bit may depend on how the
  columns are blocked, so the blocked scores only propose candidates: the search decides and weighs with
  scores computed per pair (:meth:`Rows.dots`, :func:`layermod.measure.graph`'s ``_pair_scores``), which give
  the same float for a pair however the search was blocked. Copies read from a memmap are made in memory torch
  allocated (:func:`as_tensor`), as alignment can change a matmul's last bit too.
* **Precision.** ``"float32"`` is exact float32 math: TF32 is switched off for the search (and restored
  after) by :func:`matmul_precision`. ``"tf32"`` allows TF32 on a GPU (and torch's reduced-precision float32
  matmul where the CPU has one); ``"bf16"`` multiplies bfloat16 copies of the blocks. Both are approximate
  and opt-in; weights are still recomputed in the features' own precision.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from layermod.measure.config import Precision

__all__ = ["COSINE_EPS", "Rows", "as_tensor", "block_sizes", "candidates", "matmul_precision", "sweep"]

COSINE_EPS = 1e-8
_CHUNK = 64  # columns per chunk in the two-stage top-k
_GATHER_ELEMENTS = 4 * 2**20  # values gathered at once by dots / squared_distances


@contextmanager
def matmul_precision(precision: Precision) -> Iterator[None]:
    """Float32 matmuls inside the block exact (``"float32"``: torch's ``"highest"``, TF32 off) or allowed to use
    TF32 (``"tf32"``, ``"bf16"``: ``"high"``); torch's setting is restored afterwards. Only
    ``torch.set_float32_matmul_precision`` is used: this torch refuses to read its settings once the older
    per-backend flags and the newer ones have both been set."""
    saved = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest" if precision == "float32" else "high")
        yield
    finally:
        torch.set_float32_matmul_precision(saved)


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """A copy of ``array`` (e.g. rows read from a memmap) in memory torch allocated: numpy aligns its buffers to
    16 bytes only, and a matmul's last bit can depend on its operands' alignment, which would make the result
    differ from run to run."""
    return torch.tensor(array)


def block_sizes(n: int, d: int, itemsize: int, max_bytes: int) -> tuple[int, int]:
    """(query rows, columns) per block so that a query block, a column block and their similarities each hold
    about a third of ``max_bytes``."""
    third = max(1, max_bytes // (3 * itemsize))
    cols = max(1, min(n, third // d))
    return max(1, min(n, third // d, third // cols)), cols


class Rows:
    """A feature matrix (N, D) prepared for ``metric``, read in blocks on ``device``.

    Args:
        x: (N, D) float tensor (any device) or float32/float64 numpy array (a memmap is read block by block).
        metric: ``"cosine"`` or ``"euclidean"``.
        device: where blocks are computed.
        lazy: prepare blocks when asked (nothing N x D is made) instead of once for the whole matrix.
        block: rows per block of the preparing pass (norms, finiteness).

    Attributes:
        n, d, dtype, device; norms (N,) the rows' norms before preparing (cosine) or None; sq (N,) the squared
        norms (euclidean) or None.
    """

    def __init__(self, x: torch.Tensor | np.ndarray, metric: str, device: torch.device, lazy: bool, block: int):
        self.n, self.d = int(x.shape[0]), int(x.shape[1])
        self.device, self._x = device, x
        self.cosine = metric == "cosine"
        if not lazy:
            full = self._raw(0, self.n)
            self.norms = self._norms(full) if self.cosine else None
            self.sq = None if self.cosine else self._norms(full)
            self._prepared = full / self.norms[:, None].clamp_min(COSINE_EPS) if self.cosine else full
        else:
            per_row = [self._norms(self._raw(s, min(s + block, self.n))) for s in range(0, self.n, block)]
            self.norms = torch.cat(per_row) if self.cosine else None
            self.sq = None if self.cosine else torch.cat(per_row)
            self._prepared = None
        self.dtype = (self._prepared if self._prepared is not None else self._raw(0, 1)).dtype

    def _norms(self, part: torch.Tensor) -> torch.Tensor:
        """Per row of ``part``: its norm (cosine) or squared norm (euclidean)."""
        return part.norm(dim=1) if self.cosine else (part * part).sum(dim=1)

    def _raw(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` as read, on the device."""
        part = self._x[start:stop]
        return (as_tensor(part) if isinstance(part, np.ndarray) else part).to(self.device)

    def _prepare(self, raw: torch.Tensor, index: torch.Tensor | slice) -> torch.Tensor:
        return raw / self.norms[index][:, None].clamp_min(COSINE_EPS) if self.cosine else raw

    def block(self, start: int, stop: int) -> torch.Tensor:
        """Prepared rows ``start:stop`` (stop - start, D) on the device (a view when held in memory)."""
        if self._prepared is not None:
            return self._prepared[start:stop]
        return self._prepare(self._raw(start, stop), slice(start, stop))

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """Prepared rows ``index`` (M,) as (M, D) on the device."""
        if self._prepared is not None:
            return self._prepared[index.to(self.device)]
        order = index.cpu().numpy()
        raw = self._x[order] if isinstance(self._x, np.ndarray) else self._x[index.to(self._x.device)]
        raw = as_tensor(raw) if isinstance(raw, np.ndarray) else raw
        return self._prepare(raw.to(self.device), index.to(self.device))

    def bad_row(self) -> int | None:
        """The first row holding NaN or Inf, or None."""
        step = max(1, _GATHER_ELEMENTS // max(self.d, 1))
        for start in range(0, self.n, step):
            bad = (~torch.isfinite(self._raw(start, min(start + step, self.n)))).any(dim=1).nonzero()
            if len(bad):
                return start + int(bad[0, 0])
        return None

    def _pairs(self, rows: torch.Tensor, cols: torch.Tensor, difference: bool) -> torch.Tensor:
        """``sum_d (x_i - x_j)^2`` or ``sum_d x_i x_j`` (E,) of the pairs, ``_GATHER_ELEMENTS`` values at a
        time (row by row the same floats however the pairs are chunked)."""
        step = max(1, _GATHER_ELEMENTS // max(self.d, 1))
        out = torch.empty(len(rows), dtype=self.dtype, device=self.device)
        for start in range(0, len(rows), step):
            a, b = self.take(rows[start:start + step]), self.take(cols[start:start + step])
            torch.sum(a.sub_(b).square_() if difference else a.mul_(b), dim=1, out=out[start:start + len(a)])
        return out

    def dots(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """``x_i . x_j`` (E,) of the prepared rows for the pairs ``(rows[e], cols[e])``."""
        return self._pairs(rows, cols, difference=False)

    def squared_distances(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """``|x_i - x_j|^2`` (E,) from the differences (exactly 0 for duplicated rows)."""
        return self._pairs(rows, cols, difference=True)


def _similarity(queries: torch.Tensor, ids: torch.Tensor, rows: Rows, start: int, stop: int,
                precision: Precision) -> torch.Tensor:
    """Scores (B, stop - start) of ``queries`` (B, D), the prepared rows ``ids`` (B,), against columns
    ``start:stop``: ``x_i . x_j`` (cosine) or ``2 x_i . x_j - |x_j|^2`` (euclidean), a row's own column -inf."""
    columns = rows.block(start, stop)
    if precision == "bf16":
        s = (queries.bfloat16() @ columns.bfloat16().T).to(queries.dtype)
    else:
        s = queries @ columns.T
    if rows.sq is not None:
        s.mul_(2).sub_(rows.sq[None, start:stop])
    own = ((ids >= start) & (ids < stop)).nonzero().flatten()
    s[own, ids[own] - start] = -torch.inf
    return s


def candidates(queries: torch.Tensor, ids: torch.Tensor, rows: Rows, take: int, cols: int,
               precision: Precision) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Each query's ``take`` best other rows: values (B, take), column indices (B, take), and the whole score
    block (B, N) when the columns fit one block (else None: :func:`sweep` recomputes what is needed)."""
    n = rows.n
    if cols >= n:
        s = _similarity(queries, ids, rows, 0, n, precision)
        vals, idx = _chunked_topk(s, take)
        return vals, idx, s
    found_vals, found_idx = [], []
    for start in range(0, n, cols):
        stop = min(start + cols, n)
        vals, idx = _chunked_topk(_similarity(queries, ids, rows, start, stop, precision), min(take, stop - start))
        found_vals.append(vals)
        found_idx.append(idx + start)
    vals, pos = torch.topk(torch.cat(found_vals, dim=1), take, dim=1)
    return vals, torch.gather(torch.cat(found_idx, dim=1), 1, pos), None


def sweep(queries: torch.Tensor, ids: torch.Tensor, rows: Rows, cols: int,
          precision: Precision) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, scores (B, stop - start))`` for every column block of the queries' score rows."""
    for start in range(0, rows.n, cols):
        yield start, _similarity(queries, ids, rows, start, min(start + cols, rows.n), precision)


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
