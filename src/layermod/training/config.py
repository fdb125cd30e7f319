"""The settings of a training run (:class:`TrainConfig`), its schedules and the paper's recipe; no torch here, so
the CLI builds its options from them quickly."""

from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import asdict, dataclass

from layermod.errors import TrainError

__all__ = ["OPTIMIZERS", "PAPER_RECIPE", "SCHEDULES", "TrainConfig", "is_integer"]

SCHEDULES = ("cosine", "step", "constant")
OPTIMIZERS = ("sgd", "adamw")


@dataclass(kw_only=True)
class TrainConfig:
    """Settings of :func:`train` and :func:`fit`.

    Attributes:
        epochs: passes over the training data, >= 1.
        batch_size: samples per step, >= 1.
        lr: peak learning rate, > 0.
        momentum: SGD momentum in [0, 1) (unused by AdamW).
        weight_decay: SGD's L2 penalty, or AdamW's decoupled weight decay, >= 0.
        schedule: ``"cosine"`` (per-step decay to 0), ``"step"`` (x ``gamma`` after each milestone epoch) or
            ``"constant"``.
        seed: seed of the per-epoch generators (shuffling, augmentation) and of ``torch.manual_seed``.
        num_workers: ``DataLoader`` workers (unused on the in-memory fast path).
        milestones: increasing epochs after which the ``"step"`` schedule multiplies the rate by ``gamma``; each
            below ``epochs``; empty for the other schedules.
        gamma: factor of the ``"step"`` schedule, in (0, 1).
        augment: random crop (padding 4) and horizontal flip of every training batch.
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adamw"`` (torch's default betas and eps), which
            transformers need to train well.
    """

    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    seed: int = 0
    num_workers: int = 0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    augment: bool = False
    optimizer: str = "sgd"

    def validate(self) -> None:
        """Raise :class:`TrainError` naming the first bad field, or a schedule that does not fit ``epochs``."""
        checks = (
            ("epochs", is_integer(self.epochs) and self.epochs >= 1, "an integer >= 1"),
            ("batch_size", is_integer(self.batch_size) and self.batch_size >= 1, "an integer >= 1"),
            ("lr", _is_real(self.lr) and math.isfinite(self.lr) and self.lr > 0, "a finite number > 0"),
            ("momentum", _is_real(self.momentum) and 0 <= self.momentum < 1, "a number in [0, 1)"),
            ("weight_decay", _is_real(self.weight_decay) and 0 <= self.weight_decay < math.inf, "a number >= 0"),
            ("schedule", self.schedule in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
            ("seed", is_integer(self.seed), "an integer"),
            ("num_workers", is_integer(self.num_workers) and self.num_workers >= 0, "an integer >= 0"),
            ("milestones", isinstance(self.milestones, (tuple, list)) and all(map(is_integer, self.milestones)),
             "a sequence of integer epochs"),
            ("gamma", _is_real(self.gamma) and 0 < self.gamma < 1, "a number in (0, 1)"),
            ("augment", isinstance(self.augment, bool), "True or False"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise TrainError(f"TrainConfig.{name}={getattr(self, name)!r} must be {expected}")
        milestones = list(self.milestones)
        if self.schedule != "step":
            if milestones:
                raise TrainError(f"milestones {_commas(milestones)} apply only to the 'step' schedule, not "
                                 f"{self.schedule!r}; drop them or use schedule 'step'")
            return
        if not milestones:
            raise TrainError("TrainConfig.schedule='step' needs milestones, the epochs after which the rate is "
                             "multiplied by gamma (e.g. 50,100)")
        if milestones[0] < 1 or any(b <= a for a, b in itertools.pairwise(milestones)):
            raise TrainError(f"milestones {_commas(milestones)} must be strictly increasing epochs >= 1")
        if milestones[-1] >= self.epochs:
            raise TrainError(f"milestone {milestones[-1]} does not fit a run of {self.epochs} epochs (it would never "
                             f"take effect); use milestones below {self.epochs} or raise epochs")

    def to_dict(self) -> dict:
        """Plain dict of the fields (JSON-ready)."""
        return {**asdict(self), "milestones": list(self.milestones)}


PAPER_RECIPE = TrainConfig(epochs=150, batch_size=256, lr=0.01, momentum=0.9, weight_decay=5e-3, schedule="step",
                           milestones=(50, 100), gamma=0.1)
"""The paper's training: SGD momentum 0.9, lr 0.01, batch 256, weight decay 5e-3, 150 epochs, x0.1 after epochs
50 and 100 (random crop and flip on CIFAR: set ``augment``)."""


def is_integer(value: object) -> bool:
    """Whether ``value`` is an integer (a numpy one too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _commas(values: list) -> str:
    return ",".join(str(v) for v in values)
