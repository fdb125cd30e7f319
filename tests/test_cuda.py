"""The search on a GPU: the same graph as on the CPU, TF32 off on the exact path, only edges back on the host.
Every test here needs CUDA and is skipped without it (scripts/device_check.sh runs them on a GPU)."""

import numpy as np
import pytest
import torch
from torch import nn

import layermod as lm
from layermod.measure.config import GraphConfig
from layermod.measure.graph import build_graph
from layermod.measure.rows import matmul_precision
from models_for_tests import blobs

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def features(n=600, d=48, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n)
    x = np.maximum(rng.normal(size=(5, d))[y] * 1.5 + rng.normal(size=(n, d)), 0).astype(np.float32)
    x[7] = x[8] = x[9]  # ties, shared on both devices
    return torch.from_numpy(x), y


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_the_exact_graph_on_the_gpu_equals_the_cpu_graph(metric):
    x, y = features()
    cpu = lm.knn_graph(x, k=4, metric=metric)
    gpu = lm.knn_graph(x.cuda(), k=4, metric=metric)
    assert np.array_equal(cpu.indices, gpu.indices) and np.array_equal(cpu.indptr, gpu.indptr)
    np.testing.assert_allclose(gpu.data, cpu.data, rtol=1e-5)
    assert lm.modularity(gpu, y) == pytest.approx(lm.modularity(cpu, y), abs=1e-6)


def test_the_device_argument_moves_the_search_and_the_memmap_path_agrees(tmp_path):
    x, y = features(seed=1)
    on_gpu = lm.knn_graph(x, k=3, device="cuda")
    blocked = lm.knn_graph(x, k=3, device="cuda", max_bytes=20_000)
    assert (on_gpu != blocked).nnz == 0
    assert lm.modularity(on_gpu, y) == pytest.approx(lm.modularity(lm.knn_graph(x, k=3), y), abs=1e-6)


def test_tf32_is_off_on_the_exact_path_and_restored_afterwards():
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with matmul_precision("float32"):
            assert not torch.backends.cuda.matmul.allow_tf32
            a = torch.randn(256, 1024, device="cuda")
            exact = (a.double() @ a.double().T)
            assert (a @ a.T - exact).abs().max().item() < 1e-3  # TF32 (10-bit mantissa) errs by about 1e-1 here
        assert torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_faster_precisions_stay_close_in_q(precision):
    x, y = features(n=2000, d=256, seed=2)
    exact = lm.modularity(lm.knn_graph(x.cuda()), y)
    assert abs(lm.modularity(lm.knn_graph(x.cuda(), precision=precision), y) - exact) < 0.02


def test_a_curve_on_the_gpu_equals_the_curve_on_the_cpu():
    x, y = blobs(n_per_class=30)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    cpu = lm.modularity_curve(model, (x, y), layers=["0", "2"], n_per_class=20, repeats=2)
    gpu = lm.modularity_curve(model.cuda(), (x, y), layers=["0", "2"], n_per_class=20, repeats=2)
    np.testing.assert_allclose(gpu.values, cpu.values, atol=1e-6)


def test_an_approximate_search_from_gpu_features():
    x, y = features(n=1500)
    graph = build_graph(x.cuda(), graph=GraphConfig(knn="ivf"))
    assert graph.recall > 0.9
