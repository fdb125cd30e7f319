"""The Dynamics value type: append, truncate, JSON round trip, and the figure from the JSON file alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from layermod.analysis.curve import Curve
from layermod.analysis.dynamics import Dynamics, TrackConfig, plot_dynamics
from layermod.measure.config import GraphConfig
from layermod.errors import LayermodError, TrainError

LAYERS = ["conv1", "conv2", "fc"]


def curve(shift: float, layers: list[str] = LAYERS) -> Curve:
    """(2 draws, L layers) values rising with depth and with ``shift``."""
    base = np.linspace(0.1, 0.5, len(layers)) + shift
    return Curve(layers, np.stack([base, base + 0.02]), config={"k": 3})


def dynamics() -> Dynamics:
    d = Dynamics.start(0, curve(0.0), 0.1, config={"k": 3, "n_classes": 10, "samples_per_draw": 20})
    return d.record(2, curve(0.1), 0.6).record(3, curve(0.2), None)


def test_record_mean_std_and_until():
    d = dynamics()
    assert d.epochs == [0, 2, 3] and d.values.shape == (3, 2, 3)
    assert d.mean.shape == d.std.shape == (3, 3)
    assert d.mean[1] == pytest.approx(np.linspace(0.1, 0.5, 3) + 0.11)
    assert d.std[0] == pytest.approx([0.02 / np.sqrt(2)] * 3)
    assert np.isnan(d.test_acc[2]) and d.test_acc[1] == 0.6
    early = d.until(2)
    assert early.epochs == [0, 2] and early.values.shape == (2, 2, 3) and early.test_acc.tolist() == [0.1, 0.6]
    with pytest.raises(ValueError, match="no tracked epoch"):
        d.until(-1)
    with pytest.raises(ValueError, match="2 layers"):
        d.record(4, curve(0.3, ["conv1", "fc"]), 0.7)
    with pytest.raises(ValueError, match="strictly increasing"):
        Dynamics(LAYERS, [0, 0], np.zeros((2, 1, 3)), [0.1, 0.2])


def test_json_round_trip_keeps_everything():
    d = dynamics()
    d.values[1, 0, 1] = np.nan
    data = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert set(data) == {"layers", "epochs", "values", "mean", "test_acc", "config"}
    assert data["values"][1][0][1] is None and data["test_acc"][2] is None
    assert np.array(data["mean"]).shape == (3, 3)
    back = Dynamics.from_dict(data)
    assert back.layers == d.layers and back.epochs == d.epochs and back.config == d.config
    np.testing.assert_array_equal(back.values, d.values)  # NaN where NaN
    np.testing.assert_array_equal(back.test_acc, d.test_acc)


def test_figure_is_redrawn_from_the_json_file_alone(tmp_path):
    run = tmp_path / "run"
    assert dynamics().save(run) == run and (run / "dynamics.png").read_bytes()[:4] == b"\x89PNG"
    json_path = run / "dynamics.json"
    (run / "dynamics.png").unlink()
    assert plot_dynamics(json_path) == run / "dynamics.png"
    assert (run / "dynamics.png").read_bytes()[:4] == b"\x89PNG"
    many = [f"block{i}" for i in range(20)]  # beyond the legend: a depth colour bar
    deep = Dynamics.start(0, curve(0.0, many), 0.1).record(1, curve(0.1, many), 0.5)
    deep.save(tmp_path / "deep")
    out = plot_dynamics(tmp_path / "deep", path=tmp_path / "figures" / "deep.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert Dynamics.load(tmp_path / "deep").layers == many
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary files left


def test_unreadable_file_is_one_line(tmp_path):
    (tmp_path / "dynamics.json").write_text('{"layers": ["a"]}')
    with pytest.raises(LayermodError, match="cannot read dynamics from .*'values'.*written by layermod") as info:
        plot_dynamics(tmp_path)
    assert "\n" not in str(info.value)


def test_track_config():
    track = TrackConfig(every=2)
    assert [e for e in range(6) if track.tracks(e, 5)] == [0, 2, 4, 5]
    assert TrackConfig(layers=("a", "b")).to_dict()["layers"] == ["a", "b"]
    with pytest.raises(TrainError, match="TrackConfig.every=0"):
        TrackConfig(every=0).validate()
    with pytest.raises(TrainError, match="TrackConfig.batch_size=0"):
        TrackConfig(batch_size=0).validate()
    assert TrackConfig(graph=GraphConfig(k=5)).to_dict()["graph"]["k"] == 5
