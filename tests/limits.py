"""A memory ceiling for tests of hostile inputs: a reader that tries to allocate gigabytes fails fast instead of
taking the machine down.

:func:`memory_limit` lowers this process's address-space limit (``RLIMIT_AS``) to what it maps now plus
``extra_bytes`` for the length of a ``with`` block, then restores it. An allocation past the ceiling fails
(numpy raises ``MemoryError``, torch ``RuntimeError``), so a test that expects a clean ``LayermodError`` fails
loudly when a reader allocates before checking sizes.
"""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterator

import pytest

MiB = 2**20


def mapped_bytes() -> int:
    """Virtual memory this process maps now (VmSize), in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@contextlib.contextmanager
def memory_limit(extra_bytes: int = 256 * MiB) -> Iterator[None]:
    """Allow at most ``extra_bytes`` more address space inside the block (Linux only; skips elsewhere)."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        ceiling = mapped_bytes() + extra_bytes
    except (OSError, RuntimeError, ValueError) as err:  # not Linux
        pytest.skip(f"no address-space limit here ({err})")
    if hard != resource.RLIM_INFINITY:
        ceiling = min(ceiling, hard)
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
