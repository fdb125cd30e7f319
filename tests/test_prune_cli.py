"""`layermod prune` end to end on a tiny checkpoint: plan, pruned checkpoint, comparison of every method."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from layermod import models
from layermod.models.checkpoint import load_checkpoint, save_checkpoint
from layermod.cli import main
from layermod.pruning.choices import AUTO


@pytest.fixture
def setup(resnet20_checkpoint):
    """prune's arguments for an (untrained) ResNet20 checkpoint on tiny Fashion-MNIST-layout files."""
    weights, data = resnet20_checkpoint
    return ["--weights", str(weights), "--data-dir", str(data), "--n-per-class", "5", "--repeats", "2", "--quiet"]


@pytest.mark.slow
def test_prune_writes_plan_comparison_and_a_loadable_pruned_checkpoint(tmp_path, setup, capsys):
    out = tmp_path / "run"
    assert main(["prune", *setup, "--remove", "2", "--seeds", "2", "--finetune-subset", "100", "--out", str(out)]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert len(plan["remove"]) == 2 and plan["method"] == AUTO and plan["asked"] == "auto"
    assert f"method: auto = {AUTO}" in capsys.readouterr().out
    rows = {row["method"]: row for row in json.loads((out / "comparison.json").read_text())["rows"]}
    # the default comparison, and the method the plan used whether or not it is one of them
    assert set(rows) == {"none", "modularity", "steepest", "cosine", "angular", "cka", "reinit", "random", "first",
                         "last", AUTO}
    assert rows["none"]["n_removed"] == 0
    assert rows[AUTO]["layers_removed"] == plan["remove"]
    assert rows["first"]["layers_removed"] == ["layer1.0", "layer1.1"]
    assert rows["last"]["layers_removed"] == ["layer3.2", "layer3.1"]
    for method, row in rows.items():
        assert len(row["accs"]) == 2 and 0 <= row["acc_mean"] <= 1
        if method != "none":
            assert row["n_removed"] == 2 and row["params"] < rows["none"]["params"]
            assert row["flops"] < rows["none"]["flops"]
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "comparison.csv").read_text().splitlines()) == 1 + len(rows)  # header + one row per method
    assert "| modularity | 2 |" in (out / "comparison.md").read_text()
    pruned, meta = load_checkpoint(out / "pruned.safetensors")
    assert meta["plan"]["remove"] == plan["remove"]
    assert all(isinstance(dict(pruned.named_modules())[name], nn.Identity) for name in plan["remove"])
    assert sum(p.numel() for p in pruned.parameters()) == rows[AUTO]["params"]


def test_the_plan_is_chosen_by_the_method_asked_for_and_auto_is_the_evidence_s(tmp_path, setup, capsys):
    def plan(*extra: str) -> dict:
        out = tmp_path / "-".join(extra or ("default",))
        assert main(["prune", *setup, "--remove", "2", "--plan-only", *extra, "--out", str(out)]) == 0
        return json.loads((out / "plan.json").read_text())

    assert plan("--method", "first")["remove"] == ["layer1.0", "layer1.1"]
    assert plan("--method", "last")["remove"] == ["layer3.2", "layer3.1"]
    assert f"the committed matched-FLOPs studies favour {AUTO} (--method auto)" in capsys.readouterr().out
    default, named = plan(), plan("--method", AUTO)
    assert f"method: auto = {AUTO}" in capsys.readouterr().out
    assert (default["method"], default["asked"], named["asked"]) == (AUTO, "auto", None)
    assert default["remove"] == named["remove"]
    paper = plan("--method", "modularity")
    increments = {v["layer"]: v["increment"] for v in paper["verdicts"]}
    removable = [f"layer1.{i}" for i in range(3)] + [f"layer{s}.{i}" for s in (2, 3) for i in (1, 2)]
    flattest = sorted(removable, key=increments.get)  # the downsampling blocks layer2.0 and layer3.0 stay
    assert paper["method"] == "modularity" and paper["remove"] == flattest[:2]
    scored = plan("--method", "ablation-accuracy", "--bn-batches", "1")
    assert scored["bn_batches"] == 1 and len(scored["remove"]) == 2
    with pytest.raises(SystemExit):
        main(["prune", *setup, "--remove", "2", "--method", "none", "--out", str(tmp_path / "x")])


def test_plan_only_then_an_edited_plan(tmp_path, setup):
    out = tmp_path / "plan"
    assert main(["prune", *setup, "--remove", "3", "--plan-only", "--out", str(out)]) == 0
    assert not (out / "comparison.json").exists()
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps({"method": "by hand", "remove": ["layer2.2"]}))
    assert main(["prune", *setup, "--plan", str(edited), "--methods", "modularity", "--seeds", "1",
                 "--finetune-subset", "50", "--out", str(tmp_path / "edited-run")]) == 0
    rows = json.loads((tmp_path / "edited-run" / "comparison.json").read_text())["rows"]
    assert rows[0]["layers_removed"] == ["layer2.2"]


@pytest.mark.parametrize("extra, message", [
    (["--remove", "99"], "can be removed"),
    (["--plan", "PLAN:layer2.0"], "layer2.0"),
    (["--plan", "PLAN:layer1.0,layer1.1,layer1.2"], "stage"),
    (["--remove", "1", "--methods", "modularity,magic"], "magic"),
])
def test_bad_plans_and_budgets(tmp_path, setup, capsys, extra, message):
    if extra[0] == "--plan":
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps({"remove": extra[1].removeprefix("PLAN:").split(",")}))
        extra = ["--plan", str(plan)]
    assert main(["prune", *setup, *extra, "--seeds", "1", "--finetune-subset", "50", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_a_curve_of_other_layers_is_refused(tmp_path, setup, capsys):
    curve = tmp_path / "curve.json"
    curve.write_text(json.dumps({"layers": ["a", "b"], "values": [[0.1, 0.2]], "config": {}}))
    assert main(["prune", *setup, "--remove", "1", "--curve", str(curve), "--out", str(tmp_path / "o")]) == 2
    assert "other layers" in capsys.readouterr().err


def test_nothing_removable_exits_cleanly(tmp_path, setup, capsys):
    args = {"num_classes": 10, "in_channels": 1, "width": 0.25, "convs": [1, 1, 1]}
    weights = save_checkpoint(models.create("smallcnn", **args), tmp_path / "single" / "best.safetensors",
                              {"arch": "smallcnn", "arch_args": args, "dataset": "fashion-mnist"})
    setup[1] = str(weights)
    assert main(["prune", *setup, "--remove", "1", "--out", str(tmp_path / "o")]) == 0
    assert "nothing to prune" in capsys.readouterr().out


def test_from_scratch_retrains_from_fresh_weights(tmp_path, setup):
    common = [*setup, "--remove", "1", "--methods", "modularity", "--seeds", "1", "--finetune-subset", "50"]
    assert main(["prune", *common, "--out", str(tmp_path / "warm")]) == 0
    assert main(["prune", *common, "--from-scratch", "--out", str(tmp_path / "cold")]) == 0
    warm, _ = load_checkpoint(tmp_path / "warm" / "pruned.safetensors")
    cold, _ = load_checkpoint(tmp_path / "cold" / "pruned.safetensors")
    assert not torch.equal(warm.conv1.weight, cold.conv1.weight)


@pytest.mark.slow
def test_prune_study_in_worker_processes_matches_this_process(tmp_path, setup, capsys):
    """The retraining jobs give the same rows whether they run here or in 2 spawned processes that each load the
    checkpoint and data themselves."""
    study = ["prune-study", *setup, "--budgets", "0.2,0.4", "--methods", "modularity,last,cka", "--seeds", "2",
             "--match", "flops", "--retrain", "finetune,scratch", "--scratch-epochs", "1", "--train-subset", "100"]
    assert main([*study, "--out", str(tmp_path / "here")]) == 0
    assert main([*study, "--workers", "2", "--out", str(tmp_path / "spawned")]) == 0
    here, spawned = (json.loads((tmp_path / d / "matched.json").read_text()) for d in ("here", "spawned"))
    assert here["rows"] == spawned["rows"]
    assert len(here["rows"]) == 2 * 2 * (1 + 2 * 3)  # retrains x seeds x (none + budgets x methods)
    assert "### scratch, budgets matched by flops" in capsys.readouterr().out
    assert (tmp_path / "here" / "pareto-flops.png").stat().st_size > 0


def test_prune_study_refuses_bad_budgets_and_an_address_without_ray(tmp_path, setup, capsys):
    out = tmp_path / "x"
    with pytest.raises(SystemExit) as exit_:
        main(["prune-study", *setup, "--budgets", "0.2,1.5", "--out", str(out)])
    assert exit_.value.code == 2 and "budgets are shares in (0, 1)" in capsys.readouterr().err
    assert main(["prune-study", *setup, "--address", "10.0.0.1:6379", "--out", str(out)]) == 2
    assert "add --backend ray" in capsys.readouterr().err
    assert not (out / "matched.json").exists()


def test_prune_study_refuses_a_device_torch_cannot_use(tmp_path, setup, capsys):
    assert main(["prune-study", *setup, "--device", "tpu9", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "cannot use device 'tpu9'" in err and "pass --device cpu" in err and "Traceback" not in err
    assert not (tmp_path / "x" / "matched.json").exists()


def test_prune_study_runs_the_removal_scores_iteratively_and_records_their_cost(tmp_path, setup):
    methods = ["modularity-phase", "modularity-ablation", "ablation-accuracy", "cosine"]
    study = ["prune-study", *setup, "--budgets", "0.3", "--methods", ",".join(methods), "--seeds", "1",
             "--match", "flops", "--retrain", "finetune", "--train-subset", "60", "--iterative", "--quiet"]
    assert main([*study, "--bn-batches", "1", "--out", str(tmp_path / "s")]) == 0
    saved = json.loads((tmp_path / "s" / "matched.json").read_text())
    assert saved["config"]["iterative"] is True and saved["config"]["bn_batches"] == 1
    scoring = saved["config"]["scoring"]
    assert set(scoring) == set(methods)
    # every unit scored once without each unit, then again on the pruned network: more passes than units
    assert scoring["ablation-accuracy"]["probe_passes"] > scoring["cosine"]["probe_passes"] >= 1
    assert scoring["modularity-phase"]["probe_passes"] == 0  # read from the curve, no network run
    assert {row["method"] for row in saved["rows"]} == {"none", *methods}
    table = (tmp_path / "s" / "matched.md").read_text()
    cosine = next(line for line in table.splitlines() if line.startswith("| cosine |"))
    passes = scoring["cosine"]["probe_passes"]
    assert "| scoring |" in table and cosine.endswith(f"{passes:g} pass{'es' * (passes != 1)} |")
