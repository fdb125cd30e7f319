"""layermod: layer-by-layer graph modularity of neural network features.

    import layermod as lm
    A = lm.knn_graph(features, k=3, metric="cosine")   # (N, D) -> scipy sparse (N, N), symmetric
    A, recall = lm.build_graph(features, graph=lm.GraphConfig(knn="hnsw"))  # approximate, with its kNN recall
    q = lm.modularity(A, labels)                        # labels: (N,)
    curve = lm.modularity_curve(model, (X, y), layers="auto", k=3, n_per_class=50, repeats=5, seed=0)
    curve = lm.modularity_curve(model, (X, y), graph=lm.GraphConfig(k=3), draws=lm.DrawConfig(n_per_class=50))
    curve.layers, curve.values, curve.mean, curve.std   # names; (repeats, L); (L,); (L,)
    model, meta = lm.load_checkpoint("runs/fm/best.safetensors")  # a layermod checkpoint and its sidecar
    verdicts = lm.find_redundant(curve)                 # per layer: increment, "plateau" / "drop" / "keep"
    curve.save("run"), lm.Curve.load("run"), curve.plot(), curve.to_frame()  # every type of lm.RESULT_TYPES alike
    pair = lm.adversarial_curves(model, (X, y), attack=lm.AttackConfig(method="pgd", eps=0.3), space=lm.PixelSpace())
    comparison = lm.compare_layers(model, (X, y))       # D_ij = |Q_i - Q_j| beside linear CKA
"""

from importlib import import_module as _import_module
import typing as _typing

from . import errors
from .errors import *  # noqa: F403  (every exception class, listed in errors.__all__)

# Where each public name lives. They are imported on first use (PEP 562), so that ``import layermod.cli`` is quick
# and a Ctrl-C while torch loads reaches the command's own handler instead of printing a traceback.
_EXPORTS = {
    "AdversarialCurves": "adversarial.curves",
    "AttackConfig": "adversarial.attacks",
    "Curve": "analysis.curve",
    "CurveTracker": "training.tracker",
    "DrawConfig": "measure.config",
    "Dynamics": "analysis.dynamics",
    "GraphConfig": "measure.config",
    "ItemResult": "sweep.executor",
    "LayerComparison": "analysis.compare",
    "LayerView": "analysis.layer_view",
    "MatchedComparison": "pruning.pareto",
    "PixelSpace": "adversarial.attacks",
    "PruningComparison": "pruning.study",
    "Redundancy": "analysis.redundancy",
    "Resources": "sweep.executor",
    "SweepTable": "sweep.results",
    "TrackConfig": "analysis.dynamics",
    "Verdict": "analysis.redundancy",
    "Views": "analysis.layer_view",
    "adversarial_curves": "adversarial.curves",
    "attack": "adversarial.attacks",
    "auto_layers": "extract.layers",
    "balanced_draws": "data.draws",
    "build_graph": "measure.graph",
    "compare_layers": "analysis.compare",
    "extract_features": "extract.features",
    "fgsm": "adversarial.attacks",
    "find_redundant": "analysis.redundancy",
    "knn_graph": "measure.graph",
    "linear_cka": "measure.similarity",
    "load_checkpoint": "models.checkpoint",
    "load_dataset": "data.datasets",
    "modularity": "measure.modularity",
    "modularity_curve": "analysis.curve",
    "permutation_null": "measure.modularity",
    "pgd": "adversarial.attacks",
    "run_items": "sweep.executor",
    "select_layers": "extract.layers",
    "trace_calls": "extract.layers",
}

# The result types: each saves itself (``save(path) -> Path``), loads what it saved (``load(path)``), draws
# itself into a matplotlib Axes (``plot(ax=None) -> Axes``) and shows its table (``to_dict``, ``to_frame``, repr).
_RESULTS = ("Curve", "Dynamics", "LayerComparison", "Views", "Redundancy", "AdversarialCurves", "SweepTable",
            "PruningComparison", "MatchedComparison")

if _typing.TYPE_CHECKING:  # what type checkers see: the same names, imported at once
    from . import models
    from .adversarial.attacks import AttackConfig, PixelSpace, attack, fgsm, pgd
    from .adversarial.curves import AdversarialCurves, adversarial_curves
    from .analysis.compare import LayerComparison, compare_layers
    from .analysis.curve import Curve, modularity_curve
    from .analysis.dynamics import Dynamics, TrackConfig
    from .analysis.layer_view import LayerView, Views
    from .analysis.redundancy import Redundancy, Verdict, find_redundant
    from .data.datasets import load_dataset
    from .data.draws import balanced_draws
    from .extract.features import extract_features
    from .extract.layers import auto_layers, select_layers, trace_calls
    from .measure.config import DrawConfig, GraphConfig
    from .measure.graph import build_graph, knn_graph
    from .measure.modularity import modularity, permutation_null
    from .measure.similarity import linear_cka
    from .models.checkpoint import load_checkpoint
    from .pruning.pareto import MatchedComparison
    from .pruning.study import PruningComparison
    from .sweep.executor import ItemResult, Resources, run_items
    from .sweep.results import SweepTable
    from .training.tracker import CurveTracker

    RESULT_TYPES: tuple[type, ...]

__version__ = "0.1.0"

__all__ = [
    "AdversarialCurves",
    "AttackConfig",
    "Curve",
    "CurveTracker",
    "DrawConfig",
    "Dynamics",
    "GraphConfig",
    "ItemResult",
    "LayerComparison",
    "LayerView",
    "MatchedComparison",
    "PixelSpace",
    "PruningComparison",
    "RESULT_TYPES",
    "Redundancy",
    "Resources",
    "SweepTable",
    "TrackConfig",
    "Verdict",
    "Views",
    "adversarial_curves",
    "attack",
    "auto_layers",
    "balanced_draws",
    "build_graph",
    "compare_layers",
    "extract_features",
    "fgsm",
    "find_redundant",
    "knn_graph",
    "linear_cka",
    "load_checkpoint",
    "load_dataset",
    "models",
    "modularity",
    "modularity_curve",
    "permutation_null",
    "pgd",
    "run_items",
    "select_layers",
    "trace_calls",
    *errors.__all__,
]


def __getattr__(name: str) -> object:
    if name == "models":
        return _import_module(".models", __name__)
    if name == "RESULT_TYPES":
        return tuple(__getattr__(result) for result in _RESULTS)
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

