"""One item of :func:`~layermod.sweep.executor.run_items`: what a worker is sent (:class:`Call`), what it
sends back (:class:`ItemResult`), what a Ray worker reserves (:class:`Resources`), and :func:`run_call`, which
every backend runs in its worker.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from layermod.errors import LayermodError, SweepError, one_line

__all__ = ["Call", "ItemResult", "Resources", "error_line", "run_call"]


@dataclass(frozen=True, kw_only=True)
class Resources:
    """What one Ray actor (a worker) reserves on its node for the whole run.

    Attributes:
        num_cpus: CPUs per actor (> 0; fractions allowed), default 1.
        num_gpus: GPUs per actor (>= 0; fractions share a GPU), default 0.
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        for name, low in (("num_cpus", 0.0), ("num_gpus", 0.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or value > 1024:
                raise SweepError(f"{name.replace('_', '-')}={value!r} must be a number from 0 to 1024")
        if self.num_cpus == 0 and self.num_gpus == 0:
            raise SweepError("num-cpus and num-gpus are both 0; give each worker at least some CPU or GPU")


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
    _: KW_ONLY
    value: dict | None = None
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """The result as a JSON-ready dict.

        Returns:
            ``{"id", "ok", "value", "error", "seconds"}``.
        """
        return {"id": self.id, "ok": self.ok, "value": self.value, "error": self.error, "seconds": self.seconds}


@dataclass(frozen=True)
class Call:
    """What a worker needs to run one item (pickled; ``fn`` by name, or by value from a main script for Ray)."""

    fn: Callable[..., dict]
    item_id: str
    _: KW_ONLY
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    cwd: str = "."
    threads: int | None = None


def error_line(err: BaseException) -> str:
    return one_line(err) if isinstance(err, LayermodError) else f"{type(err).__name__}: {one_line(err)}"


def run_call(call: Call) -> ItemResult:
    """Run one item in the current process (any worker): in ``call.cwd``, with its thread cap; an exception
    becomes a failed result."""
    import torch

    start = time.perf_counter()
    before = torch.get_num_threads()
    if not os.path.isdir(call.cwd):
        return ItemResult(call.item_id, False, value=None,
                          error=f"the working directory {call.cwd} does not exist on this "
                          "node; run from a directory that every node sees at the same path")
    try:
        with contextlib.chdir(call.cwd):
            if call.threads is not None:
                torch.set_num_threads(call.threads)
            value = call.fn(**call.kwargs)
        return ItemResult(call.item_id, True, value=value, error=None, seconds=time.perf_counter() - start)
    except Exception as err:  # the item's own failure: recorded, the others go on
        return ItemResult(call.item_id, False, value=None, error=error_line(err), seconds=time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
