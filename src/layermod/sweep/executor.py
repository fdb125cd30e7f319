"""Run one function over many items: in this process, in warm worker processes, or on warm Ray actors.

The decisions behind it: docs/design.md, section layermod.sweep.executor.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from layermod.coerce import bar_disabled
from layermod.errors import SweepError
from layermod.sweep.calls import Call, ItemResult, Resources, run_call

__all__ = ["BACKENDS", "ItemResult", "Resources", "run_items"]

BACKENDS = ("local", "ray")


def _check_importable(fn: Callable[..., dict]) -> None:
    """Workers find ``fn`` by its module and name (a main script's function travels by value to Ray, and is
    found in the re-run main module by spawned processes): refuse lambdas and nested functions."""
    if not callable(fn) or "<" in getattr(fn, "__qualname__", "<"):
        raise SweepError(f"{fn!r} is not a top-level function; define it at the top of a module or script so "
                         "that workers can find it")


def _check_local(resources: Resources) -> None:
    """:class:`SweepError` unless this machine has the CPUs and GPUs that one worker reserves."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for name, need, have, what in (("num_cpus", resources.num_cpus, os.cpu_count() or 1, "CPUs"),
                                   ("num_gpus", resources.num_gpus, gpus, "GPUs")):
        if need > have + 1e-9:
            raise SweepError(f"each worker reserves {name}={need:g} but this machine has {have} {what}; lower "
                             f"{name} (num_gpus=0 runs on the CPU) or use a machine that has them")


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
    progress: bool | str = "auto",
) -> list[ItemResult]:
    """Call ``fn(**kwargs)`` for every ``(id, kwargs)`` item on ``backend``; one result per item, in order.

    Args:
        fn: a top-level function (of a module or the main script) returning a small JSON-able dict; the process
            and Ray backends find it by name.
        items: ``(id, kwargs)`` pairs, ids unique; kwargs picklable and small (options, paths; never data).
        backend: ``"local"`` (this process, or ``workers`` spawned processes) or ``"ray"``.
        workers: local: processes (None or 1: this process); Ray: actors at most, and the CPUs of an embedded Ray
            (default: as many as the cluster fits).
        address: Ray: the cluster to join (default ``RAY_ADDRESS``, else an embedded one).
        resources: what each worker reserves (default 1 CPU, no GPU); refused before any item runs unless this
            machine (local) or a node of the cluster (Ray) has it.
        threads: torch threads per call (see docs/design.md); None: this process's default, or one per reserved
            CPU in a worker.
        max_retries: Ray: reruns of an item whose actor or node died.
        on_result: called in this process with each result as it arrives (completion order), e.g. to record it.
        progress: a bar of the items done, their rate and the time left (``"auto"``: when stderr is a terminal
            or in a notebook; True: when stderr is a terminal; False: none).

    Returns:
        One :class:`ItemResult` per item, in the items' order.

    Raises:
        SweepError: an unknown backend, Ray not installed, a cluster that cannot be reached, resources that
            cannot be met, bad numbers.
    """
    ids = [item_id for item_id, _ in items]
    if len(set(ids)) != len(ids):
        raise SweepError("item ids must be unique; give every item its own id")
    if backend not in BACKENDS:
        raise SweepError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    for name, value, low in (("workers", workers, 1), ("threads", threads, 1), ("max_retries", max_retries, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise SweepError(f"{name}={value!r} must be an integer >= {low}")
    resources = resources or Resources()
    cwd = os.getcwd()
    bar = tqdm(total=len(items), desc="items", unit="item", disable=bar_disabled(progress))

    def arrived(result: ItemResult) -> None:
        bar.update(1)
        if on_result is not None:
            on_result(result)

    with bar:
        results = _run(fn, items, backend, workers, address, resources, threads, max_retries, arrived, cwd)
    return [results[item_id] for item_id in ids]


def _run(fn, items, backend, workers, address, resources, threads, max_retries, on_result,
         cwd) -> dict[str, ItemResult]:
    """:func:`run_items`' work, its arguments checked: results by id."""
    if backend == "ray":
        from layermod.sweep.rayworkers import run_ray

        _check_importable(fn)
        default = threads or max(1, int(resources.num_cpus))
        calls = [Call(fn, item_id, kwargs=kwargs, cwd=cwd, threads=default) for item_id, kwargs in items]
        results = run_ray(calls, address, workers, resources, max_retries, on_result)
    elif workers is not None and workers > 1:
        from layermod.sweep.processes import run_processes

        _check_local(resources)
        _check_importable(fn)
        default = threads or max(1, (os.cpu_count() or 1) // workers)
        calls = [Call(fn, item_id, kwargs=kwargs, cwd=cwd, threads=default) for item_id, kwargs in items]
        results = run_processes(calls, workers, on_result)
    else:
        from layermod.models.cache import cache_scope

        _check_local(resources)

        results = {}
        with cache_scope():
            for item_id, kwargs in items:
                results[item_id] = result = run_call(Call(fn, item_id, kwargs=kwargs, cwd=cwd, threads=threads))
                on_result(result)
    return results
