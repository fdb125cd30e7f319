"""The run directories committed under docs/ are whole: every file their run record names is there with the
recorded bytes, so the loaders' checks accept them as they are."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from layermod.pruning.pareto import MatchedComparison

DOCS = Path(__file__).resolve().parents[1] / "docs"
RECORDS = sorted(path for path in DOCS.rglob("run.json") if json.loads(path.read_text()).get("format") == "layermod-run")


def test_there_are_committed_runs():
    assert len(RECORDS) >= 5


@pytest.mark.parametrize("record", RECORDS, ids=lambda p: str(p.parent.relative_to(DOCS)))
def test_a_committed_run_holds_the_bytes_its_record_names(record):
    files = json.loads(record.read_text())["files"]
    assert files
    for name, digest in files.items():
        path = record.parent / name
        assert path.is_file(), f"{path} is named by {record} but not committed"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{path} differs from its run record"


@pytest.mark.parametrize("study", sorted(DOCS.rglob("matched.json")), ids=lambda p: str(p.parent.relative_to(DOCS)))
def test_every_committed_study_loads(study):
    assert MatchedComparison.load(study.parent).rows
