"""The child process that reads a Parquet file for :mod:`layermod.data.tabular`, run as a script
(``python -I parquet_child.py PATH SIZE TEXT_COLUMN LABEL_COLUMN MAX_ROWS MAX_DECLARED``).

pyarrow aborts the whole process (a C++ exception past a ``noexcept``) on some corrupt footers, so a hostile file
must meet pyarrow in a process of its own. This script imports only pyarrow (no torch, no layermod: it starts in
a fraction of a second), checks the footer before any column is read (the two columns' physical types, the row
count, the columns' declared uncompressed bytes), and writes the two columns to stdout as an Arrow stream, or a
refusal line after ``REFUSAL`` to stderr (exit 3).
"""

from __future__ import annotations

import os
import sys

# Python 3.10's -I still puts this script's folder first on the import path, where layermod's data modules sit
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

REFUSAL = "layermod-refusal: "
TYPES = {"text": ("BYTE_ARRAY",), "label": ("INT32", "INT64", "BYTE_ARRAY")}


def refuse(message: str) -> None:
    sys.stderr.write(f"{REFUSAL}{message}\n")
    sys.exit(3)


def main(argv: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, size, text_column, label_column, max_rows, max_declared = argv
    size, max_rows, max_declared = int(size), int(max_rows), int(max_declared)
    fix = f"it must be a Parquet file with a {text_column!r} and a {label_column!r} column"
    try:
        parquet = pq.ParquetFile(path)
        meta, schema = parquet.metadata, parquet.schema
        names = list(parquet.schema_arrow.names)
        for column, option in ((text_column, "text_column"), (label_column, "label_column")):
            if column not in names:
                refuse(f"{path} has no column {column!r}; its columns are {', '.join(map(repr, names))} "
                       f"(choose with {option})")
        for i, column in enumerate(schema.names):  # before any column chunk is touched
            role = "text" if column == text_column else "label" if column == label_column else None
            stored = schema.column(i).physical_type
            if role and stored not in TYPES[role]:
                refuse(f"{path} column {column!r} is stored as {stored}, not {' or '.join(TYPES[role])}; write "
                       "texts as strings and labels as integers or strings")
        if meta.num_rows > max_rows:
            refuse(f"{path} declares {meta.num_rows} rows, more than {max_rows}; split it")
        if meta.num_rows <= 0:
            refuse(f"{path} has no rows; give a file with at least one sample")
        declared = 0
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                chunk = group.column(c)
                if chunk.path_in_schema.split(".")[0] in (text_column, label_column):
                    declared += max(0, chunk.total_uncompressed_size)
        if declared > max_declared:
            refuse(f"{path} declares {declared} bytes of columns in a {size}-byte file, so it is corrupt or a "
                   "decompression bomb; write it again")
        table = parquet.read(columns=[text_column, label_column], use_threads=False)
    except (pa.ArrowException, OSError, ValueError, TypeError, IndexError) as e:
        refuse(f"cannot read {path} ({' '.join(str(e).split())[:300]}); {fix}")
    if table.num_rows != meta.num_rows:
        refuse(f"{path} holds {table.num_rows} rows but declares {meta.num_rows}; write it again")
    with pa.ipc.new_stream(sys.stdout.buffer, table.schema) as stream:
        stream.write_table(table)


if __name__ == "__main__":
    main(sys.argv[1:])
