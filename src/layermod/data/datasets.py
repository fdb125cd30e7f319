"""Labelled image datasets and class-balanced sample draws.

Built-in datasets known by name: ``"fashion-mnist"`` and ``"mnist"`` (28x28 grey images read from IDX
files), ``"digits"`` (scikit-learn's 8x8 digits) and ``"cifar10"``/``"cifar100"`` (32x32 colour images,
read by :mod:`layermod.cifar`); ``"folder:PATH"`` loads a folder of one subfolder of images per class
(:mod:`layermod.imagefolder`). Any torch ``Dataset`` of ``(x, y)`` pairs or an ``(X, y)`` pair of
tensors/arrays can be used instead; :func:`dataset_labels`, :func:`gather` and :func:`as_dataset` accept all
three forms.

Decisions, on purpose:

* **IDX parsing is strict.** :func:`read_idx` detects gzip by its magic bytes (not the suffix) and checks
  magic, header and payload size exactly; anything off (also trailing bytes) is a :class:`DatasetError`
  naming the file and saying to delete it and download again.
* **Sizes a file declares are checked before memory is allocated.** A file may declare (IDX dims, ``.npy``
  shapes, archive member sizes) at most the bytes it really holds: a raw file its own size, a compressed one
  at most ``_MAX_EXPANSION`` (32) times its compressed size, or ``_EXPANSION_FLOOR`` (16 MiB) when that is
  more. A gzip IDX file is inflated as a stream: header first, then exactly the declared payload, then one
  byte more to refuse trailing data. Dims are read as signed int32, so a negative one is refused, and their
  product is taken on Python integers, so it never overflows. A reader thus allocates at most about twice
  that bound (the data and one converted copy), and a decompression bomb is refused from its header, before
  it is inflated; :mod:`layermod.cifar` and :mod:`layermod.imagefolder` use the same bound.
* **.npz files** (:func:`load_npz`) are zip archives read member by member without pickle: only stored or
  deflated members, each member's declared size bounded as above, each ``.npy`` header read first and its
  dtype (numeric: bool, int, uint, float) and shape checked to declare exactly the bytes of the member.
* **Search order.** For the IDX datasets the folder holding the split's two files is searched in
  ``data_dir`` (and ``data_dir/<name>``), ``$LAYERMOD_DATA/<name>``, the Debian package
  folder (fashion-mnist only), and the per-user cache ``${XDG_CACHE_HOME:-~/.cache}/layermod/data/<name>``.
  An explicit ``data_dir`` is the only place searched, so a typo is reported instead of silently loading
  another copy. Downloads go to the cache, each file to a temporary name renamed when complete.
* **Normalisation.** Pixels are scaled to [0, 1] and normalised with a fixed per-dataset mean/std
  (fashion-mnist 0.2860/0.3530, mnist 0.1307/0.3081; digits: mean/std of the whole set), recorded in
  ``ArrayDataset.normalization``.
* **Digits split.** A stratified 80/20 split with seed 0: per class, a seeded permutation puts
  ``round(0.2 * n_c)`` samples in "test" and the rest in "train".
* **Balanced draws.** Every draw holds exactly ``n_per_class`` samples of each class. Draws are disjoint
  (as in the paper) when every class has ``n_per_class * repeats`` samples; otherwise each draw is sampled
  without replacement on its own and draws may overlap.
* **Labels are integers.** Float, boolean or string labels are a :class:`LabelError`, never rounded.
* **Labels are class indices, kept as given.** :func:`as_dataset` names the classes ``"0" .. str(max label)``
  so that ``classes[label]`` names ``label``; labels are not renumbered, because a model's outputs, and the
  other split of the same data, use the same indices. A label of ``_MAX_CLASSES`` (65536) or more is a
  :class:`LabelError` (renumber the classes), so a label like 2**40 never builds 2**40 class names.
* **Map-style datasets only.** Draws pick samples by index, so a Dataset needs ``__len__`` and
  ``__getitem__``; an ``IterableDataset`` or a class without ``__len__`` is a :class:`DatasetError`. Inputs
  ``X`` that require grad are detached, small sparse ones made dense, complex ones refused
  (:func:`layermod.coerce.as_real_tensor`). Draws take any integer seed (:mod:`layermod.coerce`).
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import struct
import tempfile
import urllib.request
import zipfile
import zlib
from http.client import HTTPException
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from layermod.coerce import as_real_tensor, seed_sequence
from layermod.errors import DatasetError, LabelError

__all__ = [
    "ArrayDataset",
    "DATASETS",
    "load_dataset",
    "read_idx",
    "load_npz",
    "dataset_labels",
    "balanced_draws",
    "gather",
    "as_dataset",
]

DATASETS: tuple[str, ...] = ("fashion-mnist", "mnist", "digits", "cifar10", "cifar100")

_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_EXPANSION = 32  # bytes a compressed file may declare or inflate to, per byte of the file
_EXPANSION_FLOOR = 16 * 2**20  # ... or this many, when more: tiny files of zeros compress far better
_MAX_CLASSES = 2**16  # class indices of (X, y) labels must be below this
_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
_NUMERIC_KINDS = "biuf"  # numpy dtype kinds of bool, int, uint, float

_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_URLS = {
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
}
_SYSTEM_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
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
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SEED = 0
_DOWNLOAD_TIMEOUT_S = 60


class ArrayDataset(Dataset):
    """In-memory labelled samples.

    Attributes:
        data: (N, C, H, W) or (N, D) float32 tensor, already normalised.
        targets: (N,) int64 tensor of class indices.
        classes: class names, ``classes[label]`` names ``label``.
        name: dataset name, e.g. ``"fashion-mnist"``.
        normalization: ``{"mean": [...], "std": [...]}`` per channel as applied, ``{}`` if none.
    """

    def __init__(
        self,
        data: torch.Tensor,
        targets: torch.Tensor,
        classes: list[str],
        name: str,
        normalization: dict | None = None,
    ) -> None:
        if len(data) != len(targets):
            raise LabelError(f"{len(data)} samples but {len(targets)} labels; pass one label per sample")
        self.data = data
        self.targets = targets
        self.classes = list(classes)
        self.name = name
        self.normalization = dict(normalization or {})

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i) -> tuple[torch.Tensor, int]:
        return self.data[i], int(self.targets[i])

    def __repr__(self) -> str:
        return f"ArrayDataset(name={self.name!r}, n={len(self)}, shape={tuple(self.data.shape[1:])})"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into an array of its shape and native-endian dtype.

    The header is read and checked before the payload: the payload must be exactly the ``prod(dims) * itemsize``
    bytes the header declares, and a compressed file may declare at most :func:`_expansion_limit` of its size,
    so a gzip bomb is refused before it is inflated. Raises :class:`DatasetError` (one line naming the file)
    when the file cannot be read, is not valid gzip, has a bad magic number, negative or unusable dims, or its
    header or payload is truncated or too long.
    """
    path = Path(path)

    def invalid(why: str) -> DatasetError:
        return DatasetError(f"{path} is not a valid IDX file ({why}); delete it and download again")

    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            compressed = file.read(2) == _GZIP_MAGIC
            file.seek(0)
            stream = gzip.GzipFile(fileobj=file) if compressed else file

            def read(n: int) -> bytes:
                try:
                    return stream.read(n)
                except (OSError, EOFError, zlib.error) as e:
                    if not compressed:
                        raise
                    raise DatasetError(
                        f"{path} is not a valid gzip file ({_one_line(e)}); delete it and download again"
                    ) from None

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
            dtype = np.dtype(_IDX_DTYPES[magic[2]])
            expected = math.prod(shape) * dtype.itemsize
            available = size - 4 - 4 * ndim
            if not compressed and available < expected:
                raise invalid(f"truncated data: {available} of {expected} bytes")
            if not compressed and available > expected:
                raise invalid(f"{available - expected} trailing bytes after the data")
            if compressed and expected > _expansion_limit(size):
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


def load_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``X`` as float32 (N, ...) and ``y`` (N,) in native byte order from a ``.npz`` file, without pickle.

    Each member's sizes are checked against the file, and its ``.npy`` header (numeric dtype, shape) against the
    member, before the array is allocated (see the module docstring). Raises :class:`DatasetError` (one line
    naming the file) for a file that is no zip archive, lacks ``X.npy`` or ``y.npy``, or holds an array that is
    not numeric or does not match its header.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            x = _npz_array(archive, "X", path, size)
            y = _npz_array(archive, "y", path, size)
    except DatasetError:
        raise
    except (OSError, EOFError, ValueError, TypeError, RuntimeError, NotImplementedError, zlib.error,
            zipfile.BadZipFile) as e:
        raise DatasetError(f"cannot read {path} ({_one_line(e)}); it must be a .npz file with arrays X and y") from None
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
    most = info.compress_size if stored else _expansion_limit(info.compress_size)
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


def load_dataset(
    name: str,
    split: str = "test",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> ArrayDataset:
    """Load a built-in dataset split, or an image folder, as normalised float32 images.

    Args:
        name: one of :data:`DATASETS` (case-insensitive), or ``"folder:PATH"`` for an image folder
            (see :func:`layermod.imagefolder.load_image_folder`).
        split: ``"train"`` or ``"test"``; for a folder, the split subfolder to load when it has any.
        data_dir: folder holding the IDX files or the CIFAR folder/archive (or a ``<name>`` subfolder of it);
            when given, the only place searched. Ignored for ``"digits"`` and folders.
        download: fetch missing IDX files or the CIFAR archive into the per-user cache when no copy is found.

    Returns:
        :class:`ArrayDataset` with data (N, 1, 28, 28) for fashion-mnist/mnist, (N, 1, 8, 8) for digits,
        (N, 3, 32, 32) for cifar10/cifar100, (N, C, H, W) for a folder.
    """
    if str(name)[:7].lower() == "folder:":
        # imported here: layermod.imagefolder builds on this module
        from layermod.data.imagefolder import load_image_folder

        return load_image_folder(str(name)[7:], split)
    key = str(name).lower()
    if key not in DATASETS:
        raise DatasetError(
            f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}, or folder:PATH for an image folder"
        )
    if split not in _SPLIT_FILES:
        raise DatasetError(f"unknown split {split!r} for {key}; use 'train' or 'test'")
    if key == "digits":
        return _load_digits(split)
    if key in ("cifar10", "cifar100"):
        # imported here: layermod.cifar builds on this module
        from layermod.data.cifar import load_cifar

        return load_cifar(key, split, data_dir, download)

    folder = _locate(key, split, data_dir, download)
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
    classes = _CLASSES[key]
    if len(labels) and labels.max() >= len(classes):
        raise DatasetError(
            f"{labels_path} has label {labels.max()} but {key} has {len(classes)} classes; "
            "delete it and download again"
        )
    norm = _NORMALIZATION[key]
    x = torch.from_numpy(images).unsqueeze(1).float().div_(255.0)
    x.sub_(norm["mean"][0]).div_(norm["std"][0])
    y = torch.from_numpy(labels.astype(np.int64))
    return ArrayDataset(x, y, classes, key, {"mean": list(norm["mean"]), "std": list(norm["std"])})


def dataset_labels(data) -> np.ndarray:
    """Labels (N,) int64 of an ``(X, y)`` pair, an object with ``.targets``, or a Dataset of ``(x, y)`` pairs.

    A dataset without ``.targets`` is read once, item by item. Raises :class:`LabelError` for labels that
    are not integers or not one-dimensional.
    """
    if _is_pair(data):
        return _label_array(data[1])
    if hasattr(data, "targets"):
        return _label_array(data.targets)
    return _label_array([_label_value(_item(data, i)[1]) for i in range(_length(data))])


def as_dataset(data) -> Dataset:
    """Return ``data`` as a torch Dataset: an ``(X, y)`` pair becomes an :class:`ArrayDataset`.

    ``X`` becomes a float32 tensor (N, ...), ``y`` int64 class indices (>= 0); ``classes`` are
    ``"0" .. str(max label)``, name ``"tensors"``, no normalisation. A map-style Dataset is returned unchanged.

    Raises:
        DatasetError: neither a pair nor a Dataset, a Dataset without ``__len__`` (e.g. an IterableDataset),
            or inputs X that are not real numbers.
        LabelError: labels that are not one non-negative integer per sample.
    """
    if isinstance(data, Dataset):
        _length(data)
        return data
    if not _is_pair(data):
        raise DatasetError(
            f"expected a torch Dataset or an (X, y) pair, got {type(data).__name__}; pass one of those"
        )
    x = as_real_tensor(data[0], "inputs X", DatasetError).float()
    y = _label_array(data[1])
    if x.ndim < 1 or len(x) != len(y):
        n = len(x) if x.ndim else 0
        raise LabelError(f"{n} features but {len(y)} labels; pass one label per sample")
    if len(y) and y.min() < 0:
        raise LabelError(f"labels must be class indices >= 0, got {y.min()}; renumber the classes from 0")
    return ArrayDataset(x, torch.from_numpy(y), _label_names(y), "tensors", {})


def balanced_draws(labels, n_per_class: int, repeats: int, seed: int = 0) -> list[np.ndarray]:
    """Class-balanced, seeded draws of sample indices.

    Args:
        labels: (N,) integer labels (tensor, array or list).
        n_per_class: samples of every class present in ``labels`` per draw.
        repeats: number of draws.
        seed: seed of ``numpy.random.default_rng``, any integer (a negative one as in :mod:`layermod.coerce`);
            the same seed gives the same draws.

    Returns:
        ``repeats`` sorted int64 arrays of ``n_per_class * n_classes`` indices each. The draws are disjoint
        when every class has at least ``n_per_class * repeats`` samples; otherwise they may overlap.
    """
    y = _label_array(labels)
    for arg, value in (("n_per_class", n_per_class), ("repeats", repeats)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise LabelError(f"{arg}={value!r} must be a positive integer")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise LabelError(f"balanced draws need at least 2 classes, got {len(classes)}; check the labels")
    smallest = int(np.argmin(counts))
    if counts[smallest] < n_per_class:
        raise LabelError(
            f"class {classes[smallest]} has {counts[smallest]} samples but n_per_class={n_per_class} was asked; "
            f"lower n_per_class to at most {counts[smallest]}"
        )
    rng = np.random.default_rng(seed_sequence(seed, LabelError))
    disjoint = counts[smallest] >= n_per_class * repeats
    blocks = []
    for c in classes:
        members = np.flatnonzero(y == c)
        if disjoint:
            blocks.append(rng.permutation(members)[: n_per_class * repeats].reshape(repeats, n_per_class))
        else:
            blocks.append(rng.permuted(np.tile(members, (repeats, 1)), axis=1)[:, :n_per_class])
    draws = np.sort(np.concatenate(blocks, axis=1), axis=1).astype(np.int64)
    return list(draws)


def gather(data, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the samples at ``indices``: (X (n, ...) float32 tensor, y (n,) int64 tensor).

    ``data`` is an ``(X, y)`` pair, an :class:`ArrayDataset` (indexed directly) or any Dataset of ``(x, y)``
    pairs (read item by item, so its transforms apply).

    Raises:
        DatasetError: items that are not ``(x, y)`` pairs, or inputs that are not real numbers of one shape.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if isinstance(data, ArrayDataset):
        take = torch.from_numpy(idx)
        return data.data[take].float(), data.targets[take].long()
    if _is_pair(data):
        y = _label_array(data[1])
        x = as_real_tensor(data[0], "inputs X", DatasetError)
        return x[torch.from_numpy(idx)].float(), torch.from_numpy(y[idx])
    items = [_item(data, int(i)) for i in idx]
    xs = [as_real_tensor(x, f"item {i} of {type(data).__name__}", DatasetError) for i, (x, _) in zip(idx, items)]
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise DatasetError(
            f"the inputs of {type(data).__name__} have different shapes ({', '.join(map(str, sorted(shapes)[:3]))}); "
            "make its items one shape (resize or crop them)"
        )
    x = torch.stack(xs).float() if xs else torch.empty(0)
    y = _label_array([_label_value(label) for _, label in items])
    return x, torch.from_numpy(y)


def _is_pair(data) -> bool:
    """True for a tuple or list ``(X, y)`` (not a Dataset)."""
    return isinstance(data, (tuple, list)) and len(data) == 2


def _length(data) -> int:
    """``len(data)`` of a map-style dataset; :class:`DatasetError` for an IterableDataset or a dataset without
    ``__len__`` (draws pick samples by index)."""
    try:
        if not isinstance(data, IterableDataset):
            return len(data)
    except TypeError:
        pass
    kind = "an IterableDataset" if isinstance(data, IterableDataset) else "a dataset without __len__"
    raise DatasetError(
        f"{type(data).__name__} is {kind}, so samples cannot be drawn by index; give a map-style Dataset "
        "with __len__ and __getitem__ returning (x, y)"
    )


def _item(data, i: int) -> tuple[Any, Any]:
    """``data[i]`` checked to be an ``(x, y)`` pair."""
    item = data[i]
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise DatasetError(
            f"item {i} of {type(data).__name__} is a {type(item).__name__}, not an (x, y) pair; "
            "wrap the dataset so that it returns (input, label)"
        )
    return item[0], item[1]


def _label_value(label):
    """A single label as a Python scalar (one-element tensors and arrays are unwrapped)."""
    if isinstance(label, torch.Tensor):
        label = label.detach().cpu().numpy()
    if isinstance(label, np.ndarray) and label.size == 1:
        return label.item()
    return label


def _label_array(labels) -> np.ndarray:
    """Labels as a (N,) int64 array; :class:`LabelError` unless they are one-dimensional integers."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    try:
        y = np.asarray(labels)
    except (ValueError, TypeError) as e:
        raise LabelError(f"labels cannot be read as an array ({_one_line(e)}); pass (N,) integer labels") from None
    if y.ndim != 1:
        raise LabelError(f"labels must have shape (N,), got {y.shape}; pass one integer label per sample")
    if y.dtype.kind not in "iu" and not (len(y) == 0 and y.dtype.kind == "f"):
        raise LabelError(f"labels must be integers, got dtype {y.dtype}; convert them to class indices")
    return y.astype(np.int64)


def _label_names(y: np.ndarray) -> list[str]:
    """Class names ``"0" .. str(max label)`` of (N,) class indices >= 0; :class:`LabelError` past ``_MAX_CLASSES``."""
    if not len(y):
        return []
    top = int(y.max())
    if top >= _MAX_CLASSES:
        raise LabelError(
            f"labels go up to {top} but class indices must be below {_MAX_CLASSES}; renumber the classes from 0, "
            "e.g. y = np.unique(y, return_inverse=True)[1]"
        )
    return [str(c) for c in range(top + 1)]


def _expansion_limit(stored_bytes: int) -> int:
    """Most bytes a compressed file or member of ``stored_bytes`` may declare or inflate to."""
    return max(_EXPANSION_FLOOR, _MAX_EXPANSION * stored_bytes)


def _one_line(e: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(e).split()) or type(e).__name__


def _idx_path(folder: Path, stem: str) -> Path:
    """``folder/stem.gz`` if it exists, else ``folder/stem``."""
    gz = folder / f"{stem}.gz"
    return gz if gz.is_file() else folder / stem


def _has_split(folder: Path, split: str) -> bool:
    """Whether ``folder`` holds both IDX files of ``split`` (gzip or raw)."""
    return all(_idx_path(folder, stem).is_file() for stem in _SPLIT_FILES[split])


def _cache_dir(name: str) -> Path:
    """Per-user download folder ``${XDG_CACHE_HOME:-~/.cache}/layermod/data/<name>``."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "layermod" / "data" / name


def _locate(name: str, split: str, data_dir: str | os.PathLike | None, download: bool) -> Path:
    """Folder holding the two IDX files of ``split``, downloading them into the cache if allowed."""
    stems = ", ".join(f"{stem}[.gz]" for stem in _SPLIT_FILES[split])
    if data_dir is not None:
        given = Path(data_dir).expanduser()
        for folder in (given, given / name):
            if _has_split(folder, split):
                return folder
        raise DatasetError(
            f"no {name} {split} files ({stems}) in {given} or {given / name}; "
            "point data_dir (--data-dir) at the folder that holds them"
        )

    candidates = []
    env = os.environ.get("LAYERMOD_DATA")
    if env:
        candidates.append(Path(env).expanduser() / name)  # never the root: MNIST and Fashion-MNIST share file names
    if name in _SYSTEM_DIRS:
        candidates.append(_SYSTEM_DIRS[name])
    cache = _cache_dir(name)
    candidates.append(cache)
    for folder in candidates:
        if _has_split(folder, split):
            return folder

    looked = ", ".join(str(c) for c in candidates)
    fixes = "pass --data-dir DIR (data_dir=) or set LAYERMOD_DATA to a folder holding them"
    if name == "fashion-mnist":
        fixes += ", or on Debian `apt-get install dataset-fashion-mnist`"
    if not download:
        raise DatasetError(f"{name} {split} files ({stems}) not found in {looked} and download is off; {fixes}")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        for stems_of_split in _SPLIT_FILES.values():
            for stem in stems_of_split:
                if not _idx_path(cache, stem).is_file():
                    _download_file(f"{_URLS[name]}{stem}.gz", cache / f"{stem}.gz")
    except (OSError, HTTPException) as e:
        raise DatasetError(
            f"{name} {split} files not found in {looked} and download from {_URLS[name]} failed "
            f"({_one_line(e)}); {fixes}"
        ) from None
    return cache


def _download_file(url: str, dest: Path) -> None:
    """Fetch ``url`` into ``dest`` via a temporary file in the same folder, renamed when complete."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            shutil.copyfileobj(response, out)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_digits(split: str) -> ArrayDataset:
    """scikit-learn's 8x8 digits, scaled to [0, 1], normalised by the whole set, stratified 80/20 split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError("the digits dataset needs scikit-learn; pip install layermod[digits]") from None
    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    labels = bunch.target.astype(np.int64)
    mean, std = float(images.mean()), float(images.std())

    rng = np.random.default_rng(_DIGITS_SEED)
    test_parts = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        test_parts.append(members[: round(_DIGITS_TEST_FRACTION * len(members))])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test_parts)] = True
    keep = np.flatnonzero(is_test if split == "test" else ~is_test)

    x = torch.from_numpy((images[keep, None] - mean) / std)
    y = torch.from_numpy(labels[keep])
    return ArrayDataset(x, y, [str(d) for d in range(10)], "digits", {"mean": [mean], "std": [std]})
