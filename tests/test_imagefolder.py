"""Tests of layermod.data.imagefolder: class-per-subfolder image folders written with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from layermod.data.arrays import ArrayDataset
from layermod.data.datasets import load_dataset
from layermod.errors import DatasetError
from layermod.data.imagefolder import load_image_folder
from assertions import assert_one_line


def write_images(folder: Path, per_class: dict[str, int], size=(8, 8), mode="RGB", seed=0, suffix=".png"):
    """Random images ``folder/<class>/img<i><suffix>``; returns {class: [uint8 arrays in file order]}."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, n in per_class.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        out[name] = []
        for i in range(n):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
            Image.fromarray(pixels, mode).save(folder / name / f"img{i}{suffix}")
            out[name].append(pixels)
    return out



def raw_pixels(ds: ArrayDataset) -> np.ndarray:
    """Pixels 0..255 recovered from normalised data, (N, C, H, W)."""
    mean = torch.tensor(ds.normalization["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(ds.normalization["std"]).view(1, -1, 1, 1)
    return np.rint(((ds.data * std + mean) * 255).numpy()).astype(np.int64)


def test_one_set_rgb(tmp_path):
    written = write_images(tmp_path / "set", {"dog": 3, "cat": 2, "bird": 4})
    ds = load_image_folder(tmp_path / "set")
    assert isinstance(ds, ArrayDataset) and ds.name == f"folder:{tmp_path / 'set'}"
    assert ds.classes == ["bird", "cat", "dog"]
    assert ds.targets.dtype == torch.int64 and ds.targets.tolist() == [0] * 4 + [1] * 2 + [2] * 3
    assert ds.data.shape == (9, 3, 8, 8) and ds.data.dtype == torch.float32
    want = np.concatenate([np.stack(written[c]) for c in ds.classes]).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(raw_pixels(ds), want)
    # normalised with the statistics of the set itself
    scaled = want.astype(np.float64) / 255
    np.testing.assert_allclose(ds.normalization["mean"], scaled.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(ds.normalization["std"], scaled.std(axis=(0, 2, 3)), rtol=1e-4)
    assert torch.allclose(ds.data.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(ds.data.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)


def test_split_subfolders_and_load_dataset(tmp_path):
    train = write_images(tmp_path / "train", {"a": 3, "b": 2}, seed=1)
    test = write_images(tmp_path / "test", {"a": 1, "b": 2}, seed=2)
    for split, written in (("train", train), ("test", test)):
        for ds in (load_image_folder(tmp_path, split=split), load_dataset(f"folder:{tmp_path}", split=split)):
            assert ds.classes == ["a", "b"]
            assert ds.targets.tolist() == [0] * len(written["a"]) + [1] * len(written["b"])
            want = np.concatenate([np.stack(written[c]) for c in "ab"]).transpose(0, 3, 1, 2)
            np.testing.assert_array_equal(raw_pixels(ds), want)
    assert len(load_dataset(f"folder:{tmp_path}")) == 3  # load_dataset's default split is "test"


def test_without_split_subfolders_split_is_ignored(tmp_path):
    write_images(tmp_path, {"x": 2, "y": 2})
    assert len(load_image_folder(tmp_path, split="train")) == len(load_image_folder(tmp_path)) == 4


def test_greyscale_set_has_one_channel(tmp_path):
    written = write_images(tmp_path, {"a": 2, "b": 2}, mode="L")
    ds = load_image_folder(tmp_path)
    assert ds.data.shape == (4, 1, 8, 8) and len(ds.normalization["mean"]) == 1
    np.testing.assert_array_equal(raw_pixels(ds)[:, 0], np.stack(written["a"] + written["b"]))


def test_greyscale_in_colour_set_is_repeated(tmp_path):
    write_images(tmp_path, {"a": 2}, mode="RGB")
    grey = write_images(tmp_path, {"b": 1}, mode="L", suffix=".bmp")
    ds = load_image_folder(tmp_path)
    assert ds.data.shape == (3, 3, 8, 8)
    pixels = raw_pixels(ds)[2]
    for channel in range(3):
        np.testing.assert_array_equal(pixels[channel], grey["b"][0])


def test_size_mismatch_and_resize(tmp_path):
    write_images(tmp_path, {"a": 2}, size=(8, 8))
    write_images(tmp_path, {"b": 1}, size=(10, 6))
    with pytest.raises(DatasetError) as err:
        load_image_folder(tmp_path)
    assert_one_line(err, str(tmp_path / "b" / "img0.png"), "10x6", "8x8", "size=")
    ds = load_image_folder(tmp_path, size=4)
    assert ds.data.shape == (3, 3, 4, 4)
    assert load_image_folder(tmp_path, size=8).data.shape == (3, 3, 8, 8)


def test_resize_matches_pillow(tmp_path):
    written = write_images(tmp_path, {"a": 1}, size=(12, 12))
    ds = load_image_folder(tmp_path, size=5)
    want = np.asarray(Image.fromarray(written["a"][0]).resize((5, 5), Image.BILINEAR)).transpose(2, 0, 1)
    np.testing.assert_array_equal(raw_pixels(ds)[0], want)


def test_other_files_are_skipped(tmp_path):
    write_images(tmp_path, {"a": 2, "b": 1})
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / ".hidden.png").write_bytes(b"junk")
    (tmp_path / ".cache").mkdir()
    (tmp_path / "README.md").write_text("about the set")
    upper = tmp_path / "b" / "IMG9.PNG"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(upper, format="PNG")
    ds = load_image_folder(tmp_path)
    assert ds.classes == ["a", "b"] and ds.targets.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("content", [b"this is text, not a PNG", b""])
def test_undecodable_image(tmp_path, content):
    write_images(tmp_path, {"a": 2})
    bad = tmp_path / "a" / "img1.png"
    bad.write_bytes(content)
    with pytest.raises(DatasetError) as err:
        load_image_folder(tmp_path)
    assert_one_line(err, str(bad), "cannot be read as an image")


def test_truncated_image(tmp_path):
    write_images(tmp_path, {"a": 1}, size=(64, 64))
    bad = tmp_path / "a" / "img0.png"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DatasetError) as err:
        load_image_folder(tmp_path)
    assert_one_line(err, str(bad))


def test_bad_layouts(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(DatasetError) as err:
        load_image_folder(missing)
    assert_one_line(err, str(missing), "not a folder")

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError) as err:
        load_image_folder(empty)
    assert_one_line(err, str(empty), "no class folders")

    loose = tmp_path / "loose"
    write_images(loose, {"a": 1})
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(loose / "stray.jpg")
    with pytest.raises(DatasetError) as err:
        load_image_folder(loose)
    assert_one_line(err, str(loose), "stray.jpg", "outside class folders")

    hollow = tmp_path / "hollow"
    write_images(hollow, {"a": 1})
    (hollow / "b").mkdir()
    (hollow / "b" / "labels.csv").write_text("x")
    with pytest.raises(DatasetError) as err:
        load_image_folder(hollow)
    assert_one_line(err, str(hollow / "b"), "no images")


def test_split_errors(tmp_path):
    write_images(tmp_path / "train", {"a": 1})
    with pytest.raises(DatasetError) as err:
        load_image_folder(tmp_path)
    assert_one_line(err, str(tmp_path), "split=", "train")
    for split in ("test", "../train", ".."):
        with pytest.raises(DatasetError) as err:
            load_image_folder(tmp_path, split=split)
        assert_one_line(err, str(tmp_path), repr(split), "train")


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "8"])
def test_bad_size(tmp_path, size):
    write_images(tmp_path, {"a": 1})
    with pytest.raises(DatasetError) as err:
        load_image_folder(tmp_path, size=size)
    assert_one_line(err, "size=", "positive integer")


def test_empty_folder_spec():
    with pytest.raises(DatasetError) as err:
        load_dataset("folder:")
    assert_one_line(err, "folder:PATH")
