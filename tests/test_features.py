import math

import pytest
import torch
from torch import nn

import layermod as lm
from layermod.extract.features import extract_features, iter_layer_features, plan_passes
from models_for_tests import DictOutput, Shared, TinyResNet, TupleStack

X = torch.randn(10, 1, 4, 4)


def direct(model, x, name):
    """The output of module ``name`` recorded by hand, without layermod."""
    out = []
    handle = dict(model.named_modules())[name].register_forward_hook(lambda m, i, o: out.append(o))
    with torch.no_grad():
        model.eval()(x)
    handle.remove()
    return out[-1]


def test_residual_block_features_equal_the_block_output_flattened():
    model = TinyResNet()
    feats = extract_features(model, X, layers=["layer1.1", "layer2.0"], batch_size=3)
    assert feats["layer1.1"].shape == (10, 4 * 4 * 4)
    assert feats["layer2.0"].shape == (10, 8 * 2 * 2)
    torch.testing.assert_close(feats["layer2.0"], direct(model, X, "layer2.0").flatten(1))


def test_tuple_outputs_are_unwrapped_to_their_first_tensor():
    model = TupleStack()
    feats = extract_features(model, X, layers=["layers.1"])
    torch.testing.assert_close(feats["layers.1"], direct(model, X, "layers.1")[0].flatten(1))


def test_dict_returning_model():
    model = DictOutput()
    feats = extract_features(model, X, layers=["body.2", "body"])
    torch.testing.assert_close(feats["body"], feats["body.2"])


def test_shared_layer_gives_one_point_per_call():
    model = Shared()
    calls = lm.trace_calls(model, X)
    out = []
    handle = model.twice.register_forward_hook(lambda m, i, o: out.append(o))
    with torch.no_grad():
        model.eval()(X)
    handle.remove()
    feats = dict(iter_layer_features(model, X, ["twice", "twice#2"], calls, max_bytes=2**30))
    torch.testing.assert_close(feats["twice"], out[0])  # "twice" is the first call, "twice#2" the second
    torch.testing.assert_close(feats["twice#2"], out[1])


def test_extraction_restores_mode_and_does_not_track_gradients():
    model = TinyResNet().train()
    feats = extract_features(model, X, layers=["conv1"])
    assert model.training and not feats["conv1"].requires_grad


def test_output_without_batch_dimension_first_is_refused():
    class SeqFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Identity()

        def forward(self, x):
            return self.inner(x.flatten(1).T)

    with pytest.raises(lm.FeatureError, match="first dimension is not the batch size"):
        extract_features(SeqFirst(), X, layers=["inner"])


def test_passes_fit_the_memory_budget_and_keep_order():
    model = TinyResNet()
    calls = lm.trace_calls(model, X)
    layers = ["conv1", "layer1.0", "layer1.1", "layer2.0", "layer2.1"]
    assert [math.prod(calls[name].shape[1:]) for name in layers] == [64, 64, 64, 32, 32]
    groups = plan_passes(layers, calls, n_samples=10, max_bytes=4 * 10 * 130)
    assert [name for group in groups for name in group] == layers
    assert groups == [["conv1", "layer1.0"], ["layer1.1", "layer2.0", "layer2.1"]]
    assert plan_passes(layers, calls, 10, max_bytes=1) == [[name] for name in layers]


def test_layer_by_layer_iteration_gives_the_same_features_as_one_pass():
    model = TinyResNet()
    calls = lm.trace_calls(model, X)
    layers = ["conv1", "layer1.1", "layer2.1"]
    whole = extract_features(model, X, layers=layers)
    for name, feats in iter_layer_features(model, X, layers, calls, max_bytes=1, batch_size=4):
        torch.testing.assert_close(feats, whole[name])
