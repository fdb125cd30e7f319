"""Labelled texts, tokenised once: :class:`TokenDataset`, :func:`tokenize_texts` and :func:`load_text_file`.

A sample is ``({"input_ids": LongTensor(T), "attention_mask": LongTensor(T)}, label)``, what a Hugging Face
model's ``forward(input_ids=..., attention_mask=...)`` takes.

Decisions, on purpose:

* **The tokenizer is the model's, passed in.** The data room never loads a model: a tokenizer is passed in, or
  :func:`layermod.data.spec.resolve_data` loads the one saved with an ``hf:`` model (:mod:`layermod.data.hfhub`).
  Any callable that takes a list of strings with ``truncation=True, max_length=T`` and returns ``input_ids`` lists does (a transformers tokenizer).
* **One length per dataset.** Texts are cut to ``max_length`` tokens (special tokens included) and padded to the
  longest of the dataset (at most ``max_length``), on the tokenizer's ``padding_side``, with its pad token (else
  its end-of-text token, else 0; the attention mask is 0 there), so any samples stack.
* **Sizes checked first.** ``max_length`` is 1 .. :data:`MAX_LENGTH`; rows times ``max_length`` at most
  :data:`MAX_TOKENS` (2**27, 2 GiB of ids and mask) before tokenising; each text is bounded by the reader
  (:mod:`layermod.data.tabular`). A tokenizer that fails is one :class:`DatasetError` line.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from layermod.data.tabular import class_indices, read_columns
from layermod.errors import DatasetError, LayermodError, one_line

__all__ = ["MAX_LENGTH", "MAX_TOKENS", "TokenDataset", "check_max_length", "load_text_file", "text_dataset",
           "tokenize_texts"]

MAX_LENGTH = 2**16  # tokens of one sample
MAX_TOKENS = 2**27  # samples x max_length of one dataset
_CHUNK = 1024  # texts tokenised at once


class TokenDataset(Dataset):
    """Tokenised labelled texts.

    Attributes:
        input_ids, attention_mask: (N, T) int64 tensors.
        data: ``{"input_ids": ..., "attention_mask": ...}``, the two as one dict batch of all samples.
        targets: (N,) int64 class indices.
        classes: class names, ``classes[label]`` names ``label``.
        name: dataset name (the file or ``hf:NAME``).
        normalization: ``{}`` (texts are not normalised); kept so every dataset has one.
    """

    def __init__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, targets: torch.Tensor,
                 classes: list[str], name: str) -> None:
        if not (len(input_ids) == len(attention_mask) == len(targets)):
            raise DatasetError(f"{len(input_ids)} token rows, {len(attention_mask)} masks and {len(targets)} labels; "
                               "pass one of each per sample")
        self.input_ids, self.attention_mask, self.targets = input_ids, attention_mask, targets
        self.classes, self.name, self.normalization = list(classes), name, {}

    @property
    def data(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i) -> tuple[dict[str, torch.Tensor], int]:
        return {"input_ids": self.input_ids[i], "attention_mask": self.attention_mask[i]}, int(self.targets[i])

    def __repr__(self) -> str:
        return f"TokenDataset(name={self.name!r}, n={len(self)}, length={self.input_ids.shape[1]})"


def load_text_file(path: str | os.PathLike, tokenizer: Any, *, text_column: str = "text", label_column: str = "label",
                   max_length: int = 128) -> TokenDataset:
    """The texts and labels of a CSV / TSV / JSON / JSON-lines / Parquet file, tokenised with ``tokenizer``.

    Columns, labels and bounds as in :mod:`layermod.data.tabular`; tokenisation as in the module doc.

    Args:
        path: the file.
        tokenizer: a Hugging Face tokenizer.
        text_column: the column of the texts.
        label_column: the column of their labels.
        max_length: tokens per text (longer texts are cut).

    Returns:
        The :class:`TokenDataset`: input_ids and attention_mask (N, T), T <= max_length the longest, labels (N,).

    Raises:
        DatasetError: a file, column, label or tokenizer that fails, or a bad ``max_length``.
    """
    check_max_length(max_length)
    texts, labels = read_columns(path, text_column, label_column)
    return text_dataset(texts, labels, tokenizer, max_length, str(path))


def text_dataset(texts: list[str], labels: list[Any], tokenizer: Any, max_length: int, name: str) -> TokenDataset:
    """A :class:`TokenDataset` of ``texts`` (strings) and ``labels`` (class indices or names)."""
    check_max_length(max_length)
    y, classes = class_indices(labels, name)
    ids, mask = tokenize_texts(texts, tokenizer, max_length, name)
    return TokenDataset(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(y), classes, name)


def check_max_length(max_length: Any) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not 1 <= max_length <= MAX_LENGTH:
        raise DatasetError(f"max_length={max_length!r} is not a whole number of tokens from 1 to {MAX_LENGTH}; "
                           "pass max_length=N")


def tokenize_texts(texts: list[str], tokenizer: Any, max_length: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), both (N, T) int64, of ``texts`` cut to ``max_length`` tokens and padded to the
    longest (see the module doc)."""
    if tokenizer is None or not callable(tokenizer):
        raise DatasetError(f"{where} holds texts, which need the model's tokenizer; use an hf: model "
                           "(hf:NAME) or pass tokenizer=")
    if len(texts) * max_length > MAX_TOKENS:
        raise DatasetError(f"{where} has {len(texts)} texts of up to {max_length} tokens, more than {MAX_TOKENS} "
                           "tokens in all; lower max_length or use fewer rows")
    rows: list[list[int]] = []
    for start in range(0, len(texts), _CHUNK):
        chunk = texts[start:start + _CHUNK]
        try:
            encoded = tokenizer(chunk, truncation=True, max_length=max_length, padding=False)
            ids = encoded["input_ids"]
        except LayermodError:
            raise
        except Exception as e:  # noqa: BLE001  (a tokenizer may raise anything)
            raise DatasetError(f"the tokenizer failed on {where} ({type(e).__name__}: {one_line(e)}); "
                               "check the texts and the tokenizer") from None
        if len(ids) != len(chunk):
            raise DatasetError(f"the tokenizer returned {len(ids)} rows for {len(chunk)} texts of {where}")
        rows.extend([int(t) for t in row[:max_length]] for row in ids)
    length = max((len(row) for row in rows), default=0)
    if length == 0:
        raise DatasetError(f"every text of {where} is empty after tokenising; give texts with words in them")
    pad = _pad_id(tokenizer)
    ids = np.full((len(rows), length), pad, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    for i, row in enumerate(rows):
        span = slice(length - len(row), length) if left else slice(0, len(row))
        ids[i, span] = row
        mask[i, span] = 1
    return ids, mask


def _pad_id(tokenizer: Any) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 0
