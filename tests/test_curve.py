import json

import numpy as np
import pytest
import torch
from torch import nn

import layermod as lm
from layermod.analysis.curve import Curve
from models_for_tests import TinyResNet, blobs


def mixing_mlp():
    """Layers that progressively scramble the input: Q falls with depth."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))


def test_curve_values_equal_the_measurement_done_by_hand():
    x, y = blobs()
    model = mixing_mlp()
    curve = lm.modularity_curve(model, (x, y), layers="auto", k=4, n_per_class=10, repeats=3, seed=5)
    assert curve.layers == ["1", "3", "5"]
    assert curve.values.shape == (3, 3)
    draws = lm.balanced_draws(y.numpy(), n_per_class=10, repeats=3, seed=5)
    feats = lm.extract_features(model, x, layers=curve.layers)
    for r, draw in enumerate(draws):
        for c, name in enumerate(curve.layers):
            expected = lm.modularity(lm.knn_graph(feats[name][draw], k=4), y[draw])
            assert curve.values[r, c] == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(curve.mean, curve.values.mean(0))
    np.testing.assert_allclose(curve.std, curve.values.std(0, ddof=1))
    np.testing.assert_allclose(curve.increments, np.diff(curve.mean, prepend=0))


def test_separated_classes_give_high_q_and_a_large_z():
    x, y = blobs(spread=0.05)
    curve = lm.modularity_curve(nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)), (x, y),
                                layers=["0"], k=3, n_per_class=20, repeats=2, null_permutations=30)
    assert curve.mean[0] > 0.7  # the ceiling for 4 balanced classes is 0.75
    assert abs(curve.null_mean[0]) < 0.1
    assert curve.z[0] > 10


def test_random_labels_give_q_near_zero_and_a_small_z():
    x, _ = blobs(n_per_class=100)
    y = torch.randint(0, 4, (len(x),), generator=torch.Generator().manual_seed(1))
    curve = lm.modularity_curve(nn.Sequential(nn.Flatten(), nn.Identity()), (x, y), layers=["0"],
                                n_per_class=40, repeats=2, null_permutations=50)
    assert abs(curve.mean[0]) < 0.08
    assert abs(curve.z[0]) < 4


def test_memory_budget_changes_passes_not_results():
    x, y = blobs()
    model = TinyResNet(num_classes=4)
    whole = lm.modularity_curve(model, (x, y), n_per_class=10, repeats=2)
    # the least budget taken: a query row, a column row and a score of the widest layer (64 values)
    split = lm.modularity_curve(model, (x, y), n_per_class=10, repeats=2, max_bytes=3 * 4 * 64)
    assert whole.layers == ["conv1", "layer1.0", "layer1.1", "layer2.0", "layer2.1"]
    np.testing.assert_array_equal(whole.values, split.values)


@pytest.mark.parametrize("budget, message", [(3 * 4 * 64 - 1, "below the 768 bytes that the smallest block"),
                                             (2**60, "more than this machine's memory")])
def test_a_budget_too_small_for_one_block_or_beyond_the_machine_is_refused_before_any_work(budget, message):
    x, y = blobs()
    model = TinyResNet(num_classes=4)
    with pytest.raises(lm.GraphError, match=message):
        lm.modularity_curve(model, (x, y), n_per_class=10, repeats=2, max_bytes=budget)


def test_eval_mode_without_gradients_and_mode_restored():
    x, y = blobs()
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.Dropout(0.5), nn.Linear(16, 4)).train()
    first = lm.modularity_curve(model, (x, y), layers=["2"], n_per_class=10, repeats=2)
    second = lm.modularity_curve(model, (x, y), layers=["2"], n_per_class=10, repeats=2)
    np.testing.assert_array_equal(first.values, second.values)  # dropout off
    assert model.training


def test_seed_decides_the_draws():
    x, y = blobs()
    model = mixing_mlp()
    a, b, c = (lm.modularity_curve(model, (x, y), n_per_class=10, repeats=2, seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)


def test_json_round_trip_keeps_everything(tmp_path):
    x, y = blobs()
    curve = lm.modularity_curve(mixing_mlp(), (x, y), n_per_class=10, repeats=2, null_permutations=5)
    curve = curve.with_config(model="mixing_mlp")
    data = json.loads(curve.to_json())
    assert {"layers", "mean", "std", "values", "config", "null_mean", "null_std", "z"} <= set(data)
    assert data["config"]["k"] == 3 and data["config"]["model"] == "mixing_mlp"
    assert data["config"]["disjoint_draws"] is True
    back = Curve.from_dict(data)
    assert back.layers == curve.layers and back.config == curve.config
    np.testing.assert_array_equal(back.values, curve.values)
    np.testing.assert_array_equal(back.z, curve.z)


def test_non_finite_values_are_written_as_null():
    curve = Curve(["a", "b"], np.array([[0.5, 0.2]]), config={}, null_mean=np.zeros(2), null_std=np.zeros(2),
                  z=np.array([np.inf, 1.0]))
    assert json.loads(curve.to_json())["z"] == [None, 1.0]


def test_save_draws_the_png_with_plot(tmp_path):
    curve = Curve(["a", "b", "c"], np.array([[0.1, 0.4, 0.5], [0.2, 0.3, 0.6]]), config={"k": 3})
    assert curve.save(tmp_path) == tmp_path
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_k_too_large_for_a_draw_fails_before_any_forward_pass():
    class Exploding(nn.Module):
        def forward(self, x):
            raise AssertionError("must not run")

    x, y = blobs()
    with pytest.raises(lm.GraphError, match="k=8 needs 1 <= k < 8 samples per draw"):
        lm.modularity_curve(Exploding(), (x, y), k=8, n_per_class=2, repeats=1)


def test_nan_features_name_the_layer():
    class NaNLayer(nn.Module):
        def forward(self, x):
            return x * float("nan")

    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), NaNLayer(), nn.Linear(8, 4))
    x, y = blobs()
    with pytest.raises(lm.FeatureError, match="layer '2': features contain NaN or Inf"):
        lm.modularity_curve(model, (x, y), layers=["1", "2"], n_per_class=10, repeats=1)


@pytest.mark.parametrize("labels, error, message", [
    (lambda y: y[:-1], lm.LabelError, "labels"),
    (lambda y: torch.zeros_like(y), lm.LabelError, "2 classes"),
    (lambda y: torch.where(y == 3, 2, y).index_fill(0, torch.tensor([0]), 3), lm.LabelError, "class 3"),
])
def test_bad_labels(labels, error, message):
    x, y = blobs()
    with pytest.raises(error, match=message):
        lm.modularity_curve(mixing_mlp(), (x, labels(y)), n_per_class=10, repeats=1)
