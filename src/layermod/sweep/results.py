"""A sweep's results as one tidy table: a row per item and layer, written as ``results.csv`` (and
``results.parquet`` when pyarrow is installed) and drawn as ``summary.png``.

Columns: ``item`` (the id), every option that varies between the sweep's items (named as in the spec),
``layer``, ``index`` (the layer's position in the item's curve), ``q_mean``, ``q_std`` (over the draws),
``null_mean`` and ``z`` (empty without ``null``), ``status`` (``ok`` or ``failed``) and ``error`` (the failed
item's one line; it has a single row with empty layer columns).

Decisions, on purpose:

* **The item directories are the truth.** :meth:`SweepTable.collect` reads every item of the whole sweep (not
  only one shard's) from ``DIR/items/ID``: its ``item.json`` record and, when ok, its ``curve.json``. Items
  with no record yet (another shard still running) are left out, so the table written by the last shard to
  finish, or by a ``--resume`` with nothing left to do, is the full table; the same items give the same
  bytes.
* **Option cells.** Strings as written, numbers as numbers, lists and tables as compact JSON, an option an item
  does not set empty. In Parquet a column of integers (or numbers, or booleans) keeps that type, else strings.
* **The figure.** Items are grouped by their varying options other than ``seed``; each group is one line, the
  mean over its items of mean Q per layer, with a band of ±1 std across its items (the draws' std for a group
  of one item), on the first group's layer names; when the groups' curves differ in length (networks of
  different depths) each is drawn against its relative depth instead, from 0 (its first measured layer) to 1
  (its last). A checkpoint path is named in the legend by its folder and stem (``r56/best``). Groups are ordered
  by their options' values, numbers by value (k=3 before k=11); at most
  :data:`MAX_LINES` are drawn (the first in that order), and the title says so when some are left out.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from layermod.analysis.curve import Curve
from layermod.analysis.curve_plot import curve_axes
from layermod.errors import ReportError, SweepError
from layermod.io.files import atomic_path, check_recorded, ensure_writable_dir, read_regular, save_png, write_csv
from layermod.io.table import TableResult
from layermod.io.rundir import ITEMS_DIR, RESULTS_CSV, RESULTS_PARQUET, SUMMARY_PNG
from layermod.io.validate import MAX_ITEMS, REASON_CHARS, TITLE_CHARS, label, literal_text, shorten
from layermod.sweep.run import read_record
from layermod.sweep.spec import Item

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["COLUMNS", "MAX_LINES", "SweepTable"]

COLUMNS = ("layer", "index", "q_mean", "q_std", "null_mean", "z", "status", "error")
MAX_LINES = 20
MAX_ROWS = 1_000 * MAX_ITEMS  # read back at most: 10,000 items of 1,000 layers
MAX_CSV_BYTES = 2**30  # the largest results.csv read: far above MAX_ROWS rows of a few options
_FLOATS = ("q_mean", "q_std", "null_mean", "z")


def _cell(value: object) -> object:
    """An option's value as a table cell (see the module doc)."""
    if value is None or isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _float(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True, repr=False)
class SweepTable(TableResult):
    """The tidy table of a sweep.

    Attributes:
        options: the varying option columns, in order.
        rows: one dict per row with the keys ``item``, ``options`` and :data:`COLUMNS`; floats None where empty.
    """

    options: list[str]
    rows: list[dict]

    @property
    def header(self) -> list[str]:
        return ["item", *self.options, *COLUMNS]

    @classmethod
    def collect(cls, items: Sequence[Item], varying: Sequence[str], out: str | os.PathLike) -> SweepTable:
        """The table of ``items`` (the whole sweep, ordered by id) as their directories in ``out`` hold them.

        Args:
            items: the sweep's items.
            varying: the options that vary across them (the table's option columns).
            out: the sweep directory.

        Returns:
            The :class:`SweepTable`; items without a record are left out.
        """
        rows = []
        for item in items:
            directory = Path(out) / ITEMS_DIR / item.id
            record = read_record(directory)
            if record is None:
                continue
            base = {"item": item.id, **{key: _cell(item.options.get(key)) for key in varying}}
            if record["status"] != "ok":
                rows.append({**base, **dict.fromkeys(COLUMNS), "status": "failed", "error": record.get("error")})
                continue
            curve = Curve.load(directory)
            for i, name in enumerate(curve.layers):
                rows.append({**base, "layer": name, "index": i, "q_mean": _float(curve.mean[i]),
                             "q_std": _float(curve.std[i]),
                             "null_mean": None if curve.null_mean is None else _float(curve.null_mean[i]),
                             "z": None if curve.z is None else _float(curve.z[i]), "status": "ok", "error": None})
        return cls(list(varying), rows)

    @property
    def failed(self) -> list[str]:
        """Ids of the failed items."""
        return [row["item"] for row in self.rows if row["status"] == "failed"]

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``summary.png`` (when an item is ok), ``results.parquet`` (with pyarrow) and ``results.csv``.

        Args:
            path: the directory (created).

        Returns:
            The directory.

        Raises:
            OutputError: ``path`` cannot be created or written.
        """
        out = ensure_writable_dir(path)
        if any(row["status"] == "ok" for row in self.rows):
            ax = self.plot(ax=curve_axes(self._width()))
            ax.figure.tight_layout()
            save_png(ax.figure, out / SUMMARY_PNG)
        self._write_parquet(out / RESULTS_PARQUET)
        write_csv(out / RESULTS_CSV, self.header, ([("" if row[key] is None else row[key]) for key in self.header]
                                                   for row in self.rows))
        return out

    def to_dict(self) -> dict:
        """JSON-ready ``{"options": [...], "rows": [...]}``.

        Returns:
            The dict.
        """
        return {"options": list(self.options), "rows": [dict(row) for row in self.rows]}

    def _table(self) -> tuple[list[str], list[list]]:
        return self.header, [[row[key] for key in self.header] for row in self.rows]

    def _write_parquet(self, path: Path) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            return
        columns = {}
        for key in self.header:
            values = [row[key] for row in self.rows]
            present = [v for v in values if v is not None]
            if key in _FLOATS:
                kind = pa.float64()
            elif present and all(isinstance(v, int) for v in present):
                kind = pa.int64()
            elif present and all(isinstance(v, (int, float)) for v in present):
                kind = pa.float64()
            else:
                kind, values = pa.string(), [None if v is None else str(v) for v in values]
            columns[key] = pa.array(values, type=kind)
        with atomic_path(path) as tmp:
            pq.write_table(pa.table(columns), tmp)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SweepTable:
        """Read ``results.csv`` (or the one in a sweep directory): option cells as text, numbers checked.

        Args:
            path: the file or the sweep directory.

        Returns:
            The :class:`SweepTable`.

        Raises:
            ReportError: one line naming the file, for a header without the columns above, more than
                :data:`MAX_ROWS` rows, rows of another length, numbers that do not read, a status other than ok /
                failed, or a file that is not a regular file of at most :data:`MAX_CSV_BYTES`.
        """
        path = Path(path)
        path = path / RESULTS_CSV if path.is_dir() else path
        try:
            raw = read_regular(path, MAX_CSV_BYTES, "a sweep table")
            check_recorded(path, raw)
            return cls._parse(raw.decode("utf-8"))
        except (OSError, ValueError, csv.Error) as err:
            reason = shorten(str(err), limit=REASON_CHARS) or type(err).__name__
            raise ReportError(f"cannot read a sweep table from {path} ({reason}); point at a {RESULTS_CSV} "
                              "written by layermod") from None

    @classmethod
    def _parse(cls, content: str) -> SweepTable:
        lines = list(itertools.islice(csv.reader(io.StringIO(content, newline="")), MAX_ROWS + 2))
        if not lines or lines[0][:1] != ["item"] or tuple(lines[0][-len(COLUMNS):]) != COLUMNS:
            raise ValueError("the file is not a sweep table: its header must be item, the options, "
                             + ", ".join(COLUMNS))
        if len(lines) > MAX_ROWS + 1:
            raise ValueError(f"more than {MAX_ROWS:,} rows")
        header = lines[0]
        rows = []
        for n, line in enumerate(lines[1:], start=2):
            if len(line) != len(header):
                raise ValueError(f"line {n} has {len(line)} cells, the header {len(header)}")
            row: dict = {key: (cell if cell != "" else None) for key, cell in zip(header, line)}
            if row["status"] not in ("ok", "failed"):
                raise ValueError(f"line {n}: status must be ok or failed")
            try:
                row["index"] = None if row["index"] is None else int(row["index"])
                for key in _FLOATS:
                    row[key] = None if row[key] is None else float(row[key])
            except ValueError:
                raise ValueError(f"line {n} holds a number that does not read") from None
            rows.append(row)
        return cls(header[1:-len(COLUMNS)], rows)

    def _groups(self) -> tuple[list[str], dict[tuple, dict[str, list[dict]]]]:
        """The varying options other than seed, and the ok rows grouped by their values, then by item."""
        groups: dict[tuple, dict[str, list[dict]]] = {}
        keys = [key for key in self.options if key != "seed"]
        for row in self.rows:
            if row["status"] == "ok":
                groups.setdefault(tuple(row[key] for key in keys), {}).setdefault(row["item"], []).append(row)
        return keys, groups

    def _width(self) -> int:
        """Layer names the figure makes room for (a fixed 20 when the curves' depths differ)."""
        _, groups = self._groups()
        lengths = {len(rows) for items in groups.values() for rows in items.values()}
        return lengths.pop() if len(lengths) == 1 else 20

    @literal_text
    def plot(self, *, ax: Axes | None = None) -> Axes:
        """Draw the curves grouped by what varies (see the module doc).

        Args:
            ax: the Axes to draw into (default: a new figure's).

        Returns:
            The Axes.

        Raises:
            SweepError: no item of the table is ok.
        """
        keys, groups = self._groups()
        if not groups:
            raise SweepError("no item of the table is ok; there is no curve to plot")
        values = sorted(groups, key=lambda group: [_order(value) for value in group])[:MAX_LINES]
        lengths = {len(rows) for items in groups.values() for rows in items.values()}
        first = sorted(next(iter(groups[values[0]].values())), key=lambda r: r["index"])
        ax = ax if ax is not None else curve_axes(self._width(), interactive=True)
        for group in values:
            curves = [sorted(rows, key=lambda r: r["index"]) for rows in groups[group].values()]
            length = min(len(c) for c in curves)
            means = np.array([[np.nan if r["q_mean"] is None else r["q_mean"] for r in c[:length]] for c in curves])
            mean = means.mean(axis=0)
            band = (means.std(axis=0, ddof=1) if len(curves) > 1 else
                    np.array([np.nan if r["q_std"] is None else r["q_std"] for r in curves[0][:length]]))
            x = np.arange(length) if len(lengths) == 1 else np.linspace(0, 1, length)
            name = ", ".join(f"{key}={_shown(value)}" for key, value in zip(keys, group)) or "all items"
            text = label(f"{name} ({len(curves)} items)" if len(curves) > 1 else name)
            line, = ax.plot(x, mean, marker="o", ms=3, label=text)
            ax.fill_between(x, mean - band, mean + band, color=line.get_color(), alpha=0.15, lw=0)
        if len(lengths) == 1:
            ticks = np.arange(len(first))[:: max(1, math.ceil(len(first) / 50))]
            ax.set_xticks(ticks, [label(first[i]["layer"]) for i in ticks], rotation=60, ha="right", fontsize=8)
            ax.set_xlabel("layer")
        else:  # curves of different depths: each from its first layer (0) to its last (1)
            ax.set_xticks(np.linspace(0, 1, 11))
            ax.set_xlabel("relative depth (0: first measured layer, 1: last)")
        ax.set_ylabel("modularity Q")
        ax.grid(alpha=0.3)
        seeds = " (mean over seeds)" if "seed" in self.options else ""
        shown = "" if len(groups) <= MAX_LINES else f" (first {MAX_LINES} of {len(groups)} groups)"
        ax.set_title(label(f"{len({r['item'] for r in self.rows if r['status'] == 'ok'})} items, grouped by "
                           f"{', '.join(keys) or 'nothing'}{seeds}{shown}", limit=TITLE_CHARS), fontsize=10)
        ax.legend(fontsize=7, loc="best")
        return ax


def _order(value: object) -> tuple:
    """Sort key of an option's value: numbers by value, before anything else by its text (k=3 before k=11)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value))


def _shown(value: object) -> object:
    """An option's value in the legend: a file path as its folder and stem (``r56/best``), else as it is."""
    if isinstance(value, str) and "/" in value:
        path = Path(value)
        return f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem
    return value
