"""The modularity curve: Q of each layer's kNN graph, over several class-balanced draws of samples.

The decisions behind it: docs/design.md, section layermod.analysis.curve.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from layermod import __version__
from layermod.data.arrays import Data, as_dataset, dataset_labels, gather
from layermod.data.draws import balanced_draws
from layermod.errors import CurveError, FeatureError, GraphError
from layermod.extract.features import feature_size, iter_layer_features, model_device
from layermod.extract.inputs import slice_batch
from layermod.extract.pooling import check_pool, resolve_pool
from layermod.io.devices import check_device
from layermod.io.files import atomic_path, ensure_writable_dir, read_json_file, release_pages, save_png, write_csv
from layermod.io.rundir import CURVE_CSV, CURVE_JSON, CURVE_PNG
from layermod.coerce import bar_disabled, seed_sequence
from layermod.measure.config import (DrawConfig, GraphConfig, MeasureOptions, check_budget, check_null_size,
                                     check_sketch_size, measure_configs)
from layermod.measure.ann import RECALL_ROWS, require_faiss
from layermod.measure.graph import build_graph
from layermod.extract.layers import LayerSpec, layer_items, select_layers, trace_calls
from layermod.measure.modularity import modularity_with_null
from layermod.io.validate import mapping, names, numbers, q_bounds, required, run_config
from layermod.io.table import TableResult
from layermod.analysis.curve_plot import curve_axes, plot_curves

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from typing_extensions import Unpack

__all__ = ["Curve", "modularity_curve", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 2 * 2**30
NULL_STD_FLOOR = 1e-6  # about the rounding level of Q: a null without spread gives a finite z


def _finite_or_none(values: np.ndarray | None) -> list | None:
    if values is None:
        return None
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=float).ravel()]


@dataclass(frozen=True, repr=False)
class Curve(TableResult):
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
    _: KW_ONLY
    config: dict = field(default_factory=dict)
    null_mean: np.ndarray | None = None
    null_std: np.ndarray | None = None
    z: np.ndarray | None = None

    def __post_init__(self) -> None:
        values = np.atleast_2d(np.asarray(self.values, dtype=np.float64))
        if values.shape[1] != len(self.layers):
            raise CurveError(f"values has {values.shape[1]} columns for {len(self.layers)} layers; pass one column "
                             "per layer")
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
        """JSON-ready dict with keys layers, mean, std, values, config (and null_mean, null_std, z).

        Returns:
            ``{"layers": [L names], "mean": [L], "std": [L], "values": [draws][L], "config": {...}}``, undefined
                numbers as null.
        """
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
        """Inverse of :meth:`to_dict` (mean and std are recomputed from values), for data read from a file.

        Checked as :mod:`layermod.io.validate` says: 1 to ``MAX_ITEMS`` layer names; values (draws, L) within
        modularity's range for the config's resolution, none missing (modularity is refused, never NaN, so a
        null or NaN Q is a damaged file; its mean would be drawn as "nan"); null_mean, null_std (>= 0) and z
        (L,) all three or none.

        Args:
            data: a dict as :meth:`to_dict` writes it.

        Returns:
            The :class:`Curve`.

        Raises:
            ValueError: naming the first problem.
        """
        data = mapping(data, "the curve")
        config = run_config(data.get("config", {}))
        layers = names(required(data, "layers"), "layers")
        low, high = q_bounds(config)
        values = numbers(required(data, "values"), "values", (None, len(layers)), low=low, high=high)
        null = [key for key in ("null_mean", "null_std", "z") if data.get(key) is not None]
        if not null:
            return cls(layers, values, config=config)
        if len(null) < 3:
            raise ValueError(f"{', '.join(null)} without the rest of null_mean, null_std and z")
        per_layer = (len(layers),)
        null_mean = numbers(data["null_mean"], "null_mean", per_layer, low=low, high=high, missing=True)
        null_std = numbers(data["null_std"], "null_std", per_layer, low=0, high=high - low, missing=True)
        z = numbers(data["z"], "z", per_layer, missing=True)
        return cls(layers, values, config=config, null_mean=null_mean, null_std=null_std, z=z)

    def to_json(self) -> str:
        """The curve as indented JSON text.

        Returns:
            :meth:`to_dict` as a JSON string.
        """
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Curve":
        """Read a ``curve.json`` file (or the ``curve.json`` inside a run directory).

        Args:
            path: the file or the run directory.

        Returns:
            The :class:`Curve`, checked by :meth:`from_dict`.

        Raises:
            ReportError: the file is missing, unreadable or malformed (one line naming it).
        """
        return read_json_file(path, CURVE_JSON, cls.from_dict, "a curve")

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``curve.png``, ``curve.csv`` and, last, ``curve.json`` into ``path`` (created).

        Each file is whole or not at all, so a ``curve.json`` present means the run's files are complete.

        Args:
            path: the run directory.

        Returns:
            The directory.

        Raises:
            OutputError: ``path`` cannot be created or written.
        """
        out = ensure_writable_dir(path)
        ax = self.plot(ax=curve_axes(len(self.layers)))
        ax.figure.tight_layout()
        save_png(ax.figure, out / CURVE_PNG)
        extra = ["null_mean", "null_std", "z"] if self.z is not None else []
        draws = [f"draw_{r}" for r in range(len(self.values))]
        header = ["index", "layer", "mean", "std", "increment", *extra, *draws]
        write_csv(out / CURVE_CSV, header, (
            [i, name, self.mean[i], self.std[i], self.increments[i],
             *([self.null_mean[i], self.null_std[i], self.z[i]] if extra else []), *self.values[:, i]]
            for i, name in enumerate(self.layers)))
        with atomic_path(out / CURVE_JSON) as tmp:
            tmp.write_text(self.to_json())
        return out

    def plot(self, *, ax: Axes | None = None, label: str | None = None) -> Axes:
        """Draw mean Q with a +-1 std band against layer names.

        Args:
            ax: the Axes to draw into (default: a new figure's).
            label: the legend label of the line (default: none).

        Returns:
            The Axes.
        """
        return plot_curves([self], ax=ax, labels=[label] if label else None)

    def _table(self) -> tuple[list[str], list[list]]:
        null = self.z is not None
        columns = ["layer", "mean", "std", "increment", *(["null_mean", "z"] if null else [])]
        rows = [[name, float(self.mean[i]), float(self.std[i]), float(self.increments[i]),
                 *([float(self.null_mean[i]), float(self.z[i])] if null else [])]
                for i, name in enumerate(self.layers)]
        return columns, rows

    def with_config(self, **entries: object) -> Curve:
        """A copy whose config has ``entries`` added (e.g. how the model and data were specified).

        Returns:
            The new :class:`Curve`.
        """
        return replace(self, config={**self.config, **entries})


def modularity_curve(
    model: nn.Module,
    data: Data,
    *,
    layers: LayerSpec = "auto",
    graph: GraphConfig | None = None,
    draws: DrawConfig | None = None,
    batch_size: int = 256,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: bool | str = "auto",
    visit: Callable[[str, torch.Tensor, list[np.ndarray]], None] | None = None,
    pool: str = "auto",
    **options: Unpack[MeasureOptions],
) -> Curve:
    """Modularity curve of ``model`` on class-balanced draws from ``data``.

    Args:
        model: any ``nn.Module``; evaluated in eval mode without gradients on its own device.
        data: ``(X, y)`` tensors/arrays with X (N, ...) (or a dict of them, e.g. ``input_ids`` and
            ``attention_mask``) and y (N,); a map-style torch ``Dataset`` of ``(x, y)`` or of dicts with
            ``labels`` / ``label``; or a ``DataLoader`` of such batches (read once, keeping what the draws need).
        layers: ``"auto"``, names, glob patterns or indices, a comma-separated string of them like the CLI's
            ``--layers``, or a list (see :mod:`layermod.extract.layers`).
        graph: the kNN graph and the modularity's resolution (default :class:`GraphConfig`'s).
        draws: the draws and the null (default :class:`DrawConfig`'s). Its seed (any integer, see
            :mod:`layermod.coerce`) decides the draws, the null's shuffles and torch's random numbers during the
            forward passes, so the same seed gives the same curve.
        batch_size: samples per forward pass.
        max_bytes: memory budget of the measurement: half holds a pass's features (layers are extracted in
            groups that fit, a larger layer goes to disk), half a draw's copy and the search's blocks. Below
            the smallest block (3 x 4 x D bytes of the widest layer) or above the machine's memory: GraphError.
        progress: progress bars: ``"auto"`` when stderr is a terminal or in a notebook, True in a terminal,
            False never.
        visit: called as ``visit(name, features, positions)`` for every layer, with its features (M, D) for
            the union of the draws (on the model's device; a tensor over a file on disk for a layer larger than
            half of ``max_bytes``) and ``positions``, one index array into those M rows per draw: other
            per-layer statistics on the same samples without a second pass over the model.
        pool: ``"auto"``, ``"cls"``, ``"mean"``, ``"last"`` or ``"flatten"``: how a 3-D token output becomes
            one vector per sample (see :mod:`layermod.extract.pooling`; 4-D and 2-D outputs are flattened).
        options: fields of either config as keywords (``k=5, n_per_class=30``, ...), see
            :func:`layermod.measure.config.measure_configs`.

    Returns:
        A :class:`Curve` with ``values`` of shape (repeats, L); its config holds both configs' fields.

    Raises:
        GraphError, LabelError, DatasetError: invalid options or data, before any forward pass.
        LayerError, ModelError: layers that cannot be chosen, a model that fails on the data.
        FeatureError, GraphError: a layer whose features or graph cannot be measured (the message names it).
    """
    graph, draws = measure_configs(graph=graph, draws=draws, **options)
    dataset, labels, samples = _checked_draws(data, graph, draws, pool=pool, max_bytes=max_bytes)
    # streams of one seed: the draws use the root (balanced_draws(seed)), draw r's shuffles child r, torch the last
    streams = seed_sequence(draws.seed, GraphError).spawn(draws.repeats + 1)
    union = np.unique(np.concatenate(samples))
    inputs, targets = gather(dataset, union)
    positions = [np.searchsorted(union, draw) for draw in samples]
    device = check_device(model_device(model), what="the model's device")
    with _seeded_torch(int(streams[-1].generate_state(1, np.uint64)[0]), device):
        calls = trace_calls(model, slice_batch(inputs, 0, stop=2))
        names = select_layers(model, layers, calls)
        resolved = resolve_pool(model, pool, inputs)
        check_null_size(draws.repeats, len(names), draws.null_permutations)
        check_budget(max_bytes, max(feature_size(calls[name], resolved) for name in names))
        # half the budget holds a pass's features, the other half a draw's copy and the search
        features = iter_layer_features(model, inputs, names, calls, max_bytes // 2, batch_size=batch_size,
                                       progress=progress, pool=resolved, memmap=True, on_device=True)
        measured = _measure_layers(features, positions, targets, streams, count=len(names), graph=graph, draws=draws,
                                   device=device, max_bytes=max_bytes, visit=visit, progress=progress)
    config = {"layers": layers if isinstance(layers, str) else layer_items(layers), "resolved_layers": names,
              **graph.to_dict(), **draws.to_dict(), "pool": pool, "resolved_pool": resolved,
              "n_classes": int(len(np.unique(labels))), "samples_per_draw": len(samples[0]),
              "disjoint_draws": len(union) == len(samples[0]) * draws.repeats}
    return _curve(names, *measured, config=config, graph=graph)


def _checked_draws(data: Data, graph: GraphConfig, draws: DrawConfig, *, pool: str,
                   max_bytes: int) -> tuple[Dataset, np.ndarray, list[np.ndarray]]:
    """(dataset, labels (N,), draws of sample indices), once ``pool``, ``k``, the sketch and the kNN search are
    known to suit them."""
    check_pool(pool)
    dataset = as_dataset(data, per_class=draws.n_per_class * draws.repeats)
    labels = dataset_labels(dataset)
    samples = balanced_draws(labels, n_per_class=draws.n_per_class, repeats=draws.repeats, seed=draws.seed)
    draw_size = len(samples[0])
    if not graph.k < draw_size:
        raise GraphError(f"k={graph.k} needs 1 <= k < {draw_size} samples per draw; lower k or raise n_per_class")
    check_sketch_size(graph.sketch_dim, draw_size, max_bytes)
    if graph.knn != "exact":
        require_faiss()
    return dataset, labels, samples


def _measure_layers(layer_features: Iterator[tuple[str, torch.Tensor | np.ndarray]], positions: list[np.ndarray],
                    targets: np.ndarray, streams: list[np.random.SeedSequence], *, count: int, graph: GraphConfig,
                    draws: DrawConfig, device: torch.device, max_bytes: int,
                    visit: Callable[[str, torch.Tensor, list[np.ndarray]], None] | None,
                    progress: bool | str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Modularity (repeats, L), its null (repeats, L, permutations) and the kNN recall (repeats, L; NaN when
    exact) of the ``count`` layers' features on every draw."""
    repeats = len(positions)
    values, recalls = np.zeros((repeats, count)), np.full((repeats, count), np.nan)
    null = np.zeros((repeats, count, draws.null_permutations))
    bar = tqdm(total=count * repeats, desc="layers x draws", disable=bar_disabled(progress))
    for col, (name, features) in enumerate(layer_features):
        if visit is not None:
            visit(name, torch.from_numpy(features) if isinstance(features, np.ndarray) else features, positions)
        for row, pos in enumerate(positions):
            try:
                with _draw_features(features, pos) as chosen:
                    search_bytes = max_bytes // 2 - (chosen.nbytes if chosen is not features and
                                                     isinstance(chosen, torch.Tensor) else 0)
                    adjacency, found = build_graph(chosen, graph=graph, seed=draws.seed, device=device,
                                                   max_bytes=max(search_bytes, 3 * chosen.itemsize * chosen.shape[1]))
                if found is not None:
                    recalls[row, col] = found
                values[row, col], null[row, col] = modularity_with_null(
                    adjacency, targets[pos], permutations=draws.null_permutations, seed=streams[row],
                    resolution=graph.resolution)
            except (FeatureError, GraphError) as err:
                raise type(err)(f"layer {name!r}: {err}") from None
            bar.update()
    bar.close()
    return values, null, recalls


def _curve(names: list[str], values: np.ndarray, null: np.ndarray, recalls: np.ndarray, *, config: dict,
           graph: GraphConfig) -> Curve:
    """The :class:`Curve` of the measured ``values`` (repeats, L), with the null's z-scores when there is one."""
    config = {**config, "layermod_version": __version__, "torch_version": torch.__version__}
    if graph.knn != "exact" or graph.sketch_dim is not None:
        config.update(knn_recall=[float(r) for r in recalls.mean(axis=0)], knn_recall_rows=RECALL_ROWS)
    if not null.shape[2]:
        return Curve(names, values, config=config)
    spread = np.maximum(null.std(axis=2), NULL_STD_FLOOR)
    z = ((values - null.mean(axis=2)) / spread).mean(axis=0)
    return Curve(names, values, config=config, null_mean=null.mean(axis=(0, 2)), null_std=null.std(axis=(0, 2)), z=z)


@contextmanager
def _draw_features(features: torch.Tensor | np.memmap, positions: np.ndarray) -> Iterator[torch.Tensor | np.memmap]:
    """The rows ``positions`` of ``features`` (M, D): ``features`` itself when the draw is all of its rows in
    order, else a copy in memory (a tensor) or on disk (a memmap: deleted after, written in blocks)."""
    if np.array_equal(positions, np.arange(len(features))):
        yield features
        return
    if not isinstance(features, np.memmap):
        yield features[positions]
        return
    step = max(1, 2**24 // max(features.shape[1], 1))
    with tempfile.TemporaryDirectory(prefix="layermod-draw-") as folder:
        chosen = np.lib.format.open_memmap(os.path.join(folder, "draw.npy"), mode="w+", dtype=features.dtype,
                                           shape=(len(positions), features.shape[1]))
        for start in range(0, len(positions), step):
            chosen[start:start + step] = features[positions[start:start + step]]
            release_pages(chosen)
            release_pages(features)
        chosen.flush()
        yield chosen
        del chosen


@contextmanager
def _seeded_torch(seed: int, device: torch.device) -> Iterator[None]:
    """Torch's CPU generator (and the CUDA generator of ``device``) seeded with ``seed`` inside the block; the
    caller's generator states are restored afterwards."""
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        for gpu in cuda:
            with torch.cuda.device(gpu):
                torch.cuda.manual_seed(seed)
        yield
