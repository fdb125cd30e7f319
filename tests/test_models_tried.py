"""scripts/models_tried.py on a few small models: every cell of their rows, and a refusal cell of one line."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("timm")
pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "models_tried.py"
FAST = [  # in the order of the table
    "mobilenetv3_small_050", "regnetx_002", "DistilBERT (sequence classification)", "T5 encoder"]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("models_tried", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_the_fast_models_pass_every_check(script, capsys):
    script.main(["--only", ",".join(FAST)])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[1] for row in rows] == FAST
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[2:5] == ["yes", "yes", "yes"], row
        assert float(cells[5]) >= 0


def test_a_refusal_is_the_one_line_reason(script):
    nothing = script.Trial("test", "relu only", lambda: nn.Sequential(nn.ReLU()), lambda n: torch.randn(n, 4))
    cells = script.try_model(nothing)
    assert cells["curve"].startswith("cannot choose layers automatically") and "\n" not in cells["curve"]
    assert cells["units"].startswith("cannot choose layers automatically")
    assert cells["pruned forward"] == "no unit to remove"
