"""`layermod sweep --backend ray` on a real two-node Ray cluster on this machine: a head and a worker node
(`ray start`, one CPU each, on 127.0.0.1), joined by address. The worker node is killed mid-sweep; the sweep
still completes (Ray reruns the lost task), `--resume` then computes nothing, and no item is computed twice.

The cluster is private to the test: its own token (RAY_AUTH_TOKEN), its own --temp-dir, each node started with
`--block` in its own process session, and torn down by killing those sessions (never `ray stop`, which would
stop every Ray on the machine)."""

from __future__ import annotations

import contextlib
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
