"""Choose which layers to measure: a user's choice turned into point names.

The decisions behind it: docs/design.md, section layermod.extract.layers.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Sequence

import numpy as np
from torch import nn

from layermod.errors import LayerError
from layermod.extract.auto import auto_layers, residual_blocks
from layermod.extract.trace import FORWARD_ERRORS, LayerCall, first_tensor, split_point, trace_calls

__all__ = [
    "FORWARD_ERRORS",
    "LayerCall",
    "LayerSpec",
    "auto_layers",
    "first_tensor",
    "layer_items",
    "parse_layers",
    "residual_blocks",
    "select_layers",
    "split_point",
    "trace_calls",
]

LayerSpec = str | int | Sequence[str | int]

_ITEM_SEPARATOR = re.compile(r",(?![^\[]*\])")  # a comma outside [...]
_INDEX = re.compile(r"[+-]?\d+")
_WRAPPERS = ("module.", "_orig_mod.")


def glob_regex(pattern: str) -> re.Pattern:
    """``pattern`` as a regex over module names: ``*``/``?`` within one dotted component, ``**`` across dots,
    ``[...]`` a character class (``[!...]`` negated)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append(r"[^.]*")
        elif c == "?":
            out.append(r"[^.]")
        elif c == "[" and (end := pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)) > i:
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = end + 1
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def _unknown(name: str, names: list[str]) -> LayerError:
    for prefix in _WRAPPERS:
        if name.startswith(prefix) and name[len(prefix) :] in names:
            return LayerError(
                f"no layer named {name!r}: this model is not wrapped, so drop the {prefix!r} prefix: "
                f"{name[len(prefix):]!r}"
            )
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
    hint = f"; closest: {', '.join(close)}" if close else ""
    return LayerError(f"no layer named {name!r}{hint} (run `layermod layers` to list them all)")


def parse_layers(text: str) -> list[str | int]:
    """A layer choice written as text (the CLI's ``--layers``): comma-separated items, whole numbers as ints.

    ``"features.0, features.3"`` -> ``["features.0", "features.3"]``; ``"0,-1"`` -> ``[0, -1]``;
    ``"blocks.[0,2]"`` stays one glob. Empty items are dropped.
    """
    items = [item.strip() for item in _ITEM_SEPARATOR.split(text)]
    return [int(item) if _INDEX.fullmatch(item) else item for item in items if item]


def layer_items(spec: LayerSpec) -> list[str | int]:
    """``spec`` as a flat list of items: a string through :func:`parse_layers`, an int (numpy's too) as a
    one-item list, the items of a list or other iterable as they are (numpy ints as ints).

    Raises:
        LayerError: anything else (e.g. a float).
    """
    if isinstance(spec, str):
        return parse_layers(spec)
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        return [int(spec)]
    try:
        items = list(spec)
    except TypeError:
        raise LayerError(f"cannot read layer choice {spec!r}; use names, glob patterns, ints or 'auto'") from None
    return [int(item) if isinstance(item, np.integer) else item for item in items]


def _glob(item: str, names: list[str], calls: dict[str, LayerCall]) -> list[str]:
    regex = glob_regex(item)
    matched = {n for n in names if regex.fullmatch(n)} | {c.module for k, c in calls.items() if regex.fullmatch(k)}
    if not matched:
        raise LayerError(f"layer pattern {item!r} matches no layer (run `layermod layers` to list them)")
    by_call = "#" in item
    chosen = [key for key, call in calls.items() if call.module in matched and (not by_call or regex.fullmatch(key))]
    if not chosen:
        raise LayerError(f"layer pattern {item!r} matches {len(matched)} modules, none called in forward; choose "
                         "another pattern (run `layermod layers` to list the called ones)")
    if "?" in item:
        wider = glob_regex(item.replace("?", "*"))
        more = {c.module for c in calls.values() if wider.fullmatch(c.module)} - matched
        if more:
            warnings.warn(f"layer pattern {item!r}: '?' is one character, so {len(more)} more called modules "
                          f"match {item.replace('?', '*')!r}", stacklevel=3)
    return chosen


def _resolve(item: str, names: set[str], calls: dict[str, LayerCall]) -> str | None:
    """The point ``item`` names (wrapper prefixes seen through), or None."""
    for candidate in (item, *(prefix + item for prefix in _WRAPPERS)):
        base, k = split_point(candidate)
        if base in names:
            if k > 1 and candidate not in calls:
                count = calls[base].calls if base in calls else 0
                raise LayerError(f"layer {base!r} is called {count} times per forward pass, so {candidate!r} does "
                                 "not exist; choose another call")
            return candidate if k > 1 else base
    return None


def select_layers(model: nn.Module, spec: LayerSpec, calls: dict[str, LayerCall]) -> list[str]:
    """Resolve a layer choice (grammar in docs/design.md) into point names.

    Args:
        model: the network.
        spec: ``"auto"``, a name, a glob, an int index into the auto points, a comma-separated string of
            those, or a list (see docs/design.md).
        calls: :func:`trace_calls` of the same model, used for order and to check every layer runs.

    Returns:
        The point names, in forward order.

    Raises:
        LayerError: unknown name (with the closest real names, or without a wrapper prefix), a pattern matching
            no called module, an index out of range, a layer never called in forward, returning no tensor, or
            whose batch dimension is ambiguous.
    """
    items = layer_items(spec)
    if not items:
        raise LayerError("no layers selected; pass 'auto', names, patterns or indices")
    names = [name for name, _ in model.named_modules() if name]
    known = set(names)
    auto: list[str] | None = None
    chosen: list[str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise LayerError(f"cannot read layer choice {item!r}; use names, glob patterns, ints or 'auto'")
        if isinstance(item, int) or item == "auto":
            if auto is None:
                auto = auto_layers(model, calls)
            if item == "auto":
                chosen += auto
                continue
            if not -len(auto) <= item < len(auto):
                raise LayerError(f"layer index {item} is out of range for {len(auto)} auto layers")
            chosen.append(auto[item])
        elif (point := _resolve(item, known, calls)) is not None:
            chosen.append(point)
        elif any(c in item for c in "*?["):
            chosen += _glob(item, names, calls)
        else:
            raise _unknown(item, names + [n for n in calls if "#" in n])
    chosen = list(dict.fromkeys(chosen))
    for name in chosen:
        call = calls.get(name)
        if call is None:
            raise LayerError(f"layer {name!r} is never called in forward, so it has no output; choose another layer")
        if call.shape is None:
            raise LayerError(f"layer {name!r} returns no tensor; choose another layer")
        if call.ambiguous:
            raise LayerError(
                f"layer {name!r} returns shape {call.shape}, where more than one dimension may be the batch "
                "dimension (it could not be told apart by running another batch size); choose another layer"
            )
    return chosen
