"""Progress bars: ``progress="auto"``, the default of long calls, is silent when stderr is not a terminal."""

from __future__ import annotations

import inspect

import torch
from torch import nn

import layermod as lm
from layermod.coerce import bar_disabled
from layermod.training.fit import fit


def test_auto_is_the_default_of_long_calls():
    for function in (lm.modularity_curve, lm.adversarial_curves, fit):
        assert inspect.signature(function).parameters["progress"].default == "auto", function


def test_auto_is_silent_when_stderr_is_not_a_terminal(capsys):
    torch.manual_seed(0)
    x, y = torch.randn(60, 6), torch.arange(60) % 3
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    lm.modularity_curve(model, (x, y), n_per_class=10, repeats=2)
    assert capsys.readouterr().err == ""


def test_bar_disabled_follows_tqdm():
    assert bar_disabled(False) is True and bar_disabled(True) is None and bar_disabled("auto") is None
