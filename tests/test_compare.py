"""D_ij beside CKA: the same draws as the curve, one model or two, files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from layermod import LayermodError
from layermod.analysis.compare import LayerComparison, compare_layers
from layermod.analysis.curve import modularity_curve
from layermod.data.draws import balanced_draws
from layermod.extract.features import extract_features
from layermod.measure.similarity import linear_cka

LAYERS = ["1", "3", "5"]


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(1)
    y = torch.arange(3).repeat_interleave(40)
    x = torch.randn(3, 8, generator=gen)[y] + 0.8 * torch.randn(len(y), 8, generator=gen)
    return x, y


def test_one_model_curve_and_cka_on_the_same_samples(data):
    model = mlp(0).eval()
    result = compare_layers(model, data, layers=LAYERS, n_per_class=10, repeats=1, k=3)
    curve = modularity_curve(model, data, layers=LAYERS, n_per_class=10, repeats=1, k=3)
    np.testing.assert_array_equal(result.curve_a.values, curve.values)
    assert result.same_model and result.cka.shape == (3, 3)
    draw = balanced_draws(data[1], n_per_class=10, repeats=1, seed=0)[0]
    features = extract_features(model, data[0][draw], layers=LAYERS)
    for i, a in enumerate(LAYERS):
        for j, b in enumerate(LAYERS):
            assert result.cka[i, j] == pytest.approx(linear_cka(features[a], features[b]), rel=1e-9)
    np.testing.assert_allclose(result.d, np.abs(curve.mean[:, None] - curve.mean[None, :]))


def test_two_models_rows_against_columns(data):
    a, b = mlp(0).eval(), mlp(1).eval()
    result = compare_layers(a, data, model_b=b, layers=LAYERS, layers_b=["3", "5"], n_per_class=10, repeats=3, k=3,
                            names=("a.safetensors", "b.safetensors"))
    assert result.cka.shape == (3, 2) and result.d.shape == (3, 2) and not result.same_model
    other = modularity_curve(b, data, layers=["3", "5"], n_per_class=10, repeats=3, k=3)
    np.testing.assert_array_equal(result.curve_b.values, other.values)
    assert np.all((result.cka > 0) & (result.cka <= 1 + 1e-12))


def test_files_round_trip(tmp_path, data):
    a, b = mlp(0).eval(), mlp(1).eval()
    result = compare_layers(a, data, model_b=b, layers=LAYERS, n_per_class=10, repeats=2, k=3, names=("a", "b"))
    result.save(tmp_path)
    loaded = LayerComparison.load(tmp_path)
    np.testing.assert_array_equal(loaded.cka, result.cka)
    np.testing.assert_array_equal(loaded.d, result.d)
    assert loaded.names == ("a", "b") and loaded.curve_b.layers == LAYERS
    cka_rows = (tmp_path / "cka.csv").read_text().splitlines()
    assert cka_rows[0] == "layer,1,3,5" and len(cka_rows) == 4
    assert float(cka_rows[1].split(",")[1]) == result.cka[0, 0]
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"
    one = compare_layers(a, data, layers=LAYERS, n_per_class=10, repeats=2, k=3)
    one.save(tmp_path / "one")
    assert "curve_b" not in json.loads((tmp_path / "one" / "compare.json").read_text())
    assert LayerComparison.load(tmp_path / "one").same_model
    (tmp_path / "compare.json").write_text(json.dumps({**json.loads((tmp_path / "compare.json").read_text()),
                                                      "cka": [[1.0]]}))
    with pytest.raises(LayermodError, match="cka has shape"):
        LayerComparison.load(tmp_path)
