"""Every command-line option does what its help says. Each test runs ``main`` in-process on tiny data and checks the
option's effect, as recorded in the output files or as a value that changes (or, where promised, does not).

Below the marker at the end: the graph and draw options every measuring command shares, parsed into the same
GraphConfig and DrawConfig, refused while parsing in the configs' own words, and recorded in each command's output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from idx_files import write_mnist_like
from layermod import models
from layermod.cli import build_parser, main
from layermod.cli.args import measure_configs
from layermod.measure.config import DrawConfig, GraphConfig
from layermod.models.checkpoint import load_checkpoint, save_checkpoint

MLP_ARGS = {"num_classes": 4, "in_channels": 1, "width": 0.25, "input_size": 16, "depth": 3}
FORWARD_CALLS: list[int] = []  # inputs seen by counting_model's forward passes, one entry per pass


def counting_model() -> nn.Module:
    """``--model test_cli_options:counting_model``: an MLP on 1x4x4 inputs that records every forward pass."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 4))
    model.register_forward_pre_hook(lambda _, inputs: FORWARD_CALLS.append(len(inputs[0])))
    return model


def other_model() -> nn.Module:
    """``--model-b test_cli_options:other_model``: another architecture taking the same 1x4x4 inputs."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 20), nn.Tanh(), nn.Linear(20, 4))


@pytest.fixture
def pixels(tmp_path: Path) -> Path:
    """A .npz of 4 classes, 30 samples each, as 1x4x4 images with pixels in [0, 1] (attackable as they are)."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 30)
    x = np.clip(0.5 + 0.15 * rng.normal(size=(4, 16))[y] + 0.05 * rng.normal(size=(120, 16)), 0, 1)
    path = tmp_path / "pixels.npz"
    np.savez(path, X=x.reshape(-1, 1, 4, 4).astype(np.float32), y=y)
    return path


@pytest.fixture
def mlp_weights(tmp_path: Path) -> Path:
    """A checkpoint of an untrained MLP for ``pixels``: fixed weights, so that only the options change a run."""
    torch.manual_seed(0)
    return save_checkpoint(models.create("mlp", **MLP_ARGS), tmp_path / "ckpt" / "best.safetensors",
                           {"arch": "mlp", "arch_args": MLP_ARGS})


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def one_line_error(status: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("layermod: error:"), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def no_cuda_build(monkeypatch):
    """torch says CUDA is available (so --device auto picks it), though this build may have none."""
    real = torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return real


# ----------------------------------------------------------------------------------- curve: the graph


def curve_run(tmp_path: Path, data: Path, weights: Path, name: str, *extra: str) -> dict:
    out = tmp_path / name
    assert main(["curve", "--weights", str(weights), "--dataset", str(data), "--n-per-class", "6", "--repeats", "3",
                 "--views", "0", "--quiet", *extra, "--out", str(out)]) == 0
    return read_json(out / "curve.json")


@pytest.mark.parametrize("option, value, key, recorded", [
    ("--metric", "euclidean", "metric", "euclidean"),
    ("--symmetrize", "union", "symmetrize", "union"),
    ("--symmetrize", "mutual", "symmetrize", "mutual"),
    ("--binary", None, "weighted", False),
])
def test_graph_options_are_recorded_and_change_q(tmp_path, pixels, mlp_weights, option, value, key, recorded):
    default = curve_run(tmp_path, pixels, mlp_weights, "default")
    changed = curve_run(tmp_path, pixels, mlp_weights, "changed", option, *([value] if value else []))
    assert changed["config"][key] == recorded and default["config"][key] != recorded
    assert changed["config"]["seed"] == default["config"]["seed"]  # the same draws ...
    assert not np.allclose(changed["values"], default["values"])  # ... on another graph


def test_graph_options_reach_the_2d_views(tmp_path, pixels, mlp_weights):
    out = tmp_path / "views"
    assert main(["curve", "--weights", str(mlp_weights), "--dataset", str(pixels), "--n-per-class", "6", "--repeats",
                 "2", "--views", "1", "--metric", "euclidean", "--symmetrize", "mutual", "--binary", "--quiet",
                 "--out", str(out)]) == 0
    config = read_json(out / "embedding.json")["config"]
    assert (config["metric"], config["symmetrize"], config["weighted"]) == ("euclidean", "mutual", False)


def test_max_memory_splits_the_layer_passes_not_the_values(tmp_path, pixels):
    runs = {}
    for memory in ("2G", "1k"):
        FORWARD_CALLS.clear()
        out = tmp_path / memory
        assert main(["curve", "--model", "test_cli_options:counting_model", "--dataset", str(pixels),
                     "--n-per-class", "6", "--repeats", "3", "--views", "0", "--max-memory", memory, "--quiet",
                     "--out", str(out)]) == 0
        runs[memory] = (sum(FORWARD_CALLS), read_json(out / "curve.json"))
    (together, whole), (apart, split) = runs["2G"], runs["1k"]
    assert len(whole["layers"]) == 3 and apart > together  # every layer a pass of its own, not one for all
    assert split["values"] == whole["values"]


def test_seed_changes_the_draws(tmp_path, pixels, mlp_weights):
    zero = curve_run(tmp_path, pixels, mlp_weights, "seed0")
    other = curve_run(tmp_path, pixels, mlp_weights, "seed5", "--seed", "5")
    again = curve_run(tmp_path, pixels, mlp_weights, "seed5-again", "--seed", "5")
    assert (zero["config"]["seed"], other["config"]["seed"]) == (0, 5)
    assert other["values"] != zero["values"]  # fixed weights: only the draws differ
    assert again["values"] == other["values"]


def test_split_reads_the_train_split(tmp_path, capsys):
    data = tmp_path / "fm"
    write_mnist_like(data, n_train=200, n_test=100)  # 20 and 10 samples per class
    base = ["curve", "--model", "mlp", "--width", "0.1", "--dataset", "fashion-mnist", "--data-dir", str(data),
            "--n-per-class", "15", "--repeats", "1", "--views", "0", "--quiet"]
    one_line_error(main([*base, "--out", str(tmp_path / "test")]), capsys.readouterr().err, "has 10 samples")
    assert main([*base, "--split", "train", "--out", str(tmp_path / "train")]) == 0
    config = read_json(tmp_path / "train" / "curve.json")["config"]
    assert config["split"] == "train" and config["samples_per_draw"] == 150


def test_device_cpu_runs_where_auto_would_pick_cuda(tmp_path, pixels, mlp_weights, no_cuda_build, capsys):
    base = ["curve", "--weights", str(mlp_weights), "--dataset", str(pixels), "--n-per-class", "6", "--repeats", "2",
            "--views", "0", "--quiet"]
    if not no_cuda_build:  # --device auto now asks for the CUDA this build does not have
        one_line_error(main([*base, "--out", str(tmp_path / "auto")]), capsys.readouterr().err,
                       "cannot use device 'cuda'", "--device cpu")
    assert main([*base, "--device", "cpu", "--out", str(tmp_path / "cpu")]) == 0
    one_line_error(main([*base, "--device", "nonsense", "--out", str(tmp_path / "bad")]), capsys.readouterr().err,
                   "cannot use device 'nonsense'")
    assert not (tmp_path / "bad").exists()


def test_in_channels_builds_the_model_for_the_data(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 12)
    np.savez(tmp_path / "two.npz", X=rng.uniform(size=(48, 2, 8, 8)).astype(np.float32), y=y)
    base = ["curve", "--model", "smallcnn", "--num-classes", "4", "--width", "0.25", "--dataset",
            str(tmp_path / "two.npz"), "--n-per-class", "4", "--repeats", "1", "--views", "0", "--quiet"]
    # 1 input channel by default: the 2-channel data do not fit
    one_line_error(main([*base, "--out", str(tmp_path / "one")]), capsys.readouterr().err, "fit")
    assert main([*base, "--in-channels", "2", "--out", str(tmp_path / "two")]) == 0
    assert read_json(tmp_path / "two" / "curve.json")["config"]["arch_args"]["in_channels"] == 2


# ----------------------------------------------------------------------------------------------- compare


def compare_run(tmp_path: Path, data: Path, weights: Path, name: str, *extra: str) -> dict:
    out = tmp_path / name
    assert main(["compare", "--weights", str(weights), "--dataset", str(data), "--n-per-class", "6", "--repeats", "3",
                 "--quiet", *extra, "--out", str(out)]) == 0
    return read_json(out / "compare.json")


def test_unbiased_cka(tmp_path, pixels, mlp_weights):
    biased = compare_run(tmp_path, pixels, mlp_weights, "biased")
    unbiased = compare_run(tmp_path, pixels, mlp_weights, "unbiased", "--unbiased")
    assert (biased["config"]["unbiased"], unbiased["config"]["unbiased"]) == (False, True)
    assert unbiased["d"] == biased["d"]  # the same curves ...
    assert not np.allclose(unbiased["cka"], biased["cka"])  # ... another CKA estimator


def test_model_b_gives_the_columns(tmp_path, pixels, mlp_weights):
    itself = compare_run(tmp_path, pixels, mlp_weights, "itself")
    pair = compare_run(tmp_path, pixels, mlp_weights, "pair", "--model-b", "test_cli_options:other_model")
    assert pair["names"] == [str(mlp_weights), "test_cli_options:other_model"]
    assert pair["layers_a"] == itself["layers_a"] == itself["layers_b"]
    assert len(pair["layers_b"]) == 2 and pair["layers_b"] != pair["layers_a"][:2]  # the other model's auto points
    assert np.asarray(pair["cka"]).shape == np.asarray(pair["d"]).shape == (len(pair["layers_a"]), 2)
    np.testing.assert_allclose(np.diag(itself["cka"]), 1, atol=1e-6)  # a layer against itself ...
    assert not np.allclose(np.asarray(pair["cka"])[1:], 1)  # ... not against another model's


# ------------------------------------------------------------------------------------------------ attack


def attack_run(tmp_path: Path, data: Path, weights: Path, name: str, *extra: str) -> dict:
    out = tmp_path / name
    assert main(["attack", "--weights", str(weights), "--dataset", str(data), "--method", "pgd", "--steps", "3",
                 "--eps", "0.3", "--step-size", "0.1", "--keep", "all", "--n-per-class", "5", "--repeats", "2",
                 "--quiet", *extra, "--out", str(out)]) == 0
    return read_json(out / "attack.json")


def test_norm_l2(tmp_path, pixels, mlp_weights, capsys):
    linf = attack_run(tmp_path, pixels, mlp_weights, "linf")
    l2 = attack_run(tmp_path, pixels, mlp_weights, "l2", "--norm", "l2")
    assert (linf["attack"]["norm"], l2["attack"]["norm"]) == ("linf", "l2")
    assert l2["attacked"]["config"]["attack"]["norm"] == "l2"
    assert "PGD (l2" in capsys.readouterr().out
    assert l2["attacked"]["values"] != linf["attacked"]["values"]
    assert l2["clean"]["values"] == linf["clean"]["values"]  # the same samples, attacked otherwise


def test_no_random_start(tmp_path, pixels, mlp_weights):
    random = attack_run(tmp_path, pixels, mlp_weights, "random")
    fixed = attack_run(tmp_path, pixels, mlp_weights, "fixed", "--no-random-start")
    assert (random["attack"]["random_start"], fixed["attack"]["random_start"]) == (True, False)
    assert fixed["attacked"]["values"] != random["attacked"]["values"]
    assert fixed["clean"]["values"] == random["clean"]["values"]


def test_pool_per_class(tmp_path, pixels, mlp_weights):
    default = attack_run(tmp_path, pixels, mlp_weights, "default")
    small = attack_run(tmp_path, pixels, mlp_weights, "small", "--pool-per-class", "7")
    assert default["n_attacked"] == 4 * 20  # 2 x n-per-class x repeats per class
    assert small["n_attacked"] == 4 * 7 and small["clean"]["config"]["pool_per_class"] == 7


# ------------------------------------------------------------------------------------------------- prune


@pytest.fixture
def resnet(resnet20_checkpoint) -> list[str]:
    """prune's arguments for an untrained ResNet20 checkpoint on tiny Fashion-MNIST-layout files."""
    weights, data = resnet20_checkpoint
    return ["--weights", str(weights), "--data-dir", str(data), "--n-per-class", "4", "--repeats", "3", "--quiet"]


def plan_run(tmp_path: Path, resnet: list[str], name: str, *extra: str) -> dict:
    out = tmp_path / name
    assert main(["prune", *resnet, "--plan-only", *extra, "--out", str(out)]) == 0
    return read_json(out / "plan.json")


def test_target_params_removes_the_fewest_units_that_reach_it(tmp_path, resnet):
    model, _ = load_checkpoint(resnet[1])
    total = sum(p.numel() for p in model.parameters())
    modules = dict(model.named_modules())
    counts = {}
    for fraction in (0.05, 0.3):
        remove = plan_run(tmp_path, resnet, f"target{fraction}", "--target-params", str(fraction))["remove"]
        freed = [sum(p.numel() for p in modules[name].parameters()) for name in remove]
        assert sum(freed) >= fraction * total > sum(freed[:-1]), (fraction, remove)
        counts[fraction] = len(remove)
    assert counts[0.3] > counts[0.05]


def test_z_and_min_gain_set_the_plateau_band(tmp_path, resnet):
    by_z = {z: plan_run(tmp_path, resnet, f"z{z}", "--remove", "1", "--z", z, "--rel-gain", "0")["verdicts"]
            for z in ("2", "4")}
    judged = [i for i, v in enumerate(by_z["2"]) if v["noise"] is not None]
    assert len(judged) >= 3
    for i in judged:  # threshold = max(z x noise, min_gain)
        assert by_z["2"][i]["threshold"] == pytest.approx(2 * by_z["2"][i]["noise"])
        assert by_z["4"][i]["threshold"] == pytest.approx(2 * by_z["2"][i]["threshold"])
    wide = plan_run(tmp_path, resnet, "gain", "--remove", "1", "--z", "0", "--rel-gain", "0", "--min-gain",
                    "10")["verdicts"]
    assert all(wide[i]["threshold"] == 10 and wide[i]["verdict"] == "plateau" for i in judged)
    relative = plan_run(tmp_path, resnet, "rel", "--remove", "1", "--z", "0", "--rel-gain", "2")["verdicts"]
    q = np.nancumsum([0.0 if v["increment"] is None else v["increment"] for v in relative])
    step = (q.max() - q.min()) / (len(relative) - 1)  # the curve's mean rise per layer, from its increments
    assert all(relative[i]["threshold"] == pytest.approx(2 * step) for i in judged)


def test_finetune_epochs_and_lr(tmp_path, resnet):
    common = [*resnet, "--remove", "1", "--methods", "modularity", "--seeds", "1", "--finetune-subset", "50"]
    runs = {}
    for name, extra in (("default", []), ("epochs", ["--finetune-epochs", "2"]), ("lr", ["--finetune-lr", "0.1"])):
        assert main(["prune", *common, *extra, "--out", str(tmp_path / name)]) == 0
        runs[name] = load_checkpoint(tmp_path / name / "pruned.safetensors")
    finetune = {name: meta["finetune"] for name, (_, meta) in runs.items()}
    assert (finetune["default"]["epochs"], finetune["default"]["lr"]) == (1, 0.01)
    assert (finetune["epochs"]["epochs"], finetune["epochs"]["lr"]) == (2, 0.01)
    assert (finetune["lr"]["epochs"], finetune["lr"]["lr"]) == (1, 0.1)
    weights = {name: model.conv1.weight for name, (model, _) in runs.items()}
    assert not torch.equal(weights["epochs"], weights["default"]) and not torch.equal(weights["lr"], weights["default"])


# ----------------------------------------------------------------------------------------- train and eval


@pytest.fixture
def fm(tmp_path: Path) -> Path:
    data = tmp_path / "fm"
    write_mnist_like(data, n_train=60, n_test=40)
    return data


def train_run(tmp_path: Path, data: Path, name: str, *extra: str) -> tuple[dict, nn.Module]:
    out = tmp_path / name
    assert main(["train", "--model", "mlp", "--width", "0.25", "--dataset", "fashion-mnist", "--data-dir", str(data),
                 "--epochs", "2", "--batch-size", "16", "--quiet", *extra, "--out", str(out)]) == 0
    model, meta = load_checkpoint(out / "last.safetensors")
    return meta, model


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("option, value, key, default", [
    ("--momentum", "0.5", "momentum", 0.9),
    ("--weight-decay", "0.01", "weight_decay", 5e-4),
    ("--seed", "3", "seed", 0),
])
def test_training_flags_are_recorded_and_change_the_weights(tmp_path, fm, option, value, key, default):
    base_meta, base = train_run(tmp_path, fm, "default")
    meta, model = train_run(tmp_path, fm, "changed", option, value)
    assert base_meta["training"][key] == default and meta["training"][key] == float(value)
    assert not same_weights(model, base)


def test_workers_are_recorded_and_change_nothing_in_memory(tmp_path, fm):
    base_meta, base = train_run(tmp_path, fm, "default")
    meta, model = train_run(tmp_path, fm, "workers", "--workers", "1")
    assert (base_meta["training"]["num_workers"], meta["training"]["num_workers"]) == (0, 1)
    assert same_weights(model, base)  # the in-memory fast path uses no DataLoader workers


def test_train_device_and_in_channels(tmp_path, fm, no_cuda_build, capsys):
    meta, _ = train_run(tmp_path, fm, "cpu", "--device", "cpu")
    assert meta["device"] == "cpu" and meta["arch_args"]["in_channels"] == 1  # the data's channels by default
    status = main(["train", "--model", "mlp", "--width", "0.25", "--in-channels", "2", "--dataset", "fashion-mnist",
                   "--data-dir", str(fm), "--device", "cpu", "--epochs", "1", "--quiet",
                   "--out", str(tmp_path / "two")])
    one_line_error(status, capsys.readouterr().err, "fit")  # 2 x 784 inputs asked of 1 x 784 data
    assert not (tmp_path / "two" / "last.safetensors").exists()


def test_probe_seed_changes_the_probe_draws_only(tmp_path, fm):
    track = ["--track-every", "1", "--probe-per-class", "2", "--probe-repeats", "2"]
    runs = {seed: tmp_path / f"probe{seed}" for seed in ("0", "5")}
    for seed, out in runs.items():
        assert main(["train", "--model", "mlp", "--width", "0.25", "--dataset", "fashion-mnist", "--data-dir", str(fm),
                     "--epochs", "1", "--batch-size", "16", "--quiet", *track, "--probe-seed", seed,
                     "--out", str(out)]) == 0
    zero, five = (read_json(out / "dynamics.json") for out in runs.values())
    assert (zero["config"]["seed"], five["config"]["seed"]) == (0, 5)
    assert five["values"] != zero["values"]
    assert five["test_acc"] == zero["test_acc"]  # the training itself is the same
    assert (runs["0"] / "last.safetensors").read_bytes() == (runs["5"] / "last.safetensors").read_bytes()


def test_eval_split_and_device(tmp_path, fm, no_cuda_build):
    train_run(tmp_path, fm, "run", "--device", "cpu")
    weights = str(tmp_path / "run" / "best.safetensors")
    for split, extra in (("test", []), ("train", ["--split", "train"])):  # the test split by default
        assert main(["eval", "--weights", weights, "--device", "cpu", *extra, "--out", str(tmp_path / split)]) == 0
    test, train = read_json(tmp_path / "test" / "eval.json"), read_json(tmp_path / "train" / "eval.json")
    assert (test["split"], test["n"]) == ("test", 40)
    assert (train["split"], train["n"]) == ("train", 60)


# --retrain: the demo is too slow to run twice more here; tests/test_cli.py's end-to-end demo run (slow) trains,
# reuses the cached model, then retrains it with --retrain to the same bytes.


# --- shared graph and draw options on every measuring command (added with the CLI split) ---

SHARED = ["--k", "4", "--metric", "euclidean", "--symmetrize", "union", "--binary", "--resolution", "0.5",
          "--n-per-class", "6", "--repeats", "2", "--seed", "3", "--null", "2"]
GRAPH = GraphConfig(k=4, metric="euclidean", symmetrize="union", weighted=False, resolution=0.5)
DRAWS = DrawConfig(n_per_class=6, repeats=2, seed=3, null_permutations=2)
MEASURED = {**GRAPH.to_dict(), **DRAWS.to_dict()}


@pytest.fixture
def model_file(tmp_path) -> str:
    """A small MLP for the 1x4x4 inputs of ``blobs_npz``, as ``file.py:function``."""
    path = tmp_path / "tiny.py"
    path.write_text("import torch\nfrom torch import nn\n\ndef build():\n    torch.manual_seed(0)\n"
                    "    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(),"
                    " nn.Linear(8, 4))\n")
    return f"{path}:build"


@pytest.fixture
def checkpoint(resnet20_checkpoint) -> list[str]:
    """prune's arguments for an untrained ResNet20 (width 1/8) checkpoint on tiny Fashion-MNIST-layout files."""
    weights, data = resnet20_checkpoint
    return ["--weights", str(weights), "--data-dir", str(data)]


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def measured(config: dict) -> dict:
    return {key: config[key] for key in MEASURED}


def test_importing_the_cli_does_not_import_torch():
    code = "import sys, layermod.cli\nprint('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"


@pytest.mark.parametrize("command", [
    ["curve", "--model", "m", "--dataset", "d", "--out", "o"],
    ["attack", "--model", "m", "--dataset", "d", "--out", "o"],
    ["compare", "--model", "m", "--dataset", "d", "--out", "o"],
    ["prune", "--weights", "w", "--remove", "1", "--out", "o"],
])
def test_every_measuring_command_parses_the_same_options_into_the_same_configs(command):
    parser = build_parser()
    assert measure_configs(parser.parse_args([*command, *SHARED])) == (GRAPH, DRAWS)
    assert measure_configs(parser.parse_args(command)) == (GraphConfig(), DrawConfig())  # the configs' defaults


def test_train_takes_them_too_with_its_own_seed_beside_the_probe_seed():
    args = build_parser().parse_args(["train", "--model", "mlp", "--dataset", "d", "--out", "o", "--track-every", "1",
                                      *[v if v != "--seed" else "--probe-seed" for v in SHARED], "--seed", "11"])
    assert measure_configs(args) == (GRAPH, DRAWS) and args.seed == 11
    old_names = ["--probe-per-class", "6", "--probe-repeats", "2"]
    args = build_parser().parse_args(["train", "--model", "mlp", "--dataset", "d", "--out", "o", *old_names])
    assert measure_configs(args)[1] == DrawConfig(n_per_class=6, repeats=2)


@pytest.mark.parametrize("option, message", [
    (["--k", "0"], "k=0 must be an integer >= 1"),
    (["--k", "x"], "invalid k value"),
    (["--resolution", "nan"], "resolution=nan must be finite"),
    (["--resolution", "-1"], "resolution=-1.0 must be finite, >= 0 and <= 10000"),
    (["--null", "1"], "at least 2"),
    (["--n-per-class", "0"], "n_per_class=0"),
    (["--metric", "cosinus"], "invalid choice: 'cosinus'"),
])
@pytest.mark.parametrize("command", [["curve", "--model", "m", "--dataset", "d", "--out", "o"],
                                     ["prune", "--weights", "w", "--remove", "1", "--out", "o"]])
def test_bad_options_are_refused_while_parsing(command, option, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, *option])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err.strip().splitlines()[-1] and "Traceback" not in err


def test_curve_records_the_options_and_draws_its_views_on_the_same_graph(tmp_path, blobs_npz, model_file):
    out = tmp_path / "curve"
    assert main(["curve", "--model", model_file, "--dataset", str(blobs_npz), *SHARED, "--views", "1", "--quiet",
                 "--out", str(out)]) == 0
    assert measured(read(out / "curve.json")["config"]) == MEASURED
    views = read(out / "embedding.json")["config"]
    assert {key: views[key] for key in GRAPH.to_dict()} == GRAPH.to_dict() and views["seed"] == 3


def test_the_resolution_option_moves_q_as_the_formula_says(tmp_path, blobs_npz, model_file):
    """Q(gamma) = e_in / 2W - gamma * sum_c (S_c / 2W)^2: linear in gamma on the same graphs."""
    values = {}
    for gamma in ("0", "1", "2.5"):
        out = tmp_path / gamma
        assert main(["curve", "--model", model_file, "--dataset", str(blobs_npz), "--n-per-class", "6", "--repeats",
                     "2", "--resolution", gamma, "--views", "0", "--quiet", "--out", str(out)]) == 0
        values[float(gamma)] = np.array(read(out / "curve.json")["values"])
    np.testing.assert_allclose(values[2.5], values[0.0] - 2.5 * (values[0.0] - values[1.0]), rtol=0, atol=1e-12)


def test_attack_and_compare_record_the_options(tmp_path, blobs_npz, model_file):
    common = ["--model", model_file, "--dataset", str(blobs_npz), *SHARED, "--quiet"]
    assert main(["attack", *common, "--method", "fgsm", "--eps", "0.1", "--keep", "all", "--pixel-range=-50,50",
                 "--out", str(tmp_path / "attack")]) == 0
    attack = read(tmp_path / "attack" / "attack.json")
    assert measured(attack["clean"]["config"]) == measured(attack["attacked"]["config"]) == MEASURED
    assert attack["attack"]["seed"] == 3
    assert main(["compare", *common, "--out", str(tmp_path / "compare")]) == 0
    assert measured(read(tmp_path / "compare" / "compare.json")["curve_a"]["config"]) == MEASURED


def test_prune_measures_its_curve_with_the_options_and_records_them_in_the_plan(tmp_path, checkpoint):
    out = tmp_path / "plan"
    assert main(["prune", *checkpoint, "--remove", "1", "--plan-only", "--metric", "euclidean", "--symmetrize",
                 "mutual", "--k", "2", "--n-per-class", "3", "--repeats", "2", "--seed", "5", "--quiet",
                 "--out", str(out)]) == 0
    plan = read(out / "plan.json")
    assert plan["graph"] == GraphConfig(k=2, metric="euclidean", symmetrize="mutual").to_dict()
    assert plan["draws"] == DrawConfig(n_per_class=3, repeats=2, seed=5).to_dict()
    assert len(plan["remove"]) == 1 and not (out / "comparison.json").exists()


def test_train_tracks_with_the_options_and_records_them(tmp_path, blobs_npz):
    out = tmp_path / "run"
    assert main(["train", "--model", "mlp", "--width", "0.25", "--arch-arg", "input_size=16", "--dataset",
                 str(blobs_npz), "--test-dataset", str(blobs_npz), "--epochs", "1", "--batch-size", "30", "--quiet",
                 "--track-every", "1", "--k", "5", "--metric", "euclidean", "--resolution", "0.5", "--n-per-class",
                 "8", "--repeats", "2", "--probe-seed", "4", "--seed", "1", "--out", str(out)]) == 0
    config = read(out / "dynamics.json")["config"]
    assert measured(config) == {**GraphConfig(k=5, metric="euclidean", resolution=0.5).to_dict(),
                                **DrawConfig(n_per_class=8, repeats=2, seed=4).to_dict()}
    assert read(out / "last.json")["tracking"]["graph"]["k"] == 5 and read(out / "last.json")["seed"] == 1
