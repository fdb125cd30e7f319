"""What every result type shares: its table as a pandas DataFrame, and a short text or HTML view of it.

A result names its table in ``_table()``: the column names and one list of cells per row. :class:`TableResult`
turns that into :meth:`~TableResult.to_frame`, ``repr()`` (a few rows and the shape) and ``_repr_html_`` (the
same in a notebook). Each result type writes, reads and draws itself (``save``, ``load``, ``plot``).
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

from layermod.errors import DependencyError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ["SHOWN_ROWS", "TableResult", "new_axes"]

SHOWN_ROWS = 6  # rows shown by repr: the first half and the last half


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else "-"
    return "-" if value is None else str(value)


class TableResult:
    """Mixin of the result types: ``to_frame``, ``__repr__`` and ``_repr_html_`` from ``_table()``."""

    def _table(self) -> tuple[list[str], list[list]]:
        raise NotImplementedError

    def to_frame(self) -> pd.DataFrame:
        """The table as a pandas DataFrame (one row per table row); needs pandas."""
        try:
            import pandas as pd
        except ImportError:
            raise DependencyError(f"{type(self).__name__}.to_frame needs pandas; pip install pandas") from None
        columns, rows = self._table()
        return pd.DataFrame(rows, columns=columns)

    def _shown(self) -> tuple[list[str], list[list[str]], str]:
        columns, rows = self._table()
        half = SHOWN_ROWS // 2
        cut = len(rows) > SHOWN_ROWS
        picked = [*rows[:half], None, *rows[-half:]] if cut else rows
        cells = [["..."] * len(columns) if row is None else [_cell(v) for v in row] for row in picked]
        return columns, cells, f"{len(rows)} rows x {len(columns)} columns"

    def __repr__(self) -> str:
        columns, cells, shape = self._shown()
        widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
        return f"{type(self).__name__} ({shape})\n" + "\n".join(line.rstrip() for line in lines)

    def _repr_html_(self) -> str:
        columns, cells, shape = self._shown()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in cells)
        return (f"<p><b>{type(self).__name__}</b> ({shape})</p>"
                f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def new_axes(size: tuple[float, float], *, interactive: bool = True) -> Axes:
    """New axes of a figure of ``size`` inches: on a pyplot figure when ``interactive`` (to be shown), else on
    a plain Figure (for a file; no GUI backend involved)."""
    if interactive:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=size).add_subplot()
    from matplotlib.figure import Figure

    return Figure(figsize=size).add_subplot()
