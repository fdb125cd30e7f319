"""The accuracy of a checkpoint on a dataset (``layermod eval --out DIR``), written as ``eval.json``.

Decisions, on purpose:

* **Counts, not only a rate.** An :class:`Evaluation` keeps the number of samples ``n`` and of correct
  predictions ``correct`` beside ``accuracy``; a file whose accuracy is not ``correct / n`` (up to rounding) is
  refused, so a number edited by hand cannot pass for a measured one.
* **Where it came from.** The weights, the architecture and its arguments, the checkpoint's epoch, the dataset,
  split and data directory are recorded as given; any of them may be unknown (null). They are names and
  numbers only: nothing read back from the file is imported or called.
* **No figure.** Three numbers are shown as text; there is nothing to plot.
* **The checkpoint's own data.** :func:`evaluate_checkpoint` evaluates on the dataset given, else on the one
  the sidecar names (its held-out ``test_dataset`` before its ``dataset``, in the sidecar's data directory); a
  dataset read from the sidecar may be a registered dataset or a file, never ``module:function``. Texts are read
  as the sidecar records (:func:`~layermod.models.spec.text_options`: the tokenizer, columns, length and classes).
"""

from __future__ import annotations

import json
import os
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

from torch import nn

from layermod.errors import DatasetError
from layermod.io.files import atomic_path, ensure_writable_dir, read_json_file
from layermod.io.rundir import EVAL_JSON
from layermod.io.validate import mapping, number, required, text
from layermod.models.commit import sidecar_path
from layermod.data.spec import resolve_data
from layermod.models.spec import text_options
from layermod.training.train import check_model_fits, evaluate

__all__ = ["Evaluation", "evaluate_checkpoint"]

_ROUNDING = 1e-9  # of accuracy against correct / n


@dataclass(frozen=True)
class Evaluation:
    """The accuracy of a model on a dataset.

    Attributes:
        accuracy: ``correct / n``, in [0, 1].
        correct: samples predicted correctly, ``0 <= correct <= n``.
        n: samples evaluated, >= 1.
        weights: the checkpoint evaluated (its path as given).
        arch, arch_args: the architecture the checkpoint's sidecar names, and its arguments.
        epoch: the epoch the checkpoint was saved at.
        dataset, split, data_dir: the data evaluated on, as specified.
    """

    accuracy: float
    correct: int
    n: int
    _: KW_ONLY
    weights: str | None = None
    arch: str | None = None
    arch_args: dict | None = None
    epoch: int | None = None
    dataset: str | None = None
    split: str | None = None
    data_dir: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready dict: weights, arch, arch_args, epoch, dataset, split, data_dir, accuracy, correct, n."""
        return {"weights": self.weights, "arch": self.arch, "arch_args": self.arch_args, "epoch": self.epoch,
                "dataset": self.dataset, "split": self.split, "data_dir": self.data_dir,
                "accuracy": self.accuracy, "correct": self.correct, "n": self.n}

    @classmethod
    def from_dict(cls, data: object) -> Evaluation:
        """Inverse of :meth:`to_dict`, for data read from a file: accuracy in [0, 1] equal to ``correct / n`` of
        integers ``0 <= correct <= n``, ``n >= 1``; the names strings or null, arch_args an object or null, the
        epoch an integer >= 0 or null. Raises ValueError naming the first problem."""
        result = mapping(data, "the evaluation")
        accuracy = number(required(result, "accuracy"), "accuracy", low=0, high=1)
        correct = number(required(result, "correct"), "correct", low=0, integer=True)
        n = number(required(result, "n"), "n", low=1, integer=True)
        if correct > n or abs(accuracy - correct / n) > _ROUNDING:
            raise ValueError(f"accuracy {accuracy:g} with {correct} correct of {n} samples cannot be")
        given = {key: result.get(key) for key in ("weights", "arch", "dataset", "split", "data_dir")}
        for key, value in given.items():
            if value is not None:
                text(value, key)
        arch_args = result.get("arch_args")
        if arch_args is not None:
            mapping(arch_args, "arch_args")
        epoch = result.get("epoch")
        if epoch is not None:
            number(epoch, "epoch", low=0, integer=True)
        return cls(accuracy, correct, n, arch_args=arch_args, epoch=epoch, **given)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Evaluation:
        """Read ``eval.json`` (or the one inside a run directory); a one-line
        :class:`~layermod.errors.ReportError` naming the file when it cannot be read."""
        return read_json_file(path, EVAL_JSON, cls.from_dict, "an evaluation")

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``eval.json`` into ``path`` (created), whole or not at all; returns the directory."""
        out = ensure_writable_dir(path)
        with atomic_path(out / EVAL_JSON) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return out


def evaluate_checkpoint(
    model: nn.Module,
    meta: dict,
    weights: str | os.PathLike,
    *,
    dataset: str | None = None,
    split: str = "test",
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 512,
    text: dict | None = None,
) -> Evaluation:
    """The accuracy of a checkpoint's ``model`` (with its sidecar ``meta``, read from ``weights``) on
    ``dataset``'s ``split``, by default on the data the sidecar names (see the module doc); ``text``: the text
    keywords of :func:`~layermod.data.spec.resolve_data` (default: the sidecar's).

    Raises:
        DatasetError: no dataset given and none in the sidecar, or data that cannot be loaded.
        TrainError: a model whose outputs do not fit the data's labels.
    """
    spec = dataset
    if spec is None:
        spec = meta.get("test_dataset") or meta.get("dataset")
        if not isinstance(spec, str) or not spec:
            raise DatasetError(f"the sidecar of {weights} names no dataset; pass dataset=NAME")
        data_dir = data_dir if data_dir is not None else meta.get("data_dir")
    if text is None:
        text = text_options(meta, sidecar_path(weights))
    data, description = resolve_data(spec, split=split, data_dir=data_dir, allow_import=dataset is not None, **text)
    check_model_fits(model, data, what=spec)
    accuracy = evaluate(model, data, batch_size=batch_size)
    n = len(data)
    return Evaluation(accuracy, round(accuracy * n), n, weights=str(weights), arch=meta.get("arch"),
                      arch_args=meta.get("arch_args"), epoch=meta.get("epoch"), dataset=spec,
                      split=description.get("split"), data_dir=None if data_dir is None else str(data_dir))
