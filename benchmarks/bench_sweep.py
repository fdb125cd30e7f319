"""Benchmark: one 16-item sweep, run in this process one item after another against Ray with 2 workers.

What it measures, on seeded synthetic data (10 classes of 1x28x28 images around class centres, a .npz file) and
a random-init ``smallcnn`` (width 0.5), for a grid of 4 values of k x 4 seeds (16 curves of 3 draws x 50 samples
per class, no 2-D views), each item with one torch thread:

* ``t_local`` -- ``layermod sweep SPEC --out DIR`` (the default local backend: this process, sequentially);
* ``t_ray``   -- ``layermod sweep SPEC --out DIR --backend ray --workers 2``: an embedded Ray with 2 CPUs, one
  task per item, Ray's start and stop included.

Prints both times, the speed-up ``t_local / t_ray`` (at most 2 on 2 workers), and Ray's overhead per item,
``(2 t_ray - t_local) / 16``: the worker-seconds an item costs beyond its own compute (starting Ray and its
workers, each worker importing torch and layermod, scheduling). The two result tables are checked to be
byte-identical. It is a report: the exit code is 0 whatever the figures.

The embedded Ray gets a private token (``RAY_AUTH_TOKEN``) so that nothing is written under ``~/.ray``.

Run from the repository root::

    .venv/bin/python benchmarks/bench_sweep.py
    .venv/bin/python benchmarks/bench_sweep.py --per-class 30   # quicker items
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from pathlib import Path

import numpy as np

from layermod.cli import main

SPEC = """
[defaults]
model = "smallcnn"
width = 0.5
num-classes = 10
dataset = "{data}"
n-per-class = {per_class}
repeats = 3
views = 0

[grid]
k = [3, 5, 7, 10]
seed = [0, 1, 2, 3]

[resources]
num-cpus = 1
threads = 1
"""


def write_data(path: Path, per_class: int) -> None:
    """10 classes of noisy 1x28x28 images around seeded class centres, float32."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 1, 28, 28)).astype(np.float32)
    y = np.repeat(np.arange(10), per_class * 4)
    x = centres[y] + rng.normal(size=(len(y), 1, 28, 28)).astype(np.float32) * 1.5
    np.savez(path, X=x.astype(np.float32), y=y)


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    status = main(argv)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"layermod {' '.join(argv)} exited with {status}")
    return elapsed


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=50, help="samples per class in each draw (default 50)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        root = Path(tmp)
        write_data(root / "data.npz", args.per_class)
        spec = root / "spec.toml"
        spec.write_text(SPEC.format(data=root / "data.npz", per_class=args.per_class))
        t_local = timed(["sweep", str(spec), "--out", str(root / "local")])
        t_ray = timed(["sweep", str(spec), "--out", str(root / "ray"), "--backend", "ray", "--workers", "2"])
        same = (root / "local" / "results.csv").read_bytes() == (root / "ray" / "results.csv").read_bytes()
    items = 16
    print()
    print(f"16-item sweep (smallcnn width 0.5, 10 classes x {args.per_class} per draw x 3 draws, 1 thread per item)")
    print(f"  local, sequential : {t_local:7.2f} s  ({t_local / items:.2f} s per item)")
    print(f"  ray, 2 workers    : {t_ray:7.2f} s")
    print(f"  speed-up          : {t_local / t_ray:7.2f} x  (ideal 2 on 2 workers)")
    print(f"  ray overhead      : {(2 * t_ray - t_local) / items:7.2f} worker-seconds per item")
    print(f"  tables identical  : {same}")


if __name__ == "__main__":
    main_bench()
