"""Eval mode for a block of code, every module's own train/eval flag given back afterwards.

``model.train(was_training)`` after a measurement would flatten the modes: a model in training mode with one
BatchNorm frozen in eval mode (a common fine-tuning set-up) would come back with that BatchNorm training.
:func:`evaluating` saves the flag of every module (the model's included) and restores each one on exit, an
exception included; it is the one way layermod runs a model in eval mode and leaves it as it found it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["evaluating"]


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with ``model.eval()``; on exit every module gets its own training flag back. Yields ``model``."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
