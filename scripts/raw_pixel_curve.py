"""The modularity of Fashion-MNIST's raw pixels on the draws every curve of REPRODUCTION.md uses (5 disjoint
class-balanced draws of 100 test images per class, k = 3, cosine): where the curves start before any layer.
Writes docs/reproduction/raw-pixels/ (curve.json, .csv, .png); a few seconds on one core.

    .venv/bin/python scripts/raw_pixel_curve.py [OUT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

import layermod as lm
from layermod.data import load_dataset

THREADS = 1


def main(out: Path) -> None:
    torch.set_num_threads(THREADS)
    curve = lm.modularity_curve(nn.Sequential(nn.Flatten()), load_dataset("fashion-mnist", split="test"), layers=["0"],
                                n_per_class=100, repeats=5, seed=0, progress=False)
    config = {**curve.config, "model": "raw pixels (flattened 28 x 28 images)", "dataset": "fashion-mnist",
              "split": "test", "torch_threads": THREADS}
    lm.Curve(curve.layers, curve.values, config=config).save(out)
    print(f"raw pixels: Q = {curve.mean[0]:.3f} ± {curve.std[0]:.3f} over {len(curve.values)} draws -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/reproduction/raw-pixels"))
