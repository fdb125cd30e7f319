"""Checkpoints: safetensors weights + JSON sidecar, strict loading, clear one-line errors."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from layermod import models
from layermod.models.checkpoint import (
    FORMAT,
    VERSION,
    load_checkpoint,
    load_weights,
    read_sidecar,
    save_checkpoint,
    sidecar_path,
    weights_path,
)
from layermod.errors import ModelError, OutputError, WeightsError


def trained_like(name: str = "smallcnn", **kwargs) -> nn.Module:
    """A model whose BN statistics differ from the defaults, so a round trip must carry buffers too."""
    torch.manual_seed(0)
    model = models.create(name, **kwargs)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(16, kwargs.get("in_channels", 1), 12, 12) * 3 + 1)
    return model.eval()


def meta_for(**arch_args) -> dict:
    return {"arch": "smallcnn", "arch_args": arch_args, "epochs": 2, "test_acc": 0.5}


def test_round_trip_identical_outputs(tmp_path):
    model = trained_like(num_classes=5, width=0.5)
    path = save_checkpoint(model, tmp_path / "run" / "best", meta_for(num_classes=5, width=0.5))
    assert path == tmp_path / "run" / "best.safetensors"
    assert path.is_file() and (tmp_path / "run" / "best.json").is_file()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best.json", "best.safetensors"]

    fresh = models.create("smallcnn", num_classes=5, width=0.5).eval()
    x = torch.randn(4, 1, 12, 12)
    assert not torch.allclose(fresh(x), model(x))
    assert load_weights(fresh, path) is fresh
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_sidecar_content(tmp_path):
    meta = meta_for(num_classes=5, width=0.5)
    path = save_checkpoint(trained_like(num_classes=5, width=0.5), tmp_path / "best.safetensors", meta)
    side = json.loads((tmp_path / "best.json").read_text())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert side == {**meta, "format": FORMAT, "version": VERSION, "weights_sha256": digest}
    assert read_sidecar(path) == side
    assert read_sidecar(tmp_path / "best") == side
    assert read_sidecar(tmp_path) == side  # a directory means DIR/best.safetensors
    assert meta == meta_for(num_classes=5, width=0.5)  # caller's dict untouched


def test_load_checkpoint_rebuilds(tmp_path):
    model = trained_like(num_classes=3, in_channels=3, width=0.25)
    meta = {"arch": "smallcnn", "arch_args": {"num_classes": 3, "in_channels": 3, "width": 0.25}}
    save_checkpoint(model, tmp_path / "best", meta)
    loaded, side = load_checkpoint(tmp_path / "best.safetensors")
    assert not loaded.training
    assert side["arch"] == "smallcnn" and side["arch_args"]["num_classes"] == 3
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_load_checkpoint_mlp_with_builder_kwargs(tmp_path):
    torch.manual_seed(0)
    model = models.create("mlp", num_classes=4, depth=2, input_size=64).eval()
    save_checkpoint(model, tmp_path / "m", {"arch": "mlp", "arch_args": {"num_classes": 4, "depth": 2, "input_size": 64}})
    loaded, _ = load_checkpoint(tmp_path / "m")
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))


def test_load_checkpoint_errors(tmp_path):
    save_checkpoint(trained_like(), tmp_path / "a", {"note": "no arch"})
    with pytest.raises(WeightsError, match="names no 'arch'"):
        load_checkpoint(tmp_path / "a")
    save_checkpoint(trained_like(), tmp_path / "b", {"arch": "nosuchnet", "arch_args": {}})
    with pytest.raises(ModelError, match="available"):
        load_checkpoint(tmp_path / "b")


def test_wrong_width_reports_shape_mismatches(tmp_path):
    path = save_checkpoint(trained_like(width=0.5), tmp_path / "best", meta_for(width=0.5))
    wide = models.create("smallcnn", width=1.0)
    before = {k: v.clone() for k, v in wide.state_dict().items()}
    with pytest.raises(WeightsError) as info:
        load_weights(wide, path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert "do not match the model" in message
    assert "shape mismatches" in message
    assert "features.0.conv.weight: file (8,1,3,3) vs model (16,1,3,3)" in message
    detail = message.split(" do not match the model: ")[1]
    assert "missing" not in detail and "unexpected" not in detail
    assert message.count(" vs model ") == 3  # at most 3 names listed
    assert ", ..." in message
    # a failed load leaves the model untouched
    assert all(torch.equal(before[k], v) for k, v in wide.state_dict().items())


def test_wrong_class_count_names_classifier(tmp_path):
    path = save_checkpoint(trained_like(num_classes=10), tmp_path / "best", meta_for())
    with pytest.raises(WeightsError) as info:
        load_weights(models.create("smallcnn", num_classes=5), path)
    message = str(info.value)
    assert "2 shape mismatches" in message
    assert "classifier.weight: file (10,64) vs model (5,64)" in message
    assert "classifier.bias: file (10) vs model (5)" in message


def test_missing_and_unexpected_keys(tmp_path):
    path = save_checkpoint(trained_like(convs=(2, 2, 2)), tmp_path / "best", meta_for())
    shallow = models.create("smallcnn", convs=(2, 2, 1))  # features.7 absent
    with pytest.raises(WeightsError) as info:
        load_weights(shallow, path)
    message = str(info.value).split(" do not match the model: ")[1]
    assert "6 unexpected (features.7.bn.bias, features.7.bn.num_batches_tracked, features.7.bn.running_mean, ...)" in message
    assert "missing" not in message

    path2 = save_checkpoint(trained_like(convs=(2, 2, 1)), tmp_path / "small", meta_for())
    with pytest.raises(WeightsError, match=r"6 missing keys \(features\.7\.conv\.weight, .*\.\.\.\)"):
        load_weights(models.create("smallcnn"), path2)


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="not found") as info:
        load_weights(models.create("smallcnn"), tmp_path / "nope.safetensors")
    assert str(tmp_path / "nope.safetensors") in str(info.value)
    with pytest.raises(WeightsError, match="sidecar .* not found"):
        read_sidecar(tmp_path / "nope")
    with pytest.raises(WeightsError, match="not found"):
        load_checkpoint(tmp_path / "nope")


@pytest.mark.parametrize("content", [b"", b"garbage bytes, not a safetensors header", b"\xff" * 64])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(WeightsError) as info:
        load_weights(models.create("smallcnn"), path)
    message = str(info.value)
    assert "unreadable or corrupt" in message and str(path) in message
    assert "\n" not in message


def test_truncated_file(tmp_path):
    path = save_checkpoint(trained_like(), tmp_path / "best", meta_for())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="best.safetensors does not belong to best.json"):
        load_weights(models.create("smallcnn"), path)
    (tmp_path / "best.json").unlink()
    with pytest.raises(WeightsError, match="unreadable or corrupt"):
        load_weights(models.create("smallcnn"), path)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_pickle_files_refused_unopened(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    # a payload that would run code if it were ever unpickled
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    with pytest.raises(WeightsError) as info:
        load_weights(models.create("smallcnn"), path)
    message = str(info.value)
    assert "safetensors" in message and "pickle" in message and str(path) in message
    assert not (tmp_path / "pwned").exists()


def test_other_suffix_refused(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"x")
    with pytest.raises(WeightsError, match="not a .safetensors file"):
        load_weights(models.create("smallcnn"), path)


def test_corrupt_sidecar(tmp_path):
    path = save_checkpoint(trained_like(), tmp_path / "best", meta_for())
    side = tmp_path / "best.json"
    side.write_text("{not json")
    with pytest.raises(WeightsError, match="not valid JSON"):
        read_sidecar(path)
    side.write_text("[1, 2]")
    with pytest.raises(WeightsError, match="JSON object"):
        read_sidecar(path)
    side.write_text(json.dumps({"arch": "smallcnn"}))
    with pytest.raises(WeightsError, match="format"):
        read_sidecar(path)
    side.write_text(json.dumps({"format": FORMAT, "version": VERSION + 1}))
    with pytest.raises(WeightsError, match="version"):
        read_sidecar(path)


def test_meta_must_be_json(tmp_path):
    with pytest.raises(WeightsError, match="JSON"):
        save_checkpoint(trained_like(), tmp_path / "best", {"arch": "smallcnn", "bad": object()})
    with pytest.raises(WeightsError, match="JSON"):
        save_checkpoint(trained_like(), tmp_path / "best", {"acc": float("nan")})
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_save_refuses_pickle_suffix_and_unwritable_dir(tmp_path):
    with pytest.raises(WeightsError, match="safetensors"):
        save_checkpoint(trained_like(), tmp_path / "best.pt", meta_for())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="choose another path"):
        save_checkpoint(trained_like(), blocker / "best", meta_for())


def test_overwrite_replaces_both_files(tmp_path):
    save_checkpoint(trained_like(width=0.5), tmp_path / "best", meta_for(width=0.5))
    model = trained_like(width=0.25)
    save_checkpoint(model, tmp_path / "best", meta_for(width=0.25))
    loaded, meta = load_checkpoint(tmp_path / "best")
    assert meta["arch_args"] == {"width": 0.25}
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.safetensors"]


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 6, bias=False)
        self.head = nn.Linear(4, 6, bias=False)
        self.head.weight = self.embed.weight  # shared parameter under two keys
        self.register_buffer("view", torch.arange(12.0)[2:8].reshape(2, 3))  # view into a larger storage
        self.register_buffer("strided", torch.arange(6.0).reshape(2, 3).t())  # non-contiguous


def test_shared_and_strided_tensors(tmp_path):
    model = Tied()
    path = save_checkpoint(model, tmp_path / "tied", {})
    stored = load_file(str(path))
    assert set(stored) == {"embed.weight", "head.weight", "view", "strided"}
    fresh = Tied()
    nn.init.zeros_(fresh.embed.weight)
    fresh.view.zero_()
    fresh.strided.zero_()
    load_weights(fresh, path)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    assert fresh.head.weight is fresh.embed.weight


def test_load_casts_dtype_and_keeps_device(tmp_path):
    model = trained_like()
    path = tmp_path / "half.safetensors"
    save_file({k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}, str(path))
    fresh = models.create("smallcnn")
    load_weights(fresh, path)
    assert fresh.classifier.weight.dtype == torch.float32
    assert torch.allclose(fresh.classifier.weight, model.classifier.weight, atol=1e-2)


def test_path_resolution(tmp_path):
    assert weights_path(tmp_path / "best") == tmp_path / "best.safetensors"
    assert weights_path(tmp_path / "best.safetensors") == tmp_path / "best.safetensors"
    assert weights_path(tmp_path) == tmp_path / "best.safetensors"
    assert weights_path(tmp_path / "m.v2") == tmp_path / "m.v2.safetensors"
    assert sidecar_path(tmp_path / "m.v2.safetensors") == tmp_path / "m.v2.json"


def test_load_checkpoint_rebuilds_a_pruned_model(tmp_path):
    from layermod.pruning.units import apply_plan

    pruned = apply_plan(trained_like(num_classes=3, width=0.25), ["features.1", "features.4"])
    meta = {"arch": "smallcnn", "arch_args": {"num_classes": 3, "width": 0.25},
            "plan": {"remove": ["features.1", "features.4"]}}
    save_checkpoint(pruned, tmp_path / "pruned", meta)
    loaded, _ = load_checkpoint(tmp_path / "pruned")
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned(x))
    assert isinstance(loaded.features[1], nn.Identity)
