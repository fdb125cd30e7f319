"""Measuring within a memory budget: a layer larger than the budget goes to a temporary memmap and is searched
in blocks, and the graph, Q and the curve are the same as in memory, bit for bit."""

import os

import numpy as np
import pytest
import torch
from torch import nn

import layermod as lm
from layermod.extract.features import iter_layer_features
from layermod.extract.layers import trace_calls
from models_for_tests import blobs


def on_disk(tmp_path, x):
    stored = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=x.dtype, shape=x.shape)
    stored[:] = x
    stored.flush()
    return np.load(tmp_path / "x.npy", mmap_mode="r")


def features(n=300, d=24, seed=0):
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.normal(size=(n, d)), 0).astype(np.float32)
    x[10] = x[11] = x[12]  # duplicated rows: ties at the k-th place, shared
    x[20] = 0  # a zero vector
    return x


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("budget", [2_000, 20_000])
def test_the_blocked_search_over_a_memmap_equals_the_in_memory_graph(tmp_path, metric, weighted, budget):
    x = features()
    expected = lm.knn_graph(x, k=4, metric=metric, weighted=weighted)
    got = lm.knn_graph(on_disk(tmp_path, x), k=4, metric=metric, weighted=weighted, max_bytes=budget)
    assert np.array_equal(expected.indptr, got.indptr) and np.array_equal(expected.indices, got.indices)
    assert np.array_equal(expected.data, got.data)


def test_identical_where_column_blocks_change_the_matmuls_last_bits(tmp_path):
    # at this width a matmul over 97 columns need not give the bits of one over all columns; the weights do not
    # come from the matmul, so the graphs are still equal float for float
    x = features(n=400, d=2049, seed=3)
    expected = lm.knn_graph(x, k=5)
    got = lm.knn_graph(on_disk(tmp_path, x), k=5, max_bytes=3 * 4 * 2049 * 97)
    assert np.array_equal(expected.indices, got.indices) and np.array_equal(expected.data, got.data)


def test_a_tensor_larger_than_the_budget_is_searched_in_blocks_too():
    x = features(seed=1)
    assert (lm.knn_graph(x, k=3, max_bytes=5_000) != lm.knn_graph(x, k=3)).nnz == 0


def test_a_layer_over_the_budget_is_stored_on_disk_and_removed_afterwards():
    x, _ = blobs(n_per_class=10)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    calls = trace_calls(model, x[:2])
    seen = {}
    points = iter_layer_features(model, x, ["1", "3"], calls, max_bytes=4 * 40 * 32, batch_size=7, memmap=True)
    for name, feats in points:
        values = np.array(feats) if isinstance(feats, np.ndarray) else feats.numpy().copy()
        seen[name] = (type(feats), values, getattr(feats, "filename", None))
    assert seen["1"][0] is np.memmap and not os.path.exists(seen["1"][2])  # 40 x 64 floats: over the budget
    assert seen["3"][0] is not np.memmap  # 40 x 4 floats fit
    expected = lm.extract_features(model, x, layers=["1", "3"])
    assert np.array_equal(seen["1"][1], expected["1"].numpy()) and np.array_equal(seen["3"][1], expected["3"].numpy())


@pytest.mark.parametrize("options", [dict(repeats=3, n_per_class=8), dict(repeats=1, n_per_class=40)])
def test_the_curve_within_a_tiny_budget_equals_the_curve_in_memory(options):
    x, y = blobs(n_per_class=40)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 4))
    seen = []
    common = dict(layers=["1", "3", "5"], k=3, seed=2, null_permutations=3, **options)
    small = lm.modularity_curve(model, (x, y), max_bytes=600, visit=lambda n, f, p: seen.append(type(f)), **common)
    large = lm.modularity_curve(model, (x, y), **common)
    assert np.array_equal(small.values, large.values) and np.array_equal(small.z, large.z)
    assert small.config == large.config
    assert seen == [torch.Tensor] * 3  # a visitor gets tensors, also over a file


MEMORY_CONSTANT_MB = 192
_RSS_CHILD = """
import json, sys
from pathlib import Path
import torch
from torch import nn
import layermod as lm

def status(field):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field))
    return int(line.split()[1]) * 1024

torch.manual_seed(0)
x, y = torch.randn(2000, 1, 28, 28), torch.arange(2000) % 10
model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 28 * 28, 10))
lm.modularity_curve(model, (x[:40], y[:40]), layers=["0"], n_per_class=2, repeats=1)  # kernels loaded
base = status("VmRSS")
lm.modularity_curve(model, (x, y), layers=["0"], n_per_class=200, repeats=1, max_bytes=int(sys.argv[1]))
print(json.dumps(status("VmHWM") - base))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the resident memory from /proc")
@pytest.mark.parametrize("budget_mb", [32, 128])
def test_the_peak_resident_memory_stays_within_the_budget_and_a_constant(budget_mb):
    # one layer of 2,000 x 12,544 float32 features (100 MB), more than either budget holds: it goes to disk and is
    # searched in blocks; the constant (README, "Scale") covers torch's kernels, one batch's forward pass and
    # the float64 scoring buffers
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(budget_mb * 2**20)], capture_output=True, text=True,
                         check=True)
    peak = int(out.stdout.strip().splitlines()[-1])
    assert peak <= (budget_mb + MEMORY_CONSTANT_MB) * 2**20, f"{peak / 2**20:.0f} MB above the baseline"
