"""Hostile inputs to the measurement: every one either gives the right answer or one clear line.

Oracles: networkx for modularity, the closed form of a complete graph for constant features, brute-force
label shuffles (same RNG procedure as documented in :mod:`layermod.analysis.curve`) for the null.
"""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import Dataset, IterableDataset

import layermod as lm
from assertions import assert_one_line
from layermod.data.arrays import as_dataset, gather
from layermod.extract.features import extract_features
from layermod.measure.graph import MAX_TIED_EDGES
from layermod.extract.layers import parse_layers
from models_for_tests import TinyResNet, blobs, mlp

HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def nx_modularity(adjacency, labels) -> float:
    graph = nx.from_scipy_sparse_array(sp.csr_array(adjacency))
    communities: dict = {}
    for node, label in enumerate(labels):
        communities.setdefault(label, set()).add(node)
    return nx.community.modularity(graph, list(communities.values()), weight="weight")


def no_structure_q(labels) -> float:
    """Q of a complete graph with equal weights: sum_c n_c (n_c - 1) / (N (N - 1)) - sum_c (n_c / N)^2."""
    _, counts = np.unique(labels, return_counts=True)
    n = counts.sum()
    return float((counts * (counts - 1)).sum() / (n * (n - 1)) - ((counts / n) ** 2).sum())


class Exploding(nn.Module):
    """A model that must not run: options are checked before any forward pass."""

    def forward(self, x):
        raise AssertionError("must not run")


def flat_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))


# --------------------------------------------------------------------- constant and duplicated features


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constant_features_give_the_no_structure_q_for_every_order(metric, dtype):
    # with the lower index winning ties, every sample pointed at samples 0..k, so Q followed their labels
    x = np.tile(np.array([[0.5, -1.0, 2.0, 3.0]]), (12, 1)).astype(dtype)
    if metric == "cosine":
        x *= np.linspace(1, 3, 12, dtype=dtype)[:, None]  # parallel rows: constant for cosine
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    rng = np.random.default_rng(0)
    for _ in range(6):
        perm = rng.permutation(12)
        a = lm.knn_graph(x[perm], k=3, metric=metric)
        assert a.nnz == 12 * 11  # complete: every other sample ties for every place
        np.testing.assert_allclose(a.data, a.data[0], rtol=1e-6)
        assert lm.modularity(a, y[perm]) == pytest.approx(no_structure_q(y), abs=1e-6)
        assert lm.modularity(a, y[perm]) == pytest.approx(nx_modularity(a, y[perm]), abs=1e-12)


def test_all_zero_features_are_refused_with_one_line_under_cosine():
    x, y = np.zeros((10, 4)), np.arange(10) % 2
    with pytest.raises(lm.GraphError) as err:
        lm.modularity(lm.knn_graph(x, k=3), y)
    assert_one_line(err, "no edge weight", "all-zero features", "measure other features")
    # euclidean: all distances 0, all tied, the complete graph
    assert lm.modularity(lm.knn_graph(x, k=3, metric="euclidean"), y) == pytest.approx(no_structure_q(y), abs=1e-12)


@HYP
@given(
    seed=st.integers(0, 2**32 - 1),
    n_base=st.integers(1, 6),
    n=st.integers(4, 30),
    zero_rows=st.integers(0, 3),
    k=st.integers(1, 6),
    metric=st.sampled_from(["cosine", "euclidean"]),
    symmetrize=st.sampled_from(["mean", "union", "mutual"]),
    weighted=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_q_is_invariant_to_permuting_samples_with_constant_and_duplicated_rows(
    seed, n_base, n, zero_rows, k, metric, symmetrize, weighted, dtype
):
    # a few distinct rows repeated (n_base = 1: constant features), some zero rows, labels at random
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_base, 5))
    x = base[rng.integers(0, n_base, size=n)]
    x[:zero_rows] = 0
    x = x.astype(dtype)
    y = rng.integers(0, 3, size=n)
    y[:3] = [0, 1, 2]
    k = min(k, n - 1)
    perm = rng.permutation(n)
    a = lm.knn_graph(x, k=k, metric=metric, symmetrize=symmetrize, weighted=weighted)
    b = lm.knn_graph(x[perm], k=k, metric=metric, symmetrize=symmetrize, weighted=weighted)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    # the graph of the permuted samples is the permuted graph ...
    np.testing.assert_allclose(b.toarray(), a.toarray()[np.ix_(perm, perm)], rtol=0, atol=tol)
    if a.nnz == 0:  # e.g. only zero rows under cosine: refused whatever the order
        with pytest.raises(lm.GraphError, match="no edge weight"):
            lm.modularity(b, y[perm])
        return
    # ... so Q does not depend on the order
    assert lm.modularity(b, y[perm]) == pytest.approx(lm.modularity(a, y), abs=tol)


@pytest.mark.parametrize("dtype, d", [(np.float64, 5), (np.float32, 512)])
def test_euclidean_duplicates_weigh_exactly_one(dtype, d):
    # constant features: every distance is 0, so the kernel's median is 0 and every weight 1 (times the share
    # k / (N - 1) of the tie); the matmul expansion |x_i|^2 - 2 x_i.x_j + |x_j|^2 leaves rounding noise instead
    # of 0 (about 6e-5 here in float32), which must not become the kernel's scale
    x = np.tile(np.random.default_rng(0).normal(size=(1, d)).astype(dtype), (6, 1))
    a = lm.knn_graph(x, k=2, metric="euclidean")
    np.testing.assert_allclose(a.toarray(), 2 / 5 * (np.ones((6, 6)) - np.eye(6)), rtol=0, atol=1e-15)


def test_too_many_ties_are_refused_before_a_dense_graph_is_built():
    n = int(np.sqrt(MAX_TIED_EDGES)) + 100  # constant features: n (n - 1) tied edges, past the limit
    with pytest.raises(lm.GraphError) as err:
        lm.knn_graph(np.ones((n, 3), dtype=np.float32), k=3, block_size=64)
    assert_one_line(err, "tie", "constant or heavily duplicated features", "fewer samples or another layer")


def test_a_constant_layer_in_a_curve_has_a_finite_z_near_zero():
    class Constant(nn.Module):
        def forward(self, x):
            return torch.ones(len(x), 6)

    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), Constant())
    x, y = blobs()
    curve = lm.modularity_curve(model, (x, y), layers=["1", "2"], n_per_class=10, repeats=2, null_permutations=5)
    assert curve.values[:, 1] == pytest.approx(no_structure_q(np.repeat(np.arange(4), 10)), abs=1e-6)
    assert np.all(np.isfinite(curve.z)) and abs(curve.z[1]) < 1 and curve.z[0] > 3

    def refuse(constant):
        raise AssertionError(f"{constant} in curve.json")

    data = json.loads(curve.to_json(), parse_constant=refuse)
    assert all(isinstance(v, float) for key in ("null_mean", "null_std", "z") for v in data[key])


# --------------------------------------------------------------------------------- numbers in the wrong form


def test_complex_features_are_refused():
    with pytest.raises(lm.FeatureError) as err:
        lm.knn_graph(np.ones((6, 3)) + 1j, k=2)
    assert_one_line(err, "complex", "real values")
    with pytest.raises(lm.FeatureError, match="complex"):
        lm.knn_graph(torch.randn(6, 3, dtype=torch.complex64), k=2)


def test_complex_inputs_and_adjacency_are_refused():
    x, y = blobs()
    with pytest.raises(lm.DatasetError) as err:
        lm.modularity_curve(Exploding(), (x.to(torch.complex64), y), n_per_class=5, repeats=1)
    assert_one_line(err, "inputs X are complex")
    with pytest.raises(lm.GraphError, match="complex weights"):
        lm.modularity(np.ones((3, 3)) - np.eye(3) + 0j, [0, 0, 1])


def test_non_numeric_features_are_refused():
    with pytest.raises(lm.FeatureError) as err:
        lm.knn_graph(np.array([["a", "b"], ["c", "d"], ["e", "f"]]), k=1)
    assert_one_line(err, "cannot read features as numbers", "numeric array")


def test_tensors_that_require_grad_are_detached():
    x, y = blobs()
    feats = x.flatten(1).clone().requires_grad_()
    a = lm.knn_graph(feats, k=3)
    assert (a != lm.knn_graph(feats.detach(), k=3)).nnz == 0
    assert lm.modularity(torch.from_numpy(a.toarray()).requires_grad_(), y) == pytest.approx(lm.modularity(a, y))
    model = flat_model()
    curve = lm.modularity_curve(model, (x.clone().requires_grad_(), y), n_per_class=10, repeats=1)
    np.testing.assert_array_equal(curve.values, lm.modularity_curve(model, (x, y), n_per_class=10, repeats=1).values)


def test_small_sparse_features_are_made_dense():
    x, y = blobs()
    dense = np.maximum(x.flatten(1).numpy(), 0)
    expected = lm.knn_graph(dense, k=3)
    for sparse in (sp.csr_array(dense), sp.coo_matrix(dense), torch.from_numpy(dense).to_sparse()):
        assert np.abs((lm.knn_graph(sparse, k=3) - expected).data).max(initial=0) < 1e-7
    model = flat_model()
    curve = lm.modularity_curve(model, (sp.csr_array(x.flatten(1).numpy()), y), layers=["1"], n_per_class=10,
                                repeats=1)
    np.testing.assert_allclose(curve.values, lm.modularity_curve(model, (x, y), layers=["1"], n_per_class=10,
                                                                 repeats=1).values, atol=1e-12)


def test_large_sparse_features_are_refused_without_densifying():
    huge = sp.csr_array((2**14, 2**13), dtype=np.float32)  # 2^27 values when dense
    with pytest.raises(lm.FeatureError) as err:
        lm.knn_graph(huge, k=3)
    assert_one_line(err, "sparse", "(16384, 8192)", "pass a dense array")


# ------------------------------------------------------------------------------------ parameters out of range


@pytest.mark.parametrize("resolution", [float("nan"), float("inf"), -float("inf"), -1.0, "1", True, None])
def test_bad_resolution_is_refused(resolution):
    a, y = np.ones((4, 4)) - np.eye(4), [0, 0, 1, 1]
    with pytest.raises(lm.GraphError) as err:
        lm.modularity(a, y, resolution=resolution)
    assert_one_line(err, "resolution=", ">= 0")
    with pytest.raises(lm.GraphError, match="resolution="):
        lm.permutation_null(a, y, permutations=3, resolution=resolution)
    x, labels = blobs()
    with pytest.raises(lm.GraphError, match="resolution="):
        lm.modularity_curve(Exploding(), (x, labels), n_per_class=5, repeats=1, resolution=resolution)


def test_resolution_zero_is_the_fraction_of_weight_inside_classes():
    a = np.array([[0, 1, 1, 0], [1, 0, 0, 0], [1, 0, 0, 1], [0, 0, 1, 0]], dtype=float)
    assert lm.modularity(a, [0, 0, 1, 1], resolution=0) == pytest.approx(2 / 3)  # 2 of the 3 edges


@pytest.mark.parametrize("options, error, fragments", [
    ({"repeats": 10**9}, lm.LabelError, ["repeats=1000000000 is more than", "lower repeats"]),
    ({"n_per_class": 10**9}, lm.LabelError, ["n_per_class=1000000000 is more than", "lower n_per_class"]),
    ({"n_per_class": 2**13, "repeats": 2**13}, lm.LabelError, ["134,217,728 sample indices", "lower repeats"]),
    ({"null_permutations": 10**9}, lm.GraphError, ["null_permutations=1000000000 is more than"]),
    ({"repeats": 2**14, "null_permutations": 2**14}, lm.GraphError, ["268,435,456 Q values", "lower"]),
    ({"sketch_dim": 10**9}, lm.GraphError, ["sketch_dim=1000000000 is more than 16,384"]),
    ({"sketch_dim": 16000, "max_bytes": 2**20}, lm.GraphError, ["sketch_dim=16000 for 20 samples", "max_bytes="]),
    ({"resolution": 1e308}, lm.GraphError, ["resolution=1e+308", "<= 10000"]),
])
def test_options_asking_for_more_than_can_be_held_are_refused_before_any_forward_pass(options, error, fragments):
    """Each bound is derived from what the option allocates; the message names the option and what to lower."""
    x, y = blobs()
    with pytest.raises(error) as err:
        lm.modularity_curve(Exploding(), (x, y), **{"n_per_class": 5, "repeats": 1, **options})
    assert_one_line(err, *fragments)


def test_a_null_too_large_for_the_layers_chosen_is_refused_before_the_features():
    x, y = blobs()
    with pytest.raises(lm.GraphError) as err:  # 2**27 Q values for one layer fit, for two they do not
        lm.modularity_curve(flat_model(), (x, y), layers=["1", "3"], n_per_class=5, repeats=2**14,
                            null_permutations=2**13)
    assert_one_line(err, "and 2 layer(s) are 268,435,456 Q values")


def test_sketches_and_resolutions_beyond_their_bounds_are_refused_by_the_graph_functions():
    a, y = np.ones((4, 4)) - np.eye(4), [0, 0, 1, 1]
    with pytest.raises(lm.GraphError, match="<= 10000"):
        lm.modularity(a, y, resolution=1e308)
    assert lm.modularity(a, y, resolution=1e4) == pytest.approx(1 / 3 - 1e4 / 2)
    with pytest.raises(lm.GraphError, match="sketch_dim=1000000000 is more than"):
        lm.knn_graph(np.random.default_rng(0).normal(size=(10, 4)), k=3, sketch_dim=10**9)


def test_a_model_on_a_device_without_data_is_refused_before_any_forward_pass():
    x, y = blobs()
    with pytest.raises(lm.DeviceError) as err:
        lm.modularity_curve(flat_model().to("meta"), (x, y), n_per_class=5, repeats=1)
    assert_one_line(err, "cannot use the model's device 'meta'", "this machine has cpu")


@pytest.mark.parametrize("labels, shown", [([0, 0, np.nan, np.nan], "labels[2] is nan"),
                                           (np.array(["a", None, "b", "b"], dtype=object), "labels[1] is None"),
                                           (np.array([0, 0, 1, float("nan")], dtype=object), "labels[3] is nan")])
def test_missing_labels_are_refused_as_the_curve_refuses_them_not_made_one_class(labels, shown):
    a = np.ones((4, 4)) - np.eye(4)
    with pytest.raises(lm.LabelError) as err:
        lm.modularity(a, labels)
    assert_one_line(err, shown, "give every sample a class")
    with pytest.raises(lm.LabelError):
        lm.permutation_null(a, labels, permutations=3)
    with pytest.raises(lm.LabelError):
        lm.modularity_curve(Exploding(), (torch.zeros(4, 2), labels))


def test_labels_of_mixed_kinds_are_refused_in_one_line():
    with pytest.raises(lm.LabelError) as err:
        lm.modularity(np.ones((3, 3)) - np.eye(3), np.array([1, "a", None], dtype=object))
    assert_one_line(err, "labels[2] is None")
    with pytest.raises(lm.LabelError) as err:
        lm.modularity(np.ones((3, 3)) - np.eye(3), np.array([1, "a", 2.5], dtype=object))
    assert_one_line(err, "cannot be compared")


@pytest.mark.parametrize("permutations", [-1, -20, 1.5, "3", True])
def test_bad_permutation_counts_are_refused(permutations):
    a, y = np.ones((4, 4)) - np.eye(4), [0, 0, 1, 1]
    with pytest.raises(lm.GraphError) as err:
        lm.permutation_null(a, y, permutations=permutations)
    assert_one_line(err, "permutations=", "integer >= 0")


@pytest.mark.parametrize("null", [1, -1, 2.0])
def test_a_null_without_spread_is_refused_before_any_forward_pass(null):
    x, y = blobs()
    with pytest.raises(lm.GraphError) as err:
        lm.modularity_curve(Exploding(), (x, y), n_per_class=5, repeats=1, null_permutations=null)
    assert_one_line(err, "null_permutations=")
    if null == 1:
        assert "at least 2" in str(err.value)


def test_two_permutations_give_a_finite_z():
    x, y = blobs()
    curve = lm.modularity_curve(flat_model(), (x, y), n_per_class=10, repeats=2, null_permutations=2)
    assert np.all(np.isfinite(curve.z)) and np.all(np.isfinite(curve.null_std))


@pytest.mark.parametrize("metric, symmetrize", [("cosinus", "mean"), ("cosine", "both")])
def test_graph_options_are_checked_before_any_forward_pass(metric, symmetrize):
    x, y = blobs()
    with pytest.raises(lm.GraphError, match="unknown"):
        lm.modularity_curve(Exploding(), (x, y), n_per_class=5, repeats=1, metric=metric, symmetrize=symmetrize)


def test_negative_seeds_are_accepted_and_recorded_as_given():
    x, y = blobs()
    draws = lm.balanced_draws(y, n_per_class=5, repeats=2, seed=-1)
    for got, want in zip(draws, lm.balanced_draws(y, n_per_class=5, repeats=2, seed=2**128 - 1)):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(draws[0], lm.balanced_draws(y, n_per_class=5, repeats=2, seed=1)[0])
    a = lm.knn_graph(x.flatten(1), k=3)
    np.testing.assert_array_equal(lm.permutation_null(a, y, permutations=5, seed=-7),
                                  lm.permutation_null(a, y, permutations=5, seed=-7))
    curve = lm.modularity_curve(flat_model(), (x, y), n_per_class=5, repeats=2, seed=-1, null_permutations=3)
    assert curve.config["seed"] == -1
    again = lm.modularity_curve(flat_model(), (x, y), n_per_class=5, repeats=2, seed=-1, null_permutations=3)
    assert again.to_json() == curve.to_json()


def test_seeds_beyond_torchs_range_are_hashed_into_it_and_seeds_within_it_kept():
    from layermod.coerce import torch_seed

    for seed in (0, -1, 2**64 - 1, -2**63):
        assert torch_seed(seed, lm.LabelError) == seed
    for seed in (2**64, -2**63 - 1, 10**30, -10**40):
        value = torch_seed(seed, lm.LabelError)
        assert 0 <= value < 2**64 and value == torch_seed(seed, lm.LabelError)
        torch.Generator().manual_seed(value)
    assert torch_seed(10**30, lm.LabelError) != torch_seed(10**30 + 1, lm.LabelError)
    x, y = blobs()
    curve = lm.modularity_curve(flat_model(), (x, y), n_per_class=5, repeats=2, seed=10**30, null_permutations=2)
    assert curve.config["seed"] == 10**30
    assert lm.modularity_curve(flat_model(), (x, y), n_per_class=5, repeats=2, seed=10**30,
                               null_permutations=2).to_json() == curve.to_json()


@pytest.mark.parametrize("seed", [1.5, "0", None, True])
def test_seeds_that_are_not_integers_are_refused(seed):
    x, y = blobs()
    with pytest.raises(lm.LabelError) as err:
        lm.balanced_draws(y, n_per_class=5, repeats=2, seed=seed)
    assert_one_line(err, "seed=", "integer")
    with pytest.raises(lm.GraphError, match="seed="):
        lm.permutation_null(np.ones((4, 4)) - np.eye(4), [0, 0, 1, 1], permutations=3, seed=seed)
    with pytest.raises(lm.LabelError, match="seed="):
        lm.modularity_curve(Exploding(), (x, y), n_per_class=5, repeats=1, seed=seed)


# --------------------------------------------------------------------------------------- models and datasets


class FixedBatch(nn.Module):
    """Works only on batches of 2 (what tracing uses) or 4: the short last batch breaks it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        if len(x) not in (2, 4):
            raise RuntimeError(f"shape '[4, 16]' is invalid for input of size {x.numel()}")
        return self.fc(x.flatten(1))


def test_a_model_that_fails_on_one_batch_is_a_model_error_naming_the_batch():
    x = torch.randn(11, 1, 4, 4)
    with pytest.raises(lm.ModelError) as err:
        extract_features(FixedBatch(), x, layers=["fc"], batch_size=4)
    assert_one_line(err, "batch 3 of 3", "samples 8..10", "shape (3, 1, 4, 4)", "'fc'", "is invalid", "batch_size")
    x, y = blobs(n_per_class=10)
    with pytest.raises(lm.ModelError, match=r"fails on batch 1 of 2 \(samples 0..15"):
        lm.modularity_curve(FixedBatch(), (x, y), layers=["fc"], n_per_class=5, repeats=1, batch_size=16)


def test_a_model_that_asserts_its_batch_size_is_a_model_error():
    class Asserting(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            assert len(x) <= 2, "at most 2 samples"
            return self.fc(x.flatten(1))

    with pytest.raises(lm.ModelError) as err:
        extract_features(Asserting(), torch.randn(5, 1, 4, 4), layers=["fc"], batch_size=3)
    assert_one_line(err, "batch 1 of 2", "at most 2 samples")


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_bad_batch_size_is_refused(batch_size):
    with pytest.raises(lm.FeatureError, match="batch_size="):
        extract_features(mlp(), torch.randn(4, 1, 4, 4), layers=["1"], batch_size=batch_size)


class OnlyGetItem(Dataset):
    def __getitem__(self, i):
        return torch.zeros(1, 4, 4), i % 2


class Stream(IterableDataset):
    def __iter__(self):
        return iter([(torch.zeros(1, 4, 4), 0), (torch.ones(1, 4, 4), 1)])

    def __len__(self):
        return 2


@pytest.mark.parametrize("dataset, kind", [(OnlyGetItem(), "without __len__"), (Stream(), "an IterableDataset")])
def test_datasets_without_index_access_are_refused(dataset, kind):
    with pytest.raises(lm.DatasetError) as err:
        lm.modularity_curve(Exploding(), dataset, n_per_class=1, repeats=1)
    assert_one_line(err, kind, "map-style Dataset with __len__")
    with pytest.raises(lm.DatasetError, match="map-style"):
        as_dataset(dataset)


def test_dataset_items_of_different_shapes_are_refused():
    class Ragged(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.zeros(1, 4 + i % 2, 4), i % 2

    with pytest.raises(lm.DatasetError) as err:
        gather(Ragged(), [0, 1, 2])
    assert_one_line(err, "different shapes", "(1, 4, 4)", "(1, 5, 4)", "one shape")


# ----------------------------------------------------------------------------------------------- layers


def test_parse_layers_splits_commas_and_reads_whole_numbers_as_indices():
    assert parse_layers("features.0,features.3") == ["features.0", "features.3"]
    assert parse_layers(" 0 , -1 ,") == [0, -1]
    assert parse_layers("auto") == ["auto"]
    assert parse_layers("layer[1,2].0,conv1") == ["layer[1,2].0", "conv1"]
    assert parse_layers("") == []


def test_a_comma_separated_string_selects_several_layers():
    model = TinyResNet(num_classes=4)
    calls = lm.trace_calls(model, torch.randn(2, 1, 4, 4))
    select = lambda spec: lm.select_layers(model, spec, calls)  # noqa: E731
    assert select("conv1,layer2.1") == ["conv1", "layer2.1"]
    assert select("0,-1") == ["conv1", "layer2.1"]  # whole numbers index the auto points, as in the CLI
    assert select("layer[1,2].0") == ["layer1.0", "layer2.0"]
    assert select(np.int64(-1)) == ["layer2.1"]
    with pytest.raises(lm.LayerError, match="no layers selected"):
        select(" , ")
    with pytest.raises(lm.LayerError, match="cannot read layer choice 1.5"):
        select(1.5)
    x, y = blobs()
    curve = lm.modularity_curve(model, (x, y), layers="layer1.0,layer2.0", n_per_class=5, repeats=1)
    assert curve.layers == ["layer1.0", "layer2.0"] and curve.config["layers"] == "layer1.0,layer2.0"


def test_in_a_list_a_numeric_string_still_names_a_module():
    model = mlp()
    calls = lm.trace_calls(model, torch.randn(2, 1, 4, 4))
    assert lm.select_layers(model, ["0", 0], calls) == ["0", "1"]  # module "0" (Flatten), then auto point 0


# ------------------------------------------------------------------------------------------ reproducibility


class Noisy(nn.Module):
    """Draws torch random numbers even in eval mode."""

    def forward(self, x):
        return x + 0.5 * torch.randn_like(x)


def noisy_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 16), Noisy(), nn.Linear(16, 4))


def test_the_same_seed_gives_a_byte_identical_curve_and_leaves_torchs_generator_alone():
    x, y = blobs()
    model = noisy_model()
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    runs = [lm.modularity_curve(model, (x, y), layers=["1", "2"], n_per_class=10, repeats=3, seed=4,
                                null_permutations=6).to_json() for _ in range(2)]
    assert runs[0] == runs[1]
    assert torch.equal(torch.random.get_rng_state(), state)
    other = lm.modularity_curve(model, (x, y), layers=["1", "2"], n_per_class=10, repeats=3, seed=5,
                                null_permutations=6)
    assert other.to_json() != runs[0]
    assert json.loads(runs[0])["config"]["seed"] == 4


def test_null_and_z_match_brute_force_label_shuffles():
    # the documented procedure: draw r's shuffles are rng.permutation(labels) of
    # default_rng(SeedSequence(seed).spawn(repeats + 1)[r]), one after another, the same for every layer;
    # Q of each with networkx; z = mean over draws of (Q - null mean) / null std (numpy's std, ddof 0)
    x, y = blobs(n_per_class=20, spread=1.5)
    model = flat_model()
    seed, repeats, shuffles, k = 11, 3, 7, 3
    curve = lm.modularity_curve(model, (x, y), layers=["1", "3"], k=k, n_per_class=5, repeats=repeats, seed=seed,
                                null_permutations=shuffles)
    draws = lm.balanced_draws(y, n_per_class=5, repeats=repeats, seed=seed)
    features = extract_features(model, x, layers=curve.layers)
    streams = np.random.SeedSequence(seed).spawn(repeats + 1)
    q = np.zeros((repeats, 2))
    null = np.zeros((repeats, 2, shuffles))
    for r, draw in enumerate(draws):
        labels = y[draw].numpy()
        for c, name in enumerate(curve.layers):
            a = lm.knn_graph(features[name][draw], k=k)
            q[r, c] = nx_modularity(a, labels)
            rng = np.random.default_rng(streams[r])
            null[r, c] = [nx_modularity(a, rng.permutation(labels)) for _ in range(shuffles)]
    np.testing.assert_allclose(curve.values, q, rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve.null_mean, null.mean(axis=(0, 2)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve.null_std, null.std(axis=(0, 2)), rtol=0, atol=1e-12)
    z = ((q - null.mean(axis=2)) / null.std(axis=2)).mean(axis=0)
    np.testing.assert_allclose(curve.z, z, rtol=1e-9)
    assert np.all(curve.z > 2)  # separated classes: far above chance, so a halved z would be far off too
