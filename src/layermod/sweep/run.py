"""A sweep on disk: one run directory per item under ``DIR/items/``, each written whole or not at all.

:func:`run_sweep` runs the items that are not yet complete through :func:`~layermod.sweep.executor.run_items`;
each item runs :func:`item_task`, which has the command's own function (``make``) write the item's run
directory and commits it.

Decisions, on purpose:

* **An item directory is committed by a rename.** ``make`` writes into ``DIR/items/.ID.tmp-XXXXXXXX``;
  ``item.json`` (the item's id, options, status and seconds) is written last, and the directory is renamed
  to ``DIR/items/ID``. A directory ``ID`` whose ``item.json`` says ``ok`` is complete; a killed worker leaves
  only a temporary directory, deleted at the end of the run (or before the item runs again).
* **Nothing computed twice.** :func:`item_task` returns the record of an item found complete without running
  it (an item run again after its Ray actor was lost, a second process on the same shard), and
  ``resume=True`` skips complete items up front. Without ``resume`` a directory already holding any of the
  run's items is refused. Complete items are found by their hash, so an item whose slug changed (its spec
  now varies other keys) is renamed, not recomputed.
* **A failure is a record.** An item whose ``make`` raised gets ``DIR/items/ID/item.json`` with status
  ``failed`` and the one-line error, and the others go on; ``resume`` runs failed items again.
* **Shards.** The caller passes one shard's items; shards may share ``DIR`` (each touches only its items).
* **One claim per item.** An item is computed under an exclusive lock of ``DIR/items/.ID.lock`` and only when,
  once the lock is held, it is still not complete; so two sweeps (or shards overlapping) into one ``DIR``
  compute each item once, the later one waiting for the item and then taking its record.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from layermod.io.files import ensure_writable_dir, read_json_file, write_json
from layermod.io.rundir import ITEM_JSON, ITEMS_DIR
from layermod.io.validate import mapping, text
from layermod.sweep.executor import ItemResult, Resources, run_items
from layermod.errors import SweepError
from layermod.sweep.spec import Item

__all__ = ["ItemMaker", "SweepRun", "item_task", "read_record", "run_sweep"]

ItemMaker = Callable[[Path, Mapping[str, Any]], None]
"""Writes one item's run directory: ``make(directory, args)``; a top-level function (workers import it)."""

STATUSES = ("ok", "failed")


@dataclass(frozen=True)
class SweepRun:
    """What :func:`run_sweep` did.

    Attributes:
        computed: ids of the items computed now (ok).
        skipped: ids of the items found complete.
        failed: id -> one-line error of the items that failed now.
    """

    _: KW_ONLY
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _record(data: object) -> dict:
    record = mapping(data, "the item record")
    if record.get("status") not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    text(record.get("id"), "id")
    mapping(record.get("options", {}), "options")
    return record


def read_record(directory: str | os.PathLike) -> dict | None:
    """The ``item.json`` record of an item directory (id, options, status, error, seconds), or None when there
    is none; a record that cannot be read counts as none (the item runs again)."""
    if not (Path(directory) / ITEM_JSON).is_file():
        return None
    try:
        return read_json_file(directory, ITEM_JSON, _record, "an item record")
    except Exception:  # a damaged record: the item is simply not complete
        return None


def _commit(temporary: Path, final: Path) -> None:
    """Rename the finished ``temporary`` directory onto ``final``, replacing a failed record there but never a
    complete item (another attempt at the same item that finished first wins)."""
    if final.exists():
        if (read_record(final) or {}).get("status") == "ok":
            return
        shutil.rmtree(final)
    os.rename(temporary, final)


def _temporary(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")


def item_task(make: ItemMaker, out: str, args: Mapping[str, Any], record: Mapping[str, Any]) -> dict:
    """Executor function of one item: ``make`` its run directory ``out`` and commit it; returns the record.

    An item already complete at ``out`` is not made again: its record is returned with ``"skipped": True``.
    The record says where and when the item ran: ``worker`` ("host:pid"), ``started`` (Unix seconds) and
    ``seconds``, so a sweep's timeline (each worker's start-up, the gaps between its items) can be read back.
    """
    final = Path(out)
    with _claim(final):
        found = read_record(final)
        if found is not None and found["status"] == "ok":
            return {**found, "skipped": True}
        _remove_stale(final)
        temporary = _temporary(final)
        started, start = time.time(), time.perf_counter()
        try:
            temporary.mkdir(parents=True)
            make(temporary, args)
            done = {**record, "status": "ok", "error": None, "seconds": round(time.perf_counter() - start, 3),
                    "started": round(started, 3), "worker": f"{socket.gethostname()}:{os.getpid()}"}
            write_json(temporary / ITEM_JSON, done)
            _commit(temporary, final)
            return done
        finally:
            if temporary.exists():
                shutil.rmtree(temporary, ignore_errors=True)


@contextlib.contextmanager
def _claim(final: Path, wait: bool = True) -> Iterator[bool]:
    """Hold the lock of item directory ``final`` (``.ID.lock`` beside it), waiting while another process holds
    it (or, without ``wait``, yielding False then); the lock ends with its holder, so a killed worker never
    blocks a resume."""
    final.parent.mkdir(parents=True, exist_ok=True)
    path = final.with_name(f".{final.name}.lock")
    while True:
        with open(path, "a") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            if not _is_file_at(lock, path):  # its holder removed it while we waited: another may lock a new one
                continue
            try:
                yield True
            finally:  # a process waiting on this file finds it removed and locks the path anew
                with contextlib.suppress(OSError):
                    path.unlink()
            return


def _is_file_at(handle, path: Path) -> bool:
    """Whether the open file ``handle`` is still the file at ``path``."""
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def _write_failure(final: Path, record: Mapping[str, Any], result: ItemResult) -> None:
    temporary = _temporary(final)
    temporary.mkdir(parents=True)
    try:
        write_json(temporary / ITEM_JSON, {**record, "status": "failed", "error": result.error,
                                           "seconds": round(result.seconds, 3)})
        _commit(temporary, final)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)


def _adopt_renamed(items_dir: Path, items: Sequence[Item]) -> None:
    """Rename complete item directories whose hash matches an item under another slug to the item's id."""
    wanted = {item.hash: item.id for item in items}
    for entry in items_dir.iterdir():
        digest = entry.name.rpartition("-")[2]
        target = wanted.get(digest)
        if (target and entry.name != target and not entry.name.startswith(".") and not (items_dir / target).exists()
                and (read_record(entry) or {}).get("status") == "ok"):
            os.rename(entry, items_dir / target)


def run_sweep(
    work: Sequence[tuple[Item, Mapping[str, Any]]],
    out: str | os.PathLike,
    make: ItemMaker,
    *,
    resume: bool = False,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    resources: Resources | None = None,
    threads: int | None = None,
    on_result: Callable[[ItemResult], None] | None = None,
    progress: bool | str = "auto",
) -> SweepRun:
    """Run the ``(item, args)`` pairs of ``work`` not yet complete into ``out/items/ID`` with ``make``.

    ``args`` are what ``make`` receives (picklable, small); the backend options are
    :func:`~layermod.sweep.executor.run_items`'s, and so is ``progress``. ``on_result`` sees each item's result as
    it arrives.

    Raises:
        SweepError: without ``resume``, ``out`` already holds some of these items.
        OutputError: ``out`` cannot be written.
    """
    items_dir = ensure_writable_dir(Path(out) / ITEMS_DIR)
    _adopt_renamed(items_dir, [item for item, _ in work])
    records = {item.id: read_record(items_dir / item.id) for item, _ in work}
    present = [item_id for item_id, record in records.items() if record is not None]
    if present and not resume:
        raise SweepError(f"{out} already holds {len(present)} of these {len(work)} items (e.g. {present[0]}); pass "
                         "resume=True to run only what is missing, or choose another path")
    skipped = [item_id for item_id, record in records.items() if record is not None and record["status"] == "ok"]
    todo = [(item, args) for item, args in work if item.id not in skipped]
    _remove_temporaries(items_dir, todo)
    described = {item.id: {"id": item.id, "options": item.options} for item, _ in todo}
    run = SweepRun(skipped=list(skipped))

    def settle(result: ItemResult) -> None:
        if result.ok:
            (run.skipped if result.value and result.value.get("skipped") else run.computed).append(result.id)
        else:
            run.failed[result.id] = result.error or "failed"
            with contextlib.suppress(OSError):
                _write_failure(items_dir / result.id, described[result.id], result)
        if on_result is not None:
            on_result(result)

    calls = [(item.id, {"make": make, "out": str((items_dir / item.id).absolute()), "args": args,
                        "record": described[item.id]}) for item, args in todo]
    run_items(item_task, calls, backend=backend, workers=workers, address=address, resources=resources,
              threads=threads, on_result=settle, progress=progress)
    _remove_temporaries(items_dir, todo)  # left by attempts whose worker died (Ray ran the item again)
    return run


def _remove_temporaries(items_dir: Path, work: Sequence[tuple[Item, Any]]) -> None:
    """Delete what killed attempts at ``work``'s items left, but not while another process works on the item."""
    for item, _ in work:
        with _claim(items_dir / item.id, wait=False) as held:
            if held:
                _remove_stale(items_dir / item.id)


def _remove_stale(final: Path) -> None:
    """Delete the directories of earlier attempts at item ``final`` (and their stages); the caller holds its
    lock."""
    for pattern in (f".{final.name}.tmp-*", f"..{final.name}.tmp-*"):
        for stale in final.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)
