"""Safe file output: nothing half-written, and unwritable locations reported before any work is done; and the one
reader of the JSON results that runs leave behind.

Decisions, on purpose:

* **Temp file + rename.** :func:`atomic_path` hands out a hidden temporary name in the *same* directory as the
  target (so the final ``os.replace`` is an atomic rename on one file system) and renames it onto the target only
  when the ``with`` block succeeds; on any exception (``KeyboardInterrupt`` included) the temporary file is
  deleted and the target is left untouched.
* **Probe, don't guess.** :func:`ensure_writable_dir` creates the directory and writes (then deletes) a probe
  file, which catches read-only mounts and ACLs that ``os.access`` does not.
* **Results are read, never trusted.** :func:`read_json_file` reads at most :data:`MAX_JSON_BYTES` and hands
  the parsed JSON to a loader that checks it (see :mod:`layermod.validate`); whatever fails becomes one line
  naming the file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from layermod.errors import LayermodError, OutputError, ReportError
from layermod.io.validate import REASON_CHARS, shorten

T = TypeVar("T")

MAX_JSON_BYTES = 128 * 2**20  # the largest JSON file read: far above any result layermod writes

__all__ = ["MAX_JSON_BYTES", "atomic_path", "check_writable_dir", "csv_text", "ensure_writable_dir", "read_json_file",
           "save_png", "write_csv", "write_json"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success, delete it on any exception.

    The caller writes the temporary path completely (it does not exist yet when yielded). If the block ends
    without creating it, ``path`` is left as it was. The parent directory must exist.

    Example::

        with atomic_path(out / "curve.json") as tmp:
            tmp.write_text(text)
    """
    target = Path(path)
    parent = target.parent
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise OutputError(f"cannot write to {parent}: {exc.strerror or exc}; choose another --out") from None
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()  # the writer creates it; an empty placeholder would otherwise be renamed onto the target
    try:
        yield tmp
        if tmp.exists():
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create directory ``path`` (with parents) and check that a file can be written in it.

    Returns the directory as a :class:`~pathlib.Path`. Raises :class:`OutputError` with one line
    (``"cannot write to DIR: reason; choose another --out"``) when it cannot be created or written.
    """
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot write to {directory}: it exists and is not a directory; choose another --out") from None
    except OSError as exc:
        raise OutputError(f"cannot write to {directory}: {_reason(exc)}; choose another --out") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".layermod-probe-", dir=directory)
    except OSError as exc:
        raise OutputError(f"cannot write to {directory}: {_reason(exc)}; choose another --out") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return directory


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Check, without creating anything, that directory ``path`` exists and is writable or could be created.

    For failing early, before long work whose results go there. Raises :class:`OutputError` like
    :func:`ensure_writable_dir`.
    """
    directory = Path(path).absolute()
    existing = directory
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write to {path}: {existing} is not a directory; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {path}: permission denied in {existing}; choose another --out")
    return Path(path)


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A CSV table (quoted where needed, ``\\n`` line ends) with ``header`` and one line per row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write :func:`csv_text` of ``header`` and ``rows`` to ``path``, whole or not at all."""
    text = csv_text(header, rows)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data: object) -> None:
    """Write ``data`` as indented JSON to ``path``, whole or not at all (a result's source of truth)."""
    text = json.dumps(data, indent=2)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_png(figure, path: str | os.PathLike, tight: bool = False) -> None:
    """Save a matplotlib ``figure`` as a 120-dpi PNG at ``path``, whole or not at all (``tight``: crop to the
    drawn area, for figures with legends outside their axes)."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight" if tight else None)


def read_json_file(path: str | os.PathLike, name: str, parse: Callable[[Any], T], what: str,
                   error: type[LayermodError] = ReportError) -> T:
    """``parse`` of the JSON in ``path`` (a file, or the file ``name`` inside a run directory).

    Any failure, from a missing file or one over :data:`MAX_JSON_BYTES` (refused unread) to a value ``parse``
    finds impossible, is one ``error`` line: "cannot read ``what`` from PATH (reason); point at a NAME written
    by layermod", the reason cut to :data:`~layermod.validate.REASON_CHARS` characters.
    """
    path = Path(path)
    if path.is_dir():
        path = path / name
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_JSON_BYTES + 1)
        if len(raw) > MAX_JSON_BYTES:
            raise ValueError(f"larger than {MAX_JSON_BYTES:,} bytes, far more than a layermod result holds")
        return parse(json.loads(raw.decode("utf-8")))
    except (OSError, ValueError, KeyError, TypeError, IndexError, RecursionError, LayermodError) as err:
        reason = shorten(str(err), REASON_CHARS) or type(err).__name__
        raise error(f"cannot read {what} from {path} ({reason}); point at a {name} written by layermod") from None


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
