"""Every result type keeps one contract: save(path) -> Path, load(path) reads it back, plot(ax=None) -> Axes,
to_dict, to_frame (pandas) and a repr showing the table."""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import layermod as lm
from layermod.sweep.results import COLUMNS

LAYERS = ["conv1", "block2", "head"]
VALUES = np.array([[0.10, 0.30, 0.31], [0.12, 0.34, 0.33]])


def curve(shift: float = 0.0) -> lm.Curve:
    return lm.Curve(LAYERS, VALUES + shift, config={"k": 3, "n_classes": 2, "samples_per_draw": 8})


def view(name: str) -> lm.LayerView:
    coords = np.array([[0.0, 0.0], [1.0, 0.5], [0.2, 1.0], [1.0, 1.0]])
    return lm.LayerView(name, coords, np.array([0, 0, 1, 1]), np.array([[0, 1], [1, 2], [2, 3]]),
                        np.array([1.0, 0.5, 1.0]), 0.25)


def matched_row(method: str, budget: float, seed: int, acc: float) -> dict:
    removed = [] if method == "none" else ["block2"]
    return {"method": method, "match": "flops", "budget": budget, "retrain": "finetune", "seed": seed,
            "layers_removed": removed, "n_removed": len(removed), "params": 100 - 10 * len(removed),
            "flops": 1000 - 200 * len(removed), "acc_pruned": acc - 0.1, "acc": acc}


def pruning_row(method: str, removed: list[str], acc: float) -> dict:
    return {"method": method, "layers_removed": removed, "n_removed": len(removed), "params": 100 - len(removed),
            "macs": 500, "flops": 1000 - 100 * len(removed), "latency_ms": 1.5, "acc_pruned_mean": acc - 0.1,
            "acc_mean": acc, "acc_std": 0.01, "accs": [acc - 0.01, acc + 0.01]}


def sweep_rows(item: str, knn: str) -> list[dict]:
    return [{"item": item, "knn": knn, **dict.fromkeys(COLUMNS), "layer": name, "index": i, "q_mean": 0.1 * i,
             "q_std": 0.01, "status": "ok"} for i, name in enumerate(LAYERS)]


def instances() -> dict[type, object]:
    summary = {"n_attacked": 4, "n_correct": 4, "n_flipped": 2, "success_rate": 0.5, "clean_accuracy": 1.0,
               "adversarial_accuracy": 0.5}
    attack = {"method": "fgsm", "norm": "linf", "eps": 0.1}
    dynamics = lm.Dynamics.start(0, curve(), 0.5, config={"k": 3}).record(2, curve(0.05), 0.8)
    return {
        lm.Curve: curve(),
        lm.Dynamics: dynamics,
        lm.LayerComparison: lm.LayerComparison(curve(), curve(), np.eye(3), names=("model", "model"),
                                               config={"unbiased": False}),
        lm.Views: lm.Views([view(name) for name in LAYERS], class_names=["cat", "dog"], config={"method": "pca"}),
        lm.Redundancy: lm.find_redundant(curve()),
        lm.AdversarialCurves: lm.AdversarialCurves(curve(), curve(-0.05), attack, summary),
        lm.SweepTable: lm.SweepTable(["knn"], sweep_rows("a", "exact") + sweep_rows("b", "hnsw")),
        lm.PruningComparison: lm.PruningComparison([pruning_row("none", [], 0.9),
                                                    pruning_row("modularity", ["block2"], 0.88)]),
        lm.MatchedComparison: lm.MatchedComparison(
            [matched_row("none", 0.0, 0, 0.9), matched_row("modularity", 0.2, 0, 0.87),
             matched_row("random", 0.2, 0, 0.8)], {"params": 100, "flops": 1000, "macs": 500}, {"seeds": 1}),
    }


def test_every_result_type_is_exported_and_has_an_instance_here():
    assert set(lm.RESULT_TYPES) == set(instances())
    assert all(kind.__name__ in lm.__all__ and getattr(lm, kind.__name__) is kind for kind in lm.RESULT_TYPES)


@pytest.mark.parametrize("kind", lm.RESULT_TYPES, ids=lambda kind: kind.__name__)
def test_save_returns_the_path_and_load_reads_it_back(kind, tmp_path):
    result = instances()[kind]
    out = result.save(tmp_path / "run")
    assert isinstance(out, Path) and out == tmp_path / "run" and any(out.iterdir())
    back = kind.load(out)
    assert type(back) is kind and back.to_dict() == result.to_dict()


@pytest.mark.parametrize("kind", lm.RESULT_TYPES, ids=lambda kind: kind.__name__)
def test_load_refuses_a_hostile_file_in_one_line(kind, tmp_path):
    out = instances()[kind].save(tmp_path / "run")
    for written in out.iterdir():
        if written.suffix in (".json", ".csv"):
            written.write_text('{"layers": [' * 50 if written.suffix == ".json" else "item,nothing\n1,2\n")
    with pytest.raises(lm.LayermodError) as caught:
        kind.load(out)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("kind", lm.RESULT_TYPES, ids=lambda kind: kind.__name__)
def test_plot_draws_into_the_given_axes_or_a_new_one(kind):
    result = instances()[kind]
    mine = Figure().add_subplot()
    assert result.plot(ax=mine) is mine and mine.has_data()
    new = result.plot()
    assert isinstance(new, Axes) and new is not mine and new.has_data()


def test_curve_plot_draws_the_mean():
    drawn = curve().plot(ax=Figure().add_subplot())
    np.testing.assert_array_equal(drawn.get_lines()[0].get_ydata(), VALUES.mean(axis=0))


@pytest.mark.parametrize("kind", lm.RESULT_TYPES, ids=lambda kind: kind.__name__)
def test_repr_and_html_show_the_table(kind):
    result = instances()[kind]
    frame = result.to_frame()
    text, page = repr(result), result._repr_html_()
    assert text.startswith(f"{kind.__name__} ({frame.shape[0]} rows x {frame.shape[1]} columns)")
    assert f"({frame.shape[0]} rows x {frame.shape[1]} columns)" in page and "<table>" in page
    if kind not in (lm.PruningComparison, lm.MatchedComparison):  # tables of methods, not layers
        assert all(name in text and name in page for name in LAYERS)
    assert len(text.splitlines()) <= 2 + 7


def test_to_frame_holds_the_table():
    frame = curve().to_frame()
    assert frame.shape == (3, 4) and list(frame["layer"]) == LAYERS
    np.testing.assert_allclose(frame["mean"], VALUES.mean(axis=0))
    assert lm.SweepTable(["knn"], sweep_rows("a", "exact")).to_frame().shape == (3, 2 + len(COLUMNS))


def test_repr_shortens_a_long_table():
    long = lm.Curve([f"layer{i}" for i in range(40)], np.linspace(0, 0.5, 40)[None], config={})
    text = repr(long)
    assert "layer0" in text and "layer39" in text and "layer20" not in text and "..." in text
    assert "40 rows x 4 columns" in text


def test_to_frame_without_pandas_names_the_install(monkeypatch):
    real = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name == "pandas":
            raise ImportError("no pandas")
        return real(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "pandas", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(lm.DependencyError, match="pip install pandas") as caught:
        curve().to_frame()
    assert "\n" not in str(caught.value)
