"""A run directory written as one commit: afterwards ``--out`` holds exactly the old run or exactly the new one.

:func:`staged_run` hands out a hidden sibling of the run directory (``.DIR.layermod-stage-PID-XXXX``) for the
command to write every file into; when the command succeeds it writes the run record
(:data:`~layermod.io.rundir.RUN_JSON`: a run id and each file's SHA-256) last and swaps the sibling with ``DIR``
in one atomic step (``renameat2(RENAME_EXCHANGE)`` on Linux), then deletes the old run. Files of the old run
that the new one does not write are gone with it.

Decisions, on purpose:

* **Kills.** A process killed before the swap leaves ``DIR`` as it was (and a stage sibling, deleted by the next
  run into ``DIR`` once its process is gone); after it, the new run (and perhaps the old one in the sibling,
  deleted the same way). Where the system cannot swap two directories atomically, ``DIR`` is renamed aside and
  the stage renamed onto it; a kill between the two renames is repaired by the next run (or
  :func:`recover`), which renames the old run back.
* **Only runs are replaced.** ``DIR`` must be absent, empty or hold nothing but
  :data:`~layermod.io.rundir.RUN_FILES` (and hidden temporaries): anything else, a training run's checkpoints
  or a file of the user's, is refused in one :class:`~layermod.errors.OutputError` line before any work.
* **Readers trust the record.** Every JSON result is read through :func:`~layermod.io.files.read_json_file`,
  which refuses a file the record does not list or whose bytes differ; :func:`check_run` checks a whole
  directory (the report does, before showing it).
* **Reproducible.** The run id is the SHA-256 of the sorted names and digests, so the same run gives the
  same bytes, and two different runs different ids.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from layermod.errors import OutputError, ReportError, one_line
from layermod.io.files import (
    RECORDED,
    RUN_FORMAT,
    atomic_path,
    check_writable_dir,
    committed,
    ensure_writable_dir,
    read_regular,
    read_run_record,
    sha256_bytes,
)
from layermod.io.rundir import RUN_FILES, RUN_JSON

__all__ = ["check_replaceable", "check_run", "recover", "staged_run"]

_STAGE = ".layermod-stage-"
_OLD = "-old"
_MAX_FILE_BYTES = 2**40  # what the record hashes: any file a run writes
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _stage_prefix(target: Path) -> str:
    return f".{target.name}{_STAGE}"


def check_replaceable(out: str | os.PathLike) -> Path:
    """``out`` resolved, refused (:class:`OutputError`) unless it is absent, an empty directory or a run
    directory of :data:`~layermod.io.rundir.RUN_FILES`: what a new run may replace."""
    check_writable_dir(out)
    target = Path(os.path.realpath(out))
    if not os.path.lexists(target):
        return target
    if not target.is_dir():
        raise OutputError(f"cannot write to {out}: it exists and is not a directory; choose another path")
    foreign = sorted(entry.name for entry in os.scandir(target)
                     if not (entry.name in RUN_FILES and entry.is_file(follow_symlinks=False))
                     and not entry.name.startswith("."))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputError(f"out={out} holds {shown}, which a new run would delete; choose another path "
                          "(a run directory is replaced whole)")
    return target


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(target: Path) -> None:
    """Settle what killed runs into ``target`` left: put an old run renamed aside back when ``target`` is missing,
    and delete the stage siblings of processes that are gone."""
    if not target.parent.is_dir():
        return
    prefix = _stage_prefix(target)
    for entry in sorted(target.parent.glob(glob.escape(prefix) + "*")):
        pid_text = entry.name[len(prefix):].partition("-")[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        if entry.name.endswith(_OLD) and not os.path.lexists(target):
            os.rename(entry, target)
        else:
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def staged_run(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty directory to write a run into; on success record it and swap it in as ``out``.

    On any exception (``KeyboardInterrupt`` included) the staged files are deleted and ``out`` is left as it was.
    Raises :class:`OutputError` when ``out`` may not be replaced (:func:`check_replaceable`) or cannot be written.
    """
    target = check_replaceable(out)
    ensure_writable_dir(target.parent)
    recover(target)
    try:
        stage = Path(tempfile.mkdtemp(prefix=f"{_stage_prefix(target)}{os.getpid()}-", dir=target.parent))
    except OSError as exc:
        raise OutputError(f"cannot write to {target.parent}: {exc.strerror or exc}; choose another path") from None
    try:
        yield stage
        _record(stage)
        check_replaceable(target)  # still a run directory: nothing of the user's appeared in the meantime
        _swap(stage, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _record(stage: Path) -> None:
    """Write the run record of every file in ``stage``."""
    files = {}
    for path in sorted(stage.iterdir()):
        if path.name.startswith(".") or path.name == RUN_JSON:
            continue
        if not path.is_file() or path.is_symlink():
            raise OutputError(f"{path.name} in a run directory is not a plain file; a run writes only files")
        files[path.name] = sha256_bytes(path.read_bytes())
    run_id = sha256_bytes(json.dumps(files, sort_keys=True).encode())[:32]
    text = json.dumps({"format": RUN_FORMAT, "version": 1, "run_id": run_id, "files": files}, indent=2,
                      sort_keys=True) + "\n"
    with atomic_path(stage / RUN_JSON) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _swap(stage: Path, target: Path) -> None:
    """Make ``stage`` the directory ``target``; ``stage`` then holds the old run (or nothing), to be deleted."""
    if not os.path.lexists(target):
        os.rename(stage, target)
    elif not _exchange(stage, target):
        aside = stage.with_name(stage.name + _OLD)
        os.rename(target, aside)
        committed(aside)
        os.rename(stage, target)
        shutil.rmtree(aside, ignore_errors=True)
    committed(target)


def _exchange(a: Path, b: Path) -> bool:
    """Swap directories ``a`` and ``b`` atomically; False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OutputError(f"cannot replace {b}: {os.strerror(code)}; choose another path")


def check_run(directory: str | os.PathLike) -> None:
    """:class:`ReportError` in one line unless every file of ``directory``'s run record is there with its
    recorded bytes and every run file there is recorded (nothing to check without a record)."""
    directory = Path(directory)
    try:
        record = read_run_record(directory)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ReportError(f"{directory}: its run record {RUN_JSON} cannot be read ({one_line(err)}); "
                          "run the command that wrote it again") from None
    if record is None:
        return
    present = {entry.name for entry in os.scandir(directory) if entry.name in RECORDED}
    for name in sorted(present | set(record["files"])):
        digest = record["files"].get(name)
        try:
            same = digest is not None and sha256_bytes(read_regular(directory / name, _MAX_FILE_BYTES, "a run")) == digest
        except (OSError, ValueError) as err:
            raise ReportError(f"{directory}: {name} of run {record['run_id']} cannot be read ({one_line(err)}); "
                              "run the command that wrote it again") from None
        if not same:
            why = "is not part of" if digest is None else "differs from what was written by"
            raise ReportError(f"{directory}: {name} {why} run {record['run_id']} ({RUN_JSON}); its files come from "
                              "different runs: run the command that wrote it again")
