"""Arrays ``X`` and ``y`` read from a user's ``.npz`` file without pickle (``--data FILE.npz``).

Decisions, on purpose:

* **No pickle, members checked before they are read.** :func:`load_npz` reads the zip archive member by
  member: only stored or deflated members, each member's declared size bounded as in
  :mod:`layermod.data.bounds` (a stored member its packed size, a deflated one the expansion bound of its
  packed size), each ``.npy`` header (format 1.0 or 2.0) read first and its dtype (numeric: bool, int, uint,
  float) and shape checked to declare exactly the bytes of the member, before the array is allocated.
* **Types.** ``X`` comes back as float32, ``y`` as it was stored, both in native byte order; labels are
  checked by whoever uses them (:func:`layermod.data.arrays.as_dataset`).
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from layermod.data.bounds import expansion_limit
from layermod.errors import DatasetError, one_line
from layermod.io.files import open_regular

__all__ = ["load_npz"]

_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
_NUMERIC_KINDS = "biuf"  # numpy dtype kinds of bool, int, uint, float


def load_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``X`` and ``y`` in native byte order from a ``.npz`` file, without pickle.

    Each member's sizes are checked against the file, and its ``.npy`` header (numeric dtype, shape) against the
    member, before the array is allocated (see the module docstring).

    Args:
        path: the ``.npz`` file, with members ``X.npy`` and ``y.npy``.

    Returns:
        ``(X, y)``: X float32 (N, ...), y (N,).

    Raises:
        DatasetError: (one line naming the file) a file that is no zip archive, lacks ``X.npy`` or ``y.npy``, or
            holds an array that is not numeric or does not match its header.
    """
    path = Path(path)
    try:
        with open_regular(path) as fh, zipfile.ZipFile(fh) as archive:
            size = os.fstat(fh.fileno()).st_size
            x = _npz_array(archive, "X", path, size)
            y = _npz_array(archive, "y", path, size)
    except DatasetError:
        raise
    except (OSError, EOFError, ValueError, TypeError, RuntimeError, NotImplementedError, zlib.error,
            zipfile.BadZipFile) as e:
        raise DatasetError(f"cannot read {path} ({one_line(e)}); it must be a .npz file with arrays X and y") from None
    return x.astype(np.float32, copy=False), y.astype(y.dtype.newbyteorder("="), copy=False)


def _npz_array(archive: zipfile.ZipFile, name: str, path: Path, size: int) -> np.ndarray:
    """Member ``<name>.npy`` of the ``.npz`` archive at ``path`` (``size`` bytes), checked before it is read."""
    fix = "save it again with np.savez(path, X=..., y=...) from numeric arrays"
    try:
        info = archive.getinfo(f"{name}.npy")
    except KeyError:
        raise DatasetError(f"{path} lacks array {name}; save it with np.savez(path, X=..., y=...)") from None
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise DatasetError(f"{path} member {info.filename} uses zip compression method {info.compress_type}, "
                           f"not stored or deflated; {fix} (or np.savez_compressed)")
    stored = info.compress_type == zipfile.ZIP_STORED
    most = info.compress_size if stored else expansion_limit(info.compress_size)
    if info.compress_size > size or info.file_size > most:
        raise DatasetError(f"{path} member {info.filename} declares {info.file_size} bytes packed in "
                           f"{info.compress_size} of a {size}-byte file, so it is corrupt or a zip bomb; {fix}")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in _NPY_HEADERS:
            raise DatasetError(f"{path} array {name} is in .npy format version {version}; {fix}")
        shape, _, dtype = _NPY_HEADERS[version](member)
        data_bytes = info.file_size - member.tell()
    if dtype.kind not in _NUMERIC_KINDS:
        raise DatasetError(f"{path} array {name} holds {dtype} values, not numbers; {fix}")
    declared = math.prod(shape) * dtype.itemsize
    if any(d < 0 for d in shape) or declared != data_bytes:
        raise DatasetError(f"{path} array {name} declares shape {shape} of {dtype}, {declared} bytes, but holds "
                           f"{data_bytes}; {fix}")
    with archive.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False)
