"""Sweeps end to end on tiny real models: spec checks, stable ids, grid expansion, item directories that are
exactly `layermod curve` runs, resume without recomputing, shards that add up to the full table, failures
recorded with exit status 2, worker processes, the report, and `layermod dynamics` over a real training run.

The Ray cluster tests are in test_sweep_ray.py."""

from __future__ import annotations

import csv
import json
import os
import socket
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from layermod.analysis.curve import Curve
from layermod.analysis.dynamics import Dynamics
from layermod.cli import main
from layermod.errors import LayermodError
from layermod.models.commit import read_sidecar
from layermod.sweep.executor import ItemResult, Resources, run_items
from layermod.errors import SweepError
from layermod.sweep.spec import MAX_SPEC_ITEMS, item_hash, parse_spec
from models_for_tests import blobs_npz

KINDS = {"model": "value", "dataset": "value", "k": "value", "seed": "value", "layers": "value",
         "weights": "value", "binary": "flag", "arch-arg": "repeat"}
TINY = """
[defaults]
model = "mlp"
arch-arg = {input_size = 16}
width = 0.05
num-classes = 4
dataset = "blobs.npz"
n-per-class = 5
repeats = 2
views = 0
"""


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("LAYERMOD_DEBUG", raising=False)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory holding blobs.npz (4 classes x 30 samples of 1x4x4) and a counting dataset
    function (counted.py:load, the same data, one line in calls.txt per call)."""
    blobs_npz(tmp_path / "blobs.npz", n_per_class=30)
    (tmp_path / "counted.py").write_text(textwrap.dedent("""
        import os
        import numpy as np

        def load():
            here = os.path.dirname(os.path.abspath(__file__))
            with open(os.path.join(here, "calls.txt"), "a") as fh:
                fh.write("call\\n")
            data = np.load(os.path.join(here, "blobs.npz"))
            return data["X"], data["y"]
    """))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def calls(workdir: Path) -> int:
    path = workdir / "calls.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def write_spec(path: Path, *tables: str) -> Path:
    path.write_text(TINY + "\n".join(textwrap.dedent(t) for t in tables))
    return path


def sweep(capsys, *args) -> tuple[int, str, str]:
    status = main(["sweep", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


def table(path: Path) -> list[dict]:
    with open(path / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def one_line(status: int, err: str, *words: str) -> None:
    assert status == 2 and err.startswith("layermod: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, (word, err)


# ---- the spec ---------------------------------------------------------------------------------------------------

def test_grid_runs_defaults_and_ids():
    data = {"defaults": {"model": "mlp", "k": 3}, "grid": {"k": [3, 5], "seed": [0, 1, 2]},
            "run": [{"k": 7, "layers": [0, -1]}, {"k": 3, "seed": 0}]}  # the second run is a grid item again
    spec = parse_spec(data, KINDS)
    assert len(spec.items) == 7
    assert [item.id for item in spec.items] == sorted(item.id for item in spec.items)
    options = [item.options for item in spec.items]
    assert {"model": "mlp", "k": 7, "layers": [0, -1]} in options
    assert sum(o == {"model": "mlp", "k": 3, "seed": 0} for o in options) == 1
    assert spec.varying == ["k", "layers", "seed"]
    for item in spec.items:
        slug, _, digest = item.id.rpartition("-")
        assert digest == item_hash(item.options) and len(digest) == 10
        assert f"k-{item.options['k']}" in slug
    # the same options written in another order give the same ids; the hash is a function of the options alone
    again = parse_spec({"grid": {"seed": [2, 1, 0], "k": [5, 3]}, "defaults": {"k": 3, "model": "mlp"},
                        "run": [{"layers": [0, -1], "k": 7}]}, KINDS)
    assert [i.id for i in again.items] == [i.id for i in spec.items]
    assert item_hash({"b": 1, "a": [1, 2]}) == item_hash({"a": [1, 2], "b": 1}) != item_hash({"a": [2, 1], "b": 1})
    assert parse_spec({"defaults": {"model": "mlp"}}, KINDS).items[0].id == f"item-{item_hash({'model': 'mlp'})}"


def test_shards_split_the_items_by_id():
    spec = parse_spec({"grid": {"k": [3, 4, 5, 6, 7], "seed": [0, 1]}}, KINDS)
    shards = [spec.shard(i, 3) for i in (1, 2, 3)]
    assert sorted(i.id for s in shards for i in s) == [i.id for i in spec.items]
    assert [len(s) for s in shards] == [4, 3, 3]
    with pytest.raises(SweepError, match="shard 4/3"):
        spec.shard(4, 3)


def test_a_glob_in_the_grid_is_files_sorted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("b.safetensors", "a.safetensors", "c.json"):
        (tmp_path / "ck").mkdir(exist_ok=True)
        (tmp_path / "ck" / name).write_text("x")
    spec = parse_spec({"grid": {"weights": "ck/*.safetensors"}}, KINDS)
    assert [i.options["weights"] for i in spec.items] == ["ck/a.safetensors", "ck/b.safetensors"]
    assert [i.id.rpartition("-")[0] for i in spec.items] == ["weights-ck-a", "weights-ck-b"]


def test_checkpoints_of_one_name_in_other_folders_get_slugs_that_tell_them_apart():
    spec = parse_spec({"grid": {"weights": ["runs/r20/best.safetensors", "runs/r56/best.safetensors"]}}, KINDS)
    assert [i.id.rpartition("-")[0] for i in spec.items] == ["weights-r20-best", "weights-r56-best"]


@pytest.mark.parametrize("data, words", [
    ({"defaults": {"kk": 3}}, ["unknown option 'kk' in [defaults]", "valid: arch-arg, binary, dataset, k,"]),
    ({"grid": {"sed": [1]}}, ["unknown option 'sed' in [grid]"]),
    ({"run": [{"k": 3, "modle": "mlp"}]}, ["unknown option 'modle' in [[run]] 1"]),
    ({"defaults": {}, "grids": {}}, ["unknown table or key 'grids'", "valid: defaults, grid, run, resources"]),
    ({"defaults": {"k": True}}, ["[defaults] k", "is a boolean", "a string, a number"]),
    ({"defaults": {"binary": 1}}, ["binary", "true or false"]),
    ({"defaults": {"arch-arg": 3}}, ["arch-arg", "{depth = 2}"]),
    ({"grid": {"k": []}}, ["[grid] k", "an empty list"]),
    ({"grid": {"k": 3}}, ["[grid] k", "non-empty list", "an integer"]),
    ({"grid": {"k": [3, {"a": 1}]}}, ["[grid] k[1]", "a table"]),
    ({"grid": {"weights": "nowhere/*.safetensors"}}, ["matches no file", "glob"]),
    ({"grid": {"k": list(range(101)), "seed": list(range(100))}}, ["10,100 items", f"more than {MAX_SPEC_ITEMS:,}"]),
    ({"run": {"k": 3}}, ["[[run]] tables"]),
    ({"resources": {"num-gpu": 1}}, ["unknown key 'num-gpu' in [resources]", "num-gpus"]),
    ({"resources": {"threads": 1.5}}, ["threads", "an integer"]),
    ({"resources": {"num-cpus": -1}}, ["num-cpus=-1.0"]),
    ({"resources": {"threads": 1}, "threads": 2}, ["threads is given both"]),
])
def test_bad_specs_are_one_line(tmp_path, monkeypatch, data, words):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SweepError) as err:
        parse_spec(data, KINDS, source="spec.toml")
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_bad_spec_files_through_the_command(workdir, capsys):
    out = workdir / "out"
    (workdir / "broken.toml").write_text("[defaults\nk = 3")
    one_line(*sweep(capsys, workdir / "broken.toml", "--out", out)[::2], "not valid TOML")
    one_line(*sweep(capsys, workdir / "missing.toml", "--out", out)[::2], "cannot read the sweep spec")
    # a value the curve command refuses is refused before anything runs, naming the item
    one_line(*sweep(capsys, write_spec(workdir / "k0.toml", "[grid]\nk = [3, 0]"), "--out", out)[::2],
             "item k-0-", "argument --k", "k=0 must be")
    one_line(*sweep(capsys, write_spec(workdir / "m.toml", '[grid]\nmetric = ["cosine", "manhattan"]'), "--out",
                    out)[::2], "argument --metric", "invalid choice: 'manhattan'")
    one_line(*sweep(capsys, write_spec(workdir / "o.toml", '[grid]\nout = ["a"]'), "--out", out)[::2],
             "unknown option 'out'")
    # code named in a file is not run without --allow-import
    one_line(*sweep(capsys, write_spec(workdir / "c.toml", '[[run]]\ndataset = "counted.py:load"'), "--out",
                    out)[::2], "names code", "dataset = 'counted.py:load'", "--allow-import")
    one_line(*sweep(capsys, write_spec(workdir / "c2.toml", '[[run]]\nmodel = "mypkg.models:build"'), "--out",
                    out)[::2], "names code", "model = 'mypkg.models:build'")
    assert calls(workdir) == 0 and not out.exists()


# ---- sweeps on tiny models --------------------------------------------------------------------------------------

def test_items_are_curve_runs_and_the_table_is_tidy(workdir, capsys):
    spec = write_spec(workdir / "spec.toml", """
        [grid]
        k = [3, 5]
        seed = [0, 1]

        [[run]]
        k = 4
        null = 3
    """)
    status, out, _ = sweep(capsys, spec, "--out", workdir / "sw")
    assert status == 0, out
    assert "5 items; varying: k, null, seed" in out and "5 computed, 0 already complete, 0 failed" in out
    items = sorted(p.name for p in (workdir / "sw" / "items").iterdir())
    assert len(items) == 5 and not any(name.startswith(".") for name in items)
    # an item directory is exactly what `layermod curve --out` writes, byte for byte
    item = next(name for name in items if name.startswith("k-5_seed-1-"))
    assert main(["curve", "--model", "mlp", "--arch-arg", "input_size=16", "--width", "0.05", "--num-classes", "4",
                 "--dataset", "blobs.npz", "--n-per-class", "5", "--repeats", "2", "--views", "0", "--k", "5",
                 "--seed", "1", "--out", str(workdir / "direct"), "--quiet"]) == 0
    swept = workdir / "sw" / "items" / item
    assert sorted(p.name for p in swept.iterdir()) == sorted(["item.json", *(p.name for p in (workdir / "direct")
                                                                              .iterdir())])
    for name in ("curve.json", "curve.csv"):
        assert (swept / name).read_bytes() == (workdir / "direct" / name).read_bytes()
    record = json.loads((swept / "item.json").read_text())
    assert record["status"] == "ok" and record["options"]["k"] == 5 and record["id"] == item
    # one row per item and layer, the varying options as columns
    rows = table(workdir / "sw")
    assert list(rows[0]) == ["item", "k", "null", "seed", "layer", "index", "q_mean", "q_std", "null_mean", "z",
                             "status", "error"]
    assert len(rows) == 5 * 5 and {r["status"] for r in rows} == {"ok"}
    curve = Curve.load(swept)
    mine = [r for r in rows if r["item"] == item]
    assert [r["layer"] for r in mine] == curve.layers and [r["seed"] for r in mine] == ["1"] * 5
    assert np.allclose([float(r["q_mean"]) for r in mine], curve.mean, rtol=0, atol=1e-15)
    assert all(r["null_mean"] == "" for r in mine)
    with_null = [r for r in rows if r["k"] == "4"]
    assert all(r["null"] == "3" and r["seed"] == "" and r["z"] != "" for r in with_null)
    import pyarrow.parquet as pq

    parquet = pq.read_table(workdir / "sw" / "results.parquet").to_pylist()
    assert [p["item"] for p in parquet] == [r["item"] for r in rows]
    assert parquet[0]["k"] == int(rows[0]["k"]) and parquet[0]["q_mean"] == float(rows[0]["q_mean"])
    assert (workdir / "sw" / "summary.png").read_bytes()[:4] == b"\x89PNG"
    # same spec, same bytes
    assert sweep(capsys, spec, "--out", workdir / "again")[0] == 0
    assert (workdir / "again" / "results.csv").read_bytes() == (workdir / "sw" / "results.csv").read_bytes()
    # the report shows the sweep
    assert main(["report", str(workdir / "sw"), "--out", str(workdir / "report.html")]) == 0
    page = (workdir / "report.html").read_text()
    assert "Sweep" in page and item in page and "5 items, 0 failed; varying: k, null, seed" in page


def test_resume_computes_nothing_twice(workdir, capsys):
    spec = workdir / "spec.toml"
    spec.write_text(TINY.replace('"blobs.npz"', '"counted.py:load"') + "[grid]\nk = [3, 4, 5]\nseed = [0, 1]\n")
    out = workdir / "sw"
    assert sweep(capsys, spec, "--out", out, "--allow-import")[0] == 0
    assert calls(workdir) == 6
    items = out / "items"
    stamps = {p.name: (p / "curve.json").stat() for p in items.iterdir()}
    # without --resume a directory holding these items is refused
    one_line(*sweep(capsys, spec, "--out", out, "--allow-import")[::2], "already holds 6 of these 6 items",
             "--resume")
    # nothing to do: nothing computed, the table rewritten the same
    before = (out / "results.csv").read_bytes()
    status, text, _ = sweep(capsys, spec, "--out", out, "--allow-import", "--resume")
    assert status == 0 and "0 computed, 6 already complete" in text and calls(workdir) == 6
    assert (out / "results.csv").read_bytes() == before
    # an item lost and one left half-written by a killed worker: only that one is computed again
    lost = sorted(stamps)[2]
    os.rename(items / lost, items / f".{lost}.tmp-deadbeef")
    status, text, _ = sweep(capsys, spec, "--out", out, "--allow-import", "--resume")
    assert status == 0 and "1 computed, 5 already complete" in text and calls(workdir) == 7
    assert not [p for p in items.iterdir() if p.name.startswith(".")]
    for name, stat in stamps.items():
        now = (items / name / "curve.json").stat()
        assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns) or name == lost
    assert (out / "results.csv").read_bytes() == before


def test_two_shards_give_exactly_the_full_table(workdir, capsys):
    spec = write_spec(workdir / "spec.toml", "[grid]\nk = [3, 4, 5]\nseed = [0, 1, 2]")
    assert sweep(capsys, spec, "--out", workdir / "full")[0] == 0
    status, text, _ = sweep(capsys, spec, "--out", workdir / "sharded", "--shard", "1/2")
    assert status == 0 and "9 items, shard 1/2: 5" in text and "4 items of other shards pending" in text
    assert len({r["item"] for r in table(workdir / "sharded")}) == 5
    status, text, _ = sweep(capsys, spec, "--out", workdir / "sharded", "--shard", "2/2")
    assert status == 0 and "4 computed" in text and "pending" not in text
    for name in ("results.csv", "results.parquet"):
        assert (workdir / "sharded" / name).read_bytes() == (workdir / "full" / name).read_bytes(), name
    with pytest.raises(SystemExit):
        main(["sweep", str(spec), "--out", str(workdir / "x"), "--shard", "3/2"])
    assert "write I/N with 1 <= I <= N" in capsys.readouterr().err


def test_a_failing_item_is_recorded_and_the_rest_go_on(workdir, capsys):
    spec = write_spec(workdir / "spec.toml", "[grid]\nk = [3, 60]\nseed = [0, 1]")  # 20 samples per draw: k=60 fails
    out = workdir / "sw"
    status, text, err = sweep(capsys, spec, "--out", out)
    assert status == 2
    one_line(status, err, "2 of 4 items failed", "k=60", "--resume")
    assert "2 computed, 0 already complete, 2 failed" in text
    rows = table(out)
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 2 and all(r["k"] == "60" and "k=60" in r["error"] and r["layer"] == "" for r in failed)
    assert len([r for r in rows if r["status"] == "ok"]) == 2 * 5
    record = json.loads((out / "items" / failed[0]["item"] / "item.json").read_text())
    assert record["status"] == "failed" and "\n" not in record["error"]
    assert sorted(p.name for p in (out / "items" / failed[0]["item"]).iterdir()) == ["item.json"]
    # --resume runs the failed items again (and they fail again), not the good ones
    status, text, _ = sweep(capsys, spec, "--out", out, "--resume")
    assert status == 2 and "0 computed, 2 already complete, 2 failed" in text
    assert main(["report", str(out), "--out", str(workdir / "r.html")]) == 0
    capsys.readouterr()


@pytest.mark.slow
def test_worker_processes_give_the_same_table(workdir, capsys):
    spec = write_spec(workdir / "spec.toml", "[grid]\nk = [3, 5]\nseed = [0, 1]\n[resources]\nthreads = 1")
    assert sweep(capsys, spec, "--out", workdir / "one")[0] == 0
    status, text, _ = sweep(capsys, spec, "--out", workdir / "two", "--workers", "2")
    assert status == 0 and "4 computed" in text
    assert (workdir / "two" / "results.csv").read_bytes() == (workdir / "one" / "results.csv").read_bytes()
    # each record says which process ran it and when: this one alone, or the workers (at most 2; one may have run
    # every item while the other started), each running one item at a time
    expected_one = {f"{socket.gethostname()}:{os.getpid()}"}
    for run, expected in (("one", expected_one), ("two", None)):
        records = [json.loads((item / "item.json").read_text()) for item in (workdir / run / "items").iterdir()]
        workers = {record["worker"] for record in records}
        assert workers == expected if expected else (len(workers) in (1, 2) and not workers & expected_one)
        for worker in workers:
            mine = sorted((r for r in records if r["worker"] == worker), key=lambda r: r["started"])
            assert all(b["started"] >= a["started"] + a["seconds"] - 1e-3 for a, b in zip(mine, mine[1:]))


# ---- the executor's API -----------------------------------------------------------------------------------------

def square(x: int, fail: bool = False) -> dict:
    """A top-level item function: workers import it by name."""
    import torch

    if fail:
        raise ValueError(f"no square for {x}\nsecond line")
    return {"x": x, "square": x * x, "threads": torch.get_num_threads(), "cwd": os.getcwd(), "pid": os.getpid()}


def test_run_items_in_this_process(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = []
    results = run_items(square, [("a", {"x": 2}), ("b", {"x": 3, "fail": True}), ("c", {"x": 4})], threads=1,
                        on_result=seen.append)
    assert [r.id for r in results] == ["a", "b", "c"] == [r.id for r in seen]
    assert [r.ok for r in results] == [True, False, True]
    assert results[0].value["square"] == 4 and results[0].value["threads"] == 1
    assert results[0].value["pid"] == os.getpid() and results[0].value["cwd"] == str(tmp_path)
    assert results[1].error == "ValueError: no square for 3 second line" and results[1].value is None
    assert isinstance(results[2], ItemResult) and json.dumps(results[2].to_dict())


@pytest.mark.slow
def test_run_items_in_spawned_processes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = run_items(square, [(f"i{n}", {"x": n, "fail": n == 2}) for n in range(4)], workers=2, threads=1)
    assert [r.value["square"] if r.ok else r.error for r in results] == [0, 1, "ValueError: no square for 2 second "
                                                                         "line", 9]
    assert {r.value["pid"] for r in results if r.ok} - {os.getpid()}  # other processes
    assert all(r.value["threads"] == 1 and r.value["cwd"] == str(tmp_path) for r in results if r.ok)


def test_run_items_refuses_what_workers_cannot_import(monkeypatch):
    with pytest.raises(ValueError, match="not a top-level function; define it"):
        run_items(lambda x: {"x": x}, [("a", {"x": 1})], workers=2)
    with pytest.raises(LayermodError, match="unique"):
        run_items(square, [("a", {"x": 1}), ("a", {"x": 2})])
    with pytest.raises(LayermodError, match="unknown backend 'dask'; use one of local, ray"):
        run_items(square, [("a", {"x": 1})], backend="dask")
    with pytest.raises(LayermodError, match="workers=0"):
        run_items(square, [("a", {"x": 1})], workers=0)
    with pytest.raises(LayermodError, match="num-gpus=-1"):
        Resources(num_gpus=-1)
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed: cannot be caused otherwise here
    with pytest.raises(LayermodError, match=r'pip install "layermod\[ray\]"'):
        run_items(square, [("a", {"x": 1})], backend="ray")


def test_ray_backend_without_ray_is_one_line(workdir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    spec = write_spec(workdir / "spec.toml", "[grid]\nk = [3, 5]")
    one_line(*sweep(capsys, spec, "--out", workdir / "sw", "--backend", "ray")[::2], "needs Ray",
             'pip install "layermod[ray]"')


# ---- dynamics over a real training run --------------------------------------------------------------------------

def test_dynamics_of_a_training_run(workdir, capsys):
    for name, per_class in (("train", 24), ("test", 12)):
        blobs_npz(workdir / f"{name}.npz", n_per_class=per_class)
    run = workdir / "run"
    model = ["--model", "mlp", "--arch-arg", "input_size=16", "--width", "0.05", "--num-classes", "4"]
    assert main(["train", *model, "--dataset", "train.npz", "--test-dataset", "test.npz", "--epochs", "2",
                 "--batch-size", "16", "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    epochs = {read_sidecar(run / f"{stem}.safetensors")["epoch"] for stem in ("best", "last")}
    assert len(epochs) == 2  # this seeded run is best at epoch 1: two checkpoints to measure
    options = ["--dataset", "test.npz", "--n-per-class", "5", "--repeats", "2"]
    assert main(["dynamics", str(run), *options, "--out", str(workdir / "dyn")]) == 0
    text = capsys.readouterr().out
    dynamics = Dynamics.load(workdir / "dyn")
    assert dynamics.epochs == sorted(epochs) and f"{len(epochs)} checkpoints" in text
    last = read_sidecar(run / "last.safetensors")
    assert dynamics.test_acc[-1] == pytest.approx(last["accuracy"])
    assert (workdir / "dyn" / "dynamics.png").read_bytes()[:4] == b"\x89PNG"
    # each epoch's values are the curve of that checkpoint, as `layermod curve` measures it
    assert main(["curve", "--weights", str(run / "last.safetensors"), *options, "--views", "0", "--out",
                 str(workdir / "last-curve"), "--quiet"]) == 0
    curve = Curve.load(workdir / "last-curve")
    assert dynamics.layers == curve.layers and np.array_equal(dynamics.values[-1], curve.values)
    # resumable like a sweep; a glob of checkpoint files works too, and the report reads the result
    assert main(["dynamics", str(run), *options, "--out", str(workdir / "dyn"), "--resume"]) == 0
    assert f"0 computed, {len(epochs)} already complete" in capsys.readouterr().out
    assert main(["dynamics", str(run / "last.safetensors"), *options, "--out", str(workdir / "one")]) == 0
    assert Dynamics.load(workdir / "one").epochs == [last["epoch"]]
    assert main(["report", str(workdir / "dyn"), "--out", str(workdir / "d.html")]) == 0
    capsys.readouterr()
    status = main(["dynamics", str(workdir / "nothing-*.safetensors"), *options, "--out", str(workdir / "x")])
    err = capsys.readouterr().err
    assert status == 2 and "matches no checkpoint" in err and err.count("\n") == 1
    # a copy of a checkpoint counts once; two different checkpoints claiming one epoch are refused
    copies = workdir / "copies"
    copies.mkdir()
    for stem, source in (("a", "last"), ("b", "last"), ("c", "best")):
        for suffix in (".safetensors", ".json"):
            (copies / f"{stem}{suffix}").write_bytes((run / f"{source}{suffix}").read_bytes())
    sidecar = json.loads((copies / "c.json").read_text())
    (copies / "c.json").write_text(json.dumps({**sidecar, "epoch": last["epoch"]}))
    assert main(["dynamics", str(copies / "[ab].safetensors"), *options, "--out", str(workdir / "ab")]) == 0
    assert Dynamics.load(workdir / "ab").epochs == [last["epoch"]]
    capsys.readouterr()
    assert sidecar["weights_sha256"] != last["weights_sha256"]
    assert main(["dynamics", str(copies), *options, "--out", str(workdir / "abc")]) == 2
    assert "are both epoch" in capsys.readouterr().err


def test_backend_options_and_hostile_tables(workdir, capsys):
    spec = write_spec(workdir / "spec.toml", "[grid]\nk = [3, 5]")
    one_line(*sweep(capsys, spec, "--out", workdir / "sw", "--address", "127.0.0.1:1")[::2], "--backend ray")
    status = main(["dynamics", str(workdir), "--dataset", "blobs.npz", "--weights", "x.safetensors", "--out",
                   str(workdir / "d")])
    one_line(status, capsys.readouterr().err, "drop --weights")
    # a results.csv that is not a sweep's, or says impossible things, is left out of the report in one line
    for name, text in (("header", "a,b\n1,2\n"), ("status", "item,k,layer,index,q_mean,q_std,null_mean,z,status,"
                                                             "error\nx,3,l,0,0.5,0,,,<script>,\n"),
                       ("number", "item,layer,index,q_mean,q_std,null_mean,z,status,error\nx,l,0,high,0,,,ok,\n")):
        (workdir / name).mkdir()
        (workdir / name / "results.csv").write_text(text)
        status = main(["report", str(workdir / name), "--out", str(workdir / f"{name}.html")])
        err = capsys.readouterr().err
        assert status == 2 and "nothing to report" in err and err.count("\n") == 1, err
        assert {"header": "is not a sweep table", "status": "status must be ok or failed",
                "number": "does not read"}[name] in err
        assert not (workdir / f"{name}.html").exists()


def test_summary_orders_groups_by_value_and_puts_networks_of_different_depth_on_one_scale():
    from layermod.sweep.results import COLUMNS, SweepTable

    def rows(item, k, layers):
        return [{"item": item, "k": k, **dict.fromkeys(COLUMNS), "layer": f"l{i}", "index": i,
                 "q_mean": 0.1 * i, "q_std": 0.01, "status": "ok"} for i in range(layers)]

    same = SweepTable(["k"], rows("a", 11, 4) + rows("b", 3, 4)).plot()
    assert [t.get_text() for t in same.get_legend().get_texts()] == ["k=3", "k=11"]
    assert same.get_xlabel() == "layer"
    paths = SweepTable(["k"], rows("a", "runs/deep/r110/best.safetensors", 4)).plot()
    assert [t.get_text() for t in paths.get_legend().get_texts()] == ["k=r110/best"]
    mixed = SweepTable(["k"], rows("a", 11, 4) + rows("b", 3, 10)).plot()
    assert mixed.get_xlabel().startswith("relative depth")
    assert [list(line.get_xdata()[[0, -1]]) for line in mixed.get_lines()] == [[0.0, 1.0], [0.0, 1.0]]


def slow_logged_item(directory: Path, args: dict) -> None:
    """An item maker that logs each computation (one line per call) and takes a while."""
    import time

    with open(args["log"], "a") as log:
        log.write(args["name"] + "\n")
    time.sleep(0.05)
    (directory / "curve.json").write_text("{}")


def test_two_sweeps_into_one_directory_compute_each_item_once(tmp_path):
    import threading

    from layermod.sweep.run import run_sweep
    from layermod.sweep.spec import Item

    log = tmp_path / "log.txt"
    work = [(Item(f"item-{i:08x}", {"i": i}), {"log": str(log), "name": f"item-{i:08x}"}) for i in range(6)]
    runs = []

    def sweep() -> None:
        runs.append(run_sweep(work, tmp_path / "out", slow_logged_item, resume=True))

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    computed = log.read_text().split()
    assert sorted(computed) == sorted(item.id for item, _ in work)  # each item once, whichever sweep got it
    assert sorted(runs[0].computed + runs[1].computed) == sorted(computed)
    assert all(sorted(run.computed + run.skipped) == sorted(computed) for run in runs)


def _record_call(n: int) -> dict:
    _CALLS.append(n)
    return {"n": n}


_CALLS: list[int] = []


@pytest.mark.parametrize("workers", [None, 2])
def test_local_resources_this_machine_lacks_are_refused_before_any_item(monkeypatch, workers):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _CALLS.clear()
    with pytest.raises(SweepError) as refused:
        run_items(_record_call, [("a", {"n": 1})], workers=workers, resources=Resources(num_gpus=0.5))
    assert str(refused.value) == ("each worker reserves num_gpus=0.5 but this machine has 0 GPUs; lower num_gpus "
                                  "(num_gpus=0 runs on the CPU) or use a machine that has them")
    with pytest.raises(SweepError, match=f"num_cpus={os.cpu_count() + 1} but this machine has {os.cpu_count()} CPUs"):
        run_items(_record_call, [("a", {"n": 1})], workers=workers, resources=Resources(num_cpus=os.cpu_count() + 1))
    assert _CALLS == []
    assert [r.value for r in run_items(_record_call, [("a", {"n": 1})], resources=Resources(num_gpus=0))] == [{"n": 1}]


def test_an_item_lock_released_while_another_waits_for_it_still_admits_one_holder_at_a_time(tmp_path):
    """The holder of an item's lock removes the lock file when it is done; a process that waited on that file must
    not take it as held while a third process locks the path's new file (two would then make the item at once)."""
    import threading
    import time

    from layermod.sweep.run import _claim

    final, events = tmp_path / "items" / "a", []

    def hold(who: str, seconds: float) -> None:
        with _claim(final):
            events.append(f"{who} in")
            time.sleep(seconds)
            events.append(f"{who} out")

    with _claim(final):
        waiting = threading.Thread(target=hold, args=("waiting", 0.3))
        waiting.start()
        time.sleep(0.2)  # it now waits on the file this block holds
    hold("next", 0.3)  # the file is gone: this one locks the path anew
    waiting.join()
    assert events in (["waiting in", "waiting out", "next in", "next out"],
                      ["next in", "next out", "waiting in", "waiting out"]), events
