"""Benchmark: layermod's all-pairs minibatch CKA against the pairwise way of computing it.

What it measures, on identical seeded synthetic features (``--layers`` layers of decreasing width, each the
ReLU of a random projection of shared class-structured inputs, float32), for ``--draws`` minibatches of
``--n`` samples each:

* ``t_ref``  -- the pairwise way (as in common CKA tools that compare two models batch by batch): for every
  pair of layers and every minibatch, both Gram matrices are computed again from the features and the
  unbiased HSIC (Song et al. 2012) is accumulated; CKA = sum HSIC(K, L) / sqrt(sum HSIC(K, K) sum HSIC(L, L)).
  float64, the accuracy yardstick.
* ``t_ours`` -- ``layermod.measure.similarity.layer_grams`` once per layer, then ``cka_matrix(..., unbiased=True)``
  (one matrix product over all flattened, U-centred Grams).

Prints both times, the speed-up and the largest absolute difference between the two matrices. It is a report:
the exit code is 0 whatever the figures.

Run from the repository root::

    .venv/bin/python benchmarks/bench_cka.py                    # 10 layers, 5 draws of 500 samples
    .venv/bin/python benchmarks/bench_cka.py --layers 6 --n 300 # quicker
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from layermod.measure.similarity import cka_matrix, layer_grams


def synthetic_layers(n_layers: int, samples: int, seed: int) -> list[torch.Tensor]:
    """(samples, D_l) float32 features, D_l from 4096 down to 256, sharing 10 classes' structure."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(samples) % 10
    base = torch.randn(10, 256, generator=gen)[labels] + torch.randn(samples, 256, generator=gen)
    widths = np.geomspace(4096, 256, n_layers).astype(int)
    return [torch.relu(base @ torch.randn(256, int(d), generator=gen) / 16) for d in widths]


def unbiased_hsic(k: torch.Tensor, l: torch.Tensor) -> float:
    """Song et al.'s unbiased HSIC of two (n, n) Gram matrices, written out term by term."""
    n = len(k)
    k, l = k.clone(), l.clone()
    k.fill_diagonal_(0)
    l.fill_diagonal_(0)
    ones = torch.ones(n, 1, dtype=k.dtype)
    trace = (k * l).sum()
    sums = k.sum() * l.sum() / ((n - 1) * (n - 2))
    cross = 2 / (n - 2) * (ones.T @ k @ l @ ones).squeeze()
    return float((trace + sums - cross) / (n * (n - 3)))


def pairwise_cka(layers: list[torch.Tensor], draws: list[np.ndarray]) -> np.ndarray:
    """The reference: Grams recomputed for every pair and draw."""
    size = len(layers)
    out = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            kl = kk = ll = 0.0
            for draw in draws:
                x, y = layers[i][draw].double(), layers[j][draw].double()
                k, l = x @ x.T, y @ y.T
                kl += unbiased_hsic(k, l)
                kk += unbiased_hsic(k, k)
                ll += unbiased_hsic(l, l)
            out[i, j] = kl / np.sqrt(kk * ll)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--n", type=int, default=500, help="samples per draw")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    layers = synthetic_layers(args.layers, args.n * args.draws, args.seed)
    draws = [np.arange(r * args.n, (r + 1) * args.n) for r in range(args.draws)]

    start = time.perf_counter()
    ours = cka_matrix([layer_grams(features, draws) for features in layers], unbiased=True)
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    reference = pairwise_cka(layers, draws)
    t_ref = time.perf_counter() - start

    print(f"{args.layers} layers (D {layers[0].shape[1]} .. {layers[-1].shape[1]}), {args.draws} draws x {args.n} "
          f"samples, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"pairwise reference {t_ref:8.2f} s")
    print(f"layermod           {t_ours:8.2f} s")
    print(f"speed-up           {t_ref / t_ours:8.1f}x")
    print(f"max |difference|   {np.abs(ours - reference).max():.2e}")


if __name__ == "__main__":
    main()
