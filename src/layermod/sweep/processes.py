"""The local backend's worker processes: a pool of spawned processes, each alive for the whole run and fed one
item at a time.

Decisions, on purpose:

* **Spawned, then warm.** Each worker is a fresh interpreter (the ``spawn`` context: no forked torch or CUDA
  state), imports torch, layermod and ``fn``'s module once, and runs item after item inside one
  :func:`~layermod.models.cache.cache_scope`, so its later items find the model and data its earlier ones
  loaded.
* **One item in flight per worker.** An idle worker is sent the next item, so the load balances itself and a
  worker that dies (out of memory, killed) had exactly one item unfinished: that item fails with the reason,
  a new worker takes the dead one's place while items remain, and the others go on.
* **Ctrl-C is the caller's.** Workers ignore SIGINT (a terminal sends it to the whole process group); the
  caller's KeyboardInterrupt terminates them, drops the items not yet run and propagates.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection, wait

from layermod.sweep.calls import Call, ItemResult, error_line, run_call

__all__ = ["run_processes"]


def _died(process: multiprocessing.process.BaseProcess) -> str:
    process.join()
    code = process.exitcode
    how = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
    return f"its worker process died ({how}; out of memory or killed); run it again"


def _serve(conn: Connection) -> None:
    """A worker's life: run each call received on ``conn`` and send back its result, until None or EOF."""
    from layermod.models.cache import cache_scope

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with cache_scope():
        while True:
            try:
                call = conn.recv()
            except EOFError:  # the caller is gone
                return
            if call is None:
                return
            result = run_call(call)
            try:
                conn.send(result)
            except Exception as err:  # noqa: BLE001  (fn returned what cannot be pickled)
                conn.send(ItemResult(result.id, False, value=None,
                                     error=f"its result cannot be sent back ({error_line(err)}); "
                                     "return a small JSON-able dict", seconds=result.seconds))


def run_processes(calls: list[Call], workers: int, on_result: Callable[[ItemResult], None] | None
                  ) -> dict[str, ItemResult]:
    """Each call on one of ``workers`` warm spawned processes; results by id (``on_result`` as they arrive)."""
    context = multiprocessing.get_context("spawn")
    todo = deque(calls)
    busy: dict[Connection, tuple[multiprocessing.process.BaseProcess, Call]] = {}
    idle: list[tuple[Connection, multiprocessing.process.BaseProcess]] = []
    started: list[tuple[Connection, multiprocessing.process.BaseProcess]] = []
    results: dict[str, ItemResult] = {}
    finished = False

    def settle(result: ItemResult) -> None:
        results[result.id] = result
        if on_result is not None:
            on_result(result)

    def start() -> tuple[Connection, multiprocessing.process.BaseProcess]:
        mine, theirs = context.Pipe()
        process = context.Process(target=_serve, args=(theirs,), daemon=True, name="layermod-worker")
        process.start()
        theirs.close()  # the worker holds the only other end: its death is EOF here
        started.append((mine, process))
        return mine, process

    def feed(conn: Connection, process) -> None:
        while todo:
            call = todo.popleft()
            try:
                conn.send(call)
            except OSError:  # died before it could take the item (e.g. while starting)
                settle(ItemResult(call.item_id, False, value=None, error=_died(process)))
                conn.close()
                conn, process = start()
                continue
            busy[conn] = (process, call)
            return
        idle.append((conn, process))

    try:
        for _ in range(min(workers, len(calls))):
            feed(*start())
        while busy:
            for conn in wait(list(busy)):
                process, call = busy.pop(conn)
                try:
                    result = conn.recv()
                except (EOFError, OSError):
                    result = None
                if result is None:
                    conn.close()
                    settle(ItemResult(call.item_id, False, value=None, error=_died(process)))
                    if todo:
                        feed(*start())
                else:
                    settle(result)
                    feed(conn, process)
        for conn, _ in idle:
            with contextlib.suppress(OSError):
                conn.send(None)
        finished = True
    finally:  # on an interrupt, or after an error here: no worker outlives the run
        for conn, process in started:
            if not finished and process.is_alive():
                process.terminate()
            process.join()
            conn.close()
    return results
