"""`layermod curve --views`, `attack`, `compare` and `report` end to end on a zoo checkpoint trained here."""

from __future__ import annotations

import json
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from browser import ARTIFACTS, render, require_chromium
from idx_files import write_idx

from layermod.data import idx as IDX
from layermod.cli import main

CLASS_NAMES_ATTACK = '<script>alert("x")</script>'


def write_learnable_fashion(folder: Path, n_train: int = 500, n_test: int = 300, seed: int = 0) -> None:
    """Fashion-MNIST-layout IDX files whose classes a small CNN learns in an epoch: each class is a bright
    square at its own place on a noisy background."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 90, size=(n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            row, col = divmod(int(c), 4)
            images[i, 2 + 8 * row: 8 + 8 * row, 2 + 6 * col: 8 + 6 * col] = 230
        stem_images, stem_labels = IDX._SPLIT_FILES[split]
        write_idx(folder / f"{stem_images}.gz", images, compress=True)
        write_idx(folder / f"{stem_labels}.gz", labels, compress=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A VGG11 (width 1/16) trained 4 epochs with dynamics (100 % test accuracy), then curve, attack and compare
    runs on it. FGSM keeps every attacked sample: at eps 0.3 it flips some classes' samples only rarely."""
    top = tmp_path_factory.mktemp("analysis")
    data = top / "fm"
    write_learnable_fashion(data)
    common = ["--dataset", "fashion-mnist", "--data-dir", str(data), "--quiet"]
    assert main(["train", "--model", "vgg11", "--width", "0.0625", *common, "--epochs", "4", "--track-every", "1",
                 "--probe-per-class", "5", "--probe-repeats", "1", "--out", str(top / "train")]) == 0
    weights = str(top / "train" / "best.safetensors")
    measure = [*common, "--weights", weights, "--n-per-class", "8", "--repeats", "2"]
    assert main(["curve", *measure, "--null", "3", "--views", "2", "--view-per-class", "6", "--out",
                 str(top / "curve")]) == 0
    assert main(["attack", *measure, "--method", "fgsm", "--eps", "0.3", "--keep", "all", "--out",
                 str(top / "fgsm")]) == 0
    assert main(["attack", *measure, "--method", "pgd", "--eps", "0.3", "--steps", "5", "--step-size", "0.1",
                 "--out", str(top / "pgd")]) == 0
    assert main(["compare", *measure, "--out", str(top / "compare")]) == 0
    assert main(["eval", "--weights", weights, "--data-dir", str(data), "--out", str(top / "eval")]) == 0
    assert main(["prune", *measure, "--remove", "1", "--methods", "none,modularity", "--seeds", "1",
                 "--finetune-subset", "100", "--out", str(top / "prune")]) == 0
    return top, measure


@pytest.mark.slow
def test_attack_runs_write_paired_curves_and_pgd_is_at_least_as_strong(runs):
    top, _ = runs
    fgsm = json.loads((top / "fgsm" / "attack.json").read_text())
    pgd = json.loads((top / "pgd" / "attack.json").read_text())
    for result in (fgsm, pgd):
        assert result["clean"]["layers"] == result["attacked"]["layers"]
        assert result["n_flipped"] <= result["n_correct"] <= result["n_attacked"]
        assert len(result["gap"]) == len(result["clean"]["layers"])
        assert result["clean"]["config"]["weights"].endswith("best.safetensors")
    assert fgsm["attack"]["method"] == "fgsm" and pgd["attack"]["steps"] == 5
    assert fgsm["keep"] == "all" and fgsm["n_attacked"] == 300 and pgd["keep"] == "flipped"
    assert pgd["success_rate"] >= fgsm["success_rate"] - 0.02
    assert (top / "pgd" / "attack.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_compare_two_models_rows_against_columns(runs, tmp_path):
    top, measure = runs
    other = str(top / "train" / "last.safetensors")
    assert main(["compare", *measure, "--weights-b", other, "--layers-b", "0,-1", "--out", str(tmp_path / "ab")]) == 0
    comparison = json.loads((tmp_path / "ab" / "compare.json").read_text())
    assert np.array(comparison["cka"]).shape == (len(comparison["layers_a"]), 2)
    assert comparison["names"][1] == other and comparison["curve_b"]["layers"] == comparison["layers_b"]


@pytest.mark.slow
def test_curve_views_and_compare_files(runs):
    top, _ = runs
    views = json.loads((top / "curve" / "embedding.json").read_text())
    curve = json.loads((top / "curve" / "curve.json").read_text())
    assert [v["layer"] for v in views["layers"]] == [curve["layers"][0], curve["layers"][-1]]
    assert len(views["layers"][0]["coords"]) == 60 and views["class_names"][0] == "T-shirt/top"
    comparison = json.loads((top / "compare" / "compare.json").read_text())
    n = len(comparison["layers_a"])
    assert np.array(comparison["cka"]).shape == (n, n)
    np.testing.assert_allclose(np.diag(comparison["cka"]), 1.0)
    assert (top / "compare" / "d.csv").read_text().count("\n") == n + 1


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.headings, self.downloads, self.scripts = 0, [], [], 0
        self._heading = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.images += tag == "img" and attrs.get("src", "").startswith("data:image/png;base64,")
        self.scripts += tag == "script"
        if "download" in attrs:
            self.downloads.append(attrs["download"])
        if tag in ("h2", "h3"):
            self._heading = ""

    def handle_data(self, data):
        if self._heading is not None:
            self._heading += data

    def handle_endtag(self, tag):
        if tag in ("h2", "h3") and self._heading is not None:
            self.headings.append(self._heading.strip())
            self._heading = None


@pytest.mark.slow
def test_report_gathers_every_run_and_renders_in_a_browser(runs, tmp_path):
    top, _ = runs
    out = tmp_path / "report.html"
    dirs = [str(top / name) for name in ("train", "curve", "fgsm", "pgd", "compare", "eval", "prune")]
    assert main(["report", *dirs, "--out", str(out), "--title", "tiny <VGG11> & co"]) == 0
    text = out.read_text()
    assert "tiny &lt;VGG11&gt; &amp; co" in text and "<VGG11>" not in text
    page = _Page()
    page.feed(text)
    for heading in ("Model", "Training", "Training dynamics", "Modularity curve", "Samples in 2-D and their kNN graphs",
                    "Clean vs FGSM (linf, eps 0.3)", "Clean vs PGD (linf, eps 0.3, 5 steps of 0.1)",
                    "Layer difference D beside linear CKA", "Evaluation",
                    "Pruning plan", "Pruning: methods compared at the same budget"):
        assert heading in page.headings
    assert page.images == 7  # dynamics, curve, views, two attacks, heat maps, pruning
    contents = json.loads(text.split('id="data-contents">')[1].split("</script>")[0])
    assert contents["left_out"] == [] and contents["runs"][1]["shown"] == ["curve.json", "embedding.json"]
    for name in ("curve-curve.json", "curve-verdicts.csv", "fgsm-attack.csv", "compare-cka.csv", "train-metrics.csv"):
        assert name in page.downloads
    require_chromium()
    shot = ARTIFACTS / "report.png"
    rendered = render(out, screenshot=shot)
    assert 'data-render-check="ok"' in rendered.dom and 'data-images="7/7"' in rendered.dom
    assert not rendered.errors
    assert shot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_report_with_a_corrupt_file_shows_the_rest_and_exits_2(runs, tmp_path, capsys):
    top, _ = runs
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "curve.json").write_text((top / "curve" / "curve.json").read_text())
    (broken / "attack.json").write_text("{not json")
    out = tmp_path / "r.html"
    assert main(["report", str(broken), str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "attack.json: unreadable" in err[0] and "nowhere: no such directory" in err[0]
    text = out.read_text()
    assert "Modularity curve" in text and "attack.json could not be read" in text
    assert "nowhere: no such directory" in text


def test_report_of_nothing_readable_writes_nothing(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "empty"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to report" in err[0] and "holds none of" in err[0]
    assert not out.exists()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("extra, message", [
    (["--method", "fgsm", "--eps", "1.5"], "outside the pixel range"),
    (["--method", "fgsm", "--eps", "0"], "eps"),
    (["--method", "magic"], "magic"),
    (["--method", "pgd", "--step-size", "-1"], "step"),
    (["--method", "fgsm", "--pixel-range", "0,0.5"], "pixel range"),
])
def test_attack_bad_input_is_one_line(runs, tmp_path, capsys, extra, message):
    _, measure = runs
    assert main(["attack", *measure, *extra, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("layermod: error:") and message in err[0]
    assert not (tmp_path / "a" / "attack.json").exists()


def test_attack_on_a_model_without_gradients(tmp_path, capsys):
    model_file = tmp_path / "frozen.py"
    model_file.write_text(
        "import torch\nfrom torch import nn\n"
        "class Frozen(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(4, 2)\n"
        "    def forward(self, x):\n        with torch.no_grad():\n            return self.fc(x.flatten(1))\n"
        "def build():\n    return Frozen()\n")
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, X=rng.random((40, 4)).astype(np.float32), y=np.arange(40) % 2)
    status = main(["attack", "--model", f"{model_file}:build", "--dataset", str(data), "--n-per-class", "5",
                   "--repeats", "1", "--keep", "all", "--quiet", "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "gradient" in err[0]


@pytest.mark.slow
def test_attack_through_torchattacks_with_its_own_options(runs, tmp_path):
    pytest.importorskip("torchattacks")
    _, measure = runs
    out = tmp_path / "cw"
    assert main(["attack", *measure, "--method", "torchattacks:CW", "--attack-arg", "c=1", "--attack-arg", "steps=5",
                 "--keep", "all", "--out", str(out)]) == 0
    result = json.loads((out / "attack.json").read_text())
    assert result["attack"]["method"] == "torchattacks:CW" and result["attack"]["options"] == {"c": 1, "steps": 5}
    assert result["n_attacked"] == 300 and result["n_flipped"] > 0


@pytest.mark.slow
def test_tsne_views_without_scikit_learn_fail_before_the_curve(runs, tmp_path, monkeypatch, capsys):
    _, measure = runs
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    monkeypatch.setattr("layermod.analysis.curve.modularity_curve", lambda *a, **k: pytest.fail("the curve was measured"))
    assert main(["curve", *measure, "--view-method", "tsne", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scikit-learn" in err[0]
