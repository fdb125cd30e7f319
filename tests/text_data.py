"""Text data for tests, made here: sentences of a small grammar with three classes, a word-level tokenizer over
its words (built by ``hf_models.save_tokenizer``), and the same rows written as CSV, JSON-lines, JSON, Parquet and a datasets folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

CLASSES = ("animals", "food", "weather")
_WORDS = {
    "animals": (["the", "a"], ["cat", "dog", "horse", "bird"], ["runs", "sleeps", "barks", "flies"]),
    "food": (["the", "some"], ["bread", "soup", "apple", "cheese"], ["tastes", "smells", "cooks", "bakes"]),
    "weather": (["the", "this"], ["rain", "wind", "snow", "sun"], ["falls", "blows", "melts", "shines"]),
}
_ADVERBS = ["slowly", "quickly", "today", "again", "well"]


def sentences(n_per_class: int = 20, seed: int = 0) -> tuple[list[str], list[str]]:
    """``3 * n_per_class`` sentences and their class names, classes interleaved; lengths 3 to 6 words."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n_per_class):
        for name in CLASSES:
            det, noun, verb = _WORDS[name]
            words = [str(rng.choice(det)), str(rng.choice(noun)), str(rng.choice(verb))]
            words += [str(w) for w in rng.choice(_ADVERBS, size=int(rng.integers(0, 4)))]
            texts.append(" ".join(words))
            labels.append(name)
    return texts, labels


def words() -> tuple[str, ...]:
    """Every word of the grammar, sorted."""
    return tuple(sorted({w for parts in _WORDS.values() for group in parts for w in group} | set(_ADVERBS)))


def vocabulary() -> list[str]:
    """The tokenizer's tokens in id order: the special ones of ``hf_models``, then :func:`words`."""
    from hf_models import SPECIAL

    return [*SPECIAL, *words()]


def word_tokenizer(cls_sep: bool = False):
    """The tests' fast tokenizer (``hf_models.save_tokenizer``: WordLevel + whitespace in
    PreTrainedTokenizerFast, [PAD] id 0) over the grammar's words; ``cls_sep`` adds [CLS] ... [SEP]."""
    import tempfile

    from hf_models import save_tokenizer

    with tempfile.TemporaryDirectory() as folder:
        return save_tokenizer(folder, words=words(), cls_sep=cls_sep)


def write_csv(path: Path, texts, labels, text_column="text", label_column="label") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([text_column, label_column])
        writer.writerows(zip(texts, labels))
    return path


def write_jsonl(path: Path, texts, labels) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels)),
                    encoding="utf-8")
    return path


def write_parquet(path: Path, texts, labels) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": list(texts), "label": list(labels)}), path)
    return path


def write_hf_folder(path: Path, texts, labels, class_names=None) -> Path:
    """A ``save_to_disk`` DatasetDict with ``train`` and ``test`` (the same rows), labels a ClassLabel when
    ``class_names`` are given."""
    import datasets

    features = None
    if class_names is not None:
        features = datasets.Features({"text": datasets.Value("string"),
                                      "label": datasets.ClassLabel(names=list(class_names))})
    data = datasets.Dataset.from_dict({"text": list(texts), "label": list(labels)}, features=features)
    datasets.DatasetDict({"train": data, "test": data}).save_to_disk(str(path))
    return path
