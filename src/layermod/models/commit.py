"""A checkpoint's files committed as one step: staged files, their digests, and the sidecar as the commit record.

The decisions behind it: docs/design.md, section layermod.models.commit.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from layermod.errors import OutputError, WeightsError, one_line
from layermod.io.files import atomic_path, open_regular
from layermod.io.rundir import BEST, SIDECAR_SUFFIX, WEIGHTS_SUFFIX

__all__ = [
    "FORMAT",
    "MAX_SIDECAR_BYTES",
    "PICKLE_SUFFIXES",
    "VERSION",
    "commit",
    "committed",
    "has_sidecar",
    "read_sidecar",
    "settle",
    "sidecar_path",
    "weights_path",
]

FORMAT = "layermod-checkpoint"
VERSION = 2
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")
MAX_SIDECAR_BYTES = 16 * 2**20
_PENDING = ".pending"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ATTEMPTS = 3


def weights_path(path: str | os.PathLike) -> Path:
    """Resolve ``path`` to a ``.safetensors`` file name: a directory means ``DIR/best.safetensors``, an existing
    file or a pickle suffix is kept as is (to be refused by name), and any other name without the suffix gets it
    (``DIR/best`` -> ``DIR/best.safetensors``)."""
    p = Path(path)
    if p.is_dir():
        return p / (BEST + WEIGHTS_SUFFIX)
    if p.is_file() or p.suffix.lower() in PICKLE_SUFFIXES or p.name.endswith(WEIGHTS_SUFFIX):
        return p
    return p.with_name(p.name + WEIGHTS_SUFFIX)


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of weights ``path``: ``DIR/best.safetensors`` -> ``DIR/best.json``."""
    p = weights_path(path)
    stem = p.name[: -len(WEIGHTS_SUFFIX)] if p.name.endswith(WEIGHTS_SUFFIX) else p.stem
    return p.with_name(stem + SIDECAR_SUFFIX)


def commit(target: Path, writers: Mapping[Path, Callable[[Path], None]], sidecar: dict,
           *,
           companions: Iterable[str] = ()) -> None:
    """Write the weights ``target`` and its companions as one commit (see docs/design.md).

    Args:
        target: the weights file; ``writers`` must hold it.
        writers: file -> ``write(path)``, which writes that file's bytes to ``path`` (its staging file).
        sidecar: the JSON-serialisable commit record; ``"weights_sha256"`` and (with companions)
            ``"files_sha256"`` are set here.
        companions: the companions' file names, settled with the weights.
    """
    companions = list(companions)
    settle(target, companions=companions)
    try:
        digests = {}
        for file, write in writers.items():
            write(_pending(file))
            digests[file.name] = _sha256(_pending(file))
        sidecar["weights_sha256"] = digests.pop(target.name)
        if digests:
            sidecar["files_sha256"] = digests
        text = json.dumps(sidecar, indent=2, sort_keys=True, allow_nan=False) + "\n"
        with atomic_path(sidecar_path(target)) as tmp:
            tmp.write_text(text, encoding="utf-8")
        for file in writers:
            os.replace(_pending(file), file)
    except BaseException:
        settle(target, companions=companions)  # before the commit: drop the staged files; after it: finish the renames
        raise


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


def settle(path: str | os.PathLike, *, companions: Iterable[str] = ()) -> None:
    """Bring checkpoint ``path`` to its committed state after an interrupted save (see docs/design.md): rename
    each staging file whose bytes the sidecar commits (where the file in place does not match) onto its final
    name, and delete every other staging file and stale atomic-write temporary of the weights, the sidecar and
    the ``companions`` (file names). :func:`commit` calls it first; nothing to do is a no-op.

    Raises:
        OutputError: a file cannot be renamed or deleted (a read-only directory).
    """
    target = weights_path(path)
    recorded: dict[str, str] = {}
    with contextlib.suppress(WeightsError):
        meta = read_sidecar(target) if has_sidecar(target) else {}
        if meta.get("version", 1) >= 2:
            recorded = {target.name: meta["weights_sha256"], **meta.get("files_sha256", {})}
    files = [target, *(target.with_name(name) for name in companions)]
    try:
        for file in files:
            pending = _pending(file)
            if pending.exists():
                digest = recorded.get(file.name)
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


def committed(weights: Path, *, name: str | None = None) -> tuple[dict, Path]:
    """The sidecar of ``weights`` and the path that holds the committed bytes of the weights (``name`` None) or
    of companion ``name``: the file itself or its staging file, whichever matches the recorded digest (the file
    itself, unchecked, for a version-1 sidecar). A sidecar that changes meanwhile (a save finishing) is re-read.

    Raises:
        WeightsError: the sidecar cannot be read or records no file ``name``, or neither file matches its digest
            (one line naming the files to restore or delete).
    """
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


def has_sidecar(weights: Path) -> bool:
    """True when the JSON file next to ``weights`` is a layermod sidecar (by its ``format``), whatever its state."""
    if not sidecar_path(weights).is_file():
        return False
    try:
        meta = _read_json(sidecar_path(weights))
    except WeightsError:
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def _pending(file: Path) -> Path:
    """The staging file of ``file``: ``DIR/.NAME.pending``."""
    return file.with_name(f".{file.name}{_PENDING}")


def _sha256(file: Path) -> str | None:
    """SHA-256 of the bytes of ``file`` (hex), read in chunks; None when it does not exist."""
    sha = hashlib.sha256()
    try:
        with open_regular(file) as fh:
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
        with open_regular(file) as fh:
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
        reason = one_line(exc, 80)
        raise WeightsError(f"checkpoint sidecar {file} is not valid JSON ({reason}); rewrite it or retrain") from None
