"""Progress bars: ``progress="auto"``, the default of long calls, shows bars when stderr is a terminal and is silent
when it is not."""

from __future__ import annotations

import fcntl
import inspect
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import torch
from torch import nn

import layermod as lm
from layermod.coerce import bar_disabled
from layermod.sweep.executor import run_items
from layermod.training.fit import fit
from models_for_tests import blobs_npz


def test_auto_is_the_default_of_long_calls():
    for function in (lm.modularity_curve, lm.adversarial_curves, fit):
        assert inspect.signature(function).parameters["progress"].default == "auto", function


def test_auto_is_silent_when_stderr_is_not_a_terminal(capsys):
    torch.manual_seed(0)
    x, y = torch.randn(60, 6), torch.arange(60) % 3
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    lm.modularity_curve(model, (x, y), n_per_class=10, repeats=2)
    assert capsys.readouterr().err == ""


def test_bar_disabled_follows_tqdm():
    assert bar_disabled(False) is True and bar_disabled(True) is None and bar_disabled("auto") is None


def in_terminal(code: str, cwd: Path) -> str:
    """What ``python -c code`` writes to its stdout and stderr when both are a terminal (a pseudo-terminal of
    24 x 100 characters: tqdm draws nothing in one of width 0)."""
    main_fd, child_fd = pty.openpty()
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=child_fd,
                               stderr=child_fd, cwd=cwd, env=env)
    os.close(child_fd)
    out = b""
    while True:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:  # the child's side closed
            break
        if not chunk:
            break
        out += chunk
    os.close(main_fd)
    assert process.wait(timeout=120) == 0, out.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


def test_the_curve_command_shows_a_bar_in_a_terminal(tmp_path):
    blobs_npz(tmp_path / "blobs.npz", n_per_class=30)
    shown = in_terminal("from layermod.cli import main; raise SystemExit(main(['curve', '--model', 'mlp', "
                        "'--arch-arg', 'input_size=16', '--dataset', 'blobs.npz', '--n-per-class', '10', "
                        "'--repeats', '2', '--null', '0', '--out', 'run']))", tmp_path)
    assert re.search(r"\d+/\d+ \[", shown), shown[-1000:]  # tqdm's "n/total [elapsed<left, rate]"
    assert (tmp_path / "run" / "curve.json").is_file()


def test_run_items_counts_items_in_a_terminal_and_is_silent_in_a_pipe(tmp_path, capsys):
    shown = in_terminal("from layermod.sweep.executor import run_items\n"
                        "run_items(dict, [(str(i), {'x': i}) for i in range(3)])", tmp_path)
    assert re.search(r"items: 100%.*3/3 \[", shown), shown[-1000:]
    assert [r.value for r in run_items(dict, [(str(i), {"x": i}) for i in range(3)])] == [{"x": i} for i in range(3)]
    assert capsys.readouterr().err == ""
