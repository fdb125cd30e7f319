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

from . import errors, models
from .adversarial import adversarial_curves
from .attacks import AttackConfig, PixelSpace, attack, fgsm, pgd
from .compare import compare_layers
from .curve import Curve, modularity_curve
from .data import balanced_draws, load_dataset
from .errors import *  # noqa: F403  (every exception class, listed in errors.__all__)
from .features import extract_features
from .graph import knn_graph
from .layers import auto_layers, select_layers, trace_calls
from .modularity import modularity, permutation_null
from .redundancy import find_redundant
from .similarity import linear_cka

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
