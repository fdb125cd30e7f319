"""Run one function over many items: in this process, in worker processes, or as Ray tasks.

:func:`run_items` calls ``fn(**kwargs)`` once per ``(id, kwargs)`` item and returns one :class:`ItemResult` per
item, in the items' order: the small JSON-able dict ``fn`` returned, or the one-line error it raised. It knows
nothing of curves: a sweep of curves, the checkpoints of a training run and a grid of fine-tunes all run through
it. ::

    from layermod.sweep.executor import Resources, run_items

    results = run_items(fine_tune, [("l1-s0", {"method": "l1", "seed": 0}), ...], backend="ray",
                        resources=Resources(num_cpus=1, num_gpus=0.5), threads=1)
    failed = [r for r in results if not r.ok]

Backends:

* ``"local"`` with ``workers`` None or 1: every item in this process, one after another.
* ``"local"`` with ``workers=N`` > 1: N worker processes (:class:`concurrent.futures.ProcessPoolExecutor`
  with the ``spawn`` context, so no forked torch or CUDA state is shared).
* ``"ray"``: one Ray task per item with ``resources``' ``num_cpus`` / ``num_gpus``. Without ``address`` (or the
  ``RAY_ADDRESS`` variable) an embedded local Ray is started for the call (``workers`` CPUs, else all of them)
  and stopped after it; with one, the call joins that cluster (``"auto"``: the cluster started on this machine by
  ``ray start``). Ray is an optional extra: ``pip install "layermod[ray]"``.

Decisions, on purpose:

* **Inputs travel by name.** ``fn`` must be a top-level function of a module or of the main script (checked,
  for the process and Ray backends): workers find it by name. Items carry options, never data: each call
  loads its own model and data, and returns only a small result, so nothing bulky crosses the Ray object
  store; on several machines the paths an item names must exist on every one of them.
* **Same directory everywhere.** Every call runs in the caller's working directory (it must exist on every
  node), so relative paths in the items mean the same for every worker as for the caller.
* **Threads.** ``threads`` caps torch's intra-op threads in each call (restored afterwards in this process);
  None keeps torch's default in this process and gives each process or task ``num_cpus`` threads (at least 1),
  so N workers do not each start one thread per core.
* **Failures are results.** An exception raised by ``fn`` becomes ``ItemResult(ok=False, error=one line)``
  and the other items go on; it is never retried (it would only fail again). A worker that dies is not the
  item's fault: Ray reruns a task whose worker or node was lost up to ``max_retries`` times
  (``retry_exceptions=False``: errors raised by ``fn`` are not retried); a worker process of the local pool that
  dies fails the items it left unfinished, with the reason. ``KeyboardInterrupt`` stops the whole run.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from layermod.errors import LayermodError, one_line

__all__ = ["BACKENDS", "ItemResult", "Resources", "run_items"]

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class Resources:
    """What one Ray task reserves on its node.

    Attributes:
        num_cpus: CPUs per task (> 0; fractions allowed), default 1.
        num_gpus: GPUs per task (>= 0; fractions share a GPU), default 0.
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        for name, low in (("num_cpus", 0.0), ("num_gpus", 0.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or value > 1024:
                raise LayermodError(f"{name.replace('_', '-')}={value!r} must be a number from 0 to 1024")
        if self.num_cpus == 0 and self.num_gpus == 0:
            raise LayermodError("num-cpus and num-gpus are both 0; give each task at least some CPU or GPU")


@dataclass(frozen=True)
class ItemResult:
    """The outcome of one item.

    Attributes:
        id: the item's id, as given.
        ok: whether ``fn`` returned.
        value: what ``fn`` returned (a small JSON-able dict), or None when it failed.
        error: one line saying why it failed ("TypeName: message" for errors outside layermod), or None.
        seconds: wall time of the call in its worker (0 when the worker was lost).
    """

    id: str
    ok: bool
    value: dict | None = None
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"id": self.id, "ok": self.ok, "value": self.value, "error": self.error, "seconds": self.seconds}


@dataclass(frozen=True)
class _Call:
    """What a worker needs to run one item (pickled; ``fn`` by name, or by value from a main script for Ray)."""

    fn: Callable[..., dict]
    item_id: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    cwd: str = "."
    threads: int | None = None


def _error_line(err: BaseException) -> str:
    return one_line(err) if isinstance(err, LayermodError) else f"{type(err).__name__}: {one_line(err)}"


def _run_call(call: _Call) -> ItemResult:
    """Run one item in the current process (any worker): in ``call.cwd``, with its thread cap; an exception
    becomes a failed result."""
    import torch

    start = time.perf_counter()
    before = torch.get_num_threads()
    if not os.path.isdir(call.cwd):
        return ItemResult(call.item_id, False, None, f"the working directory {call.cwd} does not exist on this "
                          "node; run from a directory that every node sees at the same path")
    try:
        with contextlib.chdir(call.cwd):
            if call.threads is not None:
                torch.set_num_threads(call.threads)
            value = call.fn(**call.kwargs)
        return ItemResult(call.item_id, True, value, None, time.perf_counter() - start)
    except Exception as err:  # the item's own failure: recorded, the others go on
        return ItemResult(call.item_id, False, None, _error_line(err), time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)


def _check_importable(fn: Callable[..., dict]) -> None:
    """Workers find ``fn`` by its module and name (a main script's function travels by value to Ray, and is
    found in the re-run main module by spawned processes): refuse lambdas and nested functions."""
    if not callable(fn) or "<" in getattr(fn, "__qualname__", "<"):
        raise ValueError(f"{fn!r} is not a top-level function; define it at the top of a module or script so "
                         "that workers can find it")


def run_items(
    fn: Callable[..., dict],
    items: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    resources: Resources | None = None,
    threads: int | None = None,
    max_retries: int = 3,
    on_result: Callable[[ItemResult], None] | None = None,
) -> list[ItemResult]:
    """Call ``fn(**kwargs)`` for every ``(id, kwargs)`` item on ``backend``; one result per item, in order.

    Args:
        fn: a top-level function (of a module or the main script) returning a small JSON-able dict; the process
            and Ray backends find it by name.
        items: ``(id, kwargs)`` pairs, ids unique; kwargs picklable and small (options, paths; never data).
        backend: ``"local"`` (this process, or ``workers`` spawned processes) or ``"ray"``.
        workers: local: processes (None or 1: this process); Ray: CPUs of an embedded Ray (default all).
        address: Ray: the cluster to join (default ``RAY_ADDRESS``, else an embedded one).
        resources: Ray: what each task reserves (default 1 CPU, no GPU).
        threads: torch threads per call (see the module doc); None: this process's default, or one per reserved
            CPU in a worker.
        max_retries: Ray: reruns of a task whose worker or node died.
        on_result: called in this process with each result as it arrives (completion order), e.g. to record it.

    Raises:
        LayermodError: an unknown backend, Ray not installed, a cluster that cannot be reached, bad numbers.
    """
    ids = [item_id for item_id, _ in items]
    if len(set(ids)) != len(ids):
        raise LayermodError("item ids must be unique; give every item its own id")
    if backend not in BACKENDS:
        raise LayermodError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    for name, value, low in (("workers", workers, 1), ("threads", threads, 1), ("max_retries", max_retries, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise LayermodError(f"{name}={value!r} must be an integer >= {low}")
    resources = resources or Resources()
    cwd = os.getcwd()
    if backend == "ray":
        _check_importable(fn)
        default = threads or max(1, int(resources.num_cpus))
        calls = [_Call(fn, item_id, kwargs, cwd, default) for item_id, kwargs in items]
        results = _run_ray(calls, address, workers, resources, max_retries, on_result)
    elif workers is not None and workers > 1:
        _check_importable(fn)
        default = threads or max(1, (os.cpu_count() or 1) // workers)
        calls = [_Call(fn, item_id, kwargs, cwd, default) for item_id, kwargs in items]
        results = _run_processes(calls, workers, on_result)
    else:
        results = {}
        for item_id, kwargs in items:
            results[item_id] = result = _run_call(_Call(fn, item_id, kwargs, cwd, threads))
            if on_result is not None:
                on_result(result)
    return [results[item_id] for item_id in ids]


def _run_processes(calls: list[_Call], workers: int, on_result) -> dict[str, ItemResult]:
    """Each call in a pool of ``workers`` spawned processes; a dead worker fails the calls it left."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    results: dict[str, ItemResult] = {}
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(_run_call, call): call.item_id for call in calls}
        for future in as_completed(futures):
            try:
                result = future.result()
            except BrokenProcessPool:
                result = ItemResult(futures[future], False, None, "its worker process died (out of memory or "
                                    "killed); run it again")
            results[result.id] = result
            if on_result is not None:
                on_result(result)
    finally:  # on an interrupt, items not started are dropped rather than run
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def _ray():
    try:
        import ray
    except ImportError:
        raise LayermodError('--backend ray needs Ray; install the extra: pip install "layermod[ray]"') from None
    return ray


def _run_ray(calls: list[_Call], address: str | None, workers: int | None, resources: Resources,
             max_retries: int, on_result) -> dict[str, ItemResult]:
    """One Ray task per call, results gathered as they finish; an embedded Ray started here is stopped here."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        address = address or os.environ.get("RAY_ADDRESS") or None
        options = {"address": address} if address else {"num_cpus": workers, "include_dashboard": False}
        try:
            ray.init(**options, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise LayermodError(f"cannot start or reach {where} ({one_line(err)}); check --address and that "
                                "`ray status` sees the cluster") from None
    try:
        task = ray.remote(_run_call).options(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus,
                                             max_retries=max_retries, retry_exceptions=False)
        pending = {task.remote(call): call.item_id for call in calls}
        results: dict[str, ItemResult] = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                item_id = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as err:  # the worker or node was lost, retries spent
                    result = ItemResult(item_id, False, None, f"its Ray worker was lost ({type(err).__name__}); "
                                        "run it again")
                results[item_id] = result
                if on_result is not None:
                    on_result(result)
        return results
    finally:
        if started:
            ray.shutdown()
