"""A PyTorch Lightning callback that tracks the modularity curve of a fixed probe during ``Trainer.fit``.

    from layermod.analysis.dynamics import TrackConfig
    from layermod.training.lightning import ModularityCallback

    callback = ModularityCallback(val_data, track=TrackConfig(every=2), accuracy="val_acc")
    trainer = lightning.pytorch.Trainer(max_epochs=10, callbacks=[callback])
    trainer.fit(module, train_loader, val_loader)
    # trainer.log_dir / "dynamics.json" and dynamics.png; modularity/<layer> in every logger

The decisions behind it: docs/design.md, section layermod.training.lightning.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from layermod.analysis.dynamics import Dynamics, TrackConfig
from layermod.errors import TrainError
from layermod.training.tracker import CurveTracker, lazy_class

if TYPE_CHECKING:
    from lightning.pytorch import Trainer
    from torch import nn

    from layermod.data.arrays import Data

__all__ = ["ModularityCallback"]


def _build_callback() -> type:
    try:
        from lightning.pytorch.callbacks import Callback
        from lightning.pytorch.trainer.states import TrainerFn
    except ImportError:
        raise TrainError("ModularityCallback needs PyTorch Lightning; pip install 'layermod[lightning]'") from None

    class ModularityCallback(Callback):
        """Measure the modularity curve of a fixed probe every few epochs of ``Trainer.fit``, log
        ``modularity/<layer>`` to the trainer's loggers and write ``dynamics.json`` (see docs/design.md).

        Args:
            data: where the probe is drawn from (usually the validation set): an ``(X, y)`` pair, a Dataset or a
                DataLoader (read once); batches go to the model as :func:`~layermod.modularity_curve` sends them.
            track: how often, which layers, the graph and the draws (default :class:`TrackConfig`'s).
            out: where ``dynamics.json`` / ``dynamics.png`` go (default: ``trainer.log_dir``).
            accuracy: name of a logged validation metric in [0, 1] to record beside the curve.
            dataset: the data's name, recorded in the dynamics.

        Attributes:
            tracker: the :class:`~layermod.training.tracker.CurveTracker`; ``tracker.dynamics`` holds the
                measurements.
        """

        def __init__(self, data: Data, *, track: TrackConfig | None = None, out: str | os.PathLike | None = None,
                     accuracy: str | None = None, dataset: str | None = None) -> None:
            self.tracker = CurveTracker(data, track=track, dataset=dataset, split="validation")
            self.out = out
            self.accuracy = accuracy

        def on_train_start(self, trainer: Trainer, pl_module: nn.Module) -> None:
            if trainer.current_epoch == 0 and trainer.global_step == 0:
                self._measure(trainer, pl_module, 0, None)

        def on_validation_epoch_end(self, trainer: Trainer, pl_module: nn.Module) -> None:
            if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING or not trainer.is_last_batch:
                return
            self._measure(trainer, pl_module, trainer.current_epoch + 1, self._accuracy(trainer))

        def state_dict(self) -> dict[str, Any]:
            dynamics = self.tracker.dynamics
            return {"dynamics": dynamics.to_dict() if dynamics is not None else None}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            saved = state_dict.get("dynamics")
            if saved is not None:
                dynamics = Dynamics.from_dict(saved)
                self.tracker.resume(dynamics, dynamics.epochs[-1])

        def _measure(self, trainer, pl_module: nn.Module, epoch: int, accuracy: float | None) -> None:
            _measure(self.tracker, trainer, pl_module, epoch, accuracy, out=self.out)

        def _accuracy(self, trainer) -> float | None:
            return None if self.accuracy is None else _logged_accuracy(trainer, self.accuracy)

    ModularityCallback.__module__, ModularityCallback.__qualname__ = __name__, "ModularityCallback"
    return ModularityCallback


def _measure(tracker: CurveTracker, trainer, pl_module: nn.Module, epoch: int, accuracy: float | None, *,
             out: str | os.PathLike | None) -> None:
    """On the global-zero rank at an epoch ``tracker`` measures: the curve, logged to every logger of
    ``trainer`` and saved in ``out`` (default ``trainer.log_dir``)."""
    out = out if out is not None else trainer.log_dir  # every rank: it broadcasts
    last = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
    if not trainer.is_global_zero or not tracker.should_measure(epoch, last_epoch=last):
        return
    curve = tracker.measure(pl_module, epoch, accuracy=accuracy)
    scalars = tracker.scalars(curve)
    for logger in trainer.loggers:
        logger.log_metrics(scalars, step=epoch)
    tracker.save(out)


def _logged_accuracy(trainer, name: str) -> float:
    """The validation metric ``name`` that ``trainer`` logged this epoch; TrainError naming those logged."""
    value = trainer.callback_metrics.get(name)
    if value is None:
        raise TrainError(f"ModularityCallback(accuracy={name!r}): no such metric was logged "
                         f"this validation epoch (logged: {', '.join(trainer.callback_metrics) or 'none'}); "
                         "log it with self.log in validation_step or name another")
    return float(value)


__getattr__ = lazy_class(globals(), "ModularityCallback", _build_callback)
