"""Interrupted saves and hostile checkpoints: one commit per save, verified loads, untrusted sidecars.

A process kill is simulated two ways: in-process, by recording the directory before and after every write and
rename of a save (each record is what a SIGKILL at that point leaves on disk), and for real, by a subprocess
that SIGKILLs itself at a chosen rename. Every recorded state must load (as the previous or the new
checkpoint) or resume to exactly the weights of an uninterrupted run. Hostile sidecars are loaded under
:func:`limits.memory_limit`, so building a model before checking its size fails fast instead of taking the
machine down.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import layermod.models.checkpoint as C
import layermod.models.commit as commit
import layermod.training.fit as F
from layermod import models
from layermod.cli import main
from layermod.models.checkpoint import load_checkpoint, load_companion, load_weights, read_sidecar, save_checkpoint
from layermod.data.arrays import ArrayDataset
from layermod.errors import LayermodError, ModelError, PlanError, TrainError, WeightsError
from layermod.training.fit import fit
from layermod.training.train import TrainConfig
from assertions import assert_one_line
from limits import MiB, memory_limit

LIMIT = 256 * MiB
SRC = Path(__file__).resolve().parents[1] / "src"


def tagged(tag: str, width: float) -> tuple[torch.nn.Module, dict]:
    """A smallcnn whose weights and BN statistics depend on ``tag``, and its sidecar meta."""
    torch.manual_seed(sum(map(ord, tag)))
    model = models.create("smallcnn", num_classes=4, width=width)
    with torch.no_grad():
        for buffer in model.buffers():
            if buffer.is_floating_point():
                buffer.uniform_(0.5, 1.5)
    return model.eval(), {"arch": "smallcnn", "arch_args": {"num_classes": 4, "width": width}, "tag": tag}


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


class Recorder:
    """Records the files of a directory around every write and rename (what a SIGKILL there would leave)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
        self.directory = directory
        self.states: list[dict[str, bytes]] = []
        real_replace, real_save = os.replace, C.save_file

        def replace(src, dst, *args, **kwargs):
            self.record()
            real_replace(src, dst, *args, **kwargs)
            self.record()

        def save(tensors, filename, *args, **kwargs):
            self.record()
            real_save(tensors, filename, *args, **kwargs)
            whole = Path(filename).read_bytes()
            self.record({Path(filename).name: whole[: len(whole) // 2]})  # killed halfway through the write
            self.record()

        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(C, "save_file", save)

    def record(self, override: dict[str, bytes] | None = None) -> None:
        if self.directory.is_dir():
            state = {p.name: p.read_bytes() for p in self.directory.iterdir() if p.is_file()}
            state.update(override or {})
            if not self.states or self.states[-1] != state:
                self.states.append(state)


def restore(state: dict[str, bytes], directory: Path) -> Path:
    directory.mkdir(parents=True)
    for name, data in state.items():
        (directory / name).write_bytes(data)
    return directory


# ------------------------------------------------------------------------------------ one commit per save


@pytest.mark.parametrize("companion", [False, True])
def test_a_kill_anywhere_in_a_save_leaves_the_old_or_the_new_checkpoint(tmp_path, monkeypatch, companion):
    old, old_meta = tagged("old", 0.25)
    new, new_meta = tagged("new", 0.5)  # another shape: weights and sidecar of different saves cannot load
    extra = (lambda t: {"extra.safetensors": {"t": torch.full((3,), t)}}) if companion else (lambda t: None)
    run = tmp_path / "run"
    save_checkpoint(old, run / "best", old_meta, companions=extra(1.0))
    recorder = Recorder(monkeypatch, run)
    save_checkpoint(new, run / "best", new_meta, companions=extra(2.0))
    monkeypatch.undo()
    assert len(recorder.states) >= 6

    seen = []
    for i, state in enumerate(recorder.states):
        directory = restore(state, tmp_path / f"kill{i}")
        model, meta = load_checkpoint(directory / "best")
        seen.append(meta["tag"])
        assert same_state(model, old if meta["tag"] == "old" else new), i
        if companion:
            value = load_companion(directory / "best", "extra.safetensors")["t"][0]
            assert value == (1.0 if meta["tag"] == "old" else 2.0)
        assert (directory / "best.json").read_bytes() == state["best.json"]  # loading writes nothing
        # the next save settles what was left
        save_checkpoint(old, directory / "best", old_meta, companions=extra(1.0))
        assert listing(directory) == ["best.json", "best.safetensors", *(["extra.safetensors"] if companion else [])]
        assert same_state(load_checkpoint(directory / "best")[0], old)
    assert seen[0] == "old" and seen[-1] == "new"
    assert seen == sorted(seen, key=["old", "new"].index)  # never back to the old one once committed


@pytest.mark.parametrize("step", range(5))
def test_an_exception_inside_a_save_leaves_one_consistent_pair_and_no_hidden_files(tmp_path, monkeypatch, step):
    old, old_meta = tagged("old", 0.25)
    new, new_meta = tagged("new", 0.5)
    buffers = {"last-optimizer.safetensors": {"m": torch.ones(2)}}
    save_checkpoint(old, tmp_path / "last", old_meta, companions=buffers)
    calls = []
    real_replace, real_save = os.replace, C.save_file

    def interrupt(real):
        def call(*args, **kwargs):
            calls.append(1)
            if len(calls) == step + 1:
                raise KeyboardInterrupt
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(os, "replace", interrupt(real_replace))
    monkeypatch.setattr(C, "save_file", interrupt(real_save))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(new, tmp_path / "last", new_meta, companions=buffers)
    monkeypatch.undo()
    assert listing(tmp_path) == ["last-optimizer.safetensors", "last.json", "last.safetensors"]
    model, meta = load_checkpoint(tmp_path / "last")
    assert same_state(model, old if meta["tag"] == "old" else new)
    load_companion(tmp_path / "last", "last-optimizer.safetensors")


def test_stale_temporaries_are_removed_by_the_next_save_not_by_a_load(tmp_path):
    model, meta = tagged("a", 0.25)
    save_checkpoint(model, tmp_path / "best", meta)
    stale = [".best.safetensors.k3j2.tmp", ".best.json.x9a1.tmp", ".best.safetensors.pending"]
    for name in stale:
        (tmp_path / name).write_bytes(b"left by a killed save")
    (tmp_path / ".other.json.abcd.tmp").write_bytes(b"not this checkpoint's")
    load_checkpoint(tmp_path / "best")
    assert set(stale) <= set(listing(tmp_path))
    save_checkpoint(model, tmp_path / "best", meta)
    assert listing(tmp_path) == [".other.json.abcd.tmp", "best.json", "best.safetensors"]


def test_a_load_racing_a_save_reads_the_new_checkpoint(tmp_path, monkeypatch):
    """A save that commits between the load reading the sidecar and hashing the weights is not a mismatch."""
    old, old_meta = tagged("old", 0.25)
    new, new_meta = tagged("new", 0.25)
    save_checkpoint(old, tmp_path / "best", old_meta)
    real, raced = commit._sha256, []

    def racing(file):
        if not raced:
            raced.append(file)
            save_checkpoint(new, tmp_path / "best", new_meta)
        return real(file)

    monkeypatch.setattr(commit, "_sha256", racing)
    model, meta = load_checkpoint(tmp_path / "best")
    assert raced and meta["tag"] == "new" and same_state(model, new)


# ------------------------------------------------------------------------------------ verified loads


def test_a_corrupted_weights_byte_is_refused(tmp_path, capsys):
    model, meta = tagged("a", 0.25)
    path = save_checkpoint(model, tmp_path / "best", meta)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # one bit of one weight: the file still parses
    path.write_bytes(bytes(data))
    for load in (lambda: load_checkpoint(path), lambda: load_weights(tagged("b", 0.25)[0], path)):
        with pytest.raises(WeightsError) as err:
            load()
        assert_one_line(err, "best.safetensors does not belong to best.json", "delete best.safetensors, best.json")

    assert main(["eval", "--weights", str(path), "--dataset", "digits"]) == 2
    assert "does not belong to best.json" in capsys.readouterr().err


def test_load_weights_ignores_a_json_file_of_another_tool(tmp_path):
    model, _ = tagged("a", 0.25)
    path = tmp_path / "model.safetensors"
    save_file(dict(model.state_dict()), str(path))
    (tmp_path / "model.json").write_text(json.dumps({"architectures": ["Other"]}))
    assert same_state(load_weights(tagged("b", 0.25)[0], path), model)


def test_version_1_checkpoints_load_unverified(tmp_path):
    model, meta = tagged("a", 0.25)
    path = tmp_path / "old.safetensors"
    save_file(dict(model.state_dict()), str(path), metadata={"format": "pt"})
    (tmp_path / "old.json").write_text(json.dumps({**meta, "format": C.FORMAT, "version": 1}))
    loaded, side = load_checkpoint(path)
    assert same_state(loaded, model) and side["version"] == 1
    assert same_state(load_weights(tagged("b", 0.25)[0], path), model)


def test_a_version_2_sidecar_without_digests_is_refused(tmp_path):
    model, meta = tagged("a", 0.25)
    path = save_checkpoint(model, tmp_path / "best", meta)
    side = json.loads((tmp_path / "best.json").read_text())
    for bad in (None, "abc", 7, "A" * 64):
        (tmp_path / "best.json").write_text(json.dumps({**side, "weights_sha256": bad}))
        with pytest.raises(WeightsError) as err:
            load_checkpoint(path)
        assert_one_line(err, "lacks valid SHA-256 digests")


# ------------------------------------------------------------------------------------ training runs


def blobs(per_class: int, seed: int) -> ArrayDataset:
    centres = np.random.default_rng(0).normal(size=(4, 64)) * 1.2
    y = np.repeat(np.arange(4), per_class)
    x = (centres[y] + np.random.default_rng(seed).normal(size=(len(y), 64))).reshape(-1, 1, 8, 8)
    return ArrayDataset(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y), list("0123"), "blobs")


TRAIN, TEST = blobs(8, 1), blobs(4, 2)
CONFIG = TrainConfig(epochs=2, batch_size=8, seed=3)
META = {"arch": "smallcnn", "arch_args": {"num_classes": 4, "in_channels": 1, "width": 0.25}}


def train_run(out: Path, resume: bool = False, epochs: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    model = models.create("smallcnn", **META["arch_args"])
    fit(model, TRAIN, TEST, TrainConfig(epochs=epochs, batch_size=8, seed=3), out, meta=META, resume=resume,
        progress=False)
    return model


def run_files(run: Path) -> dict[str, bytes]:
    names = ("best.safetensors", "last.safetensors", "last-optimizer.safetensors")
    return {name: (run / name).read_bytes() for name in names}


@pytest.mark.slow
def test_a_kill_anywhere_in_a_training_run_resumes_exactly(tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    train_run(whole)
    recorder = Recorder(monkeypatch, tmp_path / "cut")
    train_run(tmp_path / "cut")
    monkeypatch.undo()
    states = [s for s in recorder.states if "last.json" in s]  # before the first commit there is nothing to resume
    assert len(states) >= 10

    for i, state in enumerate(states):
        run = restore(state, tmp_path / f"kill{i}")
        train_run(run, resume=True)
        assert run_files(run) == run_files(whole), i
        assert [name for name in listing(run) if name.startswith(".")] == [], i


@pytest.mark.slow
def test_a_sigkill_before_the_last_commit_resumes_exactly(tmp_path):
    """A real SIGKILL in the last.* window of epoch 2 (the weights and momentum staged, last.json not yet
    replaced): the resumed run ends with the uninterrupted run's files."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train_run(whole)
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path[:0] = [{str(SRC)!r}, {str(Path(__file__).parent)!r}]
        import torch
        torch.set_num_threads(1)
        real, commits = os.replace, []

        def replace(src, dst, *args, **kwargs):
            if os.path.basename(dst) == "last.json":
                commits.append(dst)
                if len(commits) == 2:
                    os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst, *args, **kwargs)

        os.replace = replace
        from test_hostile_checkpoint import train_run
        from pathlib import Path
        train_run(Path({str(cut)!r}))
    """)
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert json.loads((cut / "last.json").read_text())["epoch"] == 1
    assert any(name.startswith(".") for name in listing(cut))  # the staged files of epoch 2
    train_run(cut, resume=True)
    assert run_files(cut) == run_files(whole)
    assert [name for name in listing(cut) if name.startswith(".")] == []


def test_resume_refuses_a_damaged_run_naming_the_files_to_delete(tmp_path):
    run = tmp_path / "run"
    train_run(run, epochs=1)
    optimizer = run / "last-optimizer.safetensors"
    data = bytearray(optimizer.read_bytes())
    data[-1] ^= 1
    optimizer.write_bytes(bytes(data))
    with pytest.raises(TrainError) as err:
        train_run(run, resume=True)
    assert_one_line(err, "cannot resume", "last-optimizer.safetensors does not belong to last.json",
                    "delete last.safetensors, last.json, last-optimizer.safetensors")


def test_a_version_1_run_still_resumes(tmp_path, monkeypatch):
    """A run saved before the sidecar held file digests (its digests cover the tensors) continues exactly."""
    whole, old = tmp_path / "whole", tmp_path / "old"
    train_run(whole)
    real = F.run_epoch

    def stop_in_epoch_2(*args):
        if args[5] == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(F, "run_epoch", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_run(old)
    monkeypatch.undo()
    side = json.loads((old / "last.json").read_text())
    del side["weights_sha256"], side["files_sha256"]
    side.update(version=1, weights_sha256=F._tensor_digest(load_file(str(old / "last.safetensors"))),
                optimizer_sha256=F._tensor_digest(load_file(str(old / "last-optimizer.safetensors"))))
    (old / "last.json").write_text(json.dumps(side))
    train_run(old, resume=True)
    assert run_files(old) == run_files(whole)
    assert read_sidecar(old / "last")["version"] == C.VERSION


def test_reruns_write_byte_identical_checkpoints(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train_run(a)
    train_run(b)
    assert run_files(a) == run_files(b)

    def untimed(path: Path) -> dict:
        side = json.loads(path.read_text())
        for row in side["history"]:
            row.pop("seconds")
        return side

    for name in ("best.json", "last.json"):
        assert untimed(a / name) == untimed(b / name)


# ------------------------------------------------------------------------------------ hostile sidecars


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    model, meta = tagged("good", 0.25)
    return save_checkpoint(model, tmp_path_factory.mktemp("good") / "best", meta)


def with_sidecar(good: Path, directory: Path, change) -> Path:
    """A copy of the good checkpoint whose sidecar dict went through ``change`` (digest kept valid)."""
    directory.mkdir(exist_ok=True)
    path = directory / "best.safetensors"
    path.write_bytes(good.read_bytes())
    side = json.loads(C.sidecar_path(good).read_text())
    change(side)
    (directory / "best.json").write_text(json.dumps(side))
    return path


@pytest.mark.parametrize(("arch", "args", "fragments"), [
    ("mlp", {"depth": 1e8}, ["depth=100000000.0", "integer in [0, 1,000]"]),
    ("mlp", {"depth": 10**8}, ["depth=100000000", "[0, 1,000]"]),
    ("smallcnn", {"width": 1e6}, ["width=1000000.0", "(0, 64]"]),
    ("smallcnn", {"num_classes": 10**9}, ["num_classes=1000000000", "[1, 1,000,000]"]),
    ("smallcnn", {"num_classes": 4.0}, ["num_classes=4.0", "integer"]),
    ("smallcnn", {"in_channels": True}, ["in_channels=True", "integer"]),
    ("smallcnn", {"in_channels": 10**6}, ["in_channels=1000000", "[1, 4,096]"]),
    ("smallcnn", {"convs": [10**8]}, ["convs=", "1,000 units"]),
    ("smallcnn", {"convs": [2.0, 2]}, ["convs="]),
    ("smallcnn", {"bogus": 1}, ["model 'smallcnn' has no argument 'bogus'", "it takes convs"]),
    ("smallcnn", {"name": "mlp"}, ["has no argument 'name'"]),
    ("mlp", {"a\nb": 1}, ["has no argument 'a\\nb'", "it takes depth, input_size"]),
    ("resnet18", {"blocks": [10**6, 1, 1, 1]}, ["blocks=", "at most 1,000"]),
    ("vgg11", {"cfg": [10**7, "M"]}, ["cfg entry 10000000", "[1, 65,536]"]),
    ("mlp", {"input_size": 10**12}, ["input_size=1000000000000"]),
])
def test_hostile_arch_args_are_refused_before_building(good, tmp_path, arch, args, fragments):
    def change(side):
        side["arch"] = arch
        side["arch_args"] = {**side["arch_args"], **args}

    path = with_sidecar(good, tmp_path, change)
    start = time.perf_counter()
    with memory_limit(LIMIT), pytest.raises(ModelError) as err:
        load_checkpoint(path)
    assert time.perf_counter() - start < 5
    assert_one_line(err, "best.json", *fragments)


@pytest.mark.parametrize(("arch", "args"), [
    ("smallcnn", {"width": 64}),  # 151M parameters in the last conv alone
    ("resnet152", {"width": 8}),
    ("mlp", {"input_size": 4096 * 4096, "in_channels": 64}),
    ("smallcnn", {"convs": [500, 400]}),
])
def test_a_sidecar_within_bounds_is_compared_with_the_weights_before_any_memory_is_taken(good, tmp_path, arch, args):
    path = with_sidecar(good, tmp_path, lambda side: side.update(arch=arch, arch_args=args))
    with memory_limit(LIMIT), pytest.raises(WeightsError) as err:
        load_checkpoint(path)
    assert_one_line(err, "do not match the model")


def test_a_plan_longer_than_the_model_is_refused(good, tmp_path):
    path = with_sidecar(good, tmp_path, lambda side: side.update(plan={"remove": ["features.0"] * 10**5}))
    with memory_limit(LIMIT), pytest.raises(PlanError) as err:
        load_checkpoint(path)
    assert_one_line(err, "the plan removes 100000 units")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**13) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)
SIDECAR_KEYS = st.sampled_from(["arch", "arch_args", "plan", "plan", "plan", "version", "format", "files_sha256"])
ARG_NAMES = st.sampled_from(["num_classes", "in_channels", "width", "convs", "depth", "blocks", "cfg", "input_size",
                             "name", "x"])
ARG_VALUES = st.integers(1, 40) | st.floats(0.05, 2) | st.lists(st.integers(1, 4), min_size=1, max_size=4) | JSON
PLANS = st.fixed_dictionaries({"remove": st.lists(st.sampled_from(["features.1", "features.4", "features.3",
                                                                   "classifier", "features", ""]), max_size=3)})


@st.composite
def hostile(draw) -> tuple[dict[int, int], int | None, list[tuple[str, object]], list[tuple[str, object]], bool]:
    """(byte edits of the weights, truncation, sidecar keys to set, arch_args to set, re-hash the weights)."""
    damaged = draw(st.sampled_from(["none", "none", "edits", "cut"]))
    edits = draw(st.dictionaries(st.integers(0, 400), st.integers(0, 255), min_size=1, max_size=3)) \
        if damaged == "edits" else {}
    cut = draw(st.integers(0, 2000)) if damaged == "cut" else None
    keys = draw(st.lists(st.tuples(SIDECAR_KEYS, PLANS | JSON), max_size=2))
    arch = draw(st.none() | st.sampled_from(models.available()))
    if arch is not None:
        keys.append(("arch", arch))
    args = draw(st.lists(st.tuples(ARG_NAMES, ARG_VALUES), max_size=3))
    return edits, cut, keys, args, draw(st.sampled_from([True, True, True, False]))


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=hostile())
def test_fuzz_load_checkpoint(good, case):
    """Mutated weights bytes and sidecar values give a model or one LayermodError line, nothing else."""
    edits, cut, keys, args, rehash = case
    data = bytearray(good.read_bytes())
    for position, value in edits.items():
        if position < len(data):
            data[position] = value
    data = bytes(data[:cut] if cut is not None else data)
    side = json.loads(C.sidecar_path(good).read_text())
    if rehash:  # let the mutated bytes through the digest, to reach the safetensors and shape checks
        side["weights_sha256"] = hashlib.sha256(data).hexdigest()
    for key, value in keys:
        side[key] = value
    if isinstance(side.get("arch_args"), dict):
        side["arch_args"].update(args)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "best.safetensors"
        path.write_bytes(data)
        (Path(directory) / "best.json").write_text(json.dumps(side))
        with memory_limit(LIMIT):
            try:
                model, meta = load_checkpoint(path)
            except LayermodError as err:
                assert "\n" not in str(err), str(err)
            else:
                assert isinstance(model, torch.nn.Module) and isinstance(meta, dict)


def test_missing_weights_are_reported_as_missing_weights(tmp_path):
    from layermod.models.checkpoint import load_checkpoint

    with pytest.raises(WeightsError, match=r"^weights .*nope\.safetensors not found; check the path"):
        load_checkpoint(tmp_path / "nope.safetensors")
