import json
import math
import re
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from layermod.adversarial.attacks import AttackConfig, AttackResult, PixelSpace, attack, fgsm, pgd
from layermod.errors import AttackError

# Two channels with different statistics, so a mix-up of channels or of the direction of the map shows.
SPACE = PixelSpace(mean=(0.4, 0.6), std=(0.25, 0.2))
SHAPE = (2, 4, 4)


def make_pixels(n, seed=0):
    """(n, 2, 4, 4) pixels in [0, 1] around one prototype per class, and (n,) labels of 3 classes."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    prototypes = torch.rand(3, *SHAPE, generator=g) * 0.6 + 0.2
    pixels = (prototypes[labels] + 0.15 * torch.randn(n, *SHAPE, generator=g)).clamp(0, 1)
    return pixels, labels


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))


@pytest.fixture(scope="module")
def trained():
    """A small MLP fitted (plain gradient descent, no optimiser to import) to 96 separable samples."""
    pixels, labels = make_pixels(96)
    inputs = SPACE.to_inputs(pixels)
    torch.manual_seed(0)
    model = mlp()
    for _ in range(30):
        model.zero_grad()
        F.cross_entropy(model(inputs), labels).backward()
        with torch.no_grad():
            for param in model.parameters():
                param -= 0.2 * param.grad
    model.zero_grad(set_to_none=True)
    assert (model(inputs).argmax(1) == labels).all()
    return model, inputs, labels


def loss(model, inputs, labels):
    with torch.no_grad():
        return F.cross_entropy(model(inputs), labels).item()


def pixel_change(adv, clean, space=SPACE):
    """(N, ...) pixel differences between adversarial and clean inputs."""
    return space.to_pixels(adv) - space.to_pixels(clean)


def assert_in_budget(adv, clean, eps, norm, space=SPACE):
    pixels = space.to_pixels(adv)
    assert pixels.min() >= space.low - 1e-6 and pixels.max() <= space.high + 1e-6
    change = pixel_change(adv, clean, space)
    if norm == "linf":
        assert change.abs().max() <= eps + 1e-6
    else:
        assert change.flatten(1).norm(dim=1).max() <= eps + 1e-5


# --- fgsm and pgd ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.5)])
def test_fgsm_raises_the_loss_and_pgd_is_at_least_as_strong(trained, norm, eps):
    model, inputs, labels = trained
    fast = fgsm(model, inputs, labels, eps=eps, space=SPACE, norm=norm)
    strong = pgd(model, inputs, labels, eps=eps, space=SPACE, steps=10, step_size=eps / 4, norm=norm,
                 random_start=False)
    clean_loss, fast_loss, strong_loss = (loss(model, x, labels) for x in (inputs, fast, strong))
    assert fast_loss > 2 * clean_loss + 0.05
    assert strong_loss >= fast_loss - 1e-6
    flips = [int((model(x).argmax(1) != labels).sum()) for x in (fast, strong)]
    assert flips[0] > 0 and flips[1] >= flips[0]


@settings(max_examples=25, deadline=None)
@given(
    method=st.sampled_from(["fgsm", "pgd"]),
    norm=st.sampled_from(["linf", "l2"]),
    eps=st.floats(0.001, 1.0),
    random_start=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_adversarial_pixels_stay_in_range_and_budget(trained, method, norm, eps, random_start, seed):
    model = trained[0]
    pixels, labels = make_pixels(12, seed)
    pixels[::4] = pixels[::4].round()  # samples on the edges of the range
    inputs = SPACE.to_inputs(pixels)
    config = AttackConfig(method=method, eps=eps, norm=norm, steps=3, step_size=eps / 2, random_start=random_start,
                          seed=seed)
    result = attack(model, inputs, labels, attack=config, space=SPACE, batch_size=5)
    assert result.inputs.shape == inputs.shape
    assert_in_budget(result.inputs, inputs, eps, norm)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_on_a_linear_model_is_the_analytic_step(norm):
    torch.manual_seed(1)
    linear = nn.Linear(32, 3)
    model = nn.Sequential(nn.Flatten(), linear)
    pixels, labels = make_pixels(9)
    inputs = SPACE.to_inputs(pixels)
    eps = 0.2
    with torch.no_grad():
        probabilities = torch.softmax(model(inputs), dim=1)
        grad_inputs = ((probabilities - F.one_hot(labels, 3)) @ linear.weight).view(inputs.shape)
        grad = grad_inputs / torch.tensor(SPACE.std).view(2, 1, 1)  # d input / d pixel = 1 / std
    step = grad.sign() if norm == "linf" else grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    expected = (pixels + eps * step).clamp(0, 1)
    adv = fgsm(model, inputs, labels, eps=eps, space=SPACE, norm=norm)
    torch.testing.assert_close(SPACE.to_pixels(adv), expected, atol=1e-5, rtol=0)


def test_pgd_random_starts_follow_the_seed(trained):
    model, inputs, labels = trained

    def one_step(seed):
        generator = torch.Generator().manual_seed(seed)
        return pgd(model, inputs, labels, eps=0.1, space=SPACE, steps=1, step_size=0.01, generator=generator)

    assert torch.equal(one_step(0), one_step(0))
    assert not torch.allclose(one_step(0), one_step(1))


def test_pgd_random_starts_are_uniform_in_the_ball():
    torch.manual_seed(0)
    model = mlp()
    inputs, labels = SPACE.to_inputs(torch.full((400, *SHAPE), 0.5)), torch.arange(400) % 3  # no clipping
    generator = torch.Generator().manual_seed(0)
    start = {  # one negligible step after the start
        norm: pixel_change(pgd(model, inputs, labels, eps=0.1, space=SPACE, steps=1, step_size=1e-7, norm=norm,
                               generator=generator), inputs)
        for norm in ("linf", "l2")
    }
    assert start["linf"].abs().max() <= 0.1 + 1e-6
    assert start["linf"].abs().mean() == pytest.approx(0.05, abs=0.002)  # uniform in [-eps, eps] per pixel
    assert start["linf"].mean() == pytest.approx(0.0, abs=0.002)
    radii = start["l2"].flatten(1).norm(dim=1) / 0.1
    assert radii.max() <= 1 + 1e-5
    assert radii.mean() == pytest.approx(32 / 33, abs=0.005)  # E[U ** (1/d)] = d / (d + 1), d = 32 pixels


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_attack_is_deterministic_and_leaves_the_global_rng_alone(trained, norm):
    model, inputs, labels = trained
    config = AttackConfig(method="pgd", eps=0.1, norm=norm, steps=3, step_size=0.05, seed=3)
    state = torch.get_rng_state()
    first, again = (attack(model, inputs, labels, attack=config, space=SPACE, batch_size=40) for _ in range(2))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first.inputs, again.inputs)
    other = attack(model, inputs, labels, attack=AttackConfig(method="pgd", eps=0.1, norm=norm, steps=3,
                                                              step_size=0.05, seed=4), space=SPACE, batch_size=40)
    assert not torch.equal(first.inputs, other.inputs)


def test_attack_result_fields_and_summary(trained):
    model, inputs, labels = trained
    result = attack(model, inputs, labels, attack=AttackConfig(method="pgd", eps=0.1, steps=5, step_size=0.03),
                    space=SPACE, batch_size=32)
    assert result.inputs.shape == inputs.shape and result.inputs.device.type == "cpu"
    assert torch.equal(result.clean_pred, model(inputs).argmax(1))
    assert torch.equal(result.adv_pred, model(result.inputs).argmax(1))
    summary = result.summary()
    assert summary["n_attacked"] == 96 and summary["n_correct"] == 96 and summary["clean_accuracy"] == 1.0
    assert 0 < summary["n_flipped"] < 96
    assert summary["success_rate"] == summary["n_flipped"] / 96 == pytest.approx(1 - summary["adversarial_accuracy"])
    json.dumps(summary)


def test_frozen_parameters_untouched_grads_and_modes_restored(trained):
    model, inputs, labels = trained
    frozen = nn.Sequential(mlp(), nn.Dropout(0.5))
    frozen.load_state_dict({f"0.{k}": v for k, v in model.state_dict().items()})
    frozen.requires_grad_(False)
    frozen.train()
    frozen[1].eval()  # a mixed mode must come back as it was
    adv = fgsm(frozen, inputs, labels, eps=0.1, space=SPACE)
    torch.testing.assert_close(adv, fgsm(model, inputs, labels, eps=0.1, space=SPACE))  # dropout was off
    assert frozen.training and frozen[0].training and not frozen[1].training
    pgd(model, inputs, labels, eps=0.1, space=SPACE, steps=2)
    assert all(param.grad is None for param in model.parameters())


def test_inputs_in_pixel_space_and_flat_inputs():
    torch.manual_seed(2)
    model = nn.Linear(5, 3)
    inputs = torch.rand(8, 5)
    labels = torch.arange(8) % 3
    for space in (PixelSpace(), PixelSpace(mean=(0.5,), std=(0.3,))):
        x = space.to_inputs(inputs)
        adv = pgd(model, x, labels, eps=0.05, space=space, steps=4, norm="l2")
        assert_in_budget(adv, x, 0.05, "l2", space)


# --- AttackResult ---------------------------------------------------------------------------------------


def test_attack_result_on_hand_made_predictions():
    result = AttackResult(
        inputs=torch.zeros(5, 1),
        labels=torch.tensor([0, 1, 2, 0, 1]),
        clean_pred=torch.tensor([0, 1, 0, 0, 2]),
        adv_pred=torch.tensor([1, 1, 2, 2, 1]),
    )
    assert result.correct.tolist() == [True, True, False, True, False]
    assert result.flipped.tolist() == [True, False, False, True, False]
    assert result.success_rate == pytest.approx(2 / 3)
    assert result.summary() == {
        "n_attacked": 5,
        "n_correct": 3,
        "n_flipped": 2,
        "success_rate": pytest.approx(2 / 3),
        "clean_accuracy": pytest.approx(0.6),
        "adversarial_accuracy": pytest.approx(0.6),  # sample 2 was wrong, and right after the attack
    }


def test_success_rate_is_nan_when_nothing_was_correct():
    result = AttackResult(torch.zeros(2, 1), torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([1, 1]))
    assert not result.flipped.any()
    assert math.isnan(result.success_rate)


# --- AttackConfig ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, message",
    [
        (AttackConfig(eps=2), "eps=2 is outside the pixel range [0, 1]: an L-inf budget must be in (0, 1]"),
        (AttackConfig(method="fgsm", eps=0), "eps=0 must be a positive number; pass the budget in pixel units"),
        (AttackConfig(eps=-0.1), "eps=-0.1 must be a positive number"),
        (AttackConfig(eps=float("nan"), norm="l2"), "eps=nan must be a positive number"),
        (AttackConfig(method="cw"), "unknown attack method 'cw'; use 'fgsm', 'pgd' or 'torchattacks:NAME'"),
        (AttackConfig(method="torchattacks:"), "unknown attack method"),
        (AttackConfig(norm="l1"), "unknown norm 'l1'; use 'linf' or 'l2'"),
        (AttackConfig(steps=0), "steps=0 must be an integer >= 1"),
        (AttackConfig(step_size=0.0), "step_size=0.0 must be a positive number"),
        (AttackConfig(seed=1.5), "seed=1.5 must be an integer"),
        (AttackConfig(method="fgsm", options={"c": 1}), "options ['c'] only apply to torchattacks:NAME"),
        (AttackConfig(method="torchattacks:PGD", options={"eps": 0.1}), "options must not hold 'eps'"),
    ],
)
def test_config_refusals(config, message):
    with pytest.raises(AttackError, match="^" + re.escape(message)):
        config.validate(PixelSpace())


def test_budgets_follow_the_pixel_range_and_norm():
    AttackConfig(eps=2, norm="l2").validate(PixelSpace())  # an L2 budget may exceed the range's width
    AttackConfig(eps=2).validate(PixelSpace(low=-1.0, high=1.0))
    AttackConfig(method="fgsm", eps=0.5, steps=0).validate(PixelSpace())  # pgd settings do not matter for fgsm
    with pytest.raises(AttackError, match=r"outside the pixel range \[0, 255\]"):
        AttackConfig(eps=300).validate(PixelSpace(high=255.0))


def test_config_to_dict_is_json_ready():
    config = AttackConfig(method="torchattacks:CW", eps=0.5, norm="l2", options={"c": 0.1, "steps": 5})
    data = json.loads(json.dumps(config.to_dict()))
    assert AttackConfig(**data) == config
    assert data["method"] == "torchattacks:CW" and data["options"] == {"c": 0.1, "steps": 5}


# --- bad input ------------------------------------------------------------------------------------------


class NoGradForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp()

    def forward(self, x):
        with torch.no_grad():
            return self.net(x)


class DetachedOutput(NoGradForward):
    def forward(self, x):
        return self.net(x).detach()


class DetachedInput(NoGradForward):
    def forward(self, x):
        return self.net(x.detach())


class ArgmaxOutput(NoGradForward):
    def forward(self, x):
        return self.net(x).argmax(1)


class TupleOutput(NoGradForward):
    def forward(self, x):
        return self.net(x), x


@pytest.mark.parametrize("model_cls", [NoGradForward, DetachedOutput, DetachedInput, ArgmaxOutput])
@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_models_without_input_gradients_are_refused(model_cls, method):
    pixels, labels = make_pixels(6)
    with pytest.raises(AttackError, match=r"^the model's output carries no gradient with respect to its input"):
        attack(model_cls(), SPACE.to_inputs(pixels), labels, attack=AttackConfig(method=method, eps=0.1, steps=2),
               space=SPACE)


def test_data_outside_the_pixel_range_is_refused():
    pixels, labels = make_pixels(6)
    inputs = SPACE.to_inputs(pixels)  # normalised, but the identity space is passed
    with pytest.raises(AttackError, match=r"^the samples' pixels span \[-.*\], outside the pixel range \[0, 1\]; "
                       r"pass the data's pixel range \(PixelSpace\(low, high\)\)"):
        attack(mlp(), inputs, labels, attack=AttackConfig(method="fgsm", eps=0.1), space=PixelSpace())
    inputs[0, 0, 0, 0] = float("nan")
    with pytest.raises(AttackError, match="NaN or infinite"):
        attack(mlp(), inputs, labels, attack=AttackConfig(method="fgsm", eps=0.1), space=SPACE)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x, y, m: (x, y.float(), m), r"^labels are a torch.float32 tensor of shape \(6,\); pass an integer"),
        (lambda x, y, m: (x, y[:5], m), r"labels are a torch.int64 tensor of shape \(5,\)"),
        (lambda x, y, m: (x, y + 1, m), r"^the labels span \[1, 3\] but the model gives 3 classes"),
        (lambda x, y, m: (x[:, 0, 0, 0], y, m), r"^inputs are a torch.float32 tensor of shape \(6,\)"),
        (lambda x, y, m: (x[:0], y[:0], m), "^there are no samples to attack"),
        (lambda x, y, m: (x, y, TupleOutput()), "^the model returns a tuple, not a tensor of logits"),
        (lambda x, y, m: (x, y, nn.Sequential(m, nn.Unflatten(1, (3, 1)))), r"^the model returns shape \(6, 3, 1\)"),
    ],
)
def test_bad_samples_and_models_are_refused(change, message):
    pixels, labels = make_pixels(6)
    inputs, labels, model = change(SPACE.to_inputs(pixels), labels, mlp())
    with pytest.raises(AttackError, match=message):
        attack(model, inputs, labels, attack=AttackConfig(method="fgsm", eps=0.1), space=SPACE)


def test_bad_batch_size_and_direct_calls_are_checked(trained):
    model, inputs, labels = trained
    with pytest.raises(AttackError, match="batch_size=0 must be an integer >= 1"):
        attack(model, inputs, labels, attack=AttackConfig(method="fgsm", eps=0.1), space=SPACE, batch_size=0)
    with pytest.raises(AttackError, match="eps=2 is outside the pixel range"):
        fgsm(model, inputs, labels, eps=2, space=SPACE)
    with pytest.raises(AttackError, match="steps=0 must be"):
        pgd(model, inputs, labels, eps=0.1, space=SPACE, steps=0)
    with pytest.raises(AttackError, match="do not have 2 channels in dimension 1"):
        fgsm(model, inputs.flatten(1), labels, eps=0.1, space=SPACE)


# --- PixelSpace -----------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    mean=st.lists(st.floats(-1, 1), min_size=3, max_size=3),
    std=st.lists(st.floats(0.05, 4), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_pixel_space_round_trip(mean, std, seed):
    space = PixelSpace(mean=tuple(mean), std=tuple(std))
    x = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(space.to_inputs(space.to_pixels(x)), x, atol=1e-5, rtol=1e-5)
    pixels = space.to_pixels(x)
    for channel in range(3):
        torch.testing.assert_close(pixels[:, channel], x[:, channel] * std[channel] + mean[channel])


def test_pixel_space_identity_and_single_channel():
    x = torch.randn(4, 7)
    for space in (PixelSpace(), PixelSpace.from_normalization({}), PixelSpace.from_normalization(None)):
        assert space == PixelSpace() and space.to_pixels(x) is x and space.to_inputs(x) is x
    mnist = PixelSpace.from_normalization({"mean": [0.1307], "std": [0.3081]})
    assert mnist == PixelSpace(mean=(0.1307,), std=(0.3081,))
    torch.testing.assert_close(mnist.to_pixels(x), x * 0.3081 + 0.1307)
    images = torch.randn(2, 3, 4, 4)  # one mean and std for every channel
    torch.testing.assert_close(mnist.to_inputs(mnist.to_pixels(images)), images)


@pytest.mark.parametrize(
    "normalization, pixel_range, message",
    [
        ({"mean": [0.5], "std": [0.2, 0.3]}, (0, 1), "has 1 means but 2 stds"),
        ({"mean": [0.5, 0.5], "std": [0.2, 0.0]}, (0, 1), "must be finite with std > 0"),
        ({"mean": [0.5], "std": [-0.2]}, (0, 1), "must be finite with std > 0"),
        ({"mean": [float("nan")], "std": [0.2]}, (0, 1), "must be finite with std > 0"),
        ({"mean": [0.5]}, (0, 1), "has no std"),
        ({"mean": ["a"], "std": [1.0]}, (0, 1), "is not a list of numbers"),
        ({}, (1, 1), r"the pixel range \[1, 1\] is not an interval"),
        ({}, (1, 0), r"pass finite low < high \(PixelSpace\(low, high\)\)"),
    ],
)
def test_from_normalization_refusals(normalization, pixel_range, message):
    with pytest.raises(AttackError, match=message):
        PixelSpace.from_normalization(normalization, low=pixel_range[0], high=pixel_range[1])


def test_check_allows_rounding_but_not_more():
    space = PixelSpace()
    space.check(torch.tensor([[0.0, 1.0 + 5e-5]]))
    space.check(torch.zeros(0, 3))
    with pytest.raises(AttackError, match=r"span \[-0.01, 1\], outside the pixel range \[0, 1\]"):
        space.check(torch.tensor([[-0.01, 1.0]]))
    PixelSpace(low=-1.0, high=1.0).check(torch.tensor([[-0.01, 1.0]]))


# --- torchattacks ---------------------------------------------------------------------------------------


def test_missing_torchattacks_says_how_to_install(trained, monkeypatch):
    model, inputs, labels = trained
    monkeypatch.setitem(sys.modules, "torchattacks", None)
    with pytest.raises(AttackError, match=r'^torchattacks is not installed; .*pip install "layermod\[attacks\]"$'):
        attack(model, inputs, labels, attack=AttackConfig(method="torchattacks:FGSM", eps=0.1), space=SPACE)


@pytest.mark.parametrize("space", [SPACE, PixelSpace(mean=(0.0, 0.2), std=(0.5, 0.4), low=-1.0, high=1.0)])
def test_torchattacks_fgsm_matches_ours(trained, space):
    pytest.importorskip("torchattacks")
    model, _, labels = trained
    inputs = space.to_inputs(make_pixels(96)[0] * space.width + space.low)
    for eps in (0.03, 0.3):
        result = attack(model, inputs, labels, attack=AttackConfig(method="torchattacks:FGSM", eps=eps), space=space)
        ours = fgsm(model, inputs, labels, eps=eps, space=space)
        torch.testing.assert_close(space.to_pixels(result.inputs), space.to_pixels(ours), atol=1e-5, rtol=0)


def test_torchattacks_pgd_keeps_the_budget_and_the_seed(trained):
    pytest.importorskip("torchattacks")
    model, inputs, labels = trained
    config = AttackConfig(method="torchattacks:PGD", eps=0.1, seed=5, options={"steps": 3, "alpha": 0.05})
    first = attack(model, inputs, labels, attack=config, space=SPACE, batch_size=50)
    torch.manual_seed(123)  # the caller's RNG state does not matter, only the seed
    assert torch.equal(first.inputs, attack(model, inputs, labels, attack=config, space=SPACE, batch_size=50).inputs)
    other = attack(model, inputs, labels, attack=AttackConfig(**{**config.to_dict(), "seed": 6}), space=SPACE,
                   batch_size=50)
    assert not torch.equal(first.inputs, other.inputs)
    assert_in_budget(first.inputs, inputs, 0.1, "linf")
    assert loss(model, first.inputs, labels) > loss(model, inputs, labels)


@pytest.mark.parametrize(
    "config, message",
    [
        (AttackConfig(method="torchattacks:Nope", eps=0.1), r"^torchattacks has no attack 'Nope'; .*e\.g\. FGSM, PGD"),
        (AttackConfig(method="torchattacks:Attack", eps=0.1), "torchattacks has no attack 'Attack'"),
        (AttackConfig(method="torchattacks:FGSM", eps=0.1, options={"steps": 3}),
         r"^torchattacks.FGSM does not take options"),
    ],
)
def test_torchattacks_refusals(trained, config, message):
    pytest.importorskip("torchattacks")
    model, inputs, labels = trained
    with pytest.raises(AttackError, match=message):
        attack(model, inputs, labels, attack=config, space=SPACE)


@pytest.mark.parametrize("model_cls", [DetachedOutput, DetachedInput])
def test_torchattacks_models_without_input_gradients_are_refused(model_cls):
    pytest.importorskip("torchattacks")
    pixels, labels = make_pixels(6)
    with pytest.raises(AttackError, match=r"^the model's output carries no gradient"):
        attack(model_cls(), SPACE.to_inputs(pixels), labels, attack=AttackConfig(method="torchattacks:FGSM", eps=0.1),
               space=SPACE)
