"""Texts and library datasets: CSV / JSON / JSON-lines / Parquet files of labelled sentences tokenised with a
tokenizer built here, ``hf:`` folders written by ``save_to_disk``, ``torchvision:`` datasets in torchvision's
layout; hostile files refused in one line. Real libraries, data made by the tests, no mocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from layermod.data import tabular as T
from layermod.data import text as TX
from layermod.data.arrays import ArrayDataset, dataset_labels, gather
from layermod.data.text import TokenDataset, load_text_file
from layermod.errors import DatasetError, LabelError
from layermod.data.spec import resolve_data
from assertions import assert_one_line
from limits import MiB, memory_limit
from text_data import CLASSES, sentences, vocabulary, word_tokenizer, words, write_csv, write_hf_folder, write_jsonl, \
    write_parquet

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


@pytest.fixture(scope="module")
def rows():
    return sentences(20)


def expected_ids(tok, texts, length):
    """Each text's word ids, padded with [PAD] (0) to ``length``, and the mask: written out, not via layermod."""
    vocab = {w: i for i, w in enumerate(vocabulary())}
    ids = np.zeros((len(texts), length), np.int64)
    mask = np.zeros((len(texts), length), np.int64)
    for i, text in enumerate(texts):
        words = [vocab.get(w, 1) for w in text.split()][:length]
        ids[i, :len(words)] = words
        mask[i, :len(words)] = 1
    return ids, mask


def check_tokens(data, tok, texts, labels_as_indices, classes):
    assert isinstance(data, TokenDataset) and len(data) == len(texts)
    assert data.classes == list(classes)
    np.testing.assert_array_equal(data.targets.numpy(), labels_as_indices)
    length = max(len(t.split()) for t in texts)
    ids, mask = expected_ids(tok, texts, length)
    np.testing.assert_array_equal(data.input_ids.numpy(), ids)
    np.testing.assert_array_equal(data.attention_mask.numpy(), mask)
    x, y = data[3]
    assert set(x) == {"input_ids", "attention_mask"} and x["input_ids"].dtype == torch.int64
    assert x["input_ids"].shape == x["attention_mask"].shape == (length,) and y == labels_as_indices[3]


# ---------------------------------------------------------------- files of texts


def test_csv_with_string_labels(tmp_path, tok, rows):
    texts, labels = rows
    data, description = resolve_data(str(write_csv(tmp_path / "s.csv", texts, labels)), tokenizer=tok)
    check_tokens(data, tok, texts, [CLASSES.index(y) for y in labels], CLASSES)
    assert description == {"dataset": str(tmp_path / "s.csv"), "text_column": "text", "label_column": "label",
                           "max_length": 128}
    np.testing.assert_array_equal(dataset_labels(data), data.targets.numpy())


def test_names_sorted_not_in_order_of_appearance(tmp_path, tok):
    data = load_text_file(write_csv(tmp_path / "s.csv", ["a cat", "the dog", "a sun"], ["zeta", "alpha", "mid"]), tok)
    assert data.classes == ["alpha", "mid", "zeta"] and data.targets.tolist() == [2, 0, 1]


def test_parquet_with_numeric_labels_kept_as_indices(tmp_path, tok, rows):
    texts, labels = rows
    indices = [2 * CLASSES.index(y) for y in labels]  # 0, 2, 4: kept, not renumbered
    data, _ = resolve_data(str(write_parquet(tmp_path / "s.parquet", texts, indices)), tokenizer=tok)
    check_tokens(data, tok, texts, indices, ["0", "1", "2", "3", "4"])


def test_csv_integer_cells_are_indices(tmp_path, tok, rows):
    texts, labels = rows
    indices = [CLASSES.index(y) for y in labels]
    check_tokens(load_text_file(write_csv(tmp_path / "s.csv", texts, indices), tok), tok, texts, indices,
                 ["0", "1", "2"])


def test_json_lines_and_json_forms(tmp_path, tok, rows):
    texts, labels = rows
    want = [CLASSES.index(y) for y in labels]
    check_tokens(load_text_file(write_jsonl(tmp_path / "s.jsonl", texts, labels), tok), tok, texts, want, CLASSES)
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([{"sentence": t, "topic": y} for t, y in zip(texts, labels)]))
    check_tokens(load_text_file(listed, tok, text_column="sentence", label_column="topic"), tok, texts, want, CLASSES)
    columns = tmp_path / "columns.json"
    columns.write_text(json.dumps({"text": texts, "label": labels}))
    check_tokens(load_text_file(columns, tok), tok, texts, want, CLASSES)


def test_columns_chosen_by_name(tmp_path, tok, rows):
    texts, labels = rows
    path = write_csv(tmp_path / "s.csv", texts, labels, text_column="sentence", label_column="topic")
    data, description = resolve_data(str(path), tokenizer=tok, text_column="sentence", label_column="topic")
    check_tokens(data, tok, texts, [CLASSES.index(y) for y in labels], CLASSES)
    assert description["text_column"] == "sentence" and description["label_column"] == "topic"


def test_truncation_and_one_length_per_dataset(tmp_path, tok, rows):
    texts, labels = rows
    data = load_text_file(write_csv(tmp_path / "s.csv", texts, labels), tok, max_length=3)
    ids, mask = expected_ids(tok, texts, 3)
    np.testing.assert_array_equal(data.input_ids.numpy(), ids)
    assert data.attention_mask.all()  # every sentence has at least 3 words
    x, _ = gather(data, np.arange(6))
    assert x["input_ids"].shape == (6, 3)


def test_left_padding_follows_the_tokenizer(tmp_path, rows):
    left = word_tokenizer()
    left.padding_side = "left"
    data = load_text_file(write_csv(tmp_path / "s.csv", ["a cat", "the dog runs"], ["x", "y"]), left)
    assert data.attention_mask.tolist() == [[0, 1, 1], [1, 1, 1]] and data.input_ids[0, 0] == 0


# ---------------------------------------------------------------- refusals, one line each


def test_missing_column_lists_the_columns(tmp_path, tok, rows):
    texts, labels = rows
    for path in (write_csv(tmp_path / "s.csv", texts, labels), write_parquet(tmp_path / "s.parquet", texts, labels),
                 write_jsonl(tmp_path / "s.jsonl", texts, labels)):
        with pytest.raises(DatasetError) as err:
            load_text_file(path, tok, text_column="sentence")
        assert_one_line(err, "no column 'sentence'", "'text', 'label'", "text_column")
        with pytest.raises(DatasetError) as err:
            load_text_file(path, tok, label_column="topic")
        assert_one_line(err, "no column 'topic'", "'text', 'label'", "label_column")


def test_oversized_file_refused_before_reading(tmp_path, tok):
    path = tmp_path / "huge.csv"
    with open(path, "wb") as f:  # sparse: no disk used, but stat says more than the bound
        f.truncate(T.MAX_FILE_BYTES + 1)
    with memory_limit(64 * MiB), pytest.raises(DatasetError) as err:
        load_text_file(path, tok)
    assert_one_line(err, str(T.MAX_FILE_BYTES + 1), "split it")


def test_parquet_row_count_checked_from_the_footer(tmp_path, tok):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = T.MAX_ROWS + 1
    pq.write_table(pa.table({"text": pa.array(["a"] * n), "label": pa.array(np.zeros(n, np.int64))}),
                   tmp_path / "many.parquet")
    with pytest.raises(DatasetError) as err:
        load_text_file(tmp_path / "many.parquet", tok)
    assert_one_line(err, f"declares {n} rows")


def test_parquet_columns_of_other_types_are_refused_from_the_schema(tmp_path, tok):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [1, 2], "label": [0, 1]}), tmp_path / "ints.parquet")
    with pytest.raises(DatasetError) as err:
        load_text_file(tmp_path / "ints.parquet", tok)
    assert_one_line(err, "column 'text' is stored as INT64, not BYTE_ARRAY")
    pq.write_table(pa.table({"text": ["a cat", "a dog"], "label": [0.5, 1.0]}), tmp_path / "floats.parquet")
    with pytest.raises(DatasetError) as err:
        load_text_file(tmp_path / "floats.parquet", tok)
    assert_one_line(err, "column 'label' is stored as DOUBLE")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1" + bytes(100) + b"PAR1")
    with pytest.raises(DatasetError) as err:
        load_text_file(tmp_path / "junk.parquet", tok)
    assert_one_line(err, "junk.parquet")


@pytest.mark.parametrize("content, fragments", [
    (b"", ("is empty",)),
    (b"\xff\xfe\x00garbage\x81", ("cannot read",)),
    (b"text,label\n", ("no rows",)),
    (b"text,label\nthe cat,\n", ("row 0 has no 'label'",)),
    (b"text,label\nthe cat,-1\n", (">= 0",)),
])
def test_bad_csv(tmp_path, tok, content, fragments):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as err:
        load_text_file(path, tok)
    assert_one_line(err, *fragments)


@pytest.mark.parametrize("content, fragments", [
    ('{"text": "a cat", "label": 0}\nnot json\n', ("line 2 is not JSON",)),
    ('{"text": 5, "label": 0}\n', ("row 0 holds int",)),
    ('{"text": "a", "label": true}\n', ("labels must be",)),
    ('{"text": "a", "label": 0}\n{"text": "b", "label": "x"}\n', ("both numbers and names",)),
    ('{"text": "a", "label": 1.5}\n', ("of type float",)),
    ('[1, 2]', ("row 0 is a JSON int",)),
    ('"just a string"', ("a JSON str",)),
    ("[" * 100000 + "]" * 100000, ("cannot read",)),
])
def test_bad_json(tmp_path, tok, content, fragments):
    path = tmp_path / ("bad.json" if content.startswith(("[", '"')) else "bad.jsonl")
    path.write_text(content)
    with pytest.raises(DatasetError) as err:
        load_text_file(path, tok)
    assert_one_line(err, *fragments)


def test_label_past_the_class_bound(tmp_path, tok):
    with pytest.raises(LabelError, match="below 65536"):
        load_text_file(write_csv(tmp_path / "s.csv", ["a cat"], [2**40]), tok)


def test_text_length_and_token_bounds(tmp_path, tok):
    path = write_jsonl(tmp_path / "long.jsonl", ["a " * (T.MAX_TEXT_CHARS // 2 + 1)], ["x"])
    with pytest.raises(DatasetError) as err:
        load_text_file(path, tok)
    assert_one_line(err, "characters, more than")
    n = TX.MAX_TOKENS // TX.MAX_LENGTH + 1
    path = write_csv(tmp_path / "many.csv", ["a cat"] * n, ["x"] * n)
    with pytest.raises(DatasetError) as err:
        load_text_file(path, tok, max_length=TX.MAX_LENGTH)
    assert_one_line(err, "lower max_length")
    for bad in (0, TX.MAX_LENGTH + 1, 2.5, True):
        with pytest.raises(DatasetError, match="max_length"):
            load_text_file(path, tok, max_length=bad)


def test_unknown_suffix_and_missing_file(tmp_path, tok):
    with pytest.raises(DatasetError) as err:
        load_text_file(tmp_path / "nothing.csv", tok)
    assert_one_line(err, "cannot read", "nothing.csv")
    with pytest.raises(DatasetError) as err:
        load_text_file(tmp_path / "x.xlsx", tok)
    assert_one_line(err, "not a table file", ".parquet")


def test_texts_need_a_tokenizer(tmp_path, rows):
    path = str(write_csv(tmp_path / "s.csv", *rows))
    for given in (None, "smallcnn"):
        with pytest.raises(DatasetError) as err:
            resolve_data(path, tokenizer=given)
        assert_one_line(err, "tokenizer of an hf: model", "hf:NAME_OR_DIR model")


def test_a_failing_tokenizer_is_one_line(tmp_path, rows):
    def broken(texts, **_):
        raise RuntimeError("no\nvocabulary")

    with pytest.raises(DatasetError) as err:
        load_text_file(write_csv(tmp_path / "s.csv", *rows), broken)
    assert_one_line(err, "tokenizer failed", "RuntimeError")


# ---------------------------------------------------------------- hf: datasets


def test_hf_folder_of_texts_with_class_names(tmp_path, tok, rows):
    texts, labels = rows
    indices = [CLASSES.index(y) for y in labels]
    folder = write_hf_folder(tmp_path / "set", texts, indices, CLASSES)
    data, description = resolve_data(f"hf:{folder}", split="train", tokenizer=tok)
    check_tokens(data, tok, texts, indices, CLASSES)
    assert description["dataset"] == f"hf:{folder}" and description["split"] == "train"
    with pytest.raises(DatasetError) as err:
        resolve_data(f"hf:{folder}", split="validation", tokenizer=tok)
    assert_one_line(err, "no split 'validation'", "'train', 'test'", "choose with split")
    with pytest.raises(DatasetError) as err:
        resolve_data(f"hf:{folder}", split="test", tokenizer=tok, text_column="sentence", label_column="topic")
    assert_one_line(err, "no column 'topic'", "'text', 'label'")


def test_hf_single_dataset_with_string_labels(tmp_path, tok, rows):
    import datasets

    texts, labels = rows
    datasets.Dataset.from_dict({"text": texts, "label": labels}).save_to_disk(str(tmp_path / "one"))
    data, _ = resolve_data(f"hf:{tmp_path / 'one'}", split="test", tokenizer=tok)
    check_tokens(data, tok, texts, [CLASSES.index(y) for y in labels], CLASSES)


def test_hf_folder_of_images(tmp_path):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(12, 8, 8, 3), dtype=np.uint8)
    images = [Image.fromarray(p) for p in pixels]
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    datasets.Dataset.from_dict({"img": images, "label": [i % 3 for i in range(12)]},
                               features=features).save_to_disk(str(tmp_path / "img"))
    data, _ = resolve_data(f"hf:{tmp_path / 'img'}")  # no tokenizer needed
    assert isinstance(data, ArrayDataset) and data.data.shape == (12, 3, 8, 8) and data.classes == ["a", "b", "c"]
    scaled = pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255
    mean, std = scaled.mean(axis=(0, 2, 3)), scaled.std(axis=(0, 2, 3))
    np.testing.assert_allclose(data.normalization["mean"], mean, rtol=1e-5)
    np.testing.assert_allclose(data.data.numpy(), (scaled - mean[None, :, None, None]) / std[None, :, None, None],
                               rtol=1e-4, atol=1e-4)


def test_hf_folder_with_a_loading_script_is_not_run(tmp_path):
    folder = tmp_path / "scripted"
    folder.mkdir()
    marker = tmp_path / "ran"
    (folder / "scripted.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    (folder / "data.csv").write_text("text,label\na cat,0\n")
    with pytest.raises(DatasetError) as err:
        resolve_data(f"hf:{folder}")
    assert_one_line(err, "not a folder written by save_to_disk")
    assert not marker.exists()


def test_hf_hub_unreachable_is_one_line(tmp_path):
    code = ("from layermod.data.spec import resolve_data\n"
            "from layermod.errors import DatasetError\n"
            "try:\n    resolve_data('hf:nobody-here/no-such-set')\n"
            "except DatasetError as e:\n    print('ERROR', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                         cwd=tmp_path).stdout
    line = [x for x in out.splitlines() if x.startswith("ERROR")]
    assert len(line) == 1 and "Hugging Face hub" in line[0] and "save_to_disk" in line[0], out


# ---------------------------------------------------------------- torchvision:


def test_torchvision_fake_data():
    pytest.importorskip("torchvision")
    data, description = resolve_data("torchvision:FakeData")
    again, _ = resolve_data("torchvision:fakedata")
    train, _ = resolve_data("torchvision:FakeData", split="train")
    assert data.data.shape == (1000, 3, 32, 32) and data.name == "torchvision:FakeData"
    assert torch.equal(data.data, again.data) and not torch.equal(data.data, train.data)
    np.testing.assert_allclose(data.data.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-4)
    assert len(data.normalization["mean"]) == 3 and description["split"] == "test"


def test_torchvision_cifar10_in_torchvision_layout(tmp_path):
    from test_cifar import NORMALIZATION, write_cifar

    _, expected = write_cifar(tmp_path / "root", "cifar10", archive=True)
    data, _ = resolve_data("torchvision:CIFAR10", split="test", data_dir=tmp_path / "root")
    assert data.name == "torchvision:CIFAR10" and data.data.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(data.targets.numpy(), expected["test"][1])
    assert data.normalization == {"mean": list(NORMALIZATION["cifar10"][0]), "std": list(NORMALIZATION["cifar10"][1])}


def test_torchvision_mnist_in_torchvision_layout(tmp_path):
    from idx_files import write_mnist_like

    expected = write_mnist_like(tmp_path / "root" / "MNIST" / "raw", compress=False)
    data, _ = resolve_data("torchvision:MNIST", split="train", data_dir=tmp_path / "root")
    assert data.name == "torchvision:MNIST" and data.data.shape == (30, 1, 28, 28)
    np.testing.assert_array_equal(data.targets.numpy(), expected["train"][1])
    assert data.normalization == {"mean": [0.1307], "std": [0.3081]}


def test_torchvision_refusals(tmp_path):
    with pytest.raises(DatasetError) as err:
        resolve_data("torchvision:CIFAR10")
    assert_one_line(err, "no data_dir given", "cifar-10-batches-py/", "as data_dir")
    with pytest.raises(DatasetError) as err:
        resolve_data("torchvision:CIFAR10", split="test", data_dir=tmp_path / "absent")
    assert_one_line(err, "no folder", "absent")
    with pytest.raises(DatasetError) as err:
        resolve_data("torchvision:FashionMNIST", split="test", data_dir=tmp_path)
    assert_one_line(err, "FashionMNIST/raw")
    with pytest.raises(DatasetError) as err:
        resolve_data("torchvision:ImageNet", split="test", data_dir=tmp_path)
    assert_one_line(err, "CIFAR10, CIFAR100, MNIST, FashionMNIST, FakeData", "folder:PATH")


# ---------------------------------------------------------------- measured end to end


def tiny_bert(vocab_size: int, seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    return BertModel(config).eval()


def test_curve_of_a_tiny_bert_on_a_csv(tmp_path, tok, rows):
    import layermod as lm

    data, _ = resolve_data(str(write_csv(tmp_path / "s.csv", *rows)), tokenizer=tok)
    curve = lm.modularity_curve(tiny_bert(len(vocabulary())), data, n_per_class=10, repeats=2)
    assert len(curve.layers) >= 2 and np.isfinite(curve.mean).all()


def test_cli_curve_of_an_hf_model_on_a_csv(tmp_path, tok, rows):
    from layermod.cli import main

    from hf_models import save_tokenizer

    model_dir = tmp_path / "bert"
    tiny_bert(len(vocabulary())).save_pretrained(model_dir)
    save_tokenizer(model_dir, words=words(), cls_sep=False)
    texts, labels = rows
    csv = write_csv(tmp_path / "s.csv", texts, labels, text_column="sentence")
    out = tmp_path / "run"
    assert main(["curve", "--model", f"hf:{model_dir}", "--dataset", str(csv), "--text-column", "sentence",
                 "--max-length", "5", "--n-per-class", "10", "--repeats", "2", "--device", "cpu", "--quiet",
                 "--out", str(out)]) == 0
    config = json.loads((out / "curve.json").read_text())["config"]
    assert config["text_column"] == "sentence" and config["max_length"] == 5


def test_cli_text_options_reach_the_reader(tmp_path, rows, capsys):
    from layermod.cli import main

    csv = write_csv(tmp_path / "s.csv", *rows)
    code = main(["curve", "--model", "mlp", "--dataset", str(csv), "--label-column", "topic", "--out",
                 str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "no column 'topic'" in err and "'text', 'label'" in err
    code = main(["curve", "--model", "mlp", "--dataset", str(csv), "--out", str(tmp_path / "run")])
    assert code == 2 and "tokenizer of an hf: model" in capsys.readouterr().err


# ---------------------------------------------------------------- fuzzed files: a dataset or one line, nothing else


def _good_files() -> dict[str, bytes]:
    import io as _io

    import pyarrow as pa
    import pyarrow.parquet as pq

    texts, labels = sentences(3)
    rows = "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels))
    buffer = _io.BytesIO()
    pq.write_table(pa.table({"text": texts, "label": [CLASSES.index(y) for y in labels]}), buffer)
    return {".csv": ("text,label\n" + "".join(f"{t},{y}\n" for t, y in zip(texts, labels))).encode(),
            ".jsonl": rows.encode(), ".json": json.dumps({"text": texts, "label": labels}).encode(),
            ".parquet": buffer.getvalue()}


def _fuzz_cases():
    from hypothesis import strategies as st
    from test_hostile_data import mutated

    return st.one_of(*(st.tuples(st.just(suffix), mutated(raw)) for suffix, raw in _good_files().items()),
                     st.tuples(st.sampled_from(T.TABLE_SUFFIXES), st.binary(max_size=256)))


def test_fuzz_table_files(tmp_path, tok):
    from hypothesis import given
    from test_hostile_data import FUZZ, outcome

    @FUZZ
    @given(case=_fuzz_cases())
    def run(case):
        suffix, raw = case
        path = tmp_path / f"fuzz{suffix}"
        path.write_bytes(raw)
        outcome(load_text_file, path, tok)

    run()


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels, followed by a few bytes of image data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


def test_hf_image_bomb_is_refused_before_decoding(tmp_path):
    import datasets

    features = datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")})
    bomb = {"bytes": _png_declaring(4000, 4000), "path": None}
    datasets.Dataset.from_dict({"img": [bomb], "label": [0]}, features=features).save_to_disk(str(tmp_path / "bomb"))
    with memory_limit(256 * MiB), pytest.raises(DatasetError) as err:
        resolve_data(f"hf:{tmp_path / 'bomb'}")
    assert_one_line(err, "declares 4000x4000 pixels", "decompression bomb")


def test_training_on_texts_is_refused_in_one_line(tmp_path, rows, capsys):
    from layermod.cli import main

    csv = str(write_csv(tmp_path / "s.csv", *rows))
    code = main(["train", "--model", "mlp", "--dataset", csv, "--test-dataset", csv, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "texts need the tokenizer of an hf: model" in err[0]
    assert not (tmp_path / "run").exists()
