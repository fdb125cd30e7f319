"""GraphConfig and DrawConfig: every default written once, checked on construction (one-line errors), JSON round
trips, and measurements that take them or their fields as keywords alike."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch
from torch import nn

import layermod as lm
from layermod.measure.config import graph_config, measure_configs


def blobs(per_class: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """3 noisy classes of 16 values."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), per_class)
    x = rng.normal(size=(3, 16))[y] * 2 + rng.normal(size=(len(y), 16))
    return torch.tensor(x, dtype=torch.float32), torch.from_numpy(y)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


class Exploding(nn.Module):
    def forward(self, x):
        raise AssertionError("must not run")


def one_line(err: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(err.value)
    assert "\n" not in message and all(fragment in message for fragment in fragments), message


def test_the_defaults_are_the_papers_and_the_functions_take_them_from_the_configs():
    assert lm.GraphConfig().to_dict() == {"k": 3, "metric": "cosine", "symmetrize": "mean", "weighted": True,
                                          "resolution": 1.0, "knn": "exact", "sketch_dim": None,
                                          "precision": "float32"}
    assert lm.DrawConfig().to_dict() == {"n_per_class": 50, "repeats": 5, "seed": 0, "null_permutations": 0}
    graph = inspect.signature(lm.knn_graph).parameters
    assert {name: graph[name].default for name in ("k", "metric", "symmetrize", "weighted")} == {
        "k": 3, "metric": "cosine", "symmetrize": "mean", "weighted": True}
    assert inspect.signature(lm.modularity).parameters["resolution"].default == lm.GraphConfig().resolution


@pytest.mark.parametrize("config, error, fragments", [
    (lambda: lm.GraphConfig(k=0), lm.GraphError, ["k=0", ">= 1"]),
    (lambda: lm.GraphConfig(k=2.0), lm.GraphError, ["k=2.0", "integer"]),
    (lambda: lm.GraphConfig(k=True), lm.GraphError, ["k=True"]),
    (lambda: lm.GraphConfig(metric="cosinus"), lm.GraphError, ["unknown metric 'cosinus'", "'euclidean'"]),
    (lambda: lm.GraphConfig(symmetrize="both"), lm.GraphError, ["unknown symmetrize", "'mutual'"]),
    (lambda: lm.GraphConfig(weighted="yes"), lm.GraphError, ["weighted='yes'", "True or False"]),
    (lambda: lm.GraphConfig(resolution=float("nan")), lm.GraphError, ["resolution=nan", "finite"]),
    (lambda: lm.GraphConfig(resolution=-1), lm.GraphError, ["resolution=-1", ">= 0"]),
    (lambda: lm.GraphConfig(resolution="1"), lm.GraphError, ["resolution='1'"]),
    (lambda: lm.DrawConfig(null_permutations=1), lm.GraphError, ["null_permutations=1", "at least 2"]),
    (lambda: lm.DrawConfig(null_permutations=-2), lm.GraphError, ["null_permutations=-2", "at least 2"]),
    (lambda: lm.DrawConfig(seed=1.5), lm.LabelError, ["seed=1.5", "integer"]),
    (lambda: lm.DrawConfig(seed="0"), lm.LabelError, ["seed='0'"]),
    (lambda: lm.DrawConfig(n_per_class=0), lm.LabelError, ["n_per_class=0", ">= 1"]),
    (lambda: lm.DrawConfig(repeats=2.5), lm.LabelError, ["repeats=2.5"]),
])
def test_bad_values_are_refused_on_construction_in_one_line(config, error, fragments):
    with pytest.raises(error) as err:
        config()
    one_line(err, *fragments)


def test_values_are_stored_as_plain_python_numbers():
    graph = lm.GraphConfig(k=np.int64(5), weighted=np.bool_(False), resolution=np.float32(0.5))
    draws = lm.DrawConfig(n_per_class=np.int32(7), seed=-3)
    assert type(graph.k) is int and type(graph.weighted) is bool and type(graph.resolution) is float
    assert type(draws.n_per_class) is int and draws.seed == -3  # a seed is recorded as given
    assert json.dumps(graph.to_dict()) and json.dumps(draws.to_dict())


@pytest.mark.parametrize("config", [
    lm.GraphConfig(), lm.GraphConfig(k=7, metric="euclidean", symmetrize="mutual", weighted=False, resolution=0.25),
    lm.DrawConfig(), lm.DrawConfig(n_per_class=3, repeats=1, seed=-1, null_permutations=20),
])
def test_to_dict_and_from_dict_round_trip_through_json(config):
    again = type(config).from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.to_dict() == config.to_dict()


def test_from_dict_reads_a_curves_config_and_checks_it():
    config = {"k": 5, "metric": "euclidean", "n_per_class": 4, "seed": 9, "layers": "auto", "n_classes": 3}
    assert lm.GraphConfig.from_dict(config) == lm.GraphConfig(k=5, metric="euclidean")
    assert lm.DrawConfig.from_dict(config) == lm.DrawConfig(n_per_class=4, seed=9)
    with pytest.raises(lm.GraphError, match="k=-1"):
        lm.GraphConfig.from_dict({"k": -1})
    with pytest.raises(lm.LabelError, match="JSON object"):
        lm.DrawConfig.from_dict([1, 2])


def test_keywords_and_configs_make_the_same_configs_and_may_not_disagree():
    graph, draws = measure_configs(k=5, n_per_class=30, seed=2)
    assert graph == lm.GraphConfig(k=5) and draws == lm.DrawConfig(n_per_class=30, seed=2)
    assert measure_configs(graph=lm.GraphConfig(k=5), k=5) == (lm.GraphConfig(k=5), lm.DrawConfig())  # agreeing: fine
    with pytest.raises(lm.GraphError) as err:
        measure_configs(graph=lm.GraphConfig(k=5), k=4)
    one_line(err, "k=4 differs from the GraphConfig's k=5")
    with pytest.raises(lm.LabelError, match="repeats=2 differs"):
        measure_configs(draws=lm.DrawConfig(repeats=3), repeats=2)
    with pytest.raises(TypeError, match="'kk'"):
        measure_configs(kk=4)
    with pytest.raises(TypeError, match="'repeats'"):
        graph_config(repeats=2)  # a measurement without draws takes graph fields only
    with pytest.raises(lm.GraphError, match="expected a GraphConfig"):
        measure_configs(graph={"k": 3})


def test_a_curve_from_configs_equals_the_curve_from_keywords():
    x, y = blobs()
    keywords = dict(k=4, metric="euclidean", symmetrize="union", weighted=False, resolution=0.5, n_per_class=6,
                    repeats=2, seed=3, null_permutations=2)
    by_keywords = lm.modularity_curve(mlp(), (x, y), **keywords)
    graph = lm.GraphConfig(k=4, metric="euclidean", symmetrize="union", weighted=False, resolution=0.5)
    draws = lm.DrawConfig(n_per_class=6, repeats=2, seed=3, null_permutations=2)
    by_configs = lm.modularity_curve(mlp(), (x, y), graph=graph, draws=draws)
    assert by_configs.to_json() == by_keywords.to_json()
    assert {key: by_configs.config[key] for key in keywords} == keywords  # the curve's config keeps its keys
    mixed = lm.modularity_curve(mlp(), (x, y), graph=graph, n_per_class=6, repeats=2, seed=3, null_permutations=2)
    assert mixed.to_json() == by_keywords.to_json()


def test_a_conflicting_keyword_is_refused_before_any_forward_pass():
    x, y = blobs()
    with pytest.raises(lm.GraphError, match="k=5 differs"):
        lm.modularity_curve(Exploding(), (x, y), graph=lm.GraphConfig(k=3), k=5)
    with pytest.raises(TypeError, match="'neighbours'"):
        lm.modularity_curve(Exploding(), (x, y), neighbours=5)


def test_the_resolution_moves_q_as_the_formula_says():
    """Q(gamma) = e_in / 2W - gamma * sum_c (S_c / 2W)^2 is linear in gamma on the same graphs."""
    x, y = blobs()
    q = {gamma: lm.modularity_curve(mlp(), (x, y), n_per_class=6, repeats=2, resolution=gamma).values
         for gamma in (0.0, 1.0, 2.5)}
    np.testing.assert_allclose(q[2.5], q[0.0] - 2.5 * (q[0.0] - q[1.0]), rtol=0, atol=1e-12)
    assert np.all(q[0.0] > q[1.0])  # the penalty is positive: resolution 0 is the share of weight inside classes


def test_compare_attack_and_views_take_the_configs():
    x, y = blobs()
    graph, draws = lm.GraphConfig(k=4, metric="euclidean"), lm.DrawConfig(n_per_class=6, repeats=2, seed=1)
    comparison = lm.compare_layers(mlp(), (x, y), graph=graph, draws=draws)
    assert comparison.curve_a.to_json() == lm.modularity_curve(mlp(), (x, y), graph=graph, draws=draws).to_json()
    space = lm.PixelSpace(low=-10.0, high=10.0)
    pair = lm.adversarial_curves(mlp(), (x, y), attack=lm.AttackConfig(method="fgsm", eps=0.5), space=space,
                                 keep="all", graph=graph, draws=draws)
    assert lm.GraphConfig.from_dict(pair.clean.config) == graph
    assert lm.DrawConfig.from_dict(pair.attacked.config) == draws

    from layermod.analysis.views import layer_views

    [view] = layer_views(mlp(), (x, y), layers=["3"], n_per_class=6, seed=1, graph=lm.GraphConfig(k=4, resolution=0.0))
    one_draw = lm.modularity_curve(mlp(), (x, y), layers=["3"], k=4, resolution=0.0, n_per_class=6, repeats=1, seed=1)
    assert view.q == pytest.approx(one_draw.values[0, 0], abs=1e-12)
