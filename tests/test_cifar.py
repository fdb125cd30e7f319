"""Tests of layermod.data.cifar: tiny CIFAR archives in the official python format, search order, refusal of
pickles that ask to run code, and corrupt or incomplete data."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import tarfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from layermod.data import cifar as C
from layermod.data import download as DL
from layermod.data.arrays import ArrayDataset
from layermod.data.datasets import load_dataset
from layermod.errors import DatasetError
from assertions import assert_one_line

REAL_DOWNLOAD = DL._download_file
# the official archives' members and classes (https://www.cs.toronto.edu/~kriz/cifar.html), written out here so
# that the tests check layermod's layout of them rather than reuse it
OFFICIAL = {
    "cifar10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"], "meta": "batches.meta",
                "folder": "cifar-10-batches-py", "archive": "cifar-10-python.tar.gz", "classes": 10,
                "labels_key": b"labels", "names_key": b"label_names"},
    "cifar100": {"train": ["train"], "test": ["test"], "meta": "meta", "folder": "cifar-100-python",
                 "archive": "cifar-100-python.tar.gz", "classes": 100, "labels_key": b"fine_labels",
                 "names_key": b"fine_label_names"},
}
# per-channel mean and std of the training images, as layermod's docstring states them
NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
RECONSTRUCT = np.ndarray.__reduce__(np.empty(0))[0]


class Py2Pickler(pickle._Pickler):
    """Protocol-2 pickler writing bytes and str as Python 2 ``str`` and numpy's rebuild function under its
    numpy 1 name, as in the official CIFAR files (written by Python 2)."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + len(raw).to_bytes(4, "little") + raw)
        self.memoize(obj)

    def save_global(self, obj, name=None):
        if obj is RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str
    dispatch[type] = save_global


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def cifar_files(name: str, n_per_batch: int = 4, seed: int = 0):
    """{file name: pickle bytes} of a tiny CIFAR set and the expected {split: (uint8 (N, 3072), labels)}."""
    layout = OFFICIAL[name]
    rng = np.random.default_rng(seed)
    files, expected = {}, {}
    for split in ("train", "test"):
        images, labels = [], []
        for batch in layout[split]:
            x = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
            y = [int(v) for v in rng.integers(0, layout["classes"], size=n_per_batch)]
            content = {
                b"batch_label": f"{batch} of 1".encode(),
                layout["labels_key"]: y,
                b"data": x,
                b"filenames": [f"img_{i}.png".encode() for i in range(n_per_batch)],
            }
            if name == "cifar100":
                content[b"coarse_labels"] = [v // 5 for v in y]
            files[batch] = py2_pickle(content)
            images.append(x)
            labels += y
        expected[split] = (np.concatenate(images), np.array(labels))
    names = [f"class{i}".encode() for i in range(layout["classes"])]
    meta = {layout["names_key"]: names}
    if name == "cifar10":
        meta.update({b"num_cases_per_batch": n_per_batch, b"num_vis": 3072})
    else:
        meta[b"coarse_label_names"] = [f"super{i}".encode() for i in range(20)]
    files[layout["meta"]] = py2_pickle(meta)
    return files, expected


def write_cifar(root: Path, name: str, archive: bool, files: dict[str, bytes] | None = None, **kwargs):
    """Write the set as ``root/<folder>/`` or ``root/<archive>``; returns (path written, expected)."""
    layout = OFFICIAL[name]
    made, expected = cifar_files(name, **kwargs)
    files = made if files is None else files
    root.mkdir(parents=True, exist_ok=True)
    if not archive:
        folder = root / layout["folder"]
        folder.mkdir()
        for member, raw in files.items():
            (folder / member).write_bytes(raw)
        return folder, expected
    path = root / layout["archive"]
    with tarfile.open(path, "w:gz") as tar:
        for member, raw in files.items():
            info = tarfile.TarInfo(f"{layout['folder']}/{member}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path, expected



def check_split(ds: ArrayDataset, name: str, expected) -> None:
    pixels, labels = expected
    assert isinstance(ds, ArrayDataset) and ds.name == name
    assert ds.data.shape == (len(labels), 3, 32, 32) and ds.data.dtype == torch.float32
    assert ds.targets.dtype == torch.int64
    np.testing.assert_array_equal(ds.targets.numpy(), labels)
    assert ds.classes == [f"class{i}" for i in range(OFFICIAL[name]["classes"])]
    assert ds.normalization == {"mean": list(NORMALIZATION[name][0]), "std": list(NORMALIZATION[name][1])}
    mean = np.array(NORMALIZATION[name][0], dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array(NORMALIZATION[name][1], dtype=np.float32).reshape(1, 3, 1, 1)
    want = (pixels.reshape(-1, 3, 32, 32).astype(np.float32) / 255 - mean) / std
    np.testing.assert_allclose(ds.data.numpy(), want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- loading


@pytest.mark.parametrize("archive", [False, True], ids=["folder", "tar.gz"])
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_load_both_splits(isolated, name, archive):
    _, expected = write_cifar(isolated / "d", name, archive)
    for split in ("train", "test"):
        check_split(load_dataset(name, split=split, data_dir=isolated / "d"), name, expected[split])
    n_train = {"cifar10": 5 * 4, "cifar100": 4}[name]  # 4 samples in each official training batch
    assert len(load_dataset(name.upper(), split="train", data_dir=isolated / "d")) == n_train


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_layout_matches_the_official_archives(name):
    """The tiny archives above are written from OFFICIAL; this ties layermod's own table to it too."""
    layout, official = C._LAYOUTS[name], OFFICIAL[name]
    assert (list(layout.batches("train")), list(layout.batches("test"))) == (official["train"], official["test"])
    assert (layout.meta, layout.folder, layout.archive) == (official["meta"], official["folder"], official["archive"])
    assert (layout.n_classes, layout.labels_key, layout.names_key) == (
        official["classes"], official["labels_key"], official["names_key"])


def test_written_like_the_official_files():
    """Protocol 2, Python 2 strings only, and no global but numpy's array rebuild ones."""
    files, _ = cifar_files("cifar10", n_per_batch=2)
    ops = list(pickletools.genops(files["data_batch_1"]))
    assert ops[0][0].name == "PROTO" and ops[0][1] == 2
    names = {op.name for op, _, _ in ops}
    assert "SHORT_BINSTRING" in names and not names & {"BINUNICODE", "SHORT_BINUNICODE", "SHORT_BINBYTES"}
    assert {arg for op, arg, _ in ops if op.name == "GLOBAL"} == {
        "numpy.core.multiarray _reconstruct",
        "numpy ndarray",
        "numpy dtype",
    }


def test_python3_pickle_with_bytes_opcodes_loads(isolated):
    """A dict of bytes keys pickled by Python 3 with protocol 4 needs no other global."""
    files, expected = cifar_files("cifar10")
    files["test_batch"] = pickle.dumps(
        {b"data": expected["test"][0], b"labels": expected["test"][1].tolist()}, protocol=4
    )
    write_cifar(isolated / "d", "cifar10", archive=True, files=files)
    check_split(load_dataset("cifar10", split="test", data_dir=isolated / "d"), "cifar10", expected["test"])


def test_data_dir_forms(isolated):
    folder, expected = write_cifar(isolated / "root" / "cifar10", "cifar10", archive=False)
    labels = expected["test"][1]
    for data_dir in (isolated / "root", isolated / "root" / "cifar10", folder):
        np.testing.assert_array_equal(load_dataset("cifar10", data_dir=data_dir).targets.numpy(), labels)


def test_folder_preferred_to_archive(isolated):
    write_cifar(isolated / "d", "cifar10", archive=True, seed=1)
    _, expected = write_cifar(isolated / "d", "cifar10", archive=False, seed=2)
    np.testing.assert_array_equal(load_dataset("cifar10", data_dir=isolated / "d").targets, expected["test"][1])


def test_explicit_data_dir_does_not_fall_back(isolated, monkeypatch):
    write_cifar(isolated / "env" / "cifar10", "cifar10", archive=True)
    monkeypatch.setenv("LAYERMOD_DATA", str(isolated / "env"))
    (isolated / "empty").mkdir()
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", data_dir=isolated / "empty")
    assert_one_line(err, str(isolated / "empty"), "cifar-10-python.tar.gz", "data_dir")


def test_env_then_cache(isolated, monkeypatch):
    _, in_cache = write_cifar(isolated / "cache" / "layermod" / "data" / "cifar100", "cifar100", True, seed=3)
    assert torch.equal(load_dataset("cifar100").targets, torch.from_numpy(in_cache["test"][1]))
    _, in_env = write_cifar(isolated / "env" / "cifar100", "cifar100", archive=False, seed=4)
    monkeypatch.setenv("LAYERMOD_DATA", str(isolated / "env"))
    assert torch.equal(load_dataset("cifar100").targets, torch.from_numpy(in_env["test"][1]))


def test_nothing_found_and_download_disabled(isolated):
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", download=False)
    message = assert_one_line(err, "download is off", "data_dir=DIR", "LAYERMOD_DATA")
    assert str(isolated / "cache" / "layermod" / "data" / "cifar10") in message


def test_failed_download_is_reported(isolated, monkeypatch):
    def fail(url, dest):
        raise OSError("network is unreachable")

    monkeypatch.setattr(DL, "_download_file", fail)
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar100")
    assert_one_line(err, "network is unreachable", C._URLS["cifar100"], "data_dir=DIR")


def test_download_into_cache(isolated, monkeypatch):
    archive, expected = write_cifar(isolated / "server", "cifar10", archive=True)
    monkeypatch.setitem(C._URLS, "cifar10", archive.as_uri())
    monkeypatch.setattr(DL, "_download_file", REAL_DOWNLOAD)
    check_split(load_dataset("cifar10", split="train"), "cifar10", expected["train"])
    cache = isolated / "cache" / "layermod" / "data" / "cifar10"
    assert [p.name for p in cache.iterdir()] == ["cifar-10-python.tar.gz"]
    assert (cache / "cifar-10-python.tar.gz").read_bytes() == archive.read_bytes()


def test_official_urls():
    assert C._URLS == {
        "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    }


# ---------------------------------------------------------------- pickles that ask to run code


class RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class RunsPython:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_payload_runs_when_unpickled_unrestricted(tmp_path):
    """The malicious pickle used below really runs code when loaded with pickle.loads."""
    marker = tmp_path / "ran"
    pickle.loads(py2_pickle({b"data": RunsPython(marker)}))
    assert marker.exists()


@pytest.mark.parametrize("payload, global_name", [(RunsShell, "system"), (RunsPython, "exec")])
@pytest.mark.parametrize("member", ["test_batch", "batches.meta"])
@pytest.mark.parametrize("archive", [False, True], ids=["folder", "tar.gz"])
def test_pickle_asking_for_code_is_refused_without_running(isolated, payload, global_name, member, archive):
    marker = isolated / "pwned"
    files, _ = cifar_files("cifar10")
    files[member] = py2_pickle({b"data": payload(marker), b"labels": []})
    write_cifar(isolated / "d", "cifar10", archive, files=files)
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", split="test", data_dir=isolated / "d")
    assert_one_line(err, member, "refuses to load: it asks to run code (", global_name, "cifar-10-python.tar.gz")
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("numpy", "load"), ("numpy.core.multiarray", "scalar"), ("pickle", "loads")])
def test_only_the_array_rebuild_globals_are_allowed(isolated, module, name):
    files, _ = cifar_files("cifar10")
    files["test_batch"] = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R."
    write_cifar(isolated / "d", "cifar10", archive=False, files=files)
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", data_dir=isolated / "d")
    assert_one_line(err, f"asks to run code ({module}.{name})")


# ---------------------------------------------------------------- corrupt and incomplete data


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_archive(isolated, damage):
    archive, _ = write_cifar(isolated / "d", "cifar10", archive=True)
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"not an archive at all" * 10)
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", split="train", data_dir=isolated / "d")
    assert_one_line(err, str(archive), "delete", "download it again")


def test_missing_batch_in_folder(isolated):
    folder, _ = write_cifar(isolated / "d", "cifar10", archive=False)
    (folder / "data_batch_3").unlink()
    assert len(load_dataset("cifar10", split="test", data_dir=isolated / "d")) == 4
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", split="train", data_dir=isolated / "d")
    assert_one_line(err, str(folder / "data_batch_3"), "missing", "extract cifar-10-python.tar.gz again")


def test_missing_member_in_archive(isolated):
    files, _ = cifar_files("cifar100")
    del files["meta"]
    archive, _ = write_cifar(isolated / "d", "cifar100", archive=True, files=files)
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar100", data_dir=isolated / "d")
    assert_one_line(err, str(archive), "cifar-100-python/meta", "download it again")


def bad_batches():
    good = np.zeros((4, 3072), np.uint8)
    return {
        "wrong width": ({b"data": np.zeros((4, 3071), np.uint8), b"labels": [0] * 4}, "not (N, 3072) uint8"),
        "wrong dtype": ({b"data": good.astype(np.int16), b"labels": [0] * 4}, "not (N, 3072) uint8"),
        "flat": ({b"data": good.reshape(-1), b"labels": [0] * 4}, "not (N, 3072) uint8"),
        "count": ({b"data": good, b"labels": [0] * 3}, "4 images but 3 labels"),
        "range": ({b"data": good, b"labels": [0, 1, 2, 10]}, "10 classes"),
        "float labels": ({b"data": good, b"labels": [0.5] * 4}, "not a list of integers"),
        "no labels": ({b"data": good}, "no 'labels' entry"),
        "not a dict": ([good], "not a CIFAR dict"),
    }


@pytest.mark.parametrize("case", list(bad_batches()))
def test_wrong_batch_content(isolated, case):
    content, why = bad_batches()[case]
    files, _ = cifar_files("cifar10")
    files["test_batch"] = py2_pickle(content)
    folder, _ = write_cifar(isolated / "d", "cifar10", archive=False, files=files)
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", data_dir=isolated / "d")
    assert_one_line(err, str(folder / "test_batch"), why)


@pytest.mark.parametrize("raw", [b"", b"\x80\x02}q\x01(U\x04data", b"garbage that is no pickle"])
def test_corrupt_pickle(isolated, raw):
    files, _ = cifar_files("cifar10")
    files["test_batch"] = raw
    archive, _ = write_cifar(isolated / "d", "cifar10", archive=True, files=files)
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", data_dir=isolated / "d")
    assert_one_line(err, str(archive), "test_batch", "not a valid CIFAR pickle")


def test_wrong_class_names(isolated):
    files, _ = cifar_files("cifar10")
    files["batches.meta"] = py2_pickle({b"label_names": [b"a", b"b"]})
    write_cifar(isolated / "d", "cifar10", archive=False, files=files)
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", data_dir=isolated / "d")
    assert_one_line(err, "batches.meta", "10 'label_names'")


def test_unknown_split(isolated):
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", split="validation")
    assert_one_line(err, "validation", "'train' or 'test'")
