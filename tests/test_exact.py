"""The graph of nearly parallel features equals a float64 brute-force graph of the stored features.

Deep networks at initialisation, and any layer whose samples share a large common component, give features whose
cosines differ only far below float32's rounding. The oracle here scores every pair in float64 from the stored
float32 values (numpy, no code of the library), takes each row's k best and shares ties within the documented
tolerance; its modularity comes from networkx.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import layermod as lm
from layermod.measure.rows import Rows
from layermod.measure.search import search

U64 = 2.0**-53


def nearly_parallel(n: int, d: int, eps: float, seed: int = 0, classes: int = 4):
    """x = v + eps (0.5 class offset + noise), float32: cosines all within about eps^2 of 1."""
    rng = np.random.default_rng(seed)
    v, offsets = rng.normal(size=d), rng.normal(size=(classes, d))
    y = rng.integers(0, classes, n)
    return (v + eps * (0.5 * offsets[y] + rng.normal(size=(n, d)))).astype(np.float32), y


def oracle_scores(x: np.ndarray, metric: str) -> np.ndarray:
    """(N, N) float64 scores of the stored values: cosine, or minus the squared distance (from differences)."""
    x = x.astype(np.float64)
    if metric == "cosine":
        xn = x / np.maximum(np.sqrt((x * x).sum(axis=1)), 1e-8)[:, None]
        return xn @ xn.T
    return np.concatenate([-((x[s:s + 100, None, :] - x[None, :, :]) ** 2).sum(axis=-1)
                           for s in range(0, len(x), 100)])


def oracle_graph(x: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(dense symmetric adjacency, gap (N,) between each row's k-th and (k+1)-th score over the tolerance)."""
    s = oracle_scores(x, metric)
    n, d = x.shape
    np.fill_diagonal(s, -np.inf)
    ordered = -np.sort(-s, axis=1)
    kth = ordered[:, k - 1]
    tol = np.full(n, 2 * (2 * d + 6) * U64) if metric == "cosine" else 2 * (d + 3) * U64 * np.abs(kth)
    better, band = s > (kth + tol)[:, None], np.abs(s - kth[:, None]) <= tol[:, None]
    shares = better + band * ((k - better.sum(1)) / band.sum(1))[:, None]
    if metric == "cosine":
        w = np.clip(s, 0, None)
    else:
        w = np.exp(s / np.median(-ordered[:, :k]))
    directed = np.where(shares > 0, w * shares, 0.0)
    return (directed + directed.T) / 2, (kth - ordered[:, k]) / np.maximum(tol, 1e-300)


def networkx_q(adjacency: np.ndarray, labels: np.ndarray) -> float:
    g = nx.from_numpy_array(adjacency)
    return nx.community.modularity(g, [set(np.flatnonzero(labels == c)) for c in np.unique(labels)])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("eps", [1e-2, 1e-3, 1e-4])
def test_nearly_parallel_features_give_the_float64_graph_and_its_q(metric, eps):
    x, y = nearly_parallel(2000, 64, eps)
    expected, gap = oracle_graph(x, 3, metric)
    got = lm.knn_graph(x, k=3, metric=metric)
    assert (gap > 1).mean() > 0.99  # float64 separates nearly every row: the comparison is about real neighbours
    dense = got.toarray()
    assert np.array_equal(dense > 0, expected > 0)
    np.testing.assert_allclose(dense, expected, rtol=1e-12, atol=0)
    q, reference = lm.modularity(got, y), networkx_q(expected, y)
    assert abs(q - reference) < 1e-9
    assert q > 0.5  # the classes are there, float32 rounding only hides them


def test_the_four_classes_are_found_where_float32_cannot_order_the_neighbours():
    x, y = nearly_parallel(2000, 64, 1e-4)
    xn = torch.nn.functional.normalize(torch.from_numpy(x), dim=1)
    c = xn @ xn.T
    c.fill_diagonal_(-2)
    top = torch.topk(c, 4, dim=1).values
    assert (top[:, 2] == top[:, 3]).float().mean() > 0.5  # float32 sees most 3rd and 4th neighbours as equal
    assert lm.modularity(lm.knn_graph(x, k=3), y) > 0.6


def test_collapsed_features_at_ten_thousand_samples_stay_within_memory(tmp_path):
    # every cosine is 1 - 1e-8 or so: float32 ranks nothing, float64 everything; the run must stay small
    script = textwrap.dedent("""
        import resource, sys, numpy as np, layermod as lm
        rng = np.random.default_rng(0)
        n, d = 10_000, 256
        v, y = rng.normal(size=d), rng.integers(0, 10, n)
        x = (v + 1e-4 * (0.3 * rng.normal(size=(10, d))[y] + rng.normal(size=(n, d)))).astype(np.float32)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        a = lm.knn_graph(x, k=3, max_bytes=64 * 2**20)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(a.nnz, lm.modularity(a, y), (after - before) / 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=True)
    nnz, q, grown_mb = out.stdout.split()
    assert int(nnz) <= 6 * 10_000 and float(q) > 0.3
    assert float(grown_mb) < 400, out.stdout


def planted_near_ties(seed: int) -> np.ndarray:
    """Rows whose 3rd and 4th neighbours differ by about the float32 matmul's bound: the band's edge."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(60, 96))
    steps = rng.choice([0.0, 1e-7, 3e-7, 1e-6, 1e-5], size=(60, 1))
    return np.concatenate([base, base + steps * rng.normal(size=(60, 96)), base + 1e-3 * rng.normal(size=(60, 96))]
                          ).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_near_ties_at_the_bands_edge_give_the_same_floats_for_any_blocking_budget_and_threads(tmp_path, metric):
    x = planted_near_ties(1)
    expected = lm.knn_graph(x, k=3, metric=metric)
    stored = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=x.dtype, shape=x.shape)
    stored[:] = x
    stored.flush()
    on_disk = np.load(tmp_path / "x.npy", mmap_mode="r")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = lm.knn_graph(x, k=3, metric=metric)
    finally:
        torch.set_num_threads(threads)
    others = [lm.knn_graph(x, k=3, metric=metric, block_size=b) for b in (1, 7, 64)] + \
        [lm.knn_graph(on_disk, k=3, metric=metric, max_bytes=b) for b in (3 * 4 * 96 * 5, 40_000)] + [one_thread]
    for got in others:
        assert np.array_equal(got.indptr, expected.indptr) and np.array_equal(got.indices, expected.indices)
        assert np.array_equal(got.data, expected.data)
    reference, _ = oracle_graph(x, 3, metric)
    np.testing.assert_allclose(expected.toarray(), reference, rtol=1e-12, atol=0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(5, 120), d=st.integers(1, 40), k=st.integers(1, 4),
       eps=st.sampled_from([1e-1, 1e-3, 1e-5, 1e-7, 0.0]), metric=st.sampled_from(["cosine", "euclidean"]))
def test_shares_are_positive_and_every_row_spends_k_places(seed, n, d, k, eps, metric):
    rng = np.random.default_rng(seed)
    x = torch.from_numpy((0.5 + rng.random(d) + eps * rng.uniform(-1, 1, size=(n, d))).astype(np.float32))
    k = min(k, n - 1)
    rows = Rows(x, metric, torch.device("cpu"), lazy=False, block=n)
    edges = search(rows, k, max(1, n // 3), n, "float32")
    assert (edges.shares > 0).all() and (edges.shares <= 1).all()
    spent = torch.zeros(n, dtype=torch.float64).index_add_(0, edges.rows, edges.shares)
    # cosine drops neighbours with a score <= 0 (none here: every value is positive)
    torch.testing.assert_close(spent, torch.full((n,), float(k), dtype=torch.float64), rtol=0, atol=1e-9)
    a = lm.knn_graph(x, k=k, metric=metric)
    assert np.all(a.data > 0) and (a != a.T).nnz == 0


@pytest.mark.slow
def test_a_ten_layer_relu_net_at_initialisation_runs_within_a_two_gigabyte_budget(tmp_path):
    # at the last layer every cosine is 0.999999 +- 3e-7: the curve must measure it, within the budget
    script = textwrap.dedent("""
        import resource, numpy as np, torch, layermod as lm
        from torch import nn
        torch.manual_seed(0)
        layers, c = [], 1
        for _ in range(10):
            layers += [nn.Conv2d(c, 8, 3, padding=1), nn.ReLU()]
            c = 8
        net = nn.Sequential(*layers)
        x, y = torch.rand(10_000, 1, 28, 28), torch.arange(10_000) % 10
        curve = lm.modularity_curve(net, (x, y), layers=["19"], n_per_class=1000, repeats=1,
                                    max_bytes=2 * 2**30)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, *curve.mean)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=1200, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})
    peak_mb, *values = map(float, out.stdout.split())
    # torch, the model, 10,000 inputs, the features of a pass and the search: a few GB, never tens
    assert peak_mb < 4096 and all(abs(v) < 0.05 for v in values)  # labels unrelated to the input: no structure


def test_zero_rows_among_nearly_parallel_ones_have_no_edges():
    x, _ = nearly_parallel(300, 16, 1e-5)
    x[[3, 70, 200]] = 0
    a = lm.knn_graph(x, k=3)
    assert all(a[[i]].nnz == 0 for i in (3, 70, 200))
    expected, _ = oracle_graph(x, 3, "cosine")
    assert np.array_equal(a.toarray() > 0, expected > 0)


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_a_coarser_matmul_only_proposes_the_graph_is_the_same(precision, metric):
    x = np.concatenate([planted_near_ties(2), nearly_parallel(200, 96, 1e-2)[0]])
    expected = lm.knn_graph(x, k=3, metric=metric)
    got = lm.knn_graph(x, k=3, metric=metric, precision=precision)
    assert np.array_equal(got.indices, expected.indices) and np.array_equal(got.data, expected.data)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("d", [5, 40_000])
def test_a_pairs_score_is_one_float_whichever_way_it_is_asked_for(metric, d):
    # a lone long row is summed across threads by torch; the score must not depend on that, nor on the chunking
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(9, d)).astype(np.float32))
    rows = Rows(x, metric, torch.device("cpu"), lazy=False, block=9)
    cols = torch.tensor([[1, 4, 8], [0, 2, 3], [8, 7, 6]])
    by_rows = rows.exact_rows(2, 5, cols)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for r in range(3):
            for c in range(3):
                one = rows.exact(torch.tensor([2 + r]), cols[r, c:c + 1])
                back = rows.exact(cols[r, c:c + 1], torch.tensor([2 + r]))
                assert one.item() == by_rows[r, c].item() == back.item()
    finally:
        torch.set_num_threads(threads)


def test_scoring_too_many_candidate_pairs_is_refused_in_one_line(monkeypatch):
    # orthogonal samples: every other sample ties at cosine 0 for every place, and none is an edge; scoring
    # them all is work without end for a large N, so past the limit it is refused
    import layermod.measure.search as search_module

    monkeypatch.setattr(search_module, "MAX_SCORED_PAIRS", 10_000)
    x = np.eye(300, dtype=np.float32)
    with pytest.raises(lm.GraphError) as err:
        lm.knn_graph(x, k=3)
    assert "\n" not in str(err.value) and "10,000 candidate pairs" in str(err.value)
    monkeypatch.setattr(search_module, "MAX_SCORED_PAIRS", 2**25)
    assert lm.knn_graph(x, k=3).nnz == 0  # within the limit: no positive similarity, no edge
