"""Hostile files for the dataset readers: tiny files that declare huge sizes, decompression bombs,
pickles that allocate from their arguments, and a fuzz test of every reader.

Each reader must refuse such a file with one line (a :class:`LayermodError`) before it allocates more than a
small multiple of the file's size; the memory-bounded cases run under :func:`limits.memory_limit`, so a
reader that allocates first fails fast with ``MemoryError`` instead of taking the machine down.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layermod.data import cifar as C
from layermod.data.arrays import as_dataset
from layermod.data.datasets import load_dataset
from layermod.data.idx import read_idx
from layermod.analysis.curve import Curve
from layermod.data.npz import load_npz
from layermod.data.tabular import read_columns
from layermod.errors import DatasetError, LabelError, LayermodError
from layermod.data.imagefolder import load_image_folder
from layermod.data.spec import resolve_data
from assertions import assert_one_line
from idx_files import idx_bytes
from limits import MiB, memory_limit
from test_cifar import RECONSTRUCT, cifar_files, py2_pickle, write_cifar

LIMIT = 64 * MiB  # extra address space a refused hostile file may take (the bombs ask for 256 MiB and more)
FUZZ_LIMIT = 160 * MiB  # a fuzzed file may also be read: 16 MiB of data, decoded and copied


def zero_members(mib: int) -> bytes:
    """``mib`` MiB of zeros as a multi-member gzip stream of a few hundred bytes per MiB."""
    return gzip.compress(bytes(MiB)) * mib


def idx_header(code: int, *dims: int) -> bytes:
    """IDX magic and big-endian int32 dims."""
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}i", *dims)


def refused(err: pytest.ExceptionInfo, *fragments: str) -> str:
    """The refusal's one-line message, checked to hold every fragment."""
    assert isinstance(err.value, LayermodError)
    return assert_one_line(err, *fragments)


# ---------------------------------------------------------------- IDX


def test_idx_gzip_bomb_is_refused_from_its_header(tmp_path):
    """256 MiB declared and really compressed into a 260 kB file: refused before decompressing the data."""
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_header(0x08, 256, 1024, 1024)) + zero_members(256))
    with memory_limit(LIMIT), pytest.raises(DatasetError) as err:
        read_idx(path)
    refused(err, str(path), "268435456 bytes", "delete it and download again")


def test_idx_gzip_bomb_after_a_small_header_is_not_decompressed(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_header(0x08, 10) + bytes(10)) + zero_members(256))
    with memory_limit(LIMIT), pytest.raises(DatasetError) as err:
        read_idx(path)
    refused(err, str(path), "trailing bytes")


def test_idx_gzip_bomb_with_a_bad_magic_is_refused_at_the_magic(tmp_path):
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x99\x03") + zero_members(256))
    with memory_limit(LIMIT), pytest.raises(DatasetError) as err:
        read_idx(path)
    refused(err, str(path), "bad magic")


@pytest.mark.parametrize("dims, data, why", [
    ((-1, 28, 28), 8, "negative"),
    ((3, -2147483648), 8, "negative"),
    ((2147483647, 2147483647, 2147483647), 8, "truncated data"),
    ((2147483647, 2147483647, 2147483647, 0), 0, "shape"),
    ((1,) * 100, 4, "shape"),
])
@pytest.mark.parametrize("compress", [False, True])
def test_idx_dims_that_are_negative_overflow_or_too_many(tmp_path, dims, data, why, compress):
    path = tmp_path / "images"
    payload = idx_header(0x0C, *dims) + bytes(data)
    path.write_bytes(gzip.compress(payload) if compress else payload)
    with memory_limit(LIMIT), pytest.raises(DatasetError) as err:
        read_idx(path)
    message = refused(err, str(path), "delete it and download again")
    assert why in message or (compress and "declares" in message), message


def test_idx_huge_declared_dims_with_a_tiny_payload(tmp_path):
    for compress in (False, True):
        path = tmp_path / f"huge{compress}"
        payload = idx_header(0x0E, 60000, 1000, 1000) + bytes(64)
        path.write_bytes(gzip.compress(payload) if compress else payload)
        with memory_limit(LIMIT), pytest.raises(DatasetError) as err:
            read_idx(path)
        refused(err, str(path), "480000000000 bytes")


# ---------------------------------------------------------------- .npz


def npy_bytes(header: dict, data: bytes = b"") -> bytes:
    """A ``.npy`` file (version 1.0) with the given header dict and raw data."""
    text = repr(header).encode("latin1")
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


def write_npz(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, raw in members.items():
            archive.writestr(name, raw)
    return path


def test_npz_label_two_to_the_40_is_refused_without_a_class_list(tmp_path):
    path = tmp_path / "big-label.npz"
    np.savez(path, X=np.zeros((2, 3), np.float32), y=np.array([0, 2**40]))
    with memory_limit(LIMIT), pytest.raises(LabelError) as err:
        resolve_data(str(path))
    refused(err, "1099511627776", "below 65536", "renumber")
    with memory_limit(LIMIT), pytest.raises(LabelError):
        as_dataset((np.zeros((1, 2)), np.array([2**40])))


@pytest.mark.parametrize("x, y, what", [
    (np.array([["a", "b"], ["c", "d"]]), np.array([0, 1]), "array X holds <U1"),
    (np.zeros((2, 2), np.complex64), np.array([0, 1]), "array X holds complex64"),
    (np.zeros((2, 2)), np.array([b"a", b"b"]), "array y holds |S1"),
    (np.zeros((2, 2)), np.zeros(2, [("a", "<i4")]), "array y holds"),
])
def test_npz_non_numeric_arrays_are_refused(tmp_path, x, y, what):
    path = tmp_path / "strings.npz"
    np.savez(path, X=x, y=y)
    with pytest.raises(DatasetError) as err:
        resolve_data(str(path))
    refused(err, str(path), what, "np.savez")


def test_npz_object_array_is_refused(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, X=np.zeros((2, 2)), y=np.array([0, None], dtype=object))
    with pytest.raises(DatasetError) as err:
        load_npz(path)
    refused(err, str(path), "array y holds object")


def test_npz_header_declaring_a_huge_shape_is_refused(tmp_path):
    header = {"descr": "<f8", "fortran_order": False, "shape": (2**20, 2**10)}
    path = write_npz(tmp_path / "huge.npz", {"X.npy": npy_bytes(header, bytes(16)), "y.npy": npy_bytes(
        {"descr": "<i8", "fortran_order": False, "shape": (2,)}, bytes(16))})
    with memory_limit(LIMIT), pytest.raises(DatasetError) as err:
        load_npz(path)
    refused(err, str(path), "X", "(1048576, 1024)", "8589934592 bytes")


def test_npz_negative_shape_is_refused(tmp_path):
    header = {"descr": "<f8", "fortran_order": False, "shape": (-4, 2)}
    path = write_npz(tmp_path / "negative.npz", {"X.npy": npy_bytes(header, bytes(64)), "y.npy": npy_bytes(
        {"descr": "<i8", "fortran_order": False, "shape": (4,)}, bytes(32))})
    with pytest.raises(DatasetError) as err:
        load_npz(path)
    refused(err, str(path), "(-4, 2)")


def test_npz_deflate_bomb_is_refused_from_the_member_sizes(tmp_path):
    """A 256 MiB array of zeros deflated into a 260 kB member: refused before it is inflated."""
    path = tmp_path / "bomb.npz"
    header = npy_bytes({"descr": "|u1", "fortran_order": False, "shape": (256 * MiB,)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("X.npy", "w", force_zip64=True) as member:
            member.write(header)
            for _ in range(256):
                member.write(bytes(MiB))
        archive.writestr("y.npy", npy_bytes({"descr": "<i8", "fortran_order": False, "shape": (1,)}, bytes(8)))
    assert path.stat().st_size < 2 * MiB
    with memory_limit(LIMIT), pytest.raises(DatasetError) as err:
        load_npz(path)
    refused(err, str(path), "X.npy", "zip bomb")


def test_npz_other_compression_is_refused(tmp_path):
    x = npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (1,)}, bytes(4))
    y = npy_bytes({"descr": "<i8", "fortran_order": False, "shape": (1,)}, bytes(8))
    path = write_npz(tmp_path / "bz.npz", {"X.npy": x, "y.npy": y}, zipfile.ZIP_BZIP2)
    with pytest.raises(DatasetError) as err:
        load_npz(path)
    refused(err, str(path), "X.npy", "np.savez")


def test_npz_that_is_no_zip_or_lacks_an_array(tmp_path):
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DatasetError) as err:
        resolve_data(str(tmp_path / "text.npz"))
    refused(err, "text.npz", "arrays X and y")
    np.savez(tmp_path / "x-only.npz", X=np.zeros(3))
    with pytest.raises(DatasetError) as err:
        resolve_data(str(tmp_path / "x-only.npz"))
    refused(err, "lacks array y")


def test_npz_round_trip_stored_compressed_and_big_endian(tmp_path):
    x = np.arange(24, dtype=">f8").reshape(4, 2, 3)
    y = np.array([0, 1, 1, 0], dtype=">i4")
    for save in (np.savez, np.savez_compressed):
        save(tmp_path / "d.npz", X=x, y=y)
        got_x, got_y = load_npz(tmp_path / "d.npz")
        assert got_x.dtype == np.float32 and got_y.dtype.isnative
        np.testing.assert_array_equal(got_x, x)
        np.testing.assert_array_equal(got_y, y)
    np.savez(tmp_path / "f.npz", X=np.asfortranarray(x), y=y)
    np.testing.assert_array_equal(load_npz(tmp_path / "f.npz")[0], x)
    dataset, _ = resolve_data(str(tmp_path / "d.npz"))
    assert dataset.classes == ["0", "1"] and dataset.data.shape == (4, 2, 3)


# ---------------------------------------------------------------- CIFAR pickles


class Calls:
    """Pickles as a call of ``func(*args)``, optionally followed by ``__setstate__(state)``."""

    def __init__(self, func, args, state=None):
        self.reduced = (func, args) if state is None else (func, args, state)

    def __reduce__(self):
        return self.reduced


def nested_labels() -> list:
    """1000 x 1000 x 1000 labels from three small lists shared through the pickle memo (8 GB as an array)."""
    flat = [0] * 1000
    square = [flat] * 1000
    return [square] * 1000


def deep_tuple(depth: int) -> bytes:
    """A protocol-2 pickle of a dict whose key is a tuple nested ``depth`` deep (one byte per level)."""
    return b"\x80\x02}" + b"N" + b"\x85" * depth + b"Ns."


HOSTILE_BATCHES = {  # case: (pickle bytes, what the refusal says)
    "ndarray call": (lambda: py2_pickle({b"data": Calls(np.ndarray, ((10**6, 3072), "u1")), b"labels": []}),
                     "numpy.ndarray"),
    "reconstruct shape": (lambda: py2_pickle(
        {b"data": Calls(RECONSTRUCT, (np.ndarray, (10**6, 3072), b"B")), b"labels": []}), "without its data"),
    "state larger than its bytes": (lambda: py2_pickle({b"data": Calls(
        RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (10**6, 3072), np.dtype("u1"), False, b"abc")), b"labels": []}),
        "needs 3072000000 bytes but the pickle holds 3"),
    "object array": (lambda: py2_pickle({b"data": Calls(
        RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (2,), np.dtype("O"), False, [1, 2])), b"labels": []}), "'O8'"),
    "memo-nested labels": (lambda: py2_pickle({b"data": np.zeros((4, 3072), np.uint8), b"labels": nested_labels()}),
                           "not a list of integers"),
    "huge memo index": (lambda: b"\x80\x02}r\xff\xff\xff\x7f.", "memo slot 2147483647"),
    "huge bytes length": (lambda: b"\x80\x03}\x8e" + struct.pack("<Q", 2**40) + b"abc.", "1099511627776 bytes"),
    "huge long length": (lambda: b"\x80\x02\x8b" + struct.pack("<i", 2**31 - 1) + b"abc.", "long4"),
    "huge frame": (lambda: b"\x80\x04\x95" + struct.pack("<Q", 2**40) + b"}.", "frame of 1099511627776 bytes"),
    "set of keys": (lambda: b"\x80\x04\x8f(K\x01\x90.", "EMPTY_SET"),
}


@pytest.mark.parametrize("case", list(HOSTILE_BATCHES))
def test_hostile_cifar_batch_is_refused(isolated, case):
    make, why = HOSTILE_BATCHES[case]
    files, _ = cifar_files("cifar10")
    files["test_batch"] = make()
    assert len(files["test_batch"]) < 20_000
    folder, _ = write_cifar(isolated / "d", "cifar10", archive=False, files=files)
    with memory_limit(LIMIT), pytest.raises(DatasetError) as err:
        load_dataset("cifar10", data_dir=isolated / "d")
    refused(err, str(folder / "test_batch"), why, "cifar-10-python.tar.gz")


def test_deeply_nested_dict_key_is_refused_not_crashed(tmp_path):
    """A 3 MB pickle whose dict key nests 3 million tuples crashes CPython's hash (a segfault); run it in a
    child process so that a regression fails this test instead of the whole run."""
    raw = tmp_path / "deep.pickle"
    raw.write_bytes(deep_tuple(3_000_000))
    script = (
        "import sys; from pathlib import Path; from layermod.data import cifar as C\n"
        "from layermod.errors import DatasetError\n"
        "try:\n"
        "    C._unpickle(Path(sys.argv[1]).read_bytes(), 'deep.pickle', 'delete it')\n"
        "except DatasetError as e:\n"
        "    print('refused:', e)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(raw)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("refused: deep.pickle") and done.stdout.count("\n") == 1, done.stdout


def test_real_cifar_pickles_need_no_allocating_callable():
    """The official layout still loads: the stand-ins rebuild images and labels from the pickled bytes."""
    files, expected = cifar_files("cifar100", n_per_batch=3)
    layout = C._LAYOUTS["cifar100"]
    images, labels = C._batch_arrays(files["test"], "test", "fix", layout)
    np.testing.assert_array_equal(images, expected["test"][0])
    np.testing.assert_array_equal(labels, expected["test"][1])
    fortran = np.asfortranarray(expected["test"][0])
    big_endian = np.asarray(expected["test"][1], ">i8")
    raw = pickle.dumps({b"data": fortran, b"fine_labels": big_endian}, protocol=4)
    images, labels = C._batch_arrays(raw, "test", "fix", layout)
    np.testing.assert_array_equal(images, expected["test"][0])
    np.testing.assert_array_equal(labels, expected["test"][1])
    assert labels.dtype == np.int64


# ---------------------------------------------------------------- CIFAR archives


def tar_header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    """One tar header block declaring ``size`` bytes (base-256 for sizes of 8 GiB and more)."""
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info.tobuf(tarfile.GNU_FORMAT)


HOSTILE_ARCHIVES = {  # the bytes of a "cifar-10-python.tar.gz", and what its one-line refusal names
    "a member declaring 64 GiB": (lambda: gzip.compress(tar_header("cifar-10-batches-py/test_batch", 2**36)
                                                        + bytes(4096)),
                                  ["test_batch", "68719476736 bytes", "download it again"]),
    "an extended header declaring 8 GiB": (lambda: gzip.compress(tar_header("pax", 2**33, tarfile.XHDTYPE)
                                                                 + bytes(4096)),
                                           ["8589934592", "download it again"]),
    # 256 MiB of real zeros in a 260 kB archive: refused before it is inflated
    "a gzip bomb member": (lambda: gzip.compress(tar_header("cifar-10-batches-py/test_batch", 256 * MiB))
                           + zero_members(256), ["test_batch", "268435456 bytes"]),
    "a plain tar member larger than the file": (lambda: tar_header("cifar-10-batches-py/test_batch", 2**30)
                                                + bytes(4096), ["test_batch", "1073741824 bytes"]),
    "too many members": (lambda: gzip.compress(b"".join(tar_header(f"junk{i}", 0)
                                                        for i in range(C._MAX_ARCHIVE_MEMBERS + 1)) + bytes(1024)),
                         [f"more than {C._MAX_ARCHIVE_MEMBERS} members"]),
}


@pytest.mark.parametrize("content, fragments", HOSTILE_ARCHIVES.values(), ids=HOSTILE_ARCHIVES.keys())
def test_hostile_archive_is_refused_before_it_is_read(isolated, content, fragments):
    path = isolated / "d" / "cifar-10-python.tar.gz"
    path.parent.mkdir()
    path.write_bytes(content())
    with memory_limit(LIMIT), pytest.raises(DatasetError) as err:
        load_dataset("cifar10", data_dir=path.parent)
    refused(err, str(path), *fragments)


# ---------------------------------------------------------------- image folders


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB pixels but whose data is empty."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_image_declaring_huge_dimensions_is_refused_before_decoding(tmp_path):
    (tmp_path / "a").mkdir()
    bad = tmp_path / "a" / "bomb.png"
    bad.write_bytes(png_declaring(8000, 8000))
    with memory_limit(LIMIT), pytest.raises(DatasetError) as err:
        load_image_folder(tmp_path)
    refused(err, str(bad), "8000x8000 pixels", "delete or replace it")


# ---------------------------------------------------------------- fuzzing


def edits(length: int):
    """Up to four byte edits of a file of ``length`` bytes: flip, insert, delete or truncate."""
    position = st.integers(0, max(length, 1))
    edit = st.one_of(
        st.tuples(st.just("flip"), position, st.integers(0, 255)),
        st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=12)),
        st.tuples(st.just("delete"), position, st.integers(1, 64)),
        st.tuples(st.just("truncate"), position, st.just(0)),
    )
    return st.lists(edit, min_size=1, max_size=4)


def apply_edits(raw: bytes, changes) -> bytes:
    out = bytearray(raw)
    for kind, at, value in changes:
        at = at % (len(out) + 1)
        if kind == "flip" and at < len(out):
            out[at] = value
        elif kind == "insert":
            out[at:at] = value
        elif kind == "delete":
            del out[at:at + value]
        elif kind == "truncate":
            out = out[:at]
    return bytes(out)


def mutated(raw: bytes):
    return edits(len(raw)).map(lambda changes: apply_edits(raw, changes))


def outcome(read, *args) -> None:
    """Run a reader under the memory ceiling: it returns, or refuses with one line, and nothing else."""
    with memory_limit(FUZZ_LIMIT):
        try:
            read(*args)
        except LayermodError as e:
            assert "\n" not in str(e), str(e)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
GOOD_IDX = idx_bytes(np.arange(60, dtype=np.int16).reshape(3, 4, 5))
IDX_DIM = st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(0, 8))
RANDOM_IDX = st.builds(
    lambda code, dims, payload: bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}i", *dims) + payload,
    st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x0A]),
    st.lists(IDX_DIM, max_size=6),
    st.binary(max_size=64),
)


@FUZZ
@given(raw=st.one_of(mutated(GOOD_IDX), RANDOM_IDX, st.binary(max_size=64)), compress=st.booleans())
def test_fuzz_idx(tmp_path, raw, compress):
    path = tmp_path / "fuzz-idx"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    outcome(read_idx, path)


@FUZZ
@given(raw=mutated(gzip.compress(GOOD_IDX)))
def test_fuzz_gzip_idx_bytes(tmp_path, raw):
    path = tmp_path / "fuzz-idx.gz"
    path.write_bytes(raw)
    outcome(read_idx, path)


GOOD_BATCH = cifar_files("cifar10", n_per_batch=2)[0]["test_batch"]
GOOD_BATCH_P4 = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}, protocol=4)
PICKLE_TOKENS = [
    b"}", b"]", b")", b"(", b"t", b"\x85", b"\x86", b"\x87", b"e", b"a", b"s", b"u", b"l", b"d", b"N", b"\x88",
    b"\x89", b"K\x01", b"K\x00", b"J\x00\x0c\x00\x00", b"M\x00\x0c", b"q\x00", b"q\x01", b"h\x00", b"h\x01",
    b"r\xff\xff\xff\x7f", b"U\x04data", b"U\x06labels", b"U\x02u1", b"U\x01b", b"U\x01|", b"U\x03abc",
    b"cnumpy\nndarray\n", b"cnumpy\ndtype\n", b"cnumpy.core.multiarray\n_reconstruct\n", b"cos\nsystem\n",
    b"R", b"b", b"0", b"2", b"1", b"\x94", b"\x8f", b"\x90",
]
RANDOM_PICKLE = st.lists(st.sampled_from(PICKLE_TOKENS), max_size=40).map(lambda t: b"\x80\x02" + b"".join(t) + b".")


@FUZZ
@given(raw=st.one_of(mutated(GOOD_BATCH), mutated(GOOD_BATCH_P4), RANDOM_PICKLE))
def test_fuzz_cifar_batch(raw):
    outcome(C._batch_arrays, raw, "fuzzed batch", "delete it", C._LAYOUTS["cifar10"])


def npz_bytes(save, x, y) -> bytes:
    buffer = io.BytesIO()
    save(buffer, X=x, y=y)
    return buffer.getvalue()


GOOD_NPZ = npz_bytes(np.savez, np.arange(12, dtype=np.float32).reshape(4, 3), np.array([0, 1, 0, 1]))
GOOD_NPZ_DEFLATED = npz_bytes(np.savez_compressed, np.zeros((4, 3)), np.array([0, 1, 0, 1]))
NPY_HEADER = st.fixed_dictionaries({
    "descr": st.sampled_from(["<f4", "|u1", ">i8", "<U3", "|O", "<c8", "|V8", "|b1", "<f2", "<M8[s]"]),
    "fortran_order": st.booleans(),
    "shape": st.lists(st.one_of(st.integers(-3, 6), st.integers(-(2**63), 2**63)), max_size=4).map(tuple),
})
RANDOM_NPZ = st.builds(
    lambda header, data, deflate: npz_from_members({"X.npy": npy_bytes(header, data), "y.npy": npy_bytes(
        {"descr": "<i8", "fortran_order": False, "shape": (2,)}, bytes(16))}, deflate),
    NPY_HEADER, st.binary(max_size=96), st.booleans(),
)


def npz_from_members(members: dict[str, bytes], deflate: bool) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as archive:
        for name, raw in members.items():
            archive.writestr(name, raw)
    return buffer.getvalue()


@FUZZ
@given(raw=st.one_of(mutated(GOOD_NPZ), mutated(GOOD_NPZ_DEFLATED), RANDOM_NPZ))
def test_fuzz_npz(tmp_path, raw):
    path = tmp_path / "fuzz.npz"
    path.write_bytes(raw)
    outcome(resolve_data, str(path))


# --- only regular files are read as data ------------------------------------------------------------------------


def not_regular(path: Path, kind: str) -> Path:
    """``path`` made a link to /dev/zero (endless, size 0) or a FIFO (no writer: reading would wait for ever)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "zero":
        path.symlink_to("/dev/zero")
    else:
        os.mkfifo(path)
    return path


def _read_plan(path: Path) -> None:
    from layermod.pruning.plans import Plan

    Plan.load(not_regular(path / "plan.json", path.name))


def _read_weights(path: Path) -> None:
    from layermod import models
    from layermod.models.checkpoint import load_checkpoint, save_checkpoint

    args = {"num_classes": 3, "in_channels": 1, "width": 0.25}
    weights = save_checkpoint(models.create("mlp", **args), path / "best.safetensors", {"arch": "mlp", "arch_args": args})
    weights.unlink()
    load_checkpoint(not_regular(weights, path.name))


def _read_sidecar(path: Path) -> None:
    from layermod.models.checkpoint import read_sidecar

    (path / "best.safetensors").parent.mkdir(parents=True)
    (path / "best.safetensors").write_bytes(b"")
    not_regular(path / "best.json", path.name)
    read_sidecar(path / "best.safetensors")


def _read_spec(path: Path) -> None:
    from layermod.sweep.spec import load_spec

    load_spec(not_regular(path / "sweep.toml", path.name), {})


def _read_folder(path: Path) -> None:
    not_regular(path / "a" / "x.png", path.name)
    load_image_folder(path)


READERS = {
    "npz": lambda path: load_npz(not_regular(path / "z.npz", path.name)),
    "idx": lambda path: read_idx(not_regular(path / "t10k-images-idx3-ubyte", path.name)),
    "cifar": lambda path: C.load_cifar("cifar10", data_dir=not_regular(path / "cifar-10-python.tar.gz",
                                                                          path.name).parent, download=False),
    "table": lambda path: read_columns(not_regular(path / "t.csv", path.name), "text", "label"),
    "folder": _read_folder,
    "weights": _read_weights,
    "sidecar": _read_sidecar,
    "curve": lambda path: Curve.load(not_regular(path / "curve.json", path.name)),
    "plan": _read_plan,
    "spec": _read_spec,
}


# a data folder's files are found by name only among regular files
FOUND_AMONG_FILES = {"cifar": "no cifar10 data", "folder": "holds no images", "table": "is not a file"}


@pytest.mark.parametrize("kind", ["zero", "fifo"])
@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_device_or_fifo_is_refused_unread_in_one_line(tmp_path, reader, kind):
    with pytest.raises(LayermodError) as err:
        READERS[reader](tmp_path / kind)
    message = str(err.value)
    assert "\n" not in message and FOUND_AMONG_FILES.get(reader, "not a regular file") in message, message


@pytest.mark.parametrize("kind", ["zero", "fifo"])
def test_curve_refuses_a_dataset_that_is_a_device_or_fifo(tmp_path, kind, capsys):
    from layermod.cli import main

    data = not_regular(tmp_path / "z.npz", kind)
    assert main(["curve", "--model", "mlp", "--dataset", str(data), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "z.npz" in err, err
