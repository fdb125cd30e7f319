"""The rows a kNN search reads, block by block, on the device that computes, within a memory budget.

The decisions behind it: docs/design.md, section layermod.measure.rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from layermod.io.files import release_pages
from layermod.measure.config import Precision

__all__ = ["COSINE_EPS", "SLICE", "Rows", "as_tensor", "block_sizes", "candidates", "dot_products", "matmul_precision",
           "row_sums", "summed_terms", "sweep"]

COSINE_EPS = 1e-8
_CHUNK = 64  # columns per chunk in the two-stage top-k
SLICE = 512  # values of D summed by one matmul of dot_products
_GATHER_ELEMENTS = 2**20  # values gathered at once by Rows.exact (8 MiB in float64)


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


def row_sums(t: torch.Tensor) -> torch.Tensor:
    """Sums (E,) of the rows of ``t`` (E, D), each in an order fixed by D alone. torch splits the sum of a lone
    long row across threads (its float then depends on the thread count), so a lone row is summed beside a copy
    of itself."""
    if t.shape[0] == 1:
        return torch.cat([t, t]).sum(dim=1)[:1]
    return t.sum(dim=1)


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
        n, d, dtype (of the prepared rows), device; norms (N,) the rows' norms, at least 1e-8 (cosine) or None;
        sq (N,) the squared norms (euclidean) or None, both rounded to the features' dtype; exact_norms (N,) float64
        ``max(|x|, 1e-8)`` (cosine) or None; exact_sq (N,) float64 ``|x|^2`` (euclidean) or None; zero (N,) bool,
        the rows that are exactly 0.
    """

    def __init__(self, x: torch.Tensor | np.ndarray, metric: str, device: torch.device, lazy: bool, block: int):
        self.n, self.d = int(x.shape[0]), int(x.shape[1])
        self.device, self._x = device, x
        self.cosine = metric == "cosine"
        self._buffers: list | None = None
        self._column_buffer: torch.Tensor | None = None
        full = None if lazy else self._raw(0, self.n)
        parts = [full] if full is not None else \
            (self._raw(s, min(s + block, self.n)) for s in range(0, self.n, block))
        exact_sq = torch.cat([self._exact_sq(part) for part in parts])
        dtype = (full if full is not None else self._raw(0, 1)).dtype
        self.exact_sq = None if self.cosine else exact_sq
        self.exact_norms = exact_sq.sqrt().clamp_min(COSINE_EPS) if self.cosine else None
        self.zero = exact_sq == 0
        # the working dtype's norms rounded from float64 ones: off by one rounding, not by a sum's
        self.norms = self.exact_norms.to(dtype) if self.cosine else None
        self.sq = None if self.cosine else exact_sq.to(dtype)
        self._prepared = None if full is None else self._prepare(full, slice(None))
        self.dtype = dtype

    def _exact_sq(self, part: torch.Tensor) -> torch.Tensor:
        """Per row of ``part``: its squared norm in float64, ``_GATHER_ELEMENTS`` values at a time in one buffer."""
        step = max(2, _GATHER_ELEMENTS // max(self.d, 1))
        buffer = torch.empty((min(step, len(part)), self.d), dtype=torch.float64, device=part.device)
        sums = []
        for s in range(0, len(part), step):
            squares = buffer[:len(part[s:s + step])]
            sums.append(row_sums(squares.copy_(part[s:s + step]).square_()))
        return torch.cat(sums)

    def _raw(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` as read, on the device (rows read from a file mapping leave no pages resident)."""
        part = self._x[start:stop]
        if not isinstance(part, np.ndarray):
            return part.to(self.device)
        copy = as_tensor(part)
        release_pages(self._x)
        return copy.to(self.device)

    def _raw_take(self, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` (M,) as read, (M, D) on the device (always a copy)."""
        if isinstance(self._x, np.ndarray):
            copy = as_tensor(self._x[index.cpu().numpy()])
            release_pages(self._x)
            return copy.to(self.device)
        return self._x[index.to(self._x.device)].to(self.device)

    def _prepare(self, raw: torch.Tensor, index: torch.Tensor | slice) -> torch.Tensor:
        return raw / self.norms[index][:, None].clamp_min(COSINE_EPS) if self.cosine else raw

    def block(self, start: int, stop: int) -> torch.Tensor:
        """Prepared rows ``start:stop`` (stop - start, D) on the device (a view when held in memory)."""
        if self._prepared is not None:
            return self._prepared[start:stop]
        return self._prepare(self._raw(start, stop), slice(start, stop))

    def columns(self, start: int, stop: int) -> torch.Tensor:
        """:meth:`block` for a sweep over the columns: read lazily, the rows go into one buffer, overwritten by the
        next call (a fresh block per call would leave the allocator's heap fragmented, far above the budget)."""
        if self._prepared is not None:
            return self._prepared[start:stop]
        size = (stop - start) * self.d
        if self._column_buffer is None or self._column_buffer.numel() < size:
            self._column_buffer = torch.empty(size, dtype=self.dtype, device=self.device)
        out = self._column_buffer[:size].view(stop - start, self.d)
        part = self._x[start:stop]
        if isinstance(part, np.ndarray) and out.device.type == "cpu":
            out.numpy()[:] = part
        else:
            out.copy_(as_tensor(part) if isinstance(part, np.ndarray) else part)
        release_pages(self._x)
        if self.cosine:
            out.div_(self.norms[start:stop][:, None].clamp_min(COSINE_EPS))
        return out

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """Prepared rows ``index`` (M,) as (M, D) on the device."""
        if self._prepared is not None:
            return self._prepared[index.to(self.device)]
        return self._prepare(self._raw_take(index), index.to(self.device))

    def exact_block(self, index: torch.Tensor | slice) -> torch.Tensor:
        """Rows ``index`` prepared in float64 (cosine: divided by ``exact_norms``), (M, D) on the device."""
        raw = self._raw_take(index) if isinstance(index, torch.Tensor) else self._raw(index.start, index.stop)
        raw = raw.double()
        return raw / self.exact_norms[index][:, None] if self.cosine else raw

    def exact(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """The score (E,) float64 of each pair ``(rows[e], cols[e])``, from the stored features and computed alone:
        cosine ``x_i . x_j / (n_i n_j)`` with ``n = max(|x|, 1e-8)``, euclidean ``-|x_i - x_j|^2``. The same float
        for a pair however the pairs are chunked or threaded, and the same for ``(i, j)`` as for ``(j, i)``."""
        step = max(2, _GATHER_ELEMENTS // max(self.d, 1))
        out = torch.empty(len(rows), dtype=torch.float64, device=self.device)
        for start in range(0, len(rows), step):
            i, j = rows[start:start + step], cols[start:start + step]
            out[start:start + len(i)] = self._score(i, j[:, None]).flatten()
        return out

    def exact_rows(self, start: int, stop: int, cols: torch.Tensor) -> torch.Tensor:
        """:meth:`exact` of rows ``start:stop`` against their columns ``cols`` (B, m), as (B, m): each query row is
        read once; the same floats as :meth:`exact` gives for the same pairs."""
        step = max(1, _GATHER_ELEMENTS // max(self.d * cols.shape[1], 1))
        ids = torch.arange(start, stop, device=self.device)
        return torch.cat([self._score(ids[s:s + step], cols[s:s + step]) for s in range(0, stop - start, step)])

    def _score(self, ids: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Scores (B, m) of rows ``ids`` (B,) against rows ``cols`` (B, m), B m D <= ``_GATHER_ELEMENTS``: one
        elementwise product (or difference) and one sum along D per pair, in reused buffers."""
        b, m = cols.shape
        queries = self._gather64(ids, 0)[:, None, :]
        others = self._gather64(cols.flatten(), 1).view(b, m, self.d)
        if self.cosine:
            dots = row_sums(others.mul_(queries).view(b * m, self.d)).view(b, m)
            return dots / (self.exact_norms[ids, None] * self.exact_norms[cols])
        return -row_sums(others.sub_(queries).square_().view(b * m, self.d)).view(b, m)

    def _gather64(self, index: torch.Tensor, slot: int) -> torch.Tensor:
        """Rows ``index`` (M,) as read, in float64, (M, D) in buffer ``slot`` (0 or 1), overwritten by the next
        call for that slot. The buffers are allocated once: a fresh large tensor per call costs page faults."""
        if self._buffers is None or self._buffers[slot][0].numel() < len(index) * self.d:
            size = max(len(index) * self.d, 2 * self.d, _GATHER_ELEMENTS)
            self._buffers = [(torch.empty(size, dtype=torch.float64, device=self.device),
                              torch.empty(size, dtype=self._x.dtype, device=self.device)
                              if isinstance(self._x, torch.Tensor) else None) for _ in range(2)]
        wide, staging = self._buffers[slot]
        out = wide[:len(index) * self.d].view(len(index), self.d)
        x = self._x
        if isinstance(x, torch.Tensor) and x.device == self.device:
            if x.dtype == torch.float64:
                torch.index_select(x, 0, index, out=out)
            else:
                out.copy_(torch.index_select(x, 0, index, out=staging[:out.numel()].view(out.shape)))
        else:
            out.copy_(self._raw_take(index))
        return out

    def bad_row(self) -> int | None:
        """The first row holding NaN or Inf, or None."""
        step = max(1, _GATHER_ELEMENTS // max(self.d, 1))
        for start in range(0, self.n, step):
            bad = (~torch.isfinite(self._raw(start, min(start + step, self.n)))).any(dim=1).nonzero()
            if len(bad):
                return start + int(bad[0, 0])
        return None


def _similarity(queries: torch.Tensor, ids: torch.Tensor, rows: Rows, start: int, stop: int,
                precision: Precision) -> torch.Tensor:
    """Scores (B, stop - start) of ``queries`` (B, D), the prepared rows ``ids`` (B,), against columns
    ``start:stop``: ``x_i . x_j`` (cosine) or ``2 x_i . x_j - |x_j|^2`` (euclidean), a row's own column -inf."""
    s = dot_products(queries, rows.columns(start, stop), precision)
    if rows.sq is not None:
        s.mul_(2).sub_(rows.sq[None, start:stop])
    own = ((ids >= start) & (ids < stop)).nonzero().flatten()
    s[own, ids[own] - start] = -torch.inf
    return s


def dot_products(queries: torch.Tensor, columns: torch.Tensor, precision: Precision) -> torch.Tensor:
    """``queries @ columns.T`` (B, C) of (B, D) and (C, D), summed over D in slices of ``SLICE`` values, one
    matmul each, added up in the queries' dtype: however a BLAS orders a matmul's sum, each value is then off by
    at most ``gamma_m sum_d |q_d c_d|`` with ``m = summed_terms(D)`` (a plain matmul of a wide layer would have
    ``m = D``, a bound too wide to certify anything)."""
    cast = (lambda t: t.bfloat16()) if precision == "bf16" else (lambda t: t)
    out = part = None
    for first in range(0, queries.shape[1], SLICE):
        a, b = cast(queries[:, first:first + SLICE]), cast(columns[:, first:first + SLICE]).T
        if out is None:
            out = (a @ b).to(queries.dtype)
        elif precision == "bf16":
            out.add_(a @ b)
        else:  # into one reused buffer: a fresh large tensor per slice costs page faults
            part = torch.mm(a, b, out=part)
            out.add_(part)
    return out


def summed_terms(d: int) -> int:
    """The number m of terms whose rounding can reach one value of :func:`dot_products` over D values."""
    return min(d, SLICE) + -(-d // SLICE)


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
