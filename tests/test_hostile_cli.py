"""The command line against hostile files and careless input: no code runs from a file, no stray module shadows
an installed one, every bad input is one line, and the same command twice writes the same bytes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from idx_files import write_mnist_like
from limits import MiB, memory_limit
from models_for_tests import blobs_npz
from layermod import models
from layermod.io import files, runs
from layermod.models.checkpoint import save_checkpoint
from layermod.cli import main

LAYERMOD = Path(sys.executable).with_name("layermod")  # the installed command, as a user runs it


@pytest.fixture
def blobs(tmp_path: Path) -> Path:
    """A .npz of 3 separated classes, 20 samples each, as 1x28x28 images."""
    return blobs_npz(tmp_path / "blobs.npz", n_per_class=20, classes=3, side=28, seed=1)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """An untrained tiny MLP checkpoint whose sidecar may be edited by the test."""
    args = {"num_classes": 3, "in_channels": 1, "width": 0.25}
    torch.manual_seed(0)
    return save_checkpoint(models.create("mlp", **args), tmp_path / "ckpt" / "best.safetensors",
                           {"arch": "mlp", "arch_args": args, "dataset": "digits"})


def set_sidecar_dataset(weights: Path, dataset: str) -> None:
    """Rewrite the dataset the sidecar names, keeping any digest of the weights valid."""
    sidecar = weights.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["dataset"] = meta["test_dataset"] = dataset
    sidecar.write_text(json.dumps(meta))


def one_line(status: int, err: str, *fragments: str) -> None:
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("layermod: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write_helper(folder: Path, marker: Path) -> None:
    """A helper.py whose import leaves ``marker`` behind: proof that code from a file ran."""
    (folder / "helper.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
                                      "def load():\n    raise SystemExit('ran')\n")


@pytest.mark.parametrize("command", ["eval", "prune"])
def test_a_sidecar_naming_code_as_its_dataset_is_refused_unrun(command, checkpoint, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "ran.txt"
    write_helper(checkpoint.parent, marker)
    monkeypatch.chdir(checkpoint.parent)
    for spec in ("helper:load", f"{checkpoint.parent / 'helper.py'}:load"):
        set_sidecar_dataset(checkpoint, spec)
        extra = ["--remove", "1", "--out", str(tmp_path / "out")] if command == "prune" else []
        status = main([command, "--weights", str(checkpoint), *extra])
        one_line(status, capsys.readouterr().err, "never runs from a file", "--dataset")
        assert not marker.exists()


def test_a_dataset_named_on_the_command_line_may_still_be_code(checkpoint, tmp_path, monkeypatch, capsys):
    (tmp_path / "mydata.py").write_text(textwrap.dedent("""
        import numpy as np
        def load():
            rng = np.random.default_rng(0)
            return rng.normal(size=(30, 1, 28, 28)).astype("float32"), np.arange(30) % 3
    """))
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--weights", str(checkpoint), "--dataset", "mydata:load"]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_a_stray_module_in_the_working_directory_shadows_nothing(tmp_path, blobs):
    marker = tmp_path / "shadowed.txt"
    for name in ("matplotlib", "scipy", "safetensors"):
        (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write({name!r})\n")
    (tmp_path / "user_model.py").write_text(
        "from torch import nn\ndef build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.ReLU(), nn.Linear(8, 3))\n")
    proc = subprocess.run([str(LAYERMOD), "curve", "--model", "user_model:build", "--dataset", str(blobs),
                           "--n-per-class", "5", "--repeats", "2", "--views", "1", "--quiet", "--out", "run"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists(), marker.read_text()
    assert (tmp_path / "run" / "curve.png").is_file()


def test_a_model_function_that_raises_is_one_line(tmp_path, blobs, capsys):
    (tmp_path / "broken.py").write_text("def build():\n    raise RuntimeError('no weights for this size')\n")
    (tmp_path / "syntax.py").write_text("def build(:\n")
    for spec, message in ((f"{tmp_path / 'broken.py'}:build", "raised RuntimeError: no weights for this size"),
                          (f"{tmp_path / 'syntax.py'}:build", "raised SyntaxError")):
        status = main(["curve", "--model", spec, "--dataset", str(blobs), "--out", str(tmp_path / "out")])
        one_line(status, capsys.readouterr().err, message)
    assert not (tmp_path / "out").exists()


def test_options_asking_for_a_model_larger_than_its_weights_are_refused_unbuilt(tmp_path, capsys):
    """Plain safetensors weights (no sidecar) of a small model, and options that would build a 64x wider one."""
    from safetensors.torch import save_file

    weights = tmp_path / "plain.safetensors"
    save_file(models.create("smallcnn", num_classes=10, in_channels=1, width=0.25).state_dict(), str(weights))
    with memory_limit(256 * MiB):
        status = main(["layers", "--model", "smallcnn", "--width", "64", "--weights", str(weights),
                       "--input-shape", "1,28,28"])
    one_line(status, capsys.readouterr().err, "do not match the model", "shape mismatch")


@pytest.mark.parametrize("argv, message", [
    (["layers", "--model", "mlp", "--input-shape", "1,100000,100000"], "values per input"),
    (["layers", "--model", "mlp", "--input-shape", "1,-4"], "at least 1"),
    (["layers", "--model", "mlp", "--input-shape", "1,x"], "cannot read"),
    (["curve", "--model", "mlp", "--dataset", "digits", "--null", "-3", "--out", "o"], "at least 2"),
    (["curve", "--model", "mlp", "--dataset", "digits", "--null", "1", "--out", "o"], "at least 2"),
    (["curve", "--model", "mlp", "--dataset", "digits", "--repeats", "1000000000", "--out", "o"], "lower repeats"),
    (["curve", "--model", "mlp", "--dataset", "digits", "--null", "1000000000", "--out", "o"], "is more than"),
    (["curve", "--model", "mlp", "--dataset", "digits", "--sketch-dim", "1000000000", "--out", "o"], "16,384"),
    (["curve", "--model", "mlp", "--dataset", "digits", "--resolution", "1e308", "--out", "o"], "<= 10000"),
    # pruning reads the train and test splits itself: a --split would be ignored, so it is no option there
    (["prune", "--weights", "w.safetensors", "--remove", "1", "--split", "train", "--out", "o"], "--split"),
    (["prune-study", "--weights", "w.safetensors", "--split", "train", "--out", "o"], "--split"),
])
def test_bad_options_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("extra, fragments", [
    (["--repeats", "5000000", "--n-per-class", "7"], ["sample indices", "lower repeats or n_per_class"]),
    (["--repeats", "100000", "--null", "1000"], ["Q values", "lower null_permutations or repeats"]),
    (["--sketch-dim", "16000", "--max-memory", "1M"], ["sketch_dim=16000", "max_bytes="]),
    (["--max-memory", "12"], ["max_bytes=12 is below", "smallest block"]),
    (["--max-memory", "999999T"], ["more than this machine's memory"]),
])
def test_options_too_large_together_are_one_line_before_any_work(tmp_path, blobs, extra, fragments, capsys):
    with memory_limit(1024 * MiB):
        status = main(["curve", "--model", "mlp", "--num-classes", "3", "--width", "0.25", "--dataset", str(blobs),
                       "--n-per-class", "6", "--quiet", *extra, "--out", str(tmp_path / "out")])
    one_line(status, capsys.readouterr().err, *fragments)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("device, why", [("meta", "the CPU or a CUDA device"), ("mps", "the CPU or a CUDA device"),
                                         ("cuda:99", "CUDA"), ("nonsense", "not a device name")])
def test_a_device_layermod_cannot_run_on_is_one_short_line(tmp_path, blobs, device, why, capsys):
    status = main(["curve", "--model", "mlp", "--num-classes", "3", "--width", "0.25", "--dataset", str(blobs),
                   "--n-per-class", "6", "--quiet", "--device", device, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    one_line(status, err, f"cannot use device {device!r}", why, "this machine has cpu", "pass --device cpu")
    assert len(err) < 300 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_split_given_for_a_dataset_without_splits_is_one_line(tmp_path, blobs, split, capsys):
    """A .npz holds one set of samples: --split would be ignored, so it is refused, even --split test."""
    for command in (["curve", "--out", str(tmp_path / "out")], ["layers"]):
        status = main([command[0], "--model", "mlp", "--num-classes", "3", "--width", "0.25", "--dataset", str(blobs),
                       "--split", split, *command[1:]])
        one_line(status, capsys.readouterr().err, f"--split {split}", "has no splits", "leave out --split")
    assert not (tmp_path / "out").exists()


def test_ctrl_c_while_starting_is_one_line(tmp_path):
    """SIGINT while torch is still loading ends with the command's own line and status 130."""
    code = ("import os, signal, threading\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if started ignoring it\n"
            "threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()\n"
            "from layermod.cli import main\n"
            "raise SystemExit(main(['models']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "layermod: interrupted"


def curve_run(tmp_path: Path, blobs: Path, name: str, *extra: str) -> Path:
    out = tmp_path / name
    assert main(["curve", "--model", "mlp", "--num-classes", "3", "--width", "0.25", "--dataset", str(blobs),
                 "--n-per-class", "6", "--repeats", "3", "--null", "3", "--views", "1", "--quiet", "--seed", "7",
                 *extra, "--out", str(out)]) == 0
    return out


def same_bytes(a: Path, b: Path, names: list[str]) -> None:
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_curve_of_an_untrained_builtin_model_is_the_same_twice(tmp_path, blobs):
    """The untrained model's weights come from --seed, so two runs agree byte for byte, and another seed differs."""
    first, second = curve_run(tmp_path, blobs, "a"), curve_run(tmp_path, blobs, "b")
    same_bytes(first, second, ["curve.json", "curve.csv", "curve.png", "embedding.json"])
    assert json.loads((first / "curve.json").read_text())["config"]["seed"] == 7
    other = tmp_path / "c"
    assert main(["curve", "--model", "mlp", "--num-classes", "3", "--width", "0.25", "--dataset", str(blobs),
                 "--n-per-class", "6", "--repeats", "3", "--null", "3", "--views", "0", "--quiet", "--seed", "8",
                 "--out", str(other)]) == 0
    assert json.loads((other / "curve.json").read_text())["values"] != json.loads((first / "curve.json").read_text())["values"]


def test_a_negative_seed_is_a_seed(tmp_path, blobs):
    out = curve_run(tmp_path, blobs, "negative", "--seed", "-1")
    curve = json.loads((out / "curve.json").read_text())
    assert curve["config"]["seed"] == -1 and len(curve["values"]) == 3


def test_a_seed_of_any_size_is_a_seed(tmp_path, blobs):
    """--seed 10**30 seeds the untrained model's weights (torch) as well as the draws (numpy)."""
    out = curve_run(tmp_path, blobs, "huge", "--seed", str(10**30))
    curve = json.loads((out / "curve.json").read_text())
    assert curve["config"]["seed"] == 10**30 and len(curve["values"]) == 3


def test_attack_is_the_same_twice(tmp_path, checkpoint):
    data = tmp_path / "digits.npz"
    rng = np.random.default_rng(0)
    np.savez(data, X=rng.uniform(size=(90, 1, 28, 28)).astype(np.float32), y=np.arange(90) % 3)
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["attack", "--weights", str(checkpoint), "--dataset", str(data), "--method", "fgsm", "--eps", "0.3",
                     "--keep", "all", "--n-per-class", "5", "--repeats", "2", "--quiet", "--out", str(out)]) == 0
        runs.append(out)
    same_bytes(*runs, ["attack.json", "attack.csv", "attack.png"])


def test_prune_is_the_same_twice_apart_from_latency(tmp_path, resnet20_checkpoint):
    weights, data = resnet20_checkpoint
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["prune", "--weights", str(weights), "--data-dir", str(data), "--n-per-class", "4",
                     "--repeats", "2", "--remove", "1", "--methods", "none,modularity,random", "--seeds", "1",
                     "--finetune-subset", "50", "--quiet", "--out", str(out)]) == 0
        runs.append(out)
    same_bytes(*runs, ["plan.json", "pruned.safetensors", "pruned.json"])
    rows = [json.loads((out / "comparison.json").read_text())["rows"] for out in runs]
    for row_a, row_b in zip(*rows):
        row_a.pop("latency_ms"), row_b.pop("latency_ms")
        assert row_a == row_b


def test_train_is_the_same_twice(tmp_path):
    data = tmp_path / "fm"
    write_mnist_like(data, n_train=60, n_test=40)
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["train", "--model", "mlp", "--width", "0.25", "--dataset", "fashion-mnist", "--data-dir", str(data),
                     "--epochs", "2", "--batch-size", "16", "--quiet", "--out", str(out)]) == 0
        runs.append(out)
    same_bytes(*runs, ["best.safetensors", "last.safetensors"])
    for name in ("best.json", "last.json"):
        sidecars = [json.loads((out / name).read_text()) for out in runs]
        for meta in sidecars:
            for row in meta.get("history", []):
                row.pop("seconds", None)
        assert sidecars[0] == sidecars[1], name


def snapshot(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())} if directory.exists() else {}


def killed_after(commits: int, argv: list[str], exchange: bool) -> int:
    """Run ``main(argv)`` in a forked child that dies (as by kill -9) right after its ``commits``-th file or
    directory is committed; returns the child's exit status (0 when it finished first)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns to pytest
        seen = []

        def die(path: Path) -> None:
            seen.append(path)
            if len(seen) == commits:
                os._exit(137)

        files.after_commit = die
        if not exchange:
            runs._exchange = lambda a, b: False
        try:
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                os._exit(main(argv))
        finally:
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.parametrize("exchange", [True, False], ids=["swap", "two-renames"])
def test_a_run_killed_at_any_commit_leaves_the_old_run_or_the_new_one(tmp_path, blobs, exchange):
    """Killed after every file and directory it commits, a rerun leaves its directory exactly the old run or
    exactly the new one (an old run's views gone with it); the next run tidies what the killed one left."""
    old = snapshot(curve_run(tmp_path, blobs, "old", "--seed", "1"))
    argv = ["curve", "--model", "mlp", "--num-classes", "3", "--width", "0.25", "--dataset", str(blobs),
            "--n-per-class", "6", "--repeats", "2", "--views", "0", "--quiet", "--seed", "2"]
    assert main([*argv, "--out", str(tmp_path / "new")]) == 0
    new = snapshot(tmp_path / "new")
    assert "embedding.json" in old and "embedding.json" not in new and "run.json" in new
    out = tmp_path / "runs" / "r"
    outcomes = []
    for commits in range(1, 8):
        shutil.rmtree(out.parent, ignore_errors=True)
        shutil.copytree(tmp_path / "old", out)
        status = killed_after(commits, [*argv, "--out", str(out)], exchange)
        after = snapshot(out) or snapshot(next(out.parent.glob(".r.layermod-stage-*-old"), out))
        runs.recover(out)  # what the next run into the directory does first
        assert snapshot(out) == after, commits
        assert after in (old, new), (commits, sorted(after))
        assert [path.name for path in out.parent.iterdir()] == ["r"], commits
        outcomes.append((status, "new" if after == new else "old"))
        if status == 0:
            break
    assert outcomes[0] == (137, "old") and outcomes[-1] == (0, "new"), outcomes
    assert (137, "new") in outcomes  # killed after the swap, before the old run was deleted


def test_a_directory_holding_other_files_is_not_replaced(tmp_path, blobs, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    status = main(["curve", "--model", "mlp", "--num-classes", "3", "--dataset", str(blobs), "--quiet",
                   "--out", str(out)])
    one_line(status, capsys.readouterr().err, "notes.txt", "choose another --out")
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("change", ["foreign", "edited"])
def test_report_refuses_a_run_directory_whose_files_come_from_different_runs(tmp_path, blobs, capsys, change):
    first, second = curve_run(tmp_path, blobs, "a"), curve_run(tmp_path, blobs, "b", "--seed", "8")
    if change == "foreign":
        shutil.copy(second / "embedding.json", first / "embedding.json")
    else:
        (first / "curve.json").write_text((first / "curve.json").read_text().replace('"seed": 7', '"seed": 9'))
    capsys.readouterr()
    status = main(["report", str(first), "--out", str(tmp_path / "r.html")])
    one_line(status, capsys.readouterr().err, "run.json")
    assert not (tmp_path / "r.html").exists()


def test_report_refuses_views_and_a_curve_of_different_runs_without_a_run_record(tmp_path, blobs, capsys):
    first, second = curve_run(tmp_path, blobs, "a"), curve_run(tmp_path, blobs, "b", "--seed", "8")
    shutil.copy(second / "embedding.json", first / "embedding.json")
    (first / "run.json").unlink()  # as written by the API's save() or an older layermod
    capsys.readouterr()
    status = main(["report", str(first), "--out", str(tmp_path / "r.html")])
    one_line(status, capsys.readouterr().err, "different runs", "seed 8 vs 7")


def test_an_empty_out_is_refused(blobs, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["curve", "--model", "mlp", "--dataset", str(blobs), "--out", ""])
    assert exit_.value.code == 2 and "empty path" in capsys.readouterr().err


@pytest.mark.parametrize("signum, status, line", [(signal.SIGTERM, 143, "layermod: terminated"),
                                                  (signal.SIGINT, 130, "layermod: interrupted")])
def test_a_signal_while_features_spill_to_disk_leaves_no_temporary_file(tmp_path, blobs, signum, status, line):
    """Stopped while a layer's features are being written to a temporary file, the curve deletes the file and its
    folder, and leaves no run directory."""
    temp = tmp_path / "temp"
    temp.mkdir()
    code = textwrap.dedent(f"""
        import os, signal, sys
        import numpy as np
        signal.signal(signal.SIGINT, signal.default_int_handler)
        open_memmap = np.lib.format.open_memmap

        def open_then_signal(*args, **kwargs):
            stored = open_memmap(*args, **kwargs)
            os.kill(os.getpid(), {int(signum)})
            return stored

        np.lib.format.open_memmap = open_then_signal
        from layermod.cli import main
        sys.exit(main(sys.argv[1:]))
        """)
    argv = ["curve", "--model", "mlp", "--num-classes", "3", "--width", "0.25", "--dataset", str(blobs),
            "--n-per-class", "6", "--repeats", "2", "--views", "0", "--max-memory", "1K", "--quiet",
            "--out", str(tmp_path / "out")]
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TMPDIR": str(temp)})
    assert proc.returncode == status, proc.stderr
    assert proc.stderr.strip() == line
    assert list(temp.iterdir()) == [] and not (tmp_path / "out").exists()
    assert [path.name for path in tmp_path.iterdir()] == ["blobs.npz", "temp"]
