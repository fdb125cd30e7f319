"""Checkpoints: weights as safetensors plus a JSON sidecar describing how to rebuild the model.

A checkpoint is two files side by side::

    DIR/best.safetensors   the state dict (tensors only)
    DIR/best.json          {"format": "layermod-checkpoint", "version": 1, "arch": ..., "arch_args": {...}, ...}

Decisions, on purpose:

* **No pickle, ever.** Weights are read and written only with ``safetensors``; a ``.pt`` / ``.pth`` / ``.bin``
  (pickle) file is refused by its suffix before it is opened, with a one-line recipe to convert it.
* **Strict.** :func:`load_weights` compares keys and shapes itself and reports every kind of mismatch in one line
  (at most 3 names of each kind) before touching the model, so a failed load leaves the model unchanged.
  Dtypes are cast to the model's, and tensors land on the model's device.
* **Shared storage.** Tied weights (one tensor under several keys) and views into a larger storage are saved as
  separate contiguous copies under every key, so the file loads back with strict matching.
* **Paths.** ``DIR/best`` and ``DIR/best.safetensors`` name the same checkpoint; a directory means
  ``DIR/best.safetensors``. Each file is written atomically (:func:`~layermod.fileio.atomic_path`), the sidecar
  after the weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from . import models, prune
from .errors import WeightsError
from .fileio import atomic_path, ensure_writable_dir

__all__ = [
    "FORMAT",
    "VERSION",
    "load_checkpoint",
    "load_weights",
    "read_sidecar",
    "save_checkpoint",
    "sidecar_path",
    "weights_path",
]

FORMAT = "layermod-checkpoint"
VERSION = 1
SUFFIX = ".safetensors"
DEFAULT_NAME = "best"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")
_MAX_NAMES = 3


def weights_path(path: str | os.PathLike) -> Path:
    """Resolve ``path`` to a ``.safetensors`` file name: a directory means ``DIR/best.safetensors``, an existing
    file or a pickle suffix is kept as is (to be refused by name), and any other name without the suffix gets it
    (``DIR/best`` -> ``DIR/best.safetensors``)."""
    p = Path(path)
    if p.is_dir():
        return p / (DEFAULT_NAME + SUFFIX)
    if p.is_file() or p.suffix.lower() in PICKLE_SUFFIXES or p.name.endswith(SUFFIX):
        return p
    return p.with_name(p.name + SUFFIX)


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of weights ``path``: ``DIR/best.safetensors`` -> ``DIR/best.json``."""
    p = weights_path(path)
    stem = p.name[: -len(SUFFIX)] if p.name.endswith(SUFFIX) else p.stem
    return p.with_name(stem + ".json")


def save_checkpoint(model: nn.Module, path: str | os.PathLike, meta: dict) -> Path:
    """Write ``model``'s state dict to ``path`` (safetensors) and ``meta`` to the JSON sidecar next to it.

    Args:
        model: any module; its state dict is saved from CPU copies (the model is not moved).
        path: ``DIR/NAME.safetensors`` or ``DIR/NAME`` (the suffix is added); ``DIR`` is created.
        meta: JSON-serialisable dict. For a registry model it should hold ``"arch"`` (the name given to
            :func:`layermod.models.create`) and ``"arch_args"`` (its other keyword arguments) so that
            :func:`load_checkpoint` can rebuild it. ``"format"`` and ``"version"`` are added.

    Returns:
        The weights path.

    Raises:
        WeightsError: ``meta`` is not a JSON-serialisable dict, or the path is a pickle suffix.
        OutputError: the directory cannot be written.
    """
    target = weights_path(path)
    if target.suffix.lower() in PICKLE_SUFFIXES:
        raise WeightsError(f"cannot save {target}: checkpoints are written as .safetensors; use DIR/NAME{SUFFIX}")
    if not isinstance(meta, dict):
        raise WeightsError(f"checkpoint meta must be a dict, got {type(meta).__name__}")
    sidecar = {**meta, "format": FORMAT, "version": VERSION}
    try:
        text = json.dumps(sidecar, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"checkpoint meta is not JSON-serialisable: {exc}") from None
    ensure_writable_dir(target.parent)
    tensors = _plain_state_dict(model)
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "layermod": FORMAT})
    with atomic_path(sidecar_path(target)) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a ``.safetensors`` file into ``model`` with strict key and shape matching; returns ``model``.

    Raises:
        WeightsError: one line naming the file when it is missing, not a safetensors file (pickle files are
            refused unopened), unreadable or corrupt, or when its keys / shapes do not match the model, e.g.
            ``"weights X do not match the model: 2 missing keys (a, b), 1 unexpected (c), 1 shape mismatch
            (fc.weight: file (10,64) vs model (5,64))"``.
    """
    file = weights_path(path)
    tensors = _read_tensors(file)
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    mismatched = [
        f"{k}: file {_shape(tensors[k].shape)} vs model {_shape(expected[k].shape)}"
        for k in expected
        if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{_count(len(missing), 'missing key')} ({_names(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
        if mismatched:
            parts.append(f"{_count(len(mismatched), 'shape mismatch', 'es')} ({_names(mismatched)})")
        raise WeightsError(
            f"weights {file} do not match the model: {', '.join(parts)}; "
            "check the architecture, width and number of classes"
        )
    model.load_state_dict(tensors, strict=True)
    return model


def read_sidecar(path: str | os.PathLike) -> dict:
    """The JSON sidecar of weights ``path`` (``DIR/best.safetensors`` -> ``DIR/best.json``) as a dict.

    Raises:
        WeightsError: the sidecar is missing, not valid JSON, not an object, or from another format / a newer
            version.
    """
    file = sidecar_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WeightsError(f"checkpoint sidecar {file} not found; it is written next to the weights by save_checkpoint") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WeightsError(f"cannot read checkpoint sidecar {file}: {exc}") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WeightsError(f"checkpoint sidecar {file} is not valid JSON ({exc}); rewrite it or retrain") from None
    if not isinstance(meta, dict):
        raise WeightsError(f"checkpoint sidecar {file} must hold a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise WeightsError(f"checkpoint sidecar {file} has format {meta.get('format')!r}, expected {FORMAT!r}")
    version = meta.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise WeightsError(
            f"checkpoint sidecar {file} has version {version!r}; this layermod reads version <= {VERSION}, upgrade it"
        )
    return meta


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild a registry model from the sidecar's ``"arch"`` / ``"arch_args"``, load its weights, eval mode.

    A sidecar ``"plan": {"remove": [unit names]}`` (a pruned model) is applied with
    :func:`layermod.prune.apply_plan` after building the architecture and before loading the weights.

    Returns:
        ``(model, meta)`` with ``meta`` the sidecar dict.

    Raises:
        WeightsError: sidecar or weights problems (see :func:`read_sidecar`, :func:`load_weights`), or a sidecar
            without ``"arch"`` (build the model yourself and call :func:`load_weights`).
        ModelError: the architecture is not registered.
        PlanError: the plan names a module the architecture does not have.
    """
    file = weights_path(path)
    meta = read_sidecar(file)
    arch = meta.get("arch")
    args = meta.get("arch_args", {})
    if not isinstance(arch, str) or not arch:
        raise WeightsError(
            f"checkpoint sidecar {sidecar_path(file)} names no 'arch'; build the model yourself and use load_weights"
        )
    if not isinstance(args, dict):
        raise WeightsError(f"checkpoint sidecar {sidecar_path(file)}: 'arch_args' must be an object of create() arguments")
    model = models.create(arch, **args)
    plan = meta.get("plan")
    if plan is not None:
        remove = plan.get("remove") if isinstance(plan, dict) else None
        if not isinstance(remove, list) or not all(isinstance(name, str) for name in remove):
            raise WeightsError(f"checkpoint sidecar {sidecar_path(file)}: 'plan' must be {{\"remove\": [unit names]}}")
        model = prune.apply_plan(model, remove)
    load_weights(model, file)
    model.eval()
    return model, meta


# --------------------------------------------------------------------------------------------- helpers


def _plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous, storage-disjoint copy-or-view of every state-dict tensor (safetensors refuses shared or
    strided tensors)."""
    state = model.state_dict()
    seen: dict[tuple[torch.device, int], int] = {}
    for value in state.values():
        if value.numel() and not value.is_meta:
            key = (value.device, value.untyped_storage().data_ptr())
            seen[key] = seen.get(key, 0) + 1
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        t = value.detach()
        shared = False
        if t.numel() and not t.is_meta:
            storage = t.untyped_storage()
            shared = (
                seen[(t.device, storage.data_ptr())] > 1
                or t.storage_offset() != 0
                or t.numel() * t.element_size() != storage.nbytes()
            )
        t = t.to("cpu")
        out[name] = t.clone(memory_format=torch.contiguous_format) if shared or not t.is_contiguous() else t
    return out


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    suffix = file.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise WeightsError(
            f"{file} is a pickle checkpoint ({suffix}); layermod loads only safetensors and never unpickles. Convert it "
            "once in trusted code: safetensors.torch.save_file(torch.load(F, weights_only=True), 'model.safetensors')"
        )
    if not file.name.endswith(SUFFIX):
        raise WeightsError(f"{file} is not a .safetensors file; save or convert the weights with safetensors")
    if not file.is_file():
        raise WeightsError(f"weights {file} not found; check the path (expected DIR/NAME{SUFFIX})")
    try:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # noqa: BLE001  (safetensors raises its own error types, and OSError, for bad files)
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise WeightsError(f"weights {file} are unreadable or corrupt ({reason}); re-save or re-download them") from None


def _shape(shape: Any) -> str:
    return "(" + ",".join(str(int(s)) for s in shape) + ")"


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES])
    return shown + (", ..." if len(names) > _MAX_NAMES else "")


def _count(n: int, noun: str, plural: str = "s") -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}{plural}"
