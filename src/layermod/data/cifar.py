"""CIFAR-10 and CIFAR-100 read from the official "python version" archives.

The decisions behind it: docs/design.md, section layermod.data.cifar.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import pickletools
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layermod.data.arrays import ArrayDataset
from layermod.data.bounds import GZIP_MAGIC, expansion_limit
from layermod.data.download import Wanted, locate
from layermod.errors import DatasetError, one_line
from layermod.io.files import open_regular

__all__ = ["CIFAR_DATASETS", "load_cifar"]


@dataclass(frozen=True)
class _Layout:
    """Files, pickle keys and statistics of one CIFAR set."""

    folder: str
    archive: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    labels_key: bytes
    names_key: bytes
    n_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def batches(self, split: str) -> tuple[str, ...]:
        return self.train if split == "train" else self.test


_LAYOUTS = {
    "cifar10": _Layout(
        folder="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test=("test_batch",),
        meta="batches.meta",
        labels_key=b"labels",
        names_key=b"label_names",
        n_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": _Layout(
        folder="cifar-100-python",
        archive="cifar-100-python.tar.gz",
        train=("train",),
        test=("test",),
        meta="meta",
        labels_key=b"fine_labels",
        names_key=b"fine_label_names",
        n_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}
CIFAR_DATASETS: tuple[str, ...] = tuple(_LAYOUTS)
_URLS = {name: f"https://www.cs.toronto.edu/~kriz/{layout.archive}" for name, layout in _LAYOUTS.items()}
_SIDE = 32
_PIXELS = 3 * _SIDE * _SIDE

_DTYPE_NAMES = frozenset("b1 i1 i2 i4 i8 u1 u2 u4 u8 f2 f4 f8".split())  # numpy.dtype names a batch may use
_PICKLE_OPCODES = frozenset(
    "PROTO FRAME STOP MARK POP POP_MARK NONE NEWTRUE NEWFALSE INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT "
    "BINFLOAT STRING BINSTRING SHORT_BINSTRING BINBYTES SHORT_BINBYTES BINBYTES8 UNICODE BINUNICODE "
    "SHORT_BINUNICODE BINUNICODE8 EMPTY_LIST LIST APPEND APPENDS EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_DICT "
    "DICT SETITEM SETITEMS GLOBAL STACK_GLOBAL REDUCE BUILD PUT BINPUT LONG_BINPUT MEMOIZE GET BINGET "
    "LONG_BINGET".split()
)
_PICKLE_BUILDERS = frozenset(
    "EMPTY_LIST LIST EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_DICT DICT GLOBAL STACK_GLOBAL REDUCE BUILD".split()
)
_PICKLE_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MAX_PICKLE_BUILDS = 10_000  # containers and calls in one pickle; an official batch has a few dozen
_MAX_ARCHIVE_MEMBERS = 1000  # archive entries scanned for the wanted ones; the official archives have 5 and 9


def load_cifar(
    name: str,
    *,
    split: str = "test",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> ArrayDataset:
    """Load a CIFAR split as normalised float32 images.

    Args:
        name: ``"cifar10"`` or ``"cifar100"`` (case-insensitive).
        split: ``"train"`` or ``"test"``.
        data_dir: folder holding ``cifar-10-batches-py/`` / ``cifar-100-python/`` or the ``.tar.gz`` archive
            (or a ``<name>`` subfolder of it, or the extracted folder itself); when given, the only place
            searched.
        download: fetch the archive into the per-user cache when no copy is found.

    Returns:
        :class:`~layermod.data.ArrayDataset` with data (N, 3, 32, 32) float32, targets (N,) int64 and the
        class names of the meta file.
    """
    key = str(name).lower()
    if key not in _LAYOUTS:
        raise DatasetError(f"unknown CIFAR dataset {name!r}; use one of {', '.join(CIFAR_DATASETS)}")
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split {split!r} for {key}; use 'train' or 'test'")
    layout = _LAYOUTS[key]
    source = locate(_wanted(key, layout), data_dir, download)
    batches = layout.batches(split)
    raw = _read_source(source, layout, (*batches, layout.meta))

    classes = _class_names(*raw[layout.meta], layout)
    images, labels = [], []
    for batch in batches:
        x, y = _batch_arrays(*raw[batch], layout)
        images.append(x)
        labels.append(y)
    pixels = np.concatenate(images)
    x = torch.from_numpy(pixels).view(len(pixels), 3, _SIDE, _SIDE).float().div_(255.0)
    mean = torch.tensor(layout.mean).view(1, 3, 1, 1)
    std = torch.tensor(layout.std).view(1, 3, 1, 1)
    x.sub_(mean).div_(std)
    y = torch.from_numpy(np.concatenate(labels))
    return ArrayDataset(x, y, classes, key, normalization={"mean": list(layout.mean), "std": list(layout.std)})


class _Refusal(Exception):
    """Raised while a pickle is scanned or loaded, for what no CIFAR batch asks; reported as a DatasetError."""


def _refuse_ndarray(*args: Any) -> None:
    """Stand-in for ``numpy.ndarray``: a pickle names it as ``_reconstruct``'s first argument, never calls it."""
    raise _Refusal("it asks numpy.ndarray to allocate an array of a shape the pickle chooses")


class _PickledDtype:
    """Stand-in for ``numpy.dtype(name, align, copy)``: a plain number type, its byte order from the state."""

    def __init__(self, name: Any, align: Any = False, copy: Any = False) -> None:
        text = name.decode("latin-1") if isinstance(name, bytes) else name
        if not isinstance(text, str) or text not in _DTYPE_NAMES:
            shown = repr(text[:16]) if isinstance(text, str) else f"given as a {type(text).__name__}"
            raise _Refusal(f"it asks for numpy dtype {shown}, which no CIFAR batch holds")
        self.dtype = np.dtype(text)

    def __setstate__(self, state: Any) -> None:
        """``state`` is ``(version, byteorder, subarray, names, fields, ...)``; only a byte order is accepted."""
        order = state[1] if isinstance(state, tuple) and len(state) > 4 else None
        order = order.decode("latin-1") if isinstance(order, bytes) else order  # a Python 2 str
        if order not in ("<", ">", "|", "=") or any(part is not None for part in state[2:5]):
            raise _Refusal("its dtype state is not that of a plain number type")
        self.dtype = self.dtype.newbyteorder(order)


class _PickledArray:
    """Stand-in for numpy's ``_reconstruct(numpy.ndarray, shape, dtype)``: allocates nothing.

    ``__setstate__`` sets ``array`` to a view of the bytes the pickle holds, once they are exactly the bytes
    the pickled shape and dtype need; ``array`` stays ``None`` when the pickle gives no state.
    """

    def __init__(self, subtype: Any, shape: Any, dtype: Any) -> None:
        if subtype is not _refuse_ndarray:
            raise _Refusal("it asks numpy to rebuild something other than an ndarray")
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        """``state`` is ``([version,] shape, dtype, is_fortran, raw bytes)``."""
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refusal("its array state is not (shape, dtype, order, bytes)")
        shape, dtype, fortran, raw = state[-4:]
        if (
            not isinstance(shape, tuple)
            or len(shape) > 32
            or not all(type(d) is int and d >= 0 for d in shape)
            or not isinstance(dtype, _PickledDtype)
            or type(fortran) not in (bool, int)
            or not isinstance(raw, bytes)
        ):
            raise _Refusal("its array state is not (shape, dtype, order, bytes)")
        needed = math.prod(shape) * dtype.dtype.itemsize
        if needed != len(raw):
            raise _Refusal(f"its array of shape {shape} needs {needed} bytes but the pickle holds {len(raw)}")
        self.array = np.frombuffer(raw, dtype.dtype).reshape(shape, order="F" if fortran else "C")


_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _PickledArray,
    ("numpy._core.multiarray", "_reconstruct"): _PickledArray,
    ("numpy", "ndarray"): _refuse_ndarray,
    ("numpy", "dtype"): _PickledDtype,
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the stand-ins of numpy's array globals and refuses every other global."""

    def __init__(self, raw: bytes) -> None:
        super().__init__(io.BytesIO(raw), encoding="bytes")

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _NUMPY_GLOBALS[(module, name)]
        except KeyError:
            raise _Refusal(f"it asks to run code ({module}.{name}), and a CIFAR batch holds only data") from None


def _check_opcodes(raw: bytes) -> None:
    """Raise :class:`_Refusal` unless ``raw`` is a pickle of plain data within the bounds docs/design.md lists.

    :func:`pickletools.genops` parses every opcode without building anything and fails on a string or bytes
    length past the end of the data; this adds the opcode whitelist, the count of containers and calls, and
    the memo slots and frames that must fit the pickle.
    """
    builds = 0
    for index, (op, arg, pos) in enumerate(pickletools.genops(raw)):
        if op.name not in _PICKLE_OPCODES:
            raise _Refusal(f"it uses pickle opcode {op.name}, which no CIFAR batch does")
        builds += op.name in _PICKLE_BUILDERS
        if builds > _MAX_PICKLE_BUILDS:
            raise _Refusal(f"it builds more than {_MAX_PICKLE_BUILDS} containers and objects, unlike a CIFAR batch")
        if op.name in _PICKLE_PUTS and arg > index:
            raise _Refusal(f"it stores memo slot {arg} after {index} opcodes")
        if op.name == "FRAME" and arg > len(raw) - pos:
            raise _Refusal(f"it declares a frame of {arg} bytes, longer than the pickle")


def _unpickle(raw: bytes, where: str, fix: str) -> dict:
    """The dict pickled in ``raw``, scanned and read without running code; ``where`` names it in errors.

    ``MemoryError`` is not turned into a DatasetError: the scan bounds what a pickle can ask for, so running out
    of memory means the machine is short of it, not that the file is bad.
    """
    try:
        _check_opcodes(raw)
        batch = _BatchUnpickler(raw).load()
    except _Refusal as e:
        raise DatasetError(f"{where} refuses to load: {e}; {fix}") from None
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001  (a corrupt pickle fails in many ways: UnpicklingError, EOFError, ...)
        raise DatasetError(f"{where} is not a valid CIFAR pickle ({one_line(e)}); {fix}") from None
    if not isinstance(batch, dict):
        raise DatasetError(f"{where} holds a {type(batch).__name__}, not a CIFAR dict; {fix}")
    return batch


def _field(batch: dict, key: bytes, where: str, fix: str) -> Any:
    """``batch[key]`` (a pickled array as its numpy array), also found under the str key of a Python 3 pickle."""
    for candidate in (key, key.decode()):
        if candidate in batch:
            value = batch[candidate]
            if not isinstance(value, _PickledArray):
                return value
            if value.array is None:
                raise DatasetError(f"{where} holds {key.decode()!r} as a numpy array without its data; {fix}")
            return value.array
    raise DatasetError(f"{where} has no {key.decode()!r} entry; {fix}")


def _batch_arrays(raw: bytes, where: str, fix: str, layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3072) uint8 and labels (N,) int64 of one batch, checked."""
    batch = _unpickle(raw, where, fix)
    images = _field(batch, b"data", where, fix)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.shape[1:] != (_PIXELS,):
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise DatasetError(f"{where} holds images of {got}, not (N, {_PIXELS}) uint8; {fix}")
    labels = _field(batch, layout.labels_key, where, fix)
    # checked flat and in range before any array is made: nested lists shared through the memo stay unexpanded
    if isinstance(labels, (list, tuple)) and all(type(v) is int for v in labels):
        low, high = (min(labels), max(labels)) if labels else (0, 0)
    elif isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "iu":
        low, high = (int(labels.min()), int(labels.max())) if len(labels) else (0, 0)
    else:
        raise DatasetError(f"{where} holds {layout.labels_key.decode()!r} that are not a list of integers; {fix}")
    if len(labels) != len(images):
        raise DatasetError(f"{where} has {len(images)} images but {len(labels)} labels; {fix}")
    if low < 0 or high >= layout.n_classes:
        raise DatasetError(f"{where} has labels in [{low}, {high}] but {layout.n_classes} classes; {fix}")
    return images, np.asarray(labels, dtype=np.int64)


def _class_names(raw: bytes, where: str, fix: str, layout: _Layout) -> list[str]:
    """The ``n_classes`` class names of the meta file."""
    names = _field(_unpickle(raw, where, fix), layout.names_key, where, fix)
    if (
        not isinstance(names, list)
        or len(names) != layout.n_classes
        or not all(isinstance(n, (bytes, str)) for n in names)
    ):
        raise DatasetError(f"{where} holds no list of {layout.n_classes} {layout.names_key.decode()!r}; {fix}")
    return [n.decode("utf-8", errors="replace") if isinstance(n, bytes) else n for n in names]


class _BoundedStream:
    """The file object :mod:`tarfile` reads: no read or seek past ``limit`` bytes of the (unpacked) tar stream.

    tarfile reads a member, or an extended header (pax, GNU long name), with one ``read(size)`` of the size its
    header declares, which gzip allocates before inflating anything, and it reads chains of extended headers
    before returning a member; the bound refuses all of them before they allocate.
    """

    def __init__(self, stream: Any, limit: int, source: Path, size: int, fix: str) -> None:
        self._stream, self._limit = stream, limit
        self._source, self._size, self._fix = source, size, fix

    def _check(self, end: int, what: str) -> None:
        if end > self._limit:
            raise DatasetError(f"{self._source} {what} of its tar data, more than its {self._size} bytes hold; "
                               f"{self._fix}")

    def read(self, size: int) -> bytes:
        self._check(self.tell() + size, f"asks for {size} bytes at byte {self.tell()}")
        return self._stream.read(size)

    def seek(self, offset: int) -> int:
        self._check(offset, f"asks for byte {offset}")
        return self._stream.seek(offset)

    def tell(self) -> int:
        return self._stream.tell()

    def seekable(self) -> bool:
        return True


def _read_source(source: Path, layout: _Layout, members: tuple[str, ...]) -> dict[str, tuple[bytes, str, str]]:
    """``{member: (bytes, where, fix)}`` read from the extracted folder or the archive ``source``."""
    if source.is_dir():
        fix = f"replace it with the file from a fresh copy of {layout.archive}"
        out = {}
        for member in members:
            path = source / member
            try:
                out[member] = (path.read_bytes(), str(path), fix)
            except FileNotFoundError:
                raise DatasetError(
                    f"{path} is missing; extract {layout.archive} again so that {source} is complete"
                ) from None
            except OSError as e:
                raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
        return out

    fix = f"delete {source} and download it again"
    wanted = {f"{layout.folder}/{member}": member for member in members}
    out = {}
    try:
        with open_regular(source) as file:
            size = os.fstat(file.fileno()).st_size
            compressed = file.read(2) == GZIP_MAGIC
            file.seek(0)
            limit = expansion_limit(size) if compressed else size
            stream = gzip.GzipFile(fileobj=file) if compressed else file
            with tarfile.open(fileobj=_BoundedStream(stream, limit, source, size, fix), mode="r:") as tar:
                for count, info in enumerate(tar, 1):
                    if count > _MAX_ARCHIVE_MEMBERS:
                        raise DatasetError(
                            f"{source} has more than {_MAX_ARCHIVE_MEMBERS} members before the CIFAR files; {fix}"
                        )
                    if info.offset_data + info.size > limit:
                        raise DatasetError(f"{source} member {info.name!r} declares {info.size} bytes, more than its "
                                           f"{size} bytes hold; {fix}")
                    member = wanted.get(info.name.removeprefix("./"))
                    if member is None or member in out or not info.isfile():
                        continue
                    out[member] = (tar.extractfile(info).read(), f"{source} (member {info.name})", fix)
                    if len(out) == len(wanted):
                        break
    except DatasetError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, RecursionError) as e:
        raise DatasetError(f"{source} is not a valid .tar.gz archive ({one_line(e)}); {fix}") from None
    missing = [name for name, member in wanted.items() if member not in out]
    if missing:
        raise DatasetError(f"{source} has no member {missing[0]}; {fix}")
    return out


def _source_in(root: Path, layout: _Layout) -> Path | None:
    """The extracted folder or the archive found in ``root``, the folder first; ``None`` when neither is."""
    if root.name == layout.folder and root.is_dir():
        return root
    if (root / layout.folder).is_dir():
        return root / layout.folder
    if (root / layout.archive).is_file():
        return root / layout.archive
    return None


def _wanted(name: str, layout: _Layout) -> Wanted:
    """The search for the extracted folder or the archive of ``name``; a download fetches the archive."""
    url = _URLS[name]
    return Wanted(name, f"{name} data", f"{layout.folder}/ or {layout.archive}", url,
                  find=lambda root: _source_in(root, layout), missing=lambda root: {layout.archive: url})
