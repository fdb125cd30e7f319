"""Train and evaluate a classifier: the minimal, deterministic base trainer.

SGD with momentum and weight decay, the learning rate set every step by a schedule, cross-entropy loss, one
history row per epoch. Richer training (augmentation, checkpoints every epoch, curve tracking) builds on
:func:`train_epoch` and :func:`evaluate`.

Decisions, on purpose:

* **Seeded.** :func:`train` calls ``torch.manual_seed(config.seed)`` (weight-independent randomness such as
  dropout) and shuffles with its own ``torch.Generator`` seeded from ``config.seed``, so two runs from the same
  initial weights with the same config give the same weights (on the same device and thread count).
* **In-memory fast path.** A dataset with tensor ``.data`` and ``.targets`` plus a ``normalization`` attribute
  (layermod's ``ArrayDataset``: float32 samples, already normalised) and no ``transform`` is batched by
  indexing those tensors directly; anything else goes through a ``DataLoader``. Both paths draw the same
  permutation from the generator, so the order of samples does not depend on the path.
* **Schedule per step.** ``"cosine"`` decays from ``lr`` to 0 over all steps of all epochs,
  ``lr_t = lr * (1 + cos(pi * t / T)) / 2``; ``"constant"`` keeps ``lr``.
* **No stray batch of one.** When the last batch of an epoch would hold a single sample (with ``batch_size > 1``
  and a larger dataset), it is skipped: batch norm cannot normalise one sample per channel.
* **Divergence.** A non-finite loss stops training with :class:`TrainError` (lower the learning rate) rather
  than silently producing NaN weights.
* **Device.** Batches go to the device of the model's first parameter; the model is left in eval mode.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .errors import DatasetError, TrainError
from .features import model_device

__all__ = ["TrainConfig", "evaluate", "lr_at", "train", "train_epoch"]

SCHEDULES = ("cosine", "constant")


@dataclass
class TrainConfig:
    """Settings of :func:`train`.

    Attributes:
        epochs: passes over the training data, >= 1.
        batch_size: samples per step, >= 1.
        lr: peak learning rate of SGD, > 0.
        momentum: SGD momentum in [0, 1).
        weight_decay: L2 penalty (SGD ``weight_decay``), >= 0.
        schedule: ``"cosine"`` (per-step decay to 0) or ``"constant"``.
        seed: seed of the shuffling generator and of ``torch.manual_seed``.
        num_workers: ``DataLoader`` workers (unused on the in-memory fast path).
    """

    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    seed: int = 0
    num_workers: int = 0

    def validate(self) -> None:
        """Raise :class:`TrainError` naming the first bad field."""
        checks = (
            ("epochs", _is_int(self.epochs) and self.epochs >= 1, "an integer >= 1"),
            ("batch_size", _is_int(self.batch_size) and self.batch_size >= 1, "an integer >= 1"),
            ("lr", _is_real(self.lr) and math.isfinite(self.lr) and self.lr > 0, "a finite number > 0"),
            ("momentum", _is_real(self.momentum) and 0 <= self.momentum < 1, "a number in [0, 1)"),
            ("weight_decay", _is_real(self.weight_decay) and 0 <= self.weight_decay < math.inf, "a number >= 0"),
            ("schedule", self.schedule in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
            ("seed", _is_int(self.seed), "an integer"),
            ("num_workers", _is_int(self.num_workers) and self.num_workers >= 0, "an integer >= 0"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise TrainError(f"TrainConfig.{name}={getattr(self, name)!r} must be {expected}")

    def to_dict(self) -> dict:
        """Plain dict of the fields (JSON-ready)."""
        return asdict(self)


def lr_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """Learning rate for 0-based ``step`` of ``total_steps`` under ``config.schedule``."""
    if config.schedule == "constant" or total_steps <= 0:
        return float(config.lr)
    return float(config.lr) * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Dataset, batch_size: int = 512, device: torch.device | str | None = None
) -> float:
    """Top-1 accuracy of ``model`` on ``data``, in [0, 1].

    Runs without gradients in eval mode, and leaves the model in eval mode. ``data`` yields ``(x, y)`` with ``x`` a
    float tensor and ``y`` an int class. Batches go to ``device`` (default: the model's device); the model itself is
    not moved.
    """
    n = _length(data, "evaluation data")
    if not _is_int(batch_size) or batch_size < 1:
        raise TrainError(f"batch_size={batch_size!r} must be an integer >= 1")
    device = torch.device(device) if device is not None else model_device(model)
    model.eval()
    correct = 0
    for x, y in _batches(data, torch.arange(n), batch_size, num_workers=0, drop_single=False):
        logits = model(x.to(device))
        correct += int((logits.argmax(dim=1) == y.to(device)).sum())
    return correct / n


def train_epoch(
    model: nn.Module,
    data: Dataset,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    generator: torch.Generator,
    step: int = 0,
    total_steps: int | None = None,
    progress: bool = True,
    desc: str = "train",
) -> tuple[float, float, int]:
    """One pass over ``data`` in a random order drawn from ``generator``.

    The learning rate of every step is ``lr_at(step, total_steps, config)``. Returns
    ``(mean loss per sample, accuracy on the seen samples, next step)``.
    """
    n = _length(data, "training data")
    device = model_device(model)
    order = torch.randperm(n, generator=generator)
    steps = _num_batches(n, config.batch_size)
    total_steps = total_steps if total_steps is not None else step + steps
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(total=steps, desc=desc, leave=False, disable=None if progress else True, unit="batch")
    try:
        for x, y in _batches(data, order, config.batch_size, config.num_workers, True, generator):
            lr = lr_at(step, total_steps, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainError(f"training diverged (loss {value} at step {step}); lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            batch = y.shape[0]
            loss_sum += value * batch
            correct += int((logits.detach().argmax(dim=1) == y).sum())
            seen += batch
            step += 1
            bar.update(1)
            if bar.n % 20 == 0 or bar.n == steps:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}", refresh=False)
    finally:
        bar.close()
    return loss_sum / max(seen, 1), correct / max(seen, 1), step


def train(
    model: nn.Module,
    train_data: Dataset,
    test_data: Dataset | None,
    config: TrainConfig,
    progress: bool = True,
) -> list[dict]:
    """Train ``model`` in place with SGD (momentum, weight decay) and the per-step schedule of ``config``.

    Args:
        model: the classifier, on the device to train on; outputs (B, num_classes) logits.
        train_data: dataset of ``(x, y)`` pairs (float tensor, int class).
        test_data: evaluated after every epoch (``None``: ``"test_acc"`` is ``None``).
        config: see :class:`TrainConfig`.
        progress: show a tqdm bar per epoch (when stderr is a terminal).

    Returns:
        One dict per epoch: ``{"epoch" (1-based), "train_loss", "train_acc", "test_acc", "seconds"}``; seconds
        count the training pass and the evaluation. The model is left in eval mode.
    """
    config.validate()
    _length(train_data, "training data")
    if test_data is not None:
        _length(test_data, "test data")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    steps_per_epoch = _num_batches(len(train_data), config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    history: list[dict] = []
    step = 0
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        loss, acc, step = train_epoch(
            model, train_data, optimizer, config, generator, step, total_steps,
            progress=progress, desc=f"epoch {epoch}/{config.epochs}",
        )
        test_acc = evaluate(model, test_data) if test_data is not None else None
        row = {
            "epoch": epoch,
            "train_loss": loss,
            "train_acc": acc,
            "test_acc": test_acc,
            "seconds": time.perf_counter() - start,
        }
        history.append(row)
        if progress:
            shown = "-" if test_acc is None else f"{test_acc:.4f}"
            tqdm.write(
                f"epoch {epoch}/{config.epochs}: loss {loss:.4f}, train acc {acc:.4f}, "
                f"test acc {shown}, {row['seconds']:.1f}s"
            )
    model.eval()
    return history


# --------------------------------------------------------------------------------------------- batching


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _length(data: Dataset, what: str) -> int:
    try:
        n = len(data)  # type: ignore[arg-type]
    except TypeError:
        raise DatasetError(f"{what} must be a sized dataset (with __len__)") from None
    if n == 0:
        raise DatasetError(f"{what} is empty; check the dataset path and split")
    return n


def _drops_last(n: int, batch_size: int) -> bool:
    """True when the last training batch would hold one sample out of a larger dataset (it is skipped)."""
    return batch_size > 1 and n > 1 and n % batch_size == 1


def _num_batches(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size) - int(_drops_last(n, batch_size))


def _in_memory(data: Dataset) -> bool:
    """True for a dataset whose tensors can be indexed directly (see module doc)."""
    return (
        isinstance(getattr(data, "data", None), torch.Tensor)
        and isinstance(getattr(data, "targets", None), torch.Tensor)
        and hasattr(data, "normalization")
        and getattr(data, "transform", None) is None
    )


def _batches(
    data: Dataset,
    order: torch.Tensor,
    batch_size: int,
    num_workers: int,
    drop_single: bool,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches following ``order`` (a permutation of the indices); ``y`` as int64."""
    n = order.numel()
    chunks = list(torch.split(order, batch_size))
    if drop_single and _drops_last(n, batch_size):
        chunks.pop()
    if _in_memory(data):
        x_all, y_all = data.data, data.targets  # type: ignore[attr-defined]
        for idx in chunks:
            yield x_all[idx], y_all[idx].long()
        return
    loader = DataLoader(
        data,
        batch_sampler=[c.tolist() for c in chunks],
        num_workers=num_workers,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        generator=generator,
    )
    for x, y in loader:
        yield x, torch.as_tensor(y).long()


def _seed_worker(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2**32)
