"""The modularity curve: Q of each layer's kNN graph, over several class-balanced draws of samples.

:func:`modularity_curve` draws ``repeats`` class-balanced sets of ``n_per_class`` samples per class (disjoint
when the data allow, see :func:`layermod.data.balanced_draws`), runs the union of those samples through the
model once per group of layers, and for every layer and draw builds the kNN graph and measures its modularity
with the true classes as communities. The result is a :class:`Curve`.

Optionally, a label-permutation null: for every layer and draw, Q of the same graph under
``null_permutations`` shuffles of the labels (the Q one would see by chance), summarised per layer as the
null's mean and standard deviation and a z-score ``(Q - null mean) / null std`` averaged over draws.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .data import as_dataset, balanced_draws, dataset_labels, gather
from .errors import FeatureError, GraphError
from .features import iter_layer_features, model_device
from .fileio import read_json_file
from .graph import Metric, Symmetrize, knn_graph
from .layers import LayerSpec, select_layers, trace_calls
from .modularity import modularity_with_null

__all__ = ["Curve", "modularity_curve", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 2 * 2**30


def _layermod_version() -> str:
    try:
        return version("layermod")
    except PackageNotFoundError:
        return "unknown"


def _finite_or_none(values: np.ndarray | None) -> list | None:
    if values is None:
        return None
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=float).ravel()]


@dataclass(frozen=True)
class Curve:
    """Modularity per layer and draw.

    Attributes:
        layers: (L,) layer names in measurement order.
        values: (repeats, L) Q of every draw and layer.
        config: everything needed to rerun the measurement (model, data, k, draws, seed, ...).
        null_mean, null_std: (L,) mean and std of Q under shuffled labels, or None without a null.
        z: (L,) z-score of Q against that null, averaged over draws, or None.
    """

    layers: list[str]
    values: np.ndarray
    config: dict = field(default_factory=dict)
    null_mean: np.ndarray | None = None
    null_std: np.ndarray | None = None
    z: np.ndarray | None = None

    def __post_init__(self) -> None:
        values = np.atleast_2d(np.asarray(self.values, dtype=np.float64))
        if values.shape[1] != len(self.layers):
            raise ValueError(f"values has {values.shape[1]} columns for {len(self.layers)} layers")
        object.__setattr__(self, "values", values)

    @property
    def mean(self) -> np.ndarray:
        """(L,) mean Q over draws."""
        return self.values.mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        """(L,) sample standard deviation of Q over draws (ddof=1; zeros for a single draw)."""
        if len(self.values) < 2:
            return np.zeros(len(self.layers))
        return self.values.std(axis=0, ddof=1)

    @property
    def increments(self) -> np.ndarray:
        """(L,) change of mean Q from the previous layer (the first layer's is its own Q)."""
        return np.diff(self.mean, prepend=0.0)

    def to_dict(self) -> dict:
        """JSON-ready dict with keys layers, mean, std, values, config (and null_mean, null_std, z)."""
        out = {
            "layers": list(self.layers),
            "mean": _finite_or_none(self.mean),
            "std": _finite_or_none(self.std),
            "values": [_finite_or_none(row) for row in self.values],
            "config": self.config,
        }
        if self.z is not None:
            out.update(null_mean=_finite_or_none(self.null_mean), null_std=_finite_or_none(self.null_std),
                       z=_finite_or_none(self.z))
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Curve":
        """Inverse of :meth:`to_dict` (mean and std are recomputed from values)."""
        def arr(key: str) -> np.ndarray | None:
            return None if data.get(key) is None else np.array(data[key], dtype=float)

        return cls(list(data["layers"]), np.array(data["values"], dtype=float), dict(data.get("config", {})),
                   arr("null_mean"), arr("null_std"), arr("z"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Curve":
        """Read a ``curve.json`` file (or the ``curve.json`` inside a run directory)."""
        return read_json_file(path, "curve.json", cls.from_dict, "a curve")

    def plot(self, path: str | os.PathLike | None = None, ax=None, label: str | None = None):
        """Draw mean Q with a +-1 std band against layer names; save as PNG when ``path`` is given."""
        from .report import plot_curves

        return plot_curves([self], path=path, ax=ax, labels=[label] if label else None)

    def with_config(self, **entries) -> "Curve":
        """A copy whose config has ``entries`` added (e.g. how the model and data were specified)."""
        return replace(self, config={**self.config, **entries})


def modularity_curve(
    model: nn.Module,
    data,
    layers: LayerSpec = "auto",
    k: int = 3,
    n_per_class: int = 50,
    repeats: int = 5,
    seed: int = 0,
    metric: Metric = "cosine",
    symmetrize: Symmetrize = "mean",
    weighted: bool = True,
    resolution: float = 1.0,
    null_permutations: int = 0,
    batch_size: int = 256,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: bool = False,
    visit: Callable[[str, torch.Tensor, list[np.ndarray]], None] | None = None,
) -> Curve:
    """Modularity curve of ``model`` on class-balanced draws from ``data``.

    Args:
        model: any ``nn.Module``; evaluated in eval mode without gradients on its own device.
        data: ``(X, y)`` tensors/arrays with X (N, ...) and y (N,), or a torch ``Dataset`` of ``(x, y)``.
        layers: ``"auto"``, names, glob patterns or indices (see :mod:`layermod.layers`).
        k, metric, symmetrize, weighted: the kNN graph (see :func:`layermod.knn_graph`).
        n_per_class: samples of each class in one draw.
        repeats: number of draws.
        seed: seed of the draws and of the null's shuffles.
        resolution: modularity resolution (1 = Newman).
        null_permutations: label shuffles per layer and draw for the chance baseline (0 = none).
        batch_size: samples per forward pass.
        max_bytes: memory budget for the features held at once; layers are extracted in groups that fit.
        progress: show progress bars (when stderr is a terminal).
        visit: called as ``visit(name, features, positions)`` for every layer, with its features (M, D) for
            the union of the draws and ``positions``, one index array into those M rows per draw: other
            per-layer statistics on the same samples without a second pass over the model.

    Returns:
        A :class:`Curve` with ``values`` of shape (repeats, L).
    """
    dataset = as_dataset(data)
    labels = dataset_labels(dataset)
    draws = balanced_draws(labels, n_per_class, repeats, seed)
    draw_size = len(draws[0])
    if not isinstance(k, (int, np.integer)) or not 1 <= k < draw_size:
        raise GraphError(f"k={k} needs 1 <= k < {draw_size} samples per draw; lower k or raise n_per_class")
    union = np.unique(np.concatenate(draws))
    inputs, targets = gather(dataset, union)
    positions = [np.searchsorted(union, draw) for draw in draws]

    calls = trace_calls(model, inputs[:2].to(model_device(model)))
    names = select_layers(model, layers, calls)
    values = np.zeros((repeats, len(names)))
    null = np.zeros((repeats, len(names), null_permutations))
    steps = tqdm(total=len(names) * repeats, desc="layers x draws", disable=None if progress else True)
    layer_features = iter_layer_features(model, inputs, names, calls, max_bytes, batch_size, progress)
    for col, (name, features) in enumerate(layer_features):
        if visit is not None:
            visit(name, features, positions)
        for row, pos in enumerate(positions):
            y = targets[pos]
            try:
                adjacency = knn_graph(features[pos], k=k, metric=metric, symmetrize=symmetrize, weighted=weighted)
            except FeatureError as err:
                raise FeatureError(f"layer {name!r}: {err}") from None
            try:
                values[row, col], null[row, col] = modularity_with_null(adjacency, y, null_permutations, seed + row,
                                                                        resolution)
            except GraphError as err:
                raise GraphError(f"layer {name!r}: {err}") from None
            steps.update()
    steps.close()

    config = {
        "layers": layers if isinstance(layers, (str, int)) else list(layers),
        "resolved_layers": names,
        "k": int(k),
        "metric": metric,
        "symmetrize": symmetrize,
        "weighted": weighted,
        "resolution": resolution,
        "n_per_class": n_per_class,
        "repeats": repeats,
        "seed": seed,
        "null_permutations": null_permutations,
        "n_classes": int(len(np.unique(labels))),
        "samples_per_draw": draw_size,
        "disjoint_draws": len(union) == draw_size * repeats,
        "layermod_version": _layermod_version(),
        "torch_version": torch.__version__,
    }
    if not null_permutations:
        return Curve(names, values, config)
    null_mean = null.mean(axis=(0, 2))
    null_std = null.std(axis=(0, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = ((values - null.mean(axis=2)) / null.std(axis=2)).mean(axis=0)
    return Curve(names, values, config, null_mean, null_std, z)
