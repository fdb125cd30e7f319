"""The demo: train a small CNN on Fashion-MNIST (or reuse it from the cache), then measure its curve.

The curve uses the paper's defaults (cosine kNN graph, k = 3) on 5 disjoint class-balanced draws of 1,000
test images (100 per class), with a 20-shuffle label-permutation null for z-scores. Beside it: 2-D views and
kNN graphs of the first, middle and last layers (PCA, 30 images per class), and the HTML report of it all.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, replace
from pathlib import Path

import torch

from layermod import models
from layermod.models.checkpoint import load_checkpoint, save_checkpoint
from layermod.analysis.curve import Curve, modularity_curve
from layermod.data.datasets import load_dataset
from layermod.analysis.views import Views, layer_views, pick_layers
from layermod.io.files import ensure_writable_dir
from layermod.io.runs import check_replaceable, staged_run
from layermod.io.rundir import CURVE_CSV, CURVE_JSON, CURVE_PNG, EMBEDDING_JSON, EMBEDDING_PNG, REPORT_HTML
from layermod.measure.config import DrawConfig, GraphConfig
from layermod.analysis.curve_plot import curve_table
from layermod.report.page import write_report
from layermod.training.train import TrainConfig, evaluate, train

__all__ = ["run_demo", "DEMO_ARCH", "DEMO_ARCH_ARGS", "DEMO_DRAWS", "DEMO_TRAINING"]

DEMO_ARCH = "smallcnn"
DEMO_ARCH_ARGS = {"num_classes": 10, "in_channels": 1, "width": 1.0}
DEMO_TRAINING = TrainConfig(epochs=3, batch_size=128, lr=0.05, schedule="cosine", seed=0)
DEMO_DRAWS = DrawConfig(n_per_class=100, null_permutations=20)  # the paper's graph: GraphConfig's defaults


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir:
        return Path(cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "layermod" / "demo"


def run_demo(
    *,
    out: str | os.PathLike = "runs/demo",
    epochs: int | None = None,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    retrain: bool = False,
    progress: bool = True,
) -> Curve:
    """Train or reuse the demo model, write ``out``/curve.{json,csv,png}, embedding.{json,png} and report.html,
    print the per-layer table."""
    check_replaceable(out)
    test_set = load_dataset("fashion-mnist", split="test", data_dir=data_dir)
    config = replace(DEMO_TRAINING, epochs=epochs or DEMO_TRAINING.epochs)
    recipe = {"arch": DEMO_ARCH, "arch_args": DEMO_ARCH_ARGS, "training": asdict(config), "dataset": "fashion-mnist"}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    weights = _cache_root(cache_dir) / key / "model.safetensors"

    if weights.is_file() and not retrain:
        model, meta = load_checkpoint(weights)
        print(f"reusing the demo model trained earlier: {weights}")
    else:
        ensure_writable_dir(weights.parent)
        train_set = load_dataset("fashion-mnist", split="train", data_dir=data_dir)
        torch.manual_seed(config.seed)  # the initial weights, so that a retrained demo is the same model
        model = models.create(DEMO_ARCH, **DEMO_ARCH_ARGS)
        print(f"training {DEMO_ARCH} on Fashion-MNIST for {config.epochs} epochs (cached afterwards in {weights.parent})")
        history = train(model, train_set, test_set, config, progress=progress)
        meta = {**recipe, "normalization": test_set.normalization, "history": history,
                "test_accuracy": history[-1]["test_acc"]}
        save_checkpoint(model, weights, meta)
    accuracy = evaluate(model, test_set)
    print(f"test accuracy: {100 * accuracy:.2f} %")

    curve = modularity_curve(model, test_set, draws=DEMO_DRAWS, progress=progress)
    curve = curve.with_config(model=DEMO_ARCH, arch_args=DEMO_ARCH_ARGS, weights=str(weights),
                              dataset="fashion-mnist", split="test", data_dir=str(data_dir) if data_dir else None,
                              test_accuracy=accuracy, training=recipe["training"])  # the same bytes, cached or not
    graph = GraphConfig.from_dict(curve.config)
    views = layer_views(model, test_set, layers=pick_layers(curve.layers, count=3), n_per_class=30,
                        seed=DEMO_DRAWS.seed,
                        graph=graph)
    with staged_run(out) as stage:
        Views(views, class_names=test_set.classes, config={"method": "pca", "n_per_class": 30, "seed": DEMO_DRAWS.seed,
                                         **graph.to_dict()}).save(stage)
        curve.save(stage)
    out_dir = Path(out)
    write_report([out_dir], out_dir / REPORT_HTML, title=f"layermod demo: {DEMO_ARCH} on Fashion-MNIST")
    print(curve_table(curve))
    print(f"wrote {out_dir / CURVE_JSON}, {CURVE_CSV}, {CURVE_PNG}, {EMBEDDING_JSON}, {EMBEDDING_PNG} and "
          f"{REPORT_HTML} (open it in a browser)")
    return curve
