"""Tiny IDX files in the MNIST layout, written by the tests themselves."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from layermod.data import idx as IDX

IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of ``array``: magic, big-endian int32 dims, big-endian data."""
    code = IDX_CODES[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    payload = idx_bytes(array)
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def write_mnist_like(folder: Path, n_train: int = 30, n_test: int = 20, compress: bool = True, seed: int = 0):
    """Tiny MNIST-layout IDX files; returns {split: (images, labels)}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    suffix = ".gz" if compress else ""
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        stem_images, stem_labels = IDX._SPLIT_FILES[split]
        write_idx(folder / f"{stem_images}{suffix}", images, compress)
        write_idx(folder / f"{stem_labels}{suffix}", labels, compress)
        out[split] = (images, labels)
    return out
