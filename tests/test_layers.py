import pytest
import torch
from torch import nn

import layermod as lm
from layermod.extract.layers import first_tensor, residual_blocks
from models_for_tests import DictOutput, Shared, TinyResNet, TupleStack, mlp, vgg_like

X = torch.randn(2, 1, 4, 4)


def auto(model, x=X):
    return lm.auto_layers(model, lm.trace_calls(model, x))


def test_residual_model_gives_stem_and_every_block():
    model = TinyResNet()
    assert residual_blocks(model) == ["layer1.0", "layer1.1", "layer2.0", "layer2.1"]
    assert auto(model) == ["conv1", "layer1.0", "layer1.1", "layer2.0", "layer2.1"]


def test_transformer_blocks_with_residual_adds_are_found_by_tracing():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))

        def forward(self, x):
            h = self.norm(x)
            x = x + self.attn(h, h, h)[0]
            return x + self.mlp(x)

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(1, 8, 2, 2)
            self.pos = nn.Parameter(torch.zeros(1, 4, 8))  # x + parameter is not a residual add
            self.blocks = nn.Sequential(Block(), Block(), Block())

        def forward(self, x):
            return self.blocks(self.patch(x).flatten(2).transpose(1, 2) + self.pos)

    assert auto(ViT()) == ["patch", "blocks.0", "blocks.1", "blocks.2"]


def test_conv_stack_gives_every_conv_in_forward_order():
    assert auto(vgg_like()) == ["0", "3", "7"]


def test_untraceable_stack_of_blocks_gives_its_members():
    assert auto(TupleStack()) == ["embed", "layers.0", "layers.1", "layers.2"]


def test_torch_transformer_encoder_layers():
    model = nn.Sequential(nn.Linear(4, 8), nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2))
    assert auto(model, torch.randn(2, 3, 4)) == ["0", "1.layers.0", "1.layers.1"]


def test_mlp_gives_every_linear():
    assert auto(mlp()) == ["1", "3", "5"]


def test_model_with_nothing_to_choose_asks_for_names():
    with pytest.raises(lm.LayerError, match="pass layer names"):
        auto(nn.Sequential(nn.Flatten(), nn.ReLU()))


def test_first_tensor_unwraps_tuples_lists_and_dicts():
    t = torch.ones(2)
    assert first_tensor(t) is t
    assert first_tensor((None, [t, torch.zeros(1)])) is t
    assert first_tensor({"loss": None, "hidden": (t,)}) is t
    assert first_tensor(("text", 3)) is None


def test_trace_calls_records_order_counts_and_shapes():
    calls = lm.trace_calls(Shared(), X)
    assert list(calls) == ["inp", "twice", "twice#2", "out"]  # one record per call
    assert calls["twice"].calls == calls["twice#2"].calls == 2
    assert (calls["twice"].call, calls["twice#2"].call, calls["twice#2"].module) == (1, 2, "twice")
    assert calls["inp"].order < calls["twice"].order < calls["twice#2"].order < calls["out"].order
    assert calls["out"].shape == (2, 2)
    assert calls["inp"].kind == "Linear"


def test_trace_calls_restores_training_mode():
    model = TinyResNet().train()
    lm.trace_calls(model, X)
    assert model.training


def test_trace_calls_reports_a_model_that_does_not_fit_the_data():
    with pytest.raises(lm.ModelError, match=r"shape \(2, 1, 5, 5\).*check that the data fit"):
        lm.trace_calls(mlp(), torch.randn(2, 1, 5, 5))


def test_select_by_name_glob_index_and_list():
    model = TinyResNet()
    calls = lm.trace_calls(model, X)
    select = lambda spec: lm.select_layers(model, spec, calls)  # noqa: E731
    assert select("layer1.0.conv2") == ["layer1.0.conv2"]
    assert select("layer2.?") == ["layer2.0", "layer2.1"]
    assert select(-1) == ["layer2.1"]
    assert select([0, "layer1.1", 0]) == ["conv1", "layer1.1"]
    assert select("auto") == auto(model)


def test_unknown_layer_names_the_closest_real_ones():
    model = TinyResNet()
    with pytest.raises(lm.LayerError, match=r"no layer named .layer1.O.; closest: .*layer1.0"):
        lm.select_layers(model, "layer1.O", lm.trace_calls(model, X))


@pytest.mark.parametrize("spec, message", [
    ("nothing.*", "matches no layer"),
    (7, "out of range for 5 auto layers"),
    ([], "no layers selected"),
    ([1.5], "cannot read layer choice"),
])
def test_bad_layer_choices(spec, message):
    model = TinyResNet()
    with pytest.raises(lm.LayerError, match=message):
        lm.select_layers(model, spec, lm.trace_calls(model, X))


def test_layer_never_called_in_forward():
    model = DictOutput()
    with pytest.raises(lm.LayerError, match="'unused' is never called in forward"):
        lm.select_layers(model, "unused", lm.trace_calls(model, X))


class AuxMain(nn.Module):
    """A block returning ``(aux, main)``: a per-sample summary first, the features the next block takes second."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.aux = nn.Linear(4, 2)

    def forward(self, x):
        main = torch.relu(self.conv(x))
        return self.aux(main.mean(dim=(2, 3))), main


class AuxMainNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = AuxMain()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        _, main = self.block(x)
        return self.head(main.mean(dim=(2, 3)))


def test_a_layer_returning_several_tensors_warns_once_naming_their_shapes():
    torch.manual_seed(0)
    model, x = AuxMainNet().eval(), torch.randn(6, 3, 5, 5)
    with pytest.warns(UserWarning, match=r"layer 'block' returns 2 tensors \(3x2, 3x4x5x5\); the first is measured"
                      ) as caught:
        features = lm.extract_features(model, x, layers=["block", "block.conv"], batch_size=3)
    assert sum("returns 2 tensors" in str(w.message) for w in caught) == 1  # one warning, not one per batch
    assert features["block"].shape == (6, 2) and features["block.conv"].shape == (6, 4 * 25)
