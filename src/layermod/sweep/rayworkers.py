"""The Ray backend: one actor per worker, each alive for the whole run and fed one item at a time.

Decisions, on purpose:

* **Warm actors.** Each actor is a Ray worker process that imports torch, layermod and ``fn``'s module once
  and runs item after item inside one :func:`~layermod.models.cache.cache_scope`; it reserves ``resources``
  for its life. There are as many actors as the cluster's CPUs and GPUs fit at ``resources`` each (at most
  ``workers``, and no more than the items); an actor gets its first item once it has started, so an actor
  that cannot be placed holds back no item.
* **A lost worker is not the item's fault.** An actor that dies (its process or node lost) takes one item
  with it: that item goes back to the queue for the next free actor, up to ``max_retries`` times, and a new
  actor is asked for in the dead one's place. An error raised by ``fn`` is a failed result, never retried.
* **Nothing outlives the run.** Every actor is killed when the run ends or is interrupted; an embedded Ray
  started here is stopped here.
* **Waiting is said.** While no actor of the run has started (the cluster's CPUs or GPUs are held by other
  work), a warning every ``NOTICE_S`` seconds says how long it has waited, for what, and what is free.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections import Counter, deque
from collections.abc import Callable

from layermod.errors import SweepError, one_line
from layermod.sweep.calls import Call, ItemResult, Resources, error_line, run_call

__all__ = ["NOTICE_S", "run_ray"]

NOTICE_S = 30.0  # seconds without a started actor before a warning says what the run waits for


class _Worker:
    """A Ray actor's state: one cache scope for its life."""

    def __init__(self) -> None:
        from layermod.models.cache import cache_scope

        self._scope = contextlib.ExitStack()
        self._scope.enter_context(cache_scope())

    def ready(self) -> None:
        """Returns once the actor has started (imported torch and layermod)."""

    def run(self, call: Call) -> ItemResult:
        return run_call(call)


def _ray():
    try:
        import ray
    except ImportError:
        raise SweepError('backend="ray" needs Ray; install the extra: pip install "layermod[ray]"') from None
    return ray


def _actors(ray, resources: Resources, workers: int | None, items: int) -> int:
    """How many actors the cluster fits at ``resources`` each, at most ``workers`` and ``items``, at least 1."""
    total = ray.cluster_resources()
    fits = [int(total.get(name, 0) / need + 1e-9) for name, need in (("CPU", resources.num_cpus),
                                                                     ("GPU", resources.num_gpus)) if need]
    return max(1, min(items, workers or items, *fits))


def _check_fits(ray, resources: Resources) -> None:
    """:class:`SweepError` unless some live node of the cluster has the CPUs and GPUs one actor reserves (Ray
    would wait for them for ever)."""
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    for key, name, need in (("CPU", "num_cpus", resources.num_cpus), ("GPU", "num_gpus", resources.num_gpus)):
        most = max((node.get(key, 0.0) for node in nodes), default=0.0)
        if need > most + 1e-9:
            total = ray.cluster_resources().get(key, 0.0)
            raise SweepError(f"each worker reserves {name}={need:g} but no node of the Ray cluster has that many "
                             f"{key}s (at most {most:g} on one node, {total:g} in all); lower {name} or join a "
                             "cluster that has them")


def run_ray(calls: list[Call], address: str | None, workers: int | None, resources: Resources, max_retries: int,
            on_result: Callable[[ItemResult], None] | None) -> dict[str, ItemResult]:
    """Each call on one of the run's actors; results by id (``on_result`` as they arrive)."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        address = address or os.environ.get("RAY_ADDRESS") or None
        options = {"address": address} if address else {"num_cpus": workers, "include_dashboard": False}
        try:
            ray.init(**options, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise SweepError(f"cannot start or reach {where} ({one_line(err)}); check address= and that "
                                "`ray status` sees the cluster") from None
    actors: list = []
    try:
        _check_fits(ray, resources)
        return _feed(ray, calls, _actors(ray, resources, workers, len(calls)), resources, max_retries, on_result,
                     actors)
    finally:
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        if started:
            ray.shutdown()


def _feed(ray, calls: list[Call], count: int, resources: Resources, max_retries: int, on_result,
          actors: list) -> dict[str, ItemResult]:
    """Start ``count`` actors (listed in ``actors``) and give each free one the next call until all are done."""
    feeder = _Feeder(ray, deque(calls), resources, max_retries, on_result, actors)
    for _ in range(count):
        feeder.start()
    waited = 0.0
    while feeder.running or (feeder.todo and feeder.starting):
        done, _ = ray.wait([*feeder.running, *feeder.starting], num_returns=1, timeout=NOTICE_S)
        if not done:
            if not feeder.running and not feeder.idle:
                waited += NOTICE_S
                free = ray.available_resources()
                warnings.warn(f"waited {waited:.0f} s for Ray to start any of {len(feeder.starting)} workers "
                              f"(num_cpus={resources.num_cpus:g}, num_gpus={resources.num_gpus:g} each); the "
                              f"cluster has {free.get('CPU', 0):g} CPUs and {free.get('GPU', 0):g} GPUs free: "
                              "other work holds them", RuntimeWarning, stacklevel=2)
            continue
        for ref in done:
            if ref in feeder.starting:
                feeder.ready(ref)
            else:
                feeder.returned(ref)
    for call in feeder.todo:  # every actor is gone and none could start
        feeder.settle(ItemResult(call.item_id, False, value=None,
                                 error=f"no Ray worker could start ({feeder.why_not[:150]}); check that "
                                 "layermod imports on every node"))
    return feeder.results


class _Feeder:
    """The actors of one run and the calls left: started actors get the next call, lost ones are replaced and
    their call retried up to ``max_retries`` times."""

    def __init__(self, ray, todo: deque[Call], resources: Resources, max_retries: int, on_result,
                 actors: list) -> None:
        self.ray, self.todo, self.max_retries, self.on_result, self.actors = ray, todo, max_retries, on_result, actors
        self.worker = ray.remote(_Worker).options(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus,
                                                  max_restarts=0)
        self.tries: Counter = Counter()
        self.starting: dict = {}  # ready() ref -> actor
        self.running: dict = {}  # run() ref -> (actor, call)
        self.idle: list = []
        self.results: dict[str, ItemResult] = {}
        self.why_not = "none was placed"

    def start(self) -> None:
        actor = self.worker.remote()
        self.actors.append(actor)
        self.starting[actor.ready.remote()] = actor

    def give(self, actor) -> None:
        if self.todo:
            call = self.todo.popleft()
            self.running[actor.run.remote(call)] = (actor, call)
        else:
            self.idle.append(actor)

    def settle(self, result: ItemResult) -> None:
        self.results[result.id] = result
        if self.on_result is not None:
            self.on_result(result)

    def ready(self, ref) -> None:
        """An actor started (it gets a call) or could not start (it is not asked for again)."""
        actor = self.starting.pop(ref)
        try:
            self.ray.get(ref)
            self.give(actor)
        except self.ray.exceptions.RayError as err:
            self.why_not = error_line(err)

    def returned(self, ref) -> None:
        """A call came back: its result, or a lost worker (replaced, the call retried) or a failed one."""
        actor, call = self.running.pop(ref)
        try:
            self.settle(self.ray.get(ref))
            self.give(actor)
        except self.ray.exceptions.RayActorError as err:  # the worker or its node was lost
            self.start()
            self.tries[call.item_id] += 1
            if self.tries[call.item_id] <= self.max_retries:
                self.todo.appendleft(call)
                if self.idle:
                    self.give(self.idle.pop())
            else:
                times = "" if self.tries[call.item_id] == 1 else f", {self.tries[call.item_id]} times"
                self.settle(ItemResult(call.item_id, False, value=None,
                                       error=f"its Ray worker was lost ({type(err).__name__}{times}); run it again"))
        except self.ray.exceptions.RayError as err:  # e.g. the item's result could not be sent back
            self.settle(ItemResult(call.item_id, False, value=None,
                                   error=f"its Ray worker failed ({error_line(err)[:150]})"))
            self.give(actor)
