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
    pool = _Pool(deque(calls), on_result)
    finished = False
    try:
        for _ in range(min(workers, len(calls))):
            pool.feed(*pool.start())
        while pool.busy:
            for conn in wait(list(pool.busy)):
                pool.receive(conn)
        pool.release_idle()
        finished = True
    finally:  # on an interrupt, or after an error here: no worker outlives the run
        pool.close(terminate=not finished)
    return pool.results


_Worker = tuple[Connection, multiprocessing.process.BaseProcess]


class _Pool:
    """Warm spawned workers; each is fed the next call when it gives back its last result, and one that dies is
    replaced while calls are left."""

    def __init__(self, todo: deque[Call], on_result: Callable[[ItemResult], None] | None) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.todo, self.on_result = todo, on_result
        self.busy: dict[Connection, tuple[multiprocessing.process.BaseProcess, Call]] = {}
        self.idle: list[_Worker] = []
        self.started: list[_Worker] = []
        self.results: dict[str, ItemResult] = {}

    def settle(self, result: ItemResult) -> None:
        self.results[result.id] = result
        if self.on_result is not None:
            self.on_result(result)

    def start(self) -> _Worker:
        mine, theirs = self.context.Pipe()
        process = self.context.Process(target=_serve, args=(theirs,), daemon=True, name="layermod-worker")
        process.start()
        theirs.close()  # the worker holds the only other end: its death is EOF here
        self.started.append((mine, process))
        return mine, process

    def feed(self, conn: Connection, process: multiprocessing.process.BaseProcess) -> None:
        while self.todo:
            call = self.todo.popleft()
            try:
                conn.send(call)
            except OSError:  # died before it could take the item (e.g. while starting)
                self.settle(ItemResult(call.item_id, False, value=None, error=_died(process)))
                conn.close()
                conn, process = self.start()
                continue
            self.busy[conn] = (process, call)
            return
        self.idle.append((conn, process))

    def receive(self, conn: Connection) -> None:
        """The result of the worker at ``conn`` (a failed item if it died), and its next call."""
        process, call = self.busy.pop(conn)
        try:
            result = conn.recv()
        except (EOFError, OSError):
            result = None
        if result is None:
            conn.close()
            self.settle(ItemResult(call.item_id, False, value=None, error=_died(process)))
            if self.todo:
                self.feed(*self.start())
        else:
            self.settle(result)
            self.feed(conn, process)

    def release_idle(self) -> None:
        """Tell the idle workers to exit."""
        for conn, _ in self.idle:
            with contextlib.suppress(OSError):
                conn.send(None)

    def close(self, *, terminate: bool) -> None:
        """Join every worker started (terminating live ones first with ``terminate``) and close its pipe."""
        for conn, process in self.started:
            if terminate and process.is_alive():
                process.terminate()
            process.join()
            conn.close()
