"""The documentation runs: the README's Python example under "## Use it" on small synthetic data, and the
example model in examples/ through the command line, as the README shows it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from layermod.cli import main

ROOT = Path(__file__).resolve().parents[1]


def section(markdown: str, title: str) -> str:
    """The text of the ``## title`` section, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", markdown, flags=re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\s*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def readme_python() -> list[str]:
    blocks = code_blocks(section((ROOT / "README.md").read_text(encoding="utf-8"), "Use it"), "python")
    assert blocks, "no ```python block under '## Use it' in README.md"
    return blocks


def near_boundary_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes of 1x4x4 inputs close to each other: separable, yet within the README's PGD budget."""
    rng = np.random.default_rng(0)
    direction = rng.normal(size=16)
    direction /= np.linalg.norm(direction)
    y = np.repeat(np.arange(2), 60)
    x = 0.5 + np.where(y[:, None] == 0, -0.25, 0.25) * direction + 0.02 * rng.normal(size=(120, 16))
    return torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 4, 4), torch.from_numpy(y)


def fitted_mlp(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """A small MLP (4 measurement points) trained until it classifies every sample correctly."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(),
                          nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(200):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).all()
    return model


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    X, y = near_boundary_data()
    model = fitted_mlp(X, y)
    with torch.no_grad():
        features = model[:3](X).numpy()  # (N, D) features of a hidden layer
    namespace = {"features": features, "labels": y.numpy(), "model": model, "X": X, "y": y}
    monkeypatch.chdir(tmp_path)  # the example writes its run directory into the working directory
    for block in readme_python():
        exec(compile(block, "README.md", "exec"), namespace)
    lm = namespace["lm"]
    assert 0 < namespace["q"] < 1
    curve, pair, comparison = namespace["curve"], namespace["pair"], namespace["comparison"]
    n_layers = len(curve.layers)
    assert n_layers >= 2 and np.asarray(curve.values).shape == (5, n_layers)
    assert np.asarray(curve.z).shape == (n_layers,)
    assert (tmp_path / "run" / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert lm.Curve.load(tmp_path / "run").to_dict() == curve.to_dict()
    assert namespace["ax"].figure is not None and len(curve.to_frame()) == n_layers
    assert isinstance(pair.clean, lm.Curve) and pair.clean.layers == pair.attacked.layers == curve.layers
    assert np.asarray(comparison.d).shape == np.asarray(comparison.cka).shape == (n_layers, n_layers)


def test_the_readme_commands_name_the_example_model():
    commands = "\n".join(code_blocks(section((ROOT / "README.md").read_text(encoding="utf-8"), "Use it"), "bash"))
    assert "--model examples/digits_resmlp.py:build" in commands and (ROOT / "examples" / "digits_resmlp.py").is_file()


def test_the_example_model_through_the_command_line(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")  # the digits set comes from scikit-learn (the test extra installs it)
    monkeypatch.chdir(ROOT)  # the path as the README writes it, relative to the repository
    out = tmp_path / "digits"
    assert main(["curve", "--model", "examples/digits_resmlp.py:build", "--dataset", "digits", "--n-per-class", "10",
                 "--repeats", "2", "--views", "0", "--quiet", "--out", str(out)]) == 0
    curve = json.loads((out / "curve.json").read_text())
    assert curve["config"]["model"] == "examples/digits_resmlp.py:build"
    assert len(curve["layers"]) == 7  # the stem and the 6 residual blocks, found by tracing
    # a trained model: the classes separate more at the last block than at the stem
    mean = np.asarray(curve["values"]).mean(axis=0)
    assert mean[-1] > mean[0] and mean[-1] > 0.5
