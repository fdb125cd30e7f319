"""A dataset of the Hugging Face ``datasets`` library (``hf:NAME_OR_DIR``): texts tokenised, images as tensors.

Decisions, on purpose:

* **A folder is read with ``load_from_disk`` only** (a folder written by ``save_to_disk``: Arrow files and
  JSON metadata); nothing in it is imported or run, and a folder of another kind is refused. Any other name
  is fetched with ``datasets.load_dataset(NAME, split=...)`` from the hub (never ``trust_remote_code``); a hub
  that cannot be reached is one :class:`DatasetError` line saying to save the set with ``save_to_disk``.
* **Split.** A saved ``DatasetDict`` (or a hub set) gives the split named by ``split`` (any it has, e.g.
  ``validation``; the others are listed when it lacks it); a saved single ``Dataset`` is the set, whatever
  ``split`` says.
* **Inputs.** The ``text_column`` (default ``"text"``) when it holds strings: tokenised as in
  :mod:`layermod.data.text`. Else the first ``Image`` column, or the ``text_column`` when it holds number
  arrays: images. A missing column lists the columns.
* **Images** are read from the bytes the set holds (a path-only image is refused, so no other file is read),
  each image's declared size checked against its bytes before it is decoded (the bound of
  :mod:`layermod.data.bounds`), all of one size, as 8-bit RGB or greyscale; scaled to [0, 1] (8-bit ones) and
  normalised per channel with the set's own mean and std, recorded in ``normalization``, as image folders are.
* **Labels.** A ``ClassLabel`` column gives the class names; other columns are read as
  :func:`layermod.data.tabular.class_indices` reads labels. At most :data:`~layermod.data.tabular.MAX_ROWS` rows.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layermod.data.arrays import ArrayDataset
from layermod.data.bounds import expansion_limit
from layermod.data.tabular import MAX_ROWS, MAX_TEXT_CHARS, class_indices
from layermod.data.text import check_max_length, text_dataset
from layermod.errors import DatasetError, LayermodError, one_line

__all__ = ["load_hf_dataset", "normalise_images"]

_MAX_IMAGE_BYTES = 2**31  # float32 bytes of all images of a set


def load_hf_dataset(name: str, *, split: str = "test", tokenizer: Any = None, text_column: str = "text",
                    label_column: str = "label", max_length: int = 128) -> torch.utils.data.Dataset:
    """The ``split`` of the ``datasets`` dataset ``name`` (a ``save_to_disk`` folder or a hub name), as a
    :class:`~layermod.data.text.TokenDataset` (texts) or an :class:`~layermod.data.arrays.ArrayDataset`
    (images) named ``hf:NAME``."""
    check_max_length(max_length)
    try:
        import datasets
    except ImportError:
        raise DatasetError("hf: datasets need the datasets library; .venv/bin/pip install datasets") from None
    where = f"hf:{name}"
    data = _open(datasets, name, split, where)
    if len(data) > MAX_ROWS:
        raise DatasetError(f"{where} has {len(data)} rows, more than {MAX_ROWS}; select fewer and save_to_disk")
    features = data.features
    columns = list(features)
    if label_column not in features:
        raise DatasetError(f"{where} has no column {label_column!r}; its columns are {', '.join(map(repr, columns))} "
                           "(choose with label_column)")
    labels = data[label_column]
    label_feature = features[label_column]
    if isinstance(label_feature, datasets.ClassLabel):
        y = np.asarray(labels, dtype=np.int64)
        if len(y) and (y.min() < 0 or y.max() >= len(label_feature.names)):
            raise DatasetError(f"{where} has label {y.min() if y.min() < 0 else y.max()} outside its "
                               f"{len(label_feature.names)} classes; fix the set")
        classes = list(label_feature.names)
    else:
        y, classes = class_indices(labels, where)
    text = features.get(text_column)
    if isinstance(text, datasets.Value) and text.dtype in ("string", "large_string"):
        texts = data[text_column]
        for i, t in enumerate(texts):
            if not isinstance(t, str) or len(t) > MAX_TEXT_CHARS:
                what = f"a text of {len(t)} characters" if isinstance(t, str) else f"a {type(t).__name__}"
                raise DatasetError(f"{where} row {i} has {what} in {text_column!r}; give strings of at most "
                                   f"{MAX_TEXT_CHARS} characters")
        dataset = text_dataset(texts, y.tolist(), tokenizer, max_length, where)
        dataset.classes = classes  # the indices are already made: keep the names they index
        return dataset
    images = [c for c, f in features.items() if isinstance(f, datasets.Image)]
    if images:
        x = _decode_images(data.cast_column(images[0], datasets.Image(decode=False))[images[0]], where)
    elif text_column in features:
        x = _arrays(data.with_format("numpy")[text_column], where)
    else:
        raise DatasetError(f"{where} has no column {text_column!r} and no image column; its columns are "
                           f"{', '.join(map(repr, columns))} (choose with text_column)")
    x, normalization = normalise_images(x)
    return ArrayDataset(x, torch.from_numpy(y), classes, where, normalization=normalization)


def _open(datasets: Any, name: str, split: str, where: str) -> Any:
    """The ``Dataset`` of ``split``: from a ``save_to_disk`` folder, or from the hub."""
    folder = Path(name).expanduser()
    if folder.exists():
        saved = any((folder / f).is_file() for f in ("dataset_dict.json", "state.json"))
        if not folder.is_dir() or not saved:
            raise DatasetError(f"{folder} is not a folder written by save_to_disk (no dataset_dict.json or "
                               "state.json); save it with Dataset.save_to_disk, or pass a .csv/.json/.parquet file")
        try:
            data = datasets.load_from_disk(str(folder))
        except Exception as e:  # noqa: BLE001  (a corrupt folder may raise anything in datasets/pyarrow)
            raise DatasetError(f"cannot read {where} ({type(e).__name__}: {one_line(e)}); save it again with "
                               "save_to_disk") from None
    else:
        try:
            data = datasets.load_dataset(name, split=split)
        except Exception as e:  # noqa: BLE001
            raise DatasetError(f"cannot load {name!r} from the Hugging Face hub ({type(e).__name__}: "
                               f"{one_line(e)[:300]}); without internet, save it on a machine that has it with "
                               "save_to_disk and pass hf:FOLDER") from None
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise DatasetError(f"{where} has no split {split!r}; its splits are {', '.join(map(repr, data))} "
                               "(choose with split)")
        data = data[split]
    if not isinstance(data, datasets.Dataset):
        raise DatasetError(f"{where} is a {type(data).__name__}, not a map-style Dataset; save a Dataset")
    return data


def _decode_images(cells: list[Any], where: str) -> np.ndarray:
    """(N, H, W[, 3]) uint8 of the image cells ``{"bytes": ..., "path": ...}``, each checked before decoding."""
    try:
        from PIL import Image
    except ImportError:
        raise DatasetError("reading images needs Pillow; .venv/bin/pip install pillow") from None
    arrays, total = [], 0
    for i, cell in enumerate(cells):
        raw = (cell or {}).get("bytes")
        if not raw:
            raise DatasetError(f"{where} image {i} holds no bytes (only a path); save the set with the images in it")
        try:
            with Image.open(io.BytesIO(raw)) as image:
                width, height = image.size
                if width * height * 4 > expansion_limit(len(raw)):
                    raise DatasetError(f"{where} image {i} declares {width}x{height} pixels in {len(raw)} bytes, so "
                                       "it is corrupt or a decompression bomb; fix the set")
                total += width * height * 3 * 4
                if total > _MAX_IMAGE_BYTES:
                    raise DatasetError(f"{where} images need more than {_MAX_IMAGE_BYTES} bytes as float32; "
                                       "select fewer or smaller images")
                grey = image.mode in ("1", "L", "LA")
                arrays.append(np.asarray(image.convert("L" if grey else "RGB")))
        except LayermodError:
            raise
        except Exception as e:  # noqa: BLE001  (Pillow raises many kinds on corrupt images)
            raise DatasetError(f"cannot decode {where} image {i} ({type(e).__name__}: {one_line(e)}); fix the set") from None
    shapes = {a.shape[:2] for a in arrays}
    if len(shapes) > 1:
        raise DatasetError(f"{where} images differ in size ({', '.join(map(str, sorted(shapes)[:3]))}); resize them "
                           "to one size")
    if any(a.ndim == 3 for a in arrays):
        arrays = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    return np.stack(arrays) if arrays else np.zeros((0, 1, 1), np.uint8)


def _arrays(column: Any, where: str) -> np.ndarray:
    """A column of number arrays as one (N, ...) array."""
    x = np.asarray(column)
    if x.dtype == object or x.dtype.kind not in "biuf" or x.ndim not in (3, 4):
        raise DatasetError(f"{where} inputs are {x.dtype} of shape {x.shape}, not (N, H, W) or (N, H, W, C) "
                           "numbers of one shape; give images or texts")
    if x.size * 4 > _MAX_IMAGE_BYTES:
        raise DatasetError(f"{where} images need more than {_MAX_IMAGE_BYTES} bytes as float32; select fewer")
    return x


def normalise_images(x: np.ndarray) -> tuple[torch.Tensor, dict]:
    """(N, C, H, W) float32 of (N, H, W[, C]) images, [0, 1]-scaled when 8-bit, normalised per channel."""
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    t = torch.from_numpy(np.ascontiguousarray(x)).float().div_(scale)
    t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()
    var, mean = torch.var_mean(t, dim=(0, 2, 3), correction=0)
    std = var.sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    t.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    return t, {"mean": mean.tolist(), "std": std.tolist()}
