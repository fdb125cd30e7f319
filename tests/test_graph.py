"""Tests of ``layermod.knn_graph`` against a plainly written brute-force kNN graph.

The oracle (``brute_knn``) follows the paper / module doc literally: a dense float64 similarity matrix, for
every row its k best with self excluded, candidates tied with the k-th best sharing the places left, the
directed weighted matrix, then the symmetrisation. Nothing here is copied from running the library.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layermod import knn_graph
from layermod.errors import FeatureError, GraphError, LayermodError

HYP = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

METRICS = ["cosine", "euclidean"]
SYMMETRIZE = ["mean", "union", "mutual"]


# ----------------------------------------------------------------------------------------------- oracle


def _as_float64(features) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    x = np.asarray(features, dtype=np.float64)
    return x.reshape(x.shape[0], -1)


def brute_neighbours(features, k: int, metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """(shares (N, N), score matrix (N, N)); cosine similarity or squared distance d2.

    ``shares[i, j]`` is 1 when j is one of i's k best, and ``(k - a) / m`` for each of the m candidates tied
    (exactly equal in float64) with the k-th best, a being how many are strictly better."""
    x = _as_float64(features)
    n = x.shape[0]
    if metric == "cosine":
        norm = np.sqrt((x * x).sum(axis=1))
        xn = x / np.maximum(norm, 1e-8)[:, None]
        sim = (xn[:, None, :] * xn[None, :, :]).sum(axis=-1)
        key = -sim  # ascending key: most similar first
        score = sim
    else:
        d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1)
        key = d2.copy()
        score = d2
    shares = np.zeros((n, n))
    for i in range(n):
        row = key[i].copy()
        row[i] = np.inf  # never self
        kth = np.sort(row)[k - 1]
        better, tied = row < kth, row == kth
        shares[i, better] = 1.0
        shares[i, tied] = (k - better.sum()) / tied.sum()
    return shares, score


def brute_knn(features, k: int, metric: str = "cosine", symmetrize: str = "mean", weighted: bool = True) -> np.ndarray:
    """Dense (N, N) float64 adjacency built the slow, obvious way."""
    shares, score = brute_neighbours(features, k, metric)
    chosen = shares > 0
    if metric == "cosine":
        w = np.clip(score, 0.0, None)  # negative cosine -> no edge
    else:
        best = np.sort(np.where(np.eye(len(score), dtype=bool), np.inf, score), axis=1)[:, :k]
        med = np.median(best)  # median of the N*k squared distances of the k nearest
        w = np.exp(-score / med) if med > 0 else np.ones_like(score)
    if not weighted:
        # one per directed edge: every euclidean neighbour (even where the kernel underflows to 0), but only
        # cosine neighbours with positive similarity
        w = np.ones_like(w) if metric == "euclidean" else (w > 0).astype(np.float64)
    directed = np.where(chosen, w * shares, 0.0)
    if symmetrize == "mean":
        return (directed + directed.T) / 2
    if symmetrize == "union":
        return np.maximum(directed, directed.T)
    return np.minimum(directed, directed.T)


def assert_valid(a, n: int, k: int, tied: bool = False) -> None:
    """Structural contract of every knn_graph result (``tied``: samples may tie, so more than k edges each)."""
    assert isinstance(a, sp.csr_array)
    assert a.shape == (n, n)
    assert a.dtype == np.float64
    assert tied or a.nnz <= 2 * k * n
    assert np.all(np.isfinite(a.data))
    assert np.all(a.data > 0), "explicit zeros or negative weights stored"
    assert np.all(a.diagonal() == 0), "self-loop"
    assert (a != a.T).nnz == 0, "not exactly symmetric"


def assert_matches(a, expected: np.ndarray, atol: float = 1e-6) -> None:
    dense = a.toarray()
    got_edges = dense != 0
    want_edges = expected != 0
    diff = np.argwhere(got_edges != want_edges)
    assert not len(diff), f"edge sets differ at {diff[:10].tolist()}"
    assert a.nnz == int(want_edges.sum())
    np.testing.assert_allclose(dense, expected, rtol=0, atol=atol)


def clustered(n: int, d: int, c: int, seed: int, spread: float = 0.5, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d)) * 3
    labels = rng.integers(0, c, size=n)
    x = centres[labels] + spread * rng.normal(size=(n, d))
    return x.astype(dtype), labels


# ------------------------------------------------------------------------------ agreement with the oracle


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("symmetrize", SYMMETRIZE)
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("k", [1, 3, 8])
def test_matches_brute_force(metric, symmetrize, weighted, k):
    x, _ = clustered(61, 6, 4, seed=k * 100 + len(symmetrize))
    expected = brute_knn(x, k, metric, symmetrize, weighted)
    a = knn_graph(x, k=k, metric=metric, symmetrize=symmetrize, weighted=weighted)
    assert_valid(a, 61, k)
    assert_matches(a, expected)
    # several blocks give the same graph as one block
    blocked = knn_graph(x, k=k, metric=metric, symmetrize=symmetrize, weighted=weighted, block_size=7)
    assert_matches(blocked, expected)
    np.testing.assert_allclose(blocked.toarray(), a.toarray(), rtol=0, atol=1e-12)
    one_block = knn_graph(x, k=k, metric=metric, symmetrize=symmetrize, weighted=weighted, block_size=61)
    np.testing.assert_allclose(one_block.toarray(), a.toarray(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("k", [1, 3, 8])
def test_matches_brute_force_past_the_chunked_top_k_threshold(metric, k):
    # wide rows use the two-stage (chunk maxima, then chunks) top-k; with duplicates and a zero row mixed in
    x, _ = clustered(1000, 12, 5, seed=k)
    x[500:520] = x[:20]
    x[777] = 0
    expected = brute_knn(x, k, metric)
    for block_size in (None, 333):
        a = knn_graph(x, k=k, metric=metric, block_size=block_size)
        assert_valid(a, 1000, k)
        assert_matches(a, expected)


INPUT_KINDS = {
    "numpy-float32": lambda x: x.astype(np.float32),
    "numpy-float64": lambda x: x.astype(np.float64),
    "torch-float32": lambda x: torch.from_numpy(x.astype(np.float32)),
    "torch-float64": lambda x: torch.from_numpy(x.astype(np.float64)),
    "numpy-int": lambda x: np.round(x * 4).astype(np.int64),
    "torch-NCHW-float32": lambda x: torch.from_numpy(x.astype(np.float32)).reshape(-1, 3, 2, 4),
    "numpy-NCHW-float64": lambda x: x.astype(np.float64).reshape(-1, 3, 2, 4),
}


@pytest.mark.parametrize("kind", list(INPUT_KINDS))
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("block_size", [None, 7])
def test_input_kinds_match_brute_force(kind, metric, block_size):
    x, _ = clustered(45, 24, 3, seed=7, spread=1.0)
    features = INPUT_KINDS[kind](x)
    k = 4
    expected = brute_knn(features, k, metric)  # oracle sees exactly the values the library gets
    a = knn_graph(features, k=k, metric=metric, block_size=block_size)
    assert_valid(a, 45, k)
    assert_matches(a, expected, atol=1e-6)


def test_nchw_is_flattened():
    x = torch.randn(20, 2, 3, 3, generator=torch.Generator().manual_seed(3))
    for metric in METRICS:
        a = knn_graph(x, k=3, metric=metric)
        b = knn_graph(x.reshape(20, -1), k=3, metric=metric)
        assert (a != b).nnz == 0


def test_torch_input_not_modified():
    x = torch.randn(15, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    before = x.clone()
    knn_graph(x, k=3)
    knn_graph(x, k=3, metric="euclidean")
    assert torch.equal(x, before)


@HYP
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(3, 50),
    d=st.integers(2, 10),
    k=st.integers(1, 8),
    metric=st.sampled_from(METRICS),
    symmetrize=st.sampled_from(SYMMETRIZE),
    weighted=st.booleans(),
    block_size=st.one_of(st.none(), st.integers(1, 60)),
    relu=st.booleans(),
)
def test_matches_brute_force_random(seed, n, d, k, metric, symmetrize, weighted, block_size, relu):
    k = min(k, n - 1)
    x = np.random.default_rng(seed).normal(size=(n, d))
    if relu:
        x = np.maximum(x, 0)
        x[:, 0] += 0.1  # no zero rows; but rows (x0, 0, ..., 0) all point the same way: cosine ties
    a = knn_graph(x, k=k, metric=metric, symmetrize=symmetrize, weighted=weighted, block_size=block_size)
    assert_valid(a, n, k, tied=relu)
    assert_matches(a, brute_knn(x, k, metric, symmetrize, weighted), atol=1e-9)


# ----------------------------------------------------------------------- the paper's symmetrisation


def _unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_symmetrisation_semantics_cosine_hand_example():
    # four directions at 0, 10, 30 and 100 degrees, k = 1:
    #   0 -> 1 (10 deg) and 1 -> 0 (10 deg): mutual pair, keeps cos(10)
    #   2 -> 1 (20 deg) one way: cos(20) / 2;  3 -> 2 (70 deg) one way: cos(70) / 2
    x = np.array([_unit(0), _unit(10), _unit(30), _unit(100)]) * np.array([[1.0], [3.0], [0.5], [2.0]])
    c10, c20, c70 = (math.cos(math.radians(a)) for a in (10, 20, 70))
    a = knn_graph(x, k=1).toarray()
    expected = np.zeros((4, 4))
    expected[0, 1] = expected[1, 0] = c10
    expected[1, 2] = expected[2, 1] = c20 / 2
    expected[2, 3] = expected[3, 2] = c70 / 2
    np.testing.assert_allclose(a, expected, atol=1e-12)

    mutual = knn_graph(x, k=1, symmetrize="mutual").toarray()
    want_mutual = np.zeros((4, 4))
    want_mutual[0, 1] = want_mutual[1, 0] = c10
    np.testing.assert_allclose(mutual, want_mutual, atol=1e-12)

    binary = knn_graph(x, k=1, weighted=False).toarray()
    want_binary = np.zeros((4, 4))
    want_binary[0, 1] = want_binary[1, 0] = 1.0
    want_binary[1, 2] = want_binary[2, 1] = 0.5
    want_binary[2, 3] = want_binary[3, 2] = 0.5
    np.testing.assert_array_equal(binary, want_binary)


def test_symmetrisation_semantics_euclidean_hand_example():
    # points 0, 1, 3, 7 on a line, k = 1: 0 <-> 1 mutual (d2 = 1), 3 -> 1 (d2 = 4), 7 -> 3 (d2 = 16).
    # kNN squared distances {1, 1, 4, 16}: median 2.5 (mean of the two middle values)
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    a = knn_graph(x, k=1, metric="euclidean").toarray()
    expected = np.zeros((4, 4))
    expected[0, 1] = expected[1, 0] = math.exp(-1 / 2.5)
    expected[1, 2] = expected[2, 1] = math.exp(-4 / 2.5) / 2
    expected[2, 3] = expected[3, 2] = math.exp(-16 / 2.5) / 2
    np.testing.assert_allclose(a, expected, atol=1e-12)
    # float32 input: same graph to 1e-6
    np.testing.assert_allclose(knn_graph(x.astype(np.float32), k=1, metric="euclidean").toarray(), expected, atol=1e-6)


def test_union_example_is_max():
    x = np.array([_unit(0), _unit(10), _unit(30), _unit(100)])
    c10, c20, c70 = (math.cos(math.radians(a)) for a in (10, 20, 70))
    union = knn_graph(x, k=1, symmetrize="union").toarray()
    expected = np.zeros((4, 4))
    expected[0, 1] = expected[1, 0] = c10
    expected[1, 2] = expected[2, 1] = c20
    expected[2, 3] = expected[3, 2] = c70
    np.testing.assert_allclose(union, expected, atol=1e-12)


@HYP
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(4, 40), k=st.integers(1, 6), metric=st.sampled_from(METRICS))
def test_mean_is_average_of_mutual_and_union(seed, n, k, metric):
    # min(a, b) + max(a, b) = a + b, so mean = (mutual + union) / 2 exactly, and mutual <= mean <= union
    k = min(k, n - 1)
    x = np.random.default_rng(seed).normal(size=(n, 5))
    mean = knn_graph(x, k=k, metric=metric).toarray()
    union = knn_graph(x, k=k, metric=metric, symmetrize="union").toarray()
    mutual = knn_graph(x, k=k, metric=metric, symmetrize="mutual").toarray()
    np.testing.assert_allclose(mean, (mutual + union) / 2, atol=1e-12)
    assert np.all(mutual <= mean + 1e-12) and np.all(mean <= union + 1e-12)
    assert np.array_equal(mean != 0, union != 0)
    assert np.all((mutual != 0) <= (mean != 0))
    # a mutual pair keeps its weight in the mean graph; a one-way pair gets half of the union weight
    both = mutual != 0
    np.testing.assert_allclose(mean[both], union[both], atol=1e-12)
    one_way = (union != 0) & ~both
    np.testing.assert_allclose(mean[one_way], union[one_way] / 2, atol=1e-12)


# ------------------------------------------------------------------------------------ ties, zeros, signs


@pytest.mark.parametrize("metric, k", [("cosine", 2), ("cosine", 5), ("euclidean", 5), ("euclidean", 7)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_duplicated_rows(metric, k, dtype):
    rng = np.random.default_rng(11)
    base = rng.normal(size=(9, 5))
    x = base[rng.permutation(np.repeat(np.arange(9), 3))].astype(dtype)  # every row three times, shuffled
    expected = brute_knn(x, k, metric)
    whole, *blocked = [knn_graph(x, k=k, metric=metric, block_size=b) for b in (None, 1, 2, 5, 7, 27)]
    for a in (whole, *blocked):
        assert_valid(a, 27, k)
        assert_matches(a, expected, atol=1e-6)
    for a in blocked:  # every block size gives the unblocked graph
        assert (a != whole).nnz == 0 or np.abs((a - whole).data).max() < 1e-6


@HYP
@given(
    seed=st.integers(0, 2**32 - 1),
    n_base=st.integers(3, 12),
    copies=st.integers(2, 4),
    d=st.sampled_from([3, 16, 64, 512]),
    extra=st.integers(1, 4),
    metric=st.sampled_from(METRICS),
    dtype=st.sampled_from([np.float32, np.float64]),
    block_size=st.integers(1, 13),
)
def test_duplicated_rows_random(seed, n_base, copies, d, extra, metric, dtype, block_size):
    # copies of the same row are exactly tied; the matmul need not return bitwise equal values for them,
    # yet the lower index must win whatever the block size. k > 2 (copies - 1) keeps the euclidean median
    # away from the duplicates' zero distances
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_base, d))
    x = base[rng.permutation(np.repeat(np.arange(n_base), copies))].astype(dtype)
    n = len(x)
    k = min(2 * (copies - 1) + extra, n - 1)
    expected = brute_knn(x, k, metric, symmetrize="union", weighted=False)
    for block in (None, block_size):
        a = knn_graph(x, k=k, metric=metric, symmetrize="union", weighted=False, block_size=block)
        assert_matches(a, expected, atol=0)


def test_duplicates_share_the_tied_places():
    # rows 1, 2, 3, 4 are identical and 0 is a distinct vector close to them. With k = 1 no copy is preferred:
    # 0 points to each copy with share 1/4, every copy to each of the 3 others with share 1/3
    v = np.array([1.0, 2.0, 3.0])
    x = np.stack([v + [0.3, 0, 0], v, v, v, v])
    expected = np.full((5, 5), 1 / 3) - np.eye(5) / 3
    expected[0, :] = expected[:, 0] = 1 / 4
    expected[0, 0] = 0
    for metric in METRICS:
        for block in (None, 1, 2, 3):
            binary = knn_graph(x, k=1, metric=metric, weighted=False, block_size=block, symmetrize="union")
            assert_valid(binary, 5, 1, tied=True)
            np.testing.assert_allclose(binary.toarray(), expected, rtol=0, atol=1e-15, err_msg=f"{metric} {block}")


@pytest.mark.parametrize("k", [1, 2, 4, 6])
@pytest.mark.parametrize("block_size", [None, 1, 3, 7])
def test_one_hot_exact_ties(k, block_size):
    # one-hot rows: similarity exactly 1 within a category and 0 across; equals share the places,
    # and similarity-0 neighbours give no edge at all
    cats = np.array([2, 0, 1, 2, 2, 0, 1, 2, 0, 2, 1, 1, 2, 0])
    x = np.eye(3)[cats]
    a = knn_graph(x, k=k, block_size=block_size)
    assert_valid(a, len(cats), k, tied=True)
    assert_matches(a, brute_knn(x, k), atol=1e-6)
    dense = a.toarray()
    i, j = np.nonzero(dense)
    assert np.all(cats[i] == cats[j]), "edge between categories with cosine 0"
    # node 4 (category 2; members 0, 3, 4, 7, 9, 12) points to each of its 5 fellows with share min(k, 5) / 5,
    # and so does each fellow to it
    fellows = [m for m in np.flatnonzero(cats == 2) if m != 4]
    assert list(np.flatnonzero(dense[4])) == fellows
    np.testing.assert_allclose(dense[4, fellows], min(k, 5) / 5, rtol=0, atol=1e-7)


@pytest.mark.parametrize("k", [1, 3, 4, 8])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_integer_grid_euclidean_ties(k, dtype):
    # points of an integer grid: many exactly equal distances, computed exactly in float32 too
    g = np.array([(i, j) for i in range(4) for j in range(3)], dtype=dtype)
    g = g[np.random.default_rng(1).permutation(len(g))]
    expected = brute_knn(g, k, "euclidean")
    binary = {}
    for block in (None, 1, 5, 7):
        for weighted in (True, False):
            a = knn_graph(g, k=k, metric="euclidean", block_size=block, weighted=weighted)
            assert_valid(a, len(g), k, tied=True)
            assert_matches(a, expected if weighted else brute_knn(g, k, "euclidean", weighted=False), atol=1e-6)
        binary[block] = a
    whole = binary.pop(None)
    for block, a in binary.items():  # the ties are shared alike, bit for bit, whatever the block size
        assert (a != whole).nnz == 0, block


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("symmetrize", SYMMETRIZE)
def test_zero_vectors(weighted, symmetrize):
    rng = np.random.default_rng(5)
    x = np.abs(rng.normal(size=(20, 4)))
    zero = [0, 3, 4, 11, 19]
    x[zero] = 0
    for features in (x, torch.from_numpy(x).float()):
        a = knn_graph(features, k=3, symmetrize=symmetrize, weighted=weighted, block_size=6)
        assert_valid(a, 20, 3)
        assert not np.isnan(a.data).any()
        dense = a.toarray()
        # similarity 0 to everything: a zero vector has no edge at all
        assert np.all(dense[zero] == 0) and np.all(dense[:, zero] == 0)
        assert_matches(a, brute_knn(features, 3, symmetrize=symmetrize, weighted=weighted), atol=1e-6)
        # everybody else has positive similarity to every other non-zero vector, so has its k edges
        nonzero = np.setdiff1d(np.arange(20), zero)
        if symmetrize != "mutual":
            assert np.all((dense[nonzero] > 0).sum(axis=1) >= 3)


def test_all_zero_features_give_empty_graph():
    a = knn_graph(np.zeros((6, 3)), k=2)
    assert a.shape == (6, 6) and a.nnz == 0
    assert knn_graph(np.zeros((6, 3)), k=2, weighted=False).nnz == 0


@pytest.mark.parametrize("weighted", [True, False])
def test_negative_cosine_is_no_edge(weighted):
    # two bundles pointing in opposite directions, k = N - 1: every sample "neighbours" every other one,
    # but pairs across the bundles have cosine -1 (or < 0) and must not become edges
    x = np.array([[1.0, 0.0], [2.0, 0.1], [0.5, -0.05], [-1.0, 0.0], [-3.0, 0.2]])
    a = knn_graph(x, k=4, weighted=weighted)
    assert_valid(a, 5, 4)
    dense = a.toarray()
    pos, neg = [0, 1, 2], [3, 4]
    assert np.all(dense[np.ix_(pos, neg)] == 0) and np.all(dense[np.ix_(neg, pos)] == 0)
    within = dense[np.ix_(pos, pos)] + np.eye(3)
    assert np.all(within > 0) and dense[3, 4] > 0
    assert_matches(a, brute_knn(x, 4, weighted=weighted), atol=1e-9)


def test_antipodal_random_vectors():
    rng = np.random.default_rng(8)
    v = rng.normal(size=(6, 7))
    x = np.concatenate([v, -2 * v])
    a = knn_graph(x, k=11, block_size=5)
    dense = a.toarray()
    assert np.all(dense[np.arange(6), np.arange(6) + 6] == 0)
    assert np.all(a.data > 0)
    assert_matches(a, brute_knn(x, 11), atol=1e-9)


# ----------------------------------------------------------------------------------- structural laws


@HYP
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(3, 60),
    k=st.integers(1, 10),
    metric=st.sampled_from(METRICS),
    weighted=st.booleans(),
    block_size=st.one_of(st.none(), st.integers(1, 20)),
)
def test_structural_laws(seed, n, k, metric, weighted, block_size):
    k = min(k, n - 1)
    # ReLU-like features with one always-positive coordinate: every cosine is > 0
    x = np.abs(np.random.default_rng(seed).normal(size=(n, 6))) + 0.01
    graphs = {s: knn_graph(x, k=k, metric=metric, symmetrize=s, weighted=weighted, block_size=block_size) for s in SYMMETRIZE}
    for s, a in graphs.items():
        assert_valid(a, n, k)
        assert a.has_sorted_indices
        assert a.data.max() <= 1 + 1e-12
    degree = {s: np.diff(a.indptr) for s, a in graphs.items()}
    # every node points to k others with positive weight, so it has >= k edges in mean / union ...
    assert np.all(degree["mean"] >= k) and np.all(degree["union"] >= k)
    # ... and a mutual edge is one of its own k choices, so <= k edges in the mutual graph
    assert np.all(degree["mutual"] <= k)
    # stored directed edges: k per node, each appears at most twice after symmetrising
    assert graphs["mean"].nnz <= 2 * k * n and graphs["mean"].nnz >= k * n
    if not weighted:
        assert set(np.unique(graphs["mean"].data)) <= {0.5, 1.0}
        assert np.all(graphs["union"].data == 1.0) and np.all(graphs["mutual"].data == 1.0)
        # the binary graph has the same edges as the weighted one (euclidean: the kernel could underflow)
        w = knn_graph(x, k=k, metric=metric, block_size=block_size).toarray() != 0
        b = graphs["mean"].toarray() != 0
        assert np.array_equal(w, b) if metric == "cosine" else np.all(w <= b)


@HYP
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 40), k=st.integers(1, 6), metric=st.sampled_from(METRICS),
       symmetrize=st.sampled_from(SYMMETRIZE))
def test_permuting_samples_permutes_graph(seed, n, k, metric, symmetrize):
    k = min(k, n - 1)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    perm = rng.permutation(n)
    a = knn_graph(x, k=k, metric=metric, symmetrize=symmetrize).toarray()
    b = knn_graph(x[perm], k=k, metric=metric, symmetrize=symmetrize).toarray()
    assert np.array_equal(b != 0, a[np.ix_(perm, perm)] != 0)
    np.testing.assert_allclose(b, a[np.ix_(perm, perm)], atol=1e-12)


def test_scale_invariance():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 5))
    # cosine ignores per-sample positive scale
    scaled = x * rng.uniform(0.1, 10, size=(40, 1))
    np.testing.assert_allclose(knn_graph(scaled, k=4).toarray(), knn_graph(x, k=4).toarray(), atol=1e-12)
    # the euclidean heat kernel is scale-free (median normalisation)
    np.testing.assert_allclose(
        knn_graph(1000 * x, k=4, metric="euclidean").toarray(), knn_graph(x, k=4, metric="euclidean").toarray(), atol=1e-12
    )


def test_euclidean_weights_in_unit_interval_and_duplicates_weigh_one():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 3))
    x[7] = x[3]
    a = knn_graph(x, k=3, metric="euclidean").toarray()
    assert np.all((a >= 0) & (a <= 1))
    assert a[3, 7] == pytest.approx(1.0, abs=1e-9)


def test_k_n_minus_one_is_complete_graph():
    x = np.abs(np.random.default_rng(6).normal(size=(9, 3))) + 0.1
    for metric in METRICS:
        a = knn_graph(x, k=8, metric=metric).toarray()
        assert np.all((a > 0) == ~np.eye(9, dtype=bool))
        assert_matches(knn_graph(x, k=8, metric=metric), brute_knn(x, 8, metric), atol=1e-9)


def test_numpy_integer_k():
    x = np.random.default_rng(0).normal(size=(10, 3))
    assert (knn_graph(x, k=np.int64(3)) != knn_graph(x, k=3)).nnz == 0


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("k", [10, 11, 100, 0, -1])
def test_k_out_of_range(k):
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(GraphError, match=r"1 <= k <= N-1 = 9") as info:
        knn_graph(x, k=k)
    assert "lower k" in str(info.value)
    assert isinstance(info.value, LayermodError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("k", [2.0, 2.5, "3", True, None])
def test_k_not_an_integer(k):
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(GraphError, match=r"k=.*needs 1 <= k <= N-1"):
        knn_graph(x, k=k)


def test_single_sample_has_no_neighbours():
    with pytest.raises(GraphError, match="use more samples"):
        knn_graph(np.ones((1, 4)), k=1)


def test_unknown_metric():
    with pytest.raises(GraphError, match=r"unknown metric 'manhattan'; use 'cosine' or 'euclidean'"):
        knn_graph(np.eye(4), k=1, metric="manhattan")


def test_unknown_symmetrize():
    with pytest.raises(GraphError, match=r"unknown symmetrize 'max'; use 'mean', 'union' or 'mutual'"):
        knn_graph(np.eye(4), k=1, symmetrize="max")


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_block_size(bad):
    with pytest.raises(GraphError, match="block_size.*must be positive"):
        knn_graph(np.random.default_rng(0).normal(size=(10, 3)), k=2, block_size=bad)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("as_torch", [False, True])
def test_non_finite_features(value, as_torch):
    x = np.random.default_rng(0).normal(size=(10, 2, 2))
    x[6, 1, 0] = value
    features = torch.from_numpy(x) if as_torch else x
    with pytest.raises(FeatureError, match=r"NaN or Inf \(first at sample 6\); check the model and inputs"):
        knn_graph(features, k=3)


@pytest.mark.parametrize("shape", [(0, 3), (0,), (5, 0)])
def test_empty_features(shape):
    with pytest.raises(FeatureError, match="empty"):
        knn_graph(np.zeros(shape), k=1)


def test_scalar_features():
    with pytest.raises(FeatureError, match=r"shape \(N, D\)"):
        knn_graph(np.float64(1.0), k=1)
