"""Samples in 2-D: the embedding that places a layer's samples in a view (:mod:`layermod.analysis.views`).

Decisions, on purpose:

* **PCA by default, deterministic.** ``"pca"`` gives the scores on the top two principal components, computed
  in float64 from the (n, n) Gram matrix of the centred features (cheap when a layer has many more values than
  there are samples). Each component's sign is fixed so that its largest-magnitude score is positive: the same
  features always give the same picture, and so do negated features. ``"tsne"`` is opt-in and needs the
  optional scikit-learn, imported only when asked for.
* **Checked before the work.** :func:`check_method` refuses an unknown method, or t-SNE without scikit-learn,
  so a caller can fail before the forward passes whose features would be embedded.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from layermod.errors import FeatureError, ViewError
from layermod.measure.graph import as_feature_matrix

__all__ = ["METHODS", "check_method", "embed_2d"]

METHODS: tuple[str, ...] = ("pca", "tsne")


def _pca_2d(x: torch.Tensor, _seed: int) -> np.ndarray:
    """Scores (n, 2) on the top two principal components of ``x`` (n, D), sign-fixed (module doc). Takes the
    seed like every method's function, but has no use for it."""
    x = x.double()
    centred = x - x.mean(dim=0)
    values, vectors = torch.linalg.eigh(centred @ centred.T)  # ascending eigenvalues
    scores = vectors[:, [-1, -2]] * values[[-1, -2]].clamp_min(0).sqrt()
    biggest = scores.abs().argmax(dim=0)
    signs = torch.sign(scores[biggest, torch.arange(2)])
    return (scores * torch.where(signs == 0, 1.0, signs)).cpu().numpy()


def _tsne_class():
    """scikit-learn's TSNE class, or a :class:`LayermodError` saying how to get it."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise ViewError(
            "t-SNE needs scikit-learn; install it (pip install scikit-learn) or use method='pca'"
        ) from None
    return TSNE


def _tsne_2d(x: torch.Tensor, seed: int) -> np.ndarray:
    """t-SNE (n, 2) of ``x`` (n, D), PCA-initialised and seeded."""
    n = len(x)
    tsne = _tsne_class()(n_components=2, init="pca", random_state=seed, perplexity=min(30.0, (n - 1) / 3))
    return np.asarray(tsne.fit_transform(x.cpu().numpy()), dtype=np.float64)


def _embedder(method: str) -> Callable[[torch.Tensor, int], np.ndarray]:
    """The function embedding (n, D) features for ``method``; fails for an unknown method or missing
    scikit-learn (t-SNE), so callers can check before any work."""
    if method == "pca":
        return _pca_2d
    if method == "tsne":
        _tsne_class()
        return _tsne_2d
    raise ViewError(f"unknown embedding method {method!r}; use one of {', '.join(METHODS)}")


def check_method(method: str) -> None:
    """Raise :class:`LayermodError` now for an unknown method, or for t-SNE without scikit-learn, so that a
    caller can fail before long work whose results the views would sit beside."""
    _embedder(method)


def embed_2d(features: torch.Tensor | np.ndarray, *, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D embedding of the rows of ``features``.

    Args:
        features: (n, D) tensor or array, n >= 2 (trailing dimensions are flattened).
        method: ``"pca"`` (top-2 principal component scores, deterministic signs) or ``"tsne"`` (scikit-learn's
            ``TSNE(init="pca", random_state=seed, perplexity=min(30, (n - 1) / 3))``).
        seed: random state of t-SNE (PCA does not use it).

    Returns:
        (n, 2) float64 array.

    Raises:
        LayermodError: unknown method, or t-SNE without scikit-learn.
        FeatureError: fewer than 2 samples, or NaN/Inf values.
    """
    embed = _embedder(method)
    x = as_feature_matrix(torch.as_tensor(features).detach())
    if len(x) < 2:
        raise FeatureError(f"a 2-D embedding needs at least 2 samples, got {len(x)}; pass more samples")
    if not torch.isfinite(x).all():
        raise FeatureError("features contain NaN or Inf; check the model and inputs")
    return embed(x, seed)
