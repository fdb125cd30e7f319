"""Results read back from files: what they may hold, and how their text is quoted and shown.

The decisions behind it: docs/design.md, section layermod.io.validate.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import numpy as np

__all__ = [
    "LABEL_CHARS",
    "MAX_ENTRIES",
    "MAX_ITEMS",
    "MAX_MAGNITUDE",
    "MAX_NAME_CHARS",
    "QUOTE_CHARS",
    "REASON_CHARS",
    "TITLE_CHARS",
    "label",
    "literal_text",
    "mapping",
    "names",
    "number",
    "numbers",
    "q_bounds",
    "required",
    "run_config",
    "shorten",
    "text",
    "within",
]

QUOTE_CHARS = 80
REASON_CHARS = 300  # a whole reason, e.g. of an error from json or the OS, in a one-line message
LABEL_CHARS = 32
TITLE_CHARS = 120
MAX_NAME_CHARS = 1_000
MAX_ITEMS = 10_000
MAX_ENTRIES = 4_000_000
MAX_MAGNITUDE = 1e15
_Q_SLACK = 1e-9  # rounding of a Q computed in float64

T = TypeVar("T")
P = ParamSpec("P")


# ------------------------------------------------------------------------------------------ quoting, showing


def shorten(content: str, *, limit: int = QUOTE_CHARS) -> str:
    """``content`` on one line (runs of whitespace as one space), cut to ``limit`` characters ending in "…"."""
    flat = " ".join(content.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def label(name: str, *, limit: int = LABEL_CHARS) -> str:
    """``name`` as a figure shows it: :func:`shorten` to ``limit`` characters (default :data:`LABEL_CHARS`)."""
    return shorten(name, limit=limit)


def literal_text(plot: Callable[P, T]) -> Callable[P, T]:
    """Decorator of a plotting function: every text it creates is drawn literally, never parsed as mathtext.

    Matplotlib fixes a text's ``parse_math`` when the text is created and measures it already in
    ``tight_layout``, so the setting must hold while the figure is built, not only while it is saved.
    """
    @functools.wraps(plot)
    def literal(*args: P.args, **kwargs: P.kwargs) -> T:
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False}):
            return plot(*args, **kwargs)

    return literal


# ------------------------------------------------------------------------------------------------ checks


def _kind(value: object) -> str:
    """What a JSON value is, in words: a number as itself, anything else by its type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return shorten(repr(value))
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), f"a {type(value).__name__}")


def mapping(value: object, what: str) -> dict:
    """``value`` if it is a JSON object."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} is {_kind(value)}, not a JSON object")
    return value


def required(data: dict, key: str) -> Any:
    """``data[key]``, or a ValueError saying that it is missing."""
    if key not in data:
        raise ValueError(f"no {key!r}")
    return data[key]


def within(where: str, parse: Callable[[Any], T], value: object) -> T:
    """``parse(value)`` with the reason of a ValueError prefixed by ``where`` (e.g. "clean: values ...")."""
    try:
        return parse(value)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def text(value: object, what: str, *, limit: int = MAX_NAME_CHARS) -> str:
    """``value`` if it is a string of at most ``limit`` characters."""
    if not isinstance(value, str):
        raise ValueError(f"{what} is {_kind(value)}, not a string")
    if len(value) > limit:
        raise ValueError(f"{what} is {len(value):,} characters long, more than {limit:,} ({shorten(value)!r})")
    return value


def names(value: object, what: str, *, empty: bool = False) -> list[str]:
    """``value`` if it is a list of 1 (0 with ``empty``) to :data:`MAX_ITEMS` strings of at most
    :data:`MAX_NAME_CHARS` characters."""
    if not isinstance(value, list):
        raise ValueError(f"{what} is {_kind(value)}, not a list of names")
    if not (value or empty) or len(value) > MAX_ITEMS:
        raise ValueError(f"{what} holds {len(value):,} names; between {0 if empty else 1} and {MAX_ITEMS:,} "
                         "can be")
    return [text(name, f"{what}[{i}]") for i, name in enumerate(value)]


def _problem(value: object, low: float, high: float, missing: bool, integer: bool) -> str | None:
    """Why ``value`` is not a number in [low, high] (an int with ``integer``; None/NaN with ``missing``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None if missing else "is missing (null)" if value is None else "is not a finite number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        return f"is {_kind(value)}, not {'an integer' if integer else 'a number'}"
    if isinstance(value, float) and not math.isfinite(value):  # an int is finite (and may not fit a float)
        return "is not a finite number"
    if not low <= value <= high:
        return f"is {shorten(repr(value))}, outside [{low:g}, {high:g}]"
    return None


def number(value: object, what: str, *, low: float = -MAX_MAGNITUDE, high: float = MAX_MAGNITUDE,
           missing: bool = False, integer: bool = False) -> float | int:
    """``value`` if it is a finite number (an int with ``integer``) in [low, high]; with ``missing`` also
    null, returned as NaN."""
    problem = _problem(value, low, high, missing, integer)
    if problem:
        raise ValueError(f"{what} {problem}")
    return math.nan if value is None else value


def _dims(value: object, what: str, rank: int) -> tuple[int, ...]:
    """The lengths along the first elements of ``rank`` nested lists (0 for an empty list and below)."""
    dims, inner = [], value
    for _ in range(rank):
        if not isinstance(inner, list):
            raise ValueError(f"{what} is not a {rank}-D list of numbers")
        dims.append(len(inner))
        inner = inner[0] if inner else []
    return tuple(dims)


def _leaves(value: list, dims: tuple[int, ...], what: str) -> list:
    """The entries of a rectangular nested list of lengths ``dims``, row-major."""
    rows = [value]
    for size in dims:
        flat = []
        for row in rows:
            if not isinstance(row, list) or len(row) != size:
                raise ValueError(f"{what} is not a rectangular {len(dims)}-D list of numbers")
            flat.extend(row)
        rows = flat
    return rows


def numbers(value: object, what: str, shape: Sequence[int | None], *, low: float = -MAX_MAGNITUDE,
            high: float = MAX_MAGNITUDE, missing: bool = False, integer: bool = False) -> np.ndarray:
    """``value`` (nested JSON lists) as an array of ``shape`` (None: any length >= 1) whose entries pass
    :func:`number`: float64 with missing entries NaN, or int64 with ``integer``. At most :data:`MAX_ENTRIES`."""
    dims = _dims(value, what, len(shape))
    if any(got != want if want is not None else got < 1 for got, want in zip(dims, shape)):
        wanted = str(tuple("n" if want is None else want for want in shape)).replace("'", "")
        raise ValueError(f"{what} has shape {dims}, not {wanted}")
    if math.prod(dims) > MAX_ENTRIES:
        raise ValueError(f"{what} holds {math.prod(dims):,} numbers, more than {MAX_ENTRIES:,}")
    leaves = _leaves(value, dims, what)
    for i, leaf in enumerate(leaves):
        problem = _problem(leaf, low, high, missing, integer)
        if problem:
            index = "".join(f"[{j}]" for j in np.unravel_index(i, dims))
            raise ValueError(f"{what}{index} {problem}")
    if integer:
        return np.array(leaves, dtype=np.int64).reshape(dims)
    return np.array([math.nan if leaf is None else leaf for leaf in leaves], dtype=np.float64).reshape(dims)


def run_config(value: object, *, what: str = "config") -> dict:
    """A measurement's config (a JSON object) whose entries that figures and bounds use are sane: ``k``,
    ``n_classes`` and ``samples_per_draw`` integers >= 1, ``resolution`` a number >= 0."""
    config = mapping(value, what)
    for key in ("k", "n_classes", "samples_per_draw"):
        if key in config:
            number(config[key], f"{what}.{key}", low=1, integer=True)
    if "resolution" in config:
        number(config["resolution"], f"{what}.resolution", low=0)
    return dict(config)


def q_bounds(config: dict) -> tuple[float, float]:
    """The range of Q at the ``resolution`` of a checked ``config`` (default 1; see docs/design.md)."""
    resolution = config.get("resolution", 1.0)
    return min(-0.5, 0.5 - resolution) - _Q_SLACK, 1.0 + _Q_SLACK
