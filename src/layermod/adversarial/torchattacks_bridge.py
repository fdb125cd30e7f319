"""Attacks of the torchattacks library run as layermod attacks (``method="torchattacks:NAME"``).

Decisions, on purpose:

* **Optional.** ``torchattacks`` is imported only when such a method runs (an optional dependency; install it
  with the ``attacks`` extra: ``pip install "layermod[attacks]"``).
* **Unit pixels.** torchattacks assumes images in [0, 1], so it attacks a wrapper that takes pixels rescaled to
  [0, 1]; ``eps`` is rescaled the same way and passed when the class takes an ``eps`` argument, and
  ``options`` go to the class unchanged, in torchattacks' own units. For these methods ``norm`` only chooses
  the check ``eps`` must pass; the attack's norm is the class's own.
* **Same errors.** Each batch is first checked for input gradients with layermod's own loss (one extra
  gradient), so a non-differentiable model or out-of-range labels get the same :class:`AttackError` as with
  fgsm and pgd.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import ModuleType

from torch import Tensor, nn

from layermod.adversarial.config import AttackConfig, torchattacks_name
from layermod.adversarial.gradient import loss_gradient, prepare_samples
from layermod.adversarial.space import PixelSpace
from layermod.errors import AttackError

__all__ = ["torchattacks_runner"]

_TORCHATTACKS_EXAMPLES = ("FGSM", "PGD", "PGDL2", "CW", "DeepFool", "AutoAttack", "Square")


def torchattacks_runner(
    model: nn.Module, config: AttackConfig, space: PixelSpace
) -> Callable[[Tensor, Tensor], Tensor]:
    """``run`` for ``torchattacks:NAME``: the class attacks pixels rescaled to [0, 1]."""
    name = torchattacks_name(config.method)
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
        pixels, targets = prepare_samples(model, inputs, labels, space)
        loss_gradient(model, space, pixels, targets)
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
                "torchattacks is not installed; install it with: pip install \"layermod[attacks]\""
            ) from None
        raise AttackError(
            f"torchattacks cannot be imported ({e}); install what it needs: pip install {e.name}"
        ) from None
    return torchattacks
