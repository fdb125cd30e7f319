"""layermod: layer-by-layer graph modularity of neural network features.

    import layermod as lm
    A = lm.knn_graph(features, k=3, metric="cosine")   # (N, D) -> scipy sparse (N, N), symmetric
    q = lm.modularity(A, labels)                        # labels: (N,)
    curve = lm.modularity_curve(model, (X, y), layers="auto", k=3, n_per_class=50, repeats=5, seed=0)
    curve.layers, curve.values, curve.mean, curve.std   # names; (repeats, L); (L,); (L,)
    verdicts = lm.find_redundant(curve)                 # one per layer: increment, "plateau" / "drop" / "keep"
    pair = lm.adversarial_curves(model, (X, y), lm.AttackConfig("pgd", eps=0.3), lm.PixelSpace())  # clean vs attacked
    comparison = lm.compare_layers(model, (X, y))       # D_ij = |Q_i - Q_j| beside linear CKA
"""

import importlib
import sys
import types

from . import errors
from .errors import *  # noqa: F403  (every exception class, listed in errors.__all__)

# Where each public name lives. They are imported on first use (PEP 562), so that ``import layermod.cli`` is quick
# and a Ctrl-C while torch loads reaches the command's own handler instead of printing a traceback.
_EXPORTS = {
    "AttackConfig": "attacks",
    "Curve": "curve",
    "PixelSpace": "attacks",
    "adversarial_curves": "adversarial",
    "attack": "attacks",
    "auto_layers": "layers",
    "balanced_draws": "data",
    "compare_layers": "compare",
    "extract_features": "features",
    "fgsm": "attacks",
    "find_redundant": "redundancy",
    "knn_graph": "graph",
    "linear_cka": "similarity",
    "load_dataset": "data",
    "modularity": "modularity",
    "modularity_curve": "curve",
    "permutation_null": "modularity",
    "pgd": "attacks",
    "select_layers": "layers",
    "trace_calls": "layers",
}

__version__ = "0.1.0"

__all__ = [
    "AttackConfig",
    "Curve",
    "PixelSpace",
    "adversarial_curves",
    "attack",
    "auto_layers",
    "balanced_draws",
    "compare_layers",
    "extract_features",
    "fgsm",
    "find_redundant",
    "knn_graph",
    "linear_cka",
    "load_dataset",
    "models",
    "modularity",
    "modularity_curve",
    "permutation_null",
    "pgd",
    "select_layers",
    "trace_calls",
    *errors.__all__,
]


def __getattr__(name: str) -> object:
    if name == "models":
        return importlib.import_module(".models", __name__)
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The package, whose public functions win over its submodules of the same name (``modularity``): importing
    a submodule sets it as an attribute of the package, which would otherwise hide the function."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
