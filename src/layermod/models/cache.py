"""Models and datasets loaded once per worker: a small cache for the items of one run.

The decisions behind it: docs/design.md, section layermod.models.cache.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from layermod.data.arrays import ArrayDataset
from layermod.data.datasets import DATASETS
from layermod.models import hub
from layermod.data.spec import resolve_data
from layermod.models.spec import resolve_model

__all__ = ["CAPACITY", "cache_info", "cache_scope", "cached_data", "cached_model"]

CAPACITY = 4
"""Objects (models and datasets together) one process keeps."""

_kept: OrderedDict[tuple, tuple] = OrderedDict()
_state = {"depth": 0, "hits": 0, "misses": 0}


@contextlib.contextmanager
def cache_scope() -> Iterator[None]:
    """Cache what :func:`cached_model` and :func:`cached_data` load until the outermost scope closes."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if _state["depth"] == 0:
            _kept.clear()
            _state.update(hits=0, misses=0)


def cache_info() -> dict:
    """``{"hits", "misses", "entries", "capacity"}`` of this process in its open scope (all 0 outside one)."""
    return {"hits": _state["hits"], "misses": _state["misses"], "entries": len(_kept), "capacity": CAPACITY}


def _file(path: str | os.PathLike) -> tuple | None:
    try:
        stat = Path(path).stat()
        return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns
    except OSError:
        return None


def _lookup(key: tuple | None, fresh) -> tuple | None:
    """The kept ``(object, description, versions)`` of ``key`` if ``fresh`` accepts it, counted as a hit."""
    if key is None or _state["depth"] == 0:
        return None
    found = _kept.get(key)
    if found is not None and fresh(found):
        _kept.move_to_end(key)
        _state["hits"] += 1
        return found
    _kept.pop(key, None)
    _state["misses"] += 1
    return None


def _keep(key: tuple | None, entry: tuple) -> bool:
    """Keep ``entry`` under ``key`` (dropping the least recently used past :data:`CAPACITY`); whether it was."""
    if key is None or _state["depth"] == 0:
        return False
    _kept[key] = entry
    while len(_kept) > CAPACITY:
        _kept.popitem(last=False)
    return True


def _model_key(spec, weights, arch_args, seed, pretrained) -> tuple | None:
    if spec is not None and ":" in spec and not hub.is_library_spec(spec):
        return None  # code
    files = ()
    if weights is not None:
        files = (_file(weights), _file(Path(weights).with_suffix(".json")))
        if files[0] is None:
            return None  # no such file: resolve_model says so
    return ("model", spec, *files, json.dumps(arch_args or {}, sort_keys=True, default=repr), seed, pretrained)


def cached_model(spec: str | None, *, weights: str | os.PathLike | None = None, arch_args: dict | None = None,
                 seed: int = 0, pretrained: bool = False) -> tuple[nn.Module, dict]:
    """:func:`~layermod.models.spec.resolve_model`'s (model in eval mode, description), the model a deep copy of
    the one kept in this process (see docs/design.md)."""
    key = _model_key(spec, weights, arch_args, seed, pretrained)
    found = _lookup(key, lambda entry: True)
    if found is None:
        model, description = resolve_model(spec, weights=weights, arch_args=arch_args, seed=seed,
                                           pretrained=pretrained)
        found = (model, description, ())
        if not _keep(key, found):
            return model, description
    return copy.deepcopy(found[0]), copy.deepcopy(found[1])


def _versions(data: ArrayDataset) -> tuple[int, ...]:
    tensors = list(data.data.values()) if isinstance(data.data, dict) else [data.data]
    return tuple(tensor._version for tensor in [*tensors, data.targets])


def _data_key(spec: str, split: str, data_dir) -> tuple | None:
    if spec.endswith(".npz"):
        found = _file(spec)
        return None if found is None else ("data", found)
    if spec in DATASETS or spec.startswith("folder:") or spec[:12].lower() == "torchvision:":
        return ("data", spec, split, None if data_dir is None else str(data_dir), os.getcwd(),
                os.environ.get("LAYERMOD_DATA"))
    return None  # code, hf: sets, text tables


def cached_data(spec: str, *, split: str = "test", data_dir: str | os.PathLike | None = None,
                **options: Any) -> tuple[object, dict]:
    """:func:`~layermod.data.spec.resolve_data`'s (dataset, description), the dataset a new object over the
    tensors kept in this process (see docs/design.md); ``options`` are resolve_data's keyword arguments."""
    key = _data_key(spec, split, data_dir)
    found = _lookup(key, lambda entry: _versions(entry[0]) == entry[2])
    if found is None:
        data, description = resolve_data(spec, split=split, data_dir=data_dir, **options)
        if not isinstance(data, ArrayDataset):
            return data, description
        found = (data, description, _versions(data))
        if not _keep(key, found):
            return data, description
    data = copy.copy(found[0])
    data.classes, data.normalization = list(data.classes), copy.deepcopy(data.normalization)
    return data, copy.deepcopy(found[1])
