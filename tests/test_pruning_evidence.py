"""The pooled evidence of matched-FLOPs studies (layermod.pruning.evidence) on hand-made studies whose answer is
worked out by hand, and scripts/pruning_evidence.py on the committed files: the name ``auto`` takes is theirs."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from layermod.errors import PlanError
from layermod.pruning.choices import AUTO
from layermod.pruning.evidence import pool
from layermod.pruning.pareto import MatchedComparison

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts/pruning_evidence.py"


def study(accs: dict[float, dict[str, list[float]]], *, match: str = "flops", retrain: str = "finetune"):
    """A study with ``accs[budget][method]``: one accuracy per seed."""
    rows = [{"method": method, "match": match, "budget": budget, "retrain": retrain, "seed": seed,
             "layers_removed": [], "n_removed": 0, "params": 10, "flops": 100, "acc_pruned": 0.1, "acc": acc}
            for budget, methods in accs.items() for method, values in methods.items()
            for seed, acc in enumerate(values)]
    return MatchedComparison(rows, {"params": 10, "flops": 100, "macs": 50}, {})


def test_margins_are_against_the_methods_every_network_ran_and_pooled_over_networks():
    a = study({0.2: {"modularity": [0.8, 0.6], "cosine": [0.5, 0.5], "cka": [0.9, 0.9]},
               0.4: {"modularity": [0.4, 0.4], "cosine": [0.6, 0.6], "cka": [0.1, 0.1]}})
    b = study({0.3: {"modularity": [0.5], "cosine": [0.9], "modularity-phase": [0.95]}})
    scratch = study({0.3: {"modularity": [0.0], "cosine": [1.0]}}, retrain="scratch")
    found = pool({"a": a, "b": b, "c": scratch})
    assert list(found.accuracy) == ["a", "b"] and found.common == ["modularity", "cosine"]
    # modularity - cosine: a: (0.7 - 0.5 + 0.4 - 0.6) / 2 = 0; b: -0.4; pooled -0.2
    assert found.per_network("modularity") == pytest.approx({"a": 0.0, "b": -0.4})
    assert found.pooled("cosine") == pytest.approx(0.2)
    # cka, run on a only, against both common methods: 0.2: 0.9 - 0.7, 0.9 - 0.5; 0.4: 0.1 - 0.4, 0.1 - 0.6
    assert found.per_network("cka") == pytest.approx({"a": (0.2 + 0.4 - 0.3 - 0.5) / 4})
    assert found.pooled("modularity-phase") == pytest.approx((0.45 + 0.05) / 2)  # the best margin, not a default
    assert found.best() == "cosine" and found.ranking()[:2] == ["cosine", "modularity"]
    # the derived methods' best against the others' best: a 0.2: 0.7 vs 0.9, a 0.4: 0.4 vs 0.6, b: 0.95 vs 0.9
    assert found.gaps()[("b", 0.3)] == ("modularity-phase", 0.95, "cosine", 0.9)
    assert not found.target_met()
    assert pool({"b": b}).target_met()
    assert "| **cosine** | +20.0 | +0.0 | +40.0 | 2 |" in found.markdown()


def test_versus_pairs_by_network_and_budget_with_the_network_as_the_unit():
    from scipy.stats import ttest_1samp

    a = study({0.2: {"modularity": [0.8, 0.6], "cosine": [0.5, 0.5]}, 0.4: {"modularity": [0.4], "cosine": [0.6]}})
    b = study({0.2: {"modularity": [0.5], "cosine": [0.9]}})
    c = study({0.2: {"modularity": [0.7], "cosine": [0.6]}, 0.4: {"modularity": [0.3], "cosine": [0.2]}})
    test = pool({"a": a, "b": b, "c": c}).versus("modularity", "cosine")
    # a: (0.7 - 0.5 + 0.4 - 0.6) / 2 = 0; b: -0.4; c: 0.1: the network means, whatever their number of budgets
    assert test["per_network"] == pytest.approx({"a": 0.0, "b": -0.4, "c": 0.1})
    assert test["cells"] == 5 and test["mean"] == pytest.approx(-0.1)
    assert test["p_network"] == pytest.approx(ttest_1samp([0.0, -0.4, 0.1], 0.0).pvalue)
    # per network, the budget is the unit: a's two budgets differ by +0.2 and -0.2; b has one budget: no test
    assert test["p_per_network"]["a"] == pytest.approx(ttest_1samp([0.2, -0.2], 0.0).pvalue)
    assert test["p_per_network"]["b"] is None
    assert test["per_budget"][0.2] == (pytest.approx((0.2 - 0.4 + 0.1) / 3), 3)
    assert test["per_budget"][0.4] == (pytest.approx((-0.2 + 0.1) / 2), 2)
    assert 0 < test["p_sign"] <= 1
    assert pool({"b": b, "c": c}).versus("cosine", "modularity")["mean"] == pytest.approx(0.15)
    with pytest.raises(PlanError, match="no network ran both"):
        pool({"a": a}).versus("modularity", "cka")


def test_pooling_refuses_studies_it_cannot_compare():
    with pytest.raises(PlanError, match="no study"):
        pool({"a": study({0.2: {"modularity": [0.5]}}, match="params")})
    with pytest.raises(PlanError, match="every one of the 2"):
        pool({"a": study({0.2: {"modularity": [0.5], "cosine": [0.5]}}),
              "b": study({0.2: {"cosine": [0.5], "cka": [0.5]}})})


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def test_auto_is_the_method_the_committed_studies_favour():
    spec = importlib.util.spec_from_file_location("pruning_evidence", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    found = script.evidence(ROOT)
    assert list(found.accuracy) == list(script.DESIGN)  # the held-out networks never choose
    assert set(script.evidence(ROOT, script.HELD_OUT).accuracy) == set(script.HELD_OUT)
    assert AUTO == found.best()
    result = run("--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_fails_on_an_edited_ranking(tmp_path):
    for path in [*ROOT.glob("docs/reproduction/bases/*/matched.json"), *ROOT.glob("docs/beyond/*/study/matched.json"),
                 ROOT / "docs/guide/pruning.md"]:
        copy = tmp_path / path.relative_to(ROOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy)
    guide = tmp_path / "docs/guide/pruning.md"
    text = guide.read_text()
    row = "| **modularity-ablation** | +9.6 |"
    assert text.count(row) == 1
    guide.write_text(text.replace(row, row.replace("+9.6", "+9.7")))
    result = run("--check", "--root", str(tmp_path))
    assert result.returncode == 1 and "the ranking table is not what the files give" in result.stdout
