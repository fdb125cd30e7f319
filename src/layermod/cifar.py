"""CIFAR-10 and CIFAR-100 read from the official "python version" archives.

``cifar10`` reads ``cifar-10-batches-py/`` (``data_batch_1`` .. ``data_batch_5``, ``test_batch``,
``batches.meta``); ``cifar100`` reads ``cifar-100-python/`` (``train``, ``test``, ``meta``) with the 100 fine
labels. Either the extracted folder or the ``.tar.gz`` archive may be present; :func:`load_cifar` returns an
:class:`~layermod.data.ArrayDataset` of (N, 3, 32, 32) float32 images.

Decisions, on purpose:

* **No code runs from a pickle.** The batches are Python pickles, read by a restricted unpickler whose
  ``find_class`` allows exactly the globals numpy needs to rebuild an array: ``_reconstruct`` (under its
  numpy 1 and numpy 2 module names), ``numpy.ndarray`` and ``numpy.dtype``. Any other global
  (``os.system``, ``builtins.eval``, ...) is refused before anything is called, as a :class:`DatasetError`.
  Python 2 strings are read as bytes (``encoding="bytes"``). The official files (written by Python 2) need
  nothing more; a protocol-2 re-pickle made by Python 3 encodes bytes through ``_codecs.encode`` and is
  refused as well.
* **Folder before archive.** In each place searched, the extracted folder is used when it exists, else the
  archive, which is read member by member in memory with :mod:`tarfile` (nothing is extracted to disk).
  ``data_dir`` may also be the extracted folder itself (recognised by its name).
* **Search order** as for the IDX sets: an explicit ``data_dir`` (and ``data_dir/<name>``) is the only
  place searched; otherwise ``$LAYERMOD_DATA/<name>`` and then the per-user cache
  ``${XDG_CACHE_HOME:-~/.cache}/layermod/data/<name>``. A missing set is downloaded as the archive into the
  cache under a temporary name, renamed when complete.
* **Strict checks.** A corrupt archive or pickle, a missing batch, images that are not (N, 3072) uint8,
  labels that do not match the images or the class count, and class names that are not a list of
  ``n_classes`` strings are each a one-line :class:`DatasetError` naming the file and saying what to do.
* **Normalisation.** Pixels are scaled to [0, 1] and normalised per channel with the usual fixed statistics
  (CIFAR-10 mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616); CIFAR-100 mean
  (0.5071, 0.4865, 0.4409), std (0.2673, 0.2564, 0.2762)), recorded in ``ArrayDataset.normalization``.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import data as _data
from .errors import DatasetError

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

# numpy's array-rebuilding function, taken from a pickle reduction so that the deprecated ``numpy.core``
# module (numpy 2) is never imported.
_RECONSTRUCT = np.ndarray.__reduce__(np.empty(0))[0]
_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


def load_cifar(
    name: str,
    split: str = "test",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> _data.ArrayDataset:
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
    source = _locate(key, layout, data_dir, download)
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
    return _data.ArrayDataset(x, y, classes, key, {"mean": list(layout.mean), "std": list(layout.std)})


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy's array-rebuilding globals and refuses every other one."""

    def __init__(self, raw: bytes, where: str, fix: str) -> None:
        super().__init__(io.BytesIO(raw), encoding="bytes")
        self._where = where
        self._fix = fix

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _NUMPY_GLOBALS[(module, name)]
        except KeyError:
            raise DatasetError(
                f"{self._where} refuses to load: it asks to run code ({module}.{name}); a CIFAR batch holds "
                f"only data, so {self._fix}"
            ) from None


def _unpickle(raw: bytes, where: str, fix: str) -> dict:
    """The dict pickled in ``raw``, read without running code; ``where`` names it in errors."""
    try:
        batch = _BatchUnpickler(raw, where, fix).load()
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001  (a corrupt pickle fails in many ways: UnpicklingError, EOFError, ...)
        raise DatasetError(f"{where} is not a valid CIFAR pickle ({_data._one_line(e)}); {fix}") from None
    if not isinstance(batch, dict):
        raise DatasetError(f"{where} holds a {type(batch).__name__}, not a CIFAR dict; {fix}")
    return batch


def _field(batch: dict, key: bytes, where: str, fix: str) -> Any:
    """``batch[key]``, also found under the str key a Python 3 pickle would use."""
    for candidate in (key, key.decode()):
        if candidate in batch:
            return batch[candidate]
    raise DatasetError(f"{where} has no {key.decode()!r} entry; {fix}")


def _batch_arrays(raw: bytes, where: str, fix: str, layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3072) uint8 and labels (N,) int64 of one batch, checked."""
    batch = _unpickle(raw, where, fix)
    images = _field(batch, b"data", where, fix)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.shape[1:] != (_PIXELS,):
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise DatasetError(f"{where} holds images of {got}, not (N, {_PIXELS}) uint8; {fix}")
    try:
        labels = np.asarray(_field(batch, layout.labels_key, where, fix))
    except (ValueError, TypeError):
        labels = np.asarray(None)
    if labels.ndim != 1 or (labels.dtype.kind not in "iu" and len(labels)):
        raise DatasetError(f"{where} holds {layout.labels_key.decode()!r} that are not a list of integers; {fix}")
    if len(labels) != len(images):
        raise DatasetError(f"{where} has {len(images)} images but {len(labels)} labels; {fix}")
    if len(labels) and (labels.min() < 0 or labels.max() >= layout.n_classes):
        raise DatasetError(
            f"{where} has labels in [{labels.min()}, {labels.max()}] but {layout.n_classes} classes; {fix}"
        )
    return images, labels.astype(np.int64)


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
        with tarfile.open(source, "r:*") as tar:
            for info in tar:
                member = wanted.get(info.name.removeprefix("./"))
                if member is None or member in out or not info.isfile():
                    continue
                out[member] = (tar.extractfile(info).read(), f"{source} (member {info.name})", fix)
                if len(out) == len(wanted):
                    break
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{source} is not a valid .tar.gz archive ({_data._one_line(e)}); {fix}") from None
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


def _locate(name: str, layout: _Layout, data_dir: str | os.PathLike | None, download: bool) -> Path:
    """Extracted folder or archive of ``name``, downloading the archive into the cache if allowed."""
    wanted = f"{layout.folder}/ or {layout.archive}"
    if data_dir is not None:
        given = Path(data_dir).expanduser()
        for root in (given, given / name):
            source = _source_in(root, layout)
            if source is not None:
                return source
        raise DatasetError(
            f"no {name} data ({wanted}) in {given} or {given / name}; "
            "point data_dir (--data-dir) at the folder that holds it"
        )

    candidates = []
    env = os.environ.get("LAYERMOD_DATA")
    if env:
        candidates.append(Path(env).expanduser() / name)
    cache = _data._cache_dir(name)
    candidates.append(cache)
    for root in candidates:
        source = _source_in(root, layout)
        if source is not None:
            return source

    looked = ", ".join(str(c) for c in candidates)
    fixes = f"pass --data-dir DIR (data_dir=) or set LAYERMOD_DATA to a folder whose {name}/ subfolder holds it"
    if not download:
        raise DatasetError(f"{name} data ({wanted}) not found in {looked} and download is off; {fixes}")
    url = _URLS[name]
    try:
        cache.mkdir(parents=True, exist_ok=True)
        _data._download_file(url, cache / layout.archive)
    except (OSError, HTTPException) as e:
        raise DatasetError(
            f"{name} data not found in {looked} and download from {url} failed ({_data._one_line(e)}); {fixes}"
        ) from None
    return cache / layout.archive
