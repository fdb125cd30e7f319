"""Benchmark: one 16-item sweep, run in this process one item after another, in 2 worker processes and on Ray
with 2 workers.

What it measures, on seeded synthetic data (10 classes of 1x28x28 images around class centres, a .npz file) and
a random-init ``smallcnn`` (width 0.5), for a grid of 4 values of k x 4 seeds (16 curves of 3 draws x 50 samples
per class, no 2-D views), each item with one torch thread:

* ``t_local``     -- ``layermod sweep SPEC --out DIR`` (the default local backend: this process, sequentially);
* ``t_processes`` -- ``layermod sweep SPEC --out DIR --workers 2``: 2 spawned worker processes, their start and
  stop included;
* ``t_ray``       -- ``layermod sweep SPEC --out DIR --backend ray --workers 2``: an embedded Ray with 2 CPUs
  and 2 actors, Ray's start and stop included.

This process measures one item (untimed) before anything is timed, so the sequential run imports nothing a worker
must import: whatever a worker pays to start counts against the parallel runs. Prints the times, each speed-up
``t_local / t`` (at most 2 on 2 workers) and each overhead per item, ``(2 t - t_local) / 16``: the worker-seconds an
item costs beyond its own compute. The overhead is split with the seconds each item spent in its worker
(``item.json``): *outside items*, ``(2 t - sum of item seconds) / 16`` (starting Ray or the processes, each worker
importing torch and layermod, handing items out, the workers' idle time at the end), and *inside items*, ``(sum of
item seconds - sum of the sequential run's) / 16`` (a worker's first item importing what the curve needs, two
processes sharing 2 cores and their caches). The three result tables are checked to be byte-identical. Other jobs on
the cores slow every parallel figure above, so the CPU seconds that each run took (this process and its worker
processes) are printed for the local runs too: *CPU overhead*, ``(CPU - CPU of the sequential run) / 16``, is what
an item costs beyond its compute whatever else runs. (Ray's workers are not this process's children, so their CPU
time cannot be read back here.) The machine's load average is printed before and after. It is a report: the exit
code is 0 whatever the figures.

The embedded Ray gets a private token (``RAY_AUTH_TOKEN``) so that nothing is written under ``~/.ray``.

Run from the repository root::

    .venv/bin/python benchmarks/bench_sweep.py
    .venv/bin/python benchmarks/bench_sweep.py --per-class 30   # quicker items
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import tempfile
import time
from pathlib import Path

import numpy as np

from layermod.cli import main

ITEMS = 16
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


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have been waited for."""
    return sum(usage.ru_utime + usage.ru_stime for usage in (resource.getrusage(resource.RUSAGE_SELF),
                                                            resource.getrusage(resource.RUSAGE_CHILDREN)))


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``layermod ARGV``."""
    start, cpu = time.perf_counter(), cpu_seconds()
    status = main(argv)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"layermod {' '.join(argv)} exited with {status}")
    return elapsed, cpu_seconds() - cpu


def item_seconds(out: Path) -> float:
    """The seconds the items of sweep ``out`` spent in their workers, summed."""
    return sum(json.loads((item / "item.json").read_text())["seconds"] for item in (out / "items").iterdir())


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=50, help="samples per class in each draw (default 50)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    runs = {"local": [], "processes": ["--workers", "2"], "ray": ["--backend", "ray", "--workers", "2"]}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        root = Path(tmp)
        write_data(root / "data.npz", args.per_class)
        spec = root / "spec.toml"
        spec.write_text(SPEC.format(data=root / "data.npz", per_class=args.per_class))
        timed(["sweep", str(spec), "--out", str(root / "warm-up"), "--shard", f"1/{ITEMS}"])
        load = os.getloadavg()[0]
        measured = {name: timed(["sweep", str(spec), "--out", str(root / name), *extra])
                    for name, extra in runs.items()}
        tables = {(root / name / "results.csv").read_bytes() for name in runs}
        inside = {name: item_seconds(root / name) for name in runs}
    times = {name: wall for name, (wall, _) in measured.items()}
    cpu = {name: used for name, (_, used) in measured.items()}
    t_local = times["local"]
    print()
    print(f"{ITEMS}-item sweep (smallcnn width 0.5, 10 classes x {args.per_class} per draw x 3 draws, 1 thread per "
          "item)")
    print(f"  local, sequential      : {t_local:7.2f} s  ({t_local / ITEMS:.2f} s per item, "
          f"{cpu['local'] / ITEMS:.2f} s CPU)")
    for name, label in (("processes", "local, 2 processes     "), ("ray", "ray, 2 workers         ")):
        t = times[name]
        extra = (f"; CPU overhead {(cpu[name] - cpu['local']) / ITEMS:.2f} s per item" if name == "processes"
                 else "")
        print(f"  {label}: {t:7.2f} s  speed-up {t_local / t:4.2f} x (ideal 2), overhead "
              f"{(2 * t - t_local) / ITEMS:5.2f} worker-seconds per item ({(2 * t - inside[name]) / ITEMS:.2f} "
              f"outside items, {(inside[name] - inside['local']) / ITEMS:.2f} inside){extra}")
    print(f"  tables identical       : {len(tables) == 1}")
    print(f"  load average           : {load:.2f} before, {os.getloadavg()[0]:.2f} after (1 minute, this "
          f"benchmark's own processes included; {os.cpu_count()} cores)")


if __name__ == "__main__":
    main_bench()
