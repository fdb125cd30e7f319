"""Adversarial attacks on a classifier, with budgets in pixel units.

:func:`fgsm` and :func:`pgd` perturb samples so as to raise the cross-entropy of their true labels;
:func:`attack` runs a configured attack (:class:`AttackConfig`) over many samples in batches and records which
samples the model classified correctly and the attack then flipped (:class:`AttackResult`).

Decisions, on purpose:

* **Pixel space.** Datasets hold normalised inputs, ``input = (pixel - mean) / std`` per channel, but a budget
  means something in pixels: an L-inf ``eps`` of 8/255 changes each pixel by at most 8/255 whatever the
  normalisation. Attacks map inputs to pixels (:class:`PixelSpace`), step, project and clip there, and map
  back, so the returned inputs' pixels lie in ``[low, high]`` and within ``eps`` of the clean pixels. Samples
  whose pixels fall outside the range are refused rather than clipped: a wrong range would make both the
  budget and the clipping wrong.
* **Loss and steps.** Untargeted: the cross-entropy of the true labels, summed over the batch so that a
  sample's step does not depend on the batch size. L-inf steps along the gradient's sign; L2 steps along the
  gradient divided by its per-sample L2 norm (a zero gradient makes no step). After each step the change is
  projected onto the ball of radius ``eps`` around the clean pixels, then clipped to the pixel range; clipping
  only moves pixels toward the clean ones (which lie in the range), so the budget still holds.
* **Random start (pgd).** Uniform in the ball: L-inf, each pixel uniform in ``[-eps, eps]``; L2, a uniform
  direction with radius ``eps * U ** (1 / d)`` (``d`` pixels per sample). Then clipped to the pixel range. The
  noise is drawn on the generator's device (the CPU for :func:`attack`) and then moved, so a seed gives the
  same start whatever device the model is on.
* **Gradients.** Only input gradients are taken (``torch.autograd.grad``), so no parameter's ``.grad`` is
  touched and frozen parameters are fine. A model whose output has no gradient path to its input (forward
  under ``torch.no_grad``, a detach, an argmax) is an :class:`AttackError`, never a silent no-op. The model
  runs in eval mode (each module's mode is restored afterwards) on its own device (:func:`model_device`);
  adversarial inputs come back on the inputs' device, and :func:`attack` returns CPU tensors.
* **torchattacks.** ``method="torchattacks:NAME"`` runs the class ``torchattacks.NAME``, imported only then (an
  optional dependency; install it with ``pip install --no-deps torchattacks``, since its metadata pulls
  torchvision). torchattacks assumes images in [0, 1], so it attacks a wrapper that takes pixels rescaled to
  [0, 1]; ``eps`` is rescaled the same way and passed when the class takes an ``eps`` argument, and
  ``options`` go to the class unchanged, in torchattacks' own units. For these methods ``norm`` only chooses
  the check ``eps`` must pass; the attack's norm is the class's own. Each batch is first checked for input
  gradients with our own loss (one extra gradient), so a non-differentiable model or out-of-range labels get
  the same :class:`AttackError` as with fgsm and pgd.
* **Determinism.** :func:`attack` draws pgd's random starts from a ``torch.Generator`` seeded with
  ``config.seed``, and seeds the global RNG (forked, so the caller's state is restored) for torchattacks'
  own random draws: the same config, samples and batch size give the same result.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import numbers
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from layermod.errors import AttackError
from layermod.extract.features import model_device

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

METHODS: tuple[str, ...] = ("fgsm", "pgd")
NORMS: tuple[str, ...] = ("linf", "l2")
TORCHATTACKS_PREFIX = "torchattacks:"

_RANGE_TOLERANCE = 1e-4  # of the pixel range's width, for samples normalised in float32
_TINY = 1e-12  # floor of a norm divided by, so that a zero gradient or change stays zero
_TORCHATTACKS_EXAMPLES = ("FGSM", "PGD", "PGDL2", "CW", "DeepFool", "AutoAttack", "Square")
_NO_GRADIENT = (
    "the model's output carries no gradient with respect to its input; attacks need a differentiable model "
    "(no torch.no_grad or detach in forward)"
)


@dataclass(frozen=True)
class PixelSpace:
    """How model inputs map to pixels: ``input = (pixel - mean) / std`` per channel (dim 1), pixels in
    ``[low, high]``.

    Attributes:
        mean, std: one value per channel, or one value for all; both empty for inputs that are pixels.
        low, high: the pixel range, ``low < high``; :attr:`width` is ``high - low``.
    """

    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _floats(self.mean, "mean"))
        object.__setattr__(self, "std", _floats(self.std, "std"))
        if len(self.mean) != len(self.std):
            raise AttackError(
                f"the normalization has {len(self.mean)} means but {len(self.std)} stds; "
                "pass one mean and one std per channel"
            )
        if not all(math.isfinite(v) for v in self.mean) or not all(math.isfinite(v) and v > 0 for v in self.std):
            raise AttackError(
                f"the normalization mean {list(self.mean)} / std {list(self.std)} must be finite with std > 0; "
                "pass the mean and std the inputs were normalised with"
            )
        if not (isinstance(self.low, numbers.Real) and isinstance(self.high, numbers.Real)) or not (
            math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high
        ):
            raise AttackError(
                f"the pixel range [{self.low}, {self.high}] is not an interval; pass finite LOW < HIGH "
                "(--pixel-range LOW,HIGH)"
            )

    @classmethod
    def from_normalization(cls, normalization: dict | None, low: float = 0.0, high: float = 1.0) -> PixelSpace:
        """The space of a dataset's inputs from its ``normalization`` (``{"mean": [...], "std": [...]}`` per
        channel, as :attr:`layermod.data.ArrayDataset.normalization`; ``{}`` or None for pixel inputs)."""
        if not normalization:
            return cls(low=low, high=high)
        missing = [key for key in ("mean", "std") if key not in normalization]
        if missing:
            raise AttackError(
                f"the normalization {normalization!r} has no {' or '.join(missing)}; pass "
                "{'mean': [...], 'std': [...]} with one value per channel, or {} for none"
            )
        return cls(normalization["mean"], normalization["std"], low, high)

    @property
    def width(self) -> float:
        """``high - low``."""
        return self.high - self.low

    def to_pixels(self, inputs: Tensor) -> Tensor:
        """(N, C, ...) model inputs -> pixels of the same shape; (N, D) or any shape with a single mean."""
        if not self.mean:
            return inputs
        return inputs * self._per_channel(self.std, inputs) + self._per_channel(self.mean, inputs)

    def to_inputs(self, pixels: Tensor) -> Tensor:
        """(N, C, ...) pixels -> model inputs of the same shape; the inverse of :meth:`to_pixels`."""
        if not self.mean:
            return pixels
        return (pixels - self._per_channel(self.mean, pixels)) / self._per_channel(self.std, pixels)

    def check(self, inputs: Tensor) -> None:
        """Raise :class:`AttackError` when the pixels of ``inputs`` (N, ...) are not finite or fall outside
        ``[low, high]`` by more than a float32 rounding slack."""
        if inputs.numel() == 0:
            return
        pixels = self.to_pixels(inputs.detach())
        if not bool(torch.isfinite(pixels).all()):
            raise AttackError("the samples hold NaN or infinite values; pass finite inputs")
        lo, hi = float(pixels.min()), float(pixels.max())
        slack = _RANGE_TOLERANCE * self.width
        if lo < self.low - slack or hi > self.high + slack:
            raise AttackError(
                f"the samples' pixels span [{lo:.4g}, {hi:.4g}], outside the pixel range [{self.low:g}, "
                f"{self.high:g}]; pass the data's pixel range (--pixel-range LOW,HIGH)"
            )

    @staticmethod
    def _per_channel(values: tuple[float, ...], like: Tensor) -> Tensor:
        """``values`` shaped to broadcast over dim 1 of ``like``: (C, 1, ...), or (1,) for a single value."""
        tensor = torch.tensor(values, dtype=like.dtype, device=like.device)
        if len(values) == 1:
            return tensor
        if like.ndim < 2 or like.shape[1] != len(values):
            raise AttackError(
                f"inputs of shape {tuple(like.shape)} do not have {len(values)} channels in dimension 1 as the "
                "normalization does; pass the normalization these inputs were made with"
            )
        return tensor.view(len(values), *[1] * (like.ndim - 2))


@dataclass(frozen=True)
class AttackConfig:
    """An attack's settings.

    Attributes:
        method: ``"fgsm"``, ``"pgd"`` or ``"torchattacks:NAME"`` (e.g. ``"torchattacks:CW"``).
        eps: the budget in pixel units: L-inf, the largest change of a pixel; L2, the largest L2 norm of a
            sample's change.
        norm: ``"linf"`` or ``"l2"``.
        steps, step_size, random_start: pgd only; ``step_size`` in pixel units.
        seed: seeds pgd's random starts and the global RNG during the attack.
        options: keyword arguments for a torchattacks class (not ``eps``, which is passed rescaled).
    """

    method: str = "pgd"
    eps: float = 0.3
    norm: str = "linf"
    steps: int = 40
    step_size: float = 0.01
    random_start: bool = True
    seed: int = 0
    options: dict = field(default_factory=dict)

    def validate(self, space: PixelSpace) -> None:
        """Raise :class:`AttackError` for settings that cannot run in ``space``."""
        if self.method not in METHODS and not _torchattacks_name(self.method):
            raise AttackError(
                f"unknown attack method {self.method!r}; use 'fgsm', 'pgd' or 'torchattacks:NAME' "
                "(e.g. 'torchattacks:CW')"
            )
        _check_budget(self.eps, self.norm, space)
        if self.method == "pgd":
            _check_pgd(self.steps, self.step_size)
        if not isinstance(self.seed, int):
            raise AttackError(f"seed={self.seed!r} must be an integer")
        if self.options and self.method in METHODS:
            raise AttackError(
                f"options {sorted(self.options)} only apply to torchattacks:NAME methods; remove them for "
                f"{self.method}"
            )
        if "eps" in self.options:
            raise AttackError("options must not hold 'eps'; set the budget with eps, in pixel units")

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict (``options`` copied)."""
        return asdict(self)


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


def fgsm(
    model: nn.Module, inputs: Tensor, labels: Tensor, eps: float, space: PixelSpace, norm: str = "linf"
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
    _check_budget(eps, norm, space)
    with _eval_mode(model):
        clean, targets = _prepare(model, inputs, labels, space)
        grad = _loss_gradient(model, space, clean, targets)
        adv = _project(clean + eps * _direction(grad, norm), clean, eps, norm, space)
    return space.to_inputs(adv).to(inputs.device)


def pgd(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
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
        model, inputs, labels, eps, space, norm: as for :func:`fgsm`.
        steps: number of steps, >= 1.
        step_size: the length of a step in pixel units (L-inf: per pixel; L2: per sample).
        random_start: start from a uniform draw in the ball instead of the clean pixels.
        generator: the source of the random start (the global RNG when None).

    Returns:
        (N, ...) detached adversarial inputs in the model's space, on the inputs' device.
    """
    _check_budget(eps, norm, space)
    _check_pgd(steps, step_size)
    with _eval_mode(model):
        clean, targets = _prepare(model, inputs, labels, space)
        adv = _random_start(clean, eps, norm, space, generator) if random_start else clean
        for _ in range(steps):
            grad = _loss_gradient(model, space, adv, targets)
            adv = _project(adv + step_size * _direction(grad, norm), clean, eps, norm, space)
    return space.to_inputs(adv).to(inputs.device)


def attack(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    config: AttackConfig,
    space: PixelSpace,
    batch_size: int = 256,
    progress: bool = False,
) -> AttackResult:
    """Attack every sample of ``inputs`` as ``config`` says, in batches, and predict before and after.

    Args:
        model: a classifier returning (N, classes) logits; run in eval mode (restored) on its own device.
        inputs: (N, ...) samples in the model's (normalised) space, pixels within ``space``'s range.
        labels: (N,) int class indices.
        config: the attack; validated first.
        space: how inputs map to pixels.
        batch_size: samples per batch.
        progress: show a progress bar over batches (when stderr is a terminal).

    Returns:
        :class:`AttackResult` with CPU tensors.
    """
    config.validate(space)
    _check_samples(inputs, labels)
    if len(inputs) == 0:
        raise AttackError("there are no samples to attack; pass at least one sample")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise AttackError(f"batch_size={batch_size!r} must be an integer >= 1")
    space.check(inputs)
    parts: dict[str, list[Tensor]] = {"inputs": [], "clean_pred": [], "adv_pred": []}
    with _eval_mode(model), _seeded_global_rng(config.seed, model_device(model)):
        run = _runner(model, config, space)
        starts = range(0, len(inputs), batch_size)
        for start in tqdm(starts, desc="attack", disable=None if progress else True, leave=False):
            batch = inputs[start : start + batch_size]
            adv = run(batch, labels[start : start + batch_size]).cpu()
            parts["inputs"].append(adv)
            parts["clean_pred"].append(_predict(model, batch))
            parts["adv_pred"].append(_predict(model, adv))
    return AttackResult(labels=labels.detach().cpu().long(), **{key: torch.cat(part) for key, part in parts.items()})


def _runner(model: nn.Module, config: AttackConfig, space: PixelSpace) -> Callable[[Tensor, Tensor], Tensor]:
    """``run(inputs (B, ...), labels (B,)) -> adversarial inputs (B, ...)`` for a validated config."""
    if config.method == "fgsm":
        return lambda x, y: fgsm(model, x, y, config.eps, space, config.norm)
    if config.method == "pgd":
        generator = torch.Generator().manual_seed(config.seed)
        return lambda x, y: pgd(
            model, x, y, config.eps, space, config.steps, config.step_size, config.norm, config.random_start,
            generator,
        )
    return _torchattacks_runner(model, config, space)


def _torchattacks_runner(
    model: nn.Module, config: AttackConfig, space: PixelSpace
) -> Callable[[Tensor, Tensor], Tensor]:
    """``run`` for ``torchattacks:NAME``: the class attacks pixels rescaled to [0, 1]."""
    name = _torchattacks_name(config.method)
    torchattacks = _import_torchattacks()
    if name not in getattr(torchattacks, "__all__", ()) or not isinstance(getattr(torchattacks, name, None), type):
        raise AttackError(
            f"torchattacks has no attack {name!r}; use one of its attack classes, e.g. "
            f"{', '.join(_TORCHATTACKS_EXAMPLES)}"
        )
    cls = getattr(torchattacks, name)
    kwargs = dict(config.options)
    if "eps" in inspect.signature(cls).parameters:
        kwargs["eps"] = config.eps / space.width
    try:  # an eval-mode wrapper: torchattacks puts a model it got in train mode back in train mode
        instance = cls(_UnitPixelModel(model, space).eval(), **kwargs)
    except TypeError as e:
        raise AttackError(
            f"torchattacks.{name} does not take options {sorted(config.options)} ({e}); pass only arguments "
            "its constructor accepts"
        ) from None

    def run(inputs: Tensor, labels: Tensor) -> Tensor:
        pixels, targets = _prepare(model, inputs, labels, space)
        _loss_gradient(model, space, pixels, targets)
        adv_unit = instance((pixels - space.low) / space.width, targets).detach()
        adv = (space.low + adv_unit * space.width).clamp(space.low, space.high)
        return space.to_inputs(adv).to(inputs.device)

    return run


class _UnitPixelModel(nn.Module):
    """The model seen from pixels rescaled to [0, 1], as torchattacks expects: (N, ...) -> logits."""

    def __init__(self, model: nn.Module, space: PixelSpace) -> None:
        super().__init__()
        self.model = model
        self.space = space

    def forward(self, unit: Tensor) -> Tensor:
        return self.model(self.space.to_inputs(self.space.low + unit * self.space.width))


def _import_torchattacks() -> ModuleType:
    try:
        import torchattacks
    except ImportError as e:
        if e.name == "torchattacks":
            raise AttackError(
                "torchattacks is not installed; install it with: pip install --no-deps torchattacks"
            ) from None
        raise AttackError(
            f"torchattacks cannot be imported ({e}); install what it needs: pip install {e.name}"
        ) from None
    return torchattacks


def _torchattacks_name(method: object) -> str:
    """NAME of ``"torchattacks:NAME"``; empty for any other method."""
    if isinstance(method, str) and method.startswith(TORCHATTACKS_PREFIX):
        return method[len(TORCHATTACKS_PREFIX) :]
    return ""


def _check_budget(eps: float, norm: str, space: PixelSpace) -> None:
    if norm not in NORMS:
        raise AttackError(f"unknown norm {norm!r}; use 'linf' or 'l2'")
    if not isinstance(eps, numbers.Real) or not math.isfinite(eps) or eps <= 0:
        raise AttackError(f"eps={eps!r} must be a positive number; pass the budget in pixel units (e.g. 0.03)")
    if norm == "linf" and eps > space.width:
        raise AttackError(
            f"eps={eps:g} is outside the pixel range [{space.low:g}, {space.high:g}]: an L-inf budget must be in "
            f"(0, {space.width:g}]; pass eps in pixel units (e.g. 8/255 for pixels in [0, 1])"
        )


def _check_pgd(steps: int, step_size: float) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise AttackError(f"steps={steps!r} must be an integer >= 1 for pgd")
    if not isinstance(step_size, numbers.Real) or not math.isfinite(step_size) or step_size <= 0:
        raise AttackError(f"step_size={step_size!r} must be a positive number for pgd, in pixel units")


def _check_samples(inputs: Tensor, labels: Tensor) -> None:
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


def _prepare(model: nn.Module, inputs: Tensor, labels: Tensor, space: PixelSpace) -> tuple[Tensor, Tensor]:
    """Checked samples on the model's device: clean pixels (N, ...) and int64 labels (N,)."""
    _check_samples(inputs, labels)
    device = model_device(model)
    return space.to_pixels(inputs.detach().to(device)), labels.to(device, torch.long)


def _forward(model: nn.Module, inputs: Tensor) -> Tensor:
    output = model(inputs)
    if not isinstance(output, Tensor):
        raise AttackError(
            f"the model returns a {type(output).__name__}, not a tensor of logits; wrap it so that forward returns "
            "(N, classes) logits"
        )
    return output


def _loss_gradient(model: nn.Module, space: PixelSpace, pixels: Tensor, labels: Tensor) -> Tensor:
    """Gradient (N, ...) of the summed cross-entropy of ``labels`` with respect to ``pixels`` (N, ...)."""
    pixels = pixels.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = _forward(model, space.to_inputs(pixels))
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


@torch.no_grad()
def _predict(model: nn.Module, inputs: Tensor) -> Tensor:
    """(N,) int64 CPU predicted classes of (N, ...) inputs."""
    return _forward(model, inputs.to(model_device(model))).argmax(dim=1).cpu()


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


def _floats(values: object, name: str) -> tuple[float, ...]:
    """``values`` (a number or a sequence of numbers) as a tuple of floats."""
    if isinstance(values, numbers.Real):
        values = (values,)
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise AttackError(
            f"the normalization {name} {values!r} is not a list of numbers; pass one number per channel"
        ) from None


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else math.nan


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the block with ``model`` in eval mode, then give every module its own mode back."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


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
