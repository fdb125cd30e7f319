"""Model zoo: registered architectures (:mod:`._registry`), their builders (:mod:`.small`, :mod:`.vgg`,
:mod:`.resnet`), units removed from a built model (:mod:`.units`), checkpoints (:mod:`.checkpoint`) and the
model specifications a user types (:mod:`.spec`); datasets are :mod:`layermod.data.spec`'s.

    from layermod import models
    models.available()                                   # ['mlp', 'resnet110', ..., 'vgg19']
    model = models.create("resnet20", num_classes=10, in_channels=1, width=0.5)
"""

from ._registry import (
    MAX_CHANNELS,
    MAX_CLASSES,
    MAX_IN_CHANNELS,
    MAX_INPUT_SIZE,
    MAX_STAGES,
    MAX_UNITS,
    MAX_WIDTH,
    available,
    check_count,
    create,
    describe,
    register,
    scaled,
)
from .units import PassThrough, check_outputs, remove_units, removed_outputs
from . import resnet, small, vgg  # noqa: E402,F401  (registers the built-in models)

__all__ = ["MAX_CHANNELS", "MAX_CLASSES", "MAX_INPUT_SIZE", "MAX_IN_CHANNELS", "MAX_STAGES", "MAX_UNITS",
           "MAX_WIDTH", "PassThrough", "available", "check_count", "check_outputs", "create", "describe", "register",
           "remove_units", "removed_outputs", "scaled"]
