"""The modularity curve of a fixed probe set, measured during training by any training loop.

The decisions behind it: docs/design.md, section layermod.training.tracker.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from layermod.analysis.curve import Curve, modularity_curve
from layermod.analysis.dynamics import Dynamics, TrackConfig
from layermod.data.arrays import Data, as_dataset, dataset_labels, gather
from layermod.data.batches import take
from layermod.data.draws import balanced_draws
from layermod.errors import TrainError
from layermod.extract.modes import evaluating

__all__ = ["SCALAR_PREFIX", "CurveTracker", "lazy_class"]

SCALAR_PREFIX = "modularity/"


class CurveTracker:
    """The curve of a fixed probe, measured at chosen epochs into a :class:`Dynamics` (see docs/design.md).

    Args:
        data: where the probe is drawn from: an ``(X, y)`` pair, a map-style ``Dataset`` of ``(x, y)`` or of
            dicts with ``labels``, or a ``DataLoader`` (read once); usually the held-out split.
        track: how often, which layers, the graph and the draws (default :class:`TrackConfig`'s).
        dataset: the data's name, recorded in the dynamics' config.
        split: the data's split, recorded in the dynamics' config.

    Attributes:
        track: the config.
        probe: the drawn samples, a Dataset indexed as ``data`` (see docs/design.md).
        dynamics: what was measured so far (None before the first measurement).

    Raises:
        TrainError: a bad ``track``.
        DatasetError, LabelError: data the draws cannot be made from.
    """

    def __init__(self, data: Data, *, track: TrackConfig | None = None, dataset: str | None = None,
                 split: str = "test") -> None:
        self.track = track if track is not None else TrackConfig()
        self.track.validate()
        self.probe = _Probe(data, self.track)
        self.dynamics: Dynamics | None = None
        self._source = {"dataset": dataset, "split": split}

    def should_measure(self, epoch: int, *, last_epoch: int | None = None) -> bool:
        """Whether ``epoch`` is measured, and is later than every epoch measured so far.

        Args:
            epoch: the epoch, 0 = before training.
            last_epoch: the run's last epoch (None: not known).

        Returns:
            True when it is to be measured.
        """
        if self.dynamics is not None and epoch <= self.dynamics.epochs[-1]:
            return False
        if last_epoch is None:
            return epoch == 0 or epoch % self.track.every == 0
        return self.track.tracks(epoch, last_epoch)

    def measure(self, model: nn.Module, epoch: int, *, accuracy: float | None = None) -> Curve:
        """Measure ``model``'s curve on the probe and record it as ``epoch``.

        The model's modes and the random generators are left as they were.

        Args:
            model: the network being trained.
            epoch: the epoch, after the last one measured.
            accuracy: the test accuracy, in [0, 1], or None.

        Returns:
            The :class:`Curve`, values (repeats, L).

        Raises:
            TrainError: an accuracy outside [0, 1], or an epoch not after the last one measured.
        """
        if accuracy is not None and (isinstance(accuracy, bool) or not isinstance(accuracy, numbers.Real)
                                     or not 0 <= accuracy <= 1):
            raise TrainError(f"accuracy {accuracy!r} at epoch {epoch} must be a number in [0, 1] or None")
        if self.dynamics is not None and epoch <= self.dynamics.epochs[-1]:
            raise TrainError(f"epoch {epoch} is not after the last measured epoch {self.dynamics.epochs[-1]}; "
                             "measure each epoch once, in order")
        accuracy = None if accuracy is None else float(accuracy)
        layers = self.dynamics.layers if self.dynamics is not None else self.track.layers
        with _observing(model):
            curve = modularity_curve(model, self.probe, layers=layers, graph=self.track.graph,
                                     draws=self.track.draws, batch_size=self.track.batch_size)
        if self.dynamics is None:
            self.dynamics = Dynamics.start(epoch, curve, accuracy, config=self._config(curve))
        else:
            self.dynamics = self.dynamics.record(epoch, curve, accuracy)
        return curve

    def resume(self, dynamics: Dynamics, epoch: int) -> None:
        """Continue ``dynamics`` from ``epoch``: later measurements, saved before an interruption, are dropped.

        Args:
            dynamics: a run's earlier measurements, e.g. loaded from its ``dynamics.json``.
            epoch: the last epoch kept.
        """
        self.dynamics = dynamics.until(epoch)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``dynamics.png`` and ``dynamics.json`` into ``path`` (created), each atomically.

        Args:
            path: the run directory.

        Returns:
            The directory.

        Raises:
            TrainError: nothing measured yet.
            OutputError: ``path`` cannot be created or written.
        """
        if self.dynamics is None:
            raise TrainError("nothing measured yet; call measure before save")
        return self.dynamics.save(path)

    @staticmethod
    def scalars(curve: Curve) -> dict[str, float]:
        """``{"modularity/<layer>": mean Q}`` of ``curve``, in layer order: what a logger records.

        Args:
            curve: a measured curve.

        Returns:
            The scalars, one per layer.
        """
        return {f"{SCALAR_PREFIX}{name}": float(q) for name, q in zip(curve.layers, curve.mean)}

    def _config(self, curve: Curve) -> dict:
        c, track = curve.config, self.track
        return {
            "every": track.every, **track.graph.to_dict(), **track.draws.to_dict(), "layers": c["layers"],
            "n_classes": c["n_classes"], "samples_per_draw": c["samples_per_draw"],
            "disjoint_draws": c["disjoint_draws"], **self._source,
        }


class _Probe(Dataset):
    """The drawn samples of ``data`` kept in memory at their own positions: ``targets`` are all N labels (the
    draws are made from them), ``probe[i]`` is sample ``i`` for a drawn ``i`` (another index is an IndexError)."""

    def __init__(self, data: Data, track: TrackConfig) -> None:
        draws = track.draws
        source = as_dataset(data, per_class=draws.n_per_class * draws.repeats)
        self.targets = torch.from_numpy(dataset_labels(source))
        samples = balanced_draws(self.targets, n_per_class=draws.n_per_class, repeats=draws.repeats, seed=draws.seed)
        self.indices = np.unique(np.concatenate(samples))
        self.inputs, _ = gather(source, self.indices)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        row = int(np.searchsorted(self.indices, i))
        if row == len(self.indices) or self.indices[row] != i:
            raise IndexError(f"sample {i} is not in the probe")
        return take(self.inputs, row), int(self.targets[i])


@contextlib.contextmanager
def _observing(model: nn.Module) -> Iterator[None]:
    """Run the block in eval mode; restore every module's train/eval flag and the Python, NumPy and torch (CPU and
    the model's CUDA devices) random generators after it."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    cuda = sorted({t.device.index or 0 for t in (*model.parameters(), *model.buffers()) if t.device.type == "cuda"})
    try:
        with evaluating(model), torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def lazy_class(namespace: dict[str, Any], name: str, build: Callable[[], type]) -> Callable[[str], type]:
    """A module ``__getattr__`` that builds the class ``name`` with ``build()`` on first access and keeps it in the
    module's ``namespace``: a class that subclasses an optional library's base (Lightning's ``Callback``,
    transformers' ``TrainerCallback``) without importing that library when the module is imported."""

    def getattr_(attribute: str) -> type:
        if attribute != name:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {attribute!r}")
        namespace[name] = cls = build()
        return cls

    return getattr_
