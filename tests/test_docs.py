"""The documentation runs: every Python block of README.md as written (the one marked for it on the local
backend instead of Ray), after the `layermod train` line that makes the model they load, and the example model
in examples/ through the command line, as the README shows it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from layermod.cli import main

ROOT = Path(__file__).resolve().parents[1]


def section(markdown: str, title: str) -> str:
    """The text of the ``## title`` section, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", markdown, flags=re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\s*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


README = (ROOT / "README.md").read_text(encoding="utf-8")
# ``<!-- docs-test: backend="local" -->`` before a block: the test runs it on the local backend (no Ray to start)
MARKER = re.compile(r"<!-- docs-test: (\S+) -->\n$")


def readme_python() -> list[tuple[int, str]]:
    """Every ```python block of README.md, as (line, code), the marked ones rewritten as their marker says."""
    blocks = []
    for match in re.finditer(r"^```python\s*\n(.*?)^```", README, flags=re.MULTILINE | re.DOTALL):
        code, line = match.group(1), README.count("\n", 0, match.start()) + 1
        marked = MARKER.search(README[max(0, match.start() - 60):match.start()])
        if marked:
            assert 'backend="ray"' in code, f"README.md:{line}: the marker names a backend the block does not use"
            code = code.replace('backend="ray"', marked.group(1))
        blocks.append((line, code))
    assert blocks, "no ```python block in README.md"
    return blocks


BLOCKS = readme_python()


def readme_checkpoint(folder: Path) -> None:
    """What the README's ``layermod train`` line under "## Use it" writes, run from its text."""
    line = next(line for block in code_blocks(section(README, "Use it"), "bash") for line in block.splitlines()
                if line.startswith("layermod train"))
    assert main([*line.split()[1:], "--quiet"]) == 0 and (folder / "runs/digits-mlp/best.safetensors").is_file()


def run_block(code: str, line: int) -> dict:
    namespace = {"__name__": "__main__"}
    exec(compile("\n" * line + code, "README.md", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_every_readme_python_block_runs(line, code, tmp_path, monkeypatch):
    for library in ("lightning", "transformers", "tensorboard"):
        if library in code:
            pytest.importorskip(library)
    monkeypatch.chdir(tmp_path)  # the blocks write into the working directory
    if "runs/digits-mlp" in code or '"digits"' in code:
        pytest.importorskip("sklearn")
    if "runs/digits-mlp" in code:
        readme_checkpoint(tmp_path)
    namespace = run_block(code, line)
    if "fine_tune" in namespace:
        assert namespace["failed"] == {} and len(namespace["accuracy"]) == 6
        assert all(0.5 < value <= 1 for value in namespace["accuracy"].values())
    if "tracker" in namespace:
        assert namespace["tracker"].dynamics.epochs == [0, 5, 10] and (tmp_path / "runs/loop/dynamics.json").is_file()
    if "lm" in namespace and "pair" in namespace:
        check_use_it(namespace, tmp_path)


def check_use_it(namespace: dict, folder: Path) -> None:
    lm = namespace["lm"]
    assert 0 < namespace["q"] < 1
    curve, pair, comparison = namespace["curve"], namespace["pair"], namespace["comparison"]
    n_layers = len(curve.layers)
    assert n_layers >= 2 and np.asarray(curve.values).shape == (5, n_layers)
    assert np.asarray(curve.z).shape == (n_layers,)
    assert (folder / "run" / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert lm.Curve.load(folder / "run").to_dict() == curve.to_dict()
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
