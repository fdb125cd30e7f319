"""The approximate kNN, opt-in and never the default: a random projection for wide layers and faiss indexes for
many samples, with the recall of the neighbours they find measured against the exact ones.

The decisions behind it: docs/design.md, section layermod.measure.ann.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from collections.abc import Iterator
from types import ModuleType

import numpy as np
import torch

from layermod.errors import GraphError
from layermod.measure.rows import Rows, as_tensor, candidates

__all__ = ["RECALL_ROWS", "ann_neighbours", "recall", "require_faiss", "sketch"]

RECALL_ROWS = 500
_SKETCH_ROWS = 4096  # rows of G drawn (and feature columns read) at a time
_IVF_CELLS, _IVF_PROBE, _IVF_TRAIN = 2, 10, 64  # IVF: 2 sqrt(N) k-means cells (trained on at most 64 samples
# per cell), of which 10 are searched per query
_HNSW_LINKS, _HNSW_EF_BUILD, _HNSW_EF_SEARCH = 16, 40, 64


def sketch(x: torch.Tensor | np.ndarray, dim: int, seed: int, device: torch.device) -> torch.Tensor:
    """``x`` (N, D) projected to (N, dim) float32 on ``device`` by a seeded Gaussian ``G / sqrt(dim)``; a
    memmap is read ``_SKETCH_ROWS`` columns at a time."""
    n, d = x.shape[0], x.shape[1]
    generator = torch.Generator().manual_seed(seed)
    out = torch.zeros(n, dim, dtype=torch.float32, device=device)
    for start in range(0, d, _SKETCH_ROWS):
        stop = min(start + _SKETCH_ROWS, d)
        g = torch.randn(stop - start, dim, generator=generator).to(device)
        part = x[:, start:stop]
        part = as_tensor(part) if isinstance(part, np.ndarray) else part
        out += part.to(device=device, dtype=torch.float32) @ g
    return out / math.sqrt(dim)


def require_faiss() -> ModuleType:
    """The faiss module; :class:`GraphError` saying what to install when it is missing."""
    try:
        import faiss
    except ImportError:
        raise GraphError("the approximate kNN needs faiss; run `pip install layermod[ann]` "
                         "or use knn='exact'") from None
    return faiss


@contextmanager
def _threads(faiss, count: int) -> Iterator[None]:
    saved = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(saved)


def ann_neighbours(rows: Rows, k: int, knn: str, seed: int) -> torch.Tensor:
    """Each row's k approximate nearest other rows, indices (N, k) int64, -1 where the index found fewer than
    k others (IVF when the searched cells hold too few samples); ``knn`` is ``"ivf"`` or ``"hnsw"``."""
    faiss = require_faiss()
    n = rows.n
    data = np.ascontiguousarray(torch.cat([rows.block(s, min(s + 65536, n)).float().cpu()
                                           for s in range(0, n, 65536)]).numpy())
    inner = rows.sq is None
    metric = faiss.METRIC_INNER_PRODUCT if inner else faiss.METRIC_L2
    if knn == "ivf":
        cells = max(1, min(n // 39, round(_IVF_CELLS * math.sqrt(n))))
        quantizer = faiss.IndexFlatIP(rows.d) if inner else faiss.IndexFlatL2(rows.d)
        index = faiss.IndexIVFFlat(quantizer, rows.d, cells, metric)
        index.cp.seed = seed
        index.cp.max_points_per_centroid = _IVF_TRAIN
        index.train(data)
        index.nprobe = min(cells, _IVF_PROBE)
        index.add(data)
    else:
        index = faiss.IndexHNSWFlat(rows.d, _HNSW_LINKS, metric)
        index.hnsw.efConstruction = _HNSW_EF_BUILD
        index.hnsw.efSearch = max(_HNSW_EF_SEARCH, 2 * (k + 1))
        with _threads(faiss, 1):
            index.add(data)
    _, found = index.search(data, min(k + 1, n))
    found = torch.from_numpy(found.astype(np.int64))
    own = found == torch.arange(n)[:, None]
    # drop the row itself, else the last result: stable order keeps the index's ranking of the others
    drop = torch.where(own.any(dim=1, keepdim=True), own, torch.arange(found.shape[1]) == found.shape[1] - 1)
    order = torch.argsort(drop.to(torch.int8), dim=1, stable=True)[:, :k]
    return torch.gather(found, 1, order)


def recall(rows: Rows, best: torch.Tensor, k: int, seed: int, cols: int) -> float:
    """Fraction of the exact k nearest others found in ``best`` (N, k), over ``RECALL_ROWS`` seeded rows."""
    n = rows.n
    picked = np.sort(np.random.default_rng(seed).choice(n, min(RECALL_ROWS, n), replace=False))
    ids = torch.from_numpy(picked).to(rows.device)
    _, exact, _ = candidates(rows.take(ids), ids, rows, k, cols, "float32")
    approx = best[torch.from_numpy(picked).to(best.device)].to(exact.device)
    hits = (exact[:, :, None] == approx[:, None, :]).any(dim=2)
    return float(hits.float().mean())
