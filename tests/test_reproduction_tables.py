"""REPRODUCTION.md and README.md say what the result files give: scripts/reproduction_tables.py --check passes on
both and fails on a copy with one number or one table cell edited."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "REPRODUCTION.md").read_text()
README = (ROOT / "README.md").read_text()


def check(doc: Path, readme: Path = ROOT / "README.md") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(ROOT / "scripts/reproduction_tables.py"), "--check", "--doc", str(doc),
                           "--readme", str(readme)], capture_output=True, text=True, env=env, timeout=300)


def test_the_document_agrees_with_the_files():
    result = check(ROOT / "REPRODUCTION.md")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("old", "new", "says"), [
    ("keeps 51.85 ± 4.18 %", "keeps 51.87 ± 4.18 %", "51.87 is in no result file"),  # prose
    ("r +0.29, permutation p 0.019 (D", "r +0.29, permutation p 0.021 (D", "the d-vs-cka table"),  # a generated block
    ("| ResNet56, width 0.25 | 28 | 0.625 -> 0.718 | 0.0034 | 9 / **9** / 9 | 20 |",
     "| ResNet56, width 0.25 | 28 | 0.625 -> 0.718 | 0.0034 | 9 / **8** / 9 | 20 |", "the plateaus table"),
    ("| **modularity-ablation** | +9.6 |", "| **modularity-ablation** | +9.9 |", "the pooled table"),  # the ranking
    ("| vgg19-w0.25 | 15 % | modularity-ablation 79.50 |", "| vgg19-w0.25 | 15 % | modularity-ablation 79.05 |",
     "the target table"),
    ("(87.35 %, above", "(87.53 %, above", "87.53 is in no result file"),  # the retraining's prose
])
def test_an_edited_number_fails_the_check(tmp_path, old, new, says):
    assert DOC.count(old) == 1
    edited = tmp_path / "REPRODUCTION.md"
    edited.write_text(DOC.replace(old, new))
    result = check(edited)
    assert result.returncode == 1
    assert says in result.stdout


def test_a_readme_number_is_checked_against_the_files(tmp_path):
    """A README sentence quoting a study's accuracy passes; the same sentence with the number edited, and an edited
    number of a stretch whose source is elsewhere, fail."""
    summary = json.loads((ROOT / "docs/reproduction/pruning-vgg19-w0.25-finetune/matched.json").read_text())["summary"]
    cell = next(s for s in summary if s["method"] == "modularity" and s["budget"] == 0.15 and s["match"] == "flops")
    quoted = f"{100 * cell['acc_mean']:.1f}"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    printed = subprocess.run([sys.executable, str(ROOT / "scripts/reproduction_tables.py")], capture_output=True,
                             text=True, env=env, timeout=300, check=True).stdout
    given = set(re.findall(r"\d+\.\d+", printed.replace(",", "")))
    edited = next(f"{float(quoted) + step / 10:.1f}" for step in range(1, 100)
                  if f"{float(quoted) + step / 10:.1f}" not in given)
    readme = tmp_path / "README.md"
    for number, code in ((quoted, 0), (edited, 1)):
        readme.write_text(README + f"\nVGG19 pruned by its curve keeps {number} % at 15 % of its FLOPs.\n")
        result = check(ROOT / "REPRODUCTION.md", readme)
        assert result.returncode == code, result.stdout + result.stderr
    assert f"README.md:{len(README.splitlines()) + 2}: {edited} is in no result file" in result.stdout
    timing = next(f"{6.7 + step / 10:.1f}" for step in range(1, 100) if f"{6.7 + step / 10:.1f}" not in given)
    assert README.count("took 6.7 s") == 1  # a stretch whose number is a timing, not a result
    readme.write_text(README.replace("took 6.7 s", f"took {timing} s"))
    result = check(ROOT / "REPRODUCTION.md", readme)
    assert result.returncode == 1 and f"{timing} is in no result file" in result.stdout
