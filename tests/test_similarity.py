"""Tests of layermod.measure.similarity against plainly written oracles.

The oracles follow the formulas literally and share no code with the library: linear CKA in feature space
(``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``), the biased HSIC with an explicit centring matrix H, and
the unbiased HSIC both as Song et al.'s closed form and as the U-statistic over distinct index tuples it
estimates.
"""

from __future__ import annotations

import itertools
import math

import matplotlib.figure
import numpy as np
import pytest
import torch
from assertions import assert_one_line
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layermod.errors import FeatureError, LayermodError
from layermod.measure.similarity import (
    centered_gram,
    cka_matrix,
    hsic,
    layer_grams,
    linear_cka,
    modularity_difference,
    plot_heatmaps,
)

HYP = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------- oracles


def feature_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Biased linear CKA in feature space."""
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    return np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))


def textbook_hsic(k: np.ndarray, l: np.ndarray) -> float:
    """tr(K H L H) / (n-1)^2 with the explicit centring matrix H."""
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def song_hsic(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al.'s unbiased HSIC, closed form, with explicit loops for the sums."""
    n = len(k)
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    trace = sum(kt[i, j] * lt[j, i] for i in range(n) for j in range(n))
    sum_k, sum_l = kt.sum(), lt.sum()
    chain = sum(kt[i, j] * lt[j, r] for i in range(n) for j in range(n) for r in range(n))
    return (trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2 / (n - 2) * chain) / (n * (n - 3))


def u_statistic_hsic(k: np.ndarray, l: np.ndarray) -> float:
    """The U-statistic Song et al.'s estimator is derived from, averaged over distinct index tuples:
    mean k_ij l_ij + mean k_ij l_qr - 2 mean k_ij l_iq."""
    n = len(k)
    pairs = np.mean([k[i, j] * l[i, j] for i, j in itertools.permutations(range(n), 2)])
    quads = np.mean([k[i, j] * l[q, r] for i, j, q, r in itertools.permutations(range(n), 4)])
    triples = np.mean([k[i, j] * l[i, q] for i, j, q in itertools.permutations(range(n), 3)])
    return pairs + quads - 2 * triples


def random_pair(seed: int, n: int, p: int, q: int) -> tuple[np.ndarray, np.ndarray]:
    """Features x (n, p) and y (n, q) where y partly depends on x, so CKA is neither 0 nor 1."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)) * rng.uniform(0.2, 3.0, size=p) + rng.normal(size=p)
    y = np.tanh(x @ rng.normal(size=(p, q))) + 0.5 * rng.normal(size=(n, q))
    return x, y


def orthogonal(seed: int, p: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(p, p)))
    return q


# ------------------------------------------------------------------------------------ CKA against oracles


@pytest.mark.parametrize(("n", "p", "q"), [(10, 3, 7), (40, 60, 5), (25, 1, 1), (100, 200, 300)])
def test_linear_cka_matches_the_feature_space_formula(n, p, q):
    x, y = random_pair(n + p + q, n, p, q)
    assert linear_cka(x, y) == pytest.approx(feature_cka(x, y), rel=1e-10)
    assert linear_cka(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(feature_cka(x, y), rel=1e-10)


def test_gram_form_equals_feature_form():
    x, y = random_pair(1, 30, 8, 12)
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    gram_x, gram_y = centered_gram(x), centered_gram(y)
    assert gram_x.dtype == torch.float64 and gram_x.shape == (30, 30)
    np.testing.assert_allclose(gram_x.numpy(), xc @ xc.T, rtol=1e-12, atol=1e-12)
    # <Kc, Lc>_F = ||Yc^T Xc||_F^2, so HSIC (n-1)^2 is the feature-space numerator
    assert hsic(gram_x, gram_y) * 29**2 == pytest.approx(np.linalg.norm(yc.T @ xc) ** 2, rel=1e-12)
    # a centred Gram is doubly centred: rows and columns sum to zero
    np.testing.assert_allclose(gram_x.sum(dim=0).numpy(), 0.0, atol=1e-10)


def test_biased_hsic_is_the_textbook_formula_for_centred_and_uncentred_grams():
    x, y = random_pair(2, 15, 4, 6)
    k, l = x @ x.T, y @ y.T  # uncentred Grams
    expected = textbook_hsic(k, l)
    assert hsic(torch.from_numpy(k), torch.from_numpy(l)) == pytest.approx(expected, rel=1e-10)
    assert hsic(centered_gram(x), centered_gram(y)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("n", [4, 6, 7])
def test_unbiased_hsic_matches_song_et_al(n):
    x, y = random_pair(n, n, 3, 2)
    k, l = x @ x.T, y @ y.T
    reference = u_statistic_hsic(k, l)
    assert song_hsic(k, l) == pytest.approx(reference, rel=1e-10)  # the two oracles agree
    assert hsic(torch.from_numpy(k), torch.from_numpy(l), unbiased=True) == pytest.approx(reference, rel=1e-10)


def test_unbiased_hsic_is_invariant_to_centring():
    """The library feeds centred Grams to the unbiased estimator; that must not change its value."""
    x, y = random_pair(3, 12, 5, 4)
    k, l = x @ x.T, y @ y.T
    h = np.eye(12) - 1 / 12
    expected = song_hsic(k, l)
    assert song_hsic(h @ k @ h, h @ l @ h) == pytest.approx(expected, rel=1e-10)  # true of the formula itself
    assert hsic(centered_gram(x), centered_gram(y), unbiased=True) == pytest.approx(expected, rel=1e-10)
    assert hsic(torch.from_numpy(h @ k @ h), torch.from_numpy(l), unbiased=True) == pytest.approx(expected, rel=1e-10)


def test_unbiased_cka_uses_the_unbiased_hsic():
    x, y = random_pair(4, 20, 6, 3)
    k, l = x @ x.T, y @ y.T
    expected = song_hsic(k, l) / math.sqrt(song_hsic(k, k) * song_hsic(l, l))
    assert linear_cka(x, y, unbiased=True) == pytest.approx(expected, rel=1e-10)
    assert linear_cka(x, y, unbiased=True) != pytest.approx(linear_cka(x, y), rel=1e-3)


# ------------------------------------------------------------------------------------------- invariances


shapes = {"seed": st.integers(0, 2**32 - 1), "n": st.integers(5, 30), "p": st.integers(1, 10), "q": st.integers(1, 10)}


@HYP
@given(**shapes, unbiased=st.booleans())
def test_cka_of_features_with_themselves_is_one_and_cka_is_symmetric(seed, n, p, q, unbiased):
    x, y = random_pair(seed, n, p, q)
    assert linear_cka(x, x, unbiased=unbiased) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, y, unbiased=unbiased) == pytest.approx(linear_cka(y, x, unbiased=unbiased), rel=1e-12,
                                                                abs=1e-14)


@HYP
@given(**shapes, scale=st.floats(1e-3, 1e3), unbiased=st.booleans())
def test_cka_is_invariant_to_orthogonal_maps_isotropic_scaling_and_shifts(seed, n, p, q, scale, unbiased):
    x, y = random_pair(seed, n, p, q)
    base = linear_cka(x, y, unbiased=unbiased)
    shift = np.random.default_rng(seed + 1).normal(size=p) * 10
    for x2 in (x @ orthogonal(seed, p), scale * x, x + shift):
        assert linear_cka(x2, y, unbiased=unbiased) == pytest.approx(base, rel=1e-9, abs=1e-12)
    assert linear_cka(x, y @ orthogonal(seed + 2, q) * scale, unbiased=unbiased) == pytest.approx(base, rel=1e-9,
                                                                                                  abs=1e-12)


@HYP
@given(**shapes)
def test_biased_cka_lies_in_the_unit_interval(seed, n, p, q):
    x, y = random_pair(seed, n, p, q)
    assert 0.0 <= linear_cka(x, y) <= 1.0
    assert 0.0 <= linear_cka(x, np.random.default_rng(seed).normal(size=(n, q))) <= 1.0


def test_cka_is_not_invariant_to_a_general_invertible_map():
    """Y is X's first column; stretching X's second column (an invertible, non-orthogonal map) hides it."""
    x = np.random.default_rng(5).normal(size=(50, 2))
    y = x[:, :1]
    stretch = np.diag([1.0, 100.0])
    assert feature_cka(x @ stretch, y) == pytest.approx(linear_cka(x @ stretch, y), rel=1e-10)
    assert linear_cka(x, y) > 0.5
    assert linear_cka(x @ stretch, y) < 0.01


# ----------------------------------------------------------------------------------------------- matrices


def layer_stack(seed: int, n_total: int, layers: int) -> list[np.ndarray]:
    """Features (n_total, D_l) of ``layers`` layers that drift away from the first."""
    rng = np.random.default_rng(seed)
    features = [rng.normal(size=(n_total, 6))]
    for _ in range(layers - 1):
        features.append(np.tanh(features[-1] @ rng.normal(size=(features[-1].shape[1], rng.integers(3, 9))))
                        + 0.3 * rng.normal(size=(n_total, 1)))
    return features


def test_layer_grams_are_the_centred_grams_of_the_batches():
    x = layer_stack(6, 40, 1)[0]
    batches = [np.arange(0, 10), np.arange(30, 40), np.array([3, 1, 4, 15, 9, 26, 5, 35, 8, 7])]
    grams = layer_grams(torch.from_numpy(x).float(), batches)
    assert grams.shape == (3, 10, 10) and grams.dtype == torch.float64
    for gram, batch in zip(grams, batches):
        torch.testing.assert_close(gram, centered_gram(x[batch].astype(np.float32)))


def test_cka_matrix_of_one_model_is_symmetric_with_a_unit_diagonal():
    features = layer_stack(7, 60, 5)
    grams = [layer_grams(f, [np.arange(60)]) for f in features]
    for unbiased in (False, True):
        cka = cka_matrix(grams, unbiased=unbiased)
        assert cka.shape == (5, 5)
        np.testing.assert_array_equal(cka, cka.T)
        np.testing.assert_array_equal(np.diag(cka), 1.0)


def test_cka_matrix_with_one_batch_is_linear_cka_of_every_pair():
    features_a, features_b = layer_stack(8, 30, 4), layer_stack(9, 30, 3)
    grams_a = [layer_grams(f, [np.arange(30)]) for f in features_a]
    grams_b = [layer_grams(f, [np.arange(30)]) for f in features_b]
    for unbiased in (False, True):
        cka = cka_matrix(grams_a, grams_b=grams_b, unbiased=unbiased)
        assert cka.shape == (4, 3)
        expected = [[linear_cka(fa, fb, unbiased=unbiased) for fb in features_b] for fa in features_a]
        np.testing.assert_allclose(cka, expected, rtol=1e-10)
    np.testing.assert_allclose(cka_matrix(grams_a), [[feature_cka(fa, fb) for fb in features_a] for fa in features_a],
                               rtol=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_matrix_with_several_batches_is_the_minibatch_formula(unbiased):
    features = layer_stack(10, 24, 3)
    batches = [np.arange(0, 8), np.arange(8, 16), np.arange(16, 24)[::-1]]
    estimator = song_hsic if unbiased else textbook_hsic

    def summed(i: int, j: int) -> float:
        return sum(estimator(features[i][b] @ features[i][b].T, features[j][b] @ features[j][b].T) for b in batches)

    expected = [[summed(i, j) / math.sqrt(summed(i, i) * summed(j, j)) for j in range(3)] for i in range(3)]
    grams = [layer_grams(f, batches) for f in features]
    np.testing.assert_allclose(cka_matrix(grams, unbiased=unbiased), expected, rtol=1e-10)
    np.testing.assert_allclose(cka_matrix(grams, grams_b=grams, unbiased=unbiased), expected, rtol=1e-10)
    # not simply the mean of per-batch CKA
    per_batch = np.mean([cka_matrix([g[b:b + 1] for g in grams], unbiased=unbiased) for b in range(3)], axis=0)
    assert not np.allclose(per_batch, expected, rtol=1e-6)


def test_a_layer_without_variance_is_nan_in_the_matrix_and_an_error_for_one_pair():
    features = layer_stack(11, 20, 3)
    features[1] = np.full((20, 4), 0.1)
    grams = [layer_grams(f, [np.arange(10), np.arange(10, 20)]) for f in features]
    assert not grams[1].any()  # constant columns become exact zeros
    for unbiased in (False, True):
        cka = cka_matrix(grams, unbiased=unbiased)
        assert np.isnan(cka[1]).all() and np.isnan(cka[:, 1]).all()
        assert np.isfinite(cka[[0, 2]][:, [0, 2]]).all()
    with pytest.raises(FeatureError) as err:
        linear_cka(features[0], features[1])
    assert_one_line(err, "y has no variance across samples", "CKA is undefined")


@pytest.mark.parametrize("unbiased", [False, True])
def test_a_huge_common_offset_does_not_change_cka(unbiased):
    x, y = random_pair(12, 50, 20, 10)
    expected = linear_cka(x, y, unbiased=unbiased)
    assert linear_cka(x + 1e6, y - 1e6, unbiased=unbiased) == pytest.approx(expected, abs=1e-8)
    grams = [layer_grams(f, [np.arange(25), np.arange(25, 50)]) for f in (x, y)]
    shifted = [layer_grams(f, [np.arange(25), np.arange(25, 50)]) for f in (x + 1e6, y + 1e6)]
    np.testing.assert_allclose(cka_matrix(shifted, unbiased=unbiased), cka_matrix(grams, unbiased=unbiased), atol=1e-8)


def test_wide_features_are_processed_in_column_chunks():
    x = np.random.default_rng(13).normal(size=(8, 600_000)).astype(np.float32)
    x64 = x.astype(np.float64)
    xc = x64 - x64.mean(axis=0)
    np.testing.assert_allclose(centered_gram(x).numpy(), xc @ xc.T, rtol=1e-9)


# ------------------------------------------------------------------------------- modularity difference


def test_modularity_difference_values_and_shapes():
    d = modularity_difference([0.1, 0.4, 0.25])
    np.testing.assert_allclose(d, [[0, 0.3, 0.15], [0.3, 0, 0.15], [0.15, 0.15, 0]], atol=1e-15)
    two = modularity_difference(np.array([0.1, 0.5]), q_b=[0.2, 0.2, 0.9])
    assert two.shape == (2, 3)
    np.testing.assert_allclose(two, [[0.1, 0.1, 0.8], [0.3, 0.3, 0.4]], atol=1e-15)
    with pytest.raises(LayermodError) as err:
        modularity_difference(np.zeros((5, 3)))
    assert_one_line(err, "q_a", "1-D", "curve.mean")


# ---------------------------------------------------------------------------------------------------- plot


def test_plot_heatmaps_writes_a_png_for_two_models(tmp_path):
    q_a, q_b = [0.1, 0.3, 0.5], [0.2, 0.4]
    grams_a = [layer_grams(f, [np.arange(20)]) for f in layer_stack(14, 20, 3)]
    grams_b = [layer_grams(f, [np.arange(20)]) for f in layer_stack(15, 20, 2)]
    fig = plot_heatmaps(modularity_difference(q_a, q_b=q_b), cka_matrix(grams_a, grams_b=grams_b), ["a0", "a1", "a2"],
                        layers_b=["b0", "b1"], path=tmp_path / "sim.png", label_a="model A", label_b="model B")
    assert isinstance(fig, matplotlib.figure.Figure)
    assert (tmp_path / "sim.png").read_bytes()[:8] == PNG_MAGIC
    d_ax, cka_ax = fig.axes[:2]
    assert [t.get_text() for t in d_ax.get_yticklabels()] == ["a0", "a1", "a2"]
    assert [t.get_text() for t in cka_ax.get_xticklabels()] == ["b0", "b1"]
    assert d_ax.get_ylabel() == "model A" and cka_ax.get_xlabel() == "model B"
    assert "reversed" in fig.axes[2].get_ylabel()  # the D colorbar says small D is drawn bright
    assert d_ax.images[0].get_array()[0, 0] == pytest.approx(0.1)  # layer 0 x layer 0 is the top-left cell
    assert d_ax.get_ylim()[0] > d_ax.get_ylim()[1]  # rows run downwards


def test_plot_heatmaps_with_fifty_layers_thins_the_names(tmp_path):
    names = [f"features.{i}.conv" for i in range(50)]
    q = np.linspace(0, 0.8, 50)
    cka = np.exp(-np.abs(np.subtract.outer(q, q)) * 5)
    cka[7] = cka[:, 7] = np.nan  # a dead layer
    fig = plot_heatmaps(modularity_difference(q), cka, names, path=tmp_path / "fifty.png", titles=("D", "CKA"))
    assert (tmp_path / "fifty.png").stat().st_size > 1000
    labels = fig.axes[0].get_yticklabels()
    assert 10 <= len(labels) <= 25 and labels[0].get_text() == names[0]
    assert labels[0].get_fontsize() < 8
    assert [ax.get_title() for ax in fig.axes[:2]] == ["D", "CKA"]


def test_plot_heatmaps_refuses_matrices_that_do_not_fit_the_names():
    with pytest.raises(LayermodError) as err:
        plot_heatmaps(np.zeros((3, 3)), np.zeros((3, 2)), ["a", "b", "c"])
    assert_one_line(err, "cka has shape (3, 2)", "3 x 3")


# ---------------------------------------------------------------------------------------------- bad input


def test_mismatched_sample_counts_are_refused():
    x, y = random_pair(16, 12, 3, 3)
    with pytest.raises(FeatureError) as err:
        linear_cka(x, y[:10])
    assert_one_line(err, "x has 12 samples but y has 10")
    with pytest.raises(FeatureError) as err:
        cka_matrix([layer_grams(x, [np.arange(12)])], grams_b=[layer_grams(y, [np.arange(10)])])
    assert_one_line(err, "grams_b[0] has shape (1, 10, 10)", "same batches")
    with pytest.raises(FeatureError) as err:
        hsic(centered_gram(x), centered_gram(y[:10]))
    assert_one_line(err, "gram_b")


@pytest.mark.parametrize("n", [2, 3])
def test_unbiased_estimator_needs_more_than_three_samples(n):
    x, y = random_pair(17, n, 2, 2)
    assert 0.0 <= linear_cka(x, y) <= 1.0  # the biased one works
    with pytest.raises(FeatureError) as err:
        linear_cka(x, y, unbiased=True)
    assert_one_line(err, "n > 3", "more samples")
    with pytest.raises(FeatureError):
        cka_matrix([layer_grams(x, [np.arange(n)])], unbiased=True)
    with pytest.raises(FeatureError):
        hsic(centered_gram(x), centered_gram(y), unbiased=True)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_refused(bad):
    x = np.random.default_rng(18).normal(size=(10, 4))
    x[6, 2] = bad
    with pytest.raises(FeatureError) as err:
        centered_gram(x)
    assert_one_line(err, "NaN or Inf", "sample 6")
    with pytest.raises(FeatureError):
        layer_grams(x, [np.arange(5), np.arange(5, 10)])
    with pytest.raises(FeatureError) as err:
        centered_gram(np.array([[1e200, 0.0], [-1e200, 1.0], [0.0, 2.0]]))
    assert_one_line(err, "overflows", "rescale")


@pytest.mark.parametrize(
    ("features", "fragment"),
    [(np.zeros((4, 2, 3)), "shape (n, D)"), (np.zeros(5), "shape (n, D)"), (np.zeros((1, 3)), "at least 2 samples"),
     (np.zeros((4, 0)), "no columns")],
)
def test_features_of_the_wrong_shape_are_refused(features, fragment):
    with pytest.raises(FeatureError) as err:
        centered_gram(features)
    assert_one_line(err, fragment)


@pytest.mark.parametrize(
    ("batches", "fragment"),
    [([np.arange(4), np.arange(5)], "equal size"), ([np.array([0, 12])], "outside [0, 10)"),
     ([np.array([0.0, 1.0])], "integer sample indices"), ([], "no batches")],
)
def test_bad_batches_are_refused(batches, fragment):
    with pytest.raises(FeatureError) as err:
        layer_grams(np.random.default_rng(19).normal(size=(10, 3)), batches)
    assert_one_line(err, fragment)


def test_grams_of_the_wrong_shape_are_refused():
    gram = centered_gram(np.random.default_rng(20).normal(size=(6, 3)))
    with pytest.raises(FeatureError) as err:
        cka_matrix([gram])
    assert_one_line(err, "grams_a[0] must have shape (B, n, n)")
    with pytest.raises(FeatureError) as err:
        cka_matrix([gram[None]], grams_b=[])
    assert_one_line(err, "grams_b is empty")
