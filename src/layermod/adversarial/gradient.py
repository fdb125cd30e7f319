"""Gradient attacks on a classifier, with budgets in pixel units: :func:`fgsm` and :func:`pgd`.

Both perturb samples so as to raise the cross-entropy of their true labels, stepping in the pixel space of a
:class:`~layermod.adversarial.space.PixelSpace`. The helpers every attack shares (checked samples on the model's
device, the loss gradient, the model in eval mode) live here too.

Decisions, on purpose:

* **Loss and steps.** Untargeted: the cross-entropy of the true labels, summed over the batch so that a
  sample's step does not depend on the batch size. L-inf steps along the gradient's sign; L2 steps along the
  gradient divided by its per-sample L2 norm (a zero gradient makes no step). After each step the change is
  projected onto the ball of radius ``eps`` around the clean pixels, then clipped to the pixel range; clipping
  only moves pixels toward the clean ones (which lie in the range), so the budget still holds.
* **Random start (pgd).** Uniform in the ball: L-inf, each pixel uniform in ``[-eps, eps]``; L2, a uniform
  direction with radius ``eps * U ** (1 / d)`` (``d`` pixels per sample). Then clipped to the pixel range. The
  noise is drawn on the generator's device (the CPU for :func:`layermod.adversarial.attacks.attack`) and then
  moved, so a seed gives the same start whatever device the model is on.
* **Gradients.** Only input gradients are taken (``torch.autograd.grad``), so no parameter's ``.grad`` is
  touched and frozen parameters are fine. A model whose output has no gradient path to its input (forward
  under ``torch.no_grad``, a detach, an argmax) is an :class:`AttackError`, never a silent no-op. The model
  runs in eval mode (each module's mode is restored afterwards) on its own device (:func:`model_device`);
  adversarial inputs come back on the inputs' device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from layermod.adversarial.config import check_budget, check_pgd
from layermod.adversarial.space import PixelSpace
from layermod.errors import AttackError
from layermod.extract.features import model_device
from layermod.extract.inputs import call_model
from layermod.extract.modes import evaluating

__all__ = ["check_samples", "fgsm", "loss_gradient", "model_output", "pgd", "prepare_samples"]

_TINY = 1e-12  # floor of a norm divided by, so that a zero gradient or change stays zero
_NO_GRADIENT = (
    "the model's output carries no gradient with respect to its input; attacks need a differentiable model "
    "(no torch.no_grad or detach in forward)"
)


def fgsm(
    model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: float, space: PixelSpace, norm: str = "linf"
) -> Tensor:
    """One step of size ``eps`` (pixel units) up the loss gradient: the fast gradient sign method for L-inf,
    the fast gradient method for L2.

    Args:
        model: a classifier returning (N, classes) logits; run in eval mode on its own device.
        inputs: (N, ...) samples in the model's (normalised) space.
        labels: (N,) int class indices.
        eps: the budget in pixel units.
        space: how inputs map to pixels.
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        (N, ...) detached adversarial inputs in the model's space, on the inputs' device.
    """
    check_budget(eps, norm, space)
    with evaluating(model):
        clean, targets = prepare_samples(model, inputs, labels, space)
        grad = loss_gradient(model, space, clean, targets)
        adv = _project(clean + eps * _direction(grad, norm), clean, eps, norm, space)
    return space.to_inputs(adv).to(inputs.device)


def pgd(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    *,
    eps: float,
    space: PixelSpace,
    steps: int = 40,
    step_size: float = 0.01,
    norm: str = "linf",
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient descent (ascent on the loss): ``steps`` steps of ``step_size``, each projected onto
    the ``eps``-ball around the clean pixels and clipped to the pixel range.

    Args:
        model: as for :func:`fgsm`.
        inputs: as for :func:`fgsm`.
        labels: as for :func:`fgsm`.
        eps: as for :func:`fgsm`.
        space: as for :func:`fgsm`.
        norm: as for :func:`fgsm`.
        steps: number of steps, >= 1.
        step_size: the length of a step in pixel units (L-inf: per pixel; L2: per sample).
        random_start: start from a uniform draw in the ball instead of the clean pixels.
        generator: the source of the random start (the global RNG when None).

    Returns:
        (N, ...) detached adversarial inputs in the model's space, on the inputs' device.
    """
    check_budget(eps, norm, space)
    check_pgd(steps, step_size)
    with evaluating(model):
        clean, targets = prepare_samples(model, inputs, labels, space)
        adv = _random_start(clean, eps, norm, space, generator) if random_start else clean
        for _ in range(steps):
            grad = loss_gradient(model, space, adv, targets)
            adv = _project(adv + step_size * _direction(grad, norm), clean, eps, norm, space)
    return space.to_inputs(adv).to(inputs.device)


def check_samples(inputs: Tensor, labels: Tensor) -> None:
    """Raise :class:`AttackError` unless ``inputs`` is a float tensor (N, ...) and ``labels`` an integer one (N,)."""
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point() or inputs.ndim < 2:
        raise AttackError(f"inputs are {_describe(inputs)}; pass a float tensor of shape (N, ...) holding N samples")
    integer = isinstance(labels, Tensor) and not (
        labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool
    )
    if not integer or labels.shape != (len(inputs),):
        raise AttackError(
            f"labels are {_describe(labels)}; pass an integer tensor of shape ({len(inputs)},), one class per sample"
        )


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def prepare_samples(model: nn.Module, inputs: Tensor, labels: Tensor, space: PixelSpace) -> tuple[Tensor, Tensor]:
    """Checked samples on the model's device: clean pixels (N, ...) and int64 labels (N,)."""
    check_samples(inputs, labels)
    device = model_device(model)
    return space.to_pixels(inputs.detach().to(device)), labels.to(device, torch.long)


def model_output(model: nn.Module, inputs: Tensor) -> Tensor:
    """``model(inputs)`` (inputs cast to the model's floating dtype), which must be a tensor (of logits)."""
    output = call_model(model, inputs)
    if not isinstance(output, Tensor):
        raise AttackError(
            f"the model returns a {type(output).__name__}, not a tensor of logits; wrap it so that forward returns "
            "(N, classes) logits"
        )
    return output


def loss_gradient(model: nn.Module, space: PixelSpace, pixels: Tensor, labels: Tensor) -> Tensor:
    """Gradient (N, ...) of the summed cross-entropy of ``labels`` with respect to ``pixels`` (N, ...)."""
    pixels = pixels.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model_output(model, space.to_inputs(pixels))
        if not logits.requires_grad:
            raise AttackError(_NO_GRADIENT)
        _check_logits(logits, labels)
        loss = F.cross_entropy(logits, labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, pixels, allow_unused=True)
    if grad is None:
        raise AttackError(_NO_GRADIENT)
    return grad


def _check_logits(logits: Tensor, labels: Tensor) -> None:
    if logits.ndim != 2 or len(logits) != len(labels):
        raise AttackError(
            f"the model returns shape {tuple(logits.shape)} for {len(labels)} samples, not (N, classes) logits; "
            "wrap it so that forward returns them"
        )
    classes = logits.shape[1]
    if len(labels) == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= classes:
        raise AttackError(
            f"the labels span [{lo}, {hi}] but the model gives {classes} classes; pass labels in [0, {classes})"
        )


def _direction(grad: Tensor, norm: str) -> Tensor:
    """The unit step up ``grad`` (N, ...): its sign (L-inf) or itself over its per-sample L2 norm (L2)."""
    if norm == "linf":
        return grad.sign()
    return grad / _sample_norms(grad).clamp_min(_TINY)


def _project(pixels: Tensor, clean: Tensor, eps: float, norm: str, space: PixelSpace) -> Tensor:
    """``pixels`` (N, ...) moved into the ``eps``-ball around ``clean`` (N, ...), then clipped to the range."""
    if norm == "linf":
        pixels = torch.clamp(pixels, clean - eps, clean + eps)
    else:
        change = pixels - clean
        pixels = clean + change * (eps / _sample_norms(change).clamp_min(_TINY)).clamp(max=1.0)
    return pixels.clamp(space.low, space.high)


def _random_start(
    clean: Tensor, eps: float, norm: str, space: PixelSpace, generator: torch.Generator | None
) -> Tensor:
    """A uniform draw in the ``eps``-ball around ``clean`` (N, ...), clipped to the range."""
    device = generator.device if generator is not None else torch.device("cpu")
    draw = {"generator": generator, "device": device, "dtype": clean.dtype}
    if norm == "linf":
        change = eps * (2 * torch.rand(clean.shape, **draw) - 1)
    else:
        direction = torch.randn(clean.shape, **draw)
        direction = direction / _sample_norms(direction).clamp_min(_TINY)
        radius = eps * torch.rand(len(clean), **draw) ** (1 / clean[0].numel())
        change = direction * radius.view(-1, *[1] * (clean.ndim - 1))
    return _project(clean + change.to(clean.device), clean, eps, norm, space)


def _sample_norms(values: Tensor) -> Tensor:
    """L2 norm of each sample of ``values`` (N, ...), shaped (N, 1, ...) to broadcast against it."""
    return values.flatten(1).norm(dim=1).view(-1, *[1] * (values.ndim - 1))
