"""Training runs on disk: `layermod train` / `eval` end to end, exact resume, refusals, schedules, subsets."""

from __future__ import annotations

import csv
import json
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset, Subset

import layermod.training.fit as F
import layermod.training.train as T
from layermod.training import augment
from layermod import models
from layermod.models.checkpoint import load_checkpoint
from layermod.cli import build_parser, main
from layermod.cli.train import train_config
from layermod.data.arrays import ArrayDataset
from layermod.errors import DatasetError, TrainError
from layermod.training.fit import fit
from layermod.data.draws import balanced_subset
from layermod.training.train import PAPER_RECIPE, TrainConfig, evaluate, lr_at


def blobs(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """4 classes of noisy 1x8x8 images around fixed centres."""
    centres = np.random.default_rng(0).normal(size=(4, 64)) * 1.2
    y = np.repeat(np.arange(4), per_class)
    x = centres[y] + np.random.default_rng(seed).normal(size=(len(y), 64))
    return x.reshape(-1, 1, 8, 8).astype(np.float32), y


@pytest.fixture
def data(tmp_path) -> tuple[Path, Path]:
    """(train.npz with 24 samples per class, test.npz with 12)."""
    paths = []
    for name, per_class, seed in (("train", 24, 1), ("test", 12, 2)):
        x, y = blobs(per_class, seed)
        np.savez(tmp_path / f"{name}.npz", X=x, y=y)
        paths.append(tmp_path / f"{name}.npz")
    return paths[0], paths[1]


def base(data: tuple[Path, Path], *extra: str) -> list[str]:
    train, test = data
    return ["train", "--model", "smallcnn", "--width", "0.25", "--dataset", str(train), "--test-dataset", str(test),
            "--batch-size", "16", "--quiet", *extra]


def metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def sidecar(path: Path) -> dict:
    return json.loads(path.read_text())


def same_tensors(a: Path, b: Path) -> bool:
    ta, tb = load_file(str(a)), load_file(str(b))
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def fails(capsys, args: list[str], *fragments: str) -> str:
    """Run the CLI in-process and check for one error line (exit 2) holding every fragment."""
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("layermod: error:"), err
    for fragment in fragments:
        assert fragment in err, err
    return err


def snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir())}


def test_train_writes_consistent_files_that_eval_and_curve_read(tmp_path, data, capsys):
    run = tmp_path / "run"
    args = base(data, "--epochs", "3", "--track-every", "2", "--probe-per-class", "4", "--probe-repeats", "2")
    assert main([*args, "--out", str(run)]) == 0
    assert "trained epochs 1-3" in capsys.readouterr().out
    assert sorted(p.name for p in run.iterdir()) == [
        "best.json", "best.safetensors", "dynamics.json", "dynamics.png", "last-optimizer.safetensors", "last.json",
        "last.safetensors", "metrics.csv",
    ]  # and no temporary files left behind

    rows = metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert list(rows[0]) == ["epoch", "lr", "train_loss", "train_acc", "test_acc", "seconds"]
    config = TrainConfig(epochs=3, batch_size=16)
    assert [r["lr"] for r in rows] == [lr_at(6 * e, 18, config) for e in range(3)]  # 6 steps per epoch

    last = sidecar(run / "last.json")
    assert last["arch"] == "smallcnn" and last["arch_args"] == {"num_classes": 4, "in_channels": 1, "width": 0.25}
    assert last["epoch"] == 3 and last["accuracy"] == rows[-1]["test_acc"] and last["seed"] == 0
    assert last["training"] == config.to_dict()
    assert last["dataset"] == str(data[0]) and last["test_dataset"] == str(data[1])
    assert last["train_size"] == 96 and last["test_size"] == 48 and last["normalization"] == {}
    assert without_seconds(last["history"]) == without_seconds(rows)
    best = sidecar(run / "best.json")
    accuracies = [r["test_acc"] for r in rows]
    assert best["accuracy"] == best["best_accuracy"] == last["best_accuracy"] == max(accuracies)
    assert best["epoch"] == last["best_epoch"] == 1 + accuracies.index(max(accuracies))
    assert last["accuracy"] > 0.5

    dynamics = sidecar(run / "dynamics.json")
    assert dynamics["epochs"] == [0, 2, 3]
    assert np.array(dynamics["values"]).shape == (3, 2, len(dynamics["layers"])) and len(dynamics["layers"]) == 6
    assert dynamics["test_acc"][1:] == accuracies[1:]
    assert {k: dynamics["config"][k] for k in ("n_per_class", "repeats", "k", "seed", "split", "every")} == {
        "n_per_class": 4, "repeats": 2, "k": 3, "seed": 0, "split": "test", "every": 2}
    assert (run / "dynamics.png").read_bytes()[:4] == b"\x89PNG"

    model, _ = load_checkpoint(run / "last.safetensors")
    x, y = blobs(12, 2)
    assert evaluate(model, ArrayDataset(torch.from_numpy(x), torch.from_numpy(y), list("0123"), "t")) == last["accuracy"]

    assert main(["eval", "--weights", str(run / "last.safetensors"), "--out", str(tmp_path / "ev")]) == 0
    correct = round(last["accuracy"] * 48)
    assert f"accuracy {last['accuracy']:.4f} ({correct}/48)" in capsys.readouterr().out
    assert sidecar(tmp_path / "ev" / "eval.json")["accuracy"] == last["accuracy"]

    best_weights = str(run / "best.safetensors")
    curve = ["curve", "--dataset", str(data[1]), "--n-per-class", "4", "--repeats", "2", "--quiet"]
    assert main([*curve, "--weights", best_weights, "--out", str(tmp_path / "c")]) == 0
    assert sidecar(tmp_path / "c" / "curve.json")["config"]["model"] == "smallcnn"
    out = ["--out", str(tmp_path / "refused")]
    fails(capsys, [*curve, "--model", "mlp", "--weights", best_weights, *out], "for 'smallcnn', not 'mlp'")
    fails(capsys, [*curve, "--model", "smallcnn", "--num-classes", "5", "--weights", best_weights, *out],
          "saved with num_classes 4 (asked 5)")
    assert not (tmp_path / "refused").exists()


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, data, monkeypatch, capsys):
    args = base(data, "--epochs", "3", "--track-every", "1", "--probe-per-class", "4", "--probe-repeats", "2")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main([*args, "--out", str(whole)]) == 0

    original, calls = T.train_epoch, []

    def interrupted_in_epoch_2(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*a, **kw)

    monkeypatch.setattr(T, "train_epoch", interrupted_in_epoch_2)
    assert main([*args, "--out", str(cut)]) == 130
    assert sidecar(cut / "last.json")["epoch"] == 1 and len(metrics(cut)) == 1
    monkeypatch.setattr(T, "train_epoch", original)

    assert main([*args, "--out", str(cut), "--resume"]) == 0
    assert "trained epochs 2-3" in capsys.readouterr().out
    for name in ("last.safetensors", "last-optimizer.safetensors", "best.safetensors"):
        assert same_tensors(whole / name, cut / name), name
    assert without_seconds(metrics(whole)) == without_seconds(metrics(cut))
    a, b = sidecar(whole / "dynamics.json"), sidecar(cut / "dynamics.json")
    assert a["epochs"] == b["epochs"] == [0, 1, 2, 3] and a["values"] == b["values"] and a["test_acc"] == b["test_acc"]


def test_extending_a_finished_run_equals_the_longer_run(tmp_path, data, capsys):
    args = base(data, "--schedule", "constant")
    longer, extended = tmp_path / "longer", tmp_path / "extended"
    assert main([*args, "--epochs", "2", "--out", str(longer)]) == 0
    assert main([*args, "--epochs", "1", "--out", str(extended)]) == 0
    assert main([*args, "--epochs", "2", "--out", str(extended), "--resume"]) == 0
    assert same_tensors(longer / "last.safetensors", extended / "last.safetensors")
    assert without_seconds(metrics(longer)) == without_seconds(metrics(extended))

    before = snapshot(extended)
    capsys.readouterr()
    assert main([*args, "--epochs", "2", "--out", str(extended), "--resume"]) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert snapshot(extended) == before


def test_resume_refuses_other_settings_and_leaves_the_run_alone(tmp_path, data, capsys):
    run = tmp_path / "run"
    assert main([*base(data, "--epochs", "1"), "--out", str(run)]) == 0
    before = snapshot(run)
    resume = [*base(data, "--epochs", "2"), "--out", str(run), "--resume"]
    fails(capsys, [*base(data, "--epochs", "2"), "--out", str(run)], "already holds a training run", "--resume")
    fails(capsys, [*resume, "--lr", "0.1"], "settings differ", "training.lr 0.05 -> 0.1")
    fails(capsys, [*resume, "--width", "0.5"], "arch_args.width 0.25 -> 0.5")
    fails(capsys, [*resume, "--subset", "40"], "subset null -> 40", "train_size 96 -> 40")
    fails(capsys, [*resume, "--track-every", "1"], "tracking null -> {")
    fails(capsys, [*base(data), "--out", str(tmp_path / "empty"), "--resume"], "nothing to resume")
    assert snapshot(run) == before
    assert not (tmp_path / "empty").exists()


def test_resume_detects_files_from_different_saves(tmp_path, data, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*base(data, "--epochs", "1"), "--out", str(one)]) == 0
    assert main([*base(data, "--epochs", "2"), "--out", str(two)]) == 0
    (one / "last-optimizer.safetensors").write_bytes((two / "last-optimizer.safetensors").read_bytes())
    fails(capsys, [*base(data, "--epochs", "3"), "--out", str(one), "--resume"], "does not belong to last.json")


def test_an_interrupt_while_saving_waits_for_the_epoch_to_be_saved(tmp_path, data, monkeypatch, live_sigint):
    original = F._save_last

    def signalled(*args):
        signal.raise_signal(signal.SIGINT)  # held back until the epoch is saved
        original(*args)

    monkeypatch.setattr(F, "_save_last", signalled)
    x, y = blobs(8, 1)
    dataset = ArrayDataset(torch.from_numpy(x), torch.from_numpy(y), list("0123"), "blobs")
    torch.manual_seed(0)
    model = models.create("smallcnn", num_classes=4, width=0.25)
    with pytest.raises(KeyboardInterrupt):
        fit(model, dataset, dataset, TrainConfig(epochs=2, batch_size=16), tmp_path / "run", progress=False)
    assert sidecar(tmp_path / "run" / "last.json")["epoch"] == 1
    assert [r["epoch"] for r in metrics(tmp_path / "run")] == [1]


@pytest.mark.parametrize(("extra", "fragments"), [
    (["--epochs", "3", "--milestones", "3"], ["milestone 3 does not fit a run of 3 epochs"]),
    (["--paper", "--epochs", "20"], ["milestone 100 does not fit a run of 20 epochs"]),
    (["--epochs", "5", "--milestones", "3,2"], ["strictly increasing"]),
    (["--epochs", "3", "--schedule", "step"], ["needs milestones"]),
    (["--epochs", "3", "--schedule", "cosine", "--milestones", "1"], ["only to the 'step' schedule"]),
    (["--gamma", "2", "--milestones", "1"], ["gamma=2.0", "(0, 1)"]),
])
def test_schedules_that_do_not_fit_are_refused(tmp_path, data, capsys, extra, fragments):
    fails(capsys, [*base(data, *extra), "--out", str(tmp_path / "run")], *fragments)
    assert not (tmp_path / "run").exists()


def test_bad_models_and_data_are_refused(tmp_path, data, capsys):
    out = ["--out", str(tmp_path / "run")]
    train, test = map(str, data)
    fails(capsys, ["train", "--model", "vgg99", "--dataset", train, *out], "vgg99", "vgg19", "smallcnn, vgg11")
    fails(capsys, ["train", "--model", "pkg.mod:build", "--dataset", train, *out], "registered", "smallcnn")
    fails(capsys, ["train", "--model", "smallcnn", "--dataset", train, *out], "no test split", "--test-dataset")
    fails(capsys, [*base(data, "--num-classes", "3"), *out], "labels up to 3", "--num-classes")
    fails(capsys, [*base(data, "--subset", "1000"), *out], "class 0 has 24", "<= 96")
    fails(capsys, ["train", "--model", "mlp", "--dataset", train, "--test-dataset", test, *out], "fails on", "(1, 8, 8)")
    assert not (tmp_path / "run").exists()
    assert main([*base(data, "--epochs", "1", "--model", "mlp", "--arch-arg", "input_size=64", "--arch-arg",
                       "depth=1"), *out]) == 0
    assert sidecar(tmp_path / "run" / "last.json")["arch_args"]["depth"] == 1


def test_step_schedule_subset_and_augmentation(tmp_path, data, monkeypatch):
    seen = []
    original = augment.random_crop_flip

    def spy(batch, **kwargs):
        seen.append((tuple(batch.shape), kwargs["padding"], kwargs["flip"]))
        return original(batch, **kwargs)

    monkeypatch.setattr(augment, "random_crop_flip", spy)
    run = tmp_path / "run"
    extra = ("--epochs", "3", "--milestones", "2", "--lr", "0.1", "--subset", "40", "--augment", "--batch-size", "20")
    assert main([*base(data, *extra), "--out", str(run)]) == 0
    assert [r["lr"] for r in metrics(run)] == pytest.approx([0.1, 0.1, 0.01])
    last = sidecar(run / "last.json")
    assert last["train_size"] == 40 and last["training"]["augment"] is True
    assert last["training"]["schedule"] == "step" and last["training"]["milestones"] == [2]
    assert seen == [((20, 1, 8, 8), 4, True)] * 6  # 2 batches x 3 epochs


def test_lr_at_step_schedule():
    config = TrainConfig(epochs=4, schedule="step", milestones=(1, 3), gamma=0.5, lr=0.8)
    assert [lr_at(s, 8, config) for s in range(8)] == [0.8, 0.8, 0.4, 0.4, 0.4, 0.4, 0.2, 0.2]
    PAPER_RECIPE.validate()
    assert [lr_at(e * 10, 1500, PAPER_RECIPE) for e in (0, 49, 50, 99, 100, 149)] == pytest.approx(
        [0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001])


class Plain(Dataset):
    """Labels only, no ``.targets``: read item by item."""

    def __init__(self, y: np.ndarray) -> None:
        self.y = y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return torch.zeros(1, 4, 4), int(self.y[i])


def test_balanced_subset():
    y = np.array([0] * 10 + [1] * 6 + [2] * 8)
    dataset = ArrayDataset(torch.arange(24.0)[:, None], torch.from_numpy(y), ["a", "b", "c"], "toy",
                           normalization={"mean": [0]})
    subset = balanced_subset(dataset, 14, seed=3)
    assert isinstance(subset, ArrayDataset) and subset.normalization == {"mean": [0]}
    assert np.bincount(subset.targets.numpy()).tolist() == [4, 4, 4]
    assert torch.equal(balanced_subset(dataset, 14, seed=3).data, subset.data)
    assert not torch.equal(balanced_subset(dataset, 14, seed=4).data, subset.data)
    plain = balanced_subset(Plain(y), 9)
    assert isinstance(plain, Subset) and len(plain) == 9
    with pytest.raises(DatasetError, match="class 1 has 6; use a subset size <= 18"):
        balanced_subset(dataset, 21)
    with pytest.raises(DatasetError, match="cannot hold the 3 classes"):
        balanced_subset(dataset, 2)


def test_fit_refuses_reserved_meta_and_bad_config(tmp_path):
    x, y = blobs(4, 0)
    dataset = ArrayDataset(torch.from_numpy(x), torch.from_numpy(y), list("0123"), "blobs")
    model = models.create("smallcnn", num_classes=4, width=0.25)
    with pytest.raises(TrainError, match="meta keys epoch, history are written by fit"):
        fit(model, dataset, dataset, TrainConfig(epochs=1), tmp_path / "a", meta={"epoch": 1, "history": []})
    with pytest.raises(TrainError, match="TrainConfig.augment"):
        fit(model, dataset, dataset, TrainConfig(augment="yes"), tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_train_help_states_both_presets(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Defaults (small, for a CPU): 3 epochs, batch 128, lr 0.05" in text
    assert "--paper (Lu et al. 2022): 150 epochs, batch 256, lr 0.01, momentum 0.9, weight decay 0.005, x0.1 after " \
           "epochs 50,100" in text
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "--weights" in capsys.readouterr().out


def test_presets_flags_and_augmentation_defaults():
    def config(*args: str) -> TrainConfig:
        return train_config(build_parser().parse_args(["train", "--model", "vgg11", "--out", "x", *args]))

    assert config("--dataset", "cifar10", "--paper", "--lr", "0.1") == replace(PAPER_RECIPE, lr=0.1, augment=True)
    paper_cosine = config("--dataset", "fashion-mnist", "--paper", "--schedule", "cosine")
    assert paper_cosine == replace(PAPER_RECIPE, schedule="cosine", milestones=())
    assert config("--dataset", "cifar100", "--no-augment") == TrainConfig()
    assert config("--dataset", "digits", "--milestones", "1", "--epochs", "2") == TrainConfig(
        epochs=2, schedule="step", milestones=(1,))


@pytest.mark.parametrize("threads", [1, 3])
def test_the_sidecars_record_the_torch_thread_count_and_older_ones_still_load(tmp_path, data, threads):
    x, y = blobs(6, 0)
    dataset = ArrayDataset(torch.from_numpy(x), torch.from_numpy(y), list("0123"), "blobs")
    meta = {"arch": "smallcnn", "arch_args": {"num_classes": 4, "in_channels": 1, "width": 0.25}}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fit(models.create("smallcnn", num_classes=4, width=0.25), dataset, dataset, TrainConfig(epochs=1),
            tmp_path / "run", meta=meta, progress=False)
    finally:
        torch.set_num_threads(before)
    for name in ("best.json", "last.json"):
        assert sidecar(tmp_path / "run" / name)["torch_threads"] == threads
    for name in ("best.json", "last.json"):  # a sidecar written before the thread count was recorded
        path = tmp_path / "run" / name
        old = sidecar(path)
        del old["torch_threads"]
        path.write_text(json.dumps(old, sort_keys=True))
    model, meta_read = load_checkpoint(tmp_path / "run" / "best.safetensors")
    assert "torch_threads" not in meta_read and meta_read["arch"] == "smallcnn"
    fit(models.create("smallcnn", num_classes=4, width=0.25), dataset, dataset, TrainConfig(epochs=2),
        tmp_path / "run", meta=meta, resume=True, progress=False)
    assert sidecar(tmp_path / "run" / "last.json")["torch_threads"] == torch.get_num_threads()
    with pytest.raises(TrainError, match="meta keys torch_threads are written by fit"):
        fit(model, dataset, dataset, TrainConfig(epochs=1), tmp_path / "other", meta={"torch_threads": 1})
