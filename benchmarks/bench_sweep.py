"""Benchmark: one 16-item sweep, run in this process one item after another, in 2 worker processes, on an
embedded Ray and on a running Ray cluster, each with 2 workers.

What it measures, on seeded synthetic data (10 classes of 1x28x28 images around class centres, a .npz file) and
a random-init ``smallcnn`` (width 0.5), for a grid of 4 values of k x 4 seeds (16 curves of 3 draws x 50 samples
per class, no 2-D views), each item with one torch thread:

* ``t_local``     -- ``layermod sweep SPEC --out DIR`` (the default local backend: this process, sequentially);
* ``t_processes`` -- ``layermod sweep SPEC --out DIR --workers 2``: 2 spawned worker processes, their start and
  stop included;
* ``t_ray``       -- ``layermod sweep SPEC --out DIR --backend ray --workers 2``: an embedded Ray with 2 CPUs
  and 2 actors, Ray's start and stop included;
* ``t_cluster``   -- the same on a Ray cluster already running on 127.0.0.1 (``ray start --head --num-cpus 2``,
  started and stopped outside the timing, joined with ``--address``), as a Ray user runs sweeps: the actors'
  start (each importing torch and layermod) is timed, the cluster's is not.

This process measures one item (untimed) before anything is timed, so the sequential run imports nothing a worker
must import: whatever a worker pays to start counts against the parallel runs. For each run it prints the wall
time, the speed-up ``t_local / t`` (at most 2 on 2 workers) and the *overhead*, ``(workers x t - the sequential
run's item seconds) / items``: the worker-seconds an item costs beyond its own compute. Each item's ``item.json``
says which worker ran it and when (``worker``, ``started``, ``seconds``), so the overhead is split along the
timeline:

* *start-up*: from the run's start to each worker's first item (spawning it or placing the actor, its imports of
  torch and layermod, the spec read);
* *between*: from the end of one item to the start of the next on the same worker (handing the item out, the
  result sent back, the record written, the lock taken): the cost of each further item;
* *tail*: each worker idle from its last item to the run's end (the uneven last round, stopping the workers);
* *inside*: the items' own extra seconds over the sequential run's (a worker's first item importing what the
  curve needs, two processes sharing 2 cores and their caches).

Start-up and tail are paid once per run whatever its length, so per item they shrink as a sweep grows
(``--seeds 16``: 64 items). The result tables are checked to be byte-identical. Other jobs on the cores slow
every parallel figure, so the CPU seconds of the local runs (this process and its worker processes) are printed
too: *CPU overhead*, ``(CPU - CPU of the sequential run) / items``. (Ray's workers are not this process's
children, so their CPU time cannot be read back here.) The machine's load average is printed before and after.
It is a report: the exit code is 0 whatever the figures.

The embedded Ray gets a private token (``RAY_AUTH_TOKEN``) so that nothing is written under ``~/.ray``.

Run from the repository root::

    .venv/bin/python benchmarks/bench_sweep.py
    .venv/bin/python benchmarks/bench_sweep.py --per-class 30   # quicker items
    .venv/bin/python benchmarks/bench_sweep.py --seeds 16       # 64 items: start-up spread over more
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
seed = {seeds}

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


@dataclass(frozen=True)
class Timed:
    """One timed sweep: its wall and CPU seconds, and its timeline split in worker-seconds per item."""

    wall: float
    cpu: float
    inside: float  # the items' own seconds, summed
    start_up: float
    between: float
    tail: float


def timed(argv: list[str], out: Path) -> Timed:
    """Run ``layermod ARGV --out OUT`` and read its timeline back from the items' records."""
    began, start, cpu = time.time(), time.perf_counter(), cpu_seconds()
    status = main([*argv, "--out", str(out)])
    elapsed, used, ended = time.perf_counter() - start, cpu_seconds() - cpu, time.time()
    if status != 0:
        raise SystemExit(f"layermod {' '.join(argv)} exited with {status}")
    records = [json.loads((item / "item.json").read_text()) for item in (out / "items").iterdir()]
    by_worker: dict[str, list[dict]] = {}
    for record in sorted(records, key=lambda r: r["started"]):
        by_worker.setdefault(record["worker"], []).append(record)
    start_up = sum(runs[0]["started"] - began for runs in by_worker.values())
    between = sum(b["started"] - a["started"] - a["seconds"] for runs in by_worker.values()
                  for a, b in zip(runs, runs[1:]))
    tail = sum(ended - runs[-1]["started"] - runs[-1]["seconds"] for runs in by_worker.values())
    n = len(records)
    return Timed(elapsed, used, sum(r["seconds"] for r in records), start_up / n, between / n, tail / n)


@contextlib.contextmanager
def ray_cluster(cpus: int) -> Iterator[str]:
    """The address of a one-node Ray cluster on 127.0.0.1 with ``cpus`` CPUs, stopped (its whole session killed)
    afterwards."""
    temp = tempfile.mkdtemp(prefix="lmray-", dir="/tmp")  # short: Ray's socket paths must stay short
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = Path(temp) / "head.log"
    ray = Path(sys.executable).parent / "ray"
    process = subprocess.Popen([ray, "start", "--head", f"--port={port}", f"--num-cpus={cpus}",
                                "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats",
                                f"--temp-dir={temp}", "--block"], start_new_session=True,
                               stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "will now block forever" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"ray start failed:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        for entry in os.listdir("/proc"):  # the head, its raylet and workers share the session of `ray start`
            if entry.isdigit():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if os.getsid(int(entry)) == process.pid:
                        os.kill(int(entry), signal.SIGKILL)
        process.wait()
        shutil.rmtree(temp, ignore_errors=True)


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=50, help="samples per class in each draw (default 50)")
    parser.add_argument("--seeds", type=int, default=4, help="seeds in the grid, times 4 values of k (default 4)")
    args = parser.parse_args()
    items = 4 * args.seeds
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        root = Path(tmp)
        write_data(root / "data.npz", args.per_class)
        spec = root / "spec.toml"
        spec.write_text(SPEC.format(data=root / "data.npz", per_class=args.per_class, seeds=list(range(args.seeds))))
        timed(["sweep", str(spec), "--shard", f"1/{items}"], root / "warm-up")
        load = os.getloadavg()[0]
        runs = {"local": [], "processes": ["--workers", "2"], "ray": ["--backend", "ray", "--workers", "2"]}
        measured = {name: timed(["sweep", str(spec), *extra], root / name) for name, extra in runs.items()}
        with ray_cluster(2) as address:
            runs["cluster"] = ["--backend", "ray", "--workers", "2", "--address", address]
            measured["cluster"] = timed(["sweep", str(spec), *runs["cluster"]], root / "cluster")
        tables = {(root / name / "results.csv").read_bytes() for name in runs}
    local = measured["local"]
    print()
    print(f"{items}-item sweep (smallcnn width 0.5, 10 classes x {args.per_class} per draw x 3 draws, 1 thread per "
          "item); worker-seconds per item")
    print(f"  {'run':<26} {'wall s':>7} {'speed-up':>8} {'overhead':>8} {'start-up':>8} {'between':>8} "
          f"{'tail':>6} {'inside':>7}")
    labels = {"local": "local, sequential", "processes": "local, 2 processes", "ray": "ray embedded, 2 workers",
              "cluster": "ray cluster, 2 workers"}
    for name, run in measured.items():
        workers = 1 if name == "local" else 2
        print(f"  {labels[name]:<26} {run.wall:7.2f} {local.wall / run.wall:7.2f}x "
              f"{(workers * run.wall - local.inside) / items:8.2f} {run.start_up:8.2f} {run.between:8.3f} "
              f"{run.tail:6.2f} {(run.inside - local.inside) / items:7.2f}")
    print("  (speed-up: sequential wall / wall, ideal 2; overhead: (workers x wall - sequential item seconds) / items "
          "= start-up + between + tail + inside, where inside is the items' own extra seconds over the sequential "
          "run's: first imports, two processes sharing 2 cores)")
    processes = measured["processes"]
    print(f"  CPU overhead, 2 processes: {(processes.cpu - local.cpu) / items:.2f} s per item (Ray's workers are not "
          "this process's children: their CPU cannot be read here)")
    print(f"  tables identical       : {len(tables) == 1}")
    print(f"  load average           : {load:.2f} before, {os.getloadavg()[0]:.2f} after (1 minute, this "
          f"benchmark's own processes included; {os.cpu_count()} cores)")


if __name__ == "__main__":
    main_bench()
