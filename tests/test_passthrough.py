"""What a removed unit becomes (PassThrough), which units are offered (the model must run without them), the
stage rule keep_per_stage, and plans that record tuple outputs in a checkpoint."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from layermod import models
from layermod.errors import PlanError, WeightsError
from layermod.models import PassThrough, remove_units
from layermod.models.checkpoint import load_checkpoint, save_checkpoint
from layermod.pruning.units import apply_plan, removable_units, unit_costs

X = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))  # (B, T, D)


class TupleBlock(nn.Module):
    """A transformer-style block: ``(hidden (B, T, D), weights (B, T, T))`` from ``(hidden, mask, *, scale)``."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, hidden_states, mask=None, *, scale=1.0):
        weights = torch.softmax(hidden_states @ hidden_states.transpose(1, 2), dim=-1)
        return hidden_states + scale * self.fc(weights @ hidden_states), weights


class TupleEncoder(nn.Module):
    """Calls its blocks like a transformers encoder: the first by keyword, the rest positionally with keywords,
    and reads every block's attention weights as well as its hidden state."""

    def __init__(self, blocks: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(TupleBlock() for _ in range(blocks))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        hidden, seen = x, []
        for i, layer in enumerate(self.layers):
            out = layer(hidden_states=hidden, scale=0.5) if i == 0 else layer(hidden, None, scale=0.5)
            hidden = out[0]
            seen.append(out[1])
        weighted = sum(w.sum() for w in seen if w is not None)  # a removed block gives None
        return self.head(hidden.mean(1)) + 0 * weighted


def test_passthrough_returns_the_hidden_state_in_the_recorded_structure():
    h = torch.randn(2, 3)
    assert PassThrough()(h, "mask", cache=None) is h
    assert PassThrough()(hidden_states=h, attention_mask=None) is h
    out = PassThrough(outputs=3)(h)
    assert out[0] is h and out[1:] == (None, None)
    with pytest.raises(TypeError, match="without a positional input or hidden_states"):
        PassThrough()(mask=h)
    assert isinstance(PassThrough(), nn.Identity) and "outputs=3" in repr(PassThrough(outputs=3))


def test_tuple_blocks_called_with_keywords_are_removable():
    model = TupleEncoder().eval()
    units = removable_units(model, X)
    assert [(u.name, u.outputs) for u in units] == [("layers.0", 2), ("layers.1", 2), ("layers.2", 2)]
    for unit in units:
        pruned = apply_plan(model, [unit.name], example=X)
        assert pruned.get_submodule(unit.name).outputs == 2
        assert pruned(X).shape == (2, 3)
    assert set(unit_costs(model, units, X)) == {u.name for u in units}


class Unrunnable(nn.Module):
    """Blocks of matching shapes whose stand-ins would not do: one returning a dict, one called only by an unusual
    keyword."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList([KeywordBlock(), KeywordBlock(), KeywordBlock(), DictBlock(), KeywordBlock(),
                                     KeywordBlock()])

    def forward(self, x):
        x = self.blocks[2](self.blocks[1](self.blocks[0](x)))
        x = self.blocks[3](x)["out"]
        x = self.blocks[4](inputs=x)
        return self.blocks[5](x)


class KeywordBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x=None, inputs=None):
        return self.fc(x if x is not None else inputs)


class DictBlock(KeywordBlock):
    def forward(self, x):
        return {"out": self.fc(x)}


def test_units_the_model_cannot_run_without_are_kept_with_the_reason():
    model = Unrunnable().eval()
    assert [u.name for u in removable_units(model, X)] == ["blocks.0", "blocks.1", "blocks.2", "blocks.5"]
    for name, reason in [("blocks.3", "returns dict, not a tensor or a tuple led by one"),
                         ("blocks.4", "takes or returns no tensor")]:
        with pytest.raises(PlanError, match=f"unit '{name}' cannot be removed: it {re.escape(reason)}; remove only"):
            apply_plan(model, [name], example=X)


class WeightsReader(TupleEncoder):
    """Computes with every block's attention weights, which a removed block cannot give."""

    def forward(self, x):
        for layer in self.layers:
            x, weights = layer(x)
            x = x + weights.sum()
        return self.head(x.mean(1))


def test_a_unit_whose_removal_breaks_the_model_is_not_offered():
    model = WeightsReader().eval()
    assert removable_units(model, X) == []
    reason = "breaks the model when removed ('NoneType' object has no attribute 'sum')"
    with pytest.raises(PlanError, match=f"unit 'layers.1' cannot be removed: it {re.escape(reason)}"):
        apply_plan(model, ["layers.1"], example=X)


class ResidualBlocks(nn.Module):
    """``head(blocks(stem(x)))``: ``n`` residual blocks in one stage (``blocks#0``), stem and head outside it."""

    def __init__(self, n: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Linear(8, 8)
        self.blocks = nn.Sequential(*[ResidualBlock() for _ in range(n)])
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean(1))


class ResidualBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return x + self.fc(x)


@pytest.mark.parametrize("keep", [0, 1, 2, 4])
def test_every_unit_offered_under_a_stage_rule_is_a_plan_apply_plan_accepts(keep):
    model = ResidualBlocks(4).eval()
    offered = removable_units(model, X, keep_per_stage=keep)
    assert len(offered) == (4 if keep < 4 else 0)
    for unit in offered:
        apply_plan(model, [unit.name], example=X, keep_per_stage=keep)
    if keep == 2:
        with pytest.raises(PlanError, match=r"leaves 1 unit of stage blocks#0 .*keep at least 2 \(keep_per_stage=2\)"):
            apply_plan(model, ["blocks.1", "blocks.2", "blocks.3"], example=X, keep_per_stage=2)


def test_a_stage_of_one_unit_is_offered_only_without_the_stage_rule():
    model = ResidualBlocks(1).eval()
    assert removable_units(model, X) == []
    with pytest.raises(PlanError, match="removes every unit of stage blocks#0 .*keep at least one"):
        apply_plan(model, ["blocks.0"], example=X)
    assert [u.name for u in removable_units(model, X, keep_per_stage=0)] == ["blocks.0"]
    assert apply_plan(model, ["blocks.0"], example=X, keep_per_stage=0)(X).shape == (2, 3)
    for bad in (-1, 1.5, True):
        with pytest.raises(PlanError, match="keep_per_stage=.* must be an integer >= 0"):
            removable_units(model, X, keep_per_stage=bad)


def test_torchvision_resnet_units_are_still_its_shape_keeping_blocks():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = tv.models.resnet18(num_classes=3).eval()
    images = torch.randn(2, 3, 32, 32)
    names = [u.name for u in removable_units(model, images)]
    assert names == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    assert apply_plan(model, ["layer3.1"], example=images)(images).shape == (2, 3)


def test_a_plan_with_tuple_outputs_rebuilds_from_its_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = models.create("smallcnn", width=0.25, in_channels=1).eval()
    args = {"width": 0.25, "in_channels": 1}
    pruned = remove_units(model, ["features.7"], outputs={"features.7": 2})
    save_checkpoint(pruned, tmp_path / "a", {"arch": "smallcnn", "arch_args": args,
                                             "plan": {"remove": ["features.7"], "outputs": {"features.7": 2}}})
    loaded, _ = load_checkpoint(tmp_path / "a")
    assert loaded.features[7].outputs == 2
    with pytest.raises(PlanError, match="outputs name features.1, which it does not remove"):
        remove_units(model, ["features.7"], outputs={"features.1": 2})
    for outputs in ({"features.1": 2}, {"features.7": 0}, ["features.7"]):
        save_checkpoint(pruned, tmp_path / "b", {"arch": "smallcnn", "arch_args": args,
                                                 "plan": {"remove": ["features.7"], "outputs": outputs}})
        with pytest.raises(WeightsError, match="checkpoint sidecar .*outputs"):
            load_checkpoint(tmp_path / "b")
