"""The benchmarks' peers (benchmarks/graph_peers.py) compute the same Q as networkx on layermod's graph.

Correctness only, on tiny inputs: the benchmarks report timings, the tests never assert them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import layermod

nx = pytest.importorskip("networkx")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TOL = 1e-6


@pytest.fixture(scope="module")
def bench():
    """(bench_graph, graph_peers), imported from benchmarks/ the way the script imports them."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_graph
        import graph_peers
        yield bench_graph, graph_peers
    finally:
        sys.path.remove(str(BENCHMARKS))


def _needs(peer: str) -> None:
    pytest.importorskip({"sklearn": "sklearn", "faiss": "faiss"}[peer])


def _nx_modularity(adjacency, labels) -> float:
    graph = nx.from_scipy_sparse_array(adjacency)
    comms = [set(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)]
    return nx.community.modularity(graph, comms, weight="weight", resolution=1.0)


def test_sparse_modularity_is_networkx_on_layermods_graph(bench):
    bench_graph, graph_peers = bench
    x, labels = bench_graph.make_features(150, 24)
    a = layermod.knn_graph(torch.from_numpy(x), k=3)
    assert graph_peers.sparse_modularity(a, labels) == pytest.approx(_nx_modularity(a, labels), abs=1e-12)
    # labels need not be 0..C-1
    assert graph_peers.sparse_modularity(a, labels * 7 - 3) == pytest.approx(_nx_modularity(a, labels), abs=1e-12)


@pytest.mark.parametrize("peer", ["sklearn", "faiss"])
@pytest.mark.parametrize("n, d", [(150, 24), (90, 300)])
def test_peer_q_and_edges_are_layermods(bench, peer, n, d):
    _needs(peer)
    bench_graph, graph_peers = bench
    x, labels = bench_graph.make_features(n, d, seed=3)
    ours = layermod.knn_graph(torch.from_numpy(x), k=3)
    q_nx = _nx_modularity(ours, labels)
    q, a = getattr(graph_peers, f"{peer}_pipeline")(x, labels, 3)
    assert abs(q - q_nx) <= TOL
    assert abs(q - layermod.modularity(ours, labels)) <= TOL
    same, max_diff, off_rows = bench_graph.compare_graphs(a, ours)
    assert same and max_diff <= bench_graph.WEIGHT_TOL and len(off_rows) == 0
    assert a.shape == (n, n) and abs(a - a.T).max() == 0


def test_faiss_drops_self_behind_duplicates(bench):
    """Six identical rows: a row's own index need not be among its k + 1 results, and never becomes an edge."""
    _needs("faiss")
    bench_graph, graph_peers = bench
    x, labels = bench_graph.make_features(40, 16)
    x[:6] = x[0]
    _, a = graph_peers.faiss_pipeline(x, labels, 3, threads=1)
    assert np.all(a.diagonal() == 0)
    out_degree = np.diff(a.tocsr().indptr)
    assert out_degree.min() >= 3


def test_bench_graph_prints_peers_and_their_agreement(bench, capsys, tmp_path):
    bench_graph, graph_peers = bench
    out = tmp_path / "rows.json"
    dims = ["--dims", "8,16", "--max-feature-gb", "3e-6"]  # 60 x 16 float32 is 3.8e-6 GB: skipped
    assert bench_graph.main(["--sizes", "60", *dims, "--repeats", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "skipped N=60 D=16" in text
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["dq"] <= TOL and row["edges_identical"]
    ran = [p for p, v in graph_peers.available().items() if v]
    for peer in ran:
        figures = row["peers"][peer]
        assert figures["dq"] <= TOL and figures["edges_identical"]
        assert f"{graph_peers.LABELS[peer]}: faster than layermod" in text
        assert figures["t_over_ours"] == pytest.approx(figures["t"] / figures["t_ours"])
