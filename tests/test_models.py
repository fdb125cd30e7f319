"""Model registry and the small built-in models; fileio helpers."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from layermod import models
from layermod.models import _registry
from layermod.errors import ModelError, OutputError
from layermod.io.files import atomic_path, ensure_writable_dir


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------------ registry


def test_available_lists_builtins_sorted():
    names = models.available()
    assert names == sorted(names)
    assert {"smallcnn", "mlp"} <= set(names)


def test_create_returns_module_and_is_case_insensitive():
    assert isinstance(models.create("smallcnn"), models.small.SmallCNN)
    assert isinstance(models.create("MLP"), models.small.MLP)


def test_unknown_name_lists_available_and_suggests_closest():
    with pytest.raises(ModelError) as info:
        models.create("smalcnn")
    message = str(info.value)
    assert "\n" not in message
    assert "'smalcnn'" in message
    assert "did you mean 'smallcnn'" in message
    for name in models.available():
        assert name in message


def test_unknown_name_without_close_match_has_no_suggestion():
    with pytest.raises(ModelError, match="available: ") as info:
        models.create("zzzzzzzz")
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": -3}, "num_classes"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"in_channels": 0}, "in_channels"),
        ({"width": 0}, "width"),
        ({"width": -1.0}, "width"),
        ({"width": float("nan")}, "width"),
        ({"no_such_option": 1}, "no_such_option"),
        ({"convs": (2, 0, 2)}, "convs"),
        ({"convs": ()}, "convs"),
    ],
)
def test_bad_arguments_raise_model_error(kwargs, fragment):
    with pytest.raises(ModelError, match=fragment):
        models.create("smallcnn", **kwargs)


def test_mlp_bad_depth():
    with pytest.raises(ModelError, match="depth"):
        models.create("mlp", depth=-1)


def test_register_new_builder_and_refuse_name_clash():
    @models.register("test-tiny-linear")
    def tiny(*, num_classes, in_channels, width, features=4):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * features, num_classes))

    try:
        assert "test-tiny-linear" in models.available()
        net = models.create("test-tiny-linear", num_classes=3, in_channels=2, features=5)
        assert net(torch.zeros(7, 2, 5)).shape == (7, 3)
        with pytest.raises(ModelError, match="already registered"):

            @models.register("test-tiny-linear")
            def other(*, num_classes, in_channels, width):
                return nn.Identity()

    finally:
        _registry._REGISTRY.pop("test-tiny-linear", None)
    assert "test-tiny-linear" not in models.available()


# -------------------------------------------------------------------------------------------- the models


@pytest.mark.parametrize("size", [28, 8])
@pytest.mark.parametrize("channels", [1, 3])
def test_smallcnn_output_shape(size, channels):
    model = models.create("smallcnn", num_classes=7, in_channels=channels).eval()
    with torch.no_grad():
        out = model(torch.randn(5, channels, size, size))
    assert out.shape == (5, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [28, 8])
@pytest.mark.parametrize("channels", [1, 3])
def test_mlp_output_shape(size, channels):
    model = models.create("mlp", num_classes=4, in_channels=channels, input_size=size * size).eval()
    with torch.no_grad():
        out = model(torch.randn(6, channels, size, size))
    assert out.shape == (6, 4)
    first = model.features[0].fc
    assert first.in_features == channels * size * size


def test_smallcnn_structure():
    model = models.create("smallcnn")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 6
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 64, 64]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 6
    assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == 64
    assert not any(getattr(m, "inplace", False) for m in model.modules())


def test_smallcnn_convs_per_stage():
    model = models.create("smallcnn", convs=[1, 2, 1])
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [16, 32, 32, 64]
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_mlp_structure():
    model = models.create("mlp", depth=3)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 4
    assert [m.out_features for m in linears[:-1]] == [256] * 3
    assert linears[0].in_features == 28 * 28
    assert models.create("mlp", depth=0)(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", ["smallcnn", "mlp"])
def test_width_scales_parameters(name):
    half, full, double = (n_params(models.create(name, width=w)) for w in (0.5, 1.0, 2.0))
    assert half < full < double


def test_width_rounds_channels_and_keeps_at_least_one():
    convs = [m.out_channels for m in models.create("smallcnn", width=0.5).modules() if isinstance(m, nn.Conv2d)]
    assert convs == [8, 8, 16, 16, 32, 32]
    tiny = models.create("smallcnn", width=0.001)
    assert all(m.out_channels == 1 for m in tiny.modules() if isinstance(m, nn.Conv2d))
    assert tiny(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert models.create("mlp", width=0.5).features[0].fc.out_features == 128


def test_same_seed_same_init():
    torch.manual_seed(1)
    a = models.create("smallcnn")
    torch.manual_seed(1)
    b = models.create("smallcnn")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ------------------------------------------------------------------------------------------------ fileio


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"  # not replaced before the block ends
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_path_leaves_nothing_on_exception(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []

    target.write_text("keep")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "keep"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_without_write_keeps_target(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("keep")
    with atomic_path(target):
        pass
    assert target.read_text() == "keep"


def test_ensure_writable_dir_creates_parents(tmp_path):
    d = ensure_writable_dir(tmp_path / "a" / "b")
    assert d.is_dir() and d == tmp_path / "a" / "b"
    assert list(d.iterdir()) == []  # the probe file is gone
    assert ensure_writable_dir(d) == d  # existing directory is fine


def test_ensure_writable_dir_under_regular_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for path in (blocker / "sub", blocker):
        with pytest.raises(OutputError) as info:
            ensure_writable_dir(path)
        message = str(info.value)
        assert message.startswith(f"cannot write to {path}: ")
        assert message.endswith("; choose another path")
        assert "\n" not in message


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write to read-only dirs")
def test_ensure_writable_dir_read_only(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="choose another path"):
            ensure_writable_dir(locked)
        with pytest.raises(OutputError, match="choose another path"):
            ensure_writable_dir(locked / "child")
    finally:
        locked.chmod(0o700)
