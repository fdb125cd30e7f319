"""The paper's model zoo: CIFAR-style VGG-BN (11/13/16/19), ResNet18..152 and He et al.'s ResNet20..110."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import layermod as lm
from layermod import models
from layermod.errors import ModelError
from layermod.extract.layers import residual_blocks
from layermod.models.resnet import BasicBlock, Bottleneck, ResNet
from layermod.models.vgg import VGG

VGGS = {"vgg11": 11, "vgg13": 13, "vgg16": 16, "vgg19": 19}
WIDE = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3], "resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3], "resnet152": [3, 8, 36, 3]}
CIFAR = {"resnet20": [3, 3, 3], "resnet32": [5, 5, 5], "resnet44": [7, 7, 7], "resnet56": [9, 9, 9], "resnet110": [18, 18, 18]}
ZOO = [*VGGS, *WIDE, *CIFAR]
# configurations A, B, D and E of Simonyan & Zisserman (2015), Table 1: conv widths, "M" a 2x2 max-pool; written
# out here rather than read from layermod.models.vgg, so the counts below check the module against the paper
VGG_CFGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
SMALL = 0.125  # width for forward passes: tiny but every structural choice intact


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def full_size(name: str, **kwargs) -> nn.Module:
    """Full-width model on the meta device: real parameter shapes, no memory, no init cost."""
    with torch.device("meta"):
        return models.create(name, **kwargs)


# ------------------------------------------------------------------------ parameter counts derived by hand


def conv_bn(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + 2 * cout  # conv without bias + BatchNorm weight and bias


def linear(fin: int, fout: int) -> int:
    return fin * fout + fout


def vgg_count(cfg, in_channels: int, num_classes: int) -> int:
    total, c = 0, in_channels
    for v in cfg:
        if v != "M":
            total += conv_bn(c, v, 3)
            c = v
    return total + linear(c, num_classes)


def basic_count(cin: int, planes: int, stride: int) -> int:
    shortcut = conv_bn(cin, planes, 1) if stride != 1 or cin != planes else 0
    return conv_bn(cin, planes, 3) + conv_bn(planes, planes, 3) + shortcut


def bottleneck_count(cin: int, planes: int, stride: int) -> int:
    out = 4 * planes
    shortcut = conv_bn(cin, out, 1) if stride != 1 or cin != out else 0
    return conv_bn(cin, planes, 1) + conv_bn(planes, planes, 3) + conv_bn(planes, out, 1) + shortcut


def resnet_count(blocks, widths, stem: int, bottleneck: bool, in_channels: int, num_classes: int) -> int:
    total, c = conv_bn(in_channels, stem, 3), stem
    for stage, (n, planes) in enumerate(zip(blocks, widths)):
        for j in range(n):
            stride = 2 if stage > 0 and j == 0 else 1
            if bottleneck:
                total += bottleneck_count(c, planes, stride)
                c = 4 * planes
            else:
                total += basic_count(c, planes, stride)
                c = planes
    return total + linear(c, num_classes)


def hand_count(name: str, in_channels: int = 3, num_classes: int = 10) -> int:
    if name in VGGS:
        return vgg_count(VGG_CFGS[VGGS[name]], in_channels, num_classes)
    if name in WIDE:
        return resnet_count(WIDE[name], (64, 128, 256, 512), 64, name in ("resnet50", "resnet101", "resnet152"), in_channels, num_classes)
    return resnet_count(CIFAR[name], (16, 32, 64), 16, False, in_channels, num_classes)


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("in_channels, num_classes", [(3, 10), (3, 100), (1, 10)])
def test_parameter_count_matches_the_architecture_exactly(name, in_channels, num_classes):
    model = full_size(name, in_channels=in_channels, num_classes=num_classes)
    assert n_params(model) == hand_count(name, in_channels, num_classes)


@pytest.mark.parametrize(
    "name, low, high",
    [
        ("vgg16", 14.0e6, 15.5e6),
        ("resnet18", 11.16e6, 11.18e6),
        ("resnet50", 23.5e6, 23.54e6),
        ("resnet56", 0.84e6, 0.87e6),
    ],
)
def test_cifar10_parameter_counts_match_the_usual_figures(name, low, high):
    assert low <= n_params(full_size(name, in_channels=3, num_classes=10)) <= high


def test_cifar10_parameter_counts_exact():
    # kuangliu/pytorch-cifar's ResNet18 / ResNet50 (same design: 3x3 stem, no max-pool, projection shortcuts);
    # its VGG16 has conv biases, 14,728,266 - (64*2 + 128*2 + 256*3 + 512*6) = 14,724,042 without them.
    # ResNet56 with option-B shortcuts: option A's 853,018 + (16*32 + 2*32) + (32*64 + 2*64) = 855,770.
    expected = {"resnet18": 11_173_962, "resnet50": 23_520_842, "vgg16": 14_724_042, "resnet56": 855_770}
    for name, count in expected.items():
        assert n_params(full_size(name, in_channels=3, num_classes=10)) == count, name


# ---------------------------------------------------------------------------------------------- registry


def test_registry_lists_the_whole_zoo():
    # the paper's 14 models and the two small ones, nothing missing and nothing else
    assert sorted(models.available()) == sorted([*ZOO, "mlp", "smallcnn"])


@pytest.mark.parametrize("name", ZOO)
def test_classes_and_attributes(name):
    model = models.create(name, width=SMALL)
    if name in VGGS:
        assert isinstance(model, VGG)
        assert model.cfg == VGG_CFGS[VGGS[name]]
        assert sum(v != "M" for v in model.cfg) + 3 == VGGS[name]  # the paper's depth counts its 3 FC layers
        assert isinstance(model.classifier, nn.Linear)
    else:
        blocks = {**WIDE, **CIFAR}[name]
        assert isinstance(model, ResNet)
        assert model.blocks == blocks
        assert isinstance(model.fc, nn.Linear)
        assert [len(stage) for stage in model.stages()] == blocks
        assert [len(getattr(model, f"layer{i + 1}")) for i in range(len(blocks))] == blocks
        kind = Bottleneck if name in ("resnet50", "resnet101", "resnet152") else BasicBlock
        assert all(isinstance(b, kind) for stage in model.stages() for b in stage)
    assert model.width == SMALL


# --------------------------------------------------------------------------------------- forward passes


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_output_shape(name, shape):
    torch.manual_seed(0)
    model = models.create(name, num_classes=7, in_channels=shape[0], width=SMALL).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("side, sizes", [(28, [14, 7, 4, 2, 1]), (32, [16, 8, 4, 2, 1])])
def test_vgg_pools_cope_with_28x28(side, sizes):
    model = models.create("vgg11", in_channels=1, width=SMALL)
    calls = lm.trace_calls(model, torch.randn(2, 1, side, side))
    pools = [n for n, m in model.features.named_children() if isinstance(m, nn.MaxPool2d)]
    assert [calls[f"features.{p}"].shape[-1] for p in pools] == sizes


# ---------------------------------------------------------------------------------- measurement points


def expected_points(name: str) -> list[str]:
    if name in VGGS:
        return [f"features.{i}.conv" for i, v in enumerate(VGG_CFGS[VGGS[name]]) if v != "M"]
    blocks = {**WIDE, **CIFAR}[name]
    return ["conv1"] + [f"layer{s + 1}.{j}" for s, n in enumerate(blocks) for j in range(n)]


@pytest.mark.parametrize(
    "name, count",
    [("vgg11", 8), ("vgg13", 10), ("vgg16", 13), ("vgg19", 16),
     ("resnet18", 9), ("resnet34", 17), ("resnet50", 17), ("resnet101", 34), ("resnet152", 51),
     ("resnet20", 10), ("resnet32", 16), ("resnet44", 22), ("resnet56", 28), ("resnet110", 55)],
)  # fmt: skip
def test_auto_points_are_stem_and_blocks_or_every_conv_in_forward_order(name, count):
    model = models.create(name, in_channels=3, width=SMALL)
    calls = lm.trace_calls(model, torch.randn(2, 3, 32, 32))
    points = lm.auto_layers(model, calls)
    assert len(points) == count
    assert points == expected_points(name)
    orders = [calls[p].order for p in points]
    assert orders == sorted(orders)
    assert lm.select_layers(model, "auto", calls) == points
    if name not in VGGS:
        assert sorted(residual_blocks(model)) == sorted(points[1:])
        assert isinstance(model.get_submodule(points[0]), nn.Conv2d)


def test_point_shapes_follow_the_stages():
    model = models.create("resnet18", in_channels=3, width=SMALL)
    calls = lm.trace_calls(model, torch.randn(2, 3, 32, 32))
    shapes = {p: calls[p].shape for p in lm.auto_layers(model, calls)}
    assert shapes["conv1"] == (2, 8, 32, 32)
    assert shapes["layer1.1"] == (2, 8, 32, 32)
    assert shapes["layer2.0"] == (2, 16, 16, 16)
    assert shapes["layer3.1"] == (2, 32, 8, 8)
    assert shapes["layer4.1"] == (2, 64, 4, 4)
    model = models.create("resnet50", in_channels=1, width=SMALL)
    calls = lm.trace_calls(model, torch.randn(2, 1, 28, 28))
    assert calls["layer1.0"].shape == (2, 32, 28, 28)  # bottleneck expansion 4
    assert calls["layer4.2"].shape == (2, 256, 4, 4)  # 28 -> 14 -> 7 -> 4


# --------------------------------------------------------------------------------------------- details


@pytest.mark.parametrize("name, projections", [("resnet18", 3), ("resnet50", 4), ("resnet56", 2), ("resnet110", 2)])
def test_projection_shortcut_only_where_the_shape_changes(name, projections):
    model = models.create(name, width=SMALL)
    shortcuts = [b.shortcut for stage in model.stages() for b in stage]
    convs = [s for s in shortcuts if not isinstance(s, nn.Identity)]
    assert len(convs) == projections
    for s in convs:
        assert isinstance(s.conv, nn.Conv2d) and s.conv.kernel_size == (1, 1)
        assert isinstance(s.bn, nn.BatchNorm2d)
    for stage in model.stages():
        assert all(isinstance(b.shortcut, nn.Identity) for b in list(stage)[1:])


@pytest.mark.parametrize("name", ["vgg11", "resnet20", "resnet50"])
def test_init_and_no_inplace_relu_no_conv_bias(name):
    model = models.create(name, width=SMALL)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
        elif isinstance(m, nn.ReLU):
            assert not m.inplace
        elif isinstance(m, nn.Conv2d):
            assert m.bias is None
            std = (2.0 / (m.out_channels * m.kernel_size[0] * m.kernel_size[1])) ** 0.5  # kaiming, fan_out
            if m.weight.numel() >= 500:
                assert 0.6 * std < m.weight.std().item() < 1.4 * std


def test_vgg_units_are_conv_bn_relu_and_the_stem_has_no_pool():
    model = models.create("vgg16", width=SMALL)
    for entry, child in zip(model.cfg, model.features):
        if entry == "M":
            assert isinstance(child, nn.MaxPool2d) and child.ceil_mode
        else:
            assert [n for n, _ in child.named_children()] == ["conv", "bn", "relu"]
            assert child.conv.out_channels == round(entry * SMALL)
    resnet = full_size("resnet18")
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in resnet.modules())
    assert resnet.conv1.kernel_size == (3, 3) and resnet.conv1.stride == (1, 1)


def test_width_scales_channels():
    assert full_size("vgg11", width=0.5).classifier.in_features == 256
    assert full_size("resnet18", width=2).fc.in_features == 1024
    assert full_size("resnet50", width=0.5).fc.in_features == 1024
    assert full_size("resnet56", width=4).fc.in_features == 256
    assert models.create("resnet20", width=0.01).conv1.out_channels == 1  # never below one channel


# ------------------------------------------------------------------------------------ pruned rebuilds


def test_vgg_cfg_override_rebuilds_a_pruned_vgg():
    cfg = list(VGG_CFGS[19])
    del cfg[-2]  # VGG19 minus its last conv
    del cfg[-2]
    cfg = json.loads(json.dumps(cfg))  # as read back from a checkpoint sidecar
    model = models.create("vgg19", in_channels=3, width=SMALL, cfg=cfg)
    assert model.cfg == cfg
    calls = lm.trace_calls(model, torch.randn(2, 3, 32, 32))
    assert len(lm.auto_layers(model, calls)) == 14
    assert n_params(full_size("vgg19", in_channels=3, cfg=cfg)) == vgg_count(cfg, 3, 10)
    assert models.create("vgg11", cfg=[8, "m", 16]).cfg == [8, "M", 16]


def test_resnet_blocks_override_rebuilds_a_pruned_resnet():
    base = models.create("resnet56", width=SMALL)
    pruned = models.create("resnet56", width=SMALL, blocks=[9, 9, 8])
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("layer3.8.")}
    pruned.load_state_dict(state, strict=True)  # dropping a non-downsampling block keeps every other tensor
    calls = lm.trace_calls(pruned, torch.randn(2, 1, 28, 28))
    assert len(lm.auto_layers(pruned, calls)) == 27
    short = full_size("resnet152", blocks=[3, 8, 6, 3])  # ResNet152 minus 30 third-stage blocks
    assert short.blocks == [3, 8, 6, 3]
    assert n_params(short) == resnet_count([3, 8, 6, 3], (64, 128, 256, 512), 64, True, 1, 10)
    assert len(models.create("resnet18", width=SMALL, blocks=(1, 1, 1, 1)).layer4) == 1


@pytest.mark.parametrize(
    "name, kwargs, fragment",
    [
        ("vgg16", {"cfg": []}, "cfg"),
        ("vgg16", {"cfg": ["M", "M"]}, "no convolution"),
        ("vgg16", {"cfg": [64, 0, "M"]}, "cfg"),
        ("vgg16", {"cfg": [64, 2.5]}, "cfg"),
        ("vgg16", {"cfg": [64, True]}, "cfg"),
        ("vgg16", {"cfg": [64, "X"]}, "cfg"),
        ("vgg16", {"cfg": "64M"}, "cfg"),
        ("vgg16", {"cfg": 64}, "cfg"),
        ("vgg16", {"blocks": [2, 2]}, "blocks"),
        ("resnet18", {"blocks": [2, 2, 2]}, "4 stages"),
        ("resnet56", {"blocks": [9, 9, 9, 9]}, "3 stages"),
        ("resnet56", {"blocks": [9, 0, 9]}, "at least one block"),
        ("resnet56", {"blocks": [9, 2.0, 9]}, "blocks"),
        ("resnet56", {"blocks": 9}, "blocks"),
        ("resnet56", {"blocks": "999"}, "blocks"),
        ("resnet56", {"cfg": [16]}, "cfg"),
        ("resnet18", {"depth": 18}, "depth"),
        ("resnet18", {"width": 0}, "width"),
    ],
)
def test_bad_arguments_raise_model_error(name, kwargs, fragment):
    with pytest.raises(ModelError, match=fragment) as info:
        models.create(name, **kwargs)
    assert "\n" not in str(info.value)
