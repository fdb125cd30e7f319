"""Warm workers: the per-process cache of models and datasets (hits, bound, copies that cannot change what is
kept, files rewritten between items, code never cached) and the local worker processes that keep it across
items (a worker runs many items, the results equal a sequential run's, a dead worker fails only its item,
Ctrl-C stops every worker).

The Ray actors are tested on a real cluster in test_sweep_ray.py."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time

import pytest
import torch

from layermod import models
from layermod.models.cache import CAPACITY, cache_info, cache_scope, cached_data, cached_model
from layermod.models.checkpoint import save_checkpoint
from layermod.models.spec import resolve_model
from layermod.sweep.executor import run_items
from models_for_tests import blobs_npz

MLP = {"num_classes": 4, "input_size": 16, "width": 0.05}


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(models.create("mlp", **MLP), tmp_path / "ck" / "best.safetensors",
                           {"arch": "mlp", "arch_args": MLP})


def state(model: torch.nn.Module) -> dict:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


# ---- the cache --------------------------------------------------------------------------------------------------

def test_outside_a_scope_nothing_is_kept(checkpoint):
    first, _ = cached_model(None, weights=checkpoint)
    second, _ = cached_model(None, weights=checkpoint)
    assert first is not second and cache_info() == {"hits": 0, "misses": 0, "entries": 0, "capacity": CAPACITY}


def test_a_model_is_read_once_and_handed_out_as_a_copy_no_item_can_change(checkpoint):
    with cache_scope():
        model, description = cached_model(None, weights=checkpoint)
        pristine = state(model)
        assert cache_info() == {"hits": 0, "misses": 1, "entries": 1, "capacity": 4}
        # an item does everything it may to its copy
        model.train()
        model.register_forward_hook(lambda *args: None)
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        description["weights"] = "changed"
        again, again_description = cached_model(None, weights=checkpoint)
        assert cache_info()["hits"] == 1 and again is not model
        assert not again.training and not any(m._forward_hooks for m in again.modules())
        assert same(state(again), pristine) and again_description["weights"] == str(checkpoint)
        # the file rewritten between items (other weights, size or time): read again
        torch.manual_seed(1)
        save_checkpoint(models.create("mlp", **MLP), checkpoint, {"arch": "mlp", "arch_args": MLP})
        reread, _ = cached_model(None, weights=checkpoint)
        assert cache_info()["misses"] == 2 and not same(state(reread), pristine)
    assert cache_info()["entries"] == 0  # the outermost scope emptied it


def test_the_cache_is_bounded_least_recently_used_first():
    with cache_scope():
        for seed in range(CAPACITY + 1):  # untrained models drawn by seed: one entry each
            cached_model("mlp", arch_args=MLP, seed=seed)
        assert cache_info() == {"hits": 0, "misses": CAPACITY + 1, "entries": CAPACITY, "capacity": CAPACITY}
        cached_model("mlp", arch_args=MLP, seed=CAPACITY)  # the latest is kept
        cached_model("mlp", arch_args=MLP, seed=0)  # the oldest was dropped
        assert cache_info()["hits"] == 1 and cache_info()["misses"] == CAPACITY + 2
        # a kept model equals a fresh one, seed for seed
        kept, _ = cached_model("mlp", arch_args=MLP, seed=3)
        assert cache_info()["hits"] == 2 and same(state(kept), state(resolve_model("mlp", arch_args=MLP, seed=3)[0]))


def test_a_dataset_is_shared_until_an_item_writes_into_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blobs_npz(tmp_path / "blobs.npz", n_per_class=30)
    with cache_scope():
        data, _ = cached_data("blobs.npz")
        original = data.data.clone()
        data.classes.append("extra")
        data.normalization["mean"] = [9.0]
        again, _ = cached_data("blobs.npz")
        assert cache_info()["hits"] == 1 and again is not data and again.data is data.data  # no copy of the data
        assert again.classes == ["0", "1", "2", "3"] and again.normalization == {}
        again.data.mul_(0)  # an item writes into the shared tensors
        reloaded, _ = cached_data("blobs.npz")
        assert cache_info()["misses"] == 2 and torch.equal(reloaded.data, original)


def test_code_is_never_cached(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "counted.py").write_text(textwrap.dedent("""
        import numpy as np
        calls = []

        def load():
            calls.append(1)
            return np.zeros((8, 4), dtype=np.float32), np.arange(8) % 2
    """))
    with cache_scope():
        for _ in range(3):
            cached_data("counted.py:load")
        assert cache_info() == {"hits": 0, "misses": 0, "entries": 0, "capacity": CAPACITY}


# ---- warm worker processes --------------------------------------------------------------------------------------

def measure(data: str, seed: int, die: str = "", wait: float = 0.0, log: str = "", unsendable: bool = False) -> dict:
    """A top-level item function: the model's outputs on the data, with the worker's pid and cache counters."""
    if log:
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
    if die and not os.path.exists(die):
        open(die, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(wait)
    dataset, _ = cached_data(data)
    model, _ = cached_model("mlp", arch_args=MLP, seed=seed)
    with torch.no_grad():
        out = model(dataset.data.flatten(1))
    model.train()  # cannot reach the next item
    if unsendable:
        return {"lines": (line for line in ["a generator cannot be pickled"])}
    return {"out": out.numpy().tobytes().hex(), "pid": os.getpid(), "cache": cache_info()}


@pytest.mark.slow
def test_workers_are_reused_and_their_cache_hits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blobs_npz(tmp_path / "blobs.npz", n_per_class=30)
    items = [(f"i{n}", {"data": "blobs.npz", "seed": n % 2}) for n in range(8)]
    sequential = run_items(measure, items, threads=1)
    parallel = run_items(measure, items, workers=2, threads=1)
    assert [r.id for r in parallel] == [r.id for r in sequential] and all(r.ok for r in parallel)
    assert [r.value["out"] for r in parallel] == [r.value["out"] for r in sequential]  # byte for byte
    pids = [r.value["pid"] for r in parallel]
    assert os.getpid() not in pids and len(set(pids)) <= 2 < len(pids)  # 8 items on 2 processes
    for pid in set(pids):  # each worker read the data once and each seed's model at most once
        last = max((r.value["cache"] for r in parallel if r.value["pid"] == pid), key=lambda c: c["hits"])
        ran = pids.count(pid)
        assert last["misses"] <= 3 and last["hits"] == 2 * ran - last["misses"], (ran, last)
    assert sequential[-1].value["cache"] == {"hits": 13, "misses": 3, "entries": 3, "capacity": CAPACITY}


@pytest.mark.slow
def test_a_dead_worker_or_a_result_that_cannot_travel_fails_only_its_item(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blobs_npz(tmp_path / "blobs.npz", n_per_class=30)
    items = [(f"i{n}", {"data": "blobs.npz", "seed": 0, "die": "died" if n == 2 else "", "unsendable": n == 4})
             for n in range(6)]
    results = run_items(measure, items, workers=2, threads=1)
    assert [r.ok for r in results] == [True, True, False, True, False, True]
    assert results[2].error == "its worker process died (signal 9; out of memory or killed); run it again"
    assert results[4].error.startswith("its result cannot be sent back (TypeError: cannot pickle 'generator'")
    assert len({r.value["pid"] for r in results if r.ok}) <= 3  # a new worker took the dead one's place


@pytest.mark.slow
def test_ctrl_c_stops_every_worker(tmp_path, monkeypatch, live_sigint):
    monkeypatch.chdir(tmp_path)
    blobs_npz(tmp_path / "blobs.npz", n_per_class=30)
    log = tmp_path / "started.txt"

    def ctrl_c_once_items_run():
        while not log.exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c_once_items_run, daemon=True).start()
    items = [(f"i{n}", {"data": "blobs.npz", "seed": 0, "wait": 1.0, "log": str(log)}) for n in range(8)]
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_items(measure, items, workers=2, threads=1)
    assert time.monotonic() - start < 30
    pids = {int(line) for line in log.read_text().split()}
    assert 1 <= len(pids) <= 2 and len(log.read_text().split()) < 8  # the items not started were dropped
    for pid in pids:
        with pytest.raises(ProcessLookupError):  # stopped and reaped
            os.kill(pid, 0)
