"""layermod: layer-by-layer graph modularity of neural network features.

    import layermod as lm
    A = lm.knn_graph(features, k=3, metric="cosine")   # (N, D) -> scipy sparse (N, N), symmetric
    q = lm.modularity(A, labels)                        # labels: (N,)
    curve = lm.modularity_curve(model, (X, y), layers="auto", k=3, n_per_class=50, repeats=5, seed=0)
    curve.layers, curve.values, curve.mean, curve.std   # names; (repeats, L); (L,); (L,)
    verdicts = lm.find_redundant(curve)                 # one per layer: increment, "plateau" / "drop" / "keep"
"""

from . import errors, models
from .curve import Curve, modularity_curve
from .data import balanced_draws, load_dataset
from .errors import *  # noqa: F403  (every exception class, listed in errors.__all__)
from .features import extract_features
from .graph import knn_graph
from .layers import auto_layers, select_layers, trace_calls
from .modularity import modularity, permutation_null
from .redundancy import find_redundant

__version__ = "0.1.0"

__all__ = [
    "Curve",
    "auto_layers",
    "balanced_draws",
    "extract_features",
    "find_redundant",
    "knn_graph",
    "load_dataset",
    "models",
    "modularity",
    "modularity_curve",
    "permutation_null",
    "select_layers",
    "trace_calls",
    *errors.__all__,
]
