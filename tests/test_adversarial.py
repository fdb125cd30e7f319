"""Clean vs attacked curves: same draws, the paper's filter, where the curves part, files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from layermod import AttackError
from layermod import LayermodError
from layermod.adversarial.curves import AdversarialCurves, adversarial_curves
from layermod.adversarial.attacks import AttackConfig, PixelSpace, attack
from layermod.analysis.curve import Curve, modularity_curve

LAYERS = ["1", "3", "5"]
SPACE = PixelSpace.from_normalization({"mean": [0.5], "std": [0.25]})


@pytest.fixture(scope="module")
def trained():
    """A small MLP trained on 3 classes of noisy pixel patterns (inputs normalised with mean 0.5, std 0.25)."""
    gen = torch.Generator().manual_seed(0)
    patterns = torch.rand(3, 1, 6, 6, generator=gen)
    y = torch.arange(3).repeat_interleave(120)
    pixels = (0.6 * patterns[y] + 0.4 * torch.rand(len(y), 1, 6, 6, generator=gen)).clamp(0, 1)
    x = SPACE.to_inputs(pixels)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval(), x, y


def test_curves_are_measured_on_the_same_draws_of_the_flipped_samples(trained):
    model, x, y = trained
    config = AttackConfig(method="pgd", eps=0.2, steps=10, step_size=0.05)
    result = adversarial_curves(model, (x, y), attack=config, space=SPACE, pool_per_class=120, n_per_class=10,
                                repeats=2, k=3, layers=LAYERS)
    expected = attack(model, x, y, attack=config, space=SPACE)  # a pool of the whole class is every sample, in order
    assert result.summary == expected.summary()
    keep = expected.flipped
    again_clean = modularity_curve(model, (x[keep], y[keep]), layers=LAYERS, k=3, n_per_class=10, repeats=2)
    again_attacked = modularity_curve(model, (expected.inputs[keep], y[keep]), layers=LAYERS, k=3,
                                      n_per_class=10, repeats=2)
    np.testing.assert_allclose(result.clean.values, again_clean.values)
    np.testing.assert_allclose(result.attacked.values, again_attacked.values)
    assert result.clean.config["inputs"] == "clean" and result.attacked.config["attack"]["method"] == "pgd"
    assert result.gap[-1] > 0.1  # flipped samples no longer group by their true class in the last layer


def test_keep_all_uses_every_attacked_sample_and_a_short_class_is_refused(trained):
    model, x, y = trained
    weak = AttackConfig(method="fgsm", eps=0.001)
    with pytest.raises(AttackError, match="classified correctly and then flipped.*keep='all'"):
        adversarial_curves(model, (x, y), attack=weak, space=SPACE, n_per_class=10, repeats=1, layers=["5"])
    result = adversarial_curves(model, (x, y), attack=weak, space=SPACE, keep="all", pool_per_class=20, n_per_class=20,
                                repeats=1, layers=["5"])
    assert result.summary["n_attacked"] == 60 and result.keep == "all"
    assert abs(result.gap[0]) < 0.05  # a negligible budget barely moves the features
    with pytest.raises(AttackError, match="keep"):
        adversarial_curves(model, (x, y), attack=weak, space=SPACE, keep="some")


def curves(clean_rows, attacked_rows) -> AdversarialCurves:
    layers = [f"l{i}" for i in range(len(clean_rows[0]))]
    summary = {"n_attacked": 10, "n_correct": 8, "n_flipped": 6, "success_rate": 0.75, "clean_accuracy": 0.8,
               "adversarial_accuracy": 0.2}
    return AdversarialCurves(Curve(layers, np.array(clean_rows)), Curve(layers, np.array(attacked_rows)),
                             {"method": "fgsm", "eps": 0.3, "norm": "linf"}, summary)


@pytest.mark.parametrize("clean, attacked, expected", [
    ([[0.1, 0.3, 0.5, 0.7], [0.1, 0.3, 0.5, 0.7]], [[0.1, 0.3, 0.5, 0.7], [0.1, 0.3, 0.5, 0.7]], None),
    ([[0.1, 0.3, 0.5, 0.7], [0.1, 0.3, 0.5, 0.7]], [[0.1, 0.3, 0.3, 0.2], [0.1, 0.3, 0.3, 0.2]], 2),
    ([[0.1, 0.3, 0.5, 0.7], [0.1, 0.3, 0.5, 0.7]], [[0.1, 0.1, 0.5, 0.2], [0.1, 0.1, 0.5, 0.2]], 3),  # rejoined at 2
    ([[0.1, 0.3, 0.5, 0.7], [0.1, 0.3, 0.5, 0.7]], [[0.1, 0.3, 0.3, 0.7], [0.1, 0.3, 0.3, 0.7]], None),  # last equal
    ([[0.5, 0.6], [0.5, 0.6]], [[0.2, 0.1], [0.2, 0.1]], 0),
    ([[0.5, 0.6], [0.5, 0.6]], [[0.49, 0.3], [0.51, 0.3]], 1),  # mean gap 0 at layer 0
])
def test_parting_layer(clean, attacked, expected):
    assert curves(clean, attacked).parting_index() == expected


def test_a_gap_within_the_noise_of_the_draws_does_not_count():
    noisy = curves([[0.5, 0.60], [0.5, 0.70], [0.5, 0.65]], [[0.5, 0.70], [0.5, 0.55], [0.5, 0.58]])
    assert noisy.gap[1] > 0.005 and noisy.parting_index() is None
    assert noisy.parting_index(z=0) == 1


def test_round_trip_files_and_nan_success(tmp_path):
    result = curves([[0.1, 0.5], [0.12, 0.52]], [[0.1, 0.2], [0.11, 0.21]])
    result = AdversarialCurves(result.clean, result.attacked, result.attack,
                               {**result.summary, "n_correct": 0, "n_flipped": 0, "success_rate": math.nan})
    result.save(tmp_path)
    data = json.loads((tmp_path / "attack.json").read_text())  # strict JSON: no NaN
    assert data["success_rate"] is None and data["parting_layer"] == "l1" and data["parting_index"] == 1
    loaded = AdversarialCurves.load(tmp_path)
    np.testing.assert_array_equal(loaded.attacked.values, result.attacked.values)
    lines = (tmp_path / "attack.csv").read_text().splitlines()
    assert lines[0].startswith("index,layer,clean_mean") and len(lines) == 3
    assert (tmp_path / "attack.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "attack.json").write_text('{"clean": {}}')
    with pytest.raises(LayermodError, match="cannot read attack curves"):
        AdversarialCurves.load(tmp_path)
