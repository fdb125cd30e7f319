"""Sweep specifications: a TOML file of options, expanded into items with stable ids.

The decisions behind it: docs/design.md, section layermod.sweep.spec.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Literal

from layermod.errors import LayermodError, SweepError
from layermod.io.files import open_regular
from layermod.sweep.executor import Resources

__all__ = ["MAX_SPEC_BYTES", "MAX_SPEC_ITEMS", "Item", "OptionKind", "SweepSpec", "item_hash",
           "load_spec", "parse_spec", "to_argv"]

MAX_SPEC_BYTES = 1 * 2**20
MAX_SPEC_ITEMS = 10_000
SLUG_CHARS = 60
HASH_CHARS = 10

OptionKind = Literal["flag", "repeat", "value"]
"""How an option takes its value: a flag (``--binary``), repeated (``--arch-arg K=V ...``) or one value."""

_TABLES = ("defaults", "grid", "run", "resources")
_RESOURCE_KEYS = ("num-cpus", "num-gpus", "threads")
_Value = str | int | float | bool | list | dict


@dataclass(frozen=True)
class Item:
    """One item of a sweep.

    Attributes:
        id: ``SLUG-HASH`` (see docs/design.md).
        options: the resolved options, spec key -> TOML value, keys sorted.
    """

    id: str
    options: dict

    @property
    def hash(self) -> str:
        return self.id.rpartition("-")[2]


@dataclass(frozen=True)
class SweepSpec:
    """A checked, expanded sweep.

    Attributes:
        items: the items, ordered by id.
        varying: the option keys whose value differs between items (one missing counts as differing), sorted.
        resources: what each Ray actor reserves.
        threads: torch threads per item, or None for the executor's default.
    """

    items: list[Item]
    varying: list[str]
    resources: Resources
    _: KW_ONLY
    threads: int | None = None

    def shard(self, index: int, count: int) -> list[Item]:
        """Shard ``index`` of ``count`` (1-based): every ``count``-th item by id from the ``index``-th; the
        shards of one spec are disjoint and together hold every item."""
        if not 1 <= index <= count:
            raise SweepError(f"shard {index}/{count} does not exist; write I/N with 1 <= I <= N")
        return self.items[index - 1::count]


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def item_hash(options: Mapping[str, object]) -> str:
    """:data:`HASH_CHARS` hex digits of the SHA-256 of ``options`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(_canonical(options).encode("utf-8")).hexdigest()[:HASH_CHARS]


def load_spec(path: str | os.PathLike, options: Mapping[str, OptionKind],
              *,
              max_items: int = MAX_SPEC_ITEMS) -> SweepSpec:
    """Read, check and expand the TOML spec at ``path`` whose option keys are ``options`` (name -> kind).

    Raises:
        SweepError: a file that cannot be read or is not TOML, or any problem docs/design.md lists.
    """
    path = Path(path)
    try:
        with open_regular(path) as fh:
            raw = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as err:
        raise SweepError(f"cannot read the sweep spec {path}: {err.strerror or err}; check the path") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SweepError(f"the sweep spec {path} is larger than {MAX_SPEC_BYTES:,} bytes; a spec lists options, "
                         "use a [grid] and globs instead of listing every item")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise SweepError(f"the sweep spec {path} is not valid TOML ({err}); fix the file") from None
    return parse_spec(data, options, source=str(path), max_items=max_items)


def parse_spec(data: Mapping[str, object], options: Mapping[str, OptionKind], *, source: str = "the spec",
               max_items: int = MAX_SPEC_ITEMS) -> SweepSpec:
    """:func:`load_spec` of an already parsed TOML document ``data``; ``source`` names it in messages."""
    unknown = sorted(set(data) - {*_TABLES, *_RESOURCE_KEYS})
    if unknown:
        valid = ", ".join(_TABLES + _RESOURCE_KEYS)
        raise SweepError(f"unknown table or key {unknown[0]!r} in {source}; valid: {valid}")
    defaults = _options(_table(data, "defaults", source), options, "[defaults]", source)
    grid = {key: _alternatives(key, value, options, source) for key, value in
            _table(data, "grid", source).items() if _known(key, options, "[grid]", source)}
    runs = data.get("run", [])
    if not isinstance(runs, list) or not all(isinstance(entry, dict) for entry in runs):
        raise SweepError(f"run in {source} must be [[run]] tables of options, got {_kind(runs)}")
    runs = [_options(entry, options, f"[[run]] {i + 1}", source) for i, entry in enumerate(runs)]
    n_grid = math.prod(len(values) for values in grid.values()) if grid or not runs else 0
    if n_grid + len(runs) > max_items:
        raise SweepError(f"{source} makes {n_grid + len(runs):,} items, more than {max_items:,}; split the sweep "
                         "into several specs")
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] if n_grid else []
    resolved = [{**defaults, **combo} for combo in combos] + [{**defaults, **run} for run in runs]
    unique = list({_canonical(item): dict(sorted(item.items())) for item in resolved}.values())
    varying = sorted(key for key in {k for item in unique for k in item}
                     if len({_canonical(item.get(key)) for item in unique}) > 1)
    items = sorted((Item(f"{_slug(item, varying)}-{item_hash(item)}", item) for item in unique),
                   key=lambda item: item.id)
    if len({item.id for item in items}) < len(items):  # 40-bit hashes: practically never
        raise SweepError(f"two items of {source} got the same id; change an option of one of them")
    resources, threads = _resources(data, source)
    return SweepSpec(items, varying, resources, threads=threads)


def to_argv(options: Mapping[str, object], kinds: Mapping[str, OptionKind]) -> list[str]:
    """Command-line arguments of checked ``options`` (see docs/design.md for how values are written)."""
    argv: list[str] = []
    for key, value in options.items():
        flag = f"--{key}"
        if kinds[key] == "flag":
            argv += [flag] if value else []
        elif kinds[key] == "repeat":
            entries = ([f"{k}={json.dumps(v)}" for k, v in value.items()] if isinstance(value, dict)
                       else list(value) if isinstance(value, list) else [value])
            for entry in entries:
                argv += [flag, str(entry)]
        else:
            argv += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return argv


def _kind(value: object) -> str:
    return {bool: "a boolean", str: "a string", int: "an integer", float: "a number", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _table(data: Mapping[str, object], name: str, source: str) -> dict:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise SweepError(f"{name} in {source} must be a table ([{name}]), got {_kind(table)}")
    return table


def _known(key: str, options: Mapping[str, OptionKind], where: str, source: str) -> bool:
    if key not in options:
        raise SweepError(f"unknown option {key!r} in {where} of {source}; valid: {', '.join(sorted(options))}")
    return True


def _options(table: Mapping[str, object], options: Mapping[str, OptionKind], where: str, source: str) -> dict:
    return {key: _value(key, value, options[key], f"{where} {key}", source)
            for key, value in table.items() if _known(key, options, where, source)}


def _value(key: str, value: object, kind: OptionKind, where: str, source: str) -> _Value:
    """``value`` checked against the option's kind (see docs/design.md)."""
    scalar = (str, int, float)
    if kind == "flag":
        ok = isinstance(value, bool)
        want = "true or false"
    elif kind == "repeat":
        ok = (isinstance(value, dict) and all(isinstance(v, (*scalar, bool, list, dict)) for v in value.values())
              or isinstance(value, list) and all(isinstance(v, str) for v in value))
        want = 'a table such as {depth = 2} or a list of "KEY=VALUE" strings'
    else:
        ok = (isinstance(value, scalar) and not isinstance(value, bool)
              or isinstance(value, list) and all(isinstance(v, scalar) and not isinstance(v, bool) for v in value))
        want = "a string, a number or a list of them"
    if not ok:
        raise SweepError(f"{where} in {source} is {_kind(value)}; {key} takes {want}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SweepError(f"{where} in {source} is {value}; give a finite number")
    return value


def _alternatives(key: str, value: object, options: Mapping[str, OptionKind], source: str) -> list:
    """A [grid] entry: a non-empty list of values, or a glob string expanded to the sorted files it matches."""
    where = f"[grid] {key}"
    if isinstance(value, str):
        matches = sorted(glob.glob(value))
        if not matches:
            raise SweepError(f"{where} = {value!r} in {source} matches no file; a string in [grid] is a glob of "
                             "files (write a list for other values)")
        return matches
    if not isinstance(value, list) or not value:
        raise SweepError(f"{where} in {source} must be a non-empty list of alternatives or a glob string, got "
                         f"{'an empty list' if value == [] else _kind(value)}")
    return [_value(key, v, options[key], f"{where}[{i}]", source) for i, v in enumerate(value)]


def _resources(data: Mapping[str, object], source: str) -> tuple[Resources, int | None]:
    """num-cpus, num-gpus and threads, from [resources] or the top level (not both)."""
    table = _table(data, "resources", source)
    unknown = sorted(set(table) - set(_RESOURCE_KEYS))
    if unknown:
        raise SweepError(f"unknown key {unknown[0]!r} in [resources] of {source}; valid: {', '.join(_RESOURCE_KEYS)}")
    both = sorted(set(table) & set(data))
    if both:
        raise SweepError(f"{both[0]} is given both in [resources] and at the top of {source}; keep one")
    given = {**{k: data[k] for k in _RESOURCE_KEYS if k in data}, **table}
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (key == "threads" and
                                                                              not isinstance(value, int)):
            raise SweepError(f"{key} in {source} is {_kind(value)}; give a number"
                             + (" (an integer)" if key == "threads" else ""))
    threads = given.get("threads")
    if threads is not None and not 1 <= threads <= 1024:
        raise SweepError(f"threads = {threads} in {source} must be from 1 to 1024")
    try:
        resources = Resources(num_cpus=float(given.get("num-cpus", 1)), num_gpus=float(given.get("num-gpus", 0)))
    except LayermodError as err:
        raise SweepError(f"{err} (in {source})") from None
    return resources, threads


def _slug(options: Mapping[str, object], varying: Sequence[str]) -> str:
    """The item's values of the ``varying`` keys, readable and safe as a file name (``item`` when none)."""
    parts = []
    for key in varying:
        value = options.get(key)
        if value is None:
            continue
        if isinstance(value, str) and (os.sep in value or "." in Path(value).name):
            path = Path(value)  # its folder too: runs/a/best.safetensors and runs/b/best.safetensors differ
            value = f"{path.parent.name}-{path.stem}" if path.parent.name else path.stem
        elif not isinstance(value, str):
            value = json.dumps(value, sort_keys=True, separators=(",", ":"))
        parts.append(f"{key}-{value}")
    slug = re.sub(r"[^A-Za-z0-9.+_-]+", "", "_".join(parts))[:SLUG_CHARS].strip("._-")
    return slug or "item"
