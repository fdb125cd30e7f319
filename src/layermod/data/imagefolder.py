"""Labelled images from a folder holding one subfolder of images per class.

The decisions behind it: docs/design.md, section layermod.data.imagefolder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layermod.data.arrays import ArrayDataset
from layermod.data.bounds import expansion_limit
from layermod.errors import DatasetError, one_line
from layermod.io.files import open_regular

__all__ = ["IMAGE_SUFFIXES", "load_image_folder"]

IMAGE_SUFFIXES: tuple[str, ...] = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
_SPLIT_NAMES = ("train", "test")
_GREY_MODES = frozenset({"1", "L", "LA"})
_BYTES_PER_PIXEL = 4  # the most a decoded mode takes (RGBA, CMYK, I, F)


def load_image_folder(
    path: str | os.PathLike,
    *,
    split: str | None = None,
    size: int | None = None,
) -> ArrayDataset:
    """Load the images of a class-per-subfolder folder as normalised float32 images.

    Args:
        path: the folder ``ROOT`` (see docs/design.md for the layouts).
        split: subfolder to load when ``ROOT`` holds ``train``/``test`` subfolders; ignored otherwise.
        size: side of the square every image is resized to; ``None`` keeps the size all images must share.

    Returns:
        :class:`~layermod.data.ArrayDataset` named ``"folder:ROOT"`` with data (N, C, H, W) float32
            (C = 3, or 1 when all images are greyscale), targets (N,) int64 and the class folder names.
    """
    if not str(path):
        raise DatasetError("no image folder given; pass folder:PATH with the folder holding the class subfolders")
    root = Path(path).expanduser()
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise DatasetError(f"size={size!r} is not a positive integer; pass the side length of the square images")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder; pass a folder holding one subfolder of images per class")
    folder = _set_folder(root, split)
    classes, files = _class_files(folder)
    image_module = _pillow()

    arrays, labels = [], []
    for label, paths in enumerate(files):
        for file in paths:
            arrays.append(_read_image(image_module, file, size))
            labels.append(label)
    first = arrays[0].shape[:2]
    for file, array in zip((f for paths in files for f in paths), arrays):
        if array.shape[:2] != first:
            raise DatasetError(
                f"images in {folder} differ in size: {files[0][0]} is {first[1]}x{first[0]} but {file} is "
                f"{array.shape[1]}x{array.shape[0]}; pass size=N to load_image_folder to resize them to NxN"
            )

    grey = all(a.ndim == 2 for a in arrays)
    if grey:
        x = torch.from_numpy(np.stack(arrays)).unsqueeze(1)
    else:
        rgb = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
        x = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2)
    x = x.contiguous().float().div_(255.0)
    var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    std = var.sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    y = torch.tensor(labels, dtype=torch.int64)
    normalization = {"mean": mean.tolist(), "std": std.tolist()}
    return ArrayDataset(x, y, classes, f"folder:{path}", normalization=normalization)


def _set_folder(root: Path, split: str | None) -> Path:
    """The folder holding the class folders: ``root/split`` when ``root`` is split, else ``root``."""
    if not any((root / name).is_dir() for name in _SPLIT_NAMES):
        return root
    subfolders = ", ".join(sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")))
    if split is None:
        raise DatasetError(f"{root} holds split subfolders ({subfolders}); pass split= one of them")
    folder = root / split
    if split in ("", ".", "..") or Path(split).name != split or not folder.is_dir():
        raise DatasetError(f"{root} has no split subfolder {split!r}; pass split= one of {subfolders}")
    return folder


def _class_files(folder: Path) -> tuple[list[str], list[list[Path]]]:
    """Sorted class names and, per class, the sorted image files of its folder."""
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as e:
        raise DatasetError(f"cannot list {folder}: {e.strerror or e}") from None
    loose = [e for e in entries if e.is_file() and _is_image_name(e)]
    if loose:
        raise DatasetError(
            f"{folder} holds images outside class folders ({loose[0].name}); "
            "move every image into a subfolder named after its class"
        )
    class_dirs = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    if not class_dirs:
        raise DatasetError(f"{folder} has no class folders; put the images of each class in a subfolder named after it")
    files = []
    for class_dir in class_dirs:
        images = sorted((f for f in class_dir.iterdir() if f.is_file() and _is_image_name(f)), key=lambda p: p.name)
        if not images:
            raise DatasetError(
                f"class folder {class_dir} holds no images ({' '.join(IMAGE_SUFFIXES)}); add images or remove it"
            )
        files.append(images)
    return [d.name for d in class_dirs], files


def _is_image_name(path: Path) -> bool:
    """Whether ``path`` is a visible file name with an image suffix."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def _pillow() -> Any:
    """Pillow's ``Image`` module, imported on first use."""
    try:
        from PIL import Image
    except ImportError:
        raise DatasetError("image folders need Pillow; pip install pillow") from None
    return Image


def _read_image(image_module: Any, file: Path, size: int | None) -> np.ndarray:
    """One image as uint8 (H, W) when greyscale, else (H, W, 3), resized to (size, size) if given."""
    try:
        with open_regular(file) as fh, image_module.open(fh) as image:
            width, height = image.size
            stored = os.fstat(fh.fileno()).st_size
            if width * height * _BYTES_PER_PIXEL > expansion_limit(stored):
                raise DatasetError(f"{file} declares {width}x{height} pixels, more than its {stored} bytes can hold "
                                   "(a decompression bomb?); delete or replace it")
            image = image.convert("L" if image.mode in _GREY_MODES else "RGB")
            if size is not None and image.size != (size, size):
                image = image.resize((size, size), image_module.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001  (Pillow's decoders raise many types: OSError, SyntaxError, ...)
        raise DatasetError(f"{file} cannot be read as an image ({one_line(e)}); delete or replace it") from None
