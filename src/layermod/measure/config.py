"""The two settings of every measurement: how a layer's kNN graph is built and scored (:class:`GraphConfig`), and
on which samples it is measured (:class:`DrawConfig`).

    graph = GraphConfig(k=3, metric="cosine", symmetrize="mean", weighted=True, resolution=1.0)
    draws = DrawConfig(n_per_class=50, repeats=5, seed=0, null_permutations=0)
    curve = modularity_curve(model, data, graph=graph, draws=draws)   # or modularity_curve(model, data, k=3, ...)

The decisions behind it: docs/design.md, section layermod.measure.config.
"""

from __future__ import annotations

import numbers
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, ClassVar, Literal, TypedDict, TypeVar, get_args

from layermod.coerce import MAX_DRAWN, check_seed
from layermod.errors import GraphError, LabelError, LayermodError

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "METRICS",
    "SYMMETRIZE",
    "DrawConfig",
    "GraphConfig",
    "KNN",
    "Knn",
    "PRECISIONS",
    "Precision",
    "GraphOptions",
    "MeasureOptions",
    "Metric",
    "Symmetrize",
    "MAX_NULL_VALUES",
    "MAX_RESOLUTION",
    "MAX_SKETCH_DIM",
    "check_budget",
    "check_null_size",
    "check_options",
    "check_search",
    "check_permutations",
    "check_resolution",
    "check_sketch_size",
    "graph_config",
    "measure_configs",
]

Metric = Literal["cosine", "euclidean"]
Symmetrize = Literal["mean", "union", "mutual"]
Knn = Literal["exact", "ivf", "hnsw"]
Precision = Literal["float32", "tf32", "bf16"]
METRICS: tuple[str, ...] = get_args(Metric)
SYMMETRIZE: tuple[str, ...] = get_args(Symmetrize)
KNN: tuple[str, ...] = get_args(Knn)
PRECISIONS: tuple[str, ...] = get_args(Precision)
MAX_NULL_VALUES = 2**27  # 1 GiB of float64
MAX_SKETCH_DIM = 2**14
MAX_RESOLUTION = 1e4
_SKETCH_BYTES = 4  # float32


def _numpy_bool(value: object) -> bool:
    """Whether ``value`` is a numpy bool (numpy is not imported for this: without it, none can exist)."""
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.bool_)


def _integer(value: object, name: str, error: type[LayermodError], low: int) -> int:
    """``value`` as an int; ``error`` unless it is an integer (not a bool, not a float) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise error(f"{name}={value!r} must be an integer >= {low}")
    return int(value)


def check_resolution(resolution: float) -> float:
    """``resolution`` as a float; :class:`GraphError` unless it is a real number in [0, ``MAX_RESOLUTION``]."""
    if isinstance(resolution, bool) or not isinstance(resolution, numbers.Real):
        raise GraphError(f"resolution={resolution!r} must be a number >= 0 (1 = Newman's modularity)")
    if not 0 <= resolution <= MAX_RESOLUTION:  # NaN and inf fail it too
        raise GraphError(f"resolution={resolution} must be finite, >= 0 and <= {MAX_RESOLUTION:g} (1 = Newman's "
                         "modularity; far above the number of classes Q measures only the class sizes)")
    return float(resolution)


def check_permutations(permutations: int) -> int:
    """``permutations`` as an int; :class:`GraphError` unless it is an integer >= 0."""
    return _integer(permutations, "permutations", GraphError, 0)


def _check_null(null_permutations: int) -> int:
    """``null_permutations`` as an int; :class:`GraphError` unless it is 0 or an integer >= 2."""
    if isinstance(null_permutations, bool) or not isinstance(null_permutations, numbers.Integral) \
            or null_permutations < 0 or null_permutations == 1:
        raise GraphError(f"null_permutations={null_permutations!r} must be 0 (no null) or an integer of at least 2 "
                         "(a z-score needs the spread of the shuffles), e.g. 20")
    return int(null_permutations)


def check_options(metric: Metric, symmetrize: Symmetrize) -> None:
    """:class:`GraphError` unless ``metric`` and ``symmetrize`` are names :func:`layermod.knn_graph` knows."""
    if metric not in METRICS:
        raise GraphError(f"unknown metric {metric!r}; use {_one_of(METRICS)}")
    if symmetrize not in SYMMETRIZE:
        raise GraphError(f"unknown symmetrize {symmetrize!r}; use {_one_of(SYMMETRIZE)}")


def check_search(knn: Knn, sketch_dim: int | None, precision: Precision) -> int | None:
    """``sketch_dim`` as an int or None; :class:`GraphError` unless ``knn`` and ``precision`` are known names and
    ``sketch_dim`` is None or an integer >= 1."""
    if knn not in KNN:
        raise GraphError(f"unknown knn {knn!r}; use {_one_of(KNN)}")
    if precision not in PRECISIONS:
        raise GraphError(f"unknown precision {precision!r}; use {_one_of(PRECISIONS)}")
    if sketch_dim is None:
        return None
    dim = _integer(sketch_dim, "sketch_dim", GraphError, 1)
    if dim > MAX_SKETCH_DIM:
        raise GraphError(f"sketch_dim={dim} is more than {MAX_SKETCH_DIM:,}; a sketch reduces wide features to a "
                         "few hundred dimensions, e.g. 256 (or use the exact search: no sketch_dim)")
    return dim


def check_sketch_size(sketch_dim: int | None, samples: int, max_bytes: int) -> None:
    """:class:`GraphError` unless the sketch of ``samples`` rows, (samples, sketch_dim) float32, fits
    ``max_bytes``."""
    if sketch_dim is not None and samples * sketch_dim * _SKETCH_BYTES > max_bytes:
        raise GraphError(f"sketch_dim={sketch_dim} for {samples:,} samples per draw takes "
                         f"{samples * sketch_dim * _SKETCH_BYTES:,} bytes, more than max_bytes={max_bytes:,}; "
                         "lower sketch_dim or n_per_class, or raise max_bytes")


def check_budget(max_bytes: int, width: int, *, what: str = "features") -> None:
    """:class:`GraphError` unless ``max_bytes`` holds the smallest block of a search over rows of ``width``
    float32 values (a query row, a column row and their score, each a third of the budget) and is no more than
    this machine's memory."""
    least = 3 * 4 * max(width, 1)
    if max_bytes < least:
        raise GraphError(f"max_bytes={max_bytes:,} is below the {least:,} bytes that the smallest block of the "
                         f"search needs ({what} of {width:,} values per sample); raise max_bytes")
    machine = _machine_bytes()
    if machine is not None and max_bytes > machine:
        raise GraphError(f"max_bytes={max_bytes:,} is more than this machine's memory ({machine:,} bytes); "
                         "give a budget it can hold")


def _machine_bytes() -> int | None:
    """The machine's physical memory in bytes, None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def check_null_size(repeats: int, layers: int, null_permutations: int) -> None:
    """:class:`GraphError` unless the null's Q values (repeats x layers x null_permutations) fit
    ``MAX_NULL_VALUES``."""
    values = repeats * layers * null_permutations
    if values > MAX_NULL_VALUES:
        raise GraphError(f"null_permutations={null_permutations} shuffles of repeats={repeats} draws and {layers} "
                         f"layer(s) are {values:,} Q values, more than {MAX_NULL_VALUES:,}; lower "
                         "null_permutations or repeats (20 to 100 shuffles give a z-score)")


def _one_of(names: tuple[str, ...]) -> str:
    """``'a', 'b' or 'c'``."""
    quoted = [repr(name) for name in names]
    return f"{', '.join(quoted[:-1])} or {quoted[-1]}"


_Config = TypeVar("_Config", "GraphConfig", "DrawConfig")


class _FlatConfig:
    """to_dict / from_dict of a frozen config dataclass of plain values; ``error`` is what it raises."""

    error: ClassVar[type[LayermodError]]

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[_Config], data: Mapping) -> _Config:
        """The config held in ``data`` (its other keys ignored, missing fields at their defaults), checked."""
        if not isinstance(data, Mapping):
            raise cls.error(f"a {cls.__name__} is read from a JSON object, not {type(data).__name__}")
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(frozen=True, kw_only=True)
class GraphConfig(_FlatConfig):
    """How a layer's kNN graph is built and scored (see :func:`layermod.knn_graph`, :func:`layermod.modularity`).

    Attributes:
        k: neighbours per sample, an integer >= 1 (below the samples of a draw).
        metric: ``"cosine"`` (the paper's) or ``"euclidean"``.
        symmetrize: ``"mean"`` (the paper's ``(A + A^T) / 2``), ``"union"`` or ``"mutual"``.
        weighted: edge weights from the metric; False gives unit weights.
        resolution: gamma of the modularity (1 = Newman's), in [0, ``MAX_RESOLUTION``].
        knn: ``"exact"`` (the default), or an approximate faiss index: ``"ivf"`` or ``"hnsw"``.
        sketch_dim: None (the default), or project the features to this many dimensions first, at most
            ``MAX_SKETCH_DIM`` (approximate, a seeded Gaussian sketch; for very wide layers).
        precision: the precision of the matmul that proposes neighbours: ``"float32"`` (the default; TF32
            off), ``"tf32"`` or ``"bf16"``. Float64 settles what it cannot certify, so every precision gives the
            same graph; a coarser one leaves more rows to settle.

    The last three choose how the neighbours are found, not what is measured; a config read from a file that
    predates them takes their defaults (the exact search).

    Raises:
        GraphError: a field out of range (one line naming it).
    """

    error: ClassVar[type[LayermodError]] = GraphError

    k: int = 3
    metric: Metric = "cosine"
    symmetrize: Symmetrize = "mean"
    weighted: bool = True
    resolution: float = 1.0
    knn: Knn = "exact"
    sketch_dim: int | None = None
    precision: Precision = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "k", _integer(self.k, "k", GraphError, 1))
        check_options(self.metric, self.symmetrize)
        object.__setattr__(self, "sketch_dim", check_search(self.knn, self.sketch_dim, self.precision))
        if not isinstance(self.weighted, bool) and not _numpy_bool(self.weighted):
            raise GraphError(f"weighted={self.weighted!r} must be True or False")
        object.__setattr__(self, "weighted", bool(self.weighted))
        object.__setattr__(self, "resolution", check_resolution(self.resolution))


@dataclass(frozen=True, kw_only=True)
class DrawConfig(_FlatConfig):
    """Which samples a measurement sees: class-balanced seeded draws, and the label shuffles of the null.

    Attributes:
        n_per_class: samples of every class in one draw, an integer >= 1.
        repeats: number of draws, an integer >= 1 (bounded with ``n_per_class``, see docs/design.md).
        seed: any integer (see :mod:`layermod.coerce`): the draws, the shuffles and torch's random numbers.
        null_permutations: label shuffles per layer and draw for a chance baseline: 0 (none) or at least 2.

    Raises:
        LabelError: ``n_per_class``, ``repeats`` or ``seed`` out of range.
        GraphError: ``null_permutations`` out of range.
    """

    error: ClassVar[type[LayermodError]] = LabelError

    n_per_class: int = 50
    repeats: int = 5
    seed: int = 0
    null_permutations: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_per_class", _integer(self.n_per_class, "n_per_class", LabelError, 1))
        object.__setattr__(self, "repeats", _integer(self.repeats, "repeats", LabelError, 1))
        object.__setattr__(self, "seed", check_seed(self.seed, LabelError))
        object.__setattr__(self, "null_permutations", _check_null(self.null_permutations))
        for name in ("n_per_class", "repeats"):  # each alone first: a message naming only the field at fault
            if getattr(self, name) * 2 > MAX_DRAWN:
                raise LabelError(f"{name}={getattr(self, name)} is more than {MAX_DRAWN // 2:,} (the draws, of at "
                                 f"least 2 classes, hold at most {MAX_DRAWN:,} sample indices); lower {name}")
        if self.null_permutations > MAX_NULL_VALUES:
            raise GraphError(f"null_permutations={self.null_permutations} is more than {MAX_NULL_VALUES:,} (the Q "
                             "values a null holds); 20 to 100 shuffles give a z-score")
        drawn = self.repeats * self.n_per_class * 2
        if drawn > MAX_DRAWN:
            raise LabelError(f"repeats={self.repeats} draws of n_per_class={self.n_per_class} samples of at least 2 "
                             f"classes are at least {drawn:,} sample indices, more than {MAX_DRAWN:,}; lower repeats "
                             "or n_per_class")
        check_null_size(self.repeats, 1, self.null_permutations)


class GraphOptions(TypedDict, total=False):
    """The fields of :class:`GraphConfig` as keyword arguments."""

    k: int
    metric: Metric
    symmetrize: Symmetrize
    weighted: bool
    resolution: float
    knn: Knn
    sketch_dim: int | None
    precision: Precision


class MeasureOptions(GraphOptions, total=False):
    """The fields of :class:`GraphConfig` and :class:`DrawConfig` as keyword arguments of a measurement."""

    n_per_class: int
    repeats: int
    seed: int
    null_permutations: int


def graph_config(*, graph: GraphConfig | None = None, **options: Unpack[GraphOptions]) -> GraphConfig:
    """The graph config of a measurement without draws, from a config, keyword arguments (field names), or both
    (as :func:`measure_configs`)."""
    _refuse_unknown(options, GraphConfig)
    return _merged(GraphConfig, graph, options)


def measure_configs(*, graph: GraphConfig | None = None, draws: DrawConfig | None = None,
                    **options: Unpack[MeasureOptions]) -> tuple[GraphConfig, DrawConfig]:
    """The graph and draw configs of a measurement, from configs, keyword arguments (field names), or both.

    A keyword argument sets its field; given with a config as well, it must equal the config's value.

    Raises:
        TypeError: a keyword that is no field of either config (as Python does for an unknown argument).
        GraphError, LabelError: a value out of range, or a keyword that differs from the config given with it.
    """
    _refuse_unknown(options, GraphConfig, DrawConfig)
    return _merged(GraphConfig, graph, options), _merged(DrawConfig, draws, options)


def _refuse_unknown(options: Mapping, *configs: type) -> None:
    """TypeError, as Python's own for an unexpected keyword, unless every key of ``options`` is a field of one of
    ``configs``."""
    known = sorted(f.name for cls in configs for f in fields(cls))
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}; the configs' fields are {', '.join(known)}")


def _merged(cls: type[_Config], given: _Config | None, options: Mapping) -> _Config:
    """``given`` (default ``cls()``) with the fields of ``cls`` that ``options`` holds, which must agree with it."""
    mine = {f.name: options[f.name] for f in fields(cls) if f.name in options}
    if given is None:
        return cls(**mine)
    if not isinstance(given, cls):
        raise cls.error(f"expected a {cls.__name__}, got {type(given).__name__}")
    differ = [name for name, value in mine.items() if value != getattr(given, name)]
    if differ:
        name = differ[0]
        raise cls.error(f"{name}={mine[name]!r} differs from the {cls.__name__}'s {name}={getattr(given, name)!r}; "
                        f"pass {name} once, as a keyword or in the config")
    return given
