"""Safe file output: nothing half-written, and unwritable locations reported before any work is done; and the one
reader of the JSON results that runs leave behind.

Decisions, on purpose:

* **Temp file + rename.** :func:`atomic_path` hands out a hidden temporary name in the *same* directory as the
  target (so the final ``os.replace`` is an atomic rename on one file system) and renames it onto the target only
  when the ``with`` block succeeds; on any exception (``KeyboardInterrupt`` included) the temporary file is
  deleted and the target is left untouched.
* **Probe, don't guess.** :func:`ensure_writable_dir` creates the directory and writes (then deletes) a probe
  file, which catches read-only mounts and ACLs that ``os.access`` does not.
* **Results are read, never trusted.** :func:`read_json_file` reads at most :data:`MAX_JSON_BYTES` of a regular
  file and hands the parsed JSON to a loader that checks it (see :mod:`layermod.io.validate`); whatever fails
  becomes one line naming the file. In a run directory with a run record (:data:`~layermod.io.rundir.RUN_JSON`,
  see :mod:`layermod.io.runs`) a file of the run is read only when the record lists it with its bytes' SHA-256.
* **Every commit is a boundary.** :data:`after_commit`, when set, is called with the path of every file renamed
  into place (and of every run directory swapped in): where tests stop a process to check what a kill leaves.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import mmap
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from layermod.errors import LayermodError, OutputError, ReportError, one_line
from layermod.io.rundir import REPORT_HTML, RUN_FILES, RUN_JSON
from layermod.io.validate import REASON_CHARS, mapping, shorten

if TYPE_CHECKING:
    from matplotlib.figure import Figure

T = TypeVar("T")

MAX_JSON_BYTES = 128 * 2**20  # the largest JSON file read: far above any result layermod writes
MAX_RECORD_BYTES = 2**20  # the largest run record read: a few hundred file names and digests
RUN_FORMAT = "layermod-run"
RECORDED = RUN_FILES - {RUN_JSON, REPORT_HTML}  # the files a run record vouches for (a page over a run is not one)

__all__ = ["MAX_JSON_BYTES", "RECORDED", "RUN_FORMAT", "after_commit", "atomic_path", "check_recorded", "check_writable_dir",
           "csv_text", "ensure_writable_dir", "open_regular", "read_json_file", "read_regular", "read_run_record", "release_pages",
           "save_png", "sha256_bytes", "write_csv", "write_json"]

after_commit: Callable[[Path], None] | None = None
"""Called with every path committed (see the module doc); None in normal use."""


def committed(path: Path) -> None:
    """Tell :data:`after_commit` (when set) that ``path`` is now in place."""
    if after_commit is not None:
        after_commit(path)


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
        raise OutputError(f"cannot write to {parent}: {exc.strerror or exc}; choose another path") from None
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()  # the writer creates it; an empty placeholder would otherwise be renamed onto the target
    try:
        yield tmp
        if tmp.exists():
            os.replace(tmp, target)
            committed(target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create directory ``path`` (with parents) and check that a file can be written in it.

    Returns the directory as a :class:`~pathlib.Path`. Raises :class:`OutputError` with one line
    (``"cannot write to DIR: reason; choose another path"``) when it cannot be created or written.
    """
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot write to {directory}: it exists and is not a directory; choose another path") from None
    except OSError as exc:
        raise OutputError(f"cannot write to {directory}: {_reason(exc)}; choose another path") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".layermod-probe-", dir=directory)
    except OSError as exc:
        raise OutputError(f"cannot write to {directory}: {_reason(exc)}; choose another path") from None
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
        raise OutputError(f"cannot write to {path}: {existing} is not a directory; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {path}: permission denied in {existing}; choose another path")
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


def save_png(figure: Figure, path: str | os.PathLike, *, tight: bool = False) -> None:
    """Save a matplotlib ``figure`` as a 120-dpi PNG at ``path``, whole or not at all (``tight``: crop to the
    drawn area, for figures with legends outside their axes)."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight" if tight else None)


def read_json_file(path: str | os.PathLike, name: str, parse: Callable[[Any], T], what: str,
                   *,
                   error: type[LayermodError] = ReportError) -> T:
    """``parse`` of the JSON in ``path`` (a file, or the file ``name`` inside a run directory).

    Any failure, from a missing file or one over :data:`MAX_JSON_BYTES` (refused unread) to a value ``parse``
    finds impossible, is one ``error`` line: "cannot read ``what`` from PATH (reason); point at a NAME written
    by layermod", the reason cut to :data:`~layermod.io.validate.REASON_CHARS` characters.
    """
    path = Path(path)
    if path.is_dir():
        path = path / name
    try:
        raw = read_regular(path, MAX_JSON_BYTES, "a layermod result")
        check_recorded(path, raw)
        return parse(json.loads(raw.decode("utf-8")))
    except (OSError, ValueError, KeyError, TypeError, IndexError, RecursionError, LayermodError) as err:
        reason = shorten(str(err), limit=REASON_CHARS) or type(err).__name__
        raise error(f"cannot read {what} from {path} ({reason}); point at a {name} written by layermod") from None


def release_pages(array: object) -> None:
    """Drop the pages of the file mapping under ``array`` (a numpy memmap or a view of one) from this process's
    resident memory; they are read again from the file (or the page cache) when next touched. Anything else is
    left alone."""
    while array is not None:
        mapping_ = getattr(array, "_mmap", None)
        if mapping_ is not None:
            if hasattr(mapping_, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
                mapping_.madvise(mmap.MADV_DONTNEED)
            return
        array = getattr(array, "base", None)


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """``path`` opened for reading in binary, refused (OSError, "not a regular file") when it is a device, a FIFO,
    a socket or a directory, whose size says nothing and whose reading may never end or never begin."""
    fh = open(path, "rb", opener=_nonblocking)
    if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
        fh.close()
        raise OSError(errno.EINVAL, "not a regular file (a device, a FIFO or a directory); give a file", str(path))
    return fh


def read_regular(path: str | os.PathLike, limit: int, what: str) -> bytes:
    """The bytes of regular file ``path`` (:func:`open_regular`), refused (ValueError) when it holds more than
    ``limit`` bytes (``what``: what such a file would be, for the message); the
    size is checked before reading."""
    with open_regular(path) as fh:
        info = os.fstat(fh.fileno())
        if info.st_size > limit:
            raise ValueError(f"larger than {limit:,} bytes, far more than {what} holds")
        raw = fh.read(info.st_size + 1)  # not limit + 1: read() allocates what it is asked for
    if len(raw) > limit:
        raise ValueError(f"larger than {limit:,} bytes, far more than {what} holds")
    return raw


def _nonblocking(path: str, flags: int) -> int:
    """Open without waiting for a writer (a FIFO would block ``open`` until one comes)."""
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def sha256_bytes(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def read_run_record(directory: str | os.PathLike) -> dict | None:
    """The run record (:data:`~layermod.io.rundir.RUN_JSON`) of ``directory``, or None when it has none:
    ``{"format", "version", "run_id", "files": {name: sha256}}``; ValueError when it cannot be read."""
    path = Path(directory) / RUN_JSON
    if not os.path.lexists(path):
        return None
    record = mapping(json.loads(read_regular(path, MAX_RECORD_BYTES, "a run record").decode("utf-8")),
                     "the run record")
    files = mapping(record.get("files"), "the run record's files")
    if record.get("format") != RUN_FORMAT or not isinstance(record.get("run_id"), str) or not all(
            isinstance(name, str) and isinstance(digest, str) for name, digest in files.items()):
        raise ValueError(f"{RUN_JSON} is not a {RUN_FORMAT} record")
    return record


def check_recorded(path: Path, raw: bytes) -> None:
    """ValueError unless ``raw``, the bytes of ``path``, belong to the run recorded beside it (when there is a
    record and ``path`` is one of :data:`RECORDED`)."""
    if path.name not in RECORDED:
        return
    try:
        record = read_run_record(path.parent)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"its run record {RUN_JSON} cannot be read: {one_line(err)}") from None
    if record is None:
        return
    digest = record["files"].get(path.name)
    if digest is None:
        raise ValueError(f"not a file of the run recorded in {RUN_JSON} (left by another run)")
    if digest != sha256_bytes(raw):
        raise ValueError(f"its bytes differ from those recorded in {RUN_JSON} (changed after the run)")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
