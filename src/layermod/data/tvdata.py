"""torchvision's datasets by name (``torchvision:CIFAR10``), read from torchvision's folder layout under a root.

Decisions, on purpose:

* **torchvision's layout, layermod's readers.** torchvision reads CIFAR with ``pickle.load`` and MNIST with
  unchecked IDX headers, which would let a file run code or ask for gigabytes. So ``CIFAR10``/``CIFAR100``
  (``ROOT/cifar-10-batches-py/`` or the ``.tar.gz``) go through :mod:`layermod.data.cifar` and
  ``MNIST``/``FashionMNIST`` (``ROOT/<Name>/raw/*-ubyte[.gz]``) through :mod:`layermod.data.idx`: same
  checks, same normalisation (recorded in ``normalization``) as ``cifar10``, ``mnist``, ... ``FakeData`` (no
  files: 1000 random 3x32x32 images of 10 classes, another 1000 for ``train``) is torchvision's own, normalised
  with its own mean and std. Other names are refused with the list; a folder of images is ``folder:PATH``.
* **Nothing is downloaded** (torchvision's ``download=False``): the root is ``data_dir`` (``--data-dir``), and
  a missing root or missing files is one :class:`DatasetError` line saying where to put them.
* Names are case-insensitive; the split is ``train`` or ``test``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from layermod.data.arrays import ArrayDataset
from layermod.data.cifar import load_cifar
from layermod.data.hfdata import normalise_images
from layermod.data.idx import load_idx_dataset
from layermod.errors import DatasetError, one_line

__all__ = ["TORCHVISION_DATASETS", "load_torchvision"]

# torchvision name: (layermod reader's name, what ROOT holds)
_READ_BY_LAYERMOD = {
    "CIFAR10": ("cifar10", "cifar-10-batches-py/ or cifar-10-python.tar.gz"),
    "CIFAR100": ("cifar100", "cifar-100-python/ or cifar-100-python.tar.gz"),
    "MNIST": ("mnist", "MNIST/raw/ with the four *-ubyte[.gz] files"),
    "FashionMNIST": ("fashion-mnist", "FashionMNIST/raw/ with the four *-ubyte[.gz] files"),
}
TORCHVISION_DATASETS: tuple[str, ...] = (*_READ_BY_LAYERMOD, "FakeData")
_FAKE_SIZE = 1000


def load_torchvision(name: str, *, split: str = "test", data_dir: str | os.PathLike | None = None) -> ArrayDataset:
    """torchvision's dataset ``name`` (one of :data:`TORCHVISION_DATASETS`) under the root ``data_dir``."""
    key = {n.lower(): n for n in TORCHVISION_DATASETS}.get(str(name).lower())
    if key is None:
        raise DatasetError(f"torchvision:{name} is not one layermod reads; the torchvision datasets it reads: "
                           f"{', '.join(TORCHVISION_DATASETS)} (a folder of images per class: folder:PATH)")
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split {split!r} for torchvision:{key}; use 'train' or 'test'")
    if key == "FakeData":
        return _fake(split)
    reader, holds = _READ_BY_LAYERMOD[key]
    if data_dir is None or not Path(data_dir).expanduser().is_dir():
        where = "no data_dir given" if data_dir is None else f"no folder {data_dir}"
        raise DatasetError(f"torchvision:{key} reads torchvision's root folder, {where}; put {holds} in a folder "
                           "and pass it as data_dir")
    root = Path(data_dir).expanduser()
    if reader in ("cifar10", "cifar100"):
        data = load_cifar(reader, split=split, data_dir=root, download=False)
    else:
        folder = root / key / "raw"
        if not folder.is_dir():
            raise DatasetError(f"torchvision:{key} needs {root / key / 'raw'} holding the four *-ubyte[.gz] files; "
                               "put them there, or pass the root that holds them as data_dir")
        data = load_idx_dataset(reader, split, folder, download=False)
    data.name = f"torchvision:{key}"
    return data


def _fake(split: str) -> ArrayDataset:
    """torchvision's FakeData: the same images on every run, other ones for ``train``."""
    try:
        from torchvision.datasets import FakeData
    except ImportError:
        raise DatasetError("torchvision:FakeData needs torchvision; .venv/bin/pip install torchvision") from None
    try:
        fake = FakeData(size=_FAKE_SIZE, image_size=(3, 32, 32), num_classes=10,
                        random_offset=0 if split == "test" else _FAKE_SIZE)
        pairs = [fake[i] for i in range(len(fake))]
    except Exception as e:  # noqa: BLE001  (torchvision's code may raise anything)
        raise DatasetError(f"torchvision:FakeData failed ({type(e).__name__}: {one_line(e)})") from None
    x = np.stack([np.asarray(image.convert("RGB")) for image, _ in pairs])
    y = torch.tensor([int(label) for _, label in pairs], dtype=torch.int64)
    data, normalization = normalise_images(x)
    return ArrayDataset(data, y, [str(c) for c in range(10)], "torchvision:FakeData", normalization=normalization)
