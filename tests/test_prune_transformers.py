"""Pruning transformers models (random init, tiny configs): the layers offered are the ones the model runs without,
on every input form the curve takes (tensors, token ids, dicts with masks, pixel_values dicts)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from layermod.cli import main
from layermod.models import PassThrough
from layermod.models.checkpoint import load_checkpoint
from layermod.pruning.scores import block_influence
from layermod.pruning.units import apply_plan, model_cost, removable_units, unit_costs

transformers = pytest.importorskip("transformers")

IDS = torch.randint(1, 100, (2, 7), generator=torch.Generator().manual_seed(0))
MASK = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
PIXELS = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def text_model(kind: str) -> torch.nn.Module:
    """A 3-layer sequence classifier (hidden 32, vocabulary 100) of ``kind``, in eval mode."""
    t = transformers
    torch.manual_seed(0)
    if kind == "bert":
        return t.BertForSequenceClassification(t.BertConfig(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, vocab_size=100)).eval()
    if kind == "distilbert":
        return t.DistilBertForSequenceClassification(t.DistilBertConfig(
            dim=32, n_layers=3, n_heads=2, hidden_dim=64, vocab_size=100)).eval()
    if kind == "roberta":
        return t.RobertaForSequenceClassification(t.RobertaConfig(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, vocab_size=100)).eval()
    return t.GPT2ForSequenceClassification(t.GPT2Config(
        n_embd=32, n_layer=3, n_head=2, vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=1)).eval()


def vit_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=64, num_labels=3)).eval()


def run(model: torch.nn.Module, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits if isinstance(batch, dict) else model(batch).logits


LAYERS = {"bert": "bert.encoder.layer", "distilbert": "distilbert.transformer.layer",
          "roberta": "roberta.encoder.layer", "gpt2": "transformer.h"}


def check_every_offered_unit(model, example, container: str) -> None:
    """Every encoder layer is offered, and the model without any one of them runs with the same logits shape."""
    units = removable_units(model, example)
    assert [u.name for u in units] == [f"{container}.{i}" for i in range(3)]
    assert {u.stage for u in units} == {f"{container}#0"}
    full = run(model, example)
    for unit in units:
        pruned = apply_plan(model, [unit.name], example=example)
        assert isinstance(pruned.get_submodule(unit.name), PassThrough)
        out = run(pruned, example)
        assert out.shape == full.shape and torch.isfinite(out).all()
        assert not torch.equal(out, full)  # the layer is really gone
        assert sum(p.numel() for p in pruned.parameters()) == sum(p.numel() for p in model.parameters()) - unit.params


@pytest.mark.parametrize("kind", ["bert", "distilbert", "roberta", "gpt2"])
def test_text_models_lose_any_layer_on_ids_and_on_masked_dicts(kind):
    model = text_model(kind)
    check_every_offered_unit(model, IDS, LAYERS[kind])
    check_every_offered_unit(model, {"input_ids": IDS, "attention_mask": MASK}, LAYERS[kind])


@pytest.mark.parametrize("example", [PIXELS, {"pixel_values": PIXELS}], ids=["tensor", "dict"])
def test_vit_loses_any_layer_on_tensors_and_pixel_values_dicts(example):
    model = vit_model()
    container = next(name for name, module in model.named_modules()
                     if isinstance(module, torch.nn.ModuleList))  # the encoder's layers
    check_every_offered_unit(model, example, container)


def test_costs_and_scores_take_a_dict_batch():
    model = text_model("bert")
    batch = {"input_ids": IDS, "attention_mask": MASK}
    units = removable_units(model, batch)
    saved = unit_costs(model, units, batch)
    cost = model_cost(model, batch)
    pruned = model_cost(apply_plan(model, [units[0].name], example=batch), batch)
    assert cost["flops"] - pruned["flops"] == saved[units[0].name]["flops"] > 0
    influence = block_influence(model, units, batch)
    assert list(influence) == [u.name for u in units] and all(0 <= v <= 2 for v in influence.values())


def test_prune_cli_on_a_fine_tuned_hf_vit_checkpoint(tmp_path, capsys):
    from hf_models import tiny_vit_dir

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 8)
    x = rng.normal(0.0, 0.3, size=(24, 3, 32, 32)) + np.eye(3)[y][:, :, None, None]
    np.savez(tmp_path / "images.npz", X=x.astype(np.float32), y=y)
    data = str(tmp_path / "images.npz")
    vit = tiny_vit_dir(tmp_path / "vit", num_labels=3)
    assert main(["train", "--model", f"hf:{vit}", "--pretrained", "--dataset", data, "--test-dataset", data,
                 "--epochs", "1", "--batch-size", "12", "--device", "cpu", "--quiet", "--out",
                 str(tmp_path / "run")]) == 0
    out = tmp_path / "pruned"
    assert main(["prune", "--weights", str(tmp_path / "run" / "last.safetensors"), "--remove", "1",
                 "--n-per-class", "4", "--repeats", "1", "--seeds", "1", "--methods", "modularity",
                 "--finetune-subset", "12", "--quiet", "--out", str(out)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    removed = json.loads((out / "plan.json").read_text())["remove"]
    assert len(removed) == 1 and removed[0].startswith("model.vit.")
    pruned, meta = load_checkpoint(out / "pruned.safetensors")
    assert meta["plan"]["remove"] == removed and isinstance(pruned.get_submodule(removed[0]), PassThrough)
    assert pruned(torch.rand(2, 3, 32, 32)).shape == (2, 3)
