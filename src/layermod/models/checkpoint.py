"""Checkpoints: weights as safetensors plus a JSON sidecar that describes how to rebuild the model; the read and
write API.

The decisions behind it: docs/design.md, section layermod.models.checkpoint.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from layermod import models
from layermod.models import hub
from layermod.errors import ModelError, PlanError, WeightsError, one_line
from layermod.io.files import ensure_writable_dir
from layermod.io.rundir import WEIGHTS_SUFFIX
from layermod.models.commit import (
    FORMAT,
    PICKLE_SUFFIXES,
    VERSION,
    commit,
    committed,
    has_sidecar,
    read_sidecar,
    settle,
    sidecar_path,
    weights_path,
)

__all__ = [
    "FORMAT",
    "VERSION",
    "check_weights_fit",
    "load_checkpoint",
    "load_companion",
    "load_weights",
    "read_sidecar",
    "save_checkpoint",
    "settle",
    "sidecar_path",
    "weights_path",
]

_DIGEST_KEYS = ("weights_sha256", "files_sha256")
_METADATA = {"format": "pt"}  # one entry: safetensors writes several in an order that differs between processes
_MAX_NAMES = 3


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    meta: dict,
    *,
    companions: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> Path:
    """Write ``model``'s state dict to ``path`` (safetensors) and ``meta`` to the JSON sidecar next to it, as one
    commit (see docs/design.md).

    Args:
        model: any module; its state dict is saved from CPU copies (the model is not moved).
        path: ``DIR/NAME.safetensors`` or ``DIR/NAME`` (the suffix is added); ``DIR`` is created.
        meta: JSON-serialisable dict. For a registry model it should hold ``"arch"`` (the name given to
            :func:`layermod.models.create`) and ``"arch_args"`` (its other keyword arguments) so that
            :func:`load_checkpoint` can rebuild it. ``"format"``, ``"version"``, ``"weights_sha256"`` and
            ``"files_sha256"`` are set here.
        companions: more tensors saved in the same commit, by file name in ``DIR`` (``"NAME.safetensors"``);
            read them back with :func:`load_companion`.

    Returns:
        The weights path.

    Raises:
        WeightsError: ``meta`` is not a JSON-serialisable dict, the path is a pickle suffix, or a companion name
            is not a plain ``.safetensors`` file name other than the weights'.
        OutputError: the directory cannot be written.
    """
    target = weights_path(path)
    if target.suffix.lower() in PICKLE_SUFFIXES:
        raise WeightsError(f"cannot save {target}: checkpoints are written as .safetensors; use "
                           f"DIR/NAME{WEIGHTS_SUFFIX}")
    if not isinstance(meta, dict):
        raise WeightsError(f"checkpoint meta must be a dict, got {type(meta).__name__}")
    companions = dict(companions or {})
    for name in companions:
        if (not isinstance(name, str) or Path(name).name != name or name.startswith(".")
                or not name.endswith(WEIGHTS_SUFFIX) or name == target.name):
            raise WeightsError(f"companion file {name!r} of {target} must be a plain NAME{WEIGHTS_SUFFIX} file name "
                               f"other than {target.name!r}")
    sidecar = {**{k: v for k, v in meta.items() if k not in _DIGEST_KEYS}, "format": FORMAT, "version": VERSION}
    try:
        json.dumps(sidecar, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"checkpoint meta is not JSON-serialisable: {exc}") from None
    ensure_writable_dir(target.parent)
    files = {target: _plain_tensors(model.state_dict()),
             **{target.with_name(name): _plain_tensors(tensors) for name, tensors in companions.items()}}
    commit(target, {file: functools.partial(_write_tensors, tensors) for file, tensors in files.items()}, sidecar,
           companions=companions)
    return target


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a ``.safetensors`` file into ``model`` with strict key and shape matching.

    When a layermod sidecar sits next to the file, the file's SHA-256 is checked against it first (a JSON file
    of another format there is ignored).

    Args:
        model: the network, built with the architecture of the weights.
        path: the ``.safetensors`` file.

    Returns:
        ``model``, its weights loaded.

    Raises:
        WeightsError: one line naming the file when it is missing, not a safetensors file (pickle files are
            refused unopened), unreadable or corrupt, not the file its sidecar committed, or when its keys /
            shapes do not match the model, e.g. ``"weights X do not match the model: 2 missing keys (a, b), 1
            unexpected (c), 1 shape mismatch (fc.weight: file (10,64) vs model (5,64))"``.
    """
    file, source = _source(path)
    _check_fits(model, _header_shapes(source, file), file)
    model.load_state_dict(_read_tensors(source, file), strict=True)
    return model


def check_weights_fit(model: nn.Module, path: str | os.PathLike) -> None:
    """Refuse weights ``path`` that :func:`load_weights` would refuse for ``model``, reading only the file's header.

    ``model`` may live on the ``meta`` device: built there first, a model whose size comes from a user's options is
    compared with the file before any memory is allocated for it.
    """
    file, source = _source(path)
    _check_fits(model, _header_shapes(source, file), file)


def _source(path: str | os.PathLike) -> tuple[Path, Path]:
    """(the weights file as named, the file holding its committed bytes), its name and digest checked."""
    file = weights_path(path)
    _check_name(file)
    return file, (committed(file)[1] if has_sidecar(file) else file)


def load_companion(path: str | os.PathLike, name: str) -> dict[str, torch.Tensor]:
    """The tensors of companion file ``name`` saved with the checkpoint ``path`` (see :func:`save_checkpoint`),
    on the CPU, checked against the sidecar's digest (unchecked for a version-1 sidecar).

    Raises:
        WeightsError: the sidecar is missing or bad, records no file ``name``, or the file is missing, corrupt or
            not the one the sidecar committed.
    """
    file = weights_path(path)
    _check_name(file)
    source = committed(file, name=name)[1]
    return _read_tensors(source, file.with_name(name))


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild a registry model from the sidecar's ``"arch"`` / ``"arch_args"``, load its weights, eval mode.

    A sidecar ``"plan": {"remove": [unit names], "outputs": {name: n}}`` (a pruned model; ``"outputs"``
    optional) is applied with :func:`layermod.models.remove_units` after building the architecture and before
    loading the weights. The weights' digest is checked, and the model is first built on the ``meta`` device
    and compared with the safetensors header, so a hostile sidecar costs no memory (see docs/design.md).

    Args:
        path: the ``.safetensors`` file (its sidecar next to it).

    Returns:
        ``(model, meta)`` with ``meta`` the sidecar dict.

    Raises:
        WeightsError: sidecar or weights problems (see :func:`read_sidecar`, :func:`load_weights`), or a sidecar
            without ``"arch"`` (build the model yourself and call :func:`load_weights`).
        ModelError: the architecture is not registered, or its arguments are unknown, of the wrong type or out of
            bounds (one line naming the sidecar and the argument).
        PlanError: the plan names a module the architecture does not have.
    """
    file = weights_path(path)
    _check_name(file)
    if not os.path.lexists(file) and not os.path.lexists(sidecar_path(file)):
        raise WeightsError(f"weights {file} not found; check the path (expected DIR/NAME{WEIGHTS_SUFFIX})")
    meta, source = committed(file)
    side = sidecar_path(file)
    arch, args, plan = _recipe(meta, side)
    shapes = _header_shapes(source, file)
    with torch.device("meta"):
        skeleton = _build(arch, args, plan, side)
    _check_fits(skeleton, shapes, file)
    model = _build(arch, args, plan, side)
    model.load_state_dict(_read_tensors(source, file), strict=True)
    model.eval()
    return model, meta


# --------------------------------------------------------------------------------------------- helpers


def _recipe(meta: dict, side: Path) -> tuple[str, dict, dict | None]:
    """``(arch, arch_args, plan or None)`` from a sidecar, their JSON types checked; the plan as
    ``{"remove": [unit names], "outputs": {name: n}}``."""
    arch = meta.get("arch")
    args = meta.get("arch_args", {})
    if not isinstance(arch, str) or not arch:
        raise WeightsError(f"checkpoint sidecar {side} names no 'arch'; build the model yourself and use load_weights")
    if not isinstance(args, dict):
        raise WeightsError(f"checkpoint sidecar {side}: 'arch_args' must be an object of create() arguments")
    plan = meta.get("plan")
    if plan is None:
        return arch, args, None
    remove = plan.get("remove") if isinstance(plan, dict) else None
    if not isinstance(remove, list) or not all(isinstance(name, str) for name in remove):
        raise WeightsError(f"checkpoint sidecar {side}: 'plan' must be {{\"remove\": [unit names]}}")
    try:
        outputs = models.check_outputs(plan.get("outputs", {}), remove)
    except PlanError as err:
        raise WeightsError(f"checkpoint sidecar {side}: {err}") from None
    return arch, args, {"remove": remove, "outputs": outputs}


def _build(arch: str, args: dict, plan: dict | None, side: Path) -> nn.Module:
    """``models.create(arch, **args)`` (``hub.create`` for a library spec, never with its library's weights) with
    ``plan`` (from :func:`_recipe`) applied (on the current default device)."""
    try:
        if hub.is_library_spec(arch):
            model = hub.create(arch, **hub.recorded(args, "arch_args"))
        else:
            model = models.create(arch, **args)
    except ModelError as err:
        raise ModelError(f"checkpoint sidecar {side}: {err}") from None
    if plan is None:
        return model
    return models.remove_units(model, plan["remove"], outputs=plan["outputs"])


def _plain_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, storage-disjoint copy-or-view of every tensor (safetensors refuses shared or strided
    tensors)."""
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


def _write_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``tensors`` as the safetensors file ``path``, with the one metadata entry (docs/design.md)."""
    save_file(tensors, str(path), metadata=_METADATA)


def _check_name(file: Path) -> None:
    """Refuse pickle files (unopened) and names without the ``.safetensors`` suffix."""
    suffix = file.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise WeightsError(
            f"{file} is a pickle checkpoint ({suffix}); layermod loads only safetensors and never unpickles. Convert it "
            "once in trusted code: safetensors.torch.save_file(torch.load(F, weights_only=True), 'model.safetensors')"
        )
    if not file.name.endswith(WEIGHTS_SUFFIX):
        raise WeightsError(f"{file} is not a .safetensors file; save or convert the weights with safetensors")


def _unreadable(file: Path, exc: Exception) -> WeightsError:
    reason = one_line(exc)
    return WeightsError(f"weights {file} are unreadable or corrupt ({reason}); re-save or re-download them")


def _check_regular(source: Path, shown: Path) -> None:
    """WeightsError unless ``source`` is a regular file (errors name ``shown``)."""
    if not source.exists():
        raise WeightsError(f"weights {shown} not found; check the path (expected DIR/NAME{WEIGHTS_SUFFIX})")
    if not source.is_file():
        raise WeightsError(f"weights {shown} is not a regular file (a device, a FIFO or a directory); give the "
                           f"{WEIGHTS_SUFFIX} file")


def _header_shapes(source: Path, shown: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor in ``source`` from the safetensors header alone (no tensor data is read);
    errors name ``shown``."""
    _check_regular(source, shown)
    try:
        with safe_open(str(source), framework="pt", device="cpu") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # noqa: BLE001  (safetensors raises its own error types, and OSError, for bad files)
        raise _unreadable(shown, exc) from None


def _read_tensors(source: Path, shown: Path) -> dict[str, torch.Tensor]:
    """Every tensor in ``source`` on the CPU; errors name ``shown``."""
    _check_regular(source, shown)
    try:
        with safe_open(str(source), framework="pt", device="cpu") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # noqa: BLE001
        raise _unreadable(shown, exc) from None


def _check_fits(model: nn.Module, shapes: Mapping[str, tuple[int, ...]], file: Path) -> None:
    """WeightsError listing the missing, unexpected and mismatched keys of ``shapes`` against ``model``."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    mismatched = [f"{k}: file {_shape(shapes[k])} vs model {_shape(expected[k])}"
                  for k in expected if k in shapes and shapes[k] != expected[k]]
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


def _shape(shape: Any) -> str:
    return "(" + ",".join(str(int(s)) for s in shape) + ")"


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES])
    return shown + (", ..." if len(names) > _MAX_NAMES else "")


def _count(n: int, noun: str, plural: str = "s") -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}{plural}"
