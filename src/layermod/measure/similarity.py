"""Layer-to-layer similarity: linear CKA between all pairs of layers, and the modularity difference D.

The decisions behind it: docs/design.md, section layermod.measure.similarity.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from layermod.errors import CurveError, FeatureError
from layermod.io.files import save_png
from layermod.io.validate import TITLE_CHARS, label, literal_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "centered_gram",
    "cka_matrix",
    "hsic",
    "layer_grams",
    "linear_cka",
    "modularity_difference",
    "draw_heatmap",
    "heatmap_inches",
    "plot_heatmaps",
]

_CHUNK_ELEMENTS = 4 * 2**20  # feature entries converted to float64 at once (32 MiB)
_MAX_TICKS = 25  # layer names per heat-map axis; more layers thin the ticks
_MAX_PANEL = 16.0  # inches of one heat map at most
_COLORMAP = "viridis"


# ------------------------------------------------------------------------------------------------ Grams


def _feature_matrix(features: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``features`` as a tensor of shape (n, D), n >= 2, D >= 1 (dtype unchanged)."""
    x = torch.as_tensor(features)
    if x.ndim != 2:
        raise FeatureError(f"features must have shape (n, D), got shape {tuple(x.shape)}; "
                           "flatten each sample with features.reshape(len(features), -1)")
    if x.shape[0] < 2:
        raise FeatureError(f"features have {x.shape[0]} sample(s); CKA needs at least 2 samples")
    if x.shape[1] == 0:
        raise FeatureError(f"features have no columns (shape {tuple(x.shape)}); pass at least 1 value per sample")
    return x


def _check_finite(block: torch.Tensor, first_column: int) -> None:
    """Raise :class:`FeatureError` naming the first sample of ``block`` (n, d) with a NaN or Inf."""
    bad = (~torch.isfinite(block)).any(dim=1).nonzero()
    if len(bad):
        raise FeatureError(f"features contain NaN or Inf (first at sample {int(bad[0, 0])}, among columns from "
                           f"{first_column}); check the model and inputs")


def centered_gram(features: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Gram matrix (n, n) in float64 of the column-centred ``features`` (n, D): doubly centred, PSD.

    Computed in column chunks on the features' device. Columns that are constant come out as exact zeros,
    so features without variance give an all-zero Gram. Raises :class:`FeatureError` for input that is not
    2-D, has fewer than 2 samples or no columns, or holds NaN, Inf or values whose products overflow.
    """
    x = _feature_matrix(features)
    n, d = x.shape
    gram = torch.zeros((n, n), dtype=torch.float64, device=x.device)
    step = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, d, step):
        block = x[:, start:start + step].to(torch.float64)
        _check_finite(block, start)
        block = block - block[0]
        block = block - block.mean(dim=0)
        gram.addmm_(block, block.T)
    if not torch.isfinite(gram).all():
        raise FeatureError("features are too large for float64 (their Gram overflows); rescale them")
    return gram


def _batch_indices(batches: Sequence[np.ndarray], n_total: int) -> list[torch.Tensor]:
    """Validated batches as int64 tensors: at least one, 1-D, integer, equal lengths, within [0, n_total)."""
    arrays = [np.asarray(batch) for batch in batches]
    if not arrays:
        raise FeatureError("no batches given; pass at least one index array into the samples")
    for b, index in enumerate(arrays):
        if index.ndim != 1 or index.dtype.kind not in "iu":
            raise FeatureError(f"batch {b} must be a 1-D array of integer sample indices, got {index.dtype} "
                               f"with shape {index.shape}")
        if len(index) and not (0 <= index.min() and index.max() < n_total):
            raise FeatureError(f"batch {b} has sample indices outside [0, {n_total}); index the {n_total} samples")
    sizes = sorted({len(index) for index in arrays})
    if len(sizes) > 1:
        raise FeatureError(f"batches have sizes {sizes}; minibatch CKA needs batches of equal size")
    return [torch.as_tensor(index.astype(np.int64)) for index in arrays]


def layer_grams(features: torch.Tensor | np.ndarray, batches: Sequence[np.ndarray]) -> torch.Tensor:
    """Centred Grams (B, n, n) float64 of one layer's ``features`` (N, D), one per minibatch.

    ``batches`` are B index arrays of equal length n into the N samples. Each Gram is
    :func:`centered_gram` of ``features[batch]``, on the features' device.
    """
    x = _feature_matrix(features)
    indices = _batch_indices(batches, x.shape[0])
    n = len(indices[0])
    grams = torch.empty((len(indices), n, n), dtype=torch.float64, device=x.device)
    for b, index in enumerate(indices):
        grams[b] = centered_gram(x[index.to(x.device)])
    return grams


# ------------------------------------------------------------------------------------------------- HSIC


def _min_samples(unbiased: bool) -> int:
    return 4 if unbiased else 2


def _check_grams(grams: Sequence[torch.Tensor], names: Sequence[str], ndim: int, unbiased: bool) -> tuple[int, ...]:
    """The common shape of ``grams``, each (..., n, n) with ``ndim`` dimensions; FeatureError otherwise."""
    if not grams:
        raise FeatureError("no Grams given; pass one (B, n, n) stack of Grams per layer")
    shape = tuple(grams[0].shape)
    form = "(n, n)" if ndim == 2 else "(B, n, n)"
    for gram, name in zip(grams, names):
        if gram.ndim != ndim or gram.shape[-1] != gram.shape[-2]:
            raise FeatureError(f"{name} must have shape {form}, got {tuple(gram.shape)}; "
                               "compute Grams with centered_gram or layer_grams")
        if tuple(gram.shape) != shape:
            raise FeatureError(f"{name} has shape {tuple(gram.shape)} but {names[0]} has {shape}; "
                               "compute every Gram on the same batches of samples")
    n = shape[-1]
    if n < _min_samples(unbiased):
        estimator = "the unbiased estimator needs n > 3" if unbiased else "HSIC needs n >= 2"
        raise FeatureError(f"Grams of {n} samples are too small: {estimator}; use more samples per batch")
    return shape


def _prepared(gram: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """Gram(s) (..., n, n) turned into M with HSIC(K, L) = <M_K, M_L>_F / normaliser: double centring (biased)
    or U-centring (unbiased). Returns a new float64 tensor; ``gram`` is not modified."""
    k = gram.to(torch.float64)
    if not unbiased:
        return k - k.mean(dim=-1, keepdim=True) - k.mean(dim=-2, keepdim=True) + k.mean(dim=(-2, -1), keepdim=True)
    n = k.shape[-1]
    k = k.clone()
    k.diagonal(dim1=-2, dim2=-1).zero_()
    rows = k.sum(dim=-1, keepdim=True) / (n - 2)
    cols = k.sum(dim=-2, keepdim=True) / (n - 2)
    total = k.sum(dim=(-2, -1), keepdim=True) / ((n - 1) * (n - 2))
    u = k - rows - cols + total
    u.diagonal(dim1=-2, dim2=-1).zero_()
    return u


def _normaliser(n: int, unbiased: bool) -> int:
    return n * (n - 3) if unbiased else (n - 1) ** 2


def hsic(gram_a: torch.Tensor, gram_b: torch.Tensor, *, unbiased: bool = False) -> float:
    """HSIC of two Grams (n, n) of the same samples (centred or not: the value is the same).

    Biased: ``tr(K H L H) / (n-1)^2``. Unbiased (``unbiased=True``, n > 3): Song et al.'s estimator, computed
    as ``<U(K), U(L)>_F / (n(n-3))``. See docs/design.md.
    """
    a, b = torch.as_tensor(gram_a), torch.as_tensor(gram_b)
    n = _check_grams([a, b], ["gram_a", "gram_b"], 2, unbiased)[-1]
    product = (_prepared(a, unbiased) * _prepared(b, unbiased).to(a.device)).sum()
    return float(product) / _normaliser(n, unbiased)


# -------------------------------------------------------------------------------------------------- CKA


def _flat_prepared(grams: Sequence[torch.Tensor], unbiased: bool, device: torch.device) -> torch.Tensor:
    """(L, B n^2) float64: row l is the flattened prepared stack of layer l's Grams (B, n, n)."""
    rows = torch.empty((len(grams), grams[0].numel()), dtype=torch.float64, device=device)
    for row, gram in zip(rows, grams):
        row.copy_(_prepared(gram.to(device), unbiased).reshape(-1))
    return rows


def cka_matrix(
    grams_a: Sequence[torch.Tensor],
    *,
    grams_b: Sequence[torch.Tensor] | None = None,
    unbiased: bool = False,
) -> np.ndarray:
    """Minibatch linear CKA (La, Lb) between every layer of model A and every layer of model B.

    Args:
        grams_a: La stacks of Grams (B, n, n), one per layer, all on the same B minibatches (from
            :func:`layer_grams`).
        grams_b: Lb such stacks on the same samples, or None for ``grams_a`` itself (the result is then
            symmetric with ones on the diagonal).
        unbiased: use the unbiased HSIC estimator (needs n > 3) instead of the biased one.

    Returns:
        float64 array (La, Lb): ``sum_b HSIC_b(a, b) / sqrt(sum_b HSIC_b(a, a) * sum_b HSIC_b(b, b))``; NaN
        for layers whose features have no variance (see docs/design.md). Computed on the device of
        ``grams_a[0]``.
    """
    grams_a = [torch.as_tensor(g) for g in grams_a]
    grams_b = None if grams_b is None else [torch.as_tensor(g) for g in grams_b]
    every = grams_a + (grams_b or [])
    names = [f"grams_a[{i}]" for i in range(len(grams_a))] + [f"grams_b[{j}]" for j in range(len(grams_b or []))]
    _check_grams(every, names, 3, unbiased)
    device = grams_a[0].device
    rows_a = _flat_prepared(grams_a, unbiased, device)
    if grams_b is None:
        cross = rows_a @ rows_a.T
        cross = (cross + cross.T) / 2
        self_a = self_b = cross.diagonal()
    else:
        if not grams_b:
            raise FeatureError("grams_b is empty; pass one (B, n, n) stack per layer of model B, or None")
        rows_b = _flat_prepared(grams_b, unbiased, device)
        cross = rows_a @ rows_b.T
        self_a, self_b = (rows_a * rows_a).sum(dim=1), (rows_b * rows_b).sum(dim=1)
    denominator = torch.sqrt(torch.outer(self_a, self_b).clamp(min=0))
    cka = torch.where(denominator > 0, cross / denominator, torch.nan)
    if not unbiased:
        cka = cka.clamp(0.0, 1.0)  # rounding only: biased CKA lies in [0, 1]; clamp keeps NaN
    return cka.cpu().numpy()


def linear_cka(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, *, unbiased: bool = False) -> float:
    """Linear CKA of features ``x`` (n, p) and ``y`` (n, q) of the same n samples.

    Biased: in [0, 1], 1 for identical features (and for any orthogonal transform, isotropic scaling or
    shift of either). Unbiased (n > 3): the same with Song et al.'s HSIC estimator (not clipped).

    Args:
        x: (n, p) tensor or ndarray.
        y: (n, q) tensor or ndarray.
        unbiased: Song et al.'s unbiased HSIC estimator.

    Returns:
        The CKA as a float.

    Raises:
        FeatureError: mismatched sample counts, the input errors of :func:`centered_gram`, and features
            without variance across samples (CKA is 0/0 there).
    """
    gram_x, gram_y = centered_gram(x), centered_gram(y)
    if gram_x.shape != gram_y.shape:
        raise FeatureError(f"x has {len(gram_x)} samples but y has {len(gram_y)}; pass features of the same samples")
    for name, gram in (("x", gram_x), ("y", gram_y)):
        if not gram.any():
            raise FeatureError(f"{name} has no variance across samples; CKA is undefined "
                               "(every sample has the same features)")
    return float(cka_matrix([gram_x[None]], grams_b=[gram_y[None]], unbiased=unbiased)[0, 0])


# ------------------------------------------------------------------------------------ modularity difference


def _q_vector(q: Sequence[float], name: str) -> np.ndarray:
    values = np.asarray(q, dtype=np.float64)
    if values.ndim != 1 or not len(values):
        raise CurveError(f"{name} must be a non-empty 1-D sequence of per-layer Q values, got shape "
                            f"{values.shape}; pass e.g. curve.mean")
    return values


def modularity_difference(q_a: Sequence[float], *, q_b: Sequence[float] | None = None) -> np.ndarray:
    """The paper's layer-difference matrix D (La, Lb): ``D_ij = |q_a[i] - q_b[j]|`` for per-layer Q values
    ``q_a`` (La,) and ``q_b`` (Lb,) (None: ``q_a``, giving a symmetric matrix with a zero diagonal)."""
    a = _q_vector(q_a, "q_a")
    b = a if q_b is None else _q_vector(q_b, "q_b")
    return np.abs(a[:, None] - b[None, :])


# -------------------------------------------------------------------------------------------------- plot


def _tick_layout(count: int) -> tuple[int, float]:
    """(every how many layers a name is shown, font size) for an axis of ``count`` layers."""
    step = math.ceil(count / _MAX_TICKS)
    return step, float(np.clip(180 / math.ceil(count / step), 5, 9))


def _set_layer_ticks(ax, layers_a: Sequence[str], layers_b: Sequence[str]) -> None:
    step_a, size_a = _tick_layout(len(layers_a))
    step_b, size_b = _tick_layout(len(layers_b))
    rows, cols = np.arange(0, len(layers_a), step_a), np.arange(0, len(layers_b), step_b)
    ax.set_yticks(rows, [label(layers_a[i]) for i in rows], fontsize=size_a)
    ax.set_xticks(cols, [label(layers_b[j]) for j in cols], fontsize=size_b, rotation=60, ha="right",
                  rotation_mode="anchor")


def heatmap_inches(n_layers: int) -> float:
    """Side of one heat map of ``n_layers`` names, in inches: 4.5 to :data:`_MAX_PANEL`."""
    return min(max(4.5, 0.14 * n_layers + 2.5), _MAX_PANEL)


@literal_text
def draw_heatmap(ax: Axes, matrix: np.ndarray, kind: str, layers_a: Sequence[str], layers_b: Sequence[str], *,
                 title: str | None = None, label_a: str | None = None, label_b: str | None = None) -> Axes:
    """One heat map of :func:`plot_heatmaps` into ``ax``: ``kind`` ``"d"`` (reversed colormap from 0) or
    ``"cka"`` (on [0, 1]); returns the Axes."""
    import matplotlib

    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (len(layers_a), len(layers_b)):
        raise CurveError(f"{kind} has shape {matrix.shape} but there are {len(layers_a)} x {len(layers_b)} layer "
                         "names; pass the matrices of the same layers")
    if kind == "d":
        d_max = float(np.nanmax(matrix)) if np.isfinite(matrix).any() else 0.0
        cmap, vmin, vmax = f"{_COLORMAP}_r", 0.0, max(d_max, 1e-12)
        bar_label = "|Q_i - Q_j|  (reversed: bright = similar)"
        title = title or "modularity difference |Q_i - Q_j|"
    else:
        cmap, vmin, vmax, bar_label = _COLORMAP, 0.0, 1.0, "CKA  (bright = similar)"
        title = title or "linear CKA"
    colormap = matplotlib.colormaps[cmap].with_extremes(bad="lightgrey")
    image = ax.imshow(matrix, cmap=colormap, vmin=vmin, vmax=vmax, origin="upper", interpolation="nearest",
                      aspect="auto")
    ax.figure.colorbar(image, ax=ax, shrink=0.85, label=bar_label)
    _set_layer_ticks(ax, layers_a, layers_b)
    ax.set_ylabel(label(label_a or "layer"))
    ax.set_xlabel(label(label_b or "layer"))
    ax.set_title(label(title, limit=TITLE_CHARS), fontsize=10)
    return ax


def _new_figure(size: tuple[float, float], interactive: bool):
    if interactive:  # let pyplot show it
        import matplotlib.pyplot as plt

        return plt.figure(figsize=size, layout="constrained")
    from matplotlib.figure import Figure  # file only: no GUI backend involved

    return Figure(figsize=size, layout="constrained")


@literal_text
def plot_heatmaps(
    d: np.ndarray,
    cka: np.ndarray,
    layers_a: Sequence[str],
    *,
    layers_b: Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
    titles: tuple[str, str] | None = None,
    label_a: str | None = None,
    label_b: str | None = None,
) -> Figure:
    """Two heat maps side by side: the modularity difference ``d`` (left) and ``cka`` (right), both (La, Lb).

    Rows are ``layers_a`` (model A), columns ``layers_b`` (model B; None: ``layers_a``); layer 0 is top-left.
    D uses the reversed colormap (0 = bright), CKA the plain one on [0, 1], so similar layers are bright in both;
    NaN cells are grey. With many layers the names are thinned and set smaller, and the panels stop growing at
    :data:`_MAX_PANEL` inches; names are drawn literally and shortened (see :mod:`layermod.io.validate`).
    ``titles`` replaces the two panel titles, ``label_a``/``label_b`` the axis labels. Returns the matplotlib
    Figure; with ``path`` it is also saved as PNG (written atomically).
    """
    layers_b = layers_a if layers_b is None else layers_b
    shape = (len(layers_a), len(layers_b))
    titles = titles or (None, None)
    panel = heatmap_inches(max(shape))
    fig = _new_figure((2 * panel + 1.5, panel), interactive=path is None)
    for ax, matrix, kind, title in zip(fig.subplots(1, 2), (d, cka), ("d", "cka"), titles):
        draw_heatmap(ax, matrix, kind, layers_a, layers_b, title=title, label_a=label_a, label_b=label_b)
    if path is not None:
        save_png(fig, path)
    return fig
