"""Inputs as the model wants them (token ids, dict batches, any floating dtype) and token features (``pool``).

Against real transformers models built from tiny configs with random weights: no mocks, no downloads.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import layermod as lm
from layermod.data.arrays import as_dataset, gather
from layermod.errors import AttackError, DatasetError, FeatureError
from layermod.extract.features import traced_layouts
from layermod.extract.inputs import to_model
from layermod.extract.pooling import pool_output, resolve_pool

transformers = pytest.importorskip("transformers")

N_PER_CLASS, REPEATS, LENGTH = 8, 2, 6
DRAWS = dict(n_per_class=N_PER_CLASS, repeats=REPEATS, k=3, seed=0)


def _bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32)
    return transformers.BertModel(config).eval()


def _gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=50, bos_token_id=1, eos_token_id=1)
    return transformers.GPT2Model(config).eval()


def _llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2, bos_token_id=1, eos_token_id=1,
                                      pad_token_id=0)
    return transformers.LlamaModel(config).eval()


MODELS = {"bert": _bert, "gpt2": _gpt2, "llama": _llama}


@pytest.fixture(scope="module")
def models():
    return {name: build() for name, build in MODELS.items()}


def _tokens(n_per_class: int = N_PER_CLASS * REPEATS, length: int = LENGTH, pad: int = 0):
    """Two classes of token sequences (class 1 has token 7 in most places), ``pad`` masked pad tokens after each."""
    g = torch.Generator().manual_seed(1)
    y = torch.arange(2 * n_per_class) % 2
    ids = torch.randint(2, 50, (len(y), length), generator=g)
    ids[y == 1, 1::2] = 7
    mask = torch.ones_like(ids)
    if pad:
        ids = torch.cat([ids, torch.zeros(len(y), pad, dtype=ids.dtype)], dim=1)
        mask = torch.cat([mask, torch.zeros(len(y), pad, dtype=mask.dtype)], dim=1)
    return {"input_ids": ids, "attention_mask": mask}, y


class DictSamples(Dataset):
    """Hugging Face style items: ``{"input_ids", "attention_mask", "labels"}``."""

    def __init__(self, inputs: dict, labels: torch.Tensor, key: str = "labels"):
        self.inputs, self.labels, self.key = inputs, labels, key

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {**{name: value[i] for name, value in self.inputs.items()}, self.key: self.labels[i]}


@pytest.mark.parametrize("name, resolved", [("bert", "cls"), ("gpt2", "last"), ("llama", "last")])
def test_curve_from_dict_pairs_and_from_labelled_dict_samples(models, name, resolved):
    model = models[name]
    inputs, y = _tokens()
    curve = lm.modularity_curve(model, (inputs, y), **DRAWS)
    assert curve.config["pool"] == "auto" and curve.config["resolved_pool"] == resolved
    assert curve.layers and np.all(np.isfinite(curve.values))
    for key in ("labels", "label"):
        again = lm.modularity_curve(model, DictSamples(inputs, y, key), **DRAWS)
        np.testing.assert_allclose(again.values, curve.values, atol=1e-6)


def test_integer_ids_stay_int64_up_to_the_model(models):
    inputs, y = _tokens()
    x, _ = gather(as_dataset((inputs, y)), np.arange(4))
    assert x["input_ids"].dtype == torch.int64
    assert to_model(x, models["bert"])["input_ids"].dtype == torch.int64
    seen = []
    embedding = models["bert"].embeddings.word_embeddings
    hook = embedding.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    try:
        lm.modularity_curve(models["bert"], (inputs, y), **DRAWS)
    finally:
        hook.remove()
    assert seen and set(seen) == {torch.int64}


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_models_of_other_float_dtypes_take_float32_inputs(dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).to(dtype)
    x = torch.randn(40, 4)
    y = (x[:, 0] > 0).long()
    curve = lm.modularity_curve(model, (x, y), n_per_class=5, repeats=2, k=3)
    assert np.all(np.isfinite(curve.values)) and curve.config["resolved_pool"] == "flatten"
    features = lm.extract_features(model, x, layers=["0", "2"])
    assert all(f.dtype == torch.float32 for f in features.values())


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_masked_padding_leaves_every_q_unchanged_but_flatten_changes(models, name):
    model = models[name]
    plain, y = _tokens()
    padded, _ = _tokens(pad=3)
    for pool in ("auto", "cls", "mean", "last"):
        a = lm.modularity_curve(model, (plain, y), pool=pool, **DRAWS)
        b = lm.modularity_curve(model, (padded, y), pool=pool, **DRAWS)
        np.testing.assert_allclose(b.values, a.values, atol=1e-6, err_msg=pool)
    a = lm.modularity_curve(model, (plain, y), pool="flatten", **DRAWS)
    b = lm.modularity_curve(model, (padded, y), pool="flatten", **DRAWS)
    assert not np.allclose(a.values, b.values, atol=1e-6)


def test_pool_choices_on_a_hand_made_tensor():
    out = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
                        [[7.0, 8.0], [9.0, 10.0], [11.0, 12.0]]])  # (B=2, T=3, H=2)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    expect = {
        "cls": [[1, 2], [7, 8]],
        "last": [[3, 4], [11, 12]],  # the last non-padding token
        "mean": [[2, 3], [9, 10]],  # over the non-padding tokens
        "flatten": [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]],
    }
    for pool, want in expect.items():
        got, layout = pool_output(out, pool, 2, "layer", mask=mask)
        assert layout == "batch_first"
        np.testing.assert_array_equal(got.numpy(), np.array(want, dtype=np.float32), err_msg=pool)
        # the same tokens sequence-first (T, B, H) give the same features
        seq_first, layout = pool_output(out.transpose(0, 1), pool, 2, "layer", mask=mask)
        assert layout == "sequence_first"
        np.testing.assert_array_equal(seq_first.numpy(), got.numpy())
    # no mask: every token counts
    np.testing.assert_array_equal(pool_output(out, "mean", 2, "layer")[0].numpy(), [[3, 4], [9, 10]])
    np.testing.assert_array_equal(pool_output(out, "last", 2, "layer")[0].numpy(), [[5, 6], [11, 12]])
    # 4-D and 2-D outputs are flattened whatever the pool
    conv = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    assert pool_output(conv, "cls", 2, "conv")[0].shape == (2, 12)
    with pytest.raises(FeatureError, match="attention mask has shape"):
        pool_output(out, "mean", 2, "layer", mask=torch.ones(2, 5, dtype=torch.bool))


def test_auto_pool_per_model(models):
    ids, _ = _tokens()
    assert resolve_pool(models["bert"], "auto", ids) == "cls"
    assert resolve_pool(models["gpt2"], "auto", ids) == "last"
    assert resolve_pool(models["llama"], "auto", ids) == "last"
    assert resolve_pool(nn.Sequential(nn.Embedding(50, 4), nn.Linear(4, 4)), "auto", ids["input_ids"]) == "mean"
    assert resolve_pool(nn.Linear(4, 4), "auto", torch.zeros(2, 4)) == "flatten"
    assert resolve_pool(nn.Linear(4, 4), "mean", torch.zeros(2, 4)) == "mean"
    with pytest.raises(FeatureError, match="pool='max' is not one of"):
        lm.modularity_curve(models["bert"], _tokens(), pool="max", **DRAWS)


def test_a_dataloader_is_data(models):
    inputs, y = _tokens()
    want = lm.modularity_curve(models["bert"], (inputs, y), **DRAWS)
    loader = DataLoader(DictSamples(inputs, y), batch_size=5)  # dict batches with "labels"
    got = lm.modularity_curve(models["bert"], loader, **DRAWS)
    np.testing.assert_allclose(got.values, want.values, atol=1e-6)
    # (x, y) batches; only what the draws need is kept: n_per_class * repeats of each class
    x = torch.randn(60, 4)
    labels = torch.arange(60) % 3
    kept = as_dataset(DataLoader(TensorDataset(x, labels), batch_size=7), per_class=4)
    assert len(kept) == 12 and torch.equal(kept.data, x[:12])
    assert np.bincount(lm.data.dataset_labels(kept)).tolist() == [4, 4, 4]


def test_ragged_dict_samples_are_refused_in_one_line():
    items = [{"input_ids": torch.arange(3 + i % 2), "labels": i % 2} for i in range(10)]

    class Ragged(Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            return items[i]

    with pytest.raises(DatasetError, match="different shapes.*padding") as err:
        gather(Ragged(), np.arange(4))
    assert "\n" not in str(err.value)
    with pytest.raises(DatasetError, match="no 'labels' or 'label'"):
        gather([{"input_ids": torch.arange(3)}] * 3, [0, 1])


class SequenceFirst(nn.Module):
    """Takes (B, T, H) and runs a sequence-first encoder layer, whose output is (T, B, H)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.encoder(x.transpose(0, 1)).mean(dim=0))


def test_sequence_first_layers_are_found_and_b_equal_t_refused():
    torch.manual_seed(0)
    model = SequenceFirst().eval()
    x = torch.randn(10, 4, 8)  # T = 4
    with torch.no_grad():
        want = model.encoder(x.transpose(0, 1)).mean(dim=0)
    got = lm.extract_features(model, x, layers=["encoder"], batch_size=3, pool="mean")["encoder"]
    torch.testing.assert_close(got, want)
    with pytest.raises(FeatureError, match="ambiguous") as err:
        lm.extract_features(model, x, layers=["encoder"], batch_size=4, pool="mean")
    assert "\n" not in str(err.value)


def test_batch_size_equal_to_the_sequence_length_uses_the_traced_batch_dimension(models):
    inputs, y = _tokens()
    assert inputs["input_ids"].shape[1] == LENGTH
    model = models["bert"]
    at_length = lm.modularity_curve(model, (inputs, y), pool="mean", batch_size=LENGTH, **DRAWS)
    other = lm.modularity_curve(model, (inputs, y), pool="mean", batch_size=5, **DRAWS)
    np.testing.assert_allclose(at_length.values, other.values, atol=1e-6)
    model = SequenceFirst().eval()
    calls = lm.trace_calls(model, torch.randn(2, 4, 8))
    x = torch.randn(8, 4, 8)  # T = 4 = batch size: the trace's 2-sample batch told the layout apart
    layouts = traced_layouts(calls, ["encoder"])
    assert layouts == {"encoder": "sequence_first"}
    got = lm.extract_features(model, x, layers=["encoder"], batch_size=4, pool="mean", layouts=layouts)["encoder"]
    with torch.no_grad():
        torch.testing.assert_close(got, model.encoder(x.transpose(0, 1)).mean(dim=0))


def test_attacks_refuse_token_ids(models):
    inputs, y = _tokens()
    with pytest.raises(AttackError, match="need float inputs"):
        lm.adversarial_curves(models["bert"], (inputs, y), attack=lm.AttackConfig(method="fgsm", eps=0.1),
                              space=lm.PixelSpace(), n_per_class=N_PER_CLASS, repeats=REPEATS, k=3)


TOKEN_MODULE = '''
import torch, transformers

def build():
    torch.manual_seed(0)
    return transformers.BertModel(transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                                          num_attention_heads=2, intermediate_size=32))

def data():
    g = torch.Generator().manual_seed(1)
    y = torch.arange(32) % 2
    ids = torch.randint(2, 50, (32, 6), generator=g)
    ids[y == 1, 1::2] = 7
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, y
'''


def test_cli_pool_option_reaches_the_curve(tmp_path, monkeypatch, capsys):
    from layermod.cli import main

    (tmp_path / "tok.py").write_text(TOKEN_MODULE)
    monkeypatch.chdir(tmp_path)
    args = ["curve", "--model", "tok.py:build", "--dataset", "tok.py:data", "--n-per-class", "8", "--repeats", "2",
            "--layers", "encoder.layer.0,encoder.layer.1", "--quiet", "--views", "0"]
    assert main([*args, "--pool", "mean", "--out", str(tmp_path / "run")]) == 0
    config = lm.Curve.load(tmp_path / "run").config
    assert config["pool"] == "mean" and config["resolved_pool"] == "mean"
    capsys.readouterr()
    assert main([*args[:-3], "--views", "0", "--out", str(tmp_path / "auto")]) == 0
    assert "pool: cls (auto)" in capsys.readouterr().out.splitlines()
    with pytest.raises(SystemExit):
        main([*args, "--pool", "max", "--out", str(tmp_path / "bad")])
