"""The model registry: names -> builders, with every argument checked before a builder runs.

Every builder has the signature ``fn(*, num_classes, in_channels, width, **kwargs) -> nn.Module`` and is
registered under a lower-case name with :func:`register`; :func:`create` builds a model by name and
:func:`available` lists the names.

Decisions, on purpose:

* **Checked arguments.** ``num_classes`` must be an integer in [1, 1,000,000], ``in_channels`` one in [1, 4096]
  and ``width`` a finite number in (0, 64]; extra keyword arguments are checked against the builder's signature
  before it runs, so a typo is one :class:`~layermod.errors.ModelError` line instead of a ``TypeError`` from deep
  inside. The builders bound their own counts the same way (:func:`check_count`: an ``int``, never a ``float``
  or ``bool``, at most :data:`MAX_UNITS` units or blocks in all, ...). A checkpoint sidecar is untrusted
  input: these bounds stop ``depth: 1e8`` or ``width: 1e6`` before any module is built, and
  :func:`layermod.models.checkpoint.load_checkpoint` builds on the ``meta`` device and compares the shapes with the
  weights file before allocating anything.
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

from layermod.errors import ModelError

__all__ = ["MAX_CHANNELS", "MAX_CLASSES", "MAX_INPUT_SIZE", "MAX_IN_CHANNELS", "MAX_STAGES", "MAX_UNITS",
           "MAX_WIDTH",
           "available", "check_count", "create", "describe", "register", "scaled"]

MAX_CLASSES = 1_000_000
"""Largest ``num_classes``."""
MAX_IN_CHANNELS = 4096
"""Largest ``in_channels``."""
MAX_WIDTH = 64.0
"""Largest ``width`` multiplier."""
MAX_UNITS = 1000
"""Most units in one model: conv units (``"smallcnn"``), residual blocks, hidden layers (``"mlp"``) or ``cfg``
entries (VGG), summed over the stages. It bounds the time to build a model (about 3 s for 1,000 ResNet blocks)."""
MAX_STAGES = 16
"""Most stages of a ``"smallcnn"`` (each halves the input size)."""
MAX_CHANNELS = 65_536
"""Largest base channel count of a VGG ``cfg`` entry."""
MAX_INPUT_SIZE = 4096 * 4096
"""Largest ``input_size`` (values per channel) of the MLP."""

Builder = Callable[..., nn.Module]
_SHARED = ("num_classes", "in_channels", "width")  # every builder's arguments, passed by keyword
_REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering a builder under ``name``; :func:`create` passes every argument by keyword.

    The builder is ``fn(*, num_classes, in_channels, width, **kwargs) -> nn.Module``.

    Args:
        name: the model's name (case-insensitive).

    Returns:
        The decorator; it returns the builder unchanged.

    Raises:
        ModelError: ``name`` empty or already taken by a different builder.
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
    """Sorted names of every registered model.

    Returns:
        The names.
    """
    return sorted(_REGISTRY)


def describe(name: str) -> str | None:
    """The docstring of the builder registered as ``name`` (None if it has none).

    Args:
        name: a name from :func:`available`.

    Returns:
        The docstring, or None.

    Raises:
        ModelError: unknown name.
    """
    return inspect.getdoc(_builder(name))


def create(name: str, /, *, num_classes: int = 10, in_channels: int = 1, width: float = 1.0,
           **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``.

    Args:
        name: a name from :func:`available` (case-insensitive).
        num_classes: outputs of the classifier, in [1, :data:`MAX_CLASSES`].
        in_channels: channels of the input images, in [1, :data:`MAX_IN_CHANNELS`].
        width: multiplier of every channel / hidden count, in (0, :data:`MAX_WIDTH`].
        **kwargs: builder-specific options (e.g. ``depth`` for ``"mlp"``), checked against its signature.

    Returns:
        The ``nn.Module``: (N, in_channels, ...) inputs in, (N, num_classes) logits out.

    Raises:
        ModelError: unknown name (the message lists the available ones) or bad arguments (one line naming the
            argument and its bound).
    """
    key = str(name).strip().lower()
    builder = _builder(name)
    check_count("num_classes", num_classes, 1, MAX_CLASSES)
    check_count("in_channels", in_channels, 1, MAX_IN_CHANNELS)
    if (isinstance(width, bool) or not isinstance(width, numbers.Real) or not math.isfinite(width)
            or not 0 < width <= MAX_WIDTH):
        raise ModelError(f"width={width!r:.40} must be a finite number in (0, {MAX_WIDTH:g}]")
    signature = inspect.signature(builder)
    if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        options = [n for n, p in signature.parameters.items() if n not in _SHARED and p.kind is not p.VAR_POSITIONAL]
        unknown = [k for k in kwargs if k not in options]
        if unknown:
            raise ModelError(f"model {key!r} has no argument {unknown[0]!r:.40}; besides num_classes, in_channels and "
                             f"width it takes {', '.join(options) or 'nothing'}")
    shared = {"num_classes": int(num_classes), "in_channels": int(in_channels), "width": float(width)}
    try:
        signature.bind(**shared, **kwargs)
    except TypeError as exc:
        raise ModelError(f"bad arguments for model {key!r}: {exc}") from None
    return builder(**shared, **kwargs)


def _builder(name: str) -> Builder:
    """The builder registered as ``name`` (case-insensitive); ModelError listing the names otherwise."""
    key = str(name).strip().lower()
    builder = _REGISTRY.get(key)
    if builder is None:
        names = available()
        close = difflib.get_close_matches(key, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ModelError(f"unknown model {name!r:.60}; {hint}available: {', '.join(names) or '(none)'}")
    return builder


def scaled(base: int, width: float) -> int:
    """``round(base * width)``, at least 1: the channel count a builder uses for ``base`` at ``width``.

    Args:
        base: the count at width 1.
        width: the multiplier.

    Returns:
        The count, >= 1.
    """
    return max(1, round(base * width))


def check_count(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an ``int`` in [``low``, ``high``].

    A ``float`` such as ``1e8`` or a ``bool`` is refused, not rounded.

    Args:
        name: the argument's name, for the message.
        value: the value given.
        low: the lowest value allowed.
        high: the highest value allowed.

    Returns:
        ``value`` as an ``int``.

    Raises:
        ModelError: naming ``name`` and the bounds.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise ModelError(f"{name}={value!r:.40} must be an integer in [{low}, {high:,}]")
    return int(value)


def _qualname(fn: Builder) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"

