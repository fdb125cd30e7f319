"""The devices layermod runs on: the CPU, or a CUDA device this machine has.

Decisions, on purpose:

* **By type.** A device is checked by its type before any tensor is made there: ``cpu``, or ``cuda`` /
  ``cuda:i`` with CUDA available and ``i`` below the device count. Anything else torch can name (``meta``,
  which holds no data; ``mps``, ``xla``, ...) or cannot read is refused in one line listing what this machine
  has. A CUDA device that passes is then probed with an empty tensor (a broken driver fails there).
"""

from __future__ import annotations

import torch

from layermod.errors import DeviceError, one_line

__all__ = ["available_devices", "check_device"]


def available_devices() -> list[str]:
    """``["cpu", "cuda:0", ...]``: the devices :func:`check_device` accepts on this machine."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu", *(f"cuda:{i}" for i in range(count))]


def check_device(device: str | torch.device, *, what: str = "device") -> torch.device:
    """``device`` as a ``torch.device``; :class:`DeviceError` (naming it as ``what``) unless it is the CPU or an
    available CUDA device."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        _refuse(device, what, "not a device name")
    if parsed.type not in ("cpu", "cuda"):
        _refuse(device, what, "layermod runs on the CPU or a CUDA device")
    if parsed.type == "cuda":
        available = available_devices()[1:]
        if not available:
            _refuse(device, what, "CUDA is not available")
        if parsed.index is not None and parsed.index >= len(available):
            _refuse(device, what, f"there are {len(available)} CUDA devices")
        try:
            torch.empty(0, device=parsed)
        except (RuntimeError, AssertionError) as err:
            _refuse(device, what, one_line(err))
    return parsed


def _refuse(device: object, what: str, why: str) -> None:
    raise DeviceError(f"cannot use {what} {str(device)!r} ({why}); this machine has {', '.join(available_devices())}")
