"""`layermod sweep --backend ray` on a real two-node Ray cluster on this machine: a head and a worker node
(`ray start`, one CPU each, on 127.0.0.1), joined by address. The worker node is killed mid-sweep; the sweep
still completes (the lost item runs again on another actor), `--resume` then computes nothing, and no item is
computed twice. On the same cluster, `run_items` on Ray actors: each actor runs many items and reads the data
once, the values equal a run in one process, an item that raises is not retried, and an actor killed mid-item
costs that item one try (without retries: fails only it).

The cluster is private to the test: its own token (RAY_AUTH_TOKEN), its own --temp-dir, each node started with
`--block` in its own process session, and torn down by killing those sessions (never `ray stop`, which would
stop every Ray on the machine)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from models_for_tests import blobs_npz

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
STARTUP_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_started(process: subprocess.Popen, log: Path) -> None:
    """Until `ray start --block` says its node runs (it then blocks), or fail with its log."""
    deadline = time.monotonic() + STARTUP_S
    while "will now block forever" not in log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)


def kill_session(session: int) -> None:
    """SIGKILL every process of ``session`` (a node started by this test: `ray start`, its raylet, its workers,
    whatever process group each put itself in)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getsid(int(entry)) == session:
                    os.kill(int(entry), signal.SIGKILL)


def on_node(calls: Path, session: int) -> bool:
    """Whether a process of the node started in ``session`` has written to ``calls``."""
    pids = calls.read_text().split() if calls.exists() else []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            if os.getsid(int(pid)) == session:
                return True
    return False


@pytest.fixture
def ray_cluster(tmp_path):
    """(address, env, worker node process): a head and a worker node, one CPU each; killed afterwards."""
    temp = tempfile.mkdtemp(prefix="lmray-", dir="/tmp")  # short: Ray's socket paths must stay short
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "3",
           "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats", "--block"]
    nodes = []

    def start(*args: str, log: str) -> subprocess.Popen:
        process = subprocess.Popen([BIN / "ray", "start", *args, *common], env=env, start_new_session=True,
                                   stdout=open(tmp_path / log, "w"), stderr=subprocess.STDOUT)
        nodes.append(process)
        return process

    try:
        head = start("--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}", log="head.log")
        wait_started(head, tmp_path / "head.log")
        worker = start(f"--address={address}", log="worker.log")
        wait_started(worker, tmp_path / "worker.log")
        yield address, env, worker
    finally:
        for process in reversed(nodes):
            kill_session(process.pid)
            process.wait()
        shutil.rmtree(temp, ignore_errors=True)


def test_sweep_on_a_cluster_survives_a_lost_node(ray_cluster, tmp_path):
    address, env, worker = ray_cluster
    blobs_npz(tmp_path / "blobs.npz", n_per_class=30)
    (tmp_path / "counted.py").write_text(textwrap.dedent("""
        import os
        import time
        import numpy as np

        def load():
            here = os.path.dirname(os.path.abspath(__file__))
            with open(os.path.join(here, "calls.txt"), "a") as fh:
                fh.write(f"{os.getpid()}\\n")
            time.sleep(0.5)  # long enough for the node to die while items run
            data = np.load(os.path.join(here, "blobs.npz"))
            return data["X"], data["y"]
    """))
    (tmp_path / "spec.toml").write_text(textwrap.dedent("""
        [defaults]
        model = "mlp"
        arch-arg = {input_size = 16}
        width = 0.05
        num-classes = 4
        dataset = "counted.py:load"
        n-per-class = 5
        repeats = 2
        views = 0

        [grid]
        k = [3, 5]
        seed = [0, 1, 2, 3]

        [resources]
        num-cpus = 1
        threads = 1
    """))
    command = [BIN / "layermod", "sweep", "spec.toml", "--out", "sw", "--backend", "ray", "--address", address,
               "--allow-import"]
    sweep = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    items = tmp_path / "sw" / "items"
    deadline = time.monotonic() + STARTUP_S
    while not on_node(tmp_path / "calls.txt", worker.pid):  # an item is loading its data on the worker node
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()[0]
        time.sleep(0.05)
    kill_session(worker.pid)  # the worker node, its raylet and its workers, mid-item
    output = sweep.communicate(timeout=120)[0]
    calls = (tmp_path / "calls.txt").read_text().split()
    if sweep.returncode == 2:  # the lost item ran out of retries: --resume finishes it
        finish = subprocess.run([*command, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert finish.returncode == 0, finish.stdout + finish.stderr
        calls = (tmp_path / "calls.txt").read_text().split()
    else:
        assert sweep.returncode == 0, output
    assert "8 items; varying: k, seed" in output
    done = sorted(p.name for p in items.iterdir())
    assert len(done) == 8 and not any(name.startswith(".") for name in done)
    assert all((items / name / "curve.json").is_file() for name in done)
    # every item computed once, but for the one killed on the lost node, started once more
    assert len(calls) == 9, calls
    assert len(set(calls)) >= 2  # more than one worker process ran items
    stamps = {name: (items / name / "curve.json").stat().st_mtime_ns for name in done}
    again = subprocess.run([*command, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "0 computed, 8 already complete, 0 failed" in again.stdout, again.stdout
    assert (tmp_path / "calls.txt").read_text().split() == calls
    assert stamps == {name: (items / name / "curve.json").stat().st_mtime_ns for name in done}
    with open(tmp_path / "sw" / "results.csv") as fh:
        assert sum(1 for _ in fh) == 1 + 8 * 5


DRIVER = '''
import json, os, signal, sys, time
from layermod.models.cache import cache_info, cached_data
from layermod.sweep.executor import run_items


def item(n, fail=False, die=""):
    with open("calls.txt", "a") as fh:
        fh.write(f"{n}\\n")
    if die and not os.path.exists(die):  # the first try kills its own worker
        open(die, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    if fail:
        raise ValueError(f"item {n} fails")
    time.sleep(0.2)
    data, _ = cached_data("blobs.npz")
    return {"n": n, "sum": float(data.data.double().sum()), "pid": os.getpid(), "cache": cache_info()}


if __name__ == "__main__":
    items = [(f"i{n}", {"n": n, "fail": n == 3, "die": "died" if n == 5 else ""}) for n in range(10)]
    ray = run_items(item, items, backend="ray", address=sys.argv[1])
    alone = run_items(item, [(key, {**kwargs, "die": ""}) for key, kwargs in items])
    lost = run_items(item, [("lost", {"n": 100, "die": "died-again"}), ("fine", {"n": 101})], backend="ray",
                     address=sys.argv[1], max_retries=0)
    print(json.dumps({name: [r.to_dict() for r in results] for name, results in
                      (("ray", ray), ("alone", alone), ("lost", lost))}))
'''


def test_actors_are_warm_and_a_lost_actor_costs_one_try(ray_cluster, tmp_path):
    address, env, _ = ray_cluster
    blobs_npz(tmp_path / "blobs.npz", n_per_class=30)
    (tmp_path / "driver.py").write_text(DRIVER)
    run = subprocess.run([sys.executable, "driver.py", address], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    ray, alone = out["ray"], out["alone"]
    assert [r["id"] for r in ray] == [f"i{n}" for n in range(10)]
    assert [r["ok"] for r in ray] == [n != 3 for n in range(10)]
    assert ray[3]["error"] == "ValueError: item 3 fails"
    tries = [int(n) for n in (tmp_path / "calls.txt").read_text().split()]
    assert sorted(tries[:11]) == sorted([*range(10), 5])  # the item raising: once; the one whose worker died: twice
    # the same values as in one process, item for item
    assert [(r["value"] or {}).get("sum") for r in ray] == [(r["value"] or {}).get("sum") for r in alone]
    # warm actors: 9 good items on at most 3 actors (2, and one in place of the lost one), each reading the data once
    pids = [r["value"]["pid"] for r in ray if r["ok"]]
    assert len(set(pids)) <= 3 and max(map(pids.count, pids)) >= 2
    for pid in set(pids):
        last = max((r["value"]["cache"] for r in ray if r["ok"] and r["value"]["pid"] == pid), key=lambda c: c["hits"])
        assert last["misses"] == 1 and last["hits"] == pids.count(pid) - 1 and last["entries"] == 1, last
    # without retries the lost item fails, and only it
    lost, fine = out["lost"]
    assert not lost["ok"] and lost["error"].startswith("its Ray worker was lost (") and fine["ok"], out["lost"]


REFUSED = '''
import json, sys, time
from layermod.errors import SweepError
from layermod.sweep.executor import Resources, run_items


def item(n):
    with open("calls.txt", "a") as fh:
        fh.write(f"{n}\\n")
    return {"n": n}


if __name__ == "__main__":
    refusals = []
    for resources in (Resources(num_cpus=1, num_gpus=0.5), Resources(num_cpus=2)):
        start = time.monotonic()
        try:
            run_items(item, [("a", {"n": 1})], backend="ray", address=sys.argv[1], resources=resources)
        except SweepError as err:
            refusals.append([str(err), time.monotonic() - start])
    print(json.dumps(refusals))
'''


WAITED = '''
import json, sys, threading, warnings
import ray
import layermod.sweep.rayworkers as rayworkers
from layermod.sweep.executor import run_items


@ray.remote(num_cpus=1)
class Hold:
    def ready(self):
        return True


def item(n):
    return {"n": n}


if __name__ == "__main__":
    ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
    holds = [Hold.remote() for _ in range(2)]  # every CPU of the cluster
    ray.get([hold.ready.remote() for hold in holds])
    rayworkers.NOTICE_S = 1.0
    threading.Timer(4.0, lambda: ray.kill(holds[0])).start()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = run_items(item, [("a", {"n": 1})], backend="ray", workers=1)
    print(json.dumps([[r.ok, r.value] for r in results] + [str(w.message) for w in caught
                                                            if issubclass(w.category, RuntimeWarning)]))
'''


def run_driver(code: str, cluster, folder: Path) -> object:
    """What the driver script ``code`` prints last (JSON), run against ``cluster`` in ``folder``; it must exit 0."""
    address, env, _ = cluster
    (folder / "driver.py").write_text(code)
    run = subprocess.run([sys.executable, "driver.py", address], cwd=folder, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_a_run_that_waits_for_busy_resources_says_so_and_runs_once_they_are_free(ray_cluster, tmp_path):
    result, *notices = run_driver(WAITED, ray_cluster, tmp_path)
    assert result == [True, {"n": 1}]
    assert notices, "nothing said while the run waited for a CPU"
    assert notices[0] == ("waited 1 s for Ray to start any of 1 workers (num_cpus=1, num_gpus=0 each); the cluster "
                          "has 0 CPUs and 0 GPUs free: other work holds them")


def test_resources_the_cluster_lacks_are_refused_before_any_item(ray_cluster, tmp_path):
    (gpu, gpu_s), (cpu, cpu_s) = run_driver(REFUSED, ray_cluster, tmp_path)
    assert gpu == ("each worker reserves num_gpus=0.5 but no node of the Ray cluster has that many GPUs (at most 0 "
                   "on one node, 0 in all); lower num_gpus or join a cluster that has them")
    # two nodes of one CPU each: 2 CPUs in all, yet no actor reserving 2 could ever be placed
    assert cpu.startswith("each worker reserves num_cpus=2 but no node") and "(at most 1 on one node, 2 in all)" in cpu
    assert "\n" not in gpu + cpu and max(gpu_s, cpu_s) < 30
    assert not (tmp_path / "calls.txt").exists()  # no item was submitted
