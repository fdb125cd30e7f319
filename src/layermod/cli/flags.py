"""The command line's names for what the library's messages call by their API names: ``data_dir`` is
``--data-dir`` here, ``pretrained=True`` is ``--pretrained``. The one table of them; :func:`flag_words` rewrites
a library message with it before :func:`layermod.cli.main` prints it."""

from __future__ import annotations

import re

__all__ = ["FLAGS", "flag_words"]

FLAGS = {
    "address": "--address",
    "curve": "--curve",
    "data_dir": "--data-dir",
    "dataset": "--dataset",
    "hf_task": "--hf-task",
    "in_channels": "--in-channels",
    "label_column": "--label-column",
    "max_length": "--max-length",
    "out": "--out",
    "pool_per_class": "--pool-per-class",
    "pretrained": "--pretrained",
    "resume": "--resume",
    "split": "--split",
    "text_column": "--text-column",
    "weights": "--weights",
}
"""Parameter -> flag. ``NAME=VALUE`` becomes ``FLAG VALUE``, ``NAME=True`` and a ``NAME=`` without a value
``FLAG``; a name with an underscore is rewritten wherever it stands, one without only before ``=``. The names
of the graph and draw settings (``n_per_class``, ...) are left as the configs spell them."""

PHRASES = {
    "PixelSpace(low, high)": "--pixel-range LOW,HIGH",
    "backend=\"ray\"": "--backend ray",
    "keep='all'": "--keep all",
    "method='pca'": "--view-method pca",
    "a model spec (NAME or module:function)": "--model NAME or module:function",
    "the model spec": "--model",
    "build it with num_classes": "build it with --num-classes",
    "the library's arguments as keyword arguments": "the library's arguments with --arch-arg KEY=VALUE",
    "choose another path": "choose another --out",
}
"""Whole phrases of the library's messages and the command line's words for them, rewritten first."""

_NAME = re.compile(r"(?<![\w.\-])(" + "|".join(sorted(FLAGS, key=len, reverse=True)) + r")\b(=True\b|=)?")


def _flag(match: re.Match) -> str:
    name, tail = match.groups()
    if tail is None:
        return FLAGS[name] if "_" in name else match.group(0)
    after = match.string[match.end():match.end() + 1]
    return FLAGS[name] if tail == "=True" or after in ("", " ", ";", ",", ")") else f"{FLAGS[name]} "


def flag_words(message: str) -> str:
    """``message`` with the library's parameter names as the command line's flags."""
    for phrase, words in PHRASES.items():
        message = message.replace(phrase, words)
    return _NAME.sub(_flag, message)
