"""Checkpoints: weights as safetensors plus a JSON sidecar that describes how to rebuild the model and commits
the pair.

A checkpoint is two files side by side, plus any companion files saved with them (a training run's momentum
buffers)::

    DIR/best.safetensors   the state dict (tensors only)
    DIR/best.json          {"format": "layermod-checkpoint", "version": 2, "arch": ..., "arch_args": {...},
                            "weights_sha256": "...", "files_sha256": {"COMPANION.safetensors": "..."}, ...}

**One save is one commit.** The sidecar is the commit record: it holds the SHA-256 of the bytes of the weights
file (``weights_sha256``) and of every companion (``files_sha256``, by file name). :func:`save_checkpoint`

1. settles what an earlier, interrupted save of this checkpoint left behind (see below);
2. writes the weights and each companion to a hidden staging file next to its final name
   (``DIR/.best.safetensors.pending``) and hashes it (streaming);
3. replaces ``DIR/best.json`` atomically (temporary file + rename): this rename is the commit;
4. renames each staging file onto its final name.

A process killed at any point leaves a loadable checkpoint: before step 3 the previous pair (the old sidecar's
digests match the files in place; the staging files are ignored), after it the new one (a file whose bytes do
not match the sidecar yet is found, by its digest, in its staging file and read from there). Loading never
writes or deletes anything. The next save settles the directory: a staging file the sidecar commits is renamed
into place, and every other staging file and stale atomic-write temporary of the pair and its companions
(``.best.safetensors.pending``, ``.best.json.*.tmp``, ...) is deleted. An exception inside the save
(``KeyboardInterrupt`` included) settles at once, so it leaves no hidden file behind. One writer per checkpoint;
a load that races a save re-reads the sidecar rather than report a mismatch. The guarantee covers killed
processes, not power cuts (nothing is fsynced). Releases that read only version-1 sidecars refuse these.

Decisions, on purpose:

* **Verified.** Every load (:func:`load_checkpoint`, :func:`load_weights` when a layermod sidecar sits next to
  the file, :func:`load_companion`) hashes the file and compares it with the sidecar: a damaged or swapped file
  is one :class:`~layermod.errors.WeightsError` line naming the files to delete, never a silent load. Version-1
  sidecars (written before the digests) still load, unverified.
* **Untrusted sidecars.** A sidecar only names a registered architecture and its arguments, which
  :func:`layermod.models.create` bounds and checks against the builder's signature. :func:`load_checkpoint` then
  builds the model on the ``meta`` device (no memory) and compares its keys and shapes with the safetensors
  header (no tensor data read) before it builds the real model, so a sidecar cannot make it allocate more than
  the weights file holds.
* **No pickle, ever.** Weights are read and written only with ``safetensors``; a ``.pt`` / ``.pth`` / ``.bin``
  (pickle) file is refused by its suffix before it is opened, with a one-line recipe to convert it.
* **Strict.** :func:`load_weights` compares keys and shapes itself and reports every kind of mismatch in one line
  (at most 3 names of each kind) before touching the model, so a failed load leaves the model unchanged.
  Dtypes are cast to the model's, and tensors land on the model's device.
* **Shared storage.** Tied weights (one tensor under several keys) and views into a larger storage are saved as
  separate contiguous copies under every key, so the file loads back with strict matching.
* **Reproducible.** The same weights give the same bytes, in any process: the safetensors header carries one
  metadata entry (``{"format": "pt"}``; safetensors writes several in an order that changes from process to
  process), the sidecar has sorted keys and no timestamps. Two identical training runs write identical
  checkpoints; their sidecars differ only in the ``seconds`` of the history rows.
* **Paths.** ``DIR/best`` and ``DIR/best.safetensors`` name the same checkpoint; a directory means
  ``DIR/best.safetensors``.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from layermod import models
from layermod.errors import ModelError, OutputError, WeightsError
from layermod.io.files import atomic_path, ensure_writable_dir

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

FORMAT = "layermod-checkpoint"
VERSION = 2
SUFFIX = ".safetensors"
DEFAULT_NAME = "best"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")
MAX_SIDECAR_BYTES = 16 * 2**20
_PENDING = ".pending"
_DIGEST_KEYS = ("weights_sha256", "files_sha256")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_METADATA = {"format": "pt"}  # one entry: safetensors writes several in an order that differs between processes
_ATTEMPTS = 3
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


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    meta: dict,
    companions: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> Path:
    """Write ``model``'s state dict to ``path`` (safetensors) and ``meta`` to the JSON sidecar next to it, as one
    commit (see the module doc).

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
        raise WeightsError(f"cannot save {target}: checkpoints are written as .safetensors; use DIR/NAME{SUFFIX}")
    if not isinstance(meta, dict):
        raise WeightsError(f"checkpoint meta must be a dict, got {type(meta).__name__}")
    companions = dict(companions or {})
    for name in companions:
        if (not isinstance(name, str) or Path(name).name != name or name.startswith(".") or not name.endswith(SUFFIX)
                or name == target.name):
            raise WeightsError(f"companion file {name!r} of {target} must be a plain NAME{SUFFIX} file name other than "
                               f"{target.name!r}")
    sidecar = {**{k: v for k, v in meta.items() if k not in _DIGEST_KEYS}, "format": FORMAT, "version": VERSION}
    try:
        json.dumps(sidecar, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"checkpoint meta is not JSON-serialisable: {exc}") from None
    ensure_writable_dir(target.parent)
    files = {target: _plain_tensors(model.state_dict()),
             **{target.with_name(name): _plain_tensors(tensors) for name, tensors in companions.items()}}
    settle(target, companions)
    try:
        digests = {}
        for file, tensors in files.items():
            save_file(tensors, str(_pending(file)), metadata=_METADATA)
            digests[file.name] = _sha256(_pending(file))
        sidecar["weights_sha256"] = digests.pop(target.name)
        if digests:
            sidecar["files_sha256"] = digests
        text = json.dumps(sidecar, indent=2, sort_keys=True, allow_nan=False) + "\n"
        with atomic_path(sidecar_path(target)) as tmp:
            tmp.write_text(text, encoding="utf-8")
        for file in files:
            os.replace(_pending(file), file)
    except BaseException:
        settle(target, companions)  # before the commit: drop the staged files; after it: finish the renames
        raise
    return target


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a ``.safetensors`` file into ``model`` with strict key and shape matching; returns ``model``.

    When a layermod sidecar sits next to the file, the file's SHA-256 is checked against it first (a JSON file
    of another format there is ignored).

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
    return file, (_committed(file)[1] if _has_sidecar(file) else file)


def load_companion(path: str | os.PathLike, name: str) -> dict[str, torch.Tensor]:
    """The tensors of companion file ``name`` saved with the checkpoint ``path`` (see :func:`save_checkpoint`),
    on the CPU, checked against the sidecar's digest (unchecked for a version-1 sidecar).

    Raises:
        WeightsError: the sidecar is missing or bad, records no file ``name``, or the file is missing, corrupt or
            not the one the sidecar committed.
    """
    file = weights_path(path)
    _check_name(file)
    source = _committed(file, name)[1]
    return _read_tensors(source, file.with_name(name))


def read_sidecar(path: str | os.PathLike) -> dict:
    """The JSON sidecar of weights ``path`` (``DIR/best.safetensors`` -> ``DIR/best.json``) as a dict.

    Raises:
        WeightsError: the sidecar is missing, larger than 16 MiB, not valid JSON, not an object, from another
            format / a newer version, or (version 2) without valid digests.
    """
    file = sidecar_path(path)
    meta = _read_json(file)
    if not isinstance(meta, dict):
        raise WeightsError(f"checkpoint sidecar {file} must hold a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise WeightsError(f"checkpoint sidecar {file} has format {meta.get('format')!r:.60}, expected {FORMAT!r}")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= VERSION:
        raise WeightsError(f"checkpoint sidecar {file} has version {version!r:.60}; this layermod reads versions 1 to "
                           f"{VERSION}, upgrade it for a newer one")
    if version >= 2:
        files = meta.get("files_sha256", {})
        if (not _is_digest(meta.get("weights_sha256")) or not isinstance(files, dict)
                or not all(_is_digest(digest) for digest in files.values())):
            raise WeightsError(f"checkpoint sidecar {file} lacks valid SHA-256 digests (weights_sha256, files_sha256); "
                               "save the checkpoint again")
    return meta


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild a registry model from the sidecar's ``"arch"`` / ``"arch_args"``, load its weights, eval mode.

    A sidecar ``"plan": {"remove": [unit names]}`` (a pruned model) is applied with
    :func:`layermod.models.remove_units` after building the architecture and before loading the weights. The
    weights' digest is checked, and the model is first built on the ``meta`` device and compared with the
    safetensors header, so a hostile sidecar costs no memory (see the module doc).

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
    meta, source = _committed(file)
    side = sidecar_path(file)
    arch, args, remove = _recipe(meta, side)
    shapes = _header_shapes(source, file)
    with torch.device("meta"):
        skeleton = _build(arch, args, remove, side)
    _check_fits(skeleton, shapes, file)
    model = _build(arch, args, remove, side)
    model.load_state_dict(_read_tensors(source, file), strict=True)
    model.eval()
    return model, meta


def settle(path: str | os.PathLike, companions: Iterable[str] = ()) -> None:
    """Bring checkpoint ``path`` to its committed state after an interrupted save (see the module doc): rename
    each staging file whose bytes the sidecar commits (where the file in place does not match) onto its final
    name, and delete every other staging file and stale atomic-write temporary of the weights, the sidecar and
    the ``companions`` (file names). :func:`save_checkpoint` calls it first; nothing to do is a no-op.

    Raises:
        OutputError: a file cannot be renamed or deleted (a read-only directory).
    """
    target = weights_path(path)
    committed: dict[str, str] = {}
    with contextlib.suppress(WeightsError):
        meta = read_sidecar(target) if _has_sidecar(target) else {}
        if meta.get("version", 1) >= 2:
            committed = {target.name: meta["weights_sha256"], **meta.get("files_sha256", {})}
    files = [target, *(target.with_name(name) for name in companions)]
    try:
        for file in files:
            pending = _pending(file)
            if pending.exists():
                digest = committed.get(file.name)
                if digest is not None and _sha256(file) != digest and _sha256(pending) == digest:
                    os.replace(pending, file)
                else:
                    pending.unlink(missing_ok=True)
        for file in [*files, sidecar_path(target)]:
            for stale in glob.glob(glob.escape(str(file.with_name("." + file.name))) + ".*.tmp"):
                Path(stale).unlink(missing_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot tidy checkpoint {target} after an interrupted save: {exc.strerror or exc}; check "
                          f"that {target.parent} is writable") from None


# --------------------------------------------------------------------------------------------- helpers


def _pending(file: Path) -> Path:
    """The staging file of ``file``: ``DIR/.NAME.pending``."""
    return file.with_name(f".{file.name}{_PENDING}")


def _committed(weights: Path, name: str | None = None) -> tuple[dict, Path]:
    """The sidecar of ``weights`` and the path that holds the committed bytes of the weights (``name`` None) or
    of companion ``name``: the file itself or its staging file, whichever matches the recorded digest (the file
    itself, unchecked, for a version-1 sidecar). A sidecar that changes meanwhile (a save finishing) is re-read."""
    target = weights if name is None else weights.with_name(name)
    for _ in range(_ATTEMPTS):
        meta = read_sidecar(weights)
        if meta["version"] < 2:
            return meta, target
        digest = meta["weights_sha256"] if name is None else meta.get("files_sha256", {}).get(name)
        if digest is None:
            raise WeightsError(f"checkpoint sidecar {sidecar_path(weights)} records no file {name!r}; it was not "
                               "saved with this checkpoint")
        for candidate in (target, _pending(target)):
            if _sha256(candidate) == digest:
                return meta, candidate
        if read_sidecar(weights) == meta:
            break
    side = sidecar_path(weights)
    files = ", ".join([weights.name, side.name, *meta.get("files_sha256", {})])
    if not target.exists():
        problem = f"{target.name} is missing"
    else:
        problem = (f"{target.name} does not belong to {side.name} (its SHA-256 differs from the one recorded there: "
                   "damaged or replaced after saving)")
    raise WeightsError(f"checkpoint {weights} is inconsistent: {problem}; restore its files from a backup, or delete "
                       f"{files} and save it anew")


def _sha256(file: Path) -> str | None:
    """SHA-256 of the bytes of ``file`` (hex), read in chunks; None when it does not exist."""
    sha = hashlib.sha256()
    try:
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(2**20), b""):
                sha.update(chunk)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise WeightsError(f"cannot read {file}: {exc.strerror or exc}; check its permissions") from None
    return sha.hexdigest()


def _is_digest(value: object) -> bool:
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def _read_json(file: Path) -> object:
    """The JSON value in ``file`` (at most :data:`MAX_SIDECAR_BYTES`); WeightsError otherwise."""
    try:
        with open(file, "rb") as fh:
            data = fh.read(MAX_SIDECAR_BYTES + 1)
    except FileNotFoundError:
        raise WeightsError(f"checkpoint sidecar {file} not found; it is written next to the weights by save_checkpoint") from None
    except OSError as exc:
        raise WeightsError(f"cannot read checkpoint sidecar {file}: {exc.strerror or exc}") from None
    if len(data) > MAX_SIDECAR_BYTES:
        raise WeightsError(f"checkpoint sidecar {file} is larger than {MAX_SIDECAR_BYTES // 2**20} MiB, so not a "
                           "layermod sidecar; point at the weights of a layermod checkpoint")
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits, nesting
        reason = " ".join(str(exc).split())[:80]
        raise WeightsError(f"checkpoint sidecar {file} is not valid JSON ({reason}); rewrite it or retrain") from None


def _has_sidecar(weights: Path) -> bool:
    """True when the JSON file next to ``weights`` is a layermod sidecar (by its ``format``), whatever its state."""
    if not sidecar_path(weights).is_file():
        return False
    try:
        meta = _read_json(sidecar_path(weights))
    except WeightsError:
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def _recipe(meta: dict, side: Path) -> tuple[str, dict, list[str] | None]:
    """``(arch, arch_args, units to remove or None)`` from a sidecar, their JSON types checked."""
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
    return arch, args, remove


def _build(arch: str, args: dict, remove: list[str] | None, side: Path) -> nn.Module:
    """``models.create(arch, **args)`` with ``remove`` applied (on the current default device)."""
    try:
        model = models.create(arch, **args)
    except ModelError as err:
        raise ModelError(f"checkpoint sidecar {side}: {err}") from None
    if remove is None:
        return model
    return models.remove_units(model, remove)


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


def _check_name(file: Path) -> None:
    """Refuse pickle files (unopened) and names without the ``.safetensors`` suffix."""
    suffix = file.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise WeightsError(
            f"{file} is a pickle checkpoint ({suffix}); layermod loads only safetensors and never unpickles. Convert it "
            "once in trusted code: safetensors.torch.save_file(torch.load(F, weights_only=True), 'model.safetensors')"
        )
    if not file.name.endswith(SUFFIX):
        raise WeightsError(f"{file} is not a .safetensors file; save or convert the weights with safetensors")


def _unreadable(file: Path, exc: Exception) -> WeightsError:
    reason = " ".join(str(exc).split())[:200] or type(exc).__name__
    return WeightsError(f"weights {file} are unreadable or corrupt ({reason}); re-save or re-download them")


def _header_shapes(source: Path, shown: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor in ``source`` from the safetensors header alone (no tensor data is read);
    errors name ``shown``."""
    if not source.is_file():
        raise WeightsError(f"weights {shown} not found; check the path (expected DIR/NAME{SUFFIX})")
    try:
        with safe_open(str(source), framework="pt", device="cpu") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # noqa: BLE001  (safetensors raises its own error types, and OSError, for bad files)
        raise _unreadable(shown, exc) from None


def _read_tensors(source: Path, shown: Path) -> dict[str, torch.Tensor]:
    """Every tensor in ``source`` on the CPU; errors name ``shown``."""
    if not source.is_file():
        raise WeightsError(f"weights {shown} not found; check the path (expected DIR/NAME{SUFFIX})")
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
