"""The approximate kNN (faiss IVF / HNSW, the Gaussian sketch): opt-in, close to the exact graph on structured
data, its recall measured and recorded, seeded, and refused in one line when options are wrong."""

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

import layermod as lm
from layermod.cli import main
from layermod.errors import GraphError
from layermod.measure.config import GraphConfig
from layermod.measure.graph import build_graph
from models_for_tests import blobs

pytest.importorskip("faiss")


def clustered(n=1200, d=32, classes=6, seed=0, latent=8):
    """ReLU features of a low-dimensional clustered latent (like a layer's), and their classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    z = rng.normal(size=(classes, latent))[y] * 2 + rng.normal(size=(n, latent))
    return np.maximum(z @ rng.normal(size=(latent, d)), 0).astype(np.float32), y


@pytest.mark.parametrize("method", ["ivf", "hnsw"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_faiss_neighbours_have_high_recall_and_q_close_to_exact(method, metric):
    x, y = clustered()
    exact = lm.modularity(lm.knn_graph(x, k=5, metric=metric), y)
    graph = build_graph(x, graph=GraphConfig(k=5, metric=metric, knn=method))
    assert graph.recall >= 0.9
    assert abs(lm.modularity(graph.adjacency, y) - exact) <= 0.01
    a = graph.adjacency
    assert (a != a.T).nnz == 0 and a.diagonal().sum() == 0 and a.nnz <= 2 * 5 * len(x)


def test_the_exact_path_reports_no_recall_and_is_the_default():
    x, _ = clustered(n=200)
    graph = build_graph(x, graph=GraphConfig())
    assert graph.recall is None
    assert (graph.adjacency != lm.knn_graph(x)).nnz == 0


@pytest.mark.parametrize("knn", ["ivf", "hnsw"])
def test_the_approximate_search_is_deterministic(knn):
    x, _ = clustered(n=800)
    first, second = (lm.knn_graph(x, knn=knn, seed=3) for _ in range(2))
    assert np.array_equal(first.indices, second.indices) and np.array_equal(first.data, second.data)


def test_recall_is_measured_against_the_exact_neighbours():
    # an index that finds nothing near: a sketch to one dimension loses most neighbours of isotropic data
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 64)).astype(np.float32)
    poor = build_graph(x, graph=GraphConfig(sketch_dim=1, metric="euclidean"))
    good = build_graph(x, graph=GraphConfig(sketch_dim=64 * 64, metric="euclidean"))
    assert poor.recall < 0.2 < 0.6 < good.recall <= 1.0


def test_a_sketch_of_wide_features_keeps_q_approximately():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 5, 400)
    z = rng.normal(size=(5, 6))[y] * 2 + rng.normal(size=(400, 6))
    x = np.maximum(z @ rng.normal(size=(6, 20000)), 0).astype(np.float32)  # wide, low intrinsic dimension
    exact = lm.modularity(lm.knn_graph(x), y)
    graph = build_graph(x, graph=GraphConfig(sketch_dim=256))
    assert abs(lm.modularity(graph.adjacency, y) - exact) <= 0.02 and graph.recall > 0.5
    again = build_graph(x, graph=GraphConfig(sketch_dim=256))
    assert (graph.adjacency != again.adjacency).nnz == 0
    other = build_graph(x, graph=GraphConfig(sketch_dim=256), seed=1)  # another projection, another graph
    assert (graph.adjacency != other.adjacency).nnz > 0


def test_the_curve_records_the_path_and_the_recall(tmp_path):
    x, y = blobs(n_per_class=30)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    curve = lm.modularity_curve(model, (x, y), layers=["0", "2"], k=3, n_per_class=20, repeats=2, knn="hnsw")
    assert curve.config["knn"] == "hnsw" and curve.config["sketch_dim"] is None
    assert len(curve.config["knn_recall"]) == 2 and all(0.9 <= r <= 1 for r in curve.config["knn_recall"])
    assert curve.config["knn_recall_rows"] == 500
    exact = lm.modularity_curve(model, (x, y), layers=["0", "2"], k=3, n_per_class=20, repeats=2)
    assert "knn_recall" not in exact.config and exact.config["knn"] == "exact"
    np.testing.assert_allclose(curve.values, exact.values, atol=0.02)
    saved = json.loads((curve.save(tmp_path / "run") / "curve.json").read_text())
    assert saved["config"]["knn_recall"] == curve.config["knn_recall"]


def test_an_old_curve_without_the_new_keys_loads_with_the_exact_defaults(tmp_path):
    old = {"layers": ["a"], "mean": [0.5], "std": [0.0], "values": [[0.5]],
           "config": {"k": 3, "metric": "cosine", "symmetrize": "mean", "weighted": True, "resolution": 1.0}}
    (tmp_path / "curve.json").write_text(json.dumps(old))
    graph = GraphConfig.from_dict(lm.Curve.load(tmp_path / "curve.json").config)
    assert (graph.knn, graph.sketch_dim, graph.precision) == ("exact", None, "float32")


def test_cli_options_reach_the_curve(tmp_path, blobs_npz):
    out = tmp_path / "run"
    assert main(["curve", "--model", "mlp", "--width", "0.25", "--arch-arg", "input_size=16", "--dataset",
                 str(blobs_npz), "--n-per-class", "10", "--repeats", "2", "--knn", "ivf", "--sketch-dim", "8",
                 "--precision", "bf16", "--quiet", "--out", str(out)]) == 0
    config = json.loads((out / "curve.json").read_text())["config"]
    assert (config["knn"], config["sketch_dim"], config["precision"]) == ("ivf", 8, "bf16")
    assert all(0 <= r <= 1 for r in config["knn_recall"])


@pytest.mark.parametrize("option, value, words", [
    ("--knn", "annoy", "invalid choice"), ("--sketch-dim", "0", "sketch_dim=0 must be an integer >= 1"),
    ("--precision", "fp8", "invalid choice")])
def test_cli_bad_values_are_one_line(tmp_path, blobs_npz, capsys, option, value, words):
    with pytest.raises(SystemExit) as exit_:
        main(["curve", "--model", "mlp", "--dataset", str(blobs_npz), option, value, "--out", str(tmp_path / "r")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


@pytest.mark.parametrize("options, words", [
    (dict(knn="annoy"), "unknown knn 'annoy'"), (dict(sketch_dim=0), "sketch_dim=0"),
    (dict(precision="fp16"), "unknown precision 'fp16'"), (dict(max_bytes=0), "max_bytes=0")])
def test_bad_api_values_are_one_line(options, words):
    with pytest.raises(GraphError) as err:
        lm.knn_graph(np.ones((10, 3), np.float32) + np.arange(10)[:, None], **options)
    assert words in str(err.value) and "\n" not in str(err.value)


@pytest.fixture
def no_faiss(monkeypatch):
    """``import faiss`` fails, as without the ann extra (faiss is installed here: a fault we cannot cause)."""
    monkeypatch.setitem(sys.modules, "faiss", None)


def test_without_faiss_the_approximate_path_says_what_to_install(no_faiss):
    with pytest.raises(GraphError) as err:
        lm.knn_graph(torch.rand(20, 4), knn="ivf")
    assert "pip install layermod[ann]" in str(err.value) and "\n" not in str(err.value)


def test_the_exact_precision_is_set_inside_and_restored_after():
    from layermod.measure.rows import matmul_precision

    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        with matmul_precision("float32"):
            assert torch.get_float32_matmul_precision() == "highest"
            assert not torch.backends.cuda.matmul.allow_tf32
        with matmul_precision("tf32"):
            assert torch.get_float32_matmul_precision() == "high"
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(saved)


def test_the_cli_without_faiss_says_what_to_install_before_any_forward_pass(tmp_path, blobs_npz, capsys,
                                                                            monkeypatch, no_faiss):
    forward = []
    monkeypatch.setattr("layermod.analysis.curve.iter_layer_features", lambda *a, **k: forward.append(1) or iter(()))
    code = main(["curve", "--model", "mlp", "--width", "0.25", "--arch-arg", "input_size=16", "--dataset",
                 str(blobs_npz), "--n-per-class", "10", "--knn", "hnsw", "--quiet", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "pip install layermod[ann]" in err and not forward
    assert not (tmp_path / "run" / "curve.json").exists()
