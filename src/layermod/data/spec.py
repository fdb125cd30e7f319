"""Turn the dataset a user names into a torch ``Dataset`` (:func:`resolve_data`).

A specification is one of: a dataset name (:data:`layermod.data.DATASETS`), ``folder:PATH`` (one folder of
images per class, optionally under train/ and test/), a ``.npz`` file of arrays ``X`` (N, ...) and ``y`` (N,),
``torchvision:NAME``, ``hf:NAME_OR_DIR`` (a ``datasets`` set), a ``.csv``/``.tsv``/``.json``/``.jsonl``/
``.parquet`` file of texts and labels, or ``module:function`` returning a ``Dataset`` or an ``(X, y)`` pair,
run only when it comes from the command line or the API (see docs/design.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from layermod.data.arrays import as_dataset
from layermod.data.datasets import DATASETS, load_dataset
from layermod.data.hfdata import load_hf_dataset
from layermod.data.hfhub import load_tokenizer
from layermod.data.npz import load_npz
from layermod.data.tabular import TABLE_SUFFIXES
from layermod.data.text import TokenDataset, load_text_file
from layermod.errors import DatasetError
from layermod.io.usercode import call_user_function, import_object

__all__ = ["TEXT_DEFAULTS", "has_splits", "resolve_data"]

TEXT_DEFAULTS = {"text_column": "text", "label_column": "label", "max_length": 128}
"""How texts are read unless told otherwise (:func:`resolve_data`'s defaults)."""


def has_splits(spec: str) -> bool:
    """Whether the dataset ``spec`` names has splits to choose from: a registered dataset, ``folder:``,
    ``torchvision:`` or ``hf:``; a ``.npz`` file, a table file or ``module:function`` is one set of samples."""
    return spec in DATASETS or spec.startswith(("folder:", "hf:")) or spec[:12].lower() == "torchvision:"


def resolve_data(spec: str, *, split: str = "test", data_dir: str | os.PathLike | None = None,
                 allow_import: bool = True, tokenizer: Any = None, text_column: str = "text",
                 label_column: str = "label", max_length: int = 128,
                 classes: list[str] | None = None) -> tuple[Dataset, dict]:
    """Load the dataset a user named.

    Texts (a CSV / TSV / JSON / JSON-lines / Parquet file, an ``hf:`` set of texts) are tokenised with
    ``tokenizer``; the text options are read for those only.

    Args:
        spec: a dataset name, ``folder:DIR``, ``torchvision:NAME``, a ``.npz`` file, a text file, ``hf:NAME`` or
            ``module:function``.
        split: ``"train"`` or ``"test"``, for named sets.
        data_dir: where named sets are stored.
        allow_import: False for a specification read from a file: a ``module:function`` is then refused, not run.
        tokenizer: a tokenizer, or the model's specification, whose tokenizer (an ``hf:`` model's,
            :func:`layermod.data.hfhub.load_tokenizer`) is loaded only when the data are texts.
        text_column: the column of the texts.
        label_column: the column of their labels.
        max_length: tokens per text.
        classes: the class names a classifier was trained on, in index order: texts whose labels number other
            names are refused.

    Returns:
        (torch Dataset, description dict for the run's config).

    Raises:
        DatasetError: a specification that names no data, or data that cannot be read.
    """
    if spec in DATASETS or spec.startswith("folder:") or spec[:12].lower() == "torchvision:":
        return load_dataset(spec, split=split, data_dir=data_dir), {"dataset": spec, "split": split}
    if spec.endswith(".npz"):
        return as_dataset(load_npz(spec)), {"dataset": spec}
    text = {"text_column": text_column, "label_column": label_column, "max_length": max_length}
    if spec.startswith("hf:"):
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
                given = load_tokenizer(given)
            self._loaded = given
        return self._loaded

    def __call__(self, *args, **kwargs):
        return self._tokenizer()(*args, **kwargs)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._tokenizer(), name)
