"""Train and evaluate a classifier in memory; :mod:`layermod.training.fit` builds resumable runs on disk on top of it.

The decisions behind it: docs/design.md, section layermod.training.train.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from layermod.data.arrays import dataset_labels, gather
from layermod.data.batches import take
from layermod.errors import DatasetError, TrainError
from layermod.extract.features import model_device
from layermod.extract.inputs import Batch, describe_batch
from layermod.extract.modes import evaluating
from layermod.training.config import PAPER_RECIPE, TrainConfig, is_integer
from layermod.coerce import bar_disabled

__all__ = [
    "PAPER_RECIPE",
    "TrainConfig",
    "check_model_fits",
    "dataset_length",
    "evaluate",
    "lr_at",
    "make_optimizer",
    "num_batches",
    "run_epoch",
    "train",
    "train_epoch",
]

AUGMENT_PADDING = 4


def lr_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """Learning rate for 0-based ``step`` of ``total_steps`` under ``config.schedule``.

    ``total_steps`` is the run's ``steps_per_epoch * config.epochs``; the ``"step"`` schedule reads the epoch of
    ``step`` from it.
    """
    if config.schedule == "constant" or total_steps <= 0:
        return float(config.lr)
    if config.schedule == "step":
        epoch = min(step, total_steps - 1) * config.epochs // total_steps  # 0-based
        return float(config.lr) * float(config.gamma) ** sum(1 for m in config.milestones if m <= epoch)
    return float(config.lr) * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def check_model_fits(model: nn.Module, data: Dataset, *, what: str = "data") -> None:
    """Run ``model`` once on two samples of ``data`` and check it returns (B, C) logits with C above every label.

    Raises:
        TrainError: one line saying what does not fit (input shape, output shape, number of classes).
    """
    labels = dataset_labels(data)
    x, _ = gather(data, np.arange(min(2, len(labels))))
    try:
        with evaluating(model), torch.no_grad():
            out = _forward(model, _on(x, model_device(model)))
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(x, Mapping):
            raise TrainError(f"the model fails on {what} ({describe_batch(x)}: {reason}); check that the token ids "
                             "fit the model (its vocabulary and length)") from None
        raise TrainError(f"the model fails on {what} of shape {tuple(x.shape[1:])} per sample ({reason}); check "
                         "that the data fit the model (input channels and size)") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise TrainError(f"the model returns {shape} on a batch of {len(x)}, not (batch, classes) logits; "
                         "train a classifier")
    top = int(labels.max())
    if top >= out.shape[1]:
        raise TrainError(f"{what} has labels up to {top} but the model outputs {out.shape[1]} classes; "
                         f"build it with num_classes >= {top + 1}")


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Dataset, *, batch_size: int = 512, device: torch.device | str | None = None
) -> float:
    """Top-1 accuracy of ``model`` on ``data``, in [0, 1].

    Runs without gradients in eval mode, and leaves the model in eval mode. ``data`` yields ``(x, y)`` with ``x`` a
    float tensor (or a dict of tensors, see docs/design.md) and ``y`` an int class. Batches go to ``device``
    (default: the model's device); the model itself is not moved.
    """
    n = dataset_length(data, "evaluation data")
    if not is_integer(batch_size) or batch_size < 1:
        raise TrainError(f"batch_size={batch_size!r} must be an integer >= 1")
    device = torch.device(device) if device is not None else model_device(model)
    model.eval()
    correct = 0
    for x, y in _batches(data, torch.arange(n), batch_size, num_workers=0, drop_single=False):
        logits = _forward(model, _on(x, device))
        correct += int((logits.argmax(dim=1) == y.to(device)).sum())
    return correct / n


def train_epoch(
    model: nn.Module,
    data: Dataset,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    generator: torch.Generator,
    *,
    step: int = 0,
    total_steps: int | None = None,
    progress: bool = True,
    desc: str = "train",
) -> tuple[float, float, int]:
    """One pass over ``data`` in a random order drawn from ``generator`` (augmented when ``config.augment``).

    The learning rate of every step is ``lr_at(step, total_steps, config)``. Returns
    ``(mean loss per sample, accuracy on the seen samples, next step)``.
    """
    n = dataset_length(data, "training data")
    device = model_device(model)
    augment = _augmenter(data) if config.augment else None
    order = torch.randperm(n, generator=generator)
    steps = num_batches(n, config.batch_size)
    total_steps = total_steps if total_steps is not None else step + steps
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(total=steps, desc=desc, leave=False, disable=bar_disabled(progress), unit="batch")
    try:
        for x, y in _batches(data, order, config.batch_size, config.num_workers, True, generator):
            lr = lr_at(step, total_steps, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if augment is not None:
                x = augment(x, generator)
            x, y = _on(x, device), y.to(device)
            logits = _forward(model, x)
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
    *,
    progress: bool = True,
) -> list[dict]:
    """Train ``model`` in place with ``config.optimizer`` (SGD with momentum and weight decay, or AdamW) and the
    per-step schedule of ``config``; no files.

    Args:
        model: the classifier, on the device to train on; outputs (B, num_classes) logits.
        train_data: dataset of ``(x, y)`` pairs (float tensor or dict of tensors, int class).
        test_data: evaluated after every epoch (``None``: ``"test_acc"`` is ``None``).
        config: see :class:`TrainConfig`.
        progress: show a tqdm bar per epoch (when stderr is a terminal) and a line per epoch.

    Returns:
        One dict per epoch: ``{"epoch" (1-based), "train_loss", "train_acc", "test_acc", "seconds"}``; seconds
        count the training pass and the evaluation. The model is left in eval mode.
    """
    config.validate()
    n = dataset_length(train_data, "training data")
    if test_data is not None:
        dataset_length(test_data, "test data")
    optimizer = make_optimizer(model, config)
    steps = num_batches(n, config.batch_size)
    history = [run_epoch(model, train_data, test_data, optimizer, config, epoch, steps, progress)
               for epoch in range(1, config.epochs + 1)]
    model.eval()
    return history


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """``config.optimizer`` over the model's parameters: SGD (lr, momentum, weight decay) or AdamW (lr, weight
    decay, torch's default betas and eps)."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def _on(x: Batch, device: torch.device) -> Batch:
    """``x`` on ``device``: a tensor, or every tensor of a dict batch."""
    if isinstance(x, Mapping):
        return {key: value.to(device) for key, value in x.items()}
    return x.to(device)


def _forward(model: nn.Module, x: Batch) -> torch.Tensor:
    """``model(x)``, or ``model(**x)`` for a dict batch."""
    return model(**x) if isinstance(x, Mapping) else model(x)


def _epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for epoch ``epoch`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed % 2**64, epoch]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def run_epoch(
    model: nn.Module,
    train_data: Dataset,
    test_data: Dataset | None,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    epoch: int,
    steps_per_epoch: int,
    progress: bool,
) -> dict:
    """Train epoch ``epoch`` (1-based) from its own seed, evaluate; the history row without ``lr``."""
    start = time.perf_counter()
    seed = _epoch_seed(config.seed, epoch)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    loss, acc, _ = train_epoch(
        model, train_data, optimizer, config, generator, step=(epoch - 1) * steps_per_epoch,
        total_steps=steps_per_epoch * config.epochs, progress=progress, desc=f"epoch {epoch}/{config.epochs}",
    )
    test_acc = evaluate(model, test_data) if test_data is not None else None
    row = {"epoch": epoch, "train_loss": loss, "train_acc": acc, "test_acc": test_acc,
           "seconds": time.perf_counter() - start}
    if progress:
        shown = "-" if test_acc is None else f"{test_acc:.4f}"
        tqdm.write(f"epoch {epoch}/{config.epochs}: loss {loss:.4f}, train acc {acc:.4f}, test acc {shown}, "
                   f"{row['seconds']:.1f}s")
    return row


def _augmenter(data: Dataset) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """``(batch (B, C, H, W), generator) -> augmented batch`` from :mod:`layermod.training.augment`, imported lazily."""
    from layermod.training import augment

    fill = augment.black_fill(getattr(data, "normalization", None) or {})

    def apply(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if isinstance(batch, Mapping):
            raise TrainError("augment crops and flips images, and these inputs are a dict (token ids); "
                             "train texts without augmentation")
        return augment.random_crop_flip(batch, padding=AUGMENT_PADDING, flip=True, fill=fill, generator=generator)

    return apply


# --------------------------------------------------------------------------------------------- batching


def dataset_length(data: Dataset, what: str) -> int:
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


def num_batches(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size) - int(_drops_last(n, batch_size))


def _in_memory(data: Dataset) -> bool:
    """True for a dataset whose tensors can be indexed directly (see docs/design.md)."""
    return (
        _tensors(getattr(data, "data", None))
        and isinstance(getattr(data, "targets", None), torch.Tensor)
        and hasattr(data, "normalization")
        and getattr(data, "transform", None) is None
    )


def _tensors(x: object) -> bool:
    """Whether ``x`` is a tensor or a non-empty dict of tensors."""
    if isinstance(x, Mapping):
        return bool(x) and all(isinstance(value, torch.Tensor) for value in x.values())
    return isinstance(x, torch.Tensor)


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
            yield take(x_all, idx), y_all[idx].long()
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
