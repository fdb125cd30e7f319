"""IDX files, and the Fashion-MNIST and MNIST datasets read from them (28x28 grey images).

:func:`read_idx` parses one IDX file (gzip-compressed or raw); :func:`load_idx_dataset` finds a split's two
files (:mod:`layermod.data.download`) and returns them as an :class:`~layermod.data.arrays.ArrayDataset`.

Decisions, on purpose:

* **IDX parsing is strict.** :func:`read_idx` detects gzip by its magic bytes (not the suffix) and checks
  magic, header and payload size exactly; anything off (also trailing bytes) is a :class:`DatasetError`
  naming the file and saying to delete it and download again.
* **Sizes are checked before memory is allocated**, against the bound of :mod:`layermod.data.bounds`. A gzip
  IDX file is inflated as a stream: header first, then exactly the declared payload, then one byte more to
  refuse trailing data. Dims are read as signed int32, so a negative one is refused, and their product is
  taken on Python integers, so it never overflows.
* **Files.** A split is the pair ``train-images-idx3-ubyte``/``train-labels-idx1-ubyte`` or
  ``t10k-images-idx3-ubyte``/``t10k-labels-idx1-ubyte``, each with or without ``.gz`` (``.gz`` preferred); they
  must be (N, H, W) uint8 images and (N,) uint8 labels below the class count. A download fetches the ``.gz``
  files of both splits.
* **Normalisation.** Pixels are scaled to [0, 1] and normalised with a fixed per-dataset mean/std
  (fashion-mnist 0.2860/0.3530, mnist 0.1307/0.3081), recorded in ``ArrayDataset.normalization``.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from layermod.data.arrays import ArrayDataset
from layermod.data.bounds import GZIP_MAGIC, expansion_limit
from layermod.data.download import Wanted, locate
from layermod.errors import DatasetError, one_line
from layermod.io.files import open_regular

__all__ = ["IDX_DATASETS", "load_idx_dataset", "read_idx"]

IDX_DATASETS: tuple[str, ...] = ("fashion-mnist", "mnist")

_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_URLS = {
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
}
_NORMALIZATION = {
    "fashion-mnist": {"mean": [0.2860], "std": [0.3530]},
    "mnist": {"mean": [0.1307], "std": [0.3081]},
}
_CLASSES = {
    "fashion-mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
    "mnist": [str(d) for d in range(10)],
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into an array of its shape and native-endian dtype.

    The header is read and checked before the payload: the payload must be exactly the ``prod(dims) * itemsize``
    bytes the header declares, and a compressed file may declare at most
    :func:`~layermod.data.bounds.expansion_limit` of its size, so a gzip bomb is refused before it is inflated.
    Raises :class:`DatasetError` (one line naming the file) when the file cannot be read, is not valid gzip, has
    a bad magic number, negative or unusable dims, or its header or payload is truncated or too long.
    """
    path = Path(path)

    def invalid(why: str) -> DatasetError:
        return DatasetError(f"{path} is not a valid IDX file ({why}); delete it and download again")

    try:
        with open_regular(path) as file:
            size = os.fstat(file.fileno()).st_size
            compressed = file.read(2) == GZIP_MAGIC
            file.seek(0)
            read = _reader(gzip.GzipFile(fileobj=file) if compressed else file, path, compressed)
            shape, dtype = _header(read, invalid)
            expected = math.prod(shape) * dtype.itemsize
            available = size - 4 - 4 * len(shape)
            if not compressed and available < expected:
                raise invalid(f"truncated data: {available} of {expected} bytes")
            if not compressed and available > expected:
                raise invalid(f"{available - expected} trailing bytes after the data")
            if compressed and expected > expansion_limit(size):
                raise invalid(f"its header declares shape {shape}, {expected} bytes, more than a {size}-byte gzip "
                              "file holds")
            payload = read(expected)
            if len(payload) < expected:
                raise invalid(f"truncated data: {len(payload)} of {expected} bytes")
            if read(1):
                raise invalid(f"trailing bytes after the {expected} bytes of data")
    except DatasetError:
        raise
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return np.frombuffer(payload, dtype=dtype).astype(dtype.newbyteorder("=")).reshape(shape)
    except ValueError:  # more dims than numpy allows, or dims whose product overflows next to a zero
        raise invalid(f"shape {shape} is not a usable array shape") from None


def _reader(stream: BinaryIO, path: Path, compressed: bool) -> Callable[[int], bytes]:
    """``read(n)`` of ``stream``; a compressed stream that is not valid gzip is one DatasetError line."""

    def read(n: int) -> bytes:
        try:
            return stream.read(n)
        except (OSError, EOFError, zlib.error) as e:
            if not compressed:
                raise
            raise DatasetError(f"{path} is not a valid gzip file ({one_line(e)}); delete it and download again") from None

    return read


def _header(read: Callable[[int], bytes], invalid: Callable[[str], DatasetError]) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype as the file stores it) of the IDX header ``read`` gives: the magic number, then one int32 per dim."""
    magic = read(4)
    if len(magic) < 4:
        raise invalid("truncated header")
    if magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
        raise invalid(f"bad magic {magic.hex()}")
    ndim = magic[3]
    dims = read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise invalid("truncated header")
    shape = struct.unpack(f">{ndim}i", dims)
    if any(d < 0 for d in shape):
        raise invalid(f"negative dimension in shape {shape}")
    return shape, np.dtype(_IDX_DTYPES[magic[2]])


def load_idx_dataset(name: str, split: str, data_dir: str | os.PathLike | None, download: bool) -> ArrayDataset:
    """Split ``"train"`` or ``"test"`` of ``name`` (one of :data:`IDX_DATASETS`, checked by
    :func:`layermod.data.datasets.load_dataset`) as images (N, 1, 28, 28) float32, normalised."""
    folder = locate(_wanted(name, split), data_dir, download)
    images_path, labels_path = (_idx_path(folder, stem) for stem in _SPLIT_FILES[split])
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetError(
            f"{images_path} holds {images.dtype} data of shape {images.shape}, not (N, H, W) uint8 images; "
            "delete it and download again"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DatasetError(
            f"{labels_path} holds {labels.dtype} data of shape {labels.shape}, not (N,) uint8 labels; "
            "delete it and download again"
        )
    if len(images) != len(labels):
        raise DatasetError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels; "
            "delete both and download again"
        )
    classes = _CLASSES[name]
    if len(labels) and labels.max() >= len(classes):
        raise DatasetError(
            f"{labels_path} has label {labels.max()} but {name} has {len(classes)} classes; "
            "delete it and download again"
        )
    norm = _NORMALIZATION[name]
    x = torch.from_numpy(images).unsqueeze(1).float().div_(255.0)
    x.sub_(norm["mean"][0]).div_(norm["std"][0])
    y = torch.from_numpy(labels.astype(np.int64))
    return ArrayDataset(x, y, classes, name, normalization={"mean": list(norm["mean"]), "std": list(norm["std"])})


def _wanted(name: str, split: str) -> Wanted:
    """The search for a folder holding both IDX files of ``split``; a download fetches those of both splits."""
    url = _URLS[name]

    def find(folder: Path) -> Path | None:
        return folder if all(_idx_path(folder, stem).is_file() for stem in _SPLIT_FILES[split]) else None

    def missing(folder: Path) -> dict[str, str]:
        stems = (stem for stems_of_split in _SPLIT_FILES.values() for stem in stems_of_split)
        return {f"{stem}.gz": f"{url}{stem}.gz" for stem in stems if not _idx_path(folder, stem).is_file()}

    listing = ", ".join(f"{stem}[.gz]" for stem in _SPLIT_FILES[split])
    return Wanted(name, f"{name} {split} files", listing, url, find, missing)


def _idx_path(folder: Path, stem: str) -> Path:
    """``folder/stem.gz`` if it exists, else ``folder/stem``."""
    gz = folder / f"{stem}.gz"
    return gz if gz.is_file() else folder / stem
