"""Verdicts (layermod.analysis.redundancy), rankings, unit selection and plan files (layermod.pruning.plans) on
synthetic curves."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from layermod.analysis.curve import Curve
from layermod.errors import PlanError
from layermod.pruning.units import Unit
from layermod.analysis.redundancy import Verdict, find_redundant, verdict_table
from layermod.pruning.plans import Plan, budget_for_params, rank_by_increment, select_units


def curve_of(means, spread=0.0, repeats=4) -> Curve:
    """Curve with the given mean Q per layer; odd layers get a zero-mean offset ``spread * (-1)**r * (r + 1)``
    (centred) in draw r, so increments keep their means but gain a draw-to-draw spread."""
    means = np.asarray(means, dtype=float)
    offsets = spread * np.array([(-1) ** r * (r + 1) for r in range(repeats)], dtype=float)
    offsets -= offsets.mean()
    values = np.tile(means, (repeats, 1))
    values[:, 1::2] += offsets[:, None]
    return Curve([f"l{i}" for i in range(len(means))], values, config={})


def kinds(verdicts):
    return [v.verdict for v in verdicts]


def test_rising_curve_is_all_keep():
    verdicts = find_redundant(curve_of([0.1, 0.2, 0.35, 0.5]))
    assert kinds(verdicts) == ["keep"] * 4
    assert math.isnan(verdicts[0].increment)
    assert verdicts[2].increment == pytest.approx(0.15)
    assert verdicts[2].noise == pytest.approx(0.0)
    assert verdicts[2].threshold == pytest.approx(0.5 * (0.5 - 0.1) / 3)  # half the mean step, no noise


def test_flat_tail_is_plateau_and_dip_is_drop():
    assert kinds(find_redundant(curve_of([0.1, 0.3, 0.302, 0.301]))) == ["keep", "keep", "plateau", "plateau"]
    assert kinds(find_redundant(curve_of([0.1, 0.3, 0.2, 0.4]))) == ["keep", "keep", "drop", "keep"]


def test_spread_between_draws_widens_the_band():
    means = [0.1, 0.12, 0.14]
    assert kinds(find_redundant(curve_of(means, spread=0.0))) == ["keep", "keep", "keep"]
    noisy = find_redundant(curve_of(means, spread=0.02))
    assert kinds(noisy) == ["keep", "plateau", "plateau"]
    assert noisy[1].increment == pytest.approx(0.02)
    assert noisy[1].threshold == pytest.approx(2 * noisy[1].noise) and noisy[1].noise > 0.01


def test_noise_is_the_paired_standard_error():
    values = np.array([[0.1, 0.2], [0.3, 0.5], [0.2, 0.2]])
    verdict = find_redundant(Curve(["a", "b"], values, config={}), z=1.0)[1]
    diffs = values[:, 1] - values[:, 0]
    assert verdict.noise == pytest.approx(diffs.std(ddof=1) / math.sqrt(3))


def test_single_draw_is_judged_against_the_curves_own_rise():
    curve = curve_of([0.1, 0.104, 0.2], repeats=1)
    verdicts = find_redundant(curve)
    assert kinds(verdicts) == ["keep", "plateau", "keep"]  # 0.004 is under half the mean step of 0.05
    assert verdicts[1].noise == 0.0
    assert kinds(find_redundant(curve, rel_gain=0.0)) == ["keep", "keep", "keep"]
    assert kinds(find_redundant(curve, rel_gain=0.0, min_gain=0.005)) == ["keep", "plateau", "keep"]


def straight_line(first: float, last: float, layers: int, repeats: int = 5, noise: float = 0.0) -> Curve:
    """A curve rising in equal steps from ``first`` to ``last``; each draw adds its own offset to every layer
    (what a draw's sample set does to Q) and, with ``noise``, independent jitter per layer."""
    rng = np.random.default_rng(0)
    values = np.linspace(first, last, layers)[None, :] + rng.normal(0, 0.01, (repeats, 1))
    values += rng.normal(0, noise, values.shape)
    return Curve([f"l{i}" for i in range(layers)], values, config={})


def test_a_straight_line_is_never_a_plateau_however_shallow():
    # ResNet56's first and last Q over its 28 points: a step of 0.0034, under the old absolute 0.005
    line = straight_line(0.625, 0.718, 28)
    assert (0.718 - 0.625) / 27 < 0.005
    assert kinds(find_redundant(line)) == ["keep"] * 28
    assert kinds(find_redundant(line, rel_gain=0.0, min_gain=0.005))[1:] == ["plateau"] * 27  # the artifact
    steep = straight_line(0.1, 0.9, 28)
    assert kinds(find_redundant(steep)) == ["keep"] * 28
    assert find_redundant(line).config["step"] == pytest.approx((0.718 - 0.625) / 27, rel=1e-9)


def test_a_flat_stretch_is_a_plateau_at_any_scale():
    for scale in (0.01, 1.0):
        means = scale * np.concatenate([np.linspace(0, 0.1, 6), np.full(10, 0.1), np.linspace(0.1, 0.2, 6)[1:]])
        rng = np.random.default_rng(1)
        values = means[None, :] + rng.normal(0, 0.001 * scale, (5, 1)) + rng.normal(0, 1e-5 * scale, (5, len(means)))
        verdicts = kinds(find_redundant(Curve([f"l{i}" for i in range(len(means))], values, config={})))
        assert verdicts[6:16] == ["plateau"] * 10  # the flat stretch
        assert verdicts[:6] == ["keep"] * 6 and verdicts[16:] == ["keep"] * 5  # the rises on either side
    # with jitter between layers the noise term widens the band: a flat stretch stays flat
    noisy = straight_line(0.6, 0.6, 12, noise=0.002)
    assert sum(v == "plateau" for v in kinds(find_redundant(noisy))) >= 9


def test_bad_parameters():
    with pytest.raises(PlanError, match="z must"):
        find_redundant(curve_of([0.1, 0.2]), z=-1)
    with pytest.raises(PlanError, match="min_gain"):
        find_redundant(curve_of([0.1, 0.2]), min_gain=float("nan"))
    with pytest.raises(PlanError, match="rel_gain"):
        find_redundant(curve_of([0.1, 0.2]), rel_gain=-0.5)


RESNET = [
    Unit("s1.b0", ("s1.b0",), "s1", 10),
    Unit("s1.b1", ("s1.b1",), "s1", 10),
    Unit("s1.b2", ("s1.b2",), "s1", 10),
    Unit("s2.b0", ("s2.b0",), "s2", 40),
    Unit("s2.b1", ("s2.b1",), "s2", 40),
]


def verdicts_for(increments: dict[str, float]) -> list[Verdict]:
    return [Verdict(layer, inc, 0.0, 0.005, "keep") for layer, inc in increments.items()]


def test_rank_orders_by_increment_and_puts_unmeasured_units_last():
    verdicts = verdicts_for({"s1.b0": math.nan, "s1.b1": 0.1, "s1.b2": -0.02, "s2.b1": 0.001})
    assert rank_by_increment(verdicts, RESNET) == ["s1.b2", "s2.b1", "s1.b1", "s1.b0", "s2.b0"]


def test_rank_uses_the_smallest_increment_of_a_units_layers():
    units = [Unit("f.3", ("f.3.conv", "f.3.relu"), "a", 5), Unit("f.7", ("f.7.conv",), "a", 5)]
    verdicts = verdicts_for({"f.3.conv": 0.2, "f.3.relu": -0.01, "f.7.conv": 0.0})
    assert rank_by_increment(verdicts, units) == ["f.3", "f.7"]


def test_rank_rejects_a_curve_of_another_model():
    with pytest.raises(PlanError, match="do not match the model"):
        rank_by_increment(verdicts_for({"fc": 0.1}), RESNET)


def test_select_units_keeps_one_unit_per_stage():
    order = ["s2.b0", "s2.b1", "s1.b0", "s1.b1", "s1.b2"]
    assert select_units(order, RESNET, 2) == ["s2.b0", "s1.b0"]
    assert select_units(order, RESNET, 3) == ["s2.b0", "s1.b0", "s1.b1"]
    with pytest.raises(PlanError, match="between 1 and 3 units"):
        select_units(order, RESNET, 4)
    with pytest.raises(PlanError, match="out of range"):
        select_units(order, RESNET, 0)


def test_select_units_rejects_unknown_names_and_short_orders():
    with pytest.raises(PlanError, match="unknown unit 'fc'"):
        select_units(["fc"], RESNET, 1)
    with pytest.raises(PlanError, match="allows only 1"):
        select_units(["s1.b0", "s1.b0"], RESNET, 2)


def test_budget_for_params():
    order = ["s1.b0", "s2.b0", "s1.b1", "s2.b1"]
    assert budget_for_params(order, RESNET, 0.05, 200) == 1
    assert budget_for_params(order, RESNET, 0.25, 200) == 2
    assert budget_for_params(order, RESNET, 0.3, 200) == 3
    with pytest.raises(PlanError, match="frees 60 of 200"):
        budget_for_params(order, RESNET, 0.5, 200)
    with pytest.raises(PlanError, match="fraction"):
        budget_for_params(order, RESNET, 0.0, 200)


def test_verdict_table_lists_every_layer():
    table = verdict_table(find_redundant(curve_of([0.1, 0.3, 0.2])))
    lines = table.splitlines()
    assert lines[0].split() == ["layer", "increment", "noise", "threshold", "verdict"]
    assert lines[1].split() == ["l0", "-", "-", "-", "keep"]
    assert lines[3].split()[1] == "-0.1000" and lines[3].endswith("drop")
    assert len({line.rindex(" ") for line in lines}) == 1


def test_plan_round_trip(tmp_path):
    verdicts = find_redundant(curve_of([0.1, 0.3, 0.3]))
    plan = Plan(["s1.b1"], method="increment", verdicts=verdicts).to_dict()
    assert plan["budget"] == 1 and plan["verdicts"][0]["increment"] is None
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan, allow_nan=False))
    assert Plan.load(path).to_dict() == plan
    assert Plan.load(path).verdicts[2].verdict == "plateau"
    assert Plan.load(Plan(["s1.b1"], method="increment", verdicts=verdicts).save(tmp_path / "run")).to_dict() == plan


@pytest.mark.parametrize("text", [None, "{not json", "[1, 2]", '{"method": "x"}', '{"remove": [1]}',
                                  '{"remove": [], "budget": -1}', '{"remove": [], "verdicts": {}}',
                                  '{"remove": [], "verdicts": [{"layer": "a", "increment": 0.1, "noise": 0, '
                                  '"threshold": 0, "verdict": "maybe"}]}'])
def test_a_plan_that_cannot_be_is_refused_in_one_line(tmp_path, text):
    path = tmp_path / "plan.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(PlanError) as info:
        Plan.load(path)
    assert "\n" not in str(info.value)


def test_a_stage_with_a_member_that_always_stays_may_lose_every_removable_unit():
    units = [Unit("s.b1", ("s.b1",), "s", 1, kept=1), Unit("s.b2", ("s.b2",), "s", 1, kept=1),
             Unit("t.b0", ("t.b0",), "t", 1), Unit("t.b1", ("t.b1",), "t", 1)]
    assert select_units(["s.b1", "s.b2", "t.b0", "t.b1"], units, 3) == ["s.b1", "s.b2", "t.b0"]
    with pytest.raises(PlanError, match="between 1 and 3"):
        select_units(["s.b1", "s.b2", "t.b0", "t.b1"], units, 4)
