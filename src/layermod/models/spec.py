"""Turn the strings a user types (model and data specifications) into objects.

Model specification, one of:

* a registered architecture name (``layermod.models.available()``), built with the given arguments and, with
  weights, loaded from a ``.safetensors`` file;
* ``package.module:function`` (or ``path/to/file.py:function``), an importable callable returning an
  ``nn.Module``; weights, if given, are loaded into it;
* ``torchvision:NAME``, ``timm:NAME`` or ``hf:DIR_OR_ID``, a third-party model built by its library
  (:mod:`layermod.models.hub`), random unless ``pretrained``; a checkpoint sidecar may name these too;
* nothing, with a weights file whose JSON sidecar names the architecture (a layermod checkpoint).

Data specification, one of: a dataset name (``layermod.data.DATASETS``), ``folder:PATH`` (one folder of images
per class, optionally under train/ and test/), a ``.npz`` file holding arrays ``X`` (N, ...) and ``y`` (N,)
(read by :func:`layermod.data.load_npz`: no pickle, sizes checked before reading), ``torchvision:NAME``
(torchvision's layout under ``data_dir``), ``hf:NAME_OR_DIR`` (a ``datasets`` set), a ``.csv``/``.tsv``/
``.json``/``.jsonl``/``.parquet`` file of texts and labels (tokenised with the model's tokenizer: see
:func:`resolve_data`), or ``module:function`` returning a torch ``Dataset`` or an ``(X, y)`` pair.

Decisions, on purpose:

* **Code runs only when a person asks for it.** A ``module:function`` is imported only when it comes from the
  command line or the API. A specification read from a file (a checkpoint's sidecar naming its dataset) is
  resolved with ``allow_import=False``: it may name a registered dataset, ``folder:PATH`` or a ``.npz`` file,
  never code.
* **The current directory comes last.** To find ``package.module`` in the working directory, the directory is
  appended to ``sys.path``, never put first, so a stray ``numpy.py`` or ``matplotlib.py`` there cannot shadow
  an installed module.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from layermod import models
from layermod.coerce import torch_seed
from layermod.models import hub
from layermod.models.checkpoint import check_weights_fit, load_checkpoint, load_weights, read_sidecar
from layermod.data.arrays import as_dataset
from layermod.data.datasets import DATASETS, load_dataset
from layermod.data.npz import load_npz
from layermod.data.tabular import TABLE_SUFFIXES
from layermod.data.text import MAX_LENGTH, TokenDataset, load_text_file
from layermod.errors import DatasetError, LayermodError, ModelError, WeightsError, one_line

__all__ = ["TEXT_DEFAULTS", "call_user_function", "import_object", "resolve_model", "resolve_data", "text_options"]

TEXT_DEFAULTS = {"text_column": "text", "label_column": "label", "max_length": 128}
"""How texts are read unless told otherwise (:func:`resolve_data`'s defaults)."""
_MAX_CLASS_NAMES = 2**16


def import_object(spec: str, *, error: type[Exception] = ModelError) -> object:
    """The object named by ``"module.path:attr"`` or ``"file.py:attr"``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise error(f"cannot read {spec!r}; write it as module.path:function or file.py:function")
    if module_name.endswith(".py") and not Path(module_name).is_file():
        raise error(f"no file {module_name}; check the path in {spec!r}")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.append(os.getcwd())
            module = importlib.import_module(module_name)
    except ImportError as err:
        raise error(f"cannot import {module_name!r} ({err}); check the name and that it is installed") from None
    except Exception as err:  # noqa: BLE001  (importing runs the user's module, which may raise anything)
        reason = one_line(err)
        raise error(f"importing {module_name!r} raised {type(err).__name__}: {reason}; fix that module") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise error(f"{module_name!r} has no attribute {attr!r}") from None


def call_user_function(spec: str, function: Callable[[], object], error: type[Exception]) -> object:
    """``function()``, the user's code named by ``spec``; whatever it raises becomes one ``error`` line."""
    try:
        return function()
    except LayermodError:
        raise
    except Exception as err:  # noqa: BLE001  (the user's code may raise anything)
        reason = one_line(err)
        raise error(f"{spec} raised {type(err).__name__}: {reason}; fix that function or call it yourself") from None


def resolve_model(
    spec: str | None,
    *,
    weights: str | os.PathLike | None = None,
    arch_args: dict | None = None,
    seed: int = 0,
    pretrained: bool = False,
) -> tuple[nn.Module, dict]:
    """Build the model a user named.

    The model is built under ``torch.manual_seed(seed)`` in a forked RNG state (the caller's is left as it was),
    so that an untrained model, or any weights the file does not hold, are the same on every run.

    Args:
        spec: architecture name, ``torchvision:NAME`` / ``timm:NAME`` / ``hf:DIR_OR_ID`` (:mod:`.hub`),
            ``module:function``, or None to take the architecture from the weights' sidecar.
        weights: a ``.safetensors`` file, optional.
        arch_args: keyword arguments for a registered architecture (num_classes, in_channels, width, ...) or a
            library model (num_classes, in_channels, hf_task, the library's own arguments).
        seed: seed of the initial weights, any integer (:func:`layermod.coerce.torch_seed`).
        pretrained: a library model's weights through the library's own loader (not with ``weights``).

    Returns:
        (model in eval mode, description dict for the run's config).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed(seed, ModelError))
        return _build_model(spec, weights, {k: v for k, v in (arch_args or {}).items() if v is not None},
                            pretrained)


def _build_model(spec: str | None, weights: str | os.PathLike | None, arch_args: dict,
                 pretrained: bool) -> tuple[nn.Module, dict]:
    library = hub.is_library_spec(spec)
    if pretrained and not library:
        raise ModelError("pretrained=True loads the weights of a torchvision:, timm: or hf: model; layermod's own "
                         "architectures and module:function have none (pass weights=)")
    if pretrained and weights is not None:
        raise ModelError("pretrained=True and weights= both give the weights; pass one of them")
    if not library and "hf_task" in arch_args:
        raise ModelError(f"hf_task is for hf: models, not {spec!r}; drop it")
    if spec is None:
        if weights is None:
            raise ModelError("no model given; pass a model spec (NAME or module:function), or weights= of a layermod checkpoint")
        model, meta = load_checkpoint(weights)
        return model, {"model": meta.get("arch"), "arch_args": meta.get("arch_args", {}), "weights": str(weights)}
    if ":" in spec and not library:
        factory = import_object(spec)
        if not callable(factory):
            raise ModelError(f"{spec!r} is not callable; point at a function that returns an nn.Module")
        model = call_user_function(spec, factory, ModelError)
        if not isinstance(model, nn.Module):
            raise ModelError(f"{spec!r} returned {type(model).__name__}, not an nn.Module")
        description = {"model": spec}
    else:
        spec = hub.canonical(spec) if library else spec
        create = hub.create if library else models.create
        if weights is not None and Path(weights).with_suffix(".json").is_file():
            sidecar = read_sidecar(weights)
            if sidecar.get("arch") not in (None, spec):
                raise ModelError(f"weights {weights} are for {sidecar['arch']!r}, not {spec!r}; drop the model spec "
                                 "or fix it")
            saved = sidecar.get("arch_args", {})
            if library and isinstance(saved, dict):
                hub.recorded(saved, f"checkpoint sidecar of {weights}")
            clashes = [f"{key} {saved[key]} (asked {value})" for key, value in arch_args.items()
                       if key in saved and saved[key] != value]
            if clashes:
                raise ModelError(f"weights {weights} were saved with {', '.join(clashes)}; drop those options or fix them")
            arch_args = {**saved, **arch_args}
        if weights is not None:  # options may ask for a model far larger than the file: compare shapes first
            with torch.device("meta"):
                check_weights_fit(create(spec, **arch_args), weights)
        model = create(spec, **arch_args, **({"pretrained": True} if pretrained else {}))
        description = {"model": spec, "arch_args": arch_args, **({"pretrained": True} if pretrained else {})}
    if weights is not None:
        load_weights(model, weights)
        description["weights"] = str(weights)
    return model.eval(), description


def has_splits(spec: str) -> bool:
    """Whether the dataset ``spec`` names has splits to choose from: a registered dataset, ``folder:``,
    ``torchvision:`` or ``hf:``; a ``.npz`` file, a table file or ``module:function`` is one set of samples."""
    return spec in DATASETS or spec.startswith(("folder:", "hf:")) or spec[:12].lower() == "torchvision:"


def resolve_data(spec: str, *, split: str = "test", data_dir: str | os.PathLike | None = None,
                 allow_import: bool = True, tokenizer: Any = None, text_column: str = "text",
                 label_column: str = "label", max_length: int = 128,
                 classes: list[str] | None = None) -> tuple[Dataset, dict]:
    """Load the dataset a user named; returns (torch Dataset, description dict for the run's config).

    ``allow_import=False`` for a specification read from a file: a ``module:function`` is then refused, not run.
    Texts (a CSV / TSV / JSON / JSON-lines / Parquet file, an ``hf:`` set of texts) are tokenised with
    ``tokenizer``: a tokenizer, or the model's specification, whose tokenizer (an ``hf:`` model's,
    :func:`layermod.models.hub.load_tokenizer`) is loaded only when the data are texts. ``text_column``,
    ``label_column``, ``max_length`` and ``classes`` (the class names a classifier was trained on, in index order:
    texts whose labels number other names are refused) are read for those only.
    """
    if spec in DATASETS or spec.startswith("folder:") or spec[:12].lower() == "torchvision:":
        return load_dataset(spec, split=split, data_dir=data_dir), {"dataset": spec, "split": split}
    if spec.endswith(".npz"):
        return as_dataset(load_npz(spec)), {"dataset": spec}
    text = {"text_column": text_column, "label_column": label_column, "max_length": max_length}
    if spec.startswith("hf:"):
        from layermod.data.hfdata import load_hf_dataset

        data = load_hf_dataset(spec[3:], split=split, tokenizer=_ModelTokenizer(tokenizer), **text)
        return _same_classes(data, classes, spec), {"dataset": spec, "split": split, **text}
    if Path(spec).suffix.lower() in TABLE_SUFFIXES:
        data = load_text_file(spec, _ModelTokenizer(tokenizer), **text)
        return _same_classes(data, classes, spec), {"dataset": spec, **text}
    if ":" in spec:
        if not allow_import:
            raise DatasetError(f"the dataset {spec!r} read from a file is code, which layermod never runs from a "
                               "file; pass dataset= yourself if you trust it")
        loaded = import_object(spec, error=DatasetError)
        data = call_user_function(spec, loaded, DatasetError) if callable(loaded) else loaded
        return as_dataset(data), {"dataset": spec}
    raise DatasetError(
        f"unknown dataset {spec!r}; use one of {', '.join(DATASETS)}, folder:PATH, torchvision:NAME, hf:NAME_OR_DIR, "
        f"a .npz file, a table file ({', '.join(TABLE_SUFFIXES)}) or module:function"
    )


def _same_classes(data, classes: list[str] | None, spec: str):
    """``data``, refused when its class indices name other classes than ``classes`` (one line); texts whose
    labels are a prefix of ``classes`` (a table without the last classes) are kept."""
    if classes is None or not isinstance(data, TokenDataset):
        return data
    names = list(data.classes)
    if names != list(classes)[:len(names)]:
        shown = ", ".join(map(repr, names[:6])) + (", ..." if len(names) > 6 else "")
        model = ", ".join(map(repr, list(classes)[:6])) + (", ..." if len(classes) > 6 else "")
        raise DatasetError(f"the labels of {spec} number the classes {shown}, not the model's {model}; give labels "
                           "of the classes the model was trained on")
    data.classes = list(classes)
    return data


def text_options(meta: dict, where: object) -> dict:
    """The keywords of :func:`resolve_data` that rebuild a text classifier's inputs as its checkpoint's sidecar
    ``meta`` records them under ``"text"``: ``tokenizer`` (an ``hf:`` model spec), ``text_column``,
    ``label_column``, ``max_length`` and ``classes``; ``{}`` for a checkpoint of other data.

    Raises:
        WeightsError: (naming ``where``) a ``"text"`` entry that is not such an object.
    """
    text = meta.get("text")
    if text is None:
        return {}
    problem = None
    if not isinstance(text, dict) or set(text) != {"tokenizer", *TEXT_DEFAULTS, "classes"}:
        problem = f"an object with tokenizer, {', '.join(TEXT_DEFAULTS)} and classes"
    elif not (isinstance(text["tokenizer"], str) and text["tokenizer"].startswith("hf:")
              and hub.is_library_spec(text["tokenizer"])):
        problem = "a tokenizer named as an hf: model"
    elif not all(isinstance(text[key], str) and 0 < len(text[key]) <= 200 for key in ("text_column", "label_column")):
        problem = "text and label columns named by short strings"
    elif not (isinstance(text["classes"], list) and 0 < len(text["classes"]) <= _MAX_CLASS_NAMES
              and all(isinstance(name, str) for name in text["classes"])):
        problem = f"classes as a list of 1 to {_MAX_CLASS_NAMES} names"
    elif isinstance(text["max_length"], bool) or not (isinstance(text["max_length"], int)
                                                       and 1 <= text["max_length"] <= MAX_LENGTH):
        problem = f"a max_length from 1 to {MAX_LENGTH} tokens"
    if problem is not None:
        raise WeightsError(f"checkpoint sidecar {where}: 'text' must be {problem}; train the checkpoint again")
    return dict(text)


class _ModelTokenizer:
    """The tokenizer given to :func:`resolve_data`, loaded from the model's specification at its first use (so
    image data never load one)."""

    def __init__(self, given) -> None:
        self._given, self._loaded = given, None

    def _tokenizer(self):
        if self._loaded is None:
            given = self._given
            if given is None or (isinstance(given, str) and not given.startswith("hf:")):
                whose = "none was given" if given is None else f"the model {given[:80]!r} has none"
                raise DatasetError(f"texts need the tokenizer of an hf: model and {whose}; use an hf:NAME_OR_DIR "
                                   "model (or a checkpoint trained from one), or pass tokenizer=")
            if isinstance(given, str):
                try:
                    from layermod.models.hub import load_tokenizer
                except ImportError:
                    raise DatasetError("this layermod cannot load hf: tokenizers; pass tokenizer= in the API") from None
                given = load_tokenizer(given)
            self._loaded = given
        return self._loaded

    def __call__(self, *args, **kwargs):
        return self._tokenizer()(*args, **kwargs)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._tokenizer(), name)
