"""Tests of layermod.data: IDX reading, dataset loading and search order, balanced draws, gather."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import Dataset

from layermod.data import download as DL
from layermod.data import idx as IDX
from layermod.data.arrays import ArrayDataset, as_dataset, dataset_labels, gather
from layermod.data.datasets import DATASETS, load_dataset
from layermod.data.draws import balanced_draws
from layermod.data.idx import read_idx
from layermod.errors import DatasetError, LabelError
from idx_files import IDX_CODES, idx_bytes, write_idx, write_mnist_like
from assertions import assert_one_line

REAL_DOWNLOAD = DL._download_file

# ---------------------------------------------------------------- read_idx


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("dtype", list(IDX_CODES))
def test_read_idx_round_trip(tmp_path, compress, dtype):
    rng = np.random.default_rng(1)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    got = read_idx(write_idx(tmp_path / "a.idx", array, compress))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, array)


def test_read_idx_detects_gzip_by_content_not_suffix(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "plain.gz", array, compress=False)), array)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "packed.idx", array, compress=True)), array)


def test_read_idx_one_dimensional_and_empty(tmp_path):
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l", np.array([3, 1, 4], np.uint8), False)), [3, 1, 4])
    assert read_idx(write_idx(tmp_path / "e", np.zeros((0, 28, 28), np.uint8), True)).shape == (0, 28, 28)


GOOD = idx_bytes(np.arange(24, dtype=np.int16).reshape(2, 3, 4))


@pytest.mark.parametrize(
    "payload, why",
    [
        (b"\x08\x03" + GOOD[2:], "bad magic"),
        (GOOD[:2] + b"\x07" + GOOD[3:], "bad magic"),
        (GOOD[:-3], "truncated data"),
        (GOOD[:9], "truncated header"),
        (GOOD[:2], "truncated header"),
        (b"", "truncated header"),
        (GOOD + b"\x00\x00", "trailing bytes"),
    ],
)
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_corrupt_files(tmp_path, payload, why, compress):
    path = tmp_path / "bad-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(payload) if compress else payload)
    with pytest.raises(DatasetError) as err:
        read_idx(path)
    assert_one_line(err, str(path), why, "delete it and download again")


@pytest.mark.parametrize("cut", [5, 30, -4])
def test_read_idx_bad_gzip(tmp_path, cut):
    path = tmp_path / "x.gz"
    packed = gzip.compress(GOOD)
    path.write_bytes(packed[:cut] if cut > 0 else packed[:cut] + b"\xff\xff\xff\xff")
    with pytest.raises(DatasetError) as err:
        read_idx(path)
    assert_one_line(err, str(path), "gzip", "delete it and download again")


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DatasetError) as err:
        read_idx(tmp_path / "absent")
    assert_one_line(err, str(tmp_path / "absent"))


# ---------------------------------------------------------------- load_dataset: IDX datasets


@pytest.mark.parametrize("compress", [True, False])
def test_load_fashion_mnist_from_dir(isolated, compress):
    files = write_mnist_like(isolated / "fm", compress=compress)
    for split in ("train", "test"):
        ds = load_dataset("fashion-mnist", split=split, data_dir=isolated / "fm")
        images, labels = files[split]
        assert isinstance(ds, ArrayDataset) and ds.name == "fashion-mnist"
        assert ds.data.shape == (len(labels), 1, 28, 28) and ds.data.dtype == torch.float32
        assert ds.targets.dtype == torch.int64
        np.testing.assert_array_equal(ds.targets.numpy(), labels)
        assert ds.normalization == {"mean": [0.2860], "std": [0.3530]}
        expected = (images[:, None].astype(np.float32) / 255 - 0.2860) / 0.3530
        np.testing.assert_allclose(ds.data.numpy(), expected, rtol=1e-5, atol=1e-6)
        assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot" and len(ds.classes) == 10
        x, y = ds[3]
        assert x.shape == (1, 28, 28) and y == int(labels[3]) and isinstance(y, int)
        assert len(ds) == len(labels)


def test_load_mnist_normalisation_and_classes(isolated):
    write_mnist_like(isolated / "m")
    ds = load_dataset("MNIST", data_dir=isolated / "m")
    assert ds.name == "mnist" and len(ds) == 20
    assert ds.classes == [str(d) for d in range(10)]
    assert ds.normalization == {"mean": [0.1307], "std": [0.3081]}
    assert float(ds.data.min()) >= (0 - 0.1307) / 0.3081 - 1e-6
    assert float(ds.data.max()) <= (1 - 0.1307) / 0.3081 + 1e-6


def test_data_dir_may_hold_a_name_subfolder(isolated):
    write_mnist_like(isolated / "root" / "mnist")
    assert len(load_dataset("mnist", split="train", data_dir=isolated / "root")) == 30


def test_explicit_data_dir_without_files_does_not_fall_back(isolated, monkeypatch):
    write_mnist_like(isolated / "env" / "fashion-mnist")
    monkeypatch.setenv("LAYERMOD_DATA", str(isolated / "env"))
    (isolated / "empty").mkdir()
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion-mnist", data_dir=isolated / "empty")
    assert_one_line(err, str(isolated / "empty"), "t10k-images-idx3-ubyte", "data_dir")


def test_layermod_data_env_holds_one_folder_per_dataset(isolated, monkeypatch):
    root = isolated / "env"
    write_mnist_like(root / "mnist", n_test=7)
    write_mnist_like(root, n_test=5)  # files at the root are ambiguous (MNIST and Fashion-MNIST share names)
    monkeypatch.setenv("LAYERMOD_DATA", str(root))
    assert len(load_dataset("mnist")) == 7
    with pytest.raises(DatasetError):
        load_dataset("fashion-mnist", download=False)


def test_system_dir_then_cache(isolated, monkeypatch):
    write_mnist_like(isolated / "cache" / "layermod" / "data" / "fashion-mnist", n_test=4)
    assert len(load_dataset("fashion-mnist")) == 4
    write_mnist_like(isolated / "system", n_test=6)
    monkeypatch.setitem(DL._SYSTEM_DIRS, "fashion-mnist", isolated / "system")
    assert len(load_dataset("fashion-mnist")) == 6


def test_cache_under_home_without_xdg(isolated, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(isolated / "home"))
    write_mnist_like(isolated / "home" / ".cache" / "layermod" / "data" / "mnist", n_test=3)
    assert len(load_dataset("mnist")) == 3


def test_nothing_found_and_download_disabled(isolated):
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion-mnist", download=False)
    message = assert_one_line(err, "data_dir=DIR", "LAYERMOD_DATA", "apt-get install dataset-fashion-mnist")
    assert str(isolated / "cache" / "layermod" / "data" / "fashion-mnist") in message
    assert str(isolated / "no-system-copy") in message


def test_failed_download_is_reported(isolated, monkeypatch):
    def fail(url, dest):
        raise OSError("network is unreachable")

    monkeypatch.setattr(DL, "_download_file", fail)
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist")
    message = assert_one_line(err, "network is unreachable", "data_dir=DIR", IDX._URLS["mnist"])
    assert "apt-get" not in message


def test_download_into_cache(isolated, monkeypatch):
    server = isolated / "server"
    files = write_mnist_like(server, n_test=12)
    monkeypatch.setitem(IDX._URLS, "mnist", server.as_uri() + "/")
    monkeypatch.setattr(DL, "_download_file", REAL_DOWNLOAD)
    ds = load_dataset("mnist", split="test")
    np.testing.assert_array_equal(ds.targets.numpy(), files["test"][1])
    cache = isolated / "cache" / "layermod" / "data" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        f"{stem}.gz" for stems in IDX._SPLIT_FILES.values() for stem in stems
    )


def test_download_that_leaves_the_files_missing_is_reported(isolated, monkeypatch):
    monkeypatch.setattr(DL, "_download_file", lambda url, dest: None)
    cache = isolated / "cache" / "layermod" / "data" / "mnist"
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist")
    assert_one_line(err, "incomplete", f"delete {cache}")

def test_download_file_leaves_no_partial_file(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"abc" * 1000)
    REAL_DOWNLOAD(source.as_uri(), tmp_path / "dest.bin")
    assert (tmp_path / "dest.bin").read_bytes() == b"abc" * 1000

    with pytest.raises(OSError):
        REAL_DOWNLOAD((tmp_path / "missing.bin").as_uri(), tmp_path / "never.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest.bin", "src.bin"]


def test_count_mismatch(isolated):
    folder = isolated / "m"
    write_mnist_like(folder)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(19, np.uint8), compress=True)
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", data_dir=folder)
    assert_one_line(err, "20 images", "19 labels")


def test_corrupt_dataset_file_names_it(isolated):
    folder = isolated / "m"
    write_mnist_like(folder)
    bad = folder / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", data_dir=folder)
    assert_one_line(err, str(bad), "delete it and download again")


def test_unknown_name_and_split(isolated):
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar-10")
    assert_one_line(err, "cifar-10", *DATASETS)
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", split="validation")
    assert_one_line(err, "validation", "train", "test")


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist_test_split(monkeypatch):
    monkeypatch.delenv("LAYERMOD_DATA", raising=False)
    ds = load_dataset("fashion-mnist", split="test", download=False)
    assert ds.data.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.targets).tolist() == [1000] * 10
    assert abs(float(ds.data.mean())) < 0.05 and abs(float(ds.data.std()) - 1) < 0.05


# ---------------------------------------------------------------- digits


def digit_rows(ds: ArrayDataset) -> Counter:
    """Multiset of (label, 64 raw pixel values 0..16) recovered from a normalised digits split."""
    mean, std = ds.normalization["mean"][0], ds.normalization["std"][0]
    pixels = np.rint((ds.data.reshape(len(ds), -1).numpy() * std + mean) * 16).astype(np.int64)
    return Counter((int(label), *row) for label, row in zip(ds.targets.tolist(), pixels))


def test_digits_split():
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    assert train.data.shape[1:] == (1, 8, 8) and test.data.shape[1:] == (1, 8, 8)
    assert train.data.dtype == torch.float32 and train.targets.dtype == torch.int64
    assert train.classes == [str(d) for d in range(10)] and train.name == "digits"
    assert train.normalization == test.normalization
    assert set(train.targets.tolist()) == set(test.targets.tolist()) == set(range(10))
    for c in range(10):  # stratified 80/20
        n_test, n_train = int((test.targets == c).sum()), int((train.targets == c).sum())
        assert abs(n_test - 0.2 * (n_test + n_train)) <= 0.5
    # train and test partition the whole set: every sample is used exactly once
    raw = load_digits()
    whole = Counter((int(label), *row) for label, row in zip(raw.target, raw.data.astype(np.int64)))
    assert digit_rows(train) + digit_rows(test) == whole
    # normalised by the statistics of the whole set
    data = torch.cat([train.data, test.data])
    assert abs(float(data.mean())) < 1e-4 and abs(float(data.std(unbiased=False)) - 1) < 1e-4


def test_digits_split_is_deterministic():
    a, b = load_dataset("digits", split="test"), load_dataset("digits", split="test")
    assert torch.equal(a.data, b.data) and torch.equal(a.targets, b.targets)


# ---------------------------------------------------------------- labels, as_dataset, gather


class PairDataset(Dataset):
    """Plain Dataset of (x, y) pairs without .targets; labels returned as 0-d tensors."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i] * 2, torch.tensor(self.y[i])


class WithTargets:
    def __init__(self, targets):
        self.targets = targets


def test_dataset_labels_forms():
    y = np.array([2, 0, 1, 1])
    x = np.zeros((4, 3))
    for form in [(x, y), [torch.zeros(4, 3), torch.from_numpy(y)], WithTargets(list(y)),
                 WithTargets(torch.from_numpy(y)), PairDataset(torch.zeros(4, 3), list(y))]:
        got = dataset_labels(form)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, y)


@pytest.mark.parametrize("bad", [np.array([0.0, 1.5]), np.array(["a", "b"]), np.array([[0, 1]]), [True, False]])
def test_dataset_labels_rejects_non_integers(bad):
    with pytest.raises(LabelError):
        dataset_labels((np.zeros((2, 1)), bad))


def test_as_dataset():
    x, y = np.arange(12, dtype=np.float64).reshape(4, 3), [0, 2, 2, 1]
    ds = as_dataset((x, y))
    assert isinstance(ds, ArrayDataset) and ds.name == "tensors" and ds.normalization == {}
    assert ds.data.dtype == torch.float32 and ds.targets.dtype == torch.int64
    assert ds.classes == ["0", "1", "2"]
    assert as_dataset(ds) is ds
    pairs = PairDataset(torch.zeros(2, 3), [0, 1])
    assert as_dataset(pairs) is pairs


def test_as_dataset_length_mismatch():
    with pytest.raises(LabelError) as err:
        as_dataset((torch.zeros(5, 2), torch.zeros(4, dtype=torch.long)))
    assert_one_line(err, "5 features but 4 labels")


def test_gather_forms():
    x = torch.arange(24, dtype=torch.float32).reshape(6, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    idx = np.array([4, 0, 5])
    for form in [(x, y), (x.numpy(), y.numpy()), as_dataset((x, y))]:
        gx, gy = gather(form, idx)
        assert gx.dtype == torch.float32 and gy.dtype == torch.int64
        assert torch.equal(gx, x[idx]) and torch.equal(gy, y[idx])
    gx, gy = gather(PairDataset(x, y.tolist()), idx)
    assert torch.equal(gx, 2 * x[idx]) and gy.tolist() == [1, 0, 2]


def test_gather_rejects_non_pair_items():
    class Bare(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.zeros(2)

    with pytest.raises(DatasetError):
        gather(Bare(), [0])


# ---------------------------------------------------------------- balanced_draws


def per_class(labels, draw):
    return np.bincount(np.asarray(labels)[draw], minlength=int(np.max(labels)) + 1)


def test_balanced_draws_disjoint_when_possible():
    labels = np.repeat(np.arange(4), [10, 12, 9, 15])
    draws = balanced_draws(labels, n_per_class=3, repeats=3, seed=5)
    assert len(draws) == 3
    for d in draws:
        assert d.dtype == np.int64 and np.all(np.diff(d) > 0)
        assert per_class(labels, d).tolist() == [3, 3, 3, 3]
    assert len(np.unique(np.concatenate(draws))) == 3 * 12


def test_balanced_draws_overlap_fallback():
    labels = np.repeat(np.arange(3), [5, 5, 4])
    draws = balanced_draws(labels, n_per_class=3, repeats=4, seed=0)
    for d in draws:
        assert per_class(labels, d).tolist() == [3, 3, 3]
        assert len(np.unique(d)) == len(d)
    assert len(np.unique(np.concatenate(draws))) < 4 * 9


def test_balanced_draws_seeded():
    labels = np.tile(np.arange(5), 40)
    a = balanced_draws(labels, n_per_class=4, repeats=3, seed=1)
    b = balanced_draws(torch.from_numpy(labels), n_per_class=4, repeats=3, seed=1)
    c = balanced_draws(labels, n_per_class=4, repeats=3, seed=2)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))


def test_balanced_draws_errors():
    with pytest.raises(LabelError) as err:
        balanced_draws([1, 1, 1, 1], n_per_class=1, repeats=1)
    assert_one_line(err, "2 classes")
    with pytest.raises(LabelError) as err:
        balanced_draws([0, 0, 0, 7, 7, 1, 1, 1], n_per_class=3, repeats=1)
    assert_one_line(err, "class 7 has 2 samples", "n_per_class=3", "lower n_per_class")
    for n, r in [(0, 1), (1, 0), (-2, 3)]:
        with pytest.raises(LabelError):
            balanced_draws([0, 1, 0, 1], n_per_class=n, repeats=r)
    with pytest.raises(LabelError):
        balanced_draws([0.0, 1.0], n_per_class=1, repeats=1)


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 5), min_size=2, max_size=80),
    n_per_class=st.integers(1, 6),
    repeats=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_balanced_draws_property(labels, n_per_class, repeats, seed):
    y = np.array(labels)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or counts.min() < n_per_class:
        with pytest.raises(LabelError):
            balanced_draws(y, n_per_class=n_per_class, repeats=repeats, seed=seed)
        return
    draws = balanced_draws(y, n_per_class=n_per_class, repeats=repeats, seed=seed)
    assert len(draws) == repeats
    for d in draws:
        assert d.dtype == np.int64 and np.all(np.diff(d) > 0) and d.min() >= 0 and d.max() < len(y)
        assert np.array_equal(np.unique(y[d], return_counts=True)[1], np.full(len(classes), n_per_class))
    if counts.min() >= n_per_class * repeats:
        assert len(np.unique(np.concatenate(draws))) == repeats * n_per_class * len(classes)
