"""Third-party model specs (torchvision:NAME, timm:NAME, hf:DIR) against the real libraries, at tiny sizes, with
random weights and no network: building, the CLI, --pretrained offline, checkpoints and their sidecars."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import layermod as lm
from hf_models import tiny_bert_dir, tiny_gpt2_dir, tiny_vit_dir
from layermod.cli import main
from layermod.data.hfhub import load_tokenizer
from layermod.errors import ModelError, WeightsError
from layermod.models import hub
from layermod.models.checkpoint import load_checkpoint, read_sidecar, save_checkpoint
from layermod.models.spec import resolve_model

pytest.importorskip("torchvision")
pytest.importorskip("timm")
pytest.importorskip("transformers")


@pytest.fixture
def images_npz(tmp_path):
    """3 classes of 3x32x32 images, 12 each, told apart by their mean colour."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 12)
    x = rng.normal(0.0, 0.3, size=(36, 3, 32, 32)) + np.eye(3)[y][:, :, None, None]
    path = tmp_path / "images.npz"
    np.savez(path, X=x.astype(np.float32), y=y)
    return path


def one_line(capsys, *fragments: str) -> str:
    """The command's stderr: one line holding every fragment."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def curve(tmp_path, images_npz, *model: str, name: str = "run") -> dict:
    out = tmp_path / name
    assert main(["curve", *model, "--dataset", str(images_npz), "--n-per-class", "6", "--repeats", "1",
                 "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    return json.loads((out / "curve.json").read_text())


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------- torchvision, timm


@pytest.mark.parametrize("spec", ["torchvision:resnet18", "torchvision:vgg11_bn", "timm:resnet18"])
def test_library_models_build_with_the_classes_and_are_seeded(spec):
    model, description = resolve_model(spec, arch_args={"num_classes": 3}, seed=1)
    assert description == {"model": spec, "arch_args": {"num_classes": 3}}
    assert not model.training and model(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    again, _ = resolve_model(spec, arch_args={"num_classes": 3}, seed=1)
    other, _ = resolve_model(spec, arch_args={"num_classes": 3}, seed=2)
    assert same_weights(model, again) and not same_weights(model, other)


def test_timm_takes_in_channels_and_its_own_arguments():
    model, _ = resolve_model("timm:resnet18", arch_args={"num_classes": 4, "in_channels": 1})
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 4)
    vit, description = resolve_model("timm:vit_tiny_patch16_224", arch_args={"num_classes": 3, "img_size": 32})
    assert vit(torch.rand(2, 3, 32, 32)).shape == (2, 3) and description["arch_args"]["img_size"] == 32


def test_curve_of_a_torchvision_model_on_the_command_line(tmp_path, images_npz):
    data = curve(tmp_path, images_npz, "--model", "torchvision:resnet18", "--num-classes", "3", "--in-channels", "3")
    assert data["config"]["model"] == "torchvision:resnet18" and len(data["layers"]) >= 3
    assert data["config"]["arch_args"] == {"num_classes": 3, "in_channels": 3}
    again = curve(tmp_path, images_npz, "--model", "torchvision:resnet18", "--num-classes", "3", "--in-channels", "3",
                  name="again")
    assert again["values"] == data["values"]  # seeded random weights


def test_curve_of_a_timm_vit_with_an_arch_arg(tmp_path, images_npz):
    data = curve(tmp_path, images_npz, "--model", "timm:vit_tiny_patch16_224", "--num-classes", "3",
                 "--arch-arg", "img_size=32")
    assert data["config"]["arch_args"] == {"num_classes": 3, "img_size": 32}


@pytest.mark.parametrize(("args", "fragments"), [
    (["--model", "torchvision:resnet18", "--in-channels", "1"], ["3 input channels", "timm:resnet18"]),
    (["--model", "torchvision:nosuchnet"], ["torchvision has no model", "list_models"]),
    (["--model", "timm:nosuchnet"], ["timm has no model"]),
    (["--model", "timm:hf-hub:org/x"], ["timm has no model", "hf:"]),
    (["--model", "timm:resnet18", "--width", "0.5"], ["takes no width", "--arch-arg"]),
    (["--model", "timm:resnet18", "--arch-arg", "checkpoint_path=/tmp/x.pth"], ["checkpoint_path", "--pretrained"]),
    (["--model", "timm:resnet18", "--arch-arg", "no_such_argument=1"], ["timm cannot build resnet18"]),
    (["--model", "timm:resnet18", "--hf-task", "text-classification"], ["--hf-task is for hf:"]),
    (["--model", "mlp", "--pretrained"], ["--pretrained loads the weights of a torchvision:"]),
])
def test_bad_library_options_are_one_line(tmp_path, images_npz, capsys, args, fragments):
    assert main(["curve", *args, "--dataset", str(images_npz), "--out", str(tmp_path / "x")]) == 2
    one_line(capsys, *fragments)


def test_pretrained_offline_is_one_line(tmp_path, images_npz, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no cached weights: torchvision must download
    assert main(["curve", "--model", "torchvision:resnet18", "--pretrained", "--dataset", str(images_npz),
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("layermod: error: cannot download torchvision's weights of resnet18"), err
    assert "reachable" in err[-1] and not any("Traceback" in line for line in err)
    assert all(line.startswith(("layermod:", "Downloading:")) for line in err), err  # torch.hub says where it looked


def test_pretrained_hub_id_offline_is_one_line(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail at once, not after retries
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelError, match="point hf: at a local save_pretrained directory, or run where the hub"):
        resolve_model("hf:someone/no-such-model", pretrained=True)
    with pytest.raises(ModelError, match="no directory"):
        resolve_model("hf:./no/such/dir")


# ------------------------------------------------------------------------------------------- transformers


def test_hf_directory_builds_random_or_its_weights(tmp_path):
    vit = tiny_vit_dir(tmp_path / "vit", num_labels=3)
    random_a, description = resolve_model(f"hf:{vit}", seed=1)  # (the directory's weights were drawn with seed 0)
    random_b, _ = resolve_model(f"hf:{vit}", seed=1)
    loaded, loaded_description = resolve_model(f"hf:{vit}", pretrained=True)
    assert isinstance(random_a, hub.HFModel) and type(random_a.model).__name__ == "ViTForImageClassification"
    assert description == {"model": f"hf:{vit.resolve()}", "arch_args": {}}
    assert loaded_description["pretrained"] is True
    assert same_weights(random_a, random_b) and not same_weights(random_a, loaded)
    from transformers import ViTForImageClassification

    reference = ViTForImageClassification.from_pretrained(str(vit), use_safetensors=True).eval()
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(loaded(x), reference(x).logits)


def test_hf_task_classes_and_channels(tmp_path):
    bert = tiny_bert_dir(tmp_path / "bert", num_labels=None)  # a BertModel: features by default
    model, _ = resolve_model(f"hf:{bert}")
    assert type(model.model).__name__ == "BertModel" and model(torch.randint(0, 19, (2, 7))).shape == (2, 7, 16)
    model, _ = resolve_model(f"hf:{bert}", arch_args={"hf_task": "text-classification", "num_classes": 4})
    assert model(torch.randint(0, 19, (2, 7))).shape == (2, 4)
    mask = torch.ones(2, 7, dtype=torch.long)
    assert model({"input_ids": torch.randint(0, 19, (2, 7)), "attention_mask": mask}).shape == (2, 4)
    with pytest.raises(ModelError, match="has no classes; pass hf_task="):
        resolve_model(f"hf:{bert}", arch_args={"num_classes": 4})
    with pytest.raises(ModelError, match="takes no input channels"):
        resolve_model(f"hf:{bert}", arch_args={"in_channels": 3})
    with pytest.raises(ModelError, match="unknown hf_task"):
        resolve_model(f"hf:{bert}", arch_args={"hf_task": "translation"})
    gpt2, _ = resolve_model(f"hf:{tiny_gpt2_dir(tmp_path / 'gpt2')}")
    assert type(gpt2.model).__name__ == "GPT2LMHeadModel"
    vit, _ = resolve_model(f"hf:{tiny_vit_dir(tmp_path / 'vit')}", arch_args={"in_channels": 1, "num_classes": 2})
    assert vit(torch.rand(2, 1, 32, 32)).shape == (2, 2)
    shallow, _ = resolve_model(f"hf:{tmp_path / 'vit'}", arch_args={"num_hidden_layers": 1})  # a config attribute
    assert sum(type(module).__name__ == "ViTLayer" for module in shallow.modules()) == 1
    with pytest.raises(ModelError, match="config has no attribute 'no_such_field'"):
        resolve_model(f"hf:{tmp_path / 'vit'}", arch_args={"no_such_field": 1})


def test_an_hf_directory_is_rebuilt_as_the_class_its_config_names(tmp_path, capsys):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=30, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2)
    T5EncoderModel(config).save_pretrained(str(tmp_path / "t5"), safe_serialization=True)
    ids = torch.randint(0, 30, (2, 6))
    for task in ({}, {"hf_task": "feature-extraction"}):
        model, _ = resolve_model(f"hf:{tmp_path / 't5'}", arch_args=task)
        assert type(model.model).__name__ == "T5EncoderModel" and model(ids).shape == (2, 6, 16)
    loaded, _ = resolve_model(f"hf:{tmp_path / 't5'}", pretrained=True)
    assert type(loaded.model).__name__ == "T5EncoderModel"
    config_file = tmp_path / "t5" / "config.json"
    saved = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**saved, "architectures": ["T5Model"]}))  # an encoder-decoder
    model, _ = resolve_model(f"hf:{tmp_path / 't5'}")
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with pytest.raises(ModelError, match=r"T5Model takes input_ids, attention_mask, decoder_input_ids, "
                       r"decoder_attention_mask; given input_ids, attention_mask$") as err:
        lm.trace_calls(model, batch)
    assert "\n" not in str(err.value)
    for name in ("os", "PreTrainedModel", "T5Config", "no such"):  # not a model class: the task map decides
        config_file.write_text(json.dumps({**saved, "architectures": [name]}))
        assert type(resolve_model(f"hf:{tmp_path / 't5'}")[0].model).__name__ == "T5Model"


def test_curve_of_an_hf_vit_directory(tmp_path, images_npz):
    vit = tiny_vit_dir(tmp_path / "vit", num_labels=3)
    data = curve(tmp_path, images_npz, "--model", f"hf:{vit}", "--pretrained")
    assert data["config"]["model"] == f"hf:{vit.resolve()}" and data["config"]["pretrained"] is True


def test_tokenizer_of_an_hf_directory(tmp_path):
    bert = tiny_bert_dir(tmp_path / "bert")
    tokenizer = load_tokenizer(f"hf:{bert}")
    encoded = tokenizer(["the cat sat", "a dog ran on the mat"], padding=True)
    assert encoded["input_ids"][0][0] == tokenizer.cls_token_id and tokenizer.is_fast
    with pytest.raises(ModelError, match="comes with an hf:DIR_OR_ID model"):
        load_tokenizer("timm:resnet18")


def test_pickle_only_and_remote_code_directories_are_refused(tmp_path):
    bert = tiny_bert_dir(tmp_path / "bert", tokenizer=False)
    (bert / "model.safetensors").rename(bert / "pytorch_model.bin")  # a "pickle" (never opened: refused by name)
    with pytest.raises(ModelError, match="holds only pickle weights .*pytorch_model.bin"):
        resolve_model(f"hf:{bert}", pretrained=True)
    config = json.loads((bert / "config.json").read_text())
    (bert / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "evil.EvilModel"}}))
    (bert / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ModelError, match="needs its own code .auto_map., which layermod never runs"):
        resolve_model(f"hf:{bert}")


# ------------------------------------------------------------------------------------------- checkpoints


def test_a_sidecar_naming_a_library_spec_rebuilds(tmp_path):
    model, _ = resolve_model("timm:resnet18", arch_args={"num_classes": 3, "in_channels": 1}, seed=3)
    path = save_checkpoint(model, tmp_path / "ck", {"arch": "timm:resnet18",
                                                     "arch_args": {"num_classes": 3, "in_channels": 1}})
    rebuilt, meta = load_checkpoint(path)
    assert meta["arch"] == "timm:resnet18" and same_weights(model, rebuilt)
    again, description = resolve_model("timm:resnet18", weights=path)  # --model with --weights: the saved args
    assert same_weights(model, again) and description["arch_args"] == {"num_classes": 3, "in_channels": 1}
    with pytest.raises(ModelError, match="are for 'timm:resnet18'"):
        resolve_model("torchvision:resnet18", weights=path)
    vit = tiny_vit_dir(tmp_path / "vit")
    hf_model, description = resolve_model(f"hf:{vit}", seed=5)
    hf_path = save_checkpoint(hf_model, tmp_path / "hf", {"arch": description["model"], "arch_args": {}})
    rebuilt, _ = load_checkpoint(hf_path)
    assert isinstance(rebuilt, hub.HFModel) and same_weights(hf_model, rebuilt)


@pytest.mark.parametrize(("meta", "error", "fragment"), [
    ({"arch": "os:system", "arch_args": {}}, ModelError, "unknown model"),
    ({"arch": "layermod.models.small:smallcnn", "arch_args": {}}, ModelError, "unknown model"),
    ({"arch": "timm:resnet18", "arch_args": {"pretrained": True}}, ModelError, "'pretrained' is not an architecture"),
    ({"arch": "timm:resnet18", "arch_args": {"checkpoint_path": "x.pth"}}, ModelError, "checkpoint_path"),
    ({"arch": "timm:resnet18", "arch_args": {"num_classes": 10**9}}, ModelError, "num_classes"),
    ({"arch": "timm:vit_tiny_patch16_224", "arch_args": {"depth": 10**7}}, ModelError, "depth=10000000"),
    ({"arch": "timm:vit_tiny_patch16_224", "arch_args": {"depth": 1.5}}, ModelError, "depth=1.5"),
    ({"arch": "timm:resnet18", "arch_args": {"num_classes": 7}}, WeightsError, "shape mismatch"),
])
def test_hostile_sidecars_are_refused(tmp_path, meta, error, fragment):
    model, _ = resolve_model("timm:resnet18", arch_args={"num_classes": 3})
    path = save_checkpoint(model, tmp_path / "ck", meta)
    with pytest.raises(error, match=fragment):
        load_checkpoint(path)


def test_train_a_timm_model_and_rebuild_it_from_the_sidecar(tmp_path, images_npz, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "timm:resnet18", "--dataset", str(images_npz), "--test-dataset",
                 str(images_npz), "--epochs", "1", "--batch-size", "12", "--device", "cpu", "--quiet",
                 "--out", str(out)]) == 0
    side = read_sidecar(out / "best.safetensors")
    assert side["arch"] == "timm:resnet18" and side["arch_args"] == {"num_classes": 3, "in_channels": 3}
    model, _ = load_checkpoint(out / "best.safetensors")
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 3)
    capsys.readouterr()
    assert main(["eval", "--weights", str(out / "best.safetensors"), "--device", "cpu"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["train", "--model", "timm:resnet18", "--width", "0.5", "--dataset", str(images_npz),
                 "--test-dataset", str(images_npz), "--out", str(tmp_path / "w")]) == 2
    one_line(capsys, "takes no width")
    assert main(["train", "--model", "os:system", "--dataset", str(images_npz), "--out", str(tmp_path / "o")]) == 2
    one_line(capsys, "train builds registered architectures or torchvision:/timm:/hf: models")


def test_models_help_names_the_library_prefixes(capsys):
    with pytest.raises(SystemExit):
        main(["models", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "torchvision:NAME" in out and "timm:NAME" in out and "hf:DIR_OR_ID" in out


def test_fine_tune_an_hf_directory_and_rebuild_it(tmp_path, images_npz):
    vit = tiny_vit_dir(tmp_path / "vit", num_labels=5)  # another head: --pretrained replaces it with 3 classes
    out = tmp_path / "run"
    assert main(["train", "--model", f"hf:{vit}", "--pretrained", "--dataset", str(images_npz), "--test-dataset",
                 str(images_npz), "--epochs", "1", "--batch-size", "12", "--device", "cpu", "--quiet",
                 "--out", str(out)]) == 0
    side = read_sidecar(out / "last.safetensors")
    assert side["arch"] == f"hf:{vit.resolve()}" and side["arch_args"] == {"num_classes": 3, "in_channels": 3}
    assert side["pretrained"] is True
    model, _ = load_checkpoint(out / "last.safetensors")  # from config.json and the checkpoint: no library weights
    assert isinstance(model, hub.HFModel) and model(torch.rand(1, 3, 32, 32)).shape == (1, 3)
