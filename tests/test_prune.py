"""Layer pruning: removable units, plans, costs, latency, block influence and pruned checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from layermod import models
from layermod.models.checkpoint import load_checkpoint, save_checkpoint
from layermod.errors import LayermodError, PlanError
from layermod.pruning.plans import method_order, select_units
from layermod.pruning.scores import angular_distances, block_influence
from layermod.models.units import PassThrough
from layermod.pruning.units import Unit, apply_plan, kept_units, latency, model_cost, removable_units


class ResidualMLP(nn.Module):
    """``x + fc2(relu(fc1(x)))``; keeps the shape (B, dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.relu(self.fc1(x)))


def residual_mlp(blocks: int = 4, dim: int = 8) -> nn.Sequential:
    """Stem ``Linear(5, dim)``, ``blocks`` residual blocks (children "1" ... str(blocks)), head ``Linear(dim, 3)``."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, dim), *[ResidualMLP(dim) for _ in range(blocks)], nn.Linear(dim, 3)).eval()


def make(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return models.create(name, width=0.25, **kwargs).eval()


IMAGES = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def test_resnet20_units_are_the_non_downsampling_blocks():
    model = make("resnet20", in_channels=1)
    units = removable_units(model, IMAGES)
    assert [u.name for u in units] == ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1", "layer3.2"]
    assert [u.stage for u in units] == ["layer1#0"] * 3 + ["layer2#0"] * 2 + ["layer3#0"] * 2
    assert all(u.layers == (u.name,) for u in units)
    block = model.get_submodule("layer2.1")
    assert units[3].params == sum(p.numel() for p in block.parameters())
    assert isinstance(units[0], Unit)
    kept = kept_units(model, IMAGES)
    assert list(kept) == ["layer2.0", "layer3.0"] and all("(downsampling)" in why for why in kept.values())
    assert list(kept_units(model, IMAGES, keep_per_stage=3)) == ["layer1.0", "layer1.1", "layer1.2", "layer2.0",
                                                                 "layer2.1", "layer2.2", "layer3.0", "layer3.1",
                                                                 "layer3.2"]


def test_vgg_and_smallcnn_units_are_the_shape_keeping_conv_units():
    vgg = make("vgg11", in_channels=1)  # channels 16 M 32 M 64 64 M 128 128 M 128 128 M
    units = removable_units(vgg, IMAGES)
    assert [u.name for u in units] == ["features.5", "features.8", "features.10", "features.11"]
    assert [u.layers for u in units] == [(f"{u.name}.conv",) for u in units]
    assert [u.stage for u in units] == ["features#2", "features#3", "features#4", "features#4"]

    cnn = make("smallcnn", in_channels=1)  # (2, 2, 2) units, pools between stages
    units = removable_units(cnn, torch.randn(2, 1, 16, 16))
    assert [u.name for u in units] == ["features.1", "features.4", "features.7"]
    assert [u.stage for u in units] == ["features#0", "features#1", "features#2"]


def test_plain_sequential_of_residual_blocks():
    model = residual_mlp()
    units = removable_units(model, torch.randn(2, 5))
    assert [u.name for u in units] == ["1", "2", "3", "4"]
    assert {u.stage for u in units} == {"<root>#0"}


def test_units_of_stages_that_are_not_containers():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model, x = timm.create_model("regnetx_002", pretrained=False, num_classes=3).eval(), torch.randn(2, 3, 32, 32)
    units = removable_units(model, x)  # s3 and s4 are RegStage modules: b1 downsamples, the rest keep the shape
    assert [u.name for u in units] == [*(f"s3.b{j}" for j in range(2, 5)), *(f"s4.b{j}" for j in range(2, 8))]
    assert {u.stage for u in units} == {"s3#0", "s4#0"} and all(u.kept == 1 for u in units)
    pruned = apply_plan(model, ["s3.b2", "s4.b5"], example=x)
    assert isinstance(pruned.s3.b2, PassThrough) and pruned(x).shape == (2, 3)
    assert [name for name, _ in pruned.s3.named_children()] == ["b1", "b2", "b3", "b4"]


def test_removal_is_exact_for_a_block_that_computes_identity():
    model = residual_mlp()
    x = torch.randn(6, 5)
    with torch.no_grad():
        model[2].fc2.weight.zero_()
        model[2].fc2.bias.zero_()
        expected = model(x)
    pruned = apply_plan(model, ["2"], example=x)
    assert isinstance(pruned[2], nn.Identity) and isinstance(model[2], ResidualMLP)
    with torch.no_grad():
        assert torch.equal(pruned(x), expected)
    for key, value in pruned.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
        assert value.data_ptr() != model.state_dict()[key].data_ptr()  # a copy, not shared


def test_stage_keys_survive_pruning():
    model = make("resnet20", in_channels=1)
    pruned = apply_plan(model, ["layer1.1", "layer3.2"], example=IMAGES)
    names = [u.name for u in removable_units(pruned, IMAGES)]
    assert names == ["layer1.0", "layer1.2", "layer2.1", "layer2.2", "layer3.1"]
    assert {u.stage for u in removable_units(pruned, IMAGES)} == {"layer1#0", "layer2#0", "layer3#0"}
    assert pruned(IMAGES).shape == (2, 10)


def test_plan_errors():
    model = make("resnet20", in_channels=1)
    with pytest.raises(PlanError, match=r"changes shape 4x28x28 -> 8x14x14 \(downsampling\)"):
        apply_plan(model, ["layer2.0"], example=IMAGES)
    with pytest.raises(PlanError, match="closest: layer3.2, layer3.1"):
        apply_plan(model, ["layer3.7"], example=IMAGES)
    with pytest.raises(PlanError, match="more than once"):
        apply_plan(model, ["layer1.1", "layer1.1"], example=IMAGES)
    with pytest.raises(PlanError, match="every unit of stage layer1#0"):
        apply_plan(model, ["layer1.0", "layer1.1", "layer1.2"], example=IMAGES)
    with pytest.raises(PlanError, match="not a removable unit"):
        apply_plan(model, ["nope"])  # no example: names only
    vgg = make("vgg11", in_channels=1)
    with pytest.raises(PlanError, match="every unit of stage features#4"):
        apply_plan(vgg, ["features.10", "features.11"], example=IMAGES)
    with pytest.raises(PlanError, match=r"16x14x14 -> 32x14x14 \(changes the channels\)"):
        apply_plan(vgg, ["features.2"], example=IMAGES)
    assert issubclass(PlanError, LayermodError) and issubclass(PlanError, ValueError)


def test_model_cost_falls_by_the_removed_units():
    model = make("resnet20", in_channels=1)
    units = {u.name: u for u in removable_units(model, IMAGES)}
    before = model_cost(model, IMAGES)
    plan = ["layer1.1", "layer3.1", "layer3.2"]
    after = model_cost(apply_plan(model, plan, example=IMAGES), IMAGES)
    assert before["params"] == sum(p.numel() for p in model.parameters())
    assert before["params"] - after["params"] == sum(units[n].params for n in plan)
    assert 0 < after["flops"] < before["flops"]
    assert before["macs"] == before["flops"] // 2
    assert model_cost(model, IMAGES[:1]) == before  # per sample whatever the batch


def test_flop_convention_is_two_per_multiply_add():
    cost = model_cost(nn.Linear(10, 20), torch.randn(3, 10))
    assert cost == {"params": 220, "macs": 200, "flops": 400}


def test_latency_is_a_positive_float():
    seconds = latency(residual_mlp(), torch.randn(4, 5), repeats=3, warmup=1)
    assert isinstance(seconds, float) and seconds > 0


def test_block_influence():
    model = residual_mlp()
    with torch.no_grad():
        model[3].fc2.weight.zero_()
        model[3].fc2.bias.zero_()
    x = torch.randn(10, 5)
    units = removable_units(model, x)
    scores = block_influence(model, units, x, batch_size=3)
    assert list(scores) == ["1", "2", "3", "4"]
    assert abs(scores["3"]) < 1e-9
    assert all(scores[n] > 1e-4 for n in ("1", "2", "4"))


def test_angular_distance_finds_the_run_that_passes_its_input_on():
    """Blocks 2 and 3 are identities (zeroed output layers): the run (2, 3) has distance 0 and every other run
    more; a distance is arccos(cos)/pi of the run's input and output, averaged over samples (checked by hand)."""
    model = residual_mlp(blocks=5)
    with torch.no_grad():
        for i in (2, 3):
            model[i].fc2.weight.zero_()
            model[i].fc2.bias.zero_()
    x = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    units = removable_units(model, x)
    runs = angular_distances(model, units, x, span=2, batch_size=5)
    assert list(runs) == [("1", "2"), ("2", "3"), ("3", "4"), ("4", "5")]
    assert abs(runs[("2", "3")]) < 1e-6 and all(d > 1e-3 for run, d in runs.items() if run != ("2", "3"))
    with torch.no_grad():  # in the same batches of 5, so that float32 rounds the forward alike
        run_in = torch.cat([model[0](x[i:i + 5]) for i in range(0, 12, 5)]).double()
        run_out = torch.cat([model[2](model[1](model[0](x[i:i + 5]))) for i in range(0, 12, 5)]).double()
    cos = nn.functional.cosine_similarity(run_in, run_out).clamp(-1, 1)
    assert runs[("1", "2")] == pytest.approx(float((torch.arccos(cos) / torch.pi).mean()), abs=1e-9)
    order = method_order("angular", units, scores={"angular": runs})
    assert order[:2] == ["2", "3"] and sorted(order) == ["1", "2", "3", "4", "5"]
    assert select_units(order, units, 2) == ["2", "3"]


def test_pruned_checkpoint_round_trip(tmp_path):
    model = make("smallcnn", in_channels=1)
    x = torch.randn(3, 1, 16, 16)
    pruned = apply_plan(model, ["features.1", "features.7"], example=x)
    args = {"width": 0.25, "in_channels": 1}
    save_checkpoint(pruned, tmp_path / "best", {"arch": "smallcnn", "arch_args": args, "plan": {"remove": ["features.1", "features.7"]}})
    loaded, meta = load_checkpoint(tmp_path / "best")
    assert meta["plan"] == {"remove": ["features.1", "features.7"]}
    assert isinstance(loaded.features[1], nn.Identity)
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned(x))
