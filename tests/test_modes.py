"""Measuring a model leaves every module in its own train/eval mode, not the model's flag copied to all."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import layermod as lm
from layermod.extract.layers import trace_calls
from layermod.extract.modes import evaluating
from models_for_tests import blobs


def mixed_modes_net() -> nn.Sequential:
    """A CNN-like net in training mode whose first BatchNorm is frozen in eval mode (a fine-tuning set-up)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(),
        nn.Sequential(nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU()),
        nn.Sequential(nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU()),
        nn.Linear(16, 4),
    )
    net.train()
    net[1][1].eval()
    return net


def modes(net: nn.Module) -> dict[str, bool]:
    return {name: module.training for name, module in net.named_modules()}


def test_evaluating_sets_eval_and_gives_each_module_its_mode_back_even_on_error():
    net = mixed_modes_net()
    before = modes(net)
    with evaluating(net) as inside:
        assert inside is net and not any(modes(net).values())
    assert modes(net) == before
    with pytest.raises(ZeroDivisionError), evaluating(net):
        1 / 0
    assert modes(net) == before and not net[1][1].training and net[2][1].training


def test_curve_and_trace_keep_per_module_modes():
    net = mixed_modes_net()
    before = modes(net)
    x, y = blobs()
    lm.modularity_curve(net, (x, y), layers=["1", "2"], n_per_class=10, repeats=1)
    assert modes(net) == before
    trace_calls(net, x[:2])
    assert modes(net) == before


def test_pruning_keeps_per_module_modes():
    from layermod.pruning.scores import block_influence
    from layermod.pruning.units import apply_plan, latency, model_cost, removable_units

    net = mixed_modes_net()
    before = modes(net)
    x, _ = blobs()
    units = removable_units(net, x[:2], keep_per_stage=0)
    apply_plan(net, [units[0].name], example=x[:2], keep_per_stage=0)
    model_cost(net, x[:2])
    latency(net, x[:2], repeats=1, warmup=0)
    block_influence(net, units, x[:4])
    assert modes(net) == before
