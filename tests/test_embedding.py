import json
import sys

import numpy as np
import pytest
import torch
from assertions import assert_one_line
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from models_for_tests import Shared, blobs, mlp

import layermod as lm
from layermod.analysis.views import (
    LayerView,
    embed_2d,
    layer_views,
    pick_layers,
    Views,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ODD_NAMES = ["<b>bold</b>", "fish & chips", 'say "hi" $5 or $6']


def small_blobs(n_per_class=10):
    return blobs(n_per_class=n_per_class, classes=3)


def seeded_mlp():
    torch.manual_seed(0)
    return mlp()


def svd_scores(x):
    """Top-2 principal component scores (n, 2) by SVD of the centred data."""
    centred = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    return u[:, :2] * s[:2]


def hand_view(labels=(0, 0, 1, 1), edges=((0, 1), (1, 2), (2, 3)), weights=(1.0, 2.0, 3.0), q=0.1):
    n = len(labels)
    coords = np.stack([np.arange(n), np.arange(n) ** 2], axis=1).astype(float)
    return LayerView("block.0", coords, np.array(labels), np.array(edges), np.array(weights), q)


@pytest.fixture(scope="module")
def views():
    x, y = small_blobs()
    return layer_views(seeded_mlp(), (x, y), n_per_class=6, k=3, seed=2)


# --- embed_2d ------------------------------------------------------------------------------------------------------


def test_pca_equals_the_top_two_components_of_an_svd_up_to_sign():
    x = np.random.default_rng(0).normal(size=(25, 40)) * np.linspace(3, 0.1, 40)
    got = embed_2d(x)
    expected = svd_scores(x)
    assert got.shape == (25, 2) and got.dtype == np.float64
    for col in range(2):
        sign = np.sign(got[:, col] @ expected[:, col])
        np.testing.assert_allclose(got[:, col], sign * expected[:, col], atol=1e-9)


def test_pca_is_deterministic_and_its_signs_are_fixed():
    x = torch.randn(30, 12, generator=torch.Generator().manual_seed(1))
    first = embed_2d(x)
    assert np.array_equal(first, embed_2d(x))
    assert np.array_equal(first, embed_2d(x.numpy()))
    # the largest-magnitude score of each component is positive, so flipping the data changes nothing
    assert (first[np.abs(first).argmax(axis=0), [0, 1]] > 0).all()
    np.testing.assert_allclose(embed_2d(-x), first, atol=1e-9)
    np.testing.assert_allclose(embed_2d(x + 5.0), first, atol=1e-5)


def test_pca_flattens_trailing_dimensions_and_handles_one_feature():
    x = torch.randn(8, 2, 3, 3, generator=torch.Generator().manual_seed(2))
    np.testing.assert_allclose(embed_2d(x), embed_2d(x.reshape(8, -1)))
    line = embed_2d(np.arange(6.0)[:, None])
    np.testing.assert_allclose(np.abs(line[:, 0]), np.abs(np.arange(6.0) - 2.5))
    np.testing.assert_allclose(line[:, 1], 0, atol=1e-6)


def test_tsne_is_seeded():
    x, _ = small_blobs(n_per_class=8)
    x = x.flatten(1)
    first = embed_2d(x, method="tsne", seed=3)
    assert first.shape == (24, 2) and np.isfinite(first).all()
    assert np.array_equal(first, embed_2d(x, method="tsne", seed=3))


def test_embedding_rejects_bad_methods_and_features():
    with pytest.raises(lm.LayermodError) as err:
        embed_2d(np.ones((4, 3)), method="umap")
    assert_one_line(err, "'umap'", "pca", "tsne")
    with pytest.raises(lm.FeatureError):
        embed_2d(np.ones((1, 3)))
    with pytest.raises(lm.FeatureError):
        embed_2d(np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]))


def test_tsne_without_scikit_learn_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    with pytest.raises(lm.LayermodError) as err:
        embed_2d(np.random.default_rng(0).normal(size=(10, 3)), method="tsne")
    assert_one_line(err, "t-SNE needs scikit-learn", "pip install scikit-learn", "method='pca'")
    x, y = small_blobs()
    with pytest.raises(lm.LayermodError, match="scikit-learn"):  # before any forward pass
        layer_views(seeded_mlp(), (x, y), n_per_class=4, method="tsne")
    assert embed_2d(np.random.default_rng(0).normal(size=(10, 3))).shape == (10, 2)  # PCA needs no sklearn


# --- layer_views ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_layer_views_show_the_graph_whose_modularity_they_report(metric):
    x, y = small_blobs()
    model = seeded_mlp()
    got = layer_views(model, (x, y), n_per_class=6, k=3, seed=2, metric=metric)
    names = lm.select_layers(model, "auto", lm.trace_calls(model, x[:2]))
    assert [v.layer for v in got] == names == ["1", "3", "5"]
    draw = lm.balanced_draws(y.numpy(), n_per_class=6, repeats=1, seed=2)[0]
    features = lm.extract_features(model, x[draw], layers=names)
    for view in got:
        adjacency = lm.knn_graph(features[view.layer], k=3, metric=metric)
        dense = adjacency.toarray()
        i, j = np.nonzero(np.triu(dense, k=1))
        assert len(view.labels) == len(view.coords) == 6 * 3
        assert np.array_equal(np.bincount(view.labels), [6, 6, 6])
        assert np.array_equal(view.labels, y[draw].numpy())
        assert np.array_equal(view.edges, np.stack([i, j], axis=1))
        np.testing.assert_array_equal(view.weights, dense[i, j])
        assert view.q == lm.modularity(adjacency, y[draw])
        np.testing.assert_array_equal(view.coords, embed_2d(features[view.layer]))


@pytest.mark.parametrize("graph", [{"symmetrize": "mutual"}, {"symmetrize": "union", "weighted": False}])
def test_layer_views_build_the_graph_the_curve_was_measured_on(graph):
    x, y = small_blobs()
    model = seeded_mlp()
    views = layer_views(model, (x, y), n_per_class=6, k=3, seed=2, **graph)
    curve = lm.modularity_curve(model, (x, y), k=3, n_per_class=6, repeats=1, seed=2, **graph)
    np.testing.assert_allclose(curve.values[0], [v.q for v in views], rtol=0, atol=1e-12)
    if graph.get("weighted") is False:
        assert all(np.all(v.weights == 1.0) for v in views)


def test_layer_views_use_the_samples_of_a_one_draw_curve(views):
    x, y = small_blobs()
    curve = lm.modularity_curve(seeded_mlp(), (x, y), k=3, n_per_class=6, repeats=1, seed=2)
    assert curve.layers == [v.layer for v in views]
    np.testing.assert_allclose(curve.values[0], [v.q for v in views], rtol=0, atol=1e-12)


def test_layer_views_of_chosen_layers_and_a_layer_called_twice():
    x, y = small_blobs()
    model = seeded_mlp()
    picked = pick_layers(lm.select_layers(model, "auto", lm.trace_calls(model, x[:2])), count=2)
    assert [v.layer for v in layer_views(model, (x, y), layers=picked, n_per_class=4)] == ["1", "5"]
    torch.manual_seed(0)
    shared = Shared()
    [twice] = layer_views(shared, (x, y), layers=["twice#2"], n_per_class=4, seed=1)
    draw = lm.balanced_draws(y.numpy(), n_per_class=4, repeats=1, seed=1)[0]
    last_call = lm.extract_features(shared, x[draw], layers=["twice#2"])["twice#2"]  # its second call
    assert np.array_equal(twice.coords, embed_2d(last_call))
    assert twice.q == lm.modularity(lm.knn_graph(last_call, k=3), y[draw])


def test_layer_views_check_k_before_the_forward_pass():
    x, y = small_blobs()
    with pytest.raises(lm.GraphError) as err:
        layer_views(seeded_mlp(), (x, y), n_per_class=2, k=6)
    assert_one_line(err, "k=6", "lower k")
    with pytest.raises(lm.LayermodError, match="unknown embedding method"):
        layer_views(seeded_mlp(), (x, y), method="mds")


# --- LayerView -----------------------------------------------------------------------------------------------------


def test_intra_fraction_of_a_hand_made_graph():
    view = hand_view()
    assert view.intra_fraction == pytest.approx((1.0 + 3.0) / 6.0)
    assert hand_view(labels=(0, 1, 0, 1)).intra_fraction == 0.0
    assert hand_view(edges=((0, 1),), weights=(2.0,)).intra_fraction == 1.0
    assert np.isnan(hand_view(edges=(), weights=()).intra_fraction)


def test_views_hold_checked_arrays():
    view = hand_view()
    assert view.coords.dtype == np.float64 and view.weights.dtype == np.float64
    assert view.labels.dtype == np.int64 and view.edges.dtype == np.int64
    assert view.edges.shape == (3, 2)
    with pytest.raises(lm.LayermodError) as err:
        hand_view(edges=((0, 1), (3, 2)))
    assert_one_line(err, "block.0", "i < j")
    with pytest.raises(lm.LayermodError):
        LayerView("x", np.zeros((3, 2)), np.array([0.5, 1, 2]), np.zeros((0, 2), int), np.zeros(0), 0.0)


# --- dict / JSON ---------------------------------------------------------------------------------------------------


def test_views_survive_a_json_round_trip(views):
    config = {"method": "pca", "k": 3, "n_per_class": 6, "seed": 2, "metric": "cosine"}
    text = json.dumps(Views(views, class_names=ODD_NAMES, config=config).to_dict())
    back = Views.from_dict(json.loads(text))
    assert back.class_names == ODD_NAMES and back.config == config
    assert len(back.views) == len(views)
    for old, new in zip(views, back.views):
        assert new.layer == old.layer and new.q == old.q
        for field in ("coords", "labels", "edges", "weights"):
            assert np.array_equal(getattr(new, field), getattr(old, field)), field
            assert getattr(new, field).dtype == getattr(old, field).dtype, field


def test_class_names_and_config_are_optional(views):
    data = Views(views).to_dict()
    assert data["class_names"] is None and data["config"] == {}
    del data["class_names"], data["config"]
    back = Views.from_dict(data)
    assert back.class_names is None and back.config == {} and len(back.views) == 3


def test_class_names_must_name_every_label(views):
    with pytest.raises(lm.LayermodError) as err:
        Views(views, class_names=["a", "b"])
    assert_one_line(err, "2 class names", "one name per class")


def _set(path, value):
    def corrupt(data):
        *parents, last = path
        target = data
        for key in parents:
            target = target[key]
        target[last] = value

    return corrupt


def _delete(path):
    def corrupt(data):
        *parents, last = path
        target = data
        for key in parents:
            target = target[key]
        del target[last]

    return corrupt


CORRUPTIONS = {
    "no layers": _delete(["layers"]),
    "layers not a list": _set(["layers"], {"0": {}}),
    "layer not an object": _set(["layers", 0], [1, 2]),
    "no coords": _delete(["layers", 0, "coords"]),
    "no q": _delete(["layers", 1, "q"]),
    "q a string": _set(["layers", 0, "q"], "0.5"),
    "layer name a number": _set(["layers", 0, "layer"], 3),
    "coords shorter than labels": lambda d: d["layers"][0]["coords"].pop(),
    "coords of three values": _set(["layers", 0, "coords", 0], [1.0, 2.0, 3.0]),
    "coords not numbers": _set(["layers", 0, "coords", 0], ["a", "b"]),
    "coords null": _set(["layers", 0, "coords", 0], [None, 1.0]),
    "labels not integers": _set(["layers", 0, "labels", 0], 0.5),
    "edge out of range": _set(["layers", 0, "edges", 0], [0, 18]),
    "negative edge": _set(["layers", 0, "edges", 0], [-1, 2]),
    "edge not i < j": _set(["layers", 0, "edges", 0], [5, 5]),
    "edge of three nodes": _set(["layers", 0, "edges", 0], [0, 1, 2]),
    "weights shorter than edges": lambda d: d["layers"][0]["weights"].pop(),
    "negative weight": _set(["layers", 0, "weights", 0], -1.0),
    "class names not a list": _set(["class_names"], "abc"),
    "class names too few": _set(["class_names"], ["a", "b"]),
    "class names not strings": _set(["class_names"], [1, 2, 3]),
    "config not an object": _set(["config"], ["k", 3]),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_malformed_dicts_are_one_line_errors(views, corrupt):
    data = json.loads(json.dumps(Views(views, class_names=["a", "b", "c"], config={"k": 3}).to_dict()))
    corrupt(data)
    with pytest.raises(lm.LayermodError) as err:
        Views.from_dict(data)
    assert_one_line(err, "malformed embedding data", "Views.save")


@pytest.mark.parametrize("data", [None, [], "layers", 3])
def test_non_dicts_are_malformed(data):
    with pytest.raises(lm.LayermodError, match="malformed embedding data"):
        Views.from_dict(data)


# --- pictures and files --------------------------------------------------------------------------------------------


def test_views_figure_draws_samples_and_graph_per_layer(views):
    fig = Views(views, class_names=ODD_NAMES).figure()
    top, bottom = fig.axes[:3], fig.axes[3:6]
    for col, view in enumerate(views):
        title = top[col].get_title()
        assert view.layer in title and f"{view.q:.3f}" in title and f"{view.intra_fraction:.0%}" in title
        lines = [c for c in bottom[col].collections if isinstance(c, LineCollection)]
        inside = view.labels[view.edges[:, 0]] == view.labels[view.edges[:, 1]]
        red = [c for c in lines if np.allclose(c.get_colors()[0][:3], to_rgba("tab:red")[:3])]
        grey = [c for c in lines if np.allclose(c.get_colors()[0][:3], to_rgba("lightgrey")[:3])]
        assert sum(len(c.get_segments()) for c in lines) == len(view.edges)
        assert sum(len(c.get_segments()) for c in red) == (~inside).sum()
        assert sum(len(c.get_segments()) for c in grey) == inside.sum()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1
    texts = legends[0].get_texts()
    assert [t.get_text() for t in texts] == ODD_NAMES and not any(t.get_parse_math() for t in texts)  # literal


def test_more_than_ten_classes_get_distinct_colours():
    labels = np.repeat(np.arange(12), 2)
    view = LayerView("x", np.random.default_rng(0).normal(size=(24, 2)), labels, np.array([[0, 1], [1, 2]]),
                     np.array([1.0, 0.5]), 0.3)
    ax = Views([view]).plot()
    colours = ax.collections[0].get_facecolors()
    assert len({tuple(np.round(c, 4)) for c in colours}) == 12


def test_save_views_writes_png_then_json(views, tmp_path):
    config = {"method": "pca", "k": 3}
    out = Views(views, class_names=ODD_NAMES, config=config).save(tmp_path / "run")
    assert out == tmp_path / "run"
    assert sorted(p.name for p in out.iterdir()) == ["embedding.json", "embedding.png"]
    assert (out / "embedding.png").read_bytes().startswith(PNG_MAGIC)
    back = Views.load(out)
    assert back.class_names == ODD_NAMES and back.config == config and [v.layer for v in back.views] == ["1", "3", "5"]


def test_save_views_writes_nothing_for_bad_class_names(views, tmp_path):
    with pytest.raises(lm.LayermodError):
        Views(views, class_names=["only one"]).save(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_plot_views_needs_a_view():
    with pytest.raises(lm.LayermodError, match="no layer views"):
        Views([]).plot()


def test_plot_draws_one_layer_samples_or_graph(views):
    chosen = Views(views, class_names=ODD_NAMES)
    assert chosen.plot().get_title().startswith(views[-1].layer)
    graph = chosen.plot(layer=views[0].layer, graph=True)
    assert sum(len(c.get_segments()) for c in graph.collections if isinstance(c, LineCollection)) == len(views[0].edges)
    with pytest.raises(lm.LayermodError, match="no view of layer"):
        chosen.plot(layer="nowhere")


# --- pick_layers ---------------------------------------------------------------------------------------------------


NAMES = [f"layer{i}" for i in range(9)]


@pytest.mark.parametrize(
    ("names", "count", "expected"),
    [
        (NAMES, 3, ["layer0", "layer4", "layer8"]),
        (NAMES, 2, ["layer0", "layer8"]),
        (NAMES, 1, ["layer8"]),
        (NAMES, 9, NAMES),
        (NAMES, 20, NAMES),
        (NAMES[:2], 3, NAMES[:2]),
        ([], 3, []),
        ([str(i) for i in range(10)], 4, ["0", "3", "6", "9"]),
        ([str(i) for i in range(10)], 3, ["0", "5", "9"]),
    ],
)
def test_pick_layers(names, count, expected):
    assert pick_layers(names, count=count) == expected


def test_pick_layers_spreads_without_repeats():
    for total in range(1, 30):
        names = [str(i) for i in range(total)]
        for count in range(1, 8):
            picked = pick_layers(names, count=count)
            assert len(picked) == min(total, count) and len(set(picked)) == len(picked)
            assert picked[-1] == names[-1] and (count == 1 or picked[0] == names[0])
            assert [int(p) for p in picked] == sorted(int(p) for p in picked)


@pytest.mark.parametrize("count", [0, -1, 1.5, True])
def test_pick_layers_rejects_bad_counts(count):
    with pytest.raises(lm.LayermodError, match="positive integer"):
        pick_layers(NAMES, count=count)
