"""Every CLI command end to end on tiny inputs, and every bad input as one line with a non-zero exit.

The commands run in-process through ``main`` (its return value is the exit status; argparse errors raise
SystemExit(2)); one test runs the installed ``layermod`` command to check the entry point itself."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from layermod import models
from layermod.models.checkpoint import save_checkpoint
from layermod.cli import main
from idx_files import write_mnist_like

LAYERMOD = Path(sys.executable).with_name("layermod")  # the installed command, as a user runs it


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    """Errors as users see them: one line, no traceback."""
    monkeypatch.delenv("LAYERMOD_DEBUG", raising=False)


@pytest.fixture
def user_model_file(tmp_path):
    """A model defined outside layermod and its tests' modules: a residual MLP in its own file."""
    path = tmp_path / "user_model.py"
    path.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Residual(nn.Module):
            def __init__(self, dim):
                super().__init__()
                self.fc = nn.Linear(dim, dim)

            def forward(self, x):
                return x + torch.relu(self.fc(x))

        def build():
            torch.manual_seed(0)
            return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), Residual(12), Residual(12), nn.Linear(12, 4))
    """))
    return path


def run(capsys, *args) -> tuple[int, str, str]:
    """The layermod command in-process: (exit status, stdout, stderr)."""
    status = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_curve_on_a_user_model_writes_json_csv_png(tmp_path, blobs_npz, user_model_file):
    out = tmp_path / "run"
    status = main(["curve", "--model", f"{user_model_file}:build", "--dataset", str(blobs_npz), "--n-per-class", "10",
                   "--repeats", "3", "--null", "5", "--out", str(out), "--quiet"])
    assert status == 0
    data = json.loads((out / "curve.json").read_text())
    assert data["layers"] == ["1", "2", "3"]  # stem + both residual blocks
    assert np.array(data["values"]).shape == (3, 3)
    assert data["config"]["model"] == f"{user_model_file}:build"
    assert data["config"]["dataset"] == str(blobs_npz)
    assert data["config"]["n_per_class"] == 10 and data["config"]["null_permutations"] == 5
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "curve.csv").read_text().splitlines()) == 4


def test_curve_from_a_checkpoint_with_sidecar(tmp_path, blobs_npz, capsys):
    model = models.create("mlp", num_classes=4, in_channels=1, width=0.1, input_size=16, depth=2)
    weights = save_checkpoint(model, tmp_path / "ckpt" / "best.safetensors",
                              {"arch": "mlp", "arch_args": {"num_classes": 4, "in_channels": 1, "width": 0.1,
                                                            "input_size": 16, "depth": 2}})
    status = main(["curve", "--weights", str(weights), "--dataset", str(blobs_npz), "--layers", "0,-1",
                   "--n-per-class", "8", "--repeats", "2", "--out", str(tmp_path / "run")])
    assert status == 0
    table = capsys.readouterr().out
    curve = json.loads((tmp_path / "run" / "curve.json").read_text())
    assert len(curve["layers"]) == 2
    assert all(name in table for name in curve["layers"])
    assert curve["config"]["model"] == "mlp" and curve["config"]["layers"] == [0, -1]


def test_layers_lists_modules_shapes_and_auto_points(user_model_file, capsys):
    assert main(["layers", "--model", f"{user_model_file}:build", "--input-shape", "1,4,4"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[1] if line[:4].strip() else line.split()[0]: line for line in out.splitlines()[1:] if line}
    assert lines["2"].split()[0] == "1" and lines["2"].rstrip().endswith("12")
    assert "2.fc" in out and "3 auto points" in out


@pytest.mark.slow
def test_demo_end_to_end_on_tiny_fashion_mnist_files(tmp_path, capsys):
    data = tmp_path / "fmnist"
    write_mnist_like(data, n_train=200, n_test=1000)
    out, cache = tmp_path / "demo", tmp_path / "cache"
    args = ["demo", "--data-dir", str(data), "--cache-dir", str(cache), "--out", str(out), "--epochs", "1", "--quiet"]
    assert main(args) == 0
    curve = json.loads((out / "curve.json").read_text())
    assert curve["config"]["samples_per_draw"] == 1000 and len(curve["values"]) == 5
    assert len(curve["z"]) == len(curve["layers"]) >= 5
    views = json.loads((out / "embedding.json").read_text())
    assert [v["layer"] for v in views["layers"]] == [curve["layers"][i] for i in (0, len(curve["layers"]) // 2, -1)]
    page = (out / "report.html").read_text()
    assert "Samples in 2-D and their kNN graphs" in page
    # each Q says what it is a Q of: the curve's table its draws, the views' table its one draw
    assert "mean Q over 5 draws of 1,000 samples (100 per class)" in page
    assert f"one draw of {len(views['layers'][0]['labels'])} samples" in page
    weights = list(cache.rglob("*.safetensors"))
    assert len(weights) == 1
    first = {name: (out / name).read_bytes() for name in ("curve.json", "curve.csv", "curve.png", "embedding.json")}
    stamp, trained = weights[0].stat().st_mtime_ns, weights[0].read_bytes()
    capsys.readouterr()
    assert main(args) == 0  # the second run reuses the cached model ...
    assert "reusing the demo model" in capsys.readouterr().out and weights[0].stat().st_mtime_ns == stamp
    assert {name: (out / name).read_bytes() for name in first} == first  # the same files, cached or trained
    assert main([*args, "--retrain"]) == 0  # ... --retrain trains it again, seeded: to the same model and curve
    assert "training smallcnn" in capsys.readouterr().out and weights[0].stat().st_mtime_ns != stamp
    assert weights[0].read_bytes() == trained
    assert {name: (out / name).read_bytes() for name in first} == first


def one_line_error(status: int, stdout: str, stderr: str, *fragments: str) -> None:
    assert status == 2, (stdout, stderr)
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("layermod: error:"), stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_inputs_give_one_line_and_exit_2(tmp_path, blobs_npz, user_model_file, capsys):
    model = f"{user_model_file}:build"
    curve = ["curve", "--model", model, "--dataset", str(blobs_npz), "--n-per-class", "5", "--repeats", "1"]
    out = ["--out", str(tmp_path / "out")]
    one_line_error(*run(capsys, *curve, "--k", "20", *out), "k=20", "lower k")
    one_line_error(*run(capsys, *curve, "--n-per-class", "50", *out), "class 0 has 30 samples", "lower n_per_class")
    one_line_error(*run(capsys, *curve, "--layers", "2.fx", *out), "no layer named '2.fx'", "2.fc")
    one_line_error(*run(capsys, "curve", "--model", "no_such_module:build", "--dataset", str(blobs_npz), *out),
                   "cannot import")
    one_line_error(*run(capsys, "curve", "--model", "vgg99", "--dataset", str(blobs_npz), *out), "vgg99", "mlp")
    one_line_error(*run(capsys, "curve", "--model", "smallcnn", "--dataset", "fashion-mnist", "--data-dir",
                        str(tmp_path / "nowhere"), *out), "--data-dir")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line_error(*run(capsys, *curve, "--out", str(blocker / "sub")), "cannot write")
    assert not (tmp_path / "out").exists()  # nothing half-written by the failed runs


def test_nan_features_and_single_class_data(tmp_path, user_model_file, capsys):
    x = np.ones((20, 1, 4, 4), np.float32)
    x[::2] = np.nan  # every sample of class 0
    np.savez(tmp_path / "nan.npz", X=x, y=np.arange(20) % 2)
    np.savez(tmp_path / "one.npz", X=np.ones((20, 16), np.float32), y=np.zeros(20, int))
    base = ["curve", "--model", f"{user_model_file}:build", "--n-per-class", "4", "--repeats", "1", "--out",
            str(tmp_path / "out")]
    one_line_error(*run(capsys, *base, "--dataset", str(tmp_path / "nan.npz")), "layer '1'", "NaN")
    one_line_error(*run(capsys, *base, "--dataset", str(tmp_path / "one.npz")), "2 classes")


def test_options_that_contradict_the_checkpoint_sidecar(tmp_path, blobs_npz, capsys):
    model = models.create("mlp", num_classes=4, width=0.1, input_size=16, depth=2)
    weights = save_checkpoint(model, tmp_path / "w.safetensors", {"arch": "mlp", "arch_args": {
        "num_classes": 4, "in_channels": 1, "width": 0.1, "input_size": 16, "depth": 2}})
    base = ["curve", "--weights", str(weights), "--dataset", str(blobs_npz), "--out", str(tmp_path / "o")]
    one_line_error(*run(capsys, *base, "--model", "smallcnn"), "are for 'mlp', not 'smallcnn'")
    one_line_error(*run(capsys, *base, "--model", "mlp", "--num-classes", "5"), "num_classes 4 (asked 5)")


def test_weights_that_do_not_match_the_architecture(tmp_path, blobs_npz, capsys):
    small = models.create("mlp", num_classes=4, width=0.1, input_size=16, depth=2)
    weights = save_checkpoint(small, tmp_path / "w.safetensors", {"arch": "mlp", "arch_args": {}})
    (tmp_path / "w.json").unlink()
    one_line_error(*run(capsys, "curve", "--model", "mlp", "--num-classes", "4", "--weights", str(weights), "--dataset",
                        str(blobs_npz), "--out", str(tmp_path / "o")), "do not match")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    one_line_error(*run(capsys, "curve", "--model", "mlp", "--weights", str(tmp_path / "bad.safetensors"), "--dataset",
                        str(blobs_npz), "--out", str(tmp_path / "o")), "bad.safetensors")


def test_corrupt_dataset_file(tmp_path, user_model_file, capsys):
    data = tmp_path / "fm"
    write_mnist_like(data)
    (data / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bgarbage")
    one_line_error(*run(capsys, "curve", "--model", f"{user_model_file}:build", "--dataset", "fashion-mnist",
                        "--data-dir", str(data), "--out", str(tmp_path / "o")), "t10k-images-idx3-ubyte.gz")


def test_models_lists_the_zoo_with_parameter_counts(capsys):
    assert main(["models"]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(rows) == set(models.available())
    assert rows["resnet56"] == "855,770" and rows["vgg16"] == "14,724,042"


COMMANDS = ("layers", "curve", "attack", "compare", "report", "models", "demo", "prune", "train", "eval")


def test_help_of_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listed = capsys.readouterr().out
    for command in COMMANDS:
        assert command in listed
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        stdout = capsys.readouterr().out
        assert stdout.startswith(f"usage: layermod {command}") and "--" in stdout, command


def test_unknown_command_and_option_exit_2(capsys):
    for argv in (["nonsense"], ["curve", "--no-such-option"], ["curve", "--model", "mlp"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2, argv
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err, argv


def test_model_that_does_not_fit_the_data(tmp_path, blobs_npz, capsys):
    path = tmp_path / "m.py"
    path.write_text("from torch import nn\ndef build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(99, 3))\n")
    one_line_error(*run(capsys, "curve", "--model", f"{path}:build", "--dataset", str(blobs_npz), "--n-per-class", "5",
                        "--out", str(tmp_path / "o")), "check that the data fit the model")


def test_the_installed_command_exits_with_mains_status(tmp_path, blobs_npz):
    """The entry point itself, in a fresh process: main's status becomes the exit status, errors one line."""
    proc = subprocess.run([str(LAYERMOD), "curve", "--model", "vgg99", "--dataset", str(blobs_npz), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "LAYERMOD_DEBUG": ""})
    one_line_error(proc.returncode, proc.stdout, proc.stderr, "vgg99", "mlp")
    assert not (tmp_path / "o").exists()


def test_python_m_layermod_runs_the_command():
    proc = subprocess.run([sys.executable, "-m", "layermod", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"layermod {importlib.metadata.version('layermod')}\n"


ALL_COMMANDS = (*COMMANDS, "prune-study", "sweep", "dynamics")


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["curve", "--k", "0"], ["curve"], ["train"],
                                  *([command, "--help"] for command in ALL_COMMANDS)])
def test_help_and_argument_errors_import_no_torch(argv):
    """Parsing alone, in a fresh interpreter: neither torch nor numpy is loaded."""
    code = ("import sys\nfrom layermod.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted({'torch', 'numpy'} & set(sys.modules)), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert proc.stderr.splitlines()[-1] == "[]", (argv, proc.stderr)


def test_argument_error_is_one_line_without_the_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["curve", "--k", "0"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "layermod curve: error: argument --k: k=0 must be an integer >= 1\n"


def test_library_parameter_names_are_printed_as_flags(tmp_path, capsys):
    status, _, err = run(capsys, "report", tmp_path, "--out", tmp_path)
    assert status == 2
    assert err.startswith(f"layermod: error: --out {tmp_path} is a directory; "), err
