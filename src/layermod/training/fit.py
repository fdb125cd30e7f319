"""A training run on disk: checkpoints and metrics every epoch, exact resume, optional curve tracking.

The decisions behind it: docs/design.md, section layermod.training.fit.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import json
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from layermod.models.checkpoint import load_companion, load_weights, read_sidecar, save_checkpoint, settle
from layermod.analysis.dynamics import Dynamics, TrackConfig
from layermod.errors import OutputError, TrainError, WeightsError
from layermod.io.files import atomic_path, ensure_writable_dir
from layermod.io.rundir import (
    BEST,
    DYNAMICS_JSON,
    DYNAMICS_PNG,
    LAST,
    METRICS_CSV,
    OPTIMIZER,
    SIDECAR_SUFFIX,
    WEIGHTS_SUFFIX,
)
from layermod.training.tracker import CurveTracker
from layermod.training.train import TrainConfig, dataset_length, num_batches, run_epoch, make_optimizer, check_model_fits, evaluate, lr_at

__all__ = ["fit"]

METRICS_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "test_acc", "seconds")
_RUN_KEYS = frozenset({
    "training", "tracking", "seed", "torch_threads", "epoch", "accuracy", "best_epoch", "best_accuracy", "history",
    "weights_sha256", "files_sha256", "optimizer_sha256", "format", "version",
})
_FREE_META = frozenset({"data_dir", "device"})
_FREE_TRAINING = frozenset({"epochs", "num_workers"})
_UNSET = object()
_LOGGED = ("train_loss", "train_acc", "test_acc")
_MOMENTUM = "momentum_buffer"  # SGD's state, saved under the parameter's name alone


def fit(
    model: nn.Module,
    train_data: Dataset,
    test_data: Dataset,
    config: TrainConfig,
    out: str | Path,
    *,
    meta: dict | None = None,
    track: TrackConfig | None = None,
    resume: bool = False,
    progress: bool | str = "auto",
    log: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict]:
    """Train ``model`` as a run in ``out``: checkpoints and metrics every epoch, resumable (see docs/design.md).

    Args:
        model: the classifier, freshly initialised (or any weights: resuming replaces them), on its device.
        train_data, test_data: datasets of ``(x, y)`` pairs; ``test_data`` is evaluated after every epoch and is
            where the tracking probe is drawn from.
        config: see :class:`TrainConfig`; validated first.
        out: the run directory, created when the first files are written.
        meta: JSON-serialisable description written into every sidecar and compared on resume. For
            :func:`~layermod.models.checkpoint.load_checkpoint` to rebuild the model it holds ``"arch"`` and
            ``"arch_args"``; the CLI adds the dataset, normalisation, subset and sizes.
        track: measure the modularity curve on a fixed test probe at epoch 0, every ``track.every`` epochs and at
            the last epoch, into ``dynamics.json`` / ``dynamics.png``; ``None``: no tracking.
        resume: continue the run saved in ``out``.
        progress: progress bars and one line per epoch.
        log: called as ``log(epoch, scalars)`` once per epoch trained, before the epoch's files are committed,
            with ``lr``, ``train_loss``, ``train_acc``, ``test_acc`` and, at tracked epochs,
            ``modularity/<layer>`` (mean Q, see :class:`~layermod.training.tracker.CurveTracker`); with tracking
            also at epoch 0 (``test_acc`` and the curve) of a new run. A logger for TensorBoard, say.

    Returns:
        Every epoch's row so far (resumed ones included): ``{"epoch", "lr", "train_loss", "train_acc",
        "test_acc", "seconds"}``. The model holds the last epoch's weights, in eval mode.

    Raises:
        TrainError: bad config, a schedule that does not fit, a model that does not fit the data, ``out``
            already holding a run (without ``resume``), nothing to resume, or settings differing from the saved
            run (one line naming them).
    """
    saved, meta, tracking = _check_run(model, train_data, test_data, config, Path(out), meta=meta, track=track,
                                       resume=resume)
    out = Path(out)
    _tidy(out)
    steps = num_batches(dataset_length(train_data, "training data"), config.batch_size)
    optimizer = make_optimizer(model, config)
    tracker = None
    if track is not None:
        tracker = CurveTracker(test_data, track=track, dataset=meta.get("test_dataset", meta.get("dataset")))
    history, best = _begin(model, optimizer, test_data, out, saved, tracker=tracker, log=log, progress=progress)
    done = history[-1]["epoch"] if history else 0
    for epoch in range(done + 1, config.epochs + 1):
        lr = lr_at((epoch - 1) * steps, steps * config.epochs, config)
        row = run_epoch(model, train_data, test_data, optimizer, config, epoch, steps, progress)
        history.append({"epoch": epoch, "lr": lr, **row})
        tracked = tracker is not None and tracker.should_measure(epoch, last_epoch=config.epochs)
        scalars = {key: row[key] for key in _LOGGED}
        if tracked:
            scalars.update(tracker.scalars(tracker.measure(model, epoch, accuracy=row["test_acc"])))
        _log(log, epoch, {"lr": lr, **scalars})
        improved = best is None or row["test_acc"] > best[1]
        if improved:
            best = (epoch, row["test_acc"])
        sidecar = {**meta, "training": config.to_dict(), "tracking": tracking, "seed": config.seed,
                   "torch_threads": torch.get_num_threads(), "epoch": epoch, "accuracy": row["test_acc"],
                   "best_epoch": best[0], "best_accuracy": best[1], "history": history}
        _commit_epoch(model, optimizer, out, sidecar, best=improved, tracker=tracker if tracked else None)
    model.eval()
    return history


def _check_run(model: nn.Module, train_data: Dataset, test_data: Dataset, config: TrainConfig, out: Path, *,
               meta: dict | None, track: TrackConfig | None, resume: bool) -> tuple[dict | None, dict, dict | None]:
    """(the saved run's last sidecar or None, ``meta`` as plain JSON, the tracking settings) once the settings,
    the data and the model are checked, and a resumed run's settings are the saved ones."""
    config.validate()
    if track is not None:
        track.validate()
    dataset_length(train_data, "training data")
    dataset_length(test_data, "test data")
    meta = _plain_meta(meta)
    tracking = track.to_dict() if track is not None else None
    saved = _saved_run(out, resume)
    if saved is not None:
        differences = _differences(_settings(saved), _settings({**meta, "training": config.to_dict(),
                                                                "tracking": tracking}))
        if differences:
            raise TrainError(f"cannot resume {out}: the settings differ from the saved run ({'; '.join(differences)}); "
                             "repeat the saved settings (only epochs may change) or choose another output directory")
    check_model_fits(model, train_data, what="the training data")
    check_model_fits(model, test_data, what="the test data")
    return saved, meta, tracking


def _begin(model: nn.Module, optimizer: torch.optim.Optimizer, test_data: Dataset, out: Path, saved: dict | None, *,
           tracker: CurveTracker | None, log: Callable[[int, dict[str, float]], None] | None,
           progress: bool | str) -> tuple[list[dict], tuple | None]:
    """(history, (best epoch, its accuracy)) to go on from: the saved run's, restored into ``model`` and
    ``optimizer``, or a new run's (with tracking, its epoch 0 measured and saved)."""
    if saved is not None:
        history, best = _restore(model, optimizer, out, saved)
        if tracker is not None:
            tracker.resume(Dynamics.load(out), history[-1]["epoch"])
        _write_metrics(out / METRICS_CSV, history)
        if progress:
            tqdm.write(f"resuming {out} after epoch {history[-1]['epoch']}")
        return history, best
    if tracker is not None:
        curve = tracker.measure(model, 0, accuracy=evaluate(model, test_data))
        _log(log, 0, {"test_acc": tracker.dynamics.test_acc[0], **tracker.scalars(curve)})
    ensure_writable_dir(out)
    if tracker is not None:
        tracker.save(out)
    return [], None


def _commit_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, out: Path, sidecar: dict, *, best: bool,
                  tracker: CurveTracker | None) -> None:
    """The epoch's files as one step, interrupts held: best.* when it is the best, the tracker's dynamics when
    given, last.* and metrics.csv."""
    with _interrupts_held():
        if best:
            save_checkpoint(model, out / (BEST + WEIGHTS_SUFFIX), sidecar)
        if tracker is not None:
            tracker.save(out)
        _save_last(model, optimizer, out, sidecar)
        _write_metrics(out / METRICS_CSV, sidecar["history"])


def _log(log: Callable[[int, dict[str, float]], None] | None, epoch: int, scalars: dict) -> None:
    if log is not None:
        log(epoch, {key: float(value) for key, value in scalars.items()})


def _plain_meta(meta: dict | None) -> dict:
    """``meta`` as plain JSON values (tuples become lists), checked not to use the keys :func:`fit` writes."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise TrainError(f"meta must be a dict, got {type(meta).__name__}")
    taken = sorted(set(meta) & _RUN_KEYS)
    if taken:
        raise TrainError(f"meta keys {', '.join(taken)} are written by fit itself; rename them")
    try:
        return json.loads(json.dumps(meta, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise TrainError(f"meta is not JSON-serialisable ({err}); pass plain numbers, strings, lists and dicts") from None


def _saved_run(out: Path, resume: bool) -> dict | None:
    """The sidecar of ``out/last`` when resuming; refuses a fresh run into a run directory."""
    sidecar = out / (LAST + SIDECAR_SUFFIX)
    if not resume:
        if sidecar.exists():
            raise TrainError(f"{out} already holds a training run ({sidecar.name}); continue it with "
                             "resume=True or choose another output directory")
        return None
    if not sidecar.is_file():
        raise TrainError(f"nothing to resume in {out} (no {sidecar.name}); start the run without resume=True")
    saved = read_sidecar(out / (LAST + WEIGHTS_SUFFIX))
    needed = ["training", "epoch", "history", "best_epoch", "best_accuracy"]
    if saved["version"] == 1:
        needed += ["weights_sha256", "optimizer_sha256"]
    missing = [key for key in needed if key not in saved]
    if missing or not saved["history"]:
        raise TrainError(f"{sidecar} is not a training run's checkpoint (no {', '.join(missing) or 'history'}); "
                         "start a new run in another directory")
    return saved


def _settings(sidecar: Mapping) -> dict:
    """What must be equal to resume: the meta (less the free keys), training (less epochs, workers), tracking."""
    settings = {k: v for k, v in sidecar.items() if k not in _RUN_KEYS and k not in _FREE_META}
    training = {"optimizer": "sgd", **(sidecar.get("training") or {})}  # runs saved before AdamW were SGD's
    settings["training"] = {k: v for k, v in training.items() if k not in _FREE_TRAINING}
    settings["tracking"] = sidecar.get("tracking")
    return settings


def _differences(saved: Mapping, current: Mapping, prefix: str = "") -> list[str]:
    """``"name saved -> current"`` for every differing entry, nested dicts by dotted name."""
    out = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key, _UNSET), current.get(key, _UNSET)
        if isinstance(old, dict) and isinstance(new, dict):
            out += _differences(old, new, f"{prefix}{key}.")
        elif old != new:
            out.append(f"{prefix}{key} {_show(old)} -> {_show(new)}")
    return out


def _show(value: object) -> str:
    if value is _UNSET:
        return "unset"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _restore(model: nn.Module, optimizer: torch.optim.Optimizer, out: Path, saved: dict) -> tuple[list[dict], tuple]:
    """Load the last weights and optimizer state (digests checked); returns (history, (best epoch, accuracy))."""
    last = out / (LAST + WEIGHTS_SUFFIX)
    try:
        load_weights(model, last)
        buffers = load_companion(last, OPTIMIZER)
    except WeightsError as err:
        raise TrainError(f"cannot resume {out}: {err}") from None
    if saved["version"] == 1 and (_tensor_digest(model.state_dict()), _tensor_digest(buffers)) != (
            saved["weights_sha256"], saved["optimizer_sha256"]):
        raise TrainError(f"cannot resume {out}: {LAST}{WEIGHTS_SUFFIX} or {OPTIMIZER} does not belong to "
                         f"{LAST}{SIDECAR_SUFFIX} (the run was stopped while saving); start a new run in another "
                         "directory")
    params = dict(model.named_parameters())
    index = {name: i for i, name in enumerate(params)}
    state = optimizer.state_dict()
    state["state"] = {}
    for key, tensor in buffers.items():
        name, _, entry = key.rpartition(":") if ":" in key else (key, "", _MOMENTUM)
        state["state"].setdefault(index[name], {})[entry] = tensor
    optimizer.load_state_dict(state)  # casts to each parameter's dtype and device
    return list(saved["history"]), (saved["best_epoch"], saved["best_accuracy"])


def _optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's state tensors on the CPU by parameter name (see docs/design.md; parameters without state
    are left out)."""
    tensors = {}
    for name, param in model.named_parameters():
        for entry, value in optimizer.state.get(param, {}).items():
            if isinstance(value, torch.Tensor):
                key = name if entry == _MOMENTUM else f"{name}:{entry}"
                tensors[key] = value.detach().to("cpu").contiguous()
    return tensors


def _save_last(model: nn.Module, optimizer: torch.optim.Optimizer, out: Path, sidecar: dict) -> None:
    """last.safetensors with the optimizer's state as its companion, committed by last.json."""
    save_checkpoint(model, out / (LAST + WEIGHTS_SUFFIX), sidecar,
                    companions={OPTIMIZER: _optimizer_state(model, optimizer)})


def _tidy(out: Path) -> None:
    """Settle interrupted checkpoint saves in ``out`` and delete stale temporaries of metrics.csv and dynamics.*
    (what a process killed while writing them leaves)."""
    settle(out / (LAST + WEIGHTS_SUFFIX), companions=[OPTIMIZER])
    settle(out / (BEST + WEIGHTS_SUFFIX))
    for name in (METRICS_CSV, DYNAMICS_JSON, DYNAMICS_PNG):
        for stale in glob.glob(glob.escape(str(out / f".{name}")) + ".*.tmp"):
            try:
                Path(stale).unlink(missing_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot delete {stale}: {exc.strerror or exc}; check that {out} is "
                                  "writable") from None


def _tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of ``tensors``: the digests of version-1 run sidecars."""
    sha = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        sha.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        sha.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return sha.hexdigest()


def _write_metrics(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(METRICS_COLUMNS)
        for row in history:
            writer.writerow([row[column] for column in METRICS_COLUMNS])


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the block runs, then deliver the first one that arrived (main thread only;
    elsewhere signals cannot be caught and the block runs as is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: caught.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if caught:
            signal.raise_signal(caught[0])
