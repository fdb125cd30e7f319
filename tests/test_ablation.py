"""Pruning scores measured by removing units, the phase-aware order, iterative re-scoring and what a scoring
costs, on hand-built networks whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from layermod.analysis.curve import Curve
from layermod.analysis.phase import find_rise
from layermod.analysis.redundancy import find_redundant
from layermod.errors import CurveError, PlanError
from layermod import models
from layermod.extract.features import extract_features
from layermod.measure.config import GraphConfig
from layermod.measure.graph import build_graph
from layermod.measure.modularity import modularity
from layermod.pruning.ablation import (ablation_accuracy, ablation_modularity, iterative_order, phase_scores,
                                      refresh_batch_norm, without)
from layermod.pruning.plans import method_order
from layermod.pruning.scores import block_influence, method_scores
from layermod.pruning.units import Unit, removable_units

DIM, CLASSES = 8, 4


class Residual(nn.Module):
    """``x + fc2(relu(fc1(x)))``, shape (B, 8) kept."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(DIM, 2 * DIM), nn.Linear(2 * DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(x)))


def decoder_net() -> nn.Sequential:
    """Stem (the first 8 of 10 inputs), four residual blocks, head reading dims 0-3 as the four logits. The classes live in dims
    4-7 of the input; block "2" copies them into dims 0-3, blocks "1", "3" and "4" add nothing (identities).
    Without block 2 the head sees only noise."""
    stem, head = nn.Linear(DIM + 2, DIM), nn.Linear(DIM, CLASSES)
    blocks = [Residual() for _ in range(4)]
    with torch.no_grad():
        stem.weight.copy_(torch.eye(DIM, DIM + 2))
        stem.bias.zero_()
        head.weight.zero_()
        head.weight[:, :CLASSES] = torch.eye(CLASSES)
        head.bias.zero_()
        for block in blocks:
            block.fc2.weight.zero_()
            block.fc2.bias.zero_()
        copy = blocks[1]
        copy.fc1.weight.zero_()
        copy.fc1.bias.zero_()
        copy.fc1.weight[:CLASSES, CLASSES:] = torch.eye(CLASSES)  # relu(+x_4..7)
        copy.fc1.weight[CLASSES:2 * CLASSES, CLASSES:] = -torch.eye(CLASSES)  # relu(-x_4..7)
        copy.fc2.weight[:CLASSES, :CLASSES] = torch.eye(CLASSES)
        copy.fc2.weight[:CLASSES, CLASSES:2 * CLASSES] = -torch.eye(CLASSES)
    return nn.Sequential(stem, *blocks, head).eval()


def probe(n_per_class: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(CLASSES).repeat_interleave(n_per_class)
    x = 0.05 * torch.randn(len(y), DIM + 2, generator=g)
    x[torch.arange(len(y)), CLASSES + y] += 1.0
    return x, y


def test_removing_the_block_that_decodes_the_classes_is_scored_as_damage_and_identities_as_none():
    model, (x, y) = decoder_net(), probe()
    units = removable_units(model, x[:2])
    assert [u.name for u in units] == ["1", "2", "3", "4"]
    accuracy = ablation_accuracy(model, units, x, y, batch_size=17)
    assert accuracy["2"][0] > 0.6  # from 100 % to about chance (25 %)
    assert all(accuracy[name] == (0.0, 0.0) for name in ("1", "3", "4"))
    fall = ablation_modularity(model, units, x, y, layers=["0", "1", "2", "3", "4", "5"])
    assert fall["2"] > 0.3 and all(abs(fall[name]) < 1e-12 for name in ("1", "3", "4"))
    # "later" averages over the layers after the unit (3, 4, 5): blocks 3 and 4 still hold the classes in dims
    # 4-7 without block 2 (their Q barely moves), only the head's output loses them
    later = ablation_modularity(model, units, x, y, layers=["0", "1", "2", "3", "4", "5"], points="later")
    assert later["2"] == pytest.approx(fall["2"] / 3, abs=1e-3) and abs(later["4"]) < 1e-12
    assert method_order("ablation-accuracy", units, scores={"ablation-accuracy": accuracy})[-1] == "2"
    assert method_order("modularity-ablation", units, scores={"modularity-ablation": fall})[-1] == "2"


@pytest.mark.parametrize("points", ["final", "later"])
def test_a_removed_unit_that_holds_the_final_point_is_scored_at_its_stand_in(points):
    # a VGG unit is a module with a conv inside; the curve's final point is the last unit's conv, which the
    # network without that unit no longer has: the point at that depth is then what entered the unit
    torch.manual_seed(0)
    model = models.create("vgg11", width=0.125, num_classes=CLASSES, in_channels=1).eval()
    x, y = torch.randn(4 * CLASSES, 1, 28, 28), torch.arange(CLASSES).repeat(4)
    units = removable_units(model, x[:2])
    last = units[-1]
    layers = [unit.layers[0] for unit in units]
    assert layers[-1] in last.layers and layers[-1] != last.name
    fall = ablation_modularity(model, units, x, y, layers=layers, points=points)
    assert set(fall) == {unit.name for unit in units} and all(np.isfinite(list(fall.values())))
    graph = build_graph(extract_features(model, x, layers=[layers[-1]])[layers[-1]], graph=GraphConfig()).adjacency
    before = modularity(graph, y.numpy())
    entering = extract_features(without(model, units, [last.name]), x, layers=[last.name])[last.name]
    after = modularity(build_graph(entering, graph=GraphConfig()).adjacency, y.numpy())
    assert fall[last.name] == pytest.approx(before - after)
    # re-scored after that removal (an iterative order): the network no longer has the point, its stand-in does
    again = ablation_modularity(without(model, units, [last.name]), units[:-1], x, y, layers=layers, points=points)
    assert set(again) == {unit.name for unit in units[:-1]} and all(np.isfinite(list(again.values())))


def test_ablation_refuses_bad_options():
    model, (x, y) = decoder_net(), probe(3)
    units = removable_units(model, x[:2])
    with pytest.raises(PlanError, match="points='first'"):
        ablation_modularity(model, units, x, y, layers=["5"], points="first")
    with pytest.raises(PlanError, match="pass layers=curve.layers"):
        ablation_modularity(model, units, x, y, layers=[])
    with pytest.raises(PlanError, match="12 inputs and 11 labels"):
        ablation_accuracy(model, units, x, y[:-1])


def staged_curve(q: list[float], repeats: int = 3) -> Curve:
    """A curve whose draws differ by a constant offset per draw: every increment is exact, its noise 0."""
    layers = [f"L{i}" for i in range(len(q))]
    values = np.array(q)[None, :] + 0.01 * np.arange(repeats)[:, None]
    return Curve(layers, values, config={"k": 3})


def test_the_rise_is_where_q_comes_within_a_tenth_of_its_total_rise():
    curve = staged_curve([0.1, 0.1, 0.1, 0.6, 0.9, 0.9])  # 0.1 + 0.9 * 0.8 = 0.82: first reached at L4
    rise = find_rise(curve)
    assert (rise.index, rise.layer, rise.earliest, rise.latest) == (4, "L4", 4, 4)
    assert find_rise(curve, share=0.5).index == 3
    assert find_rise(staged_curve([0.5, 0.4, 0.3])).index == 0  # never rises
    # the draws disagree (two have risen at "c", one only at "d"; the mean at "c" is 0.73 < 0.82): the range says so
    values = np.array([[0.1, 0.1, 0.85, 0.9], [0.1, 0.1, 0.5, 0.9], [0.1, 0.1, 0.85, 0.9]])
    rise = find_rise(Curve(["a", "b", "c", "d"], values, config={}))
    assert (rise.index, rise.earliest, rise.latest) == (3, 2, 3)
    with pytest.raises(CurveError, match="share=1"):
        find_rise(curve, share=1)


def test_phase_aware_order_keeps_a_silent_phase_before_the_rise():
    curve = staged_curve([0.1, 0.1, 0.1, 0.6, 0.9, 0.9])
    verdicts = find_redundant(curve)
    assert [v.verdict for v in verdicts] == ["keep", "plateau", "plateau", "keep", "keep", "plateau"]
    units = [Unit(f"u{i}", (f"L{i}",), "s", 10) for i in range(1, 6)]
    # the paper's rule takes the silent phase (u1, u2) first; the phase-aware one the plateau after the rise
    assert method_order("modularity", units, verdicts=verdicts)[:3] == ["u1", "u2", "u5"]
    scores = phase_scores(curve, verdicts, units)
    assert scores["u5"][0] == 0 and all(scores[f"u{i}"][0] == 1 for i in range(1, 5))
    assert method_order("modularity-phase", units, verdicts=verdicts, scores={"modularity-phase": scores}) == \
        ["u5", "u1", "u2", "u4", "u3"]


def test_iterative_order_of_one_step_is_the_one_shot_order_and_rescoring_sees_the_pruned_network():
    model, (x, y) = decoder_net(), probe(5)
    with torch.no_grad():  # block 3 now adds a little, block 4 undoes it: together they are an identity
        model[3].fc2.bias.fill_(0.5)
        model[4].fc2.bias.fill_(-0.5)
    units = removable_units(model, x[:2])
    one_shot = method_order("cosine", units, scores={"cosine": block_influence(model, units, x)})
    iterative = method_scores(model, units, ["cosine"], x, y, iterative=True, steps=1)["cosine"]
    assert iterative == one_shot
    # after removing block 1 (an identity) the others are re-scored on the pruned network
    calls = []

    def rank(net, remaining):
        calls.append(([u.name for u in remaining], isinstance(net.get_submodule("1"), Residual)))
        return method_order("cosine", remaining, scores={"cosine": block_influence(net, remaining, x)})

    order = iterative_order(model, units, rank, steps=3)
    assert calls[0] == (["1", "2", "3", "4"], True) and calls[1][1] is False
    assert sorted(order) == ["1", "2", "3", "4"] and order[0] == "1"


def test_every_scoring_records_its_seconds_and_probe_passes():
    model, (x, y) = decoder_net(), probe(5)
    units = removable_units(model, x[:2])
    costs: dict = {}
    method_scores(model, units, ["cosine", "ablation-accuracy"], x, y, costs=costs)
    assert costs["cosine"]["probe_passes"] == 1.0  # one pass, every block's ends hooked
    assert costs["ablation-accuracy"]["probe_passes"] == 1.0 + len(units)  # the model, then once without each
    assert all(cost["seconds"] >= 0 for cost in costs.values())
    with pytest.raises(PlanError, match="needs the model's curve"):
        method_scores(model, units, ["modularity-phase"], x, y)


class Shift(nn.Module):
    """``x + shift``, shape kept."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(shift))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift


class Gain(nn.Module):
    """``gain * x``: with gain 1 the identity, exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * x


def sign_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 2) points, class 1 when x0 is near +1, class 0 near -1; x1 is noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = 0.1 * torch.randn(n, 2, generator=g)
    x[:, 0] += 2.0 * y - 1.0
    return x, y


def shifted_net(train: torch.Tensor) -> tuple[nn.Sequential, list[Unit]]:
    """Shift by 3, an identity, a batch norm whose running statistics are those of the shifted training points, and
    a head that reads the sign of the normalised x0. Without the shift the batch norm subtracts a mean of 3 that
    is no longer there: every point lands on class 0, until the statistics are re-estimated."""
    norm, head = nn.BatchNorm1d(2), nn.Linear(2, 2)
    with torch.no_grad():
        norm.running_mean.copy_((train + 3.0).mean(0))
        norm.running_var.copy_(train.var(0))
        head.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        head.bias.zero_()
    model = nn.Sequential(Shift(3.0), Gain(), norm, head).eval()
    return model, [Unit("0", ("0",), "s", 0), Unit("1", ("1",), "s", 1)]


def test_re_estimated_batch_norm_leaves_the_damage_a_removal_does_not_repair_and_the_model_untouched():
    train, _ = sign_data(512, seed=1)
    x, y = sign_data(200, seed=2)
    model, units = shifted_net(train)
    before = {key: (value.dtype, value.numpy().tobytes()) for key, value in model.state_dict().items()}
    plain = ablation_accuracy(model, units, x, y)
    assert plain["0"][0] == pytest.approx(0.5)  # from 100 % to every point on class 0
    assert plain["1"] == (0.0, 0.0)
    refreshed = ablation_accuracy(model, units, x, y, bn_batches=2, bn_inputs=train)
    assert refreshed["0"][0] == 0.0 and abs(refreshed["0"][1]) < 1e-6  # the statistics fit again: no damage left
    assert refreshed["1"] == (0.0, 0.0)
    layers = ["1", "2", "3"]
    fall = ablation_modularity(model, units, x, y, layers=layers, bn_batches=2, bn_inputs=train)
    assert fall["1"] == 0.0
    after = {key: (value.dtype, value.numpy().tobytes()) for key, value in model.state_dict().items()}
    assert after == before and not model.training and model[2].momentum == 0.1
    with pytest.raises(PlanError, match="pass bn_inputs"):
        ablation_accuracy(model, units, x, y, bn_batches=1)
    with pytest.raises(PlanError, match="bn_batches must be"):
        ablation_modularity(model, units, x, y, layers=layers, bn_batches=-1, bn_inputs=train)


def test_batch_norm_statistics_are_re_estimated_as_the_average_over_the_batches():
    inputs = torch.randn(50, 3, generator=torch.Generator().manual_seed(0)) * 2 + 5
    model = nn.Sequential(nn.BatchNorm1d(3, momentum=0.3)).eval()
    refresh_batch_norm(model, inputs, batches=2, batch_size=20)  # the first 40 samples, 10 left out
    first, second = inputs[:20].double(), inputs[20:40].double()
    mean = (first.mean(0) + second.mean(0)) / 2
    var = (first.var(0) + second.var(0)) / 2  # each batch's unbiased variance
    assert torch.allclose(model[0].running_mean.double(), mean, atol=1e-6)
    assert torch.allclose(model[0].running_var.double(), var, atol=1e-5)
    assert model[0].momentum == 0.3 and not model.training and not model[0].training
    refresh_batch_norm(model, inputs, batches=9, batch_size=20)  # fewer samples than batches: all of them
    assert torch.allclose(model[0].running_mean.double(), (inputs[:20].double().mean(0) + inputs[20:40].double().mean(0)
                                                            + inputs[40:].double().mean(0)) / 3, atol=1e-6)
