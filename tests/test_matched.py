"""Pruning at matched budgets: unit costs, plans at a share of FLOPs or parameters, the new scores (CKA,
re-initialisation), paired statistics, and the study with its files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ttest_rel
from torch import nn

from layermod import models
from layermod.analysis.curve import modularity_curve
from layermod.analysis.redundancy import find_redundant
from layermod.data.arrays import ArrayDataset
from layermod.errors import LayermodError, PlanError, ReportError
from layermod.measure.stats import paired_test
from layermod.pruning.budgets import matched_comparison, plan_at_budget
from layermod.pruning.pareto import MatchedComparison
from layermod.pruning.plans import METHODS, budget_for_cost, method_order
from layermod.pruning.scores import angular_distances, cka_redundancy, method_scores, reinit_sensitivity
from layermod.pruning.units import apply_plan, model_cost, removable_units, unit_costs
from layermod.training.train import TrainConfig

IMAGES = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def resnet(name: str = "resnet20", classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return models.create(name, width=0.25, num_classes=classes, in_channels=1).eval()


def blobs(n: int = 240, classes: int = 3) -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % classes
    x = torch.randn(n, 1, 16, 16, generator=g) + y.view(-1, 1, 1, 1).float()
    return ArrayDataset(x, y, [str(c) for c in range(classes)], "blobs")


# ----------------------------------------------------------------------------------------------- costs


@pytest.mark.parametrize("name", ["resnet20", "vgg11"])
def test_unit_costs_add_up_to_what_a_plan_saves(name):
    model = resnet(name)
    units = removable_units(model, IMAGES)
    costs = unit_costs(model, units, IMAGES)
    base = model_cost(model, IMAGES)
    plan = [unit.name for unit in units][1::2]
    pruned = model_cost(apply_plan(model, plan, example=IMAGES), IMAGES)
    assert base["flops"] - pruned["flops"] == sum(costs[name]["flops"] for name in plan)
    assert base["params"] - pruned["params"] == sum(costs[name]["params"] for name in plan)
    assert all(cost["flops"] > 0 for cost in costs.values())


def test_budget_for_cost_takes_the_fewest_units_that_reach_the_share():
    model = resnet()
    units = removable_units(model, IMAGES)
    order = [unit.name for unit in units][::-1]
    cost = {unit.name: unit.params for unit in units}
    total = sum(p.numel() for p in model.parameters())
    for fraction in (0.05, 0.2, 0.4):
        count = budget_for_cost(order, units, fraction, total, lambda unit: cost[unit.name], what="parameters")
        freed = [cost[name] for name in order[:count]]  # last-first never hits the stage rule before the budget
        assert sum(freed) >= fraction * total > sum(freed[:-1])
    with pytest.raises(PlanError, match="short of 99.0%"):
        budget_for_cost(order, units, 0.99, total, lambda unit: cost[unit.name])


@pytest.mark.parametrize("match", ["flops", "params"])
@pytest.mark.parametrize("method", [m for m in METHODS if m != "none"])
def test_every_method_reaches_its_budget_with_no_unit_to_spare(method, match):
    model, data = resnet(), blobs()
    units = removable_units(model, IMAGES)
    costs, total = unit_costs(model, units, IMAGES), model_cost(model, IMAGES)[match]
    curve = modularity_curve(model, data, n_per_class=20, repeats=2, progress=False)
    verdicts = find_redundant(curve)
    x, y = data.data[:64], data.targets[:64]
    scores = method_scores(model, units, [method], x, y, curve=curve, verdicts=verdicts)
    angular = lambda span: angular_distances(model, units, x, span)  # noqa: E731
    for fraction in (0.1, 0.3):
        plan = plan_at_budget(method, units, costs, total, fraction, match, verdicts=verdicts, scores=scores, seed=1,
                              angular=angular)
        saved = [costs[name][match] for name in plan]
        assert sum(saved) >= fraction * total
        if method != "angular":  # angular may take a whole run; the others stop as soon as the budget is met
            assert sum(saved) - saved[-1] < fraction * total
        apply_plan(model, plan, example=IMAGES)  # a valid plan: every stage keeps a unit


def test_angular_at_a_budget_takes_one_run_of_consecutive_units():
    model = resnet("resnet56")
    units = removable_units(model, IMAGES)
    costs, total = unit_costs(model, units, IMAGES), model_cost(model, IMAGES)["flops"]
    x = torch.randn(32, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    plan = plan_at_budget("angular", units, costs, total, 0.15, "flops",
                          angular=lambda span: angular_distances(model, units, x, span))
    names = [unit.name for unit in units]
    positions = sorted(names.index(name) for name in plan)
    assert positions == list(range(positions[0], positions[0] + len(plan)))
    assert len({next(u.stage for u in units if u.name == name) for name in plan}) == 1


# ---------------------------------------------------------------------------------------------- scores


def chain(first: nn.Module) -> nn.Sequential:
    """Stem ``Linear(6, 16)``, the unit ``first`` (named "1"), the unit "2" (``Linear -> Tanh``), head ``Linear(16, 3)``."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), first, nn.Sequential(nn.Linear(16, 16), nn.Tanh()), nn.Linear(16, 3)).eval()


def test_cka_is_one_for_a_rotating_unit_and_lower_for_a_mixing_one():
    rotate = nn.Linear(16, 16)
    with torch.no_grad():  # 3 x an orthogonal matrix, no bias: the geometry of the samples is kept
        rotate.weight.copy_(3 * torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(0)))[0])
        rotate.bias.zero_()
    model = chain(nn.Sequential(rotate))
    units = removable_units(model, torch.randn(2, 6))
    x = torch.randn(100, 6, generator=torch.Generator().manual_seed(0))
    scores = cka_redundancy(model, units, x, batch_size=50)
    assert scores["1"] == pytest.approx(1.0, abs=1e-9)
    assert 0 < scores["2"] < 0.999
    assert method_order("cka", units, scores={"cka": scores})[0] == "1"


def test_reinit_sensitivity_is_zero_for_weights_the_same_seed_would_draw_again():
    torch.manual_seed(3)
    fresh = nn.Sequential(nn.Linear(16, 16))  # its initialisation under seed 3
    model = chain(fresh)
    units = removable_units(model, torch.randn(2, 6))
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)  # the model is right on every probe sample
    before = [p.clone() for p in model.parameters()]
    scores = reinit_sensitivity(model, units, x, y, seed=3)
    assert scores["1"] == (0.0, 0.0)
    drop, rise = scores["2"]
    assert drop > 0 and rise != 0  # a random model's loss may fall as well as rise
    assert reinit_sensitivity(model, units, x, y, seed=4)["1"] != (0.0, 0.0)  # other weights, another score
    assert scores == reinit_sensitivity(model, units, x, y, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with pytest.raises(PlanError, match="one label per input"):
        reinit_sensitivity(model, units, x, y[:-1])


# ------------------------------------------------------------------------------------------- statistics


def test_paired_test_agrees_with_scipy_and_enumerates_the_sign_flips():
    a, b = [0.91, 0.90, 0.93, 0.92], [0.90, 0.88, 0.92, 0.93]
    result = paired_test(a, b)
    assert result.p_t == pytest.approx(ttest_rel(a, b).pvalue)
    d = np.subtract(a, b)
    assert result.mean == pytest.approx(d.mean()) and result.std == pytest.approx(d.std(ddof=1))
    # d = (.01, .02, .01, -.01), |sum| .03: the .02 term with either sign and the three .01 terms summing to at
    # least .01 in its direction (4 of their 8 patterns), so 8 of the 16 patterns reach it
    assert result.p_sign == pytest.approx(8 / 16)
    assert paired_test([1, 2, 3], [0, 1, 2]).p_sign == pytest.approx(2 / 8)  # three seeds can do no better
    same = paired_test([0.5, 0.6], [0.5, 0.6])
    assert math.isnan(same.p_t) and same.p_sign == 1.0 and same.to_dict()["p_t"] is None
    with pytest.raises(LayermodError, match="equally long"):
        paired_test([1.0], [1.0, 2.0])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=20))
def test_sign_flip_p_value_is_a_probability_symmetric_in_the_sign(d):
    zeros = [0.0] * len(d)
    forward, backward = paired_test(d, zeros), paired_test(zeros, d)
    assert 0 < forward.p_sign <= 1
    assert forward.p_sign == pytest.approx(backward.p_sign)
    assert forward.mean == pytest.approx(-backward.mean)


# ---------------------------------------------------------------------------------------------- study


def comparison(differences: dict[float, list[float]]) -> MatchedComparison:
    """A comparison of ``last`` against ``modularity`` whose accuracy differences at each budget are given, a
    seed each; modularity scores 0.5 everywhere."""
    rows = []
    for budget, values in differences.items():
        for seed, d in enumerate(values):
            for method, acc in (("modularity", 0.5), ("last", 0.5 + d)):
                rows.append({"method": method, "match": "flops", "budget": budget, "retrain": "finetune",
                             "seed": seed, "layers_removed": [], "n_removed": 0, "params": 10, "flops": 10,
                             "acc_pruned": acc, "acc": acc})
    return MatchedComparison(rows, {"params": 20, "flops": 20}, {})


def test_the_budget_is_the_unit_of_the_budget_test():
    budgets = {0.1: [0.01], 0.2: [0.03], 0.3: [0.02], 0.4: [0.05]}
    one = comparison(budgets).pooled()[0]
    # one seed per budget: budget means are the pairs, so the budget test is the paired t-test
    assert one["budgets"] == 4 and one["p_budget"] == pytest.approx(one["p_t"])
    # three seeds that repeat the same difference add no evidence about the budgets
    copies = comparison({b: v * 3 for b, v in budgets.items()}).pooled()[0]
    assert copies["n"] == 12 and copies["p_budget"] == pytest.approx(one["p_t"])
    assert copies["p_t"] < one["p_t"] / 10  # what treating the 12 pairs as independent would claim
    spread = comparison({0.1: [0.0, 0.02], 0.2: [0.01, 0.05], 0.3: [0.03, 0.01]}).pooled()[0]
    means = [0.01, 0.03, 0.02]
    assert spread["p_budget"] == pytest.approx(ttest_rel(means, [0.0] * 3).pvalue)
    assert comparison({0.1: [0.01, 0.03]}).pooled()[0]["p_budget"] is None  # one budget: no test


def test_studies_of_several_base_networks_pair_by_network_and_use_it_as_a_unit(tmp_path):
    # three base networks, one retraining seed each (seed 0 in every study): the pairs must not collapse by seed
    per_network = [{0.1: [0.01], 0.2: [0.03]}, {0.1: [0.02], 0.2: [0.06]}, {0.1: [-0.01], 0.2: [0.01]}]
    pooled = MatchedComparison.over_networks([comparison(d) for d in per_network])
    test = pooled.pooled()[0]
    differences = [d for net in per_network for v in net.values() for d in v]
    assert test["n"] == 6 and test["mean"] == pytest.approx(np.mean(differences))
    assert test["networks"] == 3
    means = [np.mean([v[0] for v in net.values()]) for net in per_network]
    assert test["p_network"] == pytest.approx(ttest_rel(means, [0.0] * 3).pvalue)
    budget_means = [np.mean([net[b][0] for net in per_network]) for b in (0.1, 0.2)]
    assert test["p_budget"] == pytest.approx(ttest_rel(budget_means, [0.0] * 2).pvalue)
    cell = next(s for s in pooled.summary() if s["method"] == "last" and s["budget"] == 0.2)
    assert cell["n"] == 3 and cell["vs_modularity"]["mean"] == pytest.approx(np.mean([0.03, 0.06, 0.01]))
    assert "p networks" in pooled.markdown() and "p networks" not in comparison(per_network[0]).markdown()
    assert comparison(per_network[0]).pooled()[0]["p_network"] is None  # one network: no test
    again = MatchedComparison.load(pooled.save(tmp_path / "pooled"))  # the tag survives the file
    assert again.pooled() == pooled.pooled()


def test_pooling_refuses_other_architectures_and_pooled_studies():
    one = comparison({0.1: [0.01]})
    other = MatchedComparison(one.rows, {"params": 21, "flops": 20}, {})
    with pytest.raises(PlanError, match="one architecture"):
        MatchedComparison.over_networks([one, other])
    with pytest.raises(PlanError, match="already pools"):
        MatchedComparison.over_networks([MatchedComparison.over_networks([one, one])])
    with pytest.raises(PlanError, match="no studies"):
        MatchedComparison.over_networks([])
    rows = [{**row, "network": -1} for row in one.rows]
    with pytest.raises(ValueError, match="network"):
        MatchedComparison.from_dict({"rows": rows, "base": one.base})


@pytest.fixture(scope="module")
def study():
    model, data = resnet(), blobs()
    units = removable_units(model, IMAGES)
    verdicts = find_redundant(modularity_curve(model, data, n_per_class=20, repeats=2, progress=False))
    config = TrainConfig(epochs=1, batch_size=64, lr=0.01)
    return matched_comparison(model, units, data, data, verdicts, IMAGES[:1], config, budgets=(0.2, 0.4), seeds=2,
                              methods=["modularity", "last", "random", "cka"], progress=False)


def test_the_study_has_a_row_per_method_budget_retraining_and_seed(study):
    rows = study.rows
    assert len(rows) == 2 * 2 * (1 + 2 * 4) * 2  # matches x retrains x (none + budgets x methods) x seeds
    base = study.base
    for row in rows:
        assert row["n_removed"] == len(row["layers_removed"])
        if row["method"] == "none":
            assert row["budget"] == 0 and row["flops"] == base["flops"] and row["params"] == base["params"]
        else:
            assert study.removed(row, row["match"]) >= row["budget"]
    # the same network with the same seed and retraining is trained once: identical results wherever it repeats
    seen = {}
    for row in rows:
        key = (tuple(row["layers_removed"]), row["retrain"], row["seed"])
        assert seen.setdefault(key, row["acc"]) == row["acc"]
    random_plans = {tuple(r["layers_removed"]) for r in rows
                    if (r["method"], r["match"], r["budget"]) == ("random", "flops", 0.4)}
    assert len(random_plans) == 2  # a new draw per seed


def test_summary_pairs_every_method_with_modularity_seed_by_seed(study):
    summary = study.summary()
    cell = next(s for s in summary if s["method"] == "last" and s["match"] == "flops" and s["budget"] == 0.2
                and s["retrain"] == "finetune")
    mine = {r["seed"]: r["acc"] for r in study.rows if (r["method"], r["match"], r["budget"], r["retrain"])
            == ("last", "flops", 0.2, "finetune")}
    ref = {r["seed"]: r["acc"] for r in study.rows if (r["method"], r["match"], r["budget"], r["retrain"])
           == ("modularity", "flops", 0.2, "finetune")}
    assert cell["vs_modularity"]["mean"] == pytest.approx(np.mean([mine[s] - ref[s] for s in mine]))
    pooled = next(p for p in study.pooled() if (p["match"], p["retrain"], p["method"]) == ("flops", "finetune", "last"))
    assert pooled["n"] == 4  # 2 budgets x 2 seeds


def test_study_files_round_trip_and_hostile_rows_are_refused(study, tmp_path):
    study.save(tmp_path)
    for name in ("matched.json", "matched.csv", "matched.md", "pareto-flops.png", "pareto-params.png"):
        assert (tmp_path / name).stat().st_size > 0
    back = MatchedComparison.load(tmp_path)
    assert back.rows == study.rows and back.summary() == study.summary()
    assert "### finetune, budgets matched by flops" in (tmp_path / "matched.md").read_text()
    data = json.loads((tmp_path / "matched.json").read_text())
    data["rows"][3]["acc"] = 1.5
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ReportError, match=r"rows\[3\]\.acc"):
        MatchedComparison.load(tmp_path / "bad.json")
    data["rows"][3]["acc"] = 0.5
    data["rows"][3]["method"] = "__import__('os')"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ReportError, match=r"rows\[3\]\.method"):
        MatchedComparison.load(tmp_path / "bad.json")


def test_the_study_refuses_bad_settings_in_one_line():
    model, data = resnet(), blobs(60)
    units = removable_units(model, IMAGES)
    config = TrainConfig(epochs=1)
    for kwargs, message in (({"budgets": (0.2, 1.5)}, "budgets must be shares"),
                            ({"matches": ("latency",)}, "unknown cost to match 'latency'"),
                            ({"retrains": ()}, "no retraining given"),
                            ({"methods": ("magic",)}, "unknown pruning method 'magic'"),
                            ({"seeds": 0}, "seeds must be")):
        with pytest.raises(PlanError, match=message):
            matched_comparison(model, units, data, data, [], IMAGES[:1], config, **kwargs)


def test_the_report_shows_a_matched_study_with_its_tables(study, tmp_path):
    from layermod.cli import main

    study.save(tmp_path / "run")
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "methods compared at matched budgets" in page
    assert page.count("<img") >= 2  # a Pareto figure per matched cost
    assert "run-matched.csv" in page
