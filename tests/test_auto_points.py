"""The auto points of real torchvision, timm and Hugging Face models (tiny inputs, random init, no mocks), and
the clear refusals around them: TorchScript, ambiguous batch dimensions, globs and wrapper prefixes."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from torch import nn

import layermod as lm

tv = pytest.importorskip("torchvision.models")
X32 = torch.randn(2, 3, 32, 32)
IDS = torch.randint(0, 100, (2, 8))


@functools.cache
def built(key: str):
    """(model, example input) built once per test session."""
    torch.manual_seed(0)
    return BUILD[key]()


@functools.cache
def traced(key: str):
    """(model, calls, auto points) of a model built once per test session."""
    model, x = built(key)
    with torch.no_grad():
        calls = lm.trace_calls(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the families below need no fallback
        points = lm.auto_layers(model, calls)
    return model, calls, points


def _timm(name, size=32, **kwargs):
    timm = pytest.importorskip("timm")
    return lambda: (timm.create_model(name, pretrained=False, **kwargs), torch.randn(2, 3, size, size))


def _hf(build):
    def make():
        transformers = pytest.importorskip("transformers")
        return build(transformers)

    return make


BUILD = {
    "resnet18": lambda: (tv.resnet18(), X32),
    "resnet50": lambda: (tv.resnet50(), X32),
    "vgg16_bn": lambda: (tv.vgg16_bn(), X32),
    "mobilenet_v3_small": lambda: (tv.mobilenet_v3_small(), X32),
    "efficientnet_b0": lambda: (tv.efficientnet_b0(), X32),
    "swin_t": lambda: (tv.swin_t(), X32),
    "convnext_tiny": lambda: (tv.convnext_tiny(), X32),
    "vit_b_16": lambda: (tv.vit_b_16(image_size=32), X32),
    "densenet121": lambda: (tv.densenet121(), X32),
    "googlenet": lambda: (tv.googlenet(aux_logits=False, init_weights=False), X32),
    "timm resnet18": _timm("resnet18"),
    "timm vit_tiny": _timm("vit_tiny_patch16_224", img_size=32),
    "timm convnext_atto": _timm("convnext_atto"),
    "timm mobilenetv3_small_100": _timm("mobilenetv3_small_100"),
    "timm efficientnet_b0": _timm("efficientnet_b0"),
    "timm swin": _timm("swin_tiny_patch4_window7_224", 56, img_size=56),
    "timm regnetx_002": _timm("regnetx_002"),
    "hf bert": _hf(lambda T: (T.BertModel(T.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=37)), IDS)),
    "hf gpt2": _hf(lambda T: (T.GPT2Model(T.GPT2Config(
        vocab_size=100, n_embd=32, n_layer=3, n_head=2, n_positions=16, bos_token_id=0, eos_token_id=0)), IDS)),
    "hf albert": _hf(lambda T: (T.AlbertModel(T.AlbertConfig(
        vocab_size=100, embedding_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=37)), IDS)),
    "hf t5 encoder": _hf(lambda T: (T.T5EncoderModel(T.T5Config(
        vocab_size=100, d_model=32, d_kv=8, d_ff=37, num_layers=3, num_heads=2)), IDS)),
    "hf llama": _hf(lambda T: (T.LlamaModel(T.LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=2)), IDS)),
    "hf vit": _hf(lambda T: (T.ViTModel(T.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=37)), X32)),
    "hf swin": _hf(lambda T: (T.SwinModel(T.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=4)), X32)),
    "hf bart": _hf(lambda T: (T.BartModel(T.BartConfig(
        vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=32)), IDS)),
}


def blocks(prefix: str, counts: list[int]) -> list[str]:
    return [f"{prefix}{s + 1}.{j}" for s, n in enumerate(counts) for j in range(n)]


EXACT = {
    "resnet18": ["conv1", *blocks("layer", [2, 2, 2, 2])],
    "mobilenet_v3_small": [f"features.{i}" for i in range(12)],  # stem + 11 inverted residuals (4 without skip)
    "swin_t": ["features.0", "features.1.0", "features.1.1", "features.2", "features.3.0", "features.3.1",
               "features.4", *[f"features.5.{j}" for j in range(6)], "features.6", "features.7.0", "features.7.1"],
    "densenet121": ["features.conv0", "features.denseblock1", "features.transition1", "features.denseblock2",
                    "features.transition2", "features.denseblock3", "features.transition3", "features.denseblock4"],
    "googlenet": ["conv3", "inception3a", "inception3b", "inception4a", "inception4b", "inception4c", "inception4d",
                  "inception4e", "inception5a", "inception5b"],
    "timm resnet18": ["conv1", *blocks("layer", [2, 2, 2, 2])],
    "timm vit_tiny": ["patch_embed", *[f"blocks.{i}" for i in range(12)]],
    "hf bert": ["embeddings", "encoder.layer.0", "encoder.layer.1", "encoder.layer.2"],
    "hf gpt2": ["wte", "h.0", "h.1", "h.2"],
    "hf albert": ["encoder.embedding_hidden_mapping_in", "encoder.albert_layer_groups.0",
                  "encoder.albert_layer_groups.0#2", "encoder.albert_layer_groups.0#3",
                  "encoder.albert_layer_groups.0#4"],
    "hf llama": ["embed_tokens", "layers.0", "layers.1", "layers.2"],
    "hf bart": ["encoder.layernorm_embedding", "encoder.layers.0", "encoder.layers.1",  # encoder, then decoder
                "decoder.layernorm_embedding", "decoder.layers.0", "decoder.layers.1"],
    "hf swin": ["embeddings", "encoder.layers.0.blocks.0", "encoder.layers.0.blocks.1", "encoder.layers.0.downsample",
                "encoder.layers.1.blocks.0", "encoder.layers.1.blocks.1"],
}
# stem + blocks (+ what sits between stages) for the rest, checked by count and structure
COUNTS = {
    "resnet50": 17, "vgg16_bn": 13, "efficientnet_b0": 17, "convnext_tiny": 22, "vit_b_16": 13,
    "timm convnext_atto": 16, "timm mobilenetv3_small_100": 12, "timm efficientnet_b0": 17, "timm swin": 16,
    "hf t5 encoder": 4, "hf vit": 4,
}


@pytest.mark.parametrize("key", list(EXACT))
def test_auto_points_are_the_stem_and_every_block(key):
    _, calls, points = traced(key)
    assert points == EXACT[key]


@pytest.mark.parametrize("key", list(COUNTS))
def test_auto_point_counts(key):
    _, calls, points = traced(key)
    assert len(points) == COUNTS[key]


@pytest.mark.parametrize("key", list(BUILD))
def test_no_point_inside_another_and_forward_order(key):
    model, calls, points = traced(key)
    modules = [calls[p].module for p in points]
    assert not [(a, b) for a in modules for b in modules if b.startswith(a + ".")]
    orders = [calls[p].order for p in points]
    assert orders == sorted(orders)
    assert all(calls[p].batch_dim == 0 for p in points)
    assert lm.select_layers(model, "auto", calls) == points


def test_the_blocks_of_each_family():
    resnet50 = traced("resnet50")[2]
    assert resnet50 == ["conv1", *blocks("layer", [3, 4, 6, 3])]
    vgg = traced("vgg16_bn")
    assert all(isinstance(vgg[0].get_submodule(p), nn.Conv2d) for p in vgg[2])
    effnet = traced("efficientnet_b0")[2]  # the 16 MBConv blocks, with or without a skip
    assert effnet[0] == "features.0" and effnet[1:] == [
        f"features.{s}.{j}" for s, n in enumerate([1, 2, 2, 3, 3, 4, 1], 1) for j in range(n)]
    convnext = traced("convnext_tiny")[2]  # 18 blocks of the 4 stages + the 3 downsampling layers between them
    assert [p for p in convnext if p.count(".") == 2] == [
        f"features.{s}.{j}" for s, n in zip((1, 3, 5, 7), (3, 3, 9, 3)) for j in range(n)]
    vit = traced("vit_b_16")[2]
    assert vit == ["conv_proj", *[f"encoder.layers.encoder_layer_{i}" for i in range(12)]]
    t5 = traced("hf t5 encoder")[2]
    assert t5[1:] == ["encoder.block.0", "encoder.block.1", "encoder.block.2"]
    assert "embed" in t5[0] or t5[0] == "shared"
    hf_vit = traced("hf vit")
    assert [type(hf_vit[0].get_submodule(p)).__name__ for p in hf_vit[2]] == ["ViTEmbeddings"] + ["ViTLayer"] * 3
    swin = traced("timm swin")[2]
    assert sum(".blocks." in p for p in swin) == 12 and swin[0] == "patch_embed"


def test_timm_stems_are_measured_and_stages_seen_through():
    regnet = traced("timm regnetx_002")[2]  # stages of 1, 1, 4 and 7 blocks, each its own module
    assert regnet == ["stem", *[f"s{s}.b{j}" for s, n in enumerate([1, 1, 4, 7], 1) for j in range(1, n + 1)]]
    for key in ("timm efficientnet_b0", "timm mobilenetv3_small_100"):  # the first block has a class of its own
        points = traced(key)[2]
        assert points[:3] == ["conv_stem", "blocks.0.0", "blocks.1.0"], key


def test_a_shared_layer_gives_one_point_per_call():
    model, calls, points = traced("hf albert")
    group = "encoder.albert_layer_groups.0"
    assert calls[group].calls == 4
    assert lm.select_layers(model, f"{group}#3", calls) == [f"{group}#3"]
    assert lm.select_layers(model, "encoder.albert_layer_groups.*", calls) == points[1:]
    with pytest.raises(lm.LayerError, match="called 4 times per forward pass, so .*#5. does not exist"):
        lm.select_layers(model, f"{group}#5", calls)
    feats = lm.extract_features(model, IDS, layers=[group, f"{group}#4"])
    assert not torch.allclose(feats[group], feats[f"{group}#4"])


# ------------------------------------------------------------------------------------------------ refusals


class _Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3)
        self.b = nn.Conv2d(4, 4, 3)

    def forward(self, x):
        return self.b(self.a(x))


@pytest.mark.filterwarnings("ignore:`torch.jit")
@pytest.mark.parametrize("wrap", [torch.jit.script, lambda m: torch.jit.trace(m, X32)])
def test_torchscript_modules_are_refused_in_one_line(wrap):
    scripted = wrap(_Small().eval())
    with pytest.raises(lm.LayerError) as err:
        lm.trace_calls(scripted, X32)
    assert str(err.value) == "hooks are not supported on TorchScript modules; pass the eager model"


class _SeqFirst(nn.Module):
    """(B, T, C) -> a sequence-first (T, B, C) layer -> back; T == B == 2 on the traced batch."""

    def __init__(self, only_batch: int | None = None):
        super().__init__()
        self.only_batch = only_batch
        self.inp = nn.Linear(3, 8)
        self.seq = nn.Linear(8, 8)

    def forward(self, x):
        if self.only_batch is not None and len(x) != self.only_batch:
            raise ValueError(f"this model takes batches of {self.only_batch}")
        h = self.seq(self.inp(x).transpose(0, 1))  # (T, B, C)
        return h.transpose(0, 1)


def test_batch_equal_to_sequence_length_is_told_apart_by_another_batch_size():
    calls = lm.trace_calls(_SeqFirst(), torch.randn(2, 2, 3))
    assert calls["seq"].shape == (2, 2, 8)
    assert (calls["seq"].batch_dim, calls["seq"].ambiguous) == (1, False)
    assert (calls["inp"].batch_dim, calls["inp"].ambiguous) == (0, False)


def test_an_ambiguous_batch_dimension_is_refused_never_guessed():
    model = _SeqFirst(only_batch=2)  # no second batch size to tell B from T
    calls = lm.trace_calls(model, torch.randn(2, 2, 3))
    assert calls["seq"].ambiguous and calls["seq"].batch_dim is None
    with pytest.raises(lm.LayerError, match=r"'seq' returns shape \(2, 2, 8\), where more than one dimension may be"):
        lm.select_layers(model, "seq", calls)


def test_glob_star_is_the_direct_children():
    model, calls, _ = traced("timm vit_tiny")
    select = lambda spec: lm.select_layers(model, spec, calls)  # noqa: E731
    assert select("blocks.*") == [f"blocks.{i}" for i in range(12)]
    assert "blocks.0.attn.qkv" in select("blocks.0.**")
    with pytest.warns(UserWarning, match=r"'blocks.\?'.*2 more called modules match 'blocks.\*'"):
        assert len(select("blocks.?")) == 10
    never = [n for n, _ in model.named_modules() if n.startswith("blocks.0.") and n not in calls]
    assert never  # e.g. a dropout or norm that this configuration never calls
    picked = select("blocks.0.*")
    assert picked and not set(picked) & set(never)


def test_a_pattern_matching_only_modules_never_called_is_an_error():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(4, 4)
            self.spare = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])

        def forward(self, x):
            return self.used(x)

    model = Unused()
    calls = lm.trace_calls(model, torch.randn(2, 4))
    with pytest.raises(lm.LayerError, match=r"'spare.\*' matches 2 modules, none called in forward"):
        lm.select_layers(model, "spare.*", calls)


def test_wrapper_prefixes():
    model, calls, _ = traced("resnet18")
    with pytest.raises(lm.LayerError, match=r"drop the 'module.' prefix: 'layer1'"):
        lm.select_layers(model, "module.layer1", calls)
    with pytest.raises(lm.LayerError, match=r"drop the '_orig_mod.' prefix: 'layer1.0'"):
        lm.select_layers(model, "_orig_mod.layer1.0", calls)
    class Wrapper(nn.Module):  # names its child as DataParallel / DDP do
        def __init__(self, inner):
            super().__init__()
            self.module = inner

        def forward(self, x):
            return self.module(x)

    wrapped = Wrapper(model)
    wrapped_calls = lm.trace_calls(wrapped, X32)
    assert lm.select_layers(wrapped, "layer1,layer2.1", wrapped_calls) == ["module.layer1", "module.layer2.1"]
    assert lm.auto_layers(wrapped, wrapped_calls) == ["module." + p for p in EXACT["resnet18"]]


def test_calls_are_selected_by_name_and_pattern():
    model, calls, points = traced("hf albert")
    group = "encoder.albert_layer_groups.0"
    assert lm.select_layers(model, f"{group}#1", calls) == [group]
    assert lm.select_layers(model, f"{group}#*", calls) == [f"{group}#{k}" for k in (2, 3, 4)]
    assert lm.select_layers(model, [1, -1], calls) == [group, f"{group}#4"]


@pytest.mark.slow
@pytest.mark.parametrize("key", list(BUILD))
def test_a_curve_on_each_model(key):
    """A whole curve on every family: one finite Q per auto point, measured where the trace found them."""
    model, _, points = traced(key)
    example = built(key)[1]
    n = 12
    x = (torch.randint(0, 100, (n, example.shape[1])) if not example.is_floating_point()
         else torch.randn(n, *example.shape[1:]))
    curve = lm.modularity_curve(model, (x, torch.arange(n) % 3), n_per_class=4, repeats=1, k=2, pool="mean"
                                if not example.is_floating_point() else "auto", progress=False)
    assert curve.layers == points
    assert curve.values.shape == (1, len(points)) and torch.isfinite(torch.as_tensor(curve.values)).all()
