"""The base trainer: learns separable data, seeded, evaluate is exact, configs are checked."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from layermod import models
from layermod.errors import DatasetError, LayermodError
from layermod.errors import TrainError
from layermod.training.train import TrainConfig, evaluate, lr_at, train


class Blobs(Dataset):
    """Two Gaussian blobs as 1x8x8 images; a plain Dataset (goes through the DataLoader)."""

    def __init__(self, n: int = 200, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.targets = torch.arange(n) % 2
        centres = torch.randn(2, 1, 8, 8, generator=g)
        self.data = centres[self.targets] * 1.5 + torch.randn(n, 1, 8, 8, generator=g)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.data[i], int(self.targets[i])


class InMemoryBlobs(Blobs):
    """Same data, marked as an in-memory dataset (tensor .data/.targets and .normalization): the fast path."""

    normalization = (0.0, 1.0)

    def __getitem__(self, i: int):  # the fast path must not need this
        raise AssertionError("fast path should index tensors directly")


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.create("smallcnn", num_classes=2, width=0.25)


FAST = TrainConfig(epochs=4, batch_size=32, lr=0.05)


@pytest.mark.parametrize("dataset", [Blobs, InMemoryBlobs])
def test_learns_separable_blobs(dataset):
    train_data, test_data = dataset(200, seed=0), dataset(200, seed=0)
    test_data.data = test_data.data.flip(0)  # same distribution, different order
    test_data.targets = test_data.targets.flip(0)
    model = small_cnn()
    history = train(model, train_data, test_data, FAST, progress=False)
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert set(history[0]) == {"epoch", "train_loss", "train_acc", "test_acc", "seconds"}
    assert history[-1]["test_acc"] > 0.9
    assert history[-1]["train_acc"] > 0.9
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(row["seconds"] > 0 for row in history)
    assert not model.training


def test_mlp_learns_blobs_with_constant_schedule():
    torch.manual_seed(0)
    model = models.create("mlp", num_classes=2, depth=2, width=0.25, input_size=64)
    config = TrainConfig(epochs=3, batch_size=50, lr=0.02, schedule="constant")
    history = train(model, Blobs(200), Blobs(200, seed=0), config, progress=False)
    assert history[-1]["test_acc"] > 0.9
    assert history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.parametrize("dataset", [Blobs, InMemoryBlobs])
def test_same_seed_same_weights(dataset):
    config = TrainConfig(epochs=2, batch_size=32, seed=3)
    runs = []
    for _ in range(2):
        model = small_cnn(seed=1)
        history = train(model, dataset(120), None, config, progress=False)
        runs.append((model.state_dict(), [row["train_loss"] for row in history]))
    (a, loss_a), (b, loss_b) = runs
    assert loss_a == loss_b
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert history[-1]["test_acc"] is None


def test_fast_path_and_loader_give_same_weights():
    config = TrainConfig(epochs=1, batch_size=32, seed=5)
    states = []
    for dataset in (Blobs, InMemoryBlobs):
        model = small_cnn(seed=2)
        train(model, dataset(100), None, config, progress=False)
        states.append(model.state_dict())
    assert all(torch.allclose(states[0][k].float(), states[1][k].float(), atol=1e-6) for k in states[0])


def test_different_seed_different_weights():
    results = []
    for seed in (0, 1):
        model = small_cnn(seed=1)
        train(model, Blobs(120), None, TrainConfig(epochs=1, batch_size=32, seed=seed), progress=False)
        results.append(model.classifier.weight.detach().clone())
    assert not torch.equal(*results)


class Fixed(nn.Module):
    """Predicts class = (first pixel > 0); a parameter so it has a device."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.reshape(x.shape[0], -1)[:, 0] * self.scale
        return torch.stack([-v, v], dim=1)


@pytest.mark.parametrize("batch_size", [1, 7, 512])
def test_evaluate_matches_hand_count(batch_size):
    data = Blobs(101, seed=4)
    expected = sum(int((data.data[i, 0, 0, 0] > 0).item() == data.targets[i].item()) for i in range(len(data)))
    model = Fixed().train()
    acc = evaluate(model, data, batch_size=batch_size)
    assert acc == expected / len(data)
    assert 0 < acc < 1
    assert not model.training


def test_evaluate_no_grad_and_perfect_score():
    data = Blobs(20)
    data.data[:, 0, 0, 0] = torch.where(data.targets == 1, 1.0, -1.0)
    model = Fixed()
    assert evaluate(model, data) == 1.0
    assert model.scale.grad is None


def test_cosine_schedule():
    config = TrainConfig(lr=0.1)
    assert lr_at(0, 100, config) == pytest.approx(0.1)
    assert lr_at(50, 100, config) == pytest.approx(0.05)
    assert lr_at(100, 100, config) == pytest.approx(0.0, abs=1e-12)
    values = [lr_at(s, 100, config) for s in range(101)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert lr_at(70, 100, TrainConfig(lr=0.1, schedule="constant")) == 0.1


def test_schedule_reaches_optimizer():
    model = small_cnn()
    seen = []
    original = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    torch.optim.SGD.step = spy
    try:
        train(model, Blobs(64), None, TrainConfig(epochs=2, batch_size=16, lr=0.08), progress=False)
    finally:
        torch.optim.SGD.step = original
    assert len(seen) == 8
    assert seen[0] == pytest.approx(0.08)
    assert seen == sorted(seen, reverse=True)
    assert seen[-1] == pytest.approx(0.08 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))


@pytest.mark.parametrize("n, batch_size, steps", [(33, 16, 2), (34, 16, 3), (32, 16, 2), (5, 1, 5), (1, 16, 1)])
def test_single_sample_last_batch_is_skipped(n, batch_size, steps):
    seen = []
    model = models.create("mlp", num_classes=2, depth=1, width=0.1, input_size=64)
    model.register_forward_hook(lambda module, inputs, output: seen.append(output.shape[0]) if module.training else None)
    history = train(model, Blobs(n), None, TrainConfig(epochs=1, batch_size=batch_size), progress=False)
    assert len(seen) == steps
    assert sum(seen) == n - (1 if (batch_size > 1 and n > 1 and n % batch_size == 1) else 0)
    assert math.isfinite(history[0]["train_loss"])


@pytest.mark.parametrize(
    "field, value",
    [("epochs", 0), ("batch_size", 0), ("lr", 0.0), ("lr", float("inf")), ("momentum", 1.0),
     ("weight_decay", -1.0), ("schedule", "linear"), ("num_workers", -1), ("epochs", 2.5)],
)
def test_bad_config(field, value):
    config = TrainConfig(**{field: value})
    with pytest.raises(TrainError, match=f"TrainConfig.{field}=") as info:
        train(small_cnn(), Blobs(20), None, config, progress=False)
    assert isinstance(info.value, LayermodError)


def test_empty_dataset():
    with pytest.raises(DatasetError, match="empty"):
        train(small_cnn(), Blobs(0), None, TrainConfig(epochs=1), progress=False)
    with pytest.raises(DatasetError, match="empty"):
        evaluate(small_cnn(), Blobs(0))


def test_divergence_is_reported():
    data = Blobs(64)
    data.data[0, 0, 0, 0] = float("nan")
    with pytest.raises(TrainError, match="diverged"):
        train(small_cnn(), data, None, TrainConfig(epochs=1, batch_size=64), progress=False)


def test_progress_bar_runs(capsys):
    history = train(small_cnn(), Blobs(40), Blobs(40), TrainConfig(epochs=1, batch_size=20), progress=True)
    assert len(history) == 1
    assert "epoch 1/1" in capsys.readouterr().out
