"""Result files that cannot be, and names that look like markup: the loaders refuse the first in one line naming
the file, the report leaves them out and still shows every good run, and figures draw names literally."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from assertions import assert_one_line
from limits import MiB, memory_limit

from layermod.io import files as fileio
from layermod.adversarial.curves import AdversarialCurves
from layermod.cli import main
from layermod.analysis.compare import LayerComparison
from layermod.analysis.curve import Curve
from layermod.analysis.dynamics import Dynamics
from layermod.analysis.views import LayerView, Views
from layermod.errors import LayermodError, PlanError, ReportError
from layermod.pruning.plans import Plan
from layermod.pruning.study import PruningComparison
from layermod.analysis.curve_plot import plot_curves
from layermod.report.page import write_report
from layermod.io.validate import LABEL_CHARS, MAX_ITEMS, label, numbers, shorten

LAYERS = ["conv1", "block.2", "fc"]
CONFIG = {"k": 3, "n_classes": 4, "samples_per_draw": 8}
# $...$ with an unknown command makes mathtext refuse the whole figure; the others it would draw differently
MATH_NAMES = [r"$\frac{a}{b}$", "a_b^c", r"$\nosuchcommand{x}$", "price $5 or $6", "n" * 100]


def curve(layers=LAYERS, shift: float = 0.0) -> Curve:
    base = np.linspace(0.1, 0.6, len(layers)) + shift
    return Curve(list(layers), np.stack([base, base + 0.02]), config=CONFIG)


def curve_dict(**changes) -> dict:
    return {**json.loads(curve().to_json()), **changes}


def write(folder: Path, name: str, content: dict | str) -> Path:
    """``content`` (JSON text as is, anything else dumped) as ``folder/name``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return folder


def refused(err: pytest.ExceptionInfo, path: Path, fragment: str) -> None:
    """One short line naming the file and what is wrong with it."""
    message = assert_one_line(err, str(path), fragment)
    assert len(message) < len(str(path)) + 400, message


# --- the shared checks -----------------------------------------------------------------------------------------


def test_shorten_keeps_one_short_line():
    assert shorten("a\nb\t c") == "a b c"
    cut = shorten("x" * 200_000)
    assert len(cut) == 80 and cut.endswith("…")
    assert label("n" * 100) == "n" * (LABEL_CHARS - 1) + "…" and label("conv1") == "conv1"


def test_numbers_take_null_and_nan_as_missing_only_where_allowed():
    values = numbers([[0.5, None], [float("nan"), 1]], "v", (None, 2), missing=True)
    assert values.dtype == np.float64 and np.isnan(values[0, 1]) and np.isnan(values[1, 0]) and values[1, 1] == 1
    with pytest.raises(ValueError, match=r"v\[0\]\[1\] is missing"):
        numbers([[0.5, None]], "v", (None, 2))
    with pytest.raises(ValueError, match=r"v\[0\] is 0.5, not an integer"):
        numbers([0.5], "v", (1,), integer=True)


# --- curve.json ------------------------------------------------------------------------------------------------


CURVE_CORRUPTIONS = {
    "Q above 1": (curve_dict(values=[[3, 0.3, 0.6]]), "values[0][0] is 3, outside [-0.5, 1]"),
    "Q below -1/2": (curve_dict(values=[[-0.6, 0.3, 0.6]]), "values[0][0] is -0.6, outside [-0.5, 1]"),
    "1e308": (curve_dict(values=[[1e308, 0.3, 0.6]]), "is 1e+308, outside"),
    "a huge integer": (curve_dict(values=[[10**40, 0.3, 0.6]]), "outside [-0.5, 1]"),
    "NaN": ('{"layers": ["a", "b"], "values": [[0.1, NaN]]}', "values[0][1] is not a finite number"),
    "a null value": (curve_dict(values=[[None, 0.2, 0.3]]), "values[0][0] is missing (null)"),
    "Infinity": ('{"layers": ["a", "b"], "values": [[Infinity, 0.1]]}', "values[0][0] is not a finite number"),
    "a string as the layer list": (curve_dict(layers="abc"), "layers is a string, not a list of names"),
    "a number as a layer name": (curve_dict(layers=["conv1", 3, "fc"]), "layers[1] is 3, not a string"),
    "no layers": (curve_dict(layers=[], values=[[]]), "holds 0 names"),
    "a flat list of values": (curve_dict(values=[0.1, 0.2, 0.3]), "values is not a 2-D list of numbers"),
    "fewer values than layers": (curve_dict(values=[[0.1, 0.2]]), "values has shape (1, 2), not (n, 3)"),
    "ragged values": (curve_dict(values=[[0.1, 0.2, 0.3], [0.1]]), "not a rectangular 2-D list"),
    "no draws": (curve_dict(values=[]), "values has shape (0, 0)"),
    "a string as a value": (curve_dict(values=[["0.1", 0.2, 0.3]]), "values[0][0] is a string, not a number"),
    "true as a value": (curve_dict(values=[[True, 0.2, 0.3]]), "values[0][0] is true, not a number"),
    "a negative null std": (curve_dict(null_mean=[0, 0, 0], null_std=[-0.1, 0, 0], z=[1, 1, 1]),
                            "null_std[0] is -0.1, outside"),
    "a null of other length": (curve_dict(null_mean=[0, 0], null_std=[0, 0, 0], z=[1, 1, 1]),
                               "null_mean has shape (2,), not (3,)"),
    "z without a null": (curve_dict(z=[1, 1, 1]), "z without the rest"),
    "a 200,000-character name": (curve_dict(layers=["x" * 200_000, "b", "c"]),
                                 "layers[0] is 200,000 characters long, more than 1,000"),
    "10,001 layers": (curve_dict(layers=[f"l{i}" for i in range(MAX_ITEMS + 1)], values=[[0.1] * (MAX_ITEMS + 1)]),
                      "layers holds 10,001 names"),
    "n_classes a word": (curve_dict(config={"n_classes": "ten"}), "config.n_classes is a string, not an integer"),
    "a list, not an object": ("[1, 2]", "the curve is a list, not a JSON object"),
    "nested beyond recursion": ("[" * 100_000 + "]" * 100_000, "recursion"),
}


@pytest.mark.parametrize("content, fragment", CURVE_CORRUPTIONS.values(), ids=CURVE_CORRUPTIONS.keys())
def test_a_curve_that_cannot_be_is_refused_in_one_line(tmp_path, content, fragment):
    write(tmp_path, "curve.json", content)
    with pytest.raises(ReportError) as err:
        Curve.load(tmp_path)
    refused(err, tmp_path / "curve.json", fragment)


def test_ten_million_layers_are_refused_without_taking_the_memory(tmp_path):
    (tmp_path / "curve.json").write_text('{"values": [[0.1]], "layers": [0' + ",0" * (10**7 - 1) + "]}")
    with memory_limit(512 * MiB), pytest.raises(ReportError) as err:
        Curve.load(tmp_path)
    refused(err, tmp_path / "curve.json", "layers holds 10,000,000 names; between 1 and 10,000 can be")


def test_a_file_too_large_is_refused_unread(tmp_path, monkeypatch):
    curve().save(tmp_path)
    monkeypatch.setattr(fileio, "MAX_JSON_BYTES", 100)
    with pytest.raises(ReportError) as err:
        Curve.load(tmp_path)
    refused(err, tmp_path / "curve.json", "larger than 100 bytes")


def test_a_resolution_above_one_is_accepted(tmp_path):
    write(tmp_path, "curve.json", curve_dict(values=[[-1.2, 0.2, 0.3]], config={"resolution": 2.0}))
    assert Curve.load(tmp_path).values[0, 0] == -1.2  # Q_2 >= 1/2 - 2
    write(tmp_path, "curve.json", curve_dict(values=[[-1.6, 0.2, 0.3]], config={"resolution": 2.0}))
    with pytest.raises(ReportError, match=r"outside \[-1.5, 1\]"):
        Curve.load(tmp_path)


# --- the other results -----------------------------------------------------------------------------------------


def dynamics_dict(**changes) -> dict:
    dynamics = Dynamics.start(0, curve(), 0.1, config=CONFIG).record(1, curve(shift=0.1), 0.5)
    return {**dynamics.to_dict(), **changes}


def attack_dict(**changes) -> dict:
    summary = {"n_attacked": 10, "n_correct": 8, "n_flipped": 6, "success_rate": 0.75, "clean_accuracy": 0.8,
               "adversarial_accuracy": 0.2}
    result = AdversarialCurves(curve(), curve(shift=-0.1), {"method": "fgsm", "eps": 0.3, "norm": "linf"}, summary)
    return {**result.to_dict(), **changes}


def compare_dict(**changes) -> dict:
    one = curve()
    return {**LayerComparison(one, one, np.eye(3)).to_dict(), **changes}


def view(layer: str = "block.2", q: float = 0.2) -> LayerView:
    coords = np.arange(8.0).reshape(4, 2)
    return LayerView(layer, coords, np.array([0, 0, 1, 1]), np.array([[0, 1], [1, 2], [2, 3]]), np.ones(3), q)


def view_entry(**changes) -> dict:
    return {"layer": "block.2", "q": 0.2, "coords": [[0, 1], [2, 3], [4, 5], [6, 7]], "labels": [0, 0, 1, 1],
            "edges": [[0, 1], [1, 2], [2, 3]], "weights": [1, 1, 1], **changes}


def views_dict(*entries: dict) -> dict:
    return {"class_names": ["a", "b"], "config": {"method": "pca", "k": 3}, "layers": list(entries or [view_entry()])}


def pruning_row(**changes) -> dict:
    return {"method": "modularity", "layers_removed": ["layer2.2"], "n_removed": 1, "params": 1000, "macs": 500,
            "flops": 1000, "latency_ms": 1.5, "acc_pruned_mean": 0.5, "acc_mean": 0.9, "acc_std": 0.01,
            "accs": [0.9], **changes}


RESULT_CORRUPTIONS = {
    "dynamics: accuracy 1.5": ("dynamics.json", Dynamics.load, dynamics_dict(test_acc=[0.1, 1.5]),
                               "test_acc[1] is 1.5, outside [0, 1]"),
    "dynamics: a negative epoch": ("dynamics.json", Dynamics.load, dynamics_dict(epochs=[-1, 1]),
                                   "epochs[0] is -1, outside"),
    "dynamics: epochs going back": ("dynamics.json", Dynamics.load, dynamics_dict(epochs=[2, 1]),
                                    "epoch 1 follows epoch 2"),
    "dynamics: more epochs than values": ("dynamics.json", Dynamics.load, dynamics_dict(epochs=[0, 1, 2]),
                                          "epochs has shape (3,), not (2,)"),
    "dynamics: Q of 2": ("dynamics.json", Dynamics.load, dynamics_dict(values=[[[2, 0, 0]] * 2] * 2),
                         "values[0][0][0] is 2, outside"),
    "attack: more flipped than correct": ("attack.json", AdversarialCurves.load, attack_dict(n_flipped=9),
                                          "9 flipped of 8 correct of 10 attacked samples cannot be"),
    "attack: a rate of 2": ("attack.json", AdversarialCurves.load, attack_dict(success_rate=2),
                            "success_rate is 2, outside [0, 1]"),
    "attack: a word as eps": ("attack.json", AdversarialCurves.load,
                              attack_dict(attack={"method": "fgsm", "eps": "big", "norm": "linf"}),
                              "attack.eps is a string, not a number"),
    "attack: a clean Q of 3": ("attack.json", AdversarialCurves.load,
                               attack_dict(clean=curve_dict(values=[[3, 0.3, 0.6]])), "clean: values[0][0] is 3"),
    "attack: curves of other layers": ("attack.json", AdversarialCurves.load,
                                       attack_dict(attacked=json.loads(curve(["a", "b", "c"]).to_json())),
                                       "different layers"),
    "compare: CKA of 1.5": ("compare.json", LayerComparison.load, compare_dict(cka=[[1, 1.5, 0], [0, 1, 0], [0, 0, 1]]),
                            "cka[0][1] is 1.5, outside [-1, 1]"),
    "compare: CKA of other layers": ("compare.json", LayerComparison.load, compare_dict(cka=[[1, 0, 0]]),
                                     "cka has shape (1, 3), not (3, 3)"),
    "compare: three model names": ("compare.json", LayerComparison.load, compare_dict(names=["a", "b", "c"]),
                                   "names holds 3 names"),
    "views: Q of 3": ("embedding.json", Views.load, views_dict(view_entry(q=3)),
                      "layers[0].q is 3, outside"),
    "views: a negative label": ("embedding.json", Views.load,
                                views_dict(view_entry(labels=[-1, 0, 1, 1])),
                                "layers[0].labels[0] is -1, outside"),
    "views: an edge out of range": ("embedding.json", Views.load,
                                    views_dict(view_entry(edges=[[0, 1], [1, 2], [2, 9]])),
                                    "layers[0].edges[2][1] is 9, outside [0, 3]"),
    "views: 65 of them": ("embedding.json", Views.load, views_dict(*[view_entry()] * 65),
                          "layers is not a list of 1 to 64 views"),
    "pruning: an unknown method": ("comparison.json", PruningComparison.load, {"rows": [pruning_row(method="magic")]},
                                   "rows[0].method is 'magic', not one of"),
    "pruning: no FLOPs": ("comparison.json", PruningComparison.load, {"rows": [pruning_row(flops=0)]},
                          "rows[0].flops is 0, outside [1, 1e+15]"),
    "pruning: accuracy 1.5": ("comparison.json", PruningComparison.load, {"rows": [pruning_row(acc_mean=1.5)]},
                              "rows[0].acc_mean is 1.5, outside [0, 1]"),
    "pruning: n_removed off": ("comparison.json", PruningComparison.load, {"rows": [pruning_row(n_removed=2)]},
                               "rows[0].n_removed is 2 for 1 layers removed"),
}


@pytest.mark.parametrize("name, load, content, fragment", RESULT_CORRUPTIONS.values(), ids=RESULT_CORRUPTIONS.keys())
def test_a_result_that_cannot_be_is_refused_in_one_line(tmp_path, name, load, content, fragment):
    write(tmp_path, name, content)
    with pytest.raises(ReportError) as err:
        load(tmp_path)
    refused(err, tmp_path / name, fragment)


def test_the_good_results_load(tmp_path):
    assert Dynamics.load(write(tmp_path, "dynamics.json", dynamics_dict())).epochs == [0, 1]
    assert AdversarialCurves.load(write(tmp_path, "attack.json", attack_dict())).clean.layers == LAYERS
    assert LayerComparison.load(write(tmp_path, "compare.json", compare_dict())).same_model
    assert Views.load(write(tmp_path, "embedding.json", views_dict())).class_names == ["a", "b"]
    comparison = PruningComparison.load(write(tmp_path, "comparison.json", {"rows": [pruning_row()]}))
    assert comparison.rows[0]["flops"] == 1000


def test_a_plan_with_a_name_too_long_is_a_plan_error(tmp_path):
    write(tmp_path, "plan.json", {"remove": ["layer" * 400]})
    with pytest.raises(PlanError) as err:
        Plan.load(tmp_path)
    refused(err, tmp_path / "plan.json", "remove[0] is 2,000 characters long")


# --- the report ------------------------------------------------------------------------------------------------


HOSTILE_CURVES = {key: CURVE_CORRUPTIONS[key] for key in
                  ("Q above 1", "1e308", "a string as the layer list", "a 200,000-character name", "10,001 layers")}


@pytest.mark.parametrize("content, fragment", HOSTILE_CURVES.values(), ids=HOSTILE_CURVES.keys())
def test_a_hostile_run_is_left_out_and_the_good_run_still_shown(tmp_path, capsys, content, fragment):
    good = tmp_path / "good"
    curve().save(good)
    bad = write(tmp_path / "bad", "curve.json", content)
    out = tmp_path / "report.html"
    assert main(["report", str(good), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{bad / 'curve.json'}: unreadable" in err[0] and fragment in err[0], err
    assert len(err[0]) < 1000
    text = out.read_text(encoding="utf-8")
    assert all(f"<td>{name}</td>" in text for name in LAYERS)  # the good run's table
    contents = json.loads(text.split('id="data-contents">')[1].split("</script>")[0])
    assert [run["shown"] for run in contents["runs"]] == [["curve.json"], []]
    assert len(contents["left_out"]) == 1 and str(bad / "curve.json") in contents["left_out"][0]


def test_bad_items_of_a_run_are_left_out_whole(tmp_path):
    run = tmp_path / "run"
    curve().save(run)
    write(run, "eval.json", {"accuracy": 2.0, "correct": 5, "n": 10})
    write(run, "attack.json", attack_dict(n_flipped=9))
    write(run, "plan.json", {"method": "modularity", "remove": ["block.2"]})
    problems = write_report([run], tmp_path / "r.html")
    assert len(problems) == 2 and "attack.json: unreadable" in problems[0] and "eval.json: unreadable" in problems[1]
    assert "accuracy is 2.0, outside [0, 1]" in problems[1]
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<h3>Modularity curve</h3>" in text and "<h3>Pruning plan</h3>" in text
    assert "<h3>Evaluation</h3>" not in text and "<h3>Clean vs" not in text


def test_an_item_that_fails_while_drawn_leaves_nothing_half_shown(tmp_path, monkeypatch):
    run = tmp_path / "run"
    curve().save(run)
    write(run, "dynamics.json", dynamics_dict())

    def out_of_memory(self, *, ax=None):
        raise MemoryError("std::bad_alloc")

    monkeypatch.setattr(Dynamics, "plot", out_of_memory)
    problems = write_report([run], tmp_path / "r.html")
    assert problems == [f"{run / 'dynamics.json'}: unreadable (MemoryError: std::bad_alloc)"]
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<h3>Modularity curve</h3>" in text and "<h3>Training dynamics</h3>" not in text


def test_names_that_look_like_mathtext_or_are_long_are_shown_literally(tmp_path):
    names = [*MATH_NAMES, "m" * 1000]
    run = tmp_path / "run"
    curve(names).save(run)
    write(run, "dynamics.json", {**Dynamics.start(0, curve(names), 0.5, config=CONFIG).to_dict()})
    assert write_report([run], tmp_path / "r.html") == []
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<td>$\\frac{a}{b}$</td>" in text and f"<td>{'m' * 1000}</td>" in text  # tables keep names whole
    assert "m" * 1000 in (run / "curve.csv").read_text()


# --- figures ---------------------------------------------------------------------------------------------------


def literal(texts) -> list[str]:
    """The strings of matplotlib Text objects, each checked to be drawn without mathtext."""
    assert not any(t.get_parse_math() for t in texts)
    return [t.get_text() for t in texts]


SHOWN = [label(name) for name in MATH_NAMES]


def test_curve_figures_draw_layer_names_literally(tmp_path):
    ax = plot_curves([curve(MATH_NAMES)], path=tmp_path / "curve.png", labels=[r"$\nosuchcommand$"])
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert literal(ax.get_xticklabels()) == SHOWN and SHOWN[-1].endswith("…")
    assert literal(ax.get_legend().get_texts())[0] == r"$\nosuchcommand$"
    summary = {"n_attacked": 4, "n_correct": 4, "n_flipped": 2, "success_rate": 0.5, "clean_accuracy": 1.0,
               "adversarial_accuracy": 0.5}
    pair = AdversarialCurves(curve(MATH_NAMES), curve(MATH_NAMES, -0.1), {"method": "torchattacks:$\\x$"}, summary)
    ax = pair.plot()
    assert literal(ax.get_xticklabels()) == SHOWN and "$\\x$" in ax.get_title()


def test_dynamics_heat_maps_and_views_draw_names_literally(tmp_path):
    figure = Dynamics.start(0, curve(MATH_NAMES), 0.5, config=CONFIG).figure()
    assert literal(figure.axes[0].get_legend().get_texts()) == SHOWN
    comparison = LayerComparison(curve(MATH_NAMES), curve(MATH_NAMES[:2]), np.zeros((5, 2)), names=("$a$", "$\\b$"))
    figure = comparison.figure()
    assert literal(figure.axes[0].get_yticklabels()) == SHOWN
    assert literal([figure.axes[0].xaxis.label]) == ["$\\b$"]
    views = [view(name) for name in MATH_NAMES[:3]]
    Views(views, class_names=["$\\c$", "a_b"]).save(tmp_path / "views")
    figure = Views(views, class_names=["$\\c$", "a_b"]).figure()
    assert [title.split("\n")[0] for title in literal([ax.title for ax in figure.axes[:3]])] == SHOWN[:3]
    assert literal(figure.axes[2].get_legend().get_texts()) == ["$\\c$", "a_b"]
    assert Views.load(tmp_path / "views").views[0].layer == MATH_NAMES[0]


# --- fuzz: every result file with any JSON value put anywhere ----------------------------------------------------


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
GOOD_RESULTS = {
    "curve.json": (Curve.load, curve_dict()),
    "dynamics.json": (Dynamics.load, dynamics_dict()),
    "attack.json": (AdversarialCurves.load, attack_dict()),
    "compare.json": (LayerComparison.load, compare_dict()),
    "embedding.json": (Views.load, views_dict()),
    "comparison.json": (PruningComparison.load, {"rows": [pruning_row()]}),
    "plan.json": (Plan.load, {"method": "modularity", "remove": ["block.2"]}),
}


def replace_somewhere(document: object, data: st.DataObject) -> object:
    """``document`` with one value, at a path drawn by ``data``, replaced by any JSON value (or the whole of it)."""
    if isinstance(document, (dict, list)) and document and data.draw(st.booleans()):
        keys = sorted(document) if isinstance(document, dict) else range(len(document))
        key = data.draw(st.sampled_from(list(keys)))
        copy = dict(document) if isinstance(document, dict) else list(document)
        copy[key] = replace_somewhere(document[key], data)
        return copy
    return data.draw(JSON_VALUES)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(GOOD_RESULTS)), data=st.data())
def test_fuzz_result_files_load_or_are_refused_in_one_line(tmp_path, name, data):
    load, good = GOOD_RESULTS[name]
    text = json.dumps(replace_somewhere(good, data))  # NaN and Infinity tokens included, as Python writes them
    folder = tmp_path / name.removesuffix(".json")
    write(folder, name, text)
    try:
        load(folder)
    except LayermodError as err:
        assert "\n" not in str(err) and len(str(err)) < 1000, str(err)


@pytest.mark.slow
@settings(max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_a_report_never_fails_on_one_bad_file(tmp_path, data):
    run = tmp_path / f"run{data.draw(st.integers(0, 10**9))}"
    for name, (_, good) in GOOD_RESULTS.items():
        write(run, name, good)
    name = data.draw(st.sampled_from(sorted(GOOD_RESULTS)))
    write(run, name, json.dumps(replace_somewhere(GOOD_RESULTS[name][1], data)))
    problems = write_report([run], run / "report.html")
    assert len(problems) <= 1
    assert "<h3>Modularity curve</h3>" in (run / "report.html").read_text(encoding="utf-8") or name == "curve.json"
