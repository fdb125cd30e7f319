"""Newman modularity of a weighted undirected graph with given communities.

With adjacency ``A`` (symmetric, non-negative), strengths ``s_i = sum_j A_ij``, total ``2W = sum_i s_i`` and
communities ``c`` (here: the class labels, no community detection),

    Q = 1/(2W) * sum_ij [A_ij - gamma * s_i s_j / (2W)] * [c_i == c_j]
      = sum_c [ e_c / (2W) - gamma * (S_c / (2W))^2 ],

where ``e_c`` is the weight inside community ``c`` counted in both directions and ``S_c`` its total
strength. Everything is computed from the stored edges with ``bincount``-style sums: O(edges), no dense
``N x N`` matrix. A diagonal entry ``A_ii`` counts once in ``s_i`` (the matrix convention above); kNN graphs
have none.

Decisions, on purpose:

* **Refused, never NaN.** A graph without edge weight (0/0), a resolution that is NaN, infinite or negative,
  complex weights and a negative number of permutations raise :class:`GraphError` instead of giving NaN or
  an empty result.
* **Labels** may be any values compared for equality (ints, strings, ...), but none may be missing: a NaN
  (equal to nothing, numpy's ``unique`` would still make all NaNs one class) or None is refused with
  :class:`LabelError`, as :func:`layermod.modularity_curve` refuses labels that are not class indices.
* **The null.** :func:`permutation_null` shuffles the labels with ``numpy.random.default_rng(seed)``'s
  ``permutation``, one shuffle after another; ``seed`` is any integer (see :mod:`layermod.coerce`) or a
  ``numpy.random.SeedSequence``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from layermod.coerce import as_real_tensor, seed_sequence
from layermod.errors import GraphError, LabelError, one_line
from layermod.measure.config import GraphConfig, check_permutations, check_resolution

__all__ = ["modularity", "modularity_with_null", "permutation_null"]


@dataclass(frozen=True)
class _Edges:
    """Stored entries of a symmetric adjacency: row (E,), col (E,), weight (E,); strength (N,); total 2W."""

    row: np.ndarray
    col: np.ndarray
    weight: np.ndarray
    strength: np.ndarray
    total: float

    @classmethod
    def of(cls, adjacency: sp.sparray | sp.spmatrix | np.ndarray) -> "_Edges":
        if sp.issparse(adjacency) and adjacency.format == "csr" and adjacency.has_canonical_format:
            # what knn_graph returns: the stored entries are already unique, read them as they are
            indptr = adjacency.indptr
            row = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            coo = sp.coo_array((adjacency.data, (row, adjacency.indices)), shape=adjacency.shape)
        else:
            if isinstance(adjacency, torch.Tensor):
                adjacency = as_real_tensor(adjacency, "adjacency", GraphError).cpu().numpy()
            try:
                coo = sp.coo_array(adjacency)
            except (TypeError, ValueError) as err:
                reason = one_line(err)
                raise GraphError(f"cannot read the adjacency as a matrix ({reason}); pass a 2-D array or scipy sparse "
                                 "matrix") from None
            coo.sum_duplicates()
        if coo.ndim != 2 or coo.shape[0] != coo.shape[1]:
            raise GraphError(f"adjacency must be square; got shape {coo.shape}")
        if np.iscomplexobj(coo.data):
            raise GraphError("adjacency has complex weights; pass real, non-negative weights")
        weight = coo.data.astype(np.float64)
        if weight.size and weight.min() < 0:
            raise GraphError("adjacency has negative weights; modularity needs non-negative weights")
        if not np.all(np.isfinite(weight)):
            raise GraphError("adjacency has NaN or Inf weights")
        asym = coo - coo.T
        if asym.nnz and np.abs(asym.data).max() > 1e-9 * max(np.abs(weight).max(), 1.0):
            raise GraphError("adjacency is not symmetric; symmetrise it first, e.g. (A + A.T) / 2")
        strength = np.bincount(coo.row, weights=weight, minlength=coo.shape[0])
        total = float(strength.sum())
        if not total > 0:
            raise GraphError(
                "graph has no edge weight, so modularity is undefined (as for all-zero features under cosine); "
                "measure other features"
            )
        return cls(coo.row, coo.col, weight, strength, total)

    def q(self, codes: np.ndarray, n_classes: int, resolution: float) -> float:
        """Modularity for community codes (N,) in ``0..n_classes-1``."""
        inside = codes[self.row] == codes[self.col]
        class_strength = np.bincount(codes, weights=self.strength, minlength=n_classes)
        return float(self.weight[inside].sum() / self.total - resolution * np.sum((class_strength / self.total) ** 2))


def _codes(labels: np.ndarray | torch.Tensor | list, n: int) -> tuple[np.ndarray, int]:
    """Labels (N,) of any hashable-sortable kind -> (codes (N,) in 0..C-1, C)."""
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if y.ndim != 1:
        raise LabelError(f"labels must be one-dimensional; got shape {y.shape}")
    if len(y) != n:
        raise LabelError(f"{len(y)} labels for {n} samples; pass one label per sample")
    missing = np.flatnonzero(_is_missing(y))
    if missing.size:
        raise LabelError(f"labels[{missing[0]}] is {y[missing[0]]}, no class ({missing.size} such label(s)); "
                         "give every sample a class")
    try:
        classes, codes = np.unique(y, return_inverse=True)
    except TypeError as err:
        raise LabelError(f"labels cannot be compared ({one_line(err)}); pass labels of one kind, e.g. ints") from None
    return codes.ravel(), len(classes)


def _is_missing(y: np.ndarray) -> np.ndarray:
    """(N,) bool: which labels are NaN or None."""
    if y.dtype.kind in "fc":
        return np.isnan(y)
    if y.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)) for v in y], dtype=bool)
    return np.zeros(len(y), dtype=bool)


def modularity(
    adjacency: sp.sparray | sp.spmatrix | np.ndarray,
    labels: np.ndarray | torch.Tensor | list,
    *,
    resolution: float = GraphConfig.resolution,
) -> float:
    """Modularity Q of ``adjacency`` (N, N) with ``labels`` (N,) as the communities.

    Args:
        adjacency: symmetric, non-negative (N, N) scipy sparse matrix/array, dense array or tensor.
        labels: (N,) class of each node; any values (they are only compared for equality), none NaN or None.
        resolution: gamma in the formula above (1 = Newman's modularity), finite and >= 0.

    Returns:
        Q as a float, at most ``1 - sum_c (S_c / 2W)^2``.

    Raises:
        GraphError: non-square, asymmetric, negative or complex adjacency, no edge weight at all, or a
            resolution that is not a finite number >= 0.
        LabelError: labels that are not one per node, or a NaN or None among them.
    """
    gamma = check_resolution(resolution)
    edges = _Edges.of(adjacency)
    codes, n_classes = _codes(labels, len(edges.strength))
    return edges.q(codes, n_classes, gamma)


def permutation_null(
    adjacency: sp.sparray | sp.spmatrix | np.ndarray,
    labels: np.ndarray | torch.Tensor | list,
    *,
    permutations: int,
    seed: int | np.random.SeedSequence = 0,
    resolution: float = GraphConfig.resolution,
) -> np.ndarray:
    """Modularity of the same graph under ``permutations`` random shuffles of ``labels``.

    This is the Q one would see by chance with the same class sizes: the null for a z-score. Shuffle ``p`` is
    the ``p``-th ``rng.permutation(labels)`` of ``rng = numpy.random.default_rng(seed)``.

    Args:
        adjacency: symmetric, non-negative (N, N) scipy sparse matrix/array, dense array or tensor.
        labels: (N,) class of each node.
        permutations: the number of shuffles, an integer >= 0.
        seed: an integer or a ``numpy.random.SeedSequence``.
        resolution: gamma, as for :func:`modularity`.

    Returns:
        (permutations,) float64 array of Q values.

    Raises:
        GraphError: as :func:`modularity`, or ``permutations`` or ``seed`` not an integer >= 0 / an integer.
        LabelError: as :func:`modularity`.
    """
    return modularity_with_null(adjacency, labels, permutations=permutations, seed=seed, resolution=resolution)[1]


def modularity_with_null(
    adjacency: sp.sparray | sp.spmatrix | np.ndarray,
    labels: np.ndarray | torch.Tensor | list,
    *,
    permutations: int,
    seed: int | np.random.SeedSequence = 0,
    resolution: float = GraphConfig.resolution,
) -> tuple[float, np.ndarray]:
    """:func:`modularity` and :func:`permutation_null` of one graph, reading its edges once.

    Returns:
        (Q, (permutations,) Q values under shuffled labels).
    """
    gamma = check_resolution(resolution)
    count = check_permutations(permutations)
    rng = np.random.default_rng(seed_sequence(seed, GraphError))
    edges = _Edges.of(adjacency)
    codes, n_classes = _codes(labels, len(edges.strength))
    null = np.array([edges.q(rng.permutation(codes), n_classes, gamma) for _ in range(count)])
    return edges.q(codes, n_classes, gamma), null
