"""The shape of the public API: data positional, every option keyword-only, everything annotated, one name per
concept.

The public callables are every name in ``layermod.__all__`` and in the ``__all__`` of every module of the
package (each subpackage's public names are its modules), with the public methods of the classes among them.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterator
from typing import is_typeddict

import pytest

import layermod
from layermod.errors import LayermodError

# Parameters that are the data itself and may be left out, not options: the command line's own arguments (None:
# sys.argv) and a Hugging Face model's inputs (None: they come as keywords, model(input_ids=..., ...)).
DATA_WITH_DEFAULT = {"layermod.cli.main": {"argv"}, "layermod.models.hub.HFModel.forward": {"x"}}

# One name per concept: these names were the second name of a concept and are gone from the API.
RETIRED = {"out_dir": "out", "out_png": "path", "path_json": "source", "dataset_name": "dataset",
           "test_set": "test_data"}


def _modules() -> Iterator[object]:
    yield layermod
    for info in pkgutil.walk_packages(layermod.__path__, "layermod."):
        if info.name.rsplit(".", 1)[-1] in ("__main__", "parquet_child"):  # scripts, run only as processes
            continue
        yield importlib.import_module(info.name)


def _public_callables() -> tuple[dict[str, Callable], list[str]]:
    """{qualified name: callable} of the public API, and the names an optional library is missing for."""
    found: dict[str, Callable] = {}
    missing: list[str] = []
    seen: set[int] = set()
    for module in _modules():
        for name in getattr(module, "__all__", []):
            try:
                obj = getattr(module, name)
            except (ImportError, LayermodError):  # a class built on first use from an optional library
                missing.append(f"{module.__name__}.{name}")
                continue
            if id(obj) in seen or not callable(obj) or not getattr(obj, "__module__", "").startswith("layermod"):
                continue
            seen.add(id(obj))
            if inspect.isclass(obj) and (issubclass(obj, BaseException) or is_typeddict(obj)):
                continue  # exceptions take a message; a TypedDict is the keywords of a call
            qualname = f"{obj.__module__}.{obj.__qualname__}"
            found[qualname] = obj
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    function = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
                    if not attr.startswith("_") and inspect.isfunction(function):
                        found[f"{qualname}.{attr}"] = getattr(obj, attr)
    return found, missing


API, MISSING = _public_callables()


def _signature(obj: Callable) -> inspect.Signature:
    return inspect.signature(obj)


def _parameters(obj: Callable) -> list[inspect.Parameter]:
    return [p for p in _signature(obj).parameters.values() if p.name not in ("self", "cls")]


def test_the_walk_finds_the_api():
    assert not [name for name in MISSING if not name.startswith("layermod.training.")]  # only the callbacks
    for name in ("layermod.measure.graph.knn_graph", "layermod.analysis.curve.modularity_curve",
                 "layermod.analysis.curve.Curve.plot", "layermod.measure.config.GraphConfig",
                 "layermod.models._registry.create", "layermod.cli.main"):
        assert name in API
    assert len(API) > 300


def test_every_option_is_keyword_only():
    positional = [f"{name}({p.name}=...)" for name, obj in API.items() for p in _parameters(obj)
                  if p.default is not p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.name not in DATA_WITH_DEFAULT.get(name, ())]
    assert positional == []


def test_config_dataclasses_take_keywords_only():
    configs = [obj for name, obj in API.items() if dataclasses.is_dataclass(obj) and name.endswith("Config")]
    assert {c.__name__ for c in configs} >= {"GraphConfig", "DrawConfig", "AttackConfig", "TrackConfig",
                                              "TrainConfig"}
    for config in configs:
        assert all(p.kind is p.KEYWORD_ONLY for p in _parameters(config)), config.__name__
    with pytest.raises(TypeError):
        layermod.GraphConfig(5)  # type: ignore[misc]


def test_every_parameter_and_result_is_annotated():
    unannotated = [f"{name}({p.name})" for name, obj in API.items() for p in _parameters(obj)
                   if p.annotation is p.empty]
    no_result = [name for name, obj in API.items() if not inspect.isclass(obj)
                 and _signature(obj).return_annotation is inspect.Signature.empty]
    assert unannotated == [] and no_result == []


def test_retired_names_are_gone():
    left = [f"{name}({p.name}): say {RETIRED[p.name]}" for name, obj in API.items() for p in _parameters(obj)
            if p.name in RETIRED]
    assert left == []


def test_options_are_named_as_the_configs_fields():
    config_fields = {f.name for f in dataclasses.fields(layermod.GraphConfig)}
    knn_graph = {p.name for p in _parameters(layermod.knn_graph)}
    assert config_fields - {"resolution"} <= knn_graph  # the resolution is modularity's
    assert {p.name for p in _parameters(layermod.modularity)} >= {"resolution"}
    draws = {f.name for f in dataclasses.fields(layermod.DrawConfig)} - {"null_permutations"}
    assert draws <= {p.name for p in _parameters(layermod.balanced_draws)}
    attack = {f.name for f in dataclasses.fields(layermod.AttackConfig)} - {"method", "seed", "options"}
    assert attack <= {p.name for p in _parameters(layermod.pgd)}
    for measurement in (layermod.adversarial_curves, layermod.compare_layers, layermod.modularity_curve):
        assert {"graph", "draws", "layers"} <= {p.name for p in _parameters(measurement)}
    for result in layermod.RESULT_TYPES:
        assert [p.name for p in _parameters(result.save)] == ["path"]
        assert [p.name for p in _parameters(result.load)] == ["path"]
