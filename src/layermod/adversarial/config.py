"""An attack's settings (:class:`AttackConfig`) and the checks every attack runs on them.

Decisions, on purpose:

* **Budgets in pixel units.** ``eps`` and pgd's ``step_size`` are in the pixel units of a
  :class:`~layermod.adversarial.space.PixelSpace`; an L-inf budget above the pixel range's width is refused
  (it would allow any image).
* **Methods.** ``"fgsm"`` and ``"pgd"`` are layermod's own (:mod:`layermod.adversarial.gradient`);
  ``"torchattacks:NAME"`` runs the class ``torchattacks.NAME`` (:mod:`layermod.adversarial.torchattacks_bridge`),
  with ``options`` passed to it unchanged. Options are refused for fgsm and pgd, and ``eps`` is never an option:
  the budget is always ``eps``, in pixel units.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field

from layermod.adversarial.space import PixelSpace
from layermod.errors import AttackError

__all__ = ["METHODS", "NORMS", "TORCHATTACKS_PREFIX", "AttackConfig", "check_budget", "check_pgd", "torchattacks_name"]

METHODS: tuple[str, ...] = ("fgsm", "pgd")
NORMS: tuple[str, ...] = ("linf", "l2")
TORCHATTACKS_PREFIX = "torchattacks:"


@dataclass(frozen=True, kw_only=True)
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
        """Raise :class:`AttackError` for settings that cannot run in ``space``.

        Args:
            space: the pixel space of the inputs the attack perturbs.

        Raises:
            AttackError: an unknown method, or a budget the space cannot hold.
        """
        if self.method not in METHODS and not torchattacks_name(self.method):
            raise AttackError(
                f"unknown attack method {self.method!r}; use 'fgsm', 'pgd' or 'torchattacks:NAME' "
                "(e.g. 'torchattacks:CW')"
            )
        check_budget(self.eps, self.norm, space)
        if self.method == "pgd":
            check_pgd(self.steps, self.step_size)
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
        """The settings as a JSON-ready dict (``options`` copied).

        Returns:
            ``{field: value}``.
        """
        return asdict(self)


def torchattacks_name(method: object) -> str:
    """NAME of ``"torchattacks:NAME"``; empty for any other method."""
    if isinstance(method, str) and method.startswith(TORCHATTACKS_PREFIX):
        return method[len(TORCHATTACKS_PREFIX) :]
    return ""


def check_budget(eps: float, norm: str, space: PixelSpace) -> None:
    """Raise :class:`AttackError` unless ``norm`` is known and ``eps`` a positive budget that fits ``space``."""
    if norm not in NORMS:
        raise AttackError(f"unknown norm {norm!r}; use 'linf' or 'l2'")
    if not isinstance(eps, numbers.Real) or not math.isfinite(eps) or eps <= 0:
        raise AttackError(f"eps={eps!r} must be a positive number; pass the budget in pixel units (e.g. 0.03)")
    if norm == "linf" and eps > space.width:
        raise AttackError(
            f"eps={eps:g} is outside the pixel range [{space.low:g}, {space.high:g}]: an L-inf budget must be in "
            f"(0, {space.width:g}]; pass eps in pixel units (e.g. 8/255 for pixels in [0, 1])"
        )


def check_pgd(steps: int, step_size: float) -> None:
    """Raise :class:`AttackError` unless pgd's ``steps`` is an integer >= 1 and ``step_size`` a positive number."""
    if not isinstance(steps, int) or steps < 1:
        raise AttackError(f"steps={steps!r} must be an integer >= 1 for pgd")
    if not isinstance(step_size, numbers.Real) or not math.isfinite(step_size) or step_size <= 0:
        raise AttackError(f"step_size={step_size!r} must be a positive number for pgd, in pixel units")
