"""Modularity during training: the curve of a fixed probe set, measured every few epochs.

:class:`TrackConfig` says how often and on which probe (class-balanced draws from the test split, seeded, so
every tracked epoch sees the very same samples); :class:`Dynamics` holds the result, one
:class:`~layermod.analysis.curve.Curve`'s values per tracked epoch, with the test accuracy at that epoch. It is written
as ``dynamics.json`` (the source of truth) and drawn as ``dynamics.png``; :func:`plot_dynamics` redraws the
figure from the JSON file alone.

Decisions, on purpose:

* **Fixed probe, fixed layers.** The probe draws depend only on the test labels and ``TrackConfig.draws`` (not on
  the training seed), so runs with different seeds are measured on the same samples. The layers are resolved
  once, at the first tracked epoch, and every later epoch measures those names.
* **Which epochs.** Epoch 0 (before the first step), every ``every``-th epoch, and the last epoch of the run
  (a run later extended with more epochs keeps its earlier last epoch too).
* **Figure.** Left panel: mean Q of every layer against the epoch, one line per layer coloured from shallow
  (dark) to deep (light) on viridis (its pale end cut off), layer names in a legend up to :data:`LEGEND_MAX` layers and a depth colour
  bar beyond; the ceiling ``1 - 1/C`` dotted. Right panel: test accuracy against the epoch. This is the
  paper's picture of training: shallow layers stay flat while deep layers rise with the accuracy.
* **Missing values.** Non-finite Q and unknown accuracies are ``null`` in JSON and NaN in memory.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import KW_ONLY, asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from layermod.analysis.curve import Curve
from layermod.errors import CurveError, TrainError
from layermod.io.files import atomic_path, ensure_writable_dir, read_json_file, save_png
from layermod.io.rundir import DYNAMICS_JSON, DYNAMICS_PNG
from layermod.io.table import TableResult, new_axes
from layermod.extract.layers import LayerSpec
from layermod.measure.config import DrawConfig, GraphConfig
from layermod.io.validate import label, literal_text, mapping, names, numbers, q_bounds, required, run_config

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["LEGEND_MAX", "Dynamics", "TrackConfig", "plot_dynamics"]

LEGEND_MAX = 12


@dataclass(frozen=True, kw_only=True)
class TrackConfig:
    """How to track the modularity curve during training.

    Attributes:
        every: measure every ``every`` epochs (and at epoch 0 and at the last epoch), >= 1.
        graph: the kNN graph of every measurement.
        draws: the probe: class-balanced draws from the test split (disjoint when the classes are large enough)
            and the null, the same at every tracked epoch.
        layers: which layers (see :mod:`layermod.extract.layers`); resolved once, at the first measurement.
        batch_size: samples per forward pass while extracting features.
    """

    every: int = 1
    graph: GraphConfig = field(default_factory=GraphConfig)
    draws: DrawConfig = field(default_factory=DrawConfig)
    layers: LayerSpec = "auto"
    batch_size: int = 256

    def validate(self) -> None:
        """Raise :class:`TrainError` naming the first bad field (the configs were checked when made)."""
        for name in ("every", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise TrainError(f"TrackConfig.{name}={value!r} must be an integer >= 1")

    def tracks(self, epoch: int, last: int) -> bool:
        """Whether ``epoch`` is measured in a run of ``last`` epochs.

        Args:
            epoch: the epoch, 0 = before training.
            last: the run's last epoch.

        Returns:
            True for epoch 0, the last epoch and every ``every``-th.
        """
        return epoch == 0 or epoch == last or epoch % self.every == 0

    def to_dict(self) -> dict:
        """Plain dict of the fields (JSON-ready; a tuple of layers becomes a list).

        Returns:
            ``{field: value}``.
        """
        out = asdict(self)
        if not isinstance(self.layers, (str, int)):
            out["layers"] = list(self.layers)
        return out


@dataclass(frozen=True, repr=False)
class Dynamics(TableResult):
    """Modularity per tracked epoch, draw and layer, with the test accuracy of each tracked epoch.

    Attributes:
        layers: (L,) layer names.
        epochs: (T,) tracked epochs, strictly increasing (0 = before training).
        values: (T, repeats, L) Q of every tracked epoch, draw and layer.
        test_acc: (T,) test accuracy at each tracked epoch (NaN where unknown).
        config: how the probe was drawn and measured (every, the graph and draw configs' fields, dataset, split,
            ...).
    """

    layers: list[str]
    epochs: list[int]
    values: np.ndarray
    test_acc: np.ndarray
    _: KW_ONLY
    config: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        acc = np.asarray([np.nan if a is None else a for a in np.atleast_1d(self.test_acc)], dtype=np.float64)
        epochs = [int(e) for e in self.epochs]
        if values.ndim != 3 or values.shape[2] != len(self.layers):
            raise CurveError(f"values must be (epochs, repeats, {len(self.layers)} layers), got shape {values.shape}")
        if not len(epochs) == len(values) == len(acc):
            raise CurveError(f"{len(epochs)} epochs, {len(values)} value blocks and {len(acc)} accuracies differ")
        for a, b in itertools.pairwise(epochs):
            if b <= a:
                raise CurveError(f"epochs must be strictly increasing, but epoch {b} follows epoch {a}")
        object.__setattr__(self, "layers", list(self.layers))
        object.__setattr__(self, "epochs", epochs)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "test_acc", acc)

    @classmethod
    def start(cls, epoch: int, curve: Curve, test_acc: float | None, *, config: dict | None = None) -> Dynamics:
        """Dynamics holding one tracked epoch: ``curve``'s layers and (repeats, L) values.

        Args:
            epoch: the epoch measured.
            curve: its curve, values (repeats, L).
            test_acc: the test accuracy in [0, 1], or None.
            config: the run's settings to record.

        Returns:
            The :class:`Dynamics`, values (1, repeats, L).
        """
        return cls(curve.layers, [epoch], curve.values[None], [test_acc], config=dict(config or {}))

    def record(self, epoch: int, curve: Curve, test_acc: float | None) -> Dynamics:
        """A copy with ``epoch`` appended; ``curve`` must have the same layers and number of draws.

        Args:
            epoch: the epoch measured.
            curve: its curve, values (repeats, L).
            test_acc: the test accuracy in [0, 1], or None.

        Returns:
            The new :class:`Dynamics`, values (T + 1, repeats, L).

        Raises:
            ValueError: other layers or another number of draws.
        """
        if curve.layers != self.layers or curve.values.shape[0] != self.values.shape[1]:
            raise ValueError(
                f"epoch {epoch} measured {len(curve.layers)} layers x {curve.values.shape[0]} draws, the earlier "
                f"epochs {len(self.layers)} x {self.values.shape[1]}"
            )
        return replace(self, epochs=[*self.epochs, epoch], values=np.concatenate([self.values, curve.values[None]]),
                       test_acc=np.append(self.test_acc, np.nan if test_acc is None else test_acc))

    def until(self, epoch: int) -> Dynamics:
        """A copy keeping the tracked epochs <= ``epoch``.

        Args:
            epoch: the last epoch kept.

        Returns:
            The new :class:`Dynamics`.

        Raises:
            ValueError: no tracked epoch <= ``epoch``.
        """
        keep = [i for i, e in enumerate(self.epochs) if e <= epoch]
        if not keep:
            raise ValueError(f"no tracked epoch <= {epoch}")
        return replace(self, epochs=[self.epochs[i] for i in keep], values=self.values[keep],
                       test_acc=self.test_acc[keep])

    @property
    def mean(self) -> np.ndarray:
        """(T, L) mean Q over draws."""
        return self.values.mean(axis=1)

    @property
    def std(self) -> np.ndarray:
        """(T, L) sample standard deviation of Q over draws (ddof=1; zeros for a single draw)."""
        if self.values.shape[1] < 2:
            return np.zeros(self.mean.shape)
        return self.values.std(axis=1, ddof=1)

    def to_dict(self) -> dict:
        """JSON-ready dict: layers, epochs, values (T x repeats x L), mean (T x L), test_acc (T), config.

        Returns:
            The dict; NaN as null.
        """
        return {
            "layers": list(self.layers),
            "epochs": list(self.epochs),
            "values": _json_floats(self.values),
            "mean": _json_floats(self.mean),
            "test_acc": _json_floats(self.test_acc),
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Dynamics:
        """Inverse of :meth:`to_dict` (mean is recomputed from values; null becomes NaN), for data read from a file.

        Checked as :mod:`layermod.io.validate` says: epochs integers >= 0, values (T, draws, L) within
        modularity's range, test_acc (T,) in [0, 1].

        Args:
            data: a dict as :meth:`to_dict` writes it.

        Returns:
            The :class:`Dynamics`.

        Raises:
            ValueError: naming the first problem.
        """
        data = mapping(data, "the dynamics")
        config = run_config(data.get("config", {}))
        layers = names(required(data, "layers"), "layers")
        low, high = q_bounds(config)
        values = numbers(required(data, "values"), "values", (None, None, len(layers)), low=low, high=high,
                         missing=True)
        epochs = numbers(required(data, "epochs"), "epochs", (len(values),), low=0, integer=True)
        test_acc = numbers(required(data, "test_acc"), "test_acc", (len(values),), low=0, high=1, missing=True)
        return cls(layers, epochs.tolist(), values, test_acc, config=config)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Dynamics:
        """Read a ``dynamics.json`` file (or the one inside a run directory).

        Args:
            path: the file or the run directory.

        Returns:
            The :class:`Dynamics`, checked by :meth:`from_dict`.

        Raises:
            ReportError: the file is missing, unreadable or malformed (one line naming it).
        """
        return read_json_file(path, DYNAMICS_JSON, cls.from_dict, "dynamics")

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``dynamics.png`` and then ``dynamics.json`` into ``path`` (created), each atomically.

        Args:
            path: the run directory.

        Returns:
            The directory.

        Raises:
            OutputError: ``path`` cannot be created or written.
        """
        out = ensure_writable_dir(path)
        save_png(self.figure(), out / DYNAMICS_PNG)
        with atomic_path(out / DYNAMICS_JSON) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        return out

    @literal_text
    def plot(self, *, ax: Axes | None = None) -> Axes:
        """Mean Q of every layer against the epoch, coloured shallow to deep (see the module doc).

        Args:
            ax: the Axes to draw into (default: a new figure's).

        Returns:
            The Axes.
        """
        from matplotlib import colormaps
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import ListedColormap, Normalize
        from matplotlib.ticker import MaxNLocator

        ax = ax if ax is not None else new_axes((7, 4.4))
        n_layers = len(self.layers)
        cmap = ListedColormap(colormaps["viridis"](np.linspace(0.0, 0.9, 256)))  # no pale yellow end
        norm = Normalize(0, max(n_layers - 1, 1))
        mean = self.mean
        for i, name in enumerate(self.layers):
            ax.plot(self.epochs, mean[:, i], marker="o", ms=3, lw=1.4, color=cmap(norm(i)), label=label(name))
        n_classes = self.config.get("n_classes")
        if n_classes:
            ax.axhline(1 - 1 / n_classes, ls=":", color="grey", lw=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel("modularity Q (mean over draws)")
        ax.grid(alpha=0.3)
        config = self.config
        ax.set_title(f"modularity per layer (k={config.get('k', '?')}, {config.get('samples_per_draw', '?')} "
                     f"samples x {self.values.shape[1]} draws)", fontsize=10)
        if n_layers <= LEGEND_MAX:
            ax.legend(fontsize=7, loc="best", title="layer (shallow to deep)", title_fontsize=7)
        else:
            bar = ax.figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax)
            bar.set_label("layer index (shallow to deep)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return ax

    @literal_text
    def figure(self) -> Figure:
        """The whole picture ``dynamics.png`` holds: :meth:`plot` with the test accuracy in a panel beside it.

        Returns:
            A plain matplotlib Figure.
        """
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        fig = Figure(figsize=(10, 4.4))
        q_ax, acc_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.4, 1]})
        self.plot(ax=q_ax)
        acc_ax.plot(self.epochs, self.test_acc, marker="o", ms=3, color="black")
        acc_ax.set_xlabel("epoch")
        acc_ax.set_ylabel("test accuracy")
        acc_ax.set_ylim(0, 1.02)
        acc_ax.grid(alpha=0.3)
        acc_ax.set_title("test accuracy", fontsize=10)
        acc_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.tight_layout()
        return fig

    def _table(self) -> tuple[list[str], list[list]]:
        mean = self.mean
        return (["epoch", "test_acc", *self.layers],
                [[epoch, float(self.test_acc[t]), *map(float, mean[t])] for t, epoch in enumerate(self.epochs)])


def plot_dynamics(source: str | os.PathLike, *, path: str | os.PathLike | None = None) -> Path:
    """Redraw the training-dynamics figure from a ``dynamics.json`` file (or a run directory) alone.

    Args:
        source: the ``dynamics.json`` file or its run directory.
        path: the PNG to write (default: ``dynamics.png`` next to the JSON file).

    Returns:
        ``path``.

    Raises:
        ReportError: ``source`` cannot be read.
        OutputError: ``path`` cannot be written.
    """
    json_file = Path(source) / DYNAMICS_JSON if Path(source).is_dir() else Path(source)
    target = Path(path) if path is not None else json_file.with_name(DYNAMICS_PNG)
    dynamics = Dynamics.load(json_file)
    ensure_writable_dir(target.parent)
    save_png(dynamics.figure(), target)
    return target


def _json_floats(values: np.ndarray) -> list:
    """Nested lists of floats with non-finite entries as None."""
    array = np.asarray(values, dtype=float)
    return np.where(np.isfinite(array), array, None).tolist()
