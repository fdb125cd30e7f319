"""Adversarial attacks on a classifier, with budgets in pixel units: the attack API.

:func:`attack` runs a configured attack (:class:`AttackConfig`) over many samples in batches and records which
samples the model classified correctly and the attack then flipped (:class:`AttackResult`). The attack itself is
:func:`fgsm` or :func:`pgd` (:mod:`layermod.adversarial.gradient`) or a class of torchattacks
(:mod:`layermod.adversarial.torchattacks_bridge`), stepping in the pixels of a :class:`PixelSpace`
(:mod:`layermod.adversarial.space`) as :class:`AttackConfig` says (:mod:`layermod.adversarial.config`). This
module is the front of them all: it re-exports what they offer.

Decisions, on purpose:

* **Batches on the CPU.** Samples are checked once (float inputs, integer labels, pixels within the range),
  attacked batch by batch on the model's device, and returned as CPU tensors; the model runs in eval mode and
  every module's mode is restored afterwards.
* **Determinism.** :func:`attack` draws pgd's random starts from a ``torch.Generator`` seeded with
  ``config.seed``, and seeds the global RNG (forked, so the caller's state is restored) for torchattacks'
  own random draws: the same config, samples and batch size give the same result.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from layermod.adversarial.config import METHODS, NORMS, TORCHATTACKS_PREFIX, AttackConfig
from layermod.adversarial.gradient import check_samples, fgsm, model_output, pgd
from layermod.adversarial.space import PixelSpace
from layermod.adversarial.torchattacks_bridge import torchattacks_runner
from layermod.coerce import bar_disabled, torch_seed
from layermod.errors import AttackError
from layermod.extract.features import model_device
from layermod.extract.modes import evaluating

__all__ = [
    "METHODS",
    "NORMS",
    "TORCHATTACKS_PREFIX",
    "AttackConfig",
    "AttackResult",
    "PixelSpace",
    "attack",
    "fgsm",
    "pgd",
]


@dataclass(frozen=True)
class AttackResult:
    """The outcome of :func:`attack` on N samples.

    Attributes:
        inputs: (N, ...) adversarial inputs in the model's space, CPU.
        labels: (N,) int64 true labels.
        clean_pred, adv_pred: (N,) int64 predictions on the clean and on the adversarial inputs.
    """

    inputs: Tensor
    labels: Tensor
    clean_pred: Tensor
    adv_pred: Tensor

    @property
    def correct(self) -> Tensor:
        """(N,) bool: classified correctly before the attack."""
        return self.clean_pred == self.labels

    @property
    def flipped(self) -> Tensor:
        """(N,) bool: classified correctly before the attack and wrongly after it."""
        return self.correct & (self.adv_pred != self.labels)

    @property
    def success_rate(self) -> float:
        """Flipped samples over correctly classified ones; nan when none was correct."""
        return _ratio(int(self.flipped.sum()), int(self.correct.sum()))

    def summary(self) -> dict:
        """Counts and rates: n_attacked, n_correct, n_flipped, success_rate, clean_accuracy and
        adversarial_accuracy (over all N samples; nan for N = 0)."""
        n = len(self.labels)
        n_correct = int(self.correct.sum())
        return {
            "n_attacked": n,
            "n_correct": n_correct,
            "n_flipped": int(self.flipped.sum()),
            "success_rate": self.success_rate,
            "clean_accuracy": _ratio(n_correct, n),
            "adversarial_accuracy": _ratio(int((self.adv_pred == self.labels).sum()), n),
        }


def attack(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    *,
    attack: AttackConfig,
    space: PixelSpace,
    batch_size: int = 256,
    progress: bool = False,
) -> AttackResult:
    """Attack every sample of ``inputs`` as ``attack`` says, in batches, and predict before and after.

    Args:
        model: a classifier returning (N, classes) logits; run in eval mode (restored) on its own device.
        inputs: (N, ...) samples in the model's (normalised) space, pixels within ``space``'s range.
        labels: (N,) int class indices.
        attack: the attack's settings; validated first.
        space: how inputs map to pixels.
        batch_size: samples per batch.
        progress: show a progress bar over batches (when stderr is a terminal).

    Returns:
        :class:`AttackResult` with CPU tensors.
    """
    attack.validate(space)
    check_samples(inputs, labels)
    if len(inputs) == 0:
        raise AttackError("there are no samples to attack; pass at least one sample")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise AttackError(f"batch_size={batch_size!r} must be an integer >= 1")
    space.check(inputs)
    parts: dict[str, list[Tensor]] = {"inputs": [], "clean_pred": [], "adv_pred": []}
    with evaluating(model), _seeded_global_rng(torch_seed(attack.seed, AttackError), model_device(model)):
        run = _runner(model, attack, space)
        starts = range(0, len(inputs), batch_size)
        for start in tqdm(starts, desc="attack", disable=bar_disabled(progress), leave=False):
            batch = inputs[start : start + batch_size]
            adv = run(batch, labels[start : start + batch_size]).cpu()
            parts["inputs"].append(adv)
            parts["clean_pred"].append(_predict(model, batch))
            parts["adv_pred"].append(_predict(model, adv))
    return AttackResult(labels=labels.detach().cpu().long(), **{key: torch.cat(part) for key, part in parts.items()})


def _runner(model: nn.Module, attack: AttackConfig, space: PixelSpace) -> Callable[[Tensor, Tensor], Tensor]:
    """``run(inputs (B, ...), labels (B,)) -> adversarial inputs (B, ...)`` for validated settings."""
    if attack.method == "fgsm":
        return lambda x, y: fgsm(model, x, y, eps=attack.eps, space=space, norm=attack.norm)
    if attack.method == "pgd":
        generator = torch.Generator().manual_seed(torch_seed(attack.seed, AttackError))
        return lambda x, y: pgd(
            model, x, y, eps=attack.eps, space=space, steps=attack.steps, step_size=attack.step_size,
            norm=attack.norm, random_start=attack.random_start, generator=generator,
        )
    return torchattacks_runner(model, attack, space)


@torch.no_grad()
def _predict(model: nn.Module, inputs: Tensor) -> Tensor:
    """(N,) int64 CPU predicted classes of (N, ...) inputs."""
    return model_output(model, inputs.to(model_device(model))).argmax(dim=1).cpu()


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else math.nan


@contextlib.contextmanager
def _seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global CPU RNG (and that of the model's CUDA device) for the block; restore them after."""
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.random.default_generator.manual_seed(seed)
        for each in cuda:
            with torch.cuda.device(each):
                torch.cuda.manual_seed(seed)
        yield
