"""A text column and a label column read from a user's CSV, JSON, JSON-lines or Parquet file, and labels made
class indices.

:func:`read_columns` returns the two columns as Python lists; :func:`class_indices` turns any label column into
class indices and class names. :mod:`layermod.data.text` tokenises the texts.

Decisions, on purpose:

* **The format is the suffix** (any case): ``.csv`` (comma-separated, a header row naming the columns; read with
  the standard library's :mod:`csv`), ``.tsv`` (the same, tab-separated), ``.json`` (a list of objects, or one
  object of equal-length column lists), ``.jsonl``/``.ndjson`` (one object a line, blank lines skipped),
  ``.parquet`` (read with pyarrow, imported only then). Nothing in a file is imported or run.
* **Sizes are checked before reading.** A file may hold at most :data:`MAX_FILE_BYTES` (256 MiB): text formats
  are read whole into Python objects of several times that size. A Parquet file's footer is read first: its
  row count (at most :data:`MAX_ROWS`) and the uncompressed size of the two columns (at most the expansion bound
  of :mod:`layermod.data.bounds` of the file's size) are checked before a column is read. Every format's row
  count is bounded by :data:`MAX_ROWS` (2**20), each text by :data:`MAX_TEXT_CHARS` (2**20 characters; a CSV
  cell also by the :mod:`csv` module's field limit, 131,072 characters).
* **Columns.** A missing column is a one-line :class:`DatasetError` listing the file's columns. A missing value
  (an empty CSV label, a JSON ``null``, an object without the column) names the row (counted from 0).
* **Labels** (:func:`class_indices`): integers (in JSON/Parquet; in CSV, cells that all read as decimal
  integers) are class indices kept as given, below 65,536, named ``"0" .. str(max)`` as
  :func:`layermod.data.arrays.as_dataset` names them; strings are mapped to indices in sorted order, the
  class names. Booleans, fractions and a mix of numbers and strings are refused.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from layermod.data.arrays import _label_names
from layermod.data.bounds import expansion_limit
from layermod.errors import DatasetError, LayermodError, one_line

__all__ = ["MAX_FILE_BYTES", "MAX_ROWS", "MAX_TEXT_CHARS", "TABLE_SUFFIXES", "class_indices", "read_columns"]

MAX_FILE_BYTES = 2**28  # bytes of a CSV/JSON/JSON-lines/Parquet file
MAX_ROWS = 2**20  # rows of any text dataset
MAX_TEXT_CHARS = 2**20  # characters of one text
TABLE_SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".parquet")


def read_columns(path: str | os.PathLike, text_column: str, label_column: str) -> tuple[list[str], list[Any]]:
    """The texts and labels of the file at ``path`` (rows in file order), checked as the module doc says.

    Raises:
        DatasetError: (one line naming the file) an unknown suffix, a file too large, unreadable or empty, a
            missing column, a missing value, a text that is not a string or too long, too many rows.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DatasetError(f"{path} is not a table file; give a file ending in {', '.join(TABLE_SUFFIXES)}")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DatasetError(f"cannot read {path} ({one_line(e)}); check the path") from None
    if not path.is_file():
        raise DatasetError(f"{path} is not a file; give a {suffix} file")
    if size > MAX_FILE_BYTES:
        raise DatasetError(f"{path} holds {size} bytes, more than the {MAX_FILE_BYTES} a table file may; "
                           "split it, or load it yourself and pass a Dataset")
    if size == 0:
        raise DatasetError(f"{path} is empty; give a file with a {text_column!r} and a {label_column!r} column")
    try:
        if suffix == ".parquet":
            texts, labels = _parquet(path, size, text_column, label_column)
        else:
            raw = path.read_bytes().decode("utf-8-sig")
            rows = _json_rows(raw, suffix, path) if suffix in (".json", ".jsonl", ".ndjson") else _csv_rows(
                raw, "\t" if suffix == ".tsv" else ",", path)
            texts, labels = _pick(rows, path, text_column, label_column)
    except LayermodError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, TypeError, RecursionError, MemoryError, csv.Error) as e:
        raise DatasetError(f"cannot read {path} ({one_line(e)}); it must be a {suffix[1:]} file with a "
                           f"{text_column!r} and a {label_column!r} column") from None
    _check_texts(texts, path, text_column)
    return texts, labels


def class_indices(values: list[Any], where: str) -> tuple[np.ndarray, list[str]]:
    """Labels ``values`` as (N,) int64 class indices and the class names (see the module doc)."""
    if not values:
        return np.zeros(0, dtype=np.int64), []
    kinds = {_label_kind(v) for v in values}
    if kinds == {"int"}:
        y = np.array([int(v) for v in values], dtype=object)
        if min(y) < 0:
            raise DatasetError(f"labels of {where} go down to {min(y)}; class indices must be >= 0 (or use names)")
        names = _label_names(np.array([min(int(max(y)), 2**62)], dtype=np.int64))  # LabelError past 65,535
        return y.astype(np.int64), names
    if kinds == {"str"}:
        names = sorted(set(values))
        if len(names) >= 2**16:
            raise DatasetError(f"{where} has {len(names)} distinct labels; at most 65,535 classes")
        index = {name: i for i, name in enumerate(names)}
        return np.array([index[v] for v in values], dtype=np.int64), names
    if "other" in kinds:
        bad = next(v for v in values if _label_kind(v) == "other")
        what = f"a label {str(bad)[:40]!r} of type {type(bad).__name__}"
    else:
        what = "both numbers and names as labels"
    raise DatasetError(f"{where} has {what}; labels must be all integer class indices or all class names")


def _label_kind(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "other"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, str):
        return "str"
    return "other"


def _csv_rows(raw: str, delimiter: str, path: Path) -> tuple[list[str], list[dict]]:
    """The header and the rows of a CSV text (every label that reads as a decimal integer becomes an int)."""
    reader = csv.reader(io.StringIO(raw, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if not header:
        raise DatasetError(f"{path} has no header row; its first line must name the columns")
    rows = []
    for i, cells in enumerate(reader):
        if i >= MAX_ROWS:
            raise DatasetError(f"{path} has more than {MAX_ROWS} rows; split it")
        if cells:
            rows.append(dict(zip(header, cells)))
    return header, rows


def _json_rows(raw: str, suffix: str, path: Path) -> tuple[list[str], list[dict]]:
    """The column names and the rows (objects) of a JSON or JSON-lines text."""
    if suffix == ".json":
        data = json.loads(raw)
        if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
            lengths = {len(v) for v in data.values()}
            if len(lengths) > 1:
                raise DatasetError(f"{path} holds columns of different lengths {sorted(lengths)}; give equal ones")
            n = lengths.pop() if lengths else 0
            if n > MAX_ROWS:
                raise DatasetError(f"{path} has {n} rows, more than {MAX_ROWS}; split it")
            return list(data), [{k: v[i] for k, v in data.items()} for i in range(n)]
        if not isinstance(data, list):
            raise DatasetError(f"{path} holds a JSON {type(data).__name__}; give a list of objects or an object "
                               "of column lists")
        rows = data
    else:
        rows = []
        for number, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                if len(rows) >= MAX_ROWS:
                    raise DatasetError(f"{path} has more than {MAX_ROWS} rows; split it")
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    raise DatasetError(f"{path} line {number} is not JSON ({one_line(e)}); give one object a line") from None
    if len(rows) > MAX_ROWS:
        raise DatasetError(f"{path} has {len(rows)} rows, more than {MAX_ROWS}; split it")
    columns: dict[str, None] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DatasetError(f"{path} row {i} is a JSON {type(row).__name__}, not an object; give one object a row")
        if i < 1000:
            columns.update(dict.fromkeys(row))
    return list(columns), rows


def _pick(table: tuple[list[str], list[dict]], path: Path, text_column: str,
          label_column: str) -> tuple[list[Any], list[Any]]:
    """The two columns of ``(column names, rows)``; a missing column lists the names."""
    columns, rows = table
    if not rows:
        raise DatasetError(f"{path} has no rows; give a file with at least one sample")
    for column, option in ((text_column, "text_column"), (label_column, "label_column")):
        if column not in columns:
            raise DatasetError(f"{path} has no column {column!r}; its columns are {', '.join(map(repr, columns))} "
                               f"(choose with {option})")
    texts, labels = [], []
    for i, row in enumerate(rows):
        text, label = row.get(text_column), row.get(label_column)
        if label is None or label == "":
            raise DatasetError(f"{path} row {i} has no {label_column!r} value; give every row a label")
        texts.append(text)
        labels.append(label)
    if all(isinstance(v, str) for v in labels) and all(_is_decimal(v) for v in labels):
        labels = [int(v) for v in labels]  # CSV cells are text: integer cells are class indices
    return texts, labels


def _is_decimal(text: str) -> bool:
    stripped = text.strip()
    return stripped.isascii() and stripped.lstrip("-").isdigit() and len(stripped) < 20


def _parquet(path: Path, size: int, text_column: str, label_column: str) -> tuple[list[Any], list[Any]]:
    """The two columns of a Parquet file, read and checked by :mod:`layermod.data.parquet_child` in a process of
    its own (pyarrow aborts the process on some corrupt footers); run with ``python -I`` (no working directory or
    user site on its import path, it imports only pyarrow), it sends the columns back as an Arrow stream that
    pyarrow wrote itself."""
    try:
        import pyarrow as pa
    except ImportError:
        raise DatasetError("reading a .parquet file needs pyarrow; .venv/bin/pip install pyarrow") from None
    import layermod.data.parquet_child as parquet_child

    script = Path(parquet_child.__file__)
    args = [str(path), str(size), text_column, label_column, str(MAX_ROWS), str(expansion_limit(size))]
    child = subprocess.run([sys.executable, "-I", str(script), *args], capture_output=True, check=False)
    message = child.stderr.decode("utf-8", "replace")
    if parquet_child.REFUSAL in message:
        raise DatasetError(message.split(parquet_child.REFUSAL, 1)[1].strip().splitlines()[0])
    if child.returncode != 0:
        last = (message.strip().splitlines() or ["no message"])[-1]
        raise DatasetError(f"cannot read {path}: pyarrow failed on it (exit {child.returncode}: {last[:200]}); it "
                           "is corrupt, write it again")
    try:
        table = pa.ipc.open_stream(child.stdout).read_all()
    except pa.ArrowException as e:
        raise DatasetError(f"cannot read {path} ({one_line(e)}); write it again") from None
    texts, labels = table.column(text_column).to_pylist(), table.column(label_column).to_pylist()
    for i, label in enumerate(labels):
        if label is None:
            raise DatasetError(f"{path} row {i} has no {label_column!r} value; give every row a label")
    return texts, labels


def _check_texts(texts: list[Any], path: Path, column: str) -> None:
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DatasetError(f"{path} row {i} holds {type(text).__name__} in column {column!r}, not a text; "
                               "give a string in every row (or choose another column with text_column)")
        if len(text) > MAX_TEXT_CHARS:
            raise DatasetError(f"{path} row {i} has a text of {len(text)} characters, more than {MAX_TEXT_CHARS}; "
                               "shorten it")
