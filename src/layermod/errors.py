"""Exceptions raised for bad input.

Every user-facing failure is a subclass of :class:`LayermodError` whose message is one line saying what
was wrong and what to do; the CLI prints that line and exits non-zero without a traceback.
"""

from __future__ import annotations

__all__ = [
    "AttackError",
    "CurveError",
    "DatasetError",
    "DependencyError",
    "DeviceError",
    "FeatureError",
    "GraphError",
    "LabelError",
    "LayerError",
    "LayermodError",
    "ModelError",
    "OutputError",
    "PlanError",
    "ReportError",
    "SweepError",
    "TrainError",
    "ViewError",
    "WeightsError",
]


class LayermodError(Exception):
    """Base class of every error layermod raises on bad input."""


class AttackError(LayermodError, ValueError):
    """An attack that cannot run: a budget outside the pixel range, a model without input gradients, ..."""


class GraphError(LayermodError, ValueError):
    """Invalid graph parameters or adjacency (k too large, negative weights, no edges, ...)."""


class LabelError(LayermodError, ValueError):
    """Labels that do not fit the samples (length mismatch, too few classes or samples per class)."""


class FeatureError(LayermodError, ValueError):
    """Features that cannot be used (wrong shape, NaN or Inf values)."""


class LayerError(LayermodError, KeyError):
    """A layer that does not exist, cannot be chosen automatically or is never called in forward."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class DatasetError(LayermodError, OSError):
    """A dataset that is missing, corrupt or in the wrong layout."""


class DependencyError(LayermodError, ImportError):
    """An optional package a call needs is not installed."""


class DeviceError(LayermodError, ValueError):
    """A device layermod cannot run on here (not the CPU or an available CUDA device)."""


class WeightsError(LayermodError, ValueError):
    """A weights file that is missing, unreadable or does not match the architecture."""


class ModelError(LayermodError, ValueError):
    """A model specification that cannot be resolved (unknown architecture, bad import path)."""


class OutputError(LayermodError, OSError):
    """An output location that cannot be written."""


class TrainError(LayermodError, ValueError):
    """A training configuration that cannot run, or a run that diverged."""


class PlanError(LayermodError, ValueError):
    """A pruning plan that cannot be applied (unknown or non-removable unit, a stage left empty, repeats)."""


class ReportError(LayermodError, OSError):
    """Run directories a report cannot be made from (missing, or holding no readable layermod output)."""


class CurveError(LayermodError, ValueError):
    """Values that do not fit together: a curve's values and its layers, per-layer Q values or matrices of other
    layers, the two samples of a paired test."""


class ViewError(LayermodError, ValueError):
    """A 2-D layer view that cannot be made, read or drawn (unknown method, malformed view data, nothing to plot)."""


class SweepError(LayermodError, ValueError):
    """A sweep specification that cannot be run (unknown key, wrong type, empty glob, too many items)."""


def one_line(err: BaseException, limit: int = 200) -> str:
    """``err``'s message on one line (runs of whitespace as one space), cut to ``limit`` characters, or its type's
    name when it has none: what an error of ours quotes of an error from elsewhere. (A helper of the messages,
    not an exception, so not in ``__all__``.)"""
    return " ".join(str(err).split())[:limit] or type(err).__name__
