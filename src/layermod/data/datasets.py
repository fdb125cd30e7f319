"""The datasets known by name, and :func:`load_dataset`, which loads one of them or an image folder.

Built-in datasets: ``"fashion-mnist"`` and ``"mnist"`` (28x28 grey images read from IDX files,
:mod:`layermod.data.idx`), ``"digits"`` (scikit-learn's 8x8 digits, :mod:`layermod.data.digits`) and
``"cifar10"``/``"cifar100"`` (32x32 colour images, :mod:`layermod.data.cifar`); ``"folder:PATH"`` loads a folder
of one subfolder of images per class (:mod:`layermod.data.imagefolder`); ``"torchvision:NAME"`` one of
torchvision's datasets in its folder layout under ``data_dir`` (:mod:`layermod.data.tvdata`). Each returns an
:class:`~layermod.data.arrays.ArrayDataset`. Any torch ``Dataset`` of ``(x, y)`` pairs or an ``(X, y)`` pair of
tensors/arrays can be used instead of a named dataset (:mod:`layermod.data.arrays`).

Decisions, on purpose:

* **Names** are case-insensitive; ``folder:`` (any case) is followed by the folder's path as given, and
  ``torchvision:`` by a name of :data:`~layermod.data.tvdata.TORCHVISION_DATASETS`. Texts, tables and ``hf:``
  datasets need the model's tokenizer, so :func:`layermod.data.spec.resolve_data` loads them
  (:mod:`layermod.data.text`, :mod:`layermod.data.hfdata`). An unknown
  name or a split other than ``"train"``/``"test"`` is a one-line :class:`DatasetError` listing the choices.
* **Where files are found and downloaded** is one search order for every named dataset read from files
  (:mod:`layermod.data.download`); ``data_dir`` is ignored for the digits and for folders.
"""

from __future__ import annotations

import os

from layermod.data.arrays import ArrayDataset
from layermod.data.cifar import CIFAR_DATASETS, load_cifar
from layermod.data.digits import load_digits
from layermod.data.idx import IDX_DATASETS, load_idx_dataset
from layermod.data.imagefolder import load_image_folder
from layermod.data.tvdata import load_torchvision
from layermod.errors import DatasetError

__all__ = ["DATASETS", "load_dataset"]

DATASETS: tuple[str, ...] = (*IDX_DATASETS, "digits", *CIFAR_DATASETS)


def load_dataset(
    name: str,
    *,
    split: str = "test",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> ArrayDataset:
    """Load a built-in dataset split, or an image folder, as normalised float32 images.

    Args:
        name: one of :data:`DATASETS` (case-insensitive), ``"folder:PATH"`` for an image folder
            (see :func:`layermod.data.imagefolder.load_image_folder`), or ``"torchvision:NAME"``
            (:func:`layermod.data.tvdata.load_torchvision`, with ``data_dir`` as torchvision's root).
        split: ``"train"`` or ``"test"``; for a folder, the split subfolder to load when it has any.
        data_dir: folder holding the IDX files or the CIFAR folder/archive (or a ``<name>`` subfolder of it);
            when given, the only place searched. Ignored for ``"digits"`` and folders.
        download: fetch missing IDX files or the CIFAR archive into the per-user cache when no copy is found.

    Returns:
        :class:`~layermod.data.arrays.ArrayDataset` with data (N, 1, 28, 28) for fashion-mnist/mnist,
            (N, 1, 8, 8) for digits, (N, 3, 32, 32) for cifar10/cifar100, (N, C, H, W) for a folder.
    """
    if str(name)[:7].lower() == "folder:":
        return load_image_folder(str(name)[7:], split=split)
    if str(name)[:12].lower() == "torchvision:":
        return load_torchvision(str(name)[12:], split=split, data_dir=data_dir)
    key = str(name).lower()
    if key not in DATASETS:
        raise DatasetError(
            f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}, folder:PATH for an image folder, "
            "or torchvision:NAME"
        )
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split {split!r} for {key}; use 'train' or 'test'")
    if key == "digits":
        return load_digits(split)
    if key in CIFAR_DATASETS:
        return load_cifar(key, split=split, data_dir=data_dir, download=download)
    return load_idx_dataset(key, split, data_dir, download)
