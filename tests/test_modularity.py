"""Tests of ``layermod.modularity`` and ``layermod.permutation_null``.

networkx (``networkx.community.modularity`` on ``networkx.from_scipy_sparse_array(A)``) is the oracle; the
closed-form cases below are derived from the formula by hand, not copied from runs.
"""

from __future__ import annotations

import itertools
import math

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from layermod import knn_graph
from layermod.measure.modularity import modularity
from layermod import permutation_null
from layermod.errors import GraphError, LabelError, LayermodError

HYP = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------------------------- oracle


def nx_modularity(adjacency, labels, resolution: float = 1.0) -> float:
    graph = nx.from_scipy_sparse_array(sp.csr_array(adjacency))
    labels = list(labels)
    communities = {}
    for node, label in enumerate(labels):
        communities.setdefault(label, set()).add(node)
    return nx.community.modularity(graph, list(communities.values()), weight="weight", resolution=resolution)


def dense_modularity(adjacency, labels, resolution: float = 1.0) -> float:
    """The matrix formula, term by term (A_ii counts once in s_i)."""
    a = np.asarray(sp.csr_array(adjacency).toarray(), dtype=np.float64)
    labels = np.asarray(labels)
    s = a.sum(axis=1)
    two_w = s.sum()
    same = labels[:, None] == labels[None, :]
    return float(((a - resolution * np.outer(s, s) / two_w) * same).sum() / two_w)


def class_strength_bound(adjacency, labels) -> float:
    """1 - sum_c (S_c / 2W)^2: Q when every edge lies inside a class."""
    a = sp.csr_array(adjacency)
    s = np.asarray(a.sum(axis=1)).ravel()
    labels = np.asarray(labels)
    shares = np.array([s[labels == c].sum() for c in np.unique(labels)]) / s.sum()
    return 1.0 - float((shares**2).sum())


def random_graph(rng: np.random.Generator, n: int, density: float, isolated: int, weights: str) -> sp.csr_array:
    """Random symmetric non-negative graph without self-loops, with ``isolated`` nodes that have no edge."""
    mask = np.triu(rng.random((n, n)) < density, 1)
    if weights == "uniform":
        w = rng.uniform(0.01, 1.0, size=(n, n))
    elif weights == "heavy":
        w = rng.pareto(1.5, size=(n, n)) + 1e-3
    else:
        w = np.ones((n, n))
    upper = np.where(mask, w, 0.0)
    dense = upper + upper.T
    iso = rng.choice(n, size=min(isolated, n), replace=False)
    dense[iso, :] = 0
    dense[:, iso] = 0
    return sp.csr_array(dense)


def clustered(n: int, d: int, c: int, seed: int, spread: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d)) * 3
    labels = rng.integers(0, c, size=n)
    return centres[labels] + spread * rng.normal(size=(n, d)), labels


# -------------------------------------------------------------------------------- agreement with networkx


@HYP
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 60),
    density=st.floats(0.02, 0.9),
    isolated=st.integers(0, 5),
    weights=st.sampled_from(["uniform", "heavy", "binary"]),
    n_classes=st.integers(1, 8),
    resolution=st.sampled_from([1.0, 0.0, 0.5, 2.0, 1.37]),
)
def test_matches_networkx_random_graphs(seed, n, density, isolated, weights, n_classes, resolution):
    rng = np.random.default_rng(seed)
    a = random_graph(rng, n, density, isolated, weights)
    labels = rng.integers(0, n_classes, size=n)
    if a.sum() == 0:
        with pytest.raises(GraphError):
            modularity(a, labels)
        return
    q = modularity(a, labels, resolution=resolution)
    assert isinstance(q, float)
    assert q == pytest.approx(nx_modularity(a, labels, resolution), abs=1e-9)
    # every accepted input form gives the same Q
    for form in (a.toarray(), sp.coo_array(a), sp.csr_matrix(a), sp.csc_array(a)):
        assert modularity(form, labels, resolution=resolution) == pytest.approx(q, abs=1e-12)
    for lab in (labels.tolist(), torch.from_numpy(labels)):
        assert modularity(a, lab, resolution=resolution) == pytest.approx(q, abs=1e-12)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("symmetrize", ["mean", "union", "mutual"])
@pytest.mark.parametrize("n_classes", [2, 5, 10])
@pytest.mark.parametrize("resolution", [1.0, 0.7, 1.5])
def test_matches_networkx_knn_graphs(metric, symmetrize, n_classes, resolution):
    x, labels = clustered(150, 8, n_classes, seed=n_classes, spread=2.0)
    a = knn_graph(x, k=5, metric=metric, symmetrize=symmetrize)
    q = modularity(a, labels, resolution=resolution)
    assert q == pytest.approx(nx_modularity(a, labels, resolution), abs=1e-9)


@HYP
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(5, 80),
    k=st.integers(1, 8),
    n_classes=st.integers(1, 6),
    relu=st.booleans(),
)
def test_matches_networkx_random_knn_graphs(seed, n, k, n_classes, relu):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)) + rng.normal(size=(n_classes, 6))[rng.integers(0, n_classes, size=n)]
    if relu:
        x = np.maximum(x, 0)
    a = knn_graph(torch.from_numpy(x).float(), k=min(k, n - 1))
    labels = rng.integers(0, n_classes, size=n)
    assume(a.nnz > 0)  # all-zero ReLU features give no edge (refused; tested elsewhere)
    assert modularity(a, labels) == pytest.approx(nx_modularity(a, labels), abs=1e-9)


def test_self_loops_follow_the_matrix_convention():
    # A_ii counts once in s_i and once in the inside weight: the plain matrix formula
    rng = np.random.default_rng(3)
    a = random_graph(rng, 12, 0.4, 0, "uniform").toarray()
    a[np.arange(12), np.arange(12)] = rng.uniform(0, 1, size=12)
    labels = rng.integers(0, 3, size=12)
    for resolution in (1.0, 0.5):
        assert modularity(a, labels, resolution=resolution) == pytest.approx(dense_modularity(a, labels, resolution),
                                                                             abs=1e-12)


def test_duplicate_coo_entries_are_summed():
    rng = np.random.default_rng(4)
    dense = random_graph(rng, 15, 0.3, 2, "uniform").toarray()
    i, j = np.nonzero(dense)
    # split every entry into two stored halves
    coo = sp.coo_array((np.concatenate([dense[i, j] / 2, dense[i, j] / 2]), (np.concatenate([i, i]), np.concatenate([j, j]))), shape=dense.shape)
    labels = rng.integers(0, 3, size=15)
    assert modularity(coo, labels) == pytest.approx(nx_modularity(dense, labels), abs=1e-12)


# ------------------------------------------------------------------------------------ closed-form cases


def test_one_community_is_zero():
    rng = np.random.default_rng(0)
    a = random_graph(rng, 20, 0.3, 3, "uniform")
    assert modularity(a, np.zeros(20)) == pytest.approx(0.0, abs=1e-12)
    # with resolution gamma the single community gives 1 - gamma
    assert modularity(a, np.zeros(20), resolution=0.25) == pytest.approx(0.75, abs=1e-12)


def test_singletons():
    # every node its own community, no self-loops: nothing inside, Q = -sum_i (s_i / 2W)^2
    rng = np.random.default_rng(1)
    a = random_graph(rng, 20, 0.3, 0, "uniform")
    s = a.sum(axis=1)
    assert modularity(a, np.arange(20)) == pytest.approx(-float(((s / s.sum()) ** 2).sum()), abs=1e-12)


@pytest.mark.parametrize("c", [2, 3, 5])
def test_disjoint_equal_cliques(c):
    # c disjoint equal cliques labelled by clique: all weight inside, equal strengths -> Q = 1 - 1/c
    block = np.ones((4, 4)) - np.eye(4)
    a = sp.block_diag([block] * c, format="csr")
    labels = np.repeat(np.arange(c), 4)
    assert modularity(a, labels) == pytest.approx(1 - 1 / c, abs=1e-12)


def test_two_nodes_one_edge():
    a = np.array([[0.0, 2.0], [2.0, 0.0]])
    assert modularity(a, [0, 0]) == pytest.approx(0.0, abs=1e-15)
    assert modularity(a, [0, 1]) == pytest.approx(-0.5, abs=1e-15)  # the lower bound of modularity


# ------------------------------------------------------------------------------------------ invariances


@HYP
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(6, 80), k=st.integers(1, 6), n_classes=st.integers(2, 6),
       metric=st.sampled_from(["cosine", "euclidean"]))
def test_permuting_samples_leaves_q_unchanged(seed, n, k, n_classes, metric):
    # continuous features: no ties, so the permuted samples give the permuted graph
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, size=n)
    x = rng.normal(size=(n_classes, 5))[labels] + rng.normal(size=(n, 5))
    k = min(k, n - 1)
    perm = rng.permutation(n)
    q = modularity(knn_graph(x, k=k, metric=metric), labels)
    q_perm = modularity(knn_graph(x[perm], k=k, metric=metric), labels[perm])
    assert q_perm == pytest.approx(q, abs=1e-9)


@HYP
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 50), n_classes=st.integers(1, 7),
       kind=st.sampled_from(["ints", "negative", "strings", "floats", "torch"]), resolution=st.sampled_from([1.0, 0.5, 3.0]))
def test_renaming_labels_leaves_q_unchanged(seed, n, n_classes, kind, resolution):
    rng = np.random.default_rng(seed)
    a = random_graph(rng, n, 0.3, 2, "uniform")
    assume(a.sum() > 0)  # an empty graph is refused (test_matches_networkx_random_graphs)
    labels = rng.integers(0, n_classes, size=n)
    # a random bijection of the class ids to new names that do not preserve their order
    new_ids = rng.choice(np.arange(-1000, 1000), size=n_classes, replace=False)
    if kind == "ints":
        renamed = (new_ids + 1000)[labels] * 7 + 3  # distinct non-negative ids, still in random order
    elif kind == "negative":
        renamed = new_ids[labels]
    elif kind == "strings":
        renamed = np.array([f"class-{v}" for v in new_ids])[labels]
    elif kind == "floats":
        renamed = (new_ids / 3.0)[labels]
    else:
        renamed = torch.from_numpy(new_ids[labels])
    q = modularity(a, labels, resolution=resolution)
    assert modularity(a, renamed, resolution=resolution) == pytest.approx(q, abs=1e-12)
    assert modularity(a, list(renamed.tolist()) if kind != "strings" else renamed.tolist(),
                      resolution=resolution) == pytest.approx(q, abs=1e-12)


@HYP
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 60), density=st.floats(0.02, 1.0), n_classes=st.integers(1, 10),
       weights=st.sampled_from(["uniform", "heavy", "binary"]))
def test_upper_and_lower_bounds(seed, n, density, n_classes, weights):
    rng = np.random.default_rng(seed)
    a = random_graph(rng, n, density, 1, weights)
    assume(a.sum() > 0)  # an empty graph is refused (test_matches_networkx_random_graphs)
    labels = rng.integers(0, n_classes, size=n)
    q = modularity(a, labels)
    # inside weight <= all weight, so Q <= 1 - sum_c (S_c / 2W)^2; by Cauchy-Schwarz sum_c p_c^2 >= 1/C
    # for any shares over C classes, so also Q <= 1 - 1/C exactly (balanced or not)
    assert q <= class_strength_bound(a, labels) + 1e-12
    assert q <= 1 - 1 / len(np.unique(labels)) + 1e-12
    assert q >= -0.5 - 1e-12  # modularity without self-loops is never below -1/2
    # all edges inside the classes: the bound is reached
    i, j = a.nonzero()
    inside = sp.csr_array((a.toarray()[i, j] * (labels[i] == labels[j]), (i, j)), shape=a.shape)
    if inside.sum() > 0:
        assert modularity(inside, labels) == pytest.approx(class_strength_bound(inside, labels), abs=1e-12)


@pytest.mark.parametrize("c", [2, 5, 10])
def test_knn_graph_bound_with_balanced_classes(c):
    # balanced classes in a kNN graph: strengths are close but not exactly equal, so the exact bound is the
    # one with class strengths, and 1 - 1/C holds through Cauchy-Schwarz
    rng = np.random.default_rng(c)
    labels = np.repeat(np.arange(c), 40)
    x = rng.normal(size=(c, 6))[labels] * 2 + rng.normal(size=(40 * c, 6))
    a = knn_graph(x, k=3)
    q = modularity(a, labels)
    assert q <= class_strength_bound(a, labels) + 1e-12
    assert q <= 1 - 1 / c + 1e-12


# ------------------------------------------------------------------------------- null and separation


def test_shuffled_labels_give_q_near_zero():
    x, labels = clustered(1000, 8, 10, seed=0, spread=1.0)
    a = knn_graph(x, k=3)
    q = modularity(a, labels)
    null = permutation_null(a, labels, permutations=30, seed=1)
    assert abs(null.mean()) < 0.02
    assert null.std() < 0.02
    assert q > null.max() + 0.3


def test_tight_clusters_approach_the_ceiling():
    c = 10
    x, labels = clustered(500, 16, c, seed=2, spread=0.05)
    a = knn_graph(x, k=3)
    q = modularity(a, labels)
    assert 0.85 < q <= 1 - 1 / c + 1e-12
    # every edge inside a class: Q equals the strength bound
    assert q == pytest.approx(class_strength_bound(a, labels), abs=1e-12)


def test_separation_raises_q():
    qs = []
    for spread in (5.0, 1.5, 0.5, 0.1):
        x, labels = clustered(300, 8, 5, seed=3, spread=spread)
        qs.append(modularity(knn_graph(x, k=3), labels))
    assert qs == sorted(qs) and qs[-1] - qs[0] > 0.3


# -------------------------------------------------------------------------------------- permutation_null


def _small_case(seed: int = 5):
    rng = np.random.default_rng(seed)
    a = random_graph(rng, 7, 0.5, 0, "uniform")
    labels = np.array(["b", "a", "c", "a", "b", "c", "a"])
    return a, labels


def test_permutation_null_shape_and_determinism():
    x, labels = clustered(100, 5, 4, seed=6)
    a = knn_graph(x, k=3)
    null = permutation_null(a, labels, permutations=25, seed=3)
    assert isinstance(null, np.ndarray) and null.shape == (25,) and null.dtype == np.float64
    np.testing.assert_array_equal(null, permutation_null(a, labels, permutations=25, seed=3))
    assert not np.array_equal(null, permutation_null(a, labels, permutations=25, seed=4))
    assert len(np.unique(null)) > 1
    assert permutation_null(a, labels, permutations=0).shape == (0,)
    # the first draws do not depend on how many are asked for
    np.testing.assert_array_equal(permutation_null(a, labels, permutations=10, seed=3), null[:10])


def test_permutation_null_values_are_modularities_of_permuted_labels():
    # 7 nodes, classes of size 3, 2, 2: enumerate all 210 arrangements of the labels
    a, labels = _small_case()
    possible = {}
    for perm in itertools.permutations(range(7)):
        arranged = labels[list(perm)]
        possible.setdefault(tuple(arranged), nx_modularity(a, arranged))
    assert len(possible) == math.factorial(7) // (math.factorial(3) * 2 * 2)
    values = np.array(sorted(possible.values()))
    null = permutation_null(a, labels, permutations=2000, seed=0)
    nearest = np.abs(null[:, None] - values[None, :]).min(axis=1)
    assert nearest.max() < 1e-9, "a null value that no permutation of the labels gives"
    # uniform over arrangements: the mean matches the exact mean within a few standard errors
    exact_mean, exact_sd = values.mean(), values.std()
    assert abs(null.mean() - exact_mean) < 5 * exact_sd / math.sqrt(len(null))
    # and many different arrangements are visited
    assert len(np.unique(np.round(null, 12))) > 0.5 * len(np.unique(np.round(values, 12)))


def test_permutation_null_uses_resolution():
    a, labels = _small_case()
    null1 = permutation_null(a, labels, permutations=40, seed=2)
    null2 = permutation_null(a, labels, permutations=40, seed=2, resolution=2.0)
    # every value is the networkx Q, at that resolution, of some arrangement of the labels
    for gamma, null in ((1.0, null1), (2.0, null2)):
        values = {nx_modularity(a, labels[list(p)], gamma) for p in itertools.permutations(range(7))}
        values = np.array(sorted(values))
        assert np.abs(null[:, None] - values[None, :]).min(axis=1).max() < 1e-9
    assert not np.allclose(null1, null2)


def test_permutation_null_keeps_class_sizes():
    # labels with one node in class 1: Q of each draw equals the Q of moving that single label somewhere
    a = random_graph(np.random.default_rng(9), 10, 0.5, 0, "uniform")
    labels = np.zeros(10, dtype=int)
    labels[0] = 1
    singles = set()
    for node in range(10):
        lab = np.zeros(10, dtype=int)
        lab[node] = 1
        singles.add(round(nx_modularity(a, lab), 10))
    null = permutation_null(a, labels, permutations=50, seed=0)
    assert {round(v, 10) for v in null} <= singles


def test_permutation_null_validates_like_modularity():
    with pytest.raises(LabelError):
        permutation_null(np.ones((3, 3)) - np.eye(3), [0, 1], permutations=3)
    with pytest.raises(GraphError):
        permutation_null(np.zeros((3, 3)), [0, 1, 1], permutations=3)


# ----------------------------------------------------------------------------------------------- errors


def test_labels_of_wrong_length():
    a = np.ones((4, 4)) - np.eye(4)
    with pytest.raises(LabelError, match=r"3 labels for 4 samples; pass one label per sample") as info:
        modularity(a, [0, 1, 0])
    assert isinstance(info.value, LayermodError) and isinstance(info.value, ValueError)
    with pytest.raises(LabelError, match="one label per sample"):
        modularity(a, torch.zeros(5))


def test_labels_not_one_dimensional():
    a = np.ones((4, 4)) - np.eye(4)
    with pytest.raises(LabelError, match="one-dimensional"):
        modularity(a, np.zeros((2, 2)))


def test_non_square_adjacency():
    with pytest.raises(GraphError, match=r"square; got shape \(3, 4\)"):
        modularity(np.ones((3, 4)), [0, 1, 2])


def test_asymmetric_adjacency():
    a = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    with pytest.raises(GraphError, match=r"not symmetric; symmetrise it first, e\.g\. \(A \+ A\.T\) / 2"):
        modularity(a, [0, 1, 1])
    with pytest.raises(GraphError, match="not symmetric"):
        modularity(sp.csr_array(a), [0, 1, 1])
    # symmetrising as the message says fixes it
    assert modularity((a + a.T) / 2, [0, 1, 1]) == pytest.approx(nx_modularity((a + a.T) / 2, [0, 1, 1]), abs=1e-12)


def test_rounding_level_asymmetry_is_accepted():
    a = random_graph(np.random.default_rng(2), 10, 0.5, 0, "uniform").toarray()
    b = a.copy()
    b[np.nonzero(a)] *= 1 + 1e-15 * np.random.default_rng(3).uniform(size=np.count_nonzero(a))
    labels = np.arange(10) % 3
    assert modularity(b, labels) == pytest.approx(modularity(a, labels), abs=1e-12)


def test_negative_weights():
    a = np.array([[0.0, -1.0, 1.0], [-1.0, 0.0, 2.0], [1.0, 2.0, 0.0]])
    with pytest.raises(GraphError, match="negative weights; modularity needs non-negative weights"):
        modularity(a, [0, 0, 1])


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weights(value):
    a = np.ones((3, 3)) - np.eye(3)
    a[0, 1] = a[1, 0] = value
    with pytest.raises(GraphError, match="NaN or Inf"):
        modularity(a, [0, 0, 1])


@pytest.mark.parametrize("adjacency", [np.zeros((4, 4)), sp.csr_array((4, 4)), np.zeros((0, 0))])
def test_graph_without_weight(adjacency):
    n = adjacency.shape[0]
    with pytest.raises(GraphError, match="no edge weight, so modularity is undefined"):
        modularity(adjacency, list(range(n)))


def test_knn_graph_of_zero_features_is_rejected():
    # a layer whose features are all zero gives a graph without edges: a clear error, not NaN
    with pytest.raises(GraphError, match="no edge weight"):
        modularity(knn_graph(np.zeros((10, 4)), k=3), np.arange(10) % 2)
