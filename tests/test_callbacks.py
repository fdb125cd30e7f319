"""The curve inside other training loops: CurveTracker (the probe, observing without side effects), the Lightning
callback and the Hugging Face Trainer callback, each in a real fit whose TensorBoard events are read back and
matched against its dynamics.json."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from layermod.analysis.curve import modularity_curve
from layermod.analysis.dynamics import Dynamics, TrackConfig
from layermod.errors import LabelError, TrainError
from layermod.measure.config import DrawConfig
from layermod.training.tracker import CurveTracker

PROBE = DrawConfig(n_per_class=4, repeats=2)


def blobs(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """4 classes of noisy 64-dim points around fixed centres: (X (N, 64) float32, y (N,) int64)."""
    centres = np.random.default_rng(0).normal(size=(4, 64)) * 1.2
    y = np.repeat(np.arange(4), per_class)
    x = centres[y] + np.random.default_rng(seed).normal(size=(len(y), 64))
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 16), nn.ReLU(),
                         nn.Linear(16, 4))


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag under ``folder`` (one run) as (step, value) pairs, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = {p.parent for p in folder.rglob("events.out.tfevents.*")}
    assert len(runs) == 1, runs
    events = EventAccumulator(str(runs.pop()), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def modularity_events(scalars: dict, prefix: str = "modularity/") -> dict[str, list[tuple[int, float]]]:
    return {tag[len(prefix):]: values for tag, values in scalars.items() if tag.startswith(prefix)}


def assert_events_match(events: dict[str, list[tuple[int, float]]], dynamics: Dynamics, steps: list[int]) -> None:
    """The events of each layer are the dynamics' mean Q at its epochs (float32 in the event files)."""
    assert sorted(events) == sorted(dynamics.layers)
    for i, layer in enumerate(dynamics.layers):
        assert [step for step, _ in events[layer]] == steps, layer
        np.testing.assert_allclose([value for _, value in events[layer]], dynamics.mean[:, i], rtol=1e-6)


# --- the tracker -------------------------------------------------------------------------------------------------

def test_tracker_measures_what_modularity_curve_measures_on_a_fixed_probe():
    x, y = blobs(12, 2)
    model = mlp()
    tracker = CurveTracker((x, y), track=TrackConfig(draws=PROBE))
    assert len(tracker.probe.indices) == 4 * 4 * 2  # only the drawn samples are kept
    first = tracker.measure(model, 0, accuracy=0.25)
    expected = modularity_curve(model, (x, y), graph=tracker.track.graph, draws=PROBE)
    assert first.layers == expected.layers and np.array_equal(first.values, expected.values)
    tracker.measure(model, 3)
    assert tracker.dynamics.epochs == [0, 3] and np.array_equal(tracker.dynamics.values[0], tracker.dynamics.values[1])
    assert np.isnan(tracker.dynamics.test_acc[1]) and tracker.dynamics.test_acc[0] == 0.25
    assert tracker.scalars(first) == {f"modularity/{name}": float(q) for name, q in zip(first.layers, first.mean)}
    assert list(tracker.scalars(first)) == [f"modularity/{name}" for name in first.layers]


def test_a_shuffling_loader_is_read_once_into_a_fixed_probe():
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(*blobs(12, 2)), batch_size=7, shuffle=True)
    model = mlp()
    tracker = CurveTracker(loader, track=TrackConfig(draws=PROBE))
    measured = [tracker.measure(model, epoch).values for epoch in (0, 1)]
    read_each_time = [modularity_curve(model, loader, draws=PROBE).values for _ in range(2)]
    assert np.array_equal(*measured)
    assert not np.array_equal(*read_each_time)  # what the tracker avoids: each read keeps other samples


def test_tracker_schedule_and_refusals(tmp_path):
    x, y = blobs(12, 2)
    tracker = CurveTracker((x, y), track=TrackConfig(every=3, draws=PROBE))
    assert [e for e in range(8) if tracker.should_measure(e, last_epoch=7)] == [0, 3, 6, 7]
    assert [e for e in range(8) if tracker.should_measure(e)] == [0, 3, 6]
    with pytest.raises(TrainError, match="nothing measured yet"):
        tracker.save(tmp_path)
    model = mlp()
    tracker.measure(model, 3)
    assert not tracker.should_measure(3, last_epoch=7) and not tracker.should_measure(0, last_epoch=7)
    assert tracker.should_measure(6, last_epoch=7)
    with pytest.raises(TrainError, match="not after the last measured epoch 3"):
        tracker.measure(model, 3)
    with pytest.raises(TrainError, match=r"accuracy 1.5 at epoch 6 must be a number in \[0, 1\]"):
        tracker.measure(model, 6, accuracy=1.5)
    with pytest.raises(LabelError, match="n_per_class=20"):  # a probe that cannot be drawn fails up front
        CurveTracker((x, y), track=TrackConfig(draws=DrawConfig(n_per_class=20)))
    with pytest.raises(TrainError, match="every=0"):
        CurveTracker((x, y), track=TrackConfig(every=0))
    assert Dynamics.load(tracker.save(tmp_path)).epochs == [3]


def train_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, tracker: CurveTracker | None) -> None:
    """Three epochs of a loop that draws from the global generators (shuffling, dropout, Python's and NumPy's
    random), measuring between epochs when a tracker is given."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(1, 4):
        model.train()
        for batch in torch.randperm(len(y)).split(16):
            noise = random.random() * np.random.rand()
            loss = F.cross_entropy(model(x[batch] + noise), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if tracker is not None:
            tracker.measure(model, epoch)


def test_tracking_does_not_change_the_training():
    x, y = blobs(24, 1)
    test = blobs(12, 2)
    weights = []
    for tracker in (None, CurveTracker(test, track=TrackConfig(draws=PROBE))):
        torch.manual_seed(5), random.seed(5), np.random.seed(5)
        model = mlp()
        train_steps(model, x, y, tracker)
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_the_model_is_left_in_its_modes():
    model = mlp()
    model.train()
    model[2].eval()  # a frozen dropout inside a training model, as fine-tuning recipes do
    CurveTracker(blobs(12, 2), track=TrackConfig(draws=PROBE)).measure(model, 0)
    assert [m.training for m in model] == [True, True, False, True, True, True] and model.training


def test_the_callback_modules_import_without_their_libraries():
    import subprocess

    code = ("import sys, layermod.training.lightning, layermod.training.hf_trainer; "
            "print(sorted({'lightning', 'transformers'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


@pytest.mark.parametrize("module, missing, package", [("lightning", "lightning.pytorch.callbacks", "lightning"),
                                                      ("hf_trainer", "transformers", "hf")])
def test_a_missing_library_is_one_line(monkeypatch, module, missing, package):
    import importlib

    monkeypatch.setitem(sys.modules, missing, None)  # as if it were not installed
    with pytest.raises(TrainError, match=rf"needs .*; pip install 'layermod\[{package}\]'"):
        importlib.import_module(f"layermod.training.{module}")._build_callback()


# --- Lightning ---------------------------------------------------------------------------------------------------

def lightning_fit(root: Path, epochs: int = 2, ckpt_path: str | None = None, accuracy: str = "val_acc"):
    """The README's Lightning example, on blobs: a fit of 2 epochs with the callback and a TensorBoardLogger."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    from layermod.analysis.dynamics import TrackConfig
    from layermod.measure.config import DrawConfig
    from layermod.training.lightning import ModularityCallback

    class Classifier(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self(x), y)

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_acc", (self(x).argmax(dim=1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    train_set, val_set = TensorDataset(*blobs(24, 1)), TensorDataset(*blobs(12, 2))
    callback = ModularityCallback(val_set, track=TrackConfig(every=1, draws=DrawConfig(n_per_class=4, repeats=2)),
                                  accuracy=accuracy)
    pl.seed_everything(0)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[callback], logger=TensorBoardLogger(root, name="run"),
                         accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=root)
    trainer.fit(Classifier(), DataLoader(train_set, batch_size=16, shuffle=True), DataLoader(val_set, batch_size=48),
                ckpt_path=ckpt_path)
    return trainer, callback


def test_lightning_callback_logs_what_it_writes(tmp_path):
    trainer, callback = lightning_fit(tmp_path)
    run = Path(trainer.log_dir)
    dynamics = Dynamics.load(run)
    assert dynamics.epochs == [0, 1, 2] and dynamics.layers == callback.tracker.dynamics.layers
    assert np.isnan(dynamics.test_acc[0]) and 0 <= dynamics.test_acc[2] <= 1
    assert dynamics.config["split"] == "validation" and dynamics.config["repeats"] == 2
    assert (run / "dynamics.png").read_bytes()[:4] == b"\x89PNG"
    scalars = tensorboard_scalars(run)
    assert_events_match(modularity_events(scalars), dynamics, [0, 1, 2])
    # the accuracy recorded is the module's own logged val_acc of that epoch (Lightning logs it by global step)
    assert [round(v, 6) for _, v in scalars["val_acc"]] == [round(a, 6) for a in dynamics.test_acc[1:]]
    assert not any(p.name.endswith(".tmp") for p in run.iterdir())


def test_lightning_resume_continues_the_dynamics(tmp_path):
    first, _ = lightning_fit(tmp_path, epochs=1)
    before = Dynamics.load(first.log_dir)
    checkpoint = next(Path(first.log_dir).rglob("*.ckpt"))
    resumed, _ = lightning_fit(tmp_path, epochs=3, ckpt_path=str(checkpoint))
    after = Dynamics.load(resumed.log_dir)  # the logger's next version folder
    assert resumed.log_dir != first.log_dir
    assert before.epochs == [0, 1] and after.epochs == [0, 1, 2, 3]
    assert np.array_equal(after.values[:2], before.values)  # carried in the checkpoint, not measured again
    events = modularity_events(tensorboard_scalars(Path(resumed.log_dir)))
    assert all([step for step, _ in values] == [2, 3] for values in events.values())


def test_lightning_callback_refuses_an_accuracy_that_is_not_logged(tmp_path):
    with pytest.raises(TrainError, match="accuracy='val_accuracy'.*logged: val_acc"):
        lightning_fit(tmp_path, epochs=1, accuracy="val_accuracy")


# --- Hugging Face Trainer ----------------------------------------------------------------------------------------

class TokenizedSentences(torch.utils.data.Dataset):
    """The test grammar's sentences as HF-style dict samples: input_ids, attention_mask (10 tokens) and labels."""

    def __init__(self, per_class: int, seed: int):
        from text_data import CLASSES, sentences, word_tokenizer

        texts, names = sentences(per_class, seed)
        self.encoded = word_tokenizer()(texts, padding="max_length", max_length=10, return_tensors="pt")
        self.labels = torch.tensor([CLASSES.index(name) for name in names])
        self.vocabulary_size = len(word_tokenizer())

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.encoded["input_ids"][i], "attention_mask": self.encoded["attention_mask"][i],
                "labels": self.labels[i]}


def hf_trainer(out: Path, train_set, eval_set, eval_strategy: str = "epoch"):
    """A 2-epoch HF Trainer of a 2-layer BERT (hidden 16, random init) reporting to TensorBoard, with the callback."""
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    from layermod.training.hf_trainer import ModularityTrainerCallback

    config = BertConfig(vocab_size=train_set.vocabulary_size, hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=16, pad_token_id=0,
                        num_labels=3)
    torch.manual_seed(0)
    args = TrainingArguments(str(out), num_train_epochs=2, per_device_train_batch_size=8, learning_rate=1e-3,
                             eval_strategy=eval_strategy, save_strategy="epoch", report_to="tensorboard",
                             use_cpu=True, disable_tqdm=True, seed=0)

    def accuracy(prediction) -> dict[str, float]:
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    trainer = Trainer(BertForSequenceClassification(config), args, train_dataset=train_set, eval_dataset=eval_set,
                      compute_metrics=accuracy)
    callback = ModularityTrainerCallback(trainer, eval_set, track=TrackConfig(draws=PROBE), accuracy="eval_accuracy")
    return trainer, callback


@pytest.mark.slow
def test_hf_trainer_callback_logs_what_it_writes(tmp_path):
    train_set, eval_set = TokenizedSentences(16, 0), TokenizedSentences(12, 1)
    trainer, callback = hf_trainer(tmp_path / "out", train_set, eval_set)
    trainer.train()
    dynamics = Dynamics.load(tmp_path / "out")
    assert dynamics.epochs == [0, 1, 2] and dynamics.config["split"] == "eval"
    assert dynamics.layers == ["bert.embeddings", "bert.encoder.layer.0", "bert.encoder.layer.1"]
    steps_per_epoch = 48 // 8
    scalars = tensorboard_scalars(tmp_path / "out")
    assert_events_match(modularity_events(scalars, "eval/modularity/"), dynamics, [0, steps_per_epoch,
                                                                                  2 * steps_per_epoch])
    evaluated = [row["eval_accuracy"] for row in trainer.state.log_history if "eval_accuracy" in row]
    assert np.isnan(dynamics.test_acc[0]) and list(dynamics.test_acc[1:]) == evaluated
    logged = [row for row in trainer.state.log_history if "eval_modularity/bert.embeddings" in row]
    assert [row["epoch"] for row in logged][1:] == [1.0, 2.0]

    trainer.evaluate()  # after training: nothing new to measure
    assert Dynamics.load(tmp_path / "out").epochs == [0, 1, 2]

    # resumed from the first epoch's checkpoint: dynamics.json continues from epoch 1, epoch 2 is measured again
    resumed, _ = hf_trainer(tmp_path / "out", train_set, eval_set)
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / f"checkpoint-{steps_per_epoch}"))
    again = Dynamics.load(tmp_path / "out")
    assert again.epochs == [0, 1, 2] and np.array_equal(again.values[:2], dynamics.values[:2])
    np.testing.assert_allclose(again.values[2], dynamics.values[2], atol=1e-4)  # HF resumes (nearly) exactly


def test_hf_trainer_callback_needs_epoch_evaluations(tmp_path):
    train_set = TokenizedSentences(4, 0)
    trainer, _ = hf_trainer(tmp_path / "out", train_set, train_set, eval_strategy="steps")
    with pytest.raises(TrainError, match="eval_strategy='steps'; set eval_strategy='epoch'"):
        trainer.train()
    assert not (tmp_path / "out" / "dynamics.json").exists()
