"""A type checker sees the public API: mypy passes correct use of it and reports misuse (a positional option, a
retired name, a wrong type) where it is.

mypy runs offline in a subprocess over the layermod that the tests import (the worktree on PYTHONPATH, or the
installed package with its ``py.typed``). The heavy libraries (torch, matplotlib, ...) are not followed, so that a
run takes seconds; their types are ``Any`` here, and the checks are about layermod's own signatures. Without mypy
the test is skipped, but it fails when ``CI`` is set: CI must run it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import layermod

CONFIG = """\
[mypy]
follow_imports = silent
ignore_missing_imports = True
warn_unused_configs = False
[mypy-torch.*,torchvision.*,matplotlib.*,pandas.*,tqdm.*,safetensors.*,transformers.*,lightning.*,ray.*,\
faiss.*,sklearn.*,timm.*,networkx.*,datasets.*,tokenizers.*,torchattacks.*]
follow_imports = skip
"""

GOOD = """\
from typing import assert_type

import numpy as np
import scipy.sparse as sp
import torch

import layermod as lm
from layermod import models

x = np.random.default_rng(0).random((40, 8), dtype=np.float32)
y = np.arange(40) % 4
A = lm.knn_graph(x, k=3, metric="cosine", symmetrize="union", knn="exact", seed=1)
graph, recall = lm.build_graph(x, graph=lm.GraphConfig(k=3, knn="hnsw", sketch_dim=4))
assert_type(recall, float | None)
assert_type(lm.modularity(A, y, resolution=1.0), float)
null = lm.permutation_null(A, y, permutations=5, seed=0)
draws = lm.balanced_draws(y, n_per_class=5, repeats=2, seed=0)

model = models.create("mlp", num_classes=4, in_channels=1, width=0.5, input_size=8)
curve = lm.modularity_curve(model, (torch.from_numpy(x), torch.from_numpy(y)), layers="auto", k=3, n_per_class=5,
                            repeats=2, progress=False)
assert_type(curve, lm.Curve)
again = lm.modularity_curve(model, (x, y), graph=lm.GraphConfig(k=3), draws=lm.DrawConfig(n_per_class=5))
ax = curve.plot(ax=None)
saved = curve.save("run")
verdicts = lm.find_redundant(curve, z=2.0, min_gain=0.01)
assert_type(verdicts, lm.Redundancy)
features = lm.extract_features(model, torch.from_numpy(x), layers=curve.layers[:1], batch_size=16)
pair = lm.adversarial_curves(model, (x, y), attack=lm.AttackConfig(method="pgd", eps=0.3, steps=5),
                             space=lm.PixelSpace(low=0.0, high=1.0), keep="all", n_per_class=5)
assert_type(pair.parting_index(z=2.0), int | None)
comparison = lm.compare_layers(model, (x, y), model_b=model, layers="auto", unbiased=True)
track = lm.TrackConfig(every=2, draws=lm.DrawConfig(n_per_class=4, repeats=2))
tracker = lm.CurveTracker((x, y), track=track)
if tracker.should_measure(0, last_epoch=10):
    tracker.measure(model, 0, accuracy=0.5)
"""

# Each line that must fail names (part of) mypy's message after "# error:".
BAD = """\
import numpy as np

import layermod as lm
from layermod import models

x = np.zeros((10, 4), dtype=np.float32)
y = np.arange(10) % 2
lm.knn_graph(x, 5)  # error: Too many positional arguments for "knn_graph"
lm.knn_graph(x, method="hnsw")  # error: Unexpected keyword argument "method" for "knn_graph"
lm.knn_graph(x, metric="cosin")  # error: Argument "metric" to "knn_graph" has incompatible type
lm.GraphConfig(5)  # error: Too many positional arguments for "GraphConfig"
lm.GraphConfig(k="3")  # error: Argument "k" to "GraphConfig" has incompatible type "str"; expected "int"
lm.modularity(lm.knn_graph(x), y, 2.0)  # error: Too many positional arguments for "modularity"
lm.balanced_draws(y, 5, 2)  # error: Too many positional arguments for "balanced_draws"
lm.AttackConfig("pgd", eps=0.3)  # error: Too many positional arguments for "AttackConfig"
model = models.create("mlp", 10)  # error: Too many positional arguments for "create"
lm.modularity_curve(model, (x, y), "auto")  # error: Too many positional arguments for "modularity_curve"
lm.modularity_curve(model, (x, y), n_per_class="50")  # error: Argument "n_per_class" to "modularity_curve"
lm.Curve.load("run").plot(None)  # error: Too many positional arguments for "plot" of "Curve"
"""


def _mypy_available() -> bool:
    return importlib.util.find_spec("mypy") is not None


@pytest.fixture(scope="module")
def mypy(tmp_path_factory):
    """``run(source) -> {line: [messages]}``: mypy's errors on a file holding ``source``."""
    if not _mypy_available():
        if os.environ.get("CI"):
            pytest.fail("mypy is not installed (pip install 'layermod[test]'); CI must run the type check")
        pytest.skip("mypy is not installed (pip install 'layermod[test]')")
    root = tmp_path_factory.mktemp("typing")
    (root / "mypy.ini").write_text(CONFIG)
    env = {key: value for key, value in os.environ.items() if key not in ("MYPYPATH", "PYTHONPATH")}
    package = Path(layermod.__file__).resolve().parents[1]
    if str(package) not in {str(Path(p).resolve()) for p in site.getsitepackages()}:
        env["MYPYPATH"] = str(package)  # the layermod the tests import, ahead of any installed one

    def run(name: str, source: str) -> dict[int, list[str]]:
        path = root / name
        path.write_text(textwrap.dedent(source))
        done = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(root / "mypy.ini"),
                               "--cache-dir", str(root / "cache"), "--no-error-summary", "--show-absolute-path",
                               str(path)], capture_output=True, text=True, env=env, cwd=root, timeout=600)
        assert done.returncode in (0, 1), done.stdout + done.stderr  # 2: mypy itself failed
        errors: dict[int, list[str]] = {}
        for line in done.stdout.splitlines():
            match = re.match(rf"{re.escape(str(path))}:(\d+): error: (.*)", line)
            if match:
                errors.setdefault(int(match.group(1)), []).append(match.group(2))
        assert all(str(path) in line for line in done.stdout.splitlines() if ": error:" in line), done.stdout
        return errors

    return run


def test_correct_use_type_checks(mypy):
    assert mypy("good.py", GOOD) == {}


def test_misuse_is_reported_where_it_is(mypy):
    expected = {number: line.split("# error: ", 1)[1] for number, line in enumerate(BAD.splitlines(), start=1)
                if "# error: " in line}
    errors = mypy("bad.py", BAD)
    assert sorted(errors) == sorted(expected)
    for number, words in expected.items():
        assert any(words in message for message in errors[number]), (number, words, errors[number])
