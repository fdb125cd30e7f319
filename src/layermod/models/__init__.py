"""Model zoo: a name -> builder registry.

Every builder has the signature ``fn(num_classes, in_channels, width, **kwargs) -> nn.Module`` and is
registered under a lower-case name with :func:`register`; :func:`create` builds a model by name and
:func:`available` lists the names.

Decisions, on purpose:

* **Checked arguments.** ``num_classes`` and ``in_channels`` must be integers >= 1 and ``width`` a finite
  number > 0; extra keyword arguments are checked against the builder's signature before it runs, so a
  typo is one :class:`~layermod.errors.ModelError` line instead of a ``TypeError`` from deep inside.
* **Names.** Lookup is case-insensitive; an unknown name lists every available name and suggests the
  closest one (``difflib``).
* **Width.** ``width`` multiplies every channel / hidden count; each is rounded and kept >= 1, so
  ``width=0.01`` still builds a (tiny) model.
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import ModelError

__all__ = ["available", "create", "describe", "register", "scaled"]

Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering ``fn(num_classes, in_channels, width, **kwargs) -> nn.Module`` under ``name``.

    Raises :class:`ModelError` if ``name`` is empty or already taken by a different builder.
    """
    key = str(name).strip().lower()
    if not key:
        raise ModelError("a model name must be a non-empty string")

    def decorator(fn: Builder) -> Builder:
        existing = _REGISTRY.get(key)
        if existing is not None and existing is not fn and _qualname(existing) != _qualname(fn):
            raise ModelError(f"model name {key!r} is already registered by {_qualname(existing)}; pick another name")
        _REGISTRY[key] = fn
        return fn

    return decorator


def available() -> list[str]:
    """Sorted names of every registered model."""
    return sorted(_REGISTRY)


def describe(name: str) -> str | None:
    """The docstring of the builder registered as ``name`` (None if it has none)."""
    return inspect.getdoc(_builder(name))


def create(name: str, num_classes: int = 10, in_channels: int = 1, width: float = 1.0, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``.

    Args:
        name: a name from :func:`available` (case-insensitive).
        num_classes: outputs of the classifier, >= 1.
        in_channels: channels of the input images, >= 1.
        width: multiplier of every channel / hidden count, > 0.
        **kwargs: builder-specific options (e.g. ``depth`` for ``"mlp"``).

    Raises:
        ModelError: unknown name (the message lists the available ones) or bad arguments.
    """
    key = str(name).strip().lower()
    builder = _builder(name)
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("in_channels", in_channels)
    if isinstance(width, bool) or not isinstance(width, numbers.Real) or not math.isfinite(width) or width <= 0:
        raise ModelError(f"width={width!r} must be a finite number > 0")
    try:
        inspect.signature(builder).bind(int(num_classes), int(in_channels), float(width), **kwargs)
    except TypeError as exc:
        raise ModelError(f"bad arguments for model {key!r}: {exc}") from None
    return builder(int(num_classes), int(in_channels), float(width), **kwargs)


def _builder(name: str) -> Builder:
    """The builder registered as ``name`` (case-insensitive); ModelError listing the names otherwise."""
    key = str(name).strip().lower()
    builder = _REGISTRY.get(key)
    if builder is None:
        names = available()
        close = difflib.get_close_matches(key, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ModelError(f"unknown model {name!r}; {hint}available: {', '.join(names) or '(none)'}")
    return builder


def scaled(base: int, width: float) -> int:
    """``round(base * width)``, at least 1: the channel count a builder uses for ``base`` at ``width``."""
    return max(1, round(base * width))


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ModelError(f"{name}={value!r} must be an integer >= 1")


def _qualname(fn: Builder) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


from . import resnet, small, vgg  # noqa: F401  (registers the built-in models)
