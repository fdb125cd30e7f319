"""The images that choose the layers are neither retrained on nor scored: the choice split of the prune runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from layermod.analysis.curve import Curve
from layermod.cli import main
from layermod.data.arrays import ArrayDataset
from layermod.errors import PlanError
from layermod.measure.config import DrawConfig
from layermod.pruning.pareto import MatchedComparison
from layermod.pruning.study import PruningComparison, choice_of, choice_split
from layermod.data.draws import balanced_subset

ROOT = Path(__file__).resolve().parent.parent


def numbered(n: int, classes: int, start: int) -> ArrayDataset:
    """n samples whose single feature is their own number (start, start + 1, ...), labels cycling over classes."""
    x = torch.arange(start, start + n, dtype=torch.float32).reshape(n, 1)
    return ArrayDataset(x, torch.arange(n) % classes, [str(c) for c in range(classes)], "numbered")


def ids(data) -> set[int]:
    return {int(v) for v in data.data.reshape(-1).tolist()}


TRAIN, TEST = numbered(400, 4, 0), numbered(80, 4, 10_000)
DRAWS = DrawConfig(n_per_class=5, repeats=2)


@pytest.mark.parametrize("finetune_subset", [0, 120])
def test_the_held_out_choice_shares_no_image_with_the_fine_tuning_or_the_test_set(finetune_subset):
    split = choice_split(TRAIN, TEST, finetune_subset=finetune_subset, test_subset=40, draws=DRAWS)
    pool, tuned, scored = ids(split.pool), ids(split.finetune), ids(split.test)
    assert pool and not pool & tuned and not pool & scored and not tuned & scored
    assert pool <= ids(TRAIN) and scored <= ids(TEST) and len(scored) == 40
    if finetune_subset:  # the same fine-tuning images as a balanced subset, and every other one chooses
        assert torch.equal(split.finetune.data, balanced_subset(TRAIN, finetune_subset, seed=0).data)
        assert pool | tuned == ids(TRAIN)
    else:  # a class-balanced tenth held out (it holds 2 draws of 5 per class), the rest fine-tunes
        assert len(pool) == 40 and np.bincount(split.pool.targets.numpy()).tolist() == [10] * 4
        assert pool | tuned == ids(TRAIN)
        wider = choice_split(TRAIN, TEST, draws=DrawConfig(n_per_class=20, repeats=2))  # 40 per class needed
        assert np.bincount(wider.pool.targets.numpy()).tolist() == [40] * 4
        halved = choice_split(TRAIN, TEST, draws=DrawConfig(n_per_class=50, repeats=5))  # at most half a class
        assert np.bincount(halved.pool.targets.numpy()).tolist() == [50] * 4
    assert split.record == {"split": "train-heldout", "samples": len(pool), "disjoint_from_eval": True,
                            "disjoint_from_finetune": True}
    x, y = split.probe(n=20)
    assert set(x.reshape(-1).int().tolist()) <= pool and np.bincount(y.numpy()).tolist() == [5] * 4


def test_the_test_probe_and_one_set_of_images_are_recorded_as_overlapping():
    split = choice_split(TRAIN, TEST, probe="test", test_subset=40)
    assert ids(split.pool) == ids(TEST)
    assert split.record == {"split": "test", "samples": 80, "disjoint_from_eval": False, "disjoint_from_finetune": True}
    x, _ = split.probe(n=8)  # the first test samples, as layermod prune took them
    assert x.reshape(-1).tolist() == list(range(10_000, 10_008))
    same = choice_split(TRAIN, TRAIN, same_images=True)  # a file without splits: training and test are one set
    assert same.record["disjoint_from_eval"] is False and same.record["disjoint_from_finetune"] is True
    assert choice_split(TRAIN, TRAIN, same_images=True, draws=DRAWS).record["samples"] == 40


def test_the_same_seed_draws_the_same_bytes_and_another_seed_other_images():
    a, b, c = (choice_split(TRAIN, TEST, seed=s, draws=DRAWS) for s in (3, 3, 4))
    assert a.pool.data.numpy().tobytes() == b.pool.data.numpy().tobytes()
    again = choice_split(TRAIN, TEST, **a.options)  # as a worker draws it from the plain options
    assert again.finetune.data.numpy().tobytes() == a.finetune.data.numpy().tobytes()
    assert a.probe()[0].numpy().tobytes() == b.probe()[0].numpy().tobytes()
    assert ids(a.pool) != ids(c.pool)


def test_bad_splits_are_refused_in_one_line():
    with pytest.raises(PlanError, match="unknown probe split 'val'; use train-heldout or test"):
        choice_split(TRAIN, TEST, probe="val")
    with pytest.raises(PlanError, match="leaves no training sample of some class"):
        choice_split(TRAIN, TEST, finetune_subset=400)


def test_files_without_the_record_read_as_chosen_on_the_test_split():
    old = PruningComparison.from_dict(json.loads((ROOT / "docs/pruning/comparison.json").read_text()))
    assert old.config == {} and choice_of(old.config)["split"] == "test"
    assert "config" not in old.to_dict()
    for path in sorted((ROOT / "docs/reproduction").glob("pruning-*/matched.json")):
        assert choice_of(MatchedComparison.load(path).config) == {"split": "test", "samples": None,
                                                                  "disjoint_from_eval": False}


@pytest.fixture
def setup(resnet20_checkpoint):
    weights, data = resnet20_checkpoint
    return ["--weights", str(weights), "--data-dir", str(data), "--n-per-class", "5", "--repeats", "2", "--quiet"]


def test_a_tiny_study_records_its_split_and_repeats_its_bytes(tmp_path, setup):
    study = ["prune-study", *setup, "--budgets", "0.3", "--methods", "modularity,last", "--seeds", "1",
             "--match", "flops", "--retrain", "finetune", "--train-subset", "100", "--test-subset", "50"]
    for name in ("a", "b"):
        assert main([*study, "--out", str(tmp_path / name)]) == 0
    a, b = ((tmp_path / name / "matched.json").read_bytes() for name in ("a", "b"))
    assert a == b
    assert json.loads(a)["config"]["choice"] == {"split": "train-heldout", "samples": 100, "curve": "pool",
                                                 "disjoint_from_eval": True, "disjoint_from_finetune": True}
    assert main([*study, "--probe-split", "test", "--out", str(tmp_path / "t")]) == 0
    test = json.loads((tmp_path / "t" / "matched.json").read_text())["config"]["choice"]
    assert test == {"split": "test", "samples": 100, "curve": "pool", "disjoint_from_eval": False,
                    "disjoint_from_finetune": True}
    # a curve read from a file measured on the test split chose on the evaluation's images, and says so
    weights = setup[setup.index("--weights") + 1]
    assert main(["curve", "--weights", weights, "--dataset", "fashion-mnist", "--data-dir",
                 setup[setup.index("--data-dir") + 1], "--n-per-class", "5", "--repeats", "2", "--views", "0",
                 "--quiet", "--out", str(tmp_path / "c")]) == 0
    assert main([*study, "--curve", str(tmp_path / "c"), "--out", str(tmp_path / "f")]) == 0
    read = json.loads((tmp_path / "f" / "matched.json").read_text())["config"]["choice"]
    assert read == {"split": "train-heldout", "samples": 100, "curve": "test", "disjoint_from_eval": False,
                    "disjoint_from_finetune": True}
    # the curve a study measured is kept beside it (the same bytes on a rerun); one read from a file is not copied
    assert (tmp_path / "a" / "curve.json").read_bytes() == (tmp_path / "b" / "curve.json").read_bytes()
    chose, tested = Curve.load(tmp_path / "a"), Curve.load(tmp_path / "c")
    assert chose.layers == tested.layers and not np.allclose(chose.values, tested.values)  # other images
    assert not (tmp_path / "f" / "curve.json").exists()


def test_the_prune_run_records_its_split(tmp_path, setup):
    assert main(["prune", *setup, "--remove", "1", "--methods", "modularity,cosine", "--seeds", "1",
                 "--finetune-subset", "100", "--out", str(tmp_path / "p")]) == 0
    saved = PruningComparison.load(tmp_path / "p")
    assert saved.config == {"choice": {"split": "train-heldout", "samples": 100, "curve": "pool",
                                       "disjoint_from_eval": True, "disjoint_from_finetune": True}}
