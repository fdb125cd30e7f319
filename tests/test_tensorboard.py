"""`layermod train --tensorboard DIR`: the event files hold what dynamics.json and metrics.csv hold, each epoch
once even across an interrupted and resumed run; without the package, one line."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

import layermod.training.fit as F
from layermod.analysis.dynamics import Dynamics
from layermod.cli import main

from test_callbacks import assert_events_match, modularity_events, tensorboard_scalars
from test_train_run import base, data, fails  # noqa: F401  (data is a fixture)

TRACKED = ("--epochs", "3", "--track-every", "2", "--probe-per-class", "4", "--probe-repeats", "2")


def metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def assert_events_are_the_run(events: dict, run: Path) -> None:
    dynamics = Dynamics.load(run)
    assert_events_match(modularity_events(events), dynamics, dynamics.epochs)
    rows = metrics(run)
    for column in ("lr", "train_loss", "train_acc"):
        assert events[column] == [(int(r["epoch"]), pytest.approx(r[column], rel=1e-6)) for r in rows], column
    assert events["test_acc"][0] == (0, pytest.approx(dynamics.test_acc[0], rel=1e-6))  # before training
    assert events["test_acc"][1:] == [(int(r["epoch"]), pytest.approx(r["test_acc"], rel=1e-6)) for r in rows]


def test_train_writes_the_curve_and_metrics_as_tensorboard_events(tmp_path, data, capsys):
    run, board = tmp_path / "run", tmp_path / "board"
    assert main([*base(data, *TRACKED), "--out", str(run), "--tensorboard", str(board)]) == 0
    assert f"TensorBoard events in {board}" in capsys.readouterr().out
    events = tensorboard_scalars(board)
    assert sorted(events) == sorted(["lr", "train_loss", "train_acc", "test_acc",
                                     *(f"modularity/{name}" for name in Dynamics.load(run).layers)])
    assert [step for step, _ in events[f"modularity/{Dynamics.load(run).layers[0]}"]] == [0, 2, 3]
    assert_events_are_the_run(events, run)


def test_a_resumed_run_shows_every_epoch_once(tmp_path, data, monkeypatch):
    """Epoch 2 is logged and then interrupted before it is committed; the resumed run trains it again, and
    TensorBoard (purge_step) keeps only the second time, equal to an uninterrupted run's."""
    args = base(data, "--epochs", "3", "--track-every", "1", "--probe-per-class", "4", "--probe-repeats", "2")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main([*args, "--out", str(whole), "--tensorboard", str(tmp_path / "whole-board")]) == 0

    original = F._save_last

    def interrupted_at_epoch_2(model, optimizer, out, sidecar):
        if sidecar["epoch"] == 2:
            raise KeyboardInterrupt
        original(model, optimizer, out, sidecar)

    monkeypatch.setattr(F, "_save_last", interrupted_at_epoch_2)
    board = tmp_path / "board"
    assert main([*args, "--out", str(cut), "--tensorboard", str(board)]) == 130
    monkeypatch.setattr(F, "_save_last", original)
    first = tensorboard_scalars(board)
    assert [step for step, _ in first["train_loss"]] == [1, 2]  # epoch 2 was logged, not committed

    assert main([*args, "--out", str(cut), "--tensorboard", str(board), "--resume"]) == 0
    events = tensorboard_scalars(board)
    assert [step for step, _ in events["train_loss"]] == [1, 2, 3]
    assert_events_are_the_run(events, cut)
    assert events == tensorboard_scalars(tmp_path / "whole-board")


def test_without_tensorboard_the_command_says_what_to_install(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    run, board = tmp_path / "run", tmp_path / "board"
    fails(capsys, [*base(data, "--epochs", "1"), "--out", str(run), "--tensorboard", str(board)],
          "--tensorboard needs the tensorboard package; pip install 'layermod[tensorboard]'")
    assert not run.exists() and not board.exists()


def test_refused_runs_write_no_events(tmp_path, data, capsys):
    run, board = tmp_path / "run", tmp_path / "board"
    assert main([*base(data, "--epochs", "1"), "--out", str(run)]) == 0
    fails(capsys, [*base(data, "--epochs", "1"), "--out", str(run), "--tensorboard", str(board)],
          "already holds a training run")
    assert not board.exists()
    assert np.isfinite(metrics(run)[0]["test_acc"])


def test_tracking_leaves_the_training_alone(tmp_path, data):
    """The same seed gives the same weights with and without tracking (and TensorBoard events)."""
    from test_train_run import same_tensors

    plain, tracked = tmp_path / "plain", tmp_path / "tracked"
    assert main([*base(data, "--epochs", "2"), "--out", str(plain)]) == 0
    assert main([*base(data, "--epochs", "2", "--track-every", "1", "--probe-per-class", "4"),
                 "--out", str(tracked), "--tensorboard", str(tmp_path / "board")]) == 0
    assert same_tensors(plain / "last.safetensors", tracked / "last.safetensors")
    assert same_tensors(plain / "last-optimizer.safetensors", tracked / "last-optimizer.safetensors")
