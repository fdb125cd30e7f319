"""Try layermod on third-party models at random init and print a Markdown table of what works.

For every model: **curve** (``lm.modularity_curve`` on 2 classes x 4 random samples, k=1), **units**
(``removable_units`` offers at least one unit) and **pruned forward** (``apply_plan`` of the first offered unit
runs and keeps the output's shape). A cell is ``yes`` or the one-line reason layermod gave.

    .venv/bin/python scripts/models_tried.py [--only NAME,NAME] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

import layermod as lm
from layermod.errors import LayermodError
from layermod.pruning.units import apply_plan, kept_units, removable_units

IMAGE = 32  # image side for the CNNs; vision transformers take what their patch size allows
TOKENS = 8  # tokens per text sample
VOCAB = 50


@dataclass(frozen=True)
class Trial:
    """One model: how to build it and a batch of ``n`` inputs for it."""

    family: str
    name: str
    build: Callable[[], torch.nn.Module]
    inputs: Callable[[int], object]


def images(side: int) -> Callable[[int], torch.Tensor]:
    return lambda n: torch.randn(n, 3, side, side)


def tokens(n: int) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(1, VOCAB, (n, TOKENS)), "attention_mask": torch.ones(n, TOKENS, dtype=torch.long)}


def ids(n: int) -> torch.Tensor:
    return torch.randint(1, VOCAB, (n, TOKENS))


def pixels(n: int) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.randn(n, 3, IMAGE, IMAGE)}


def timm_model(name: str, **kwargs) -> Callable[[], torch.nn.Module]:
    def build():
        import timm

        return timm.create_model(name, pretrained=False, num_classes=2, **kwargs)

    return build


def tv_model(name: str, **kwargs) -> Callable[[], torch.nn.Module]:
    def build():
        from torchvision import models

        return models.get_model(name, weights=None, num_classes=2, **kwargs)

    return build


def hf_model(config_class: str, model_class: str, **config) -> Callable[[], torch.nn.Module]:
    """A transformers model of a tiny config, wrapped so that it returns a tensor."""

    def build():
        import transformers

        from layermod.models.hub import HFModel

        made = getattr(transformers, config_class)(**config)
        return HFModel(getattr(transformers, model_class)(made))

    return build


TEXT = {"vocab_size": VOCAB, "num_labels": 2}
BERT = {**TEXT, "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 32,
        "max_position_embeddings": 32}
GPT2 = {**TEXT, "n_embd": 16, "n_layer": 3, "n_head": 2, "n_positions": 32, "pad_token_id": 0, "bos_token_id": 1,
        "eos_token_id": 1}
VIT = {"image_size": IMAGE, "patch_size": 8, "num_channels": 3, "hidden_size": 16, "num_hidden_layers": 3,
       "num_attention_heads": 2, "intermediate_size": 32, "num_labels": 2}

TRIALS = [
    Trial("timm", "convnext_atto", timm_model("convnext_atto"), images(IMAGE)),
    Trial("timm", "efficientnet_b0", timm_model("efficientnet_b0"), images(IMAGE)),
    Trial("timm", "mobilenetv3_small_050", timm_model("mobilenetv3_small_050"), images(IMAGE)),
    Trial("timm", "regnetx_002", timm_model("regnetx_002"), images(IMAGE)),
    Trial("timm", "resnet18d", timm_model("resnet18d"), images(IMAGE)),
    Trial("timm", "swin_tiny_patch4_window7_224", timm_model("swin_tiny_patch4_window7_224", img_size=56),
          images(56)),
    Trial("timm", "deit_tiny_patch16_224", timm_model("deit_tiny_patch16_224", img_size=32), images(32)),
    Trial("timm", "levit_128s", timm_model("levit_128s", img_size=64), images(64)),
    Trial("timm", "mixer_s16_224", timm_model("mixer_s16_224", img_size=32), images(32)),
    Trial("torchvision", "densenet121", tv_model("densenet121"), images(IMAGE)),
    Trial("torchvision", "squeezenet1_0", tv_model("squeezenet1_0"), images(IMAGE * 2)),
    Trial("torchvision", "shufflenet_v2_x0_5", tv_model("shufflenet_v2_x0_5"), images(IMAGE)),
    Trial("torchvision", "mnasnet0_5", tv_model("mnasnet0_5"), images(IMAGE)),
    Trial("torchvision", "googlenet", tv_model("googlenet", aux_logits=False, init_weights=True), images(IMAGE)),
    Trial("torchvision", "mobilenet_v2", tv_model("mobilenet_v2"), images(IMAGE)),
    Trial("torchvision", "vit_b_16", tv_model("vit_b_16", image_size=32), images(32)),
    Trial("transformers", "BERT (sequence classification)",
          hf_model("BertConfig", "BertForSequenceClassification", **BERT), tokens),
    Trial("transformers", "DistilBERT (sequence classification)",
          hf_model("DistilBertConfig", "DistilBertForSequenceClassification", vocab_size=VOCAB, dim=16, n_layers=3,
                   n_heads=2, hidden_dim=32, max_position_embeddings=32, num_labels=2), tokens),
    Trial("transformers", "RoBERTa (sequence classification)",
          hf_model("RobertaConfig", "RobertaForSequenceClassification", **{**BERT, "max_position_embeddings": 40},
                   pad_token_id=0), tokens),
    Trial("transformers", "GPT-2 (sequence classification)",
          hf_model("GPT2Config", "GPT2ForSequenceClassification", **GPT2), tokens),
    Trial("transformers", "GPT-2 (token classification)",
          hf_model("GPT2Config", "GPT2ForTokenClassification", **GPT2), tokens),
    Trial("transformers", "T5 encoder",
          hf_model("T5Config", "T5EncoderModel", vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=3,
                   num_heads=2), tokens),
    Trial("transformers", "ViT (tensor input)", hf_model("ViTConfig", "ViTForImageClassification", **VIT),
          images(IMAGE)),
    Trial("transformers", "ViT (dict input)", hf_model("ViTConfig", "ViTForImageClassification", **VIT), pixels),
]


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.replace("|", "\\|")


def _shape(output: object) -> tuple[int, ...]:
    return tuple(output.shape) if isinstance(output, torch.Tensor) else ()


def _no_units(model: torch.nn.Module, example: object) -> str:
    """Why :func:`removable_units` offers nothing, in one line."""
    kept = kept_units(model, example)
    if not kept:
        return "no unit: no measured block is a child of an nn.Sequential, nn.ModuleList or stage"
    blocks = [n for n in kept if any(True for _ in model.get_submodule(n).children())]
    name = (blocks or list(kept))[0]  # a block says more than the stem conv
    return f"no unit: all {len(kept)} candidates are kept (e.g. {name}: it {kept[name]})"


def try_model(trial: Trial) -> dict[str, str]:
    """``{"curve": cell, "units": cell, "pruned forward": cell, "seconds": "..."}`` for one model; a cell is
    ``yes`` or the LayermodError line (an error of any other kind is a failure of this table and is raised)."""
    start = time.process_time()
    torch.manual_seed(0)
    cells: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = trial.build().eval()
        except LayermodError as err:
            reason = _reason(err)
            return {"curve": reason, "units": reason, "pruned forward": reason, "seconds": "0"}
        x, y = trial.inputs(8), torch.tensor([0, 1] * 4)
        try:
            lm.modularity_curve(model, (x, y), k=1, n_per_class=4, batch_size=8)
            cells["curve"] = "yes"
        except LayermodError as err:
            cells["curve"] = _reason(err)
        example = trial.inputs(2)
        try:
            units = removable_units(model, example)
            cells["units"] = "yes" if units else _no_units(model, example)
        except LayermodError as err:
            units, cells["units"] = [], _reason(err)
        if not units:
            cells["pruned forward"] = "no unit to remove"
        else:
            try:
                with torch.no_grad():
                    pruned = apply_plan(model, [units[0].name], example=example)
                    same = _shape(pruned(**example) if isinstance(example, dict) else pruned(example)) == _shape(
                        model(**example) if isinstance(example, dict) else model(example))
                cells["pruned forward"] = "yes" if same else "the pruned model's output has another shape"
            except LayermodError as err:
                cells["pruned forward"] = _reason(err)
    cells["seconds"] = f"{time.process_time() - start:.1f}"
    return cells


def table(trials: list[Trial]) -> str:
    """The Markdown table of ``trials``."""
    lines = ["| family | model | curve | units | pruned forward | CPU s |", "|---|---|---|---|---|---:|"]
    for trial in trials:
        cells = try_model(trial)
        lines.append(f"| {trial.family} | {trial.name} | {cells['curve']} | {cells['units']} | "
                     f"{cells['pruned forward']} | {cells['seconds']} |")
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated model names (as in the table's model column)")
    args = parser.parse_args(argv)
    trials = TRIALS
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        trials = [t for t in TRIALS if t.name in wanted]
    start = time.process_time()
    print(table(trials))
    print(f"\nCPU time: {time.process_time() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
