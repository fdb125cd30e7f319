"""A Hugging Face ``TrainerCallback`` that tracks the modularity curve of a fixed probe during ``Trainer.train``.

    from layermod.analysis.dynamics import TrackConfig
    from layermod.training.hf_trainer import ModularityTrainerCallback

    trainer = Trainer(model, TrainingArguments(output_dir, eval_strategy="epoch", report_to="tensorboard"), ...)
    ModularityTrainerCallback(trainer, eval_data, track=TrackConfig(every=1), accuracy="eval_accuracy")
    trainer.train()   # output_dir/dynamics.json and dynamics.png; eval/modularity/<layer> in TensorBoard

The decisions behind it: docs/design.md, section layermod.training.hf_trainer.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layermod.analysis.dynamics import Dynamics, TrackConfig
from layermod.errors import TrainError
from layermod.io.rundir import DYNAMICS_JSON
from layermod.training.tracker import CurveTracker, lazy_class

if TYPE_CHECKING:
    from torch import nn
    from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments

    from layermod.data.arrays import Data

__all__ = ["ModularityTrainerCallback"]

LOG_PREFIX = "eval_"


def _build_callback() -> type:
    try:
        from transformers import TrainerCallback
    except ImportError:
        raise TrainError("ModularityTrainerCallback needs transformers; pip install 'layermod[hf]'") from None

    class ModularityTrainerCallback(TrainerCallback):
        """Measure the modularity curve of a fixed probe at the epoch-closing evaluations of ``trainer``, log
        ``eval_modularity/<layer>`` through ``trainer.log`` and write ``dynamics.json`` (see docs/design.md).

        Args:
            trainer: a ``transformers.Trainer``; the callback adds itself to it.
            data: where the probe is drawn from (usually the evaluation set): a torch Dataset of dicts with
                ``labels`` / ``label`` (or of ``(x, y)`` pairs), a DataLoader (read once), or an ``(X, y)`` pair
                with ``X`` a dict of tensors.
            track: how often, which layers, the graph and the draws (default :class:`TrackConfig`'s).
            out: where ``dynamics.json`` / ``dynamics.png`` go (default: ``trainer.args.output_dir``).
            accuracy: key of the evaluation metrics in [0, 1] to record beside the curve (e.g.
                ``"eval_accuracy"``).
            dataset: the data's name, recorded in the dynamics.

        Attributes:
            tracker: the :class:`~layermod.training.tracker.CurveTracker`; ``tracker.dynamics`` holds the
                measurements.
        """

        def __init__(self, trainer: Trainer, data: Data, *, track: TrackConfig | None = None,
                     out: str | os.PathLike | None = None, accuracy: str | None = None,
                     dataset: str | None = None) -> None:
            self.tracker = CurveTracker(data, track=track, dataset=dataset, split="eval")
            self.trainer = trainer
            self.out = Path(out if out is not None else trainer.args.output_dir)
            self.accuracy = accuracy
            trainer.add_callback(self)

        def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, *,
                           model: nn.Module | None = None, **kwargs: Any) -> None:
            _check_strategy(args)
            if not state.is_world_process_zero:
                return
            if state.global_step == 0:
                self._measure(model, state, 0, None)
            elif (self.out / DYNAMICS_JSON).is_file():
                self.tracker.resume(Dynamics.load(self.out), math.floor(state.epoch or 0))

        def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, *,
                        model: nn.Module | None = None, metrics: dict[str, float] | None = None,
                        **kwargs: Any) -> None:
            epoch = round(state.epoch or 0)
            if not state.is_world_process_zero or abs((state.epoch or 0) - epoch) > 1e-9:
                return  # an evaluation inside an epoch
            accuracy = None if self.accuracy is None else _evaluated_accuracy(metrics, self.accuracy)
            self._measure(model, state, epoch, accuracy)

        def _measure(self, model, state, epoch: int, accuracy: float | None) -> None:
            _measure(self.tracker, self.trainer, model, state, epoch, accuracy, out=self.out)

    ModularityTrainerCallback.__module__, ModularityTrainerCallback.__qualname__ = __name__, "ModularityTrainerCallback"
    return ModularityTrainerCallback


def _check_strategy(args: TrainingArguments) -> None:
    """TrainError unless the trainer evaluates at the end of each epoch, where the callback measures."""
    strategy = getattr(args.eval_strategy, "value", args.eval_strategy)
    if strategy != "epoch":
        raise TrainError(f"ModularityTrainerCallback measures at the evaluation closing each epoch, but "
                         f"eval_strategy={strategy!r}; set eval_strategy='epoch' in TrainingArguments")


def _evaluated_accuracy(metrics: dict[str, float] | None, key: str) -> float:
    """The evaluation metric ``key``; TrainError naming the metrics there are."""
    if key not in (metrics or {}):
        raise TrainError(f"ModularityTrainerCallback(accuracy={key!r}): no such evaluation "
                         f"metric (got {', '.join(metrics or {}) or 'none'}); name another")
    return float(metrics[key])


def _measure(tracker: CurveTracker, trainer: Trainer, model: nn.Module, state: TrainerState, epoch: int,
             accuracy: float | None, *, out: Path) -> None:
    """At an epoch ``tracker`` measures: the curve, logged through ``trainer.log`` and saved in ``out``."""
    total = state.num_train_epochs
    last = int(total) if total and float(total).is_integer() else None
    if not tracker.should_measure(epoch, last_epoch=last):
        return
    curve = tracker.measure(model, epoch, accuracy=accuracy)
    trainer.log({f"{LOG_PREFIX}{name}": value for name, value in tracker.scalars(curve).items()})
    tracker.save(out)


__getattr__ = lazy_class(globals(), "ModularityTrainerCallback", _build_callback)
