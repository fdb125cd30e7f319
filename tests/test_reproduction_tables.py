"""REPRODUCTION.md says what its result files give: scripts/reproduction_tables.py --check passes on the document
and fails on a copy with one number or one table cell edited."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "REPRODUCTION.md").read_text()


def check(doc: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(ROOT / "scripts/reproduction_tables.py"), "--check", "--doc", str(doc)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_the_document_agrees_with_the_files():
    result = check(ROOT / "REPRODUCTION.md")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("old", "new", "says"), [
    ("44.05 ± 1.22 %", "44.15 ± 1.22 %", "44.15 is in no result file"),  # prose
    ("r +0.29, permutation p 0.019 (D", "r +0.29, permutation p 0.021 (D", "the d-vs-cka table"),  # a generated block
    ("| ResNet56, width 0.25 | 28 | 0.625 -> 0.718 | 0.0034 | 9 / **9** / 9 | 20 |",
     "| ResNet56, width 0.25 | 28 | 0.625 -> 0.718 | 0.0034 | 9 / **8** / 9 | 20 |", "the plateaus table"),
    ("| **cosine** | +7.6 |", "| **cosine** | +7.9 |", "the pooled table"),  # the pooled ranking
    ("| vgg19-w0.25 | 15 % | modularity 78.03 |", "| vgg19-w0.25 | 15 % | modularity 78.30 |", "the target table"),
    ("at 40 % (45.18 %)", "at 40 % (45.81 %)", "45.81 is in no result file"),  # the held-out network's prose
])
def test_an_edited_number_fails_the_check(tmp_path, old, new, says):
    assert DOC.count(old) == 1
    edited = tmp_path / "REPRODUCTION.md"
    edited.write_text(DOC.replace(old, new))
    result = check(edited)
    assert result.returncode == 1
    assert says in result.stdout
