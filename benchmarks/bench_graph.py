"""Benchmark: layermod's kNN graph + modularity against the paper's original pipeline and its peers.

What it measures, on identical seeded synthetic features (10 balanced classes, Gaussian class means plus
isotropic noise, float32, passed through ReLU like real layer features), for every (N, D) asked for:

* ``t_ref``    -- a reference implementation of the pipeline of Lu et al. (ECCV 2022) as their scripts do it:
  per-row cosine similarity of one sample against all samples, ``heapq.nlargest`` top-k over a Python loop
  on rows (self excluded; float64 ties, which these features do not have, go to the lower index), a dense
  ``N x N`` numpy adjacency filled
  from those picks, symmetrised as ``(A + A.T) / 2``, then ``networkx.from_numpy_array`` and
  ``networkx.community.modularity`` with the class labels as the communities. Similarities are computed in
  float64, so the reference is also the accuracy yardstick.
* ``t_ours``   -- ``layermod.knn_graph`` + ``layermod.modularity`` (k = 3, cosine, mean symmetrisation).
* ``t_matmul`` -- the floor for any exact kNN: a bare blockwise matmul of the same L2-normalised features,
  ``for each block: xn[block] @ xn.T`` with the block size layermod uses (``default_block_size(N)``), and
  nothing else (normalisation done outside the timer).
* the peers (:mod:`graph_peers`), what a user would otherwise write, on the same features:
  ``sklearn+networkx`` -- ``sklearn.neighbors.kneighbors_graph(X, k, metric="cosine", mode="distance",
  include_self=False)``, weights ``1 - distance``, ``(A + A.T) / 2``, ``networkx.from_scipy_sparse_array`` and
  ``networkx.community.modularity``; ``faiss+bincount`` -- ``faiss.IndexFlatIP`` on the L2-normalised float32
  rows, k + 1 results with the sample itself dropped, a scipy sparse graph, ``(A + A.T) / 2`` and a modularity
  from numpy ``bincount`` sums. A peer whose library is not installed is left out (with a note).

Timings are medians of ``--repeats`` runs after one warm-up run (the reference gets 3 repeats at N <= 500
and a single run above, no warm-up above N = 500); ours, the matmul and faiss are timed interleaved so that
load from other processes hits them alike, and sklearn+networkx (at most 3 repeats) interleaved with another
run of ours, whose time is the one its ratio uses. Where every warm-up call of a group
takes over ``SLOW_S`` (10 s), the warm-up is the only, single measurement (the largest sizes on a small CPU).
Per (N, D) it prints Q_ref, Q_ours, |dQ|, whether the two symmetrised graphs
have the same edges (sparsity pattern), the largest edge-weight difference, the three times, the speed-up
ref/ours and the ratio ours/matmul, plus diagnostics: ``rows_off`` (nodes whose adjacency row differs by more
than 1e-5 between the two graphs), ``gap64`` (the smallest float64 gap between the k-th and (k+1)-th
similarity among those nodes: below 1e-13, a tie within float64's rounding, which layermod shares and the
reference gives to the lower index; more means a bug) and ``busy`` (CPU cores used by other
processes during the reference / during ours+matmul, from /proc/stat; on a shared machine a row with busy
above 0.2 has suspect timings). Then the targets as PASS/FAIL lines:

* |dQ| <= 1e-6 and identical edges at every measured size;
* speed-up >= 100x at N = 5000, D = 128;
* ours/matmul <= 1.25 at D = 2048 (reported per N; N = 5000 is the one that must hold).

Then the peers' table: per (N, D) and peer its time, t_peer / t_ours (below 1: the peer is faster), Q, |dQ|
against layermod, whether its edges are layermod's (same sparsity pattern), the largest weight difference,
``rows_off`` / ``gap64`` as above and ``busy``; and per peer a closing line saying where it is faster than
layermod, if anywhere, and whether its Q is within 1e-6 of layermod's (the peers rank in float32, so they can
differ from layermod, which decides in float64, at float32 near-ties).

It is a report: the exit code is 0 even when a target fails.

Sizes: by default N = 1000, 5000, 20000 x D = 128, 2048, 50176, except that a size whose float32 features
exceed ``--max-feature-gb`` (2 GB) is skipped and listed as skipped: by default that is N = 20000 x D = 50176
(4.0 GB, and more than twice that in the copies the pipelines make). The reference runs only up to N = 5000
and D = 2048 (``--skip-reference-above``, ``--skip-reference-above-dim``: its dense N x N adjacency and its
row loop of float64 matvecs over all of X get out of reach beyond); each peer can be skipped above some N
(``--skip-sklearn-above``, ``--skip-faiss-above``; 0 skips it everywhere). To run the 4 GB size, raise
``--max-feature-gb`` to 5 and expect to need over 16 GB of memory and, on a small CPU, ``--skip-sklearn-above 5000``
(sklearn's chunked cosine distances there are ~40 TFLOP).

Run from the repository root::

    .venv/bin/python benchmarks/bench_graph.py                      # full: N = 1000,5000,20000; D = 128,2048,50176
    .venv/bin/python benchmarks/bench_graph.py --quick              # smoke run, N = 500, D = 128,2048
    .venv/bin/python benchmarks/bench_graph.py --sizes 1000,5000 --dims 128,2048   # the peers' table sizes
    .venv/bin/python benchmarks/bench_graph.py --sizes 500,2000,5000 --dims 128,2048   # the targets' sizes
    .venv/bin/python benchmarks/bench_graph.py --sizes 500,2000 --dims 128 --repeats 3 --json out.json
    .venv/bin/python benchmarks/bench_graph.py --skip-reference-above 2000 --skip-sklearn-above 5000

``--sizes 500,2000,5000 --dims 128,2048`` takes a bit over a minute on an idle 2-core machine (the reference at
N = 5000, D = 2048 alone about 15 s). The full run is far longer there (D = 50176 at N = 5000 and N = 20000 at
D = 2048 are ~2 TFLOP per exact kNN, tens of seconds each for ours, the matmul and both peers): run it on a
bigger machine. ``networkx`` must be installed, scikit-learn and faiss-cpu for the peers
(``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import platform
import statistics
import sys
import time

import networkx as nx
import numpy as np
import scipy
import scipy.sparse as sp
import torch

import graph_peers
import layermod
from layermod.measure.graph import COSINE_EPS, default_block_size

K = 3
N_CLASSES = 10
SEED = 0
Q_TOL = 1e-6
SPEEDUP_TARGET = 100.0
SPEEDUP_AT = (5000, 128)
FLOOR_TARGET = 1.25
FLOOR_DIM = 2048
WEIGHT_TOL = 1e-5  # two graphs' weights "differ" above this (float32 cosine rounding is ~1e-7)
BUSY_WARN = 0.2  # cores used by other processes during a measurement above which timings are flagged
BUSY_MIN_S = 0.05  # ... if that is also this many CPU-seconds (/proc/stat counts in 10 ms ticks)
MAX_FEATURE_GB = 2.0  # sizes whose float32 features exceed this are skipped (N=20000 x D=50176 is 4.0 GB)
SLOW_S = 10.0  # a warm-up call longer than this is its own (single) measurement
NEAR_TIE = 1e-13  # a float64 k-th/(k+1)-th similarity gap below this is within float64's rounding
FLOAT32_NEAR_TIE = 1e-6  # ... and below this, beyond a float32 ranking (the peers')


# ----------------------------------------------------------------------------------------------- data
def make_features(n: int, d: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Seeded class-structured features (n, d) float32 after ReLU, and balanced labels (n,) in 0..9.

    Class means are Gaussian with a scale shrinking as d^(-1/4), so the class signal relative to the noise in
    pairwise distances stays roughly constant across d and Q lands in a moderate range instead of saturating.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % N_CLASSES)
    means = rng.standard_normal((N_CLASSES, d)) * (1.5 * d ** -0.25)
    x = np.empty((n, d), dtype=np.float32)
    step = max(1, 2**22 // d)  # rows drawn at once: the same numbers as one (n, d) draw, without its float64 copy
    for start in range(0, n, step):
        stop = min(n, start + step)
        x[start:stop] = np.maximum(means[labels[start:stop]] + rng.standard_normal((stop - start, d)), 0.0)
    return x, labels


# ----------------------------------------------------------------------------------------- reference
def reference_pipeline(x: np.ndarray, labels: np.ndarray, k: int = K) -> tuple[float, np.ndarray]:
    """The paper's original pipeline, our own re-implementation. Returns (Q, dense symmetric adjacency).

    Per row: cosine similarity against all samples (float64), ``heapq.nlargest`` over the other samples,
    weights clamped at 0 (a non-positive similarity is no edge, as in layermod). Dense N x N adjacency,
    ``(A + A.T) / 2``, ``networkx.from_numpy_array``, ``networkx.community.modularity``.

    layermod decides in float64 too (its float32 matmul only proposes), so the edges compare one for one.
    """
    n = x.shape[0]
    x64 = x.astype(np.float64)
    xn = x64 / np.maximum(np.linalg.norm(x64, axis=1, keepdims=True), COSINE_EPS)
    a = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        sims = (xn @ xn[i]).tolist()
        for j in heapq.nlargest(k, (j for j in range(n) if j != i), key=sims.__getitem__):
            a[i, j] = max(sims[j], 0.0)
    a = (a + a.T) / 2
    graph = nx.from_numpy_array(a)
    communities = [set(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)]
    q = nx.community.modularity(graph, communities, weight="weight", resolution=1.0)
    return float(q), a


# ---------------------------------------------------------------------------------------------- ours
def ours_pipeline(x: torch.Tensor, labels: np.ndarray, k: int = K) -> tuple[float, sp.csr_array]:
    adjacency = layermod.knn_graph(x, k=k)
    return float(layermod.modularity(adjacency, labels)), adjacency


def matmul_floor(xn: torch.Tensor, block: int) -> None:
    """Blockwise similarity matmul, results discarded: the least work any exact kNN must do."""
    n = xn.shape[0]
    for start in range(0, n, block):
        xn[start:start + block] @ xn.T


# ------------------------------------------------------------------------------------------- timing
def timed(fns: list, repeats: int, warmup: bool) -> tuple[list[float], list]:
    """Median wall time of ``repeats`` calls of each of ``fns`` and each one's last result.

    The functions are called interleaved (a, b, a, b, ...) after an optional warm-up call of each, so that a
    burst of load from another process hits all of them alike and their ratio stays meaningful. Where every
    warm-up call took more than ``SLOW_S`` seconds, the warm-up is the measurement (one run each): at that
    length first-call costs are noise, and repeats would multiply the run time of the largest sizes.
    """
    times = [[] for _ in fns]
    results = [None] * len(fns)
    if warmup:
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            results[i] = fn()
            times[i].append(time.perf_counter() - t0)
        if all(t[0] > SLOW_S for t in times):
            return [t[0] for t in times], results
        times = [[] for _ in fns]
    for _ in range(max(1, repeats)):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            results[i] = fn()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times], results


@contextlib.contextmanager
def other_load():
    """Measure the CPU used by *other* processes while the block runs (Linux ``/proc/stat``).

    Yields a dict that holds, after the block, ``cores`` (their average number of busy cores) and ``seconds``
    (their CPU-seconds); both stay None where ``/proc/stat`` is unavailable. The machine this runs on may be
    shared: a value well above 0 means the timings taken inside the block are suspect.
    """
    box = {"cores": None, "seconds": None}
    start = _cpu_sample()
    yield box
    end = _cpu_sample()
    if start is not None and end is not None:
        (busy0, own0, t0), (busy1, own1, t1) = start, end
        box["seconds"] = max(0.0, (busy1 - busy0) - (own1 - own0))
        box["cores"] = box["seconds"] / max(t1 - t0, 1e-9)


def _cpu_sample() -> tuple[float, float, float] | None:
    """(machine-wide busy CPU-seconds, this process's CPU-seconds, wall clock), or None off Linux."""
    try:
        with open("/proc/stat") as fh:
            v = [int(f) for f in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    own = sum(os.times()[:2])
    return busy, own, time.perf_counter()


def compare_graphs(a_ref: np.ndarray, a_ours: sp.csr_array) -> tuple[bool, float, np.ndarray]:
    """(same sparsity pattern, max |weight difference| over both graphs' entries, nodes whose row differs).

    A node's row "differs" when some weight differs by more than ``WEIGHT_TOL`` (far above float32 rounding of
    the cosines, far below any real edge weight), so swapped neighbours show up even when the symmetrised
    sparsity pattern happens to be the same (e.g. a mutual and a one-way edge trading places).
    """
    ref = sp.csr_array(a_ref)
    ref.eliminate_zeros()
    ref.sort_indices()
    ours = sp.csr_array(a_ours)
    ours.sort_indices()
    same = (
        ref.shape == ours.shape
        and np.array_equal(ref.indptr, ours.indptr)
        and np.array_equal(ref.indices, ours.indices)
    )
    diff = sp.csr_array(ref - ours)
    max_diff = float(np.abs(diff.data).max()) if diff.nnz else 0.0
    row_of = np.repeat(np.arange(diff.shape[0]), np.diff(diff.indptr))
    off_rows = np.unique(row_of[np.abs(diff.data) > WEIGHT_TOL])
    return bool(same), max_diff, off_rows


def kth_gap64(x: np.ndarray, rows: np.ndarray, k: int = K) -> float | None:
    """Smallest float64 gap between the k-th and (k+1)-th most similar other sample over ``rows``.

    Diagnostic for disagreements: a gap near float32 resolution (~1e-7) is a near-tie that a float32 ranking
    (the peers) cannot order; between layermod and the reference, only a gap within float64's rounding may.
    """
    if len(rows) == 0:
        return None

    def unit64(v: np.ndarray) -> np.ndarray:
        v = v.astype(np.float64)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), COSINE_EPS)

    q = unit64(x[rows])
    step = max(1, 2**24 // x.shape[1])  # columns cast to float64 at once (128 MiB), not all of x
    s = np.concatenate([q @ unit64(x[j:j + step]).T for j in range(0, x.shape[0], step)], axis=1)
    s[np.arange(len(rows)), rows] = -np.inf
    top = -np.sort(-s, axis=1)[:, : k + 1]
    return float((top[:, k - 1] - top[:, k]).min())


def peer_row(peer: str, t: float, q: float, a_peer, a_ours: sp.csr_array, q_ours: float, t_ours: float,
             x: np.ndarray, load: dict) -> dict:
    """One peer's figures at one size: time, ratio to ours (``t_ours`` timed interleaved with the peer), |dQ|
    and the edge comparison against ours."""
    same, max_diff, off_rows = compare_graphs(a_peer, a_ours)
    return {"peer": peer, "t": t, "t_ours": t_ours, "t_over_ours": t / t_ours, "q": q, "dq": abs(q - q_ours),
            "edges_identical": same, "max_weight_diff": max_diff, "rows_differing": len(off_rows),
            "min_kth_gap64_differing": kth_gap64(x, off_rows), "other_load": load["cores"],
            "other_cpu_s": load["seconds"]}


def bench_one(n: int, d: int, repeats: int, run_reference: bool, peers: tuple[str, ...] = ()) -> dict:
    """Every measurement at one size; ``peers`` names those of :data:`graph_peers.PEERS` to run here."""
    x_np, labels = make_features(n, d)
    x = torch.from_numpy(x_np)
    block = default_block_size(n)
    xn = x / x.norm(dim=1, keepdim=True).clamp_min(COSINE_EPS)

    fast = [lambda: ours_pipeline(x, labels), lambda: matmul_floor(xn, block)]
    if "faiss" in peers:  # fast enough to be timed interleaved with ours
        threads = torch.get_num_threads()
        fast.append(lambda: graph_peers.faiss_pipeline(x_np, labels, K, threads=threads))
    with other_load() as load_fast:
        times, results = timed(fast, repeats, warmup=True)
    t_ours, t_mm = times[:2]
    q_ours, a_ours = results[0]

    row = {
        "n": n, "d": d, "k": K, "block": block, "edges_ours": int(a_ours.nnz // 2),
        "q_ours": q_ours, "t_ours": t_ours, "t_matmul": t_mm, "ours_over_matmul": t_ours / t_mm,
        "q_ref": None, "dq": None, "edges_identical": None, "max_weight_diff": None, "t_ref": None,
        "speedup": None, "rows_differing": None, "min_kth_gap64_differing": None,
        "other_load_fast": load_fast["cores"], "other_load_ref": None,
        "other_cpu_s_fast": load_fast["seconds"], "other_cpu_s_ref": None,
        "peers": {name: None for name in graph_peers.PEERS},
    }
    if "faiss" in peers:
        (q_f, a_f) = results[2]
        row["peers"]["faiss"] = peer_row("faiss", times[2], q_f, a_f, a_ours, q_ours, t_ours, x_np, load_fast)
    if "sklearn" in peers:  # slower: its own interleaved pair with ours, fewer repeats
        with other_load() as load_sk:
            (t_ours_sk, t_sk), (_, (q_sk, a_sk)) = timed(
                [lambda: ours_pipeline(x, labels), lambda: graph_peers.sklearn_pipeline(x_np, labels, K)],
                min(repeats, 3), warmup=True)
        row["peers"]["sklearn"] = peer_row("sklearn", t_sk, q_sk, a_sk, a_ours, q_ours, t_ours_sk, x_np, load_sk)
    if run_reference:
        ref_repeats = min(repeats, 3) if n <= 500 else 1
        with other_load() as load_ref:
            (t_ref,), ((q_ref, a_ref),) = timed([lambda: reference_pipeline(x_np, labels)], ref_repeats,
                                                warmup=n <= 500)
        same, max_diff, off_rows = compare_graphs(a_ref, a_ours)
        row.update(q_ref=q_ref, dq=abs(q_ref - q_ours), edges_identical=same, max_weight_diff=max_diff,
                   t_ref=t_ref, speedup=t_ref / t_ours, rows_differing=len(off_rows),
                   min_kth_gap64_differing=kth_gap64(x_np, off_rows), other_load_ref=load_ref["cores"],
                   other_cpu_s_ref=load_ref["seconds"])
    return row


# ------------------------------------------------------------------------------------------- report
def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict]) -> None:
    head = (f"{'N':>5} {'D':>5} {'Q_ref':>9} {'Q_ours':>9} {'|dQ|':>8} {'same_edges':>10} {'max_w_diff':>10} "
            f"{'t_ref[s]':>9} {'t_ours[s]':>9} {'t_mm[s]':>9} {'ref/ours':>9} {'ours/mm':>8} {'rows_off':>8} "
            f"{'gap64':>8} {'busy':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        same = "-" if r["edges_identical"] is None else str(r["edges_identical"])
        print(f"{r['n']:>5} {r['d']:>5} {_fmt(r['q_ref'], '.6f'):>9} {r['q_ours']:>9.6f} {_fmt(r['dq'], '.1e'):>8} "
              f"{same:>10} {_fmt(r['max_weight_diff'], '.1e'):>10} {_fmt(r['t_ref'], '.3f'):>9} "
              f"{r['t_ours']:>9.4f} {r['t_matmul']:>9.4f} "
              f"{_fmt(r['speedup'], '.0f') + ('x' if r['speedup'] else ''):>9} "
              f"{r['ours_over_matmul']:>8.2f} {_fmt(r['rows_differing'], 'd'):>8} "
              f"{_fmt(r['min_kth_gap64_differing'], '.1e'):>8} "
              f"{_fmt(r['other_load_ref'], '.1f'):>4}/{_fmt(r['other_load_fast'], '.1f'):<4}")
    print("busy = CPU cores used by other processes during the reference / during ours+matmul "
          f"(> {BUSY_WARN} and > {BUSY_MIN_S} CPU-s: that row's timings are suspect, re-run on a quiet machine)")
    noisy = [r for r in rows
             if any((r[f"other_load_{w}"] or 0.0) > BUSY_WARN and (r[f"other_cpu_s_{w}"] or 0.0) > BUSY_MIN_S
                    for w in ("ref", "fast"))]
    if noisy:
        print("WARNING: other processes used the CPU during " + ", ".join(f"N={r['n']} D={r['d']}" for r in noisy)
              + "; timings there are unreliable")


def print_targets(rows: list[dict]) -> dict:
    verdicts = {}
    print("\nTargets")
    # 1. accuracy
    checked = [r for r in rows if r["q_ref"] is not None]
    if checked:
        bad = [r for r in checked if not (r["dq"] <= Q_TOL and r["edges_identical"])]
        ok = not bad
        detail = "all sizes" if ok else ", ".join(f"N={r['n']} D={r['d']}" for r in bad)
        print(f"  [{'PASS' if ok else 'FAIL'}] |dQ| <= {Q_TOL:g} and identical edges vs reference "
              f"({len(checked)} sizes checked; {'failing: ' if bad else ''}{detail}; "
              f"max |dQ| = {max(r['dq'] for r in checked):.1e})")
        verdicts["accuracy"] = ok
        for r in (r for r in checked if r in bad or r["rows_differing"]):
            gap = r["min_kth_gap64_differing"]
            why = (f"no node row differs beyond {WEIGHT_TOL:g}" if gap is None else
                   f"smallest float64 k-th/(k+1)-th similarity gap among them {gap:.1e}: "
                   + ("a tie within float64's rounding, shared by layermod, not a bug"
                      if gap < NEAR_TIE else "NOT a float64 tie: look for a bug"))
            print(f"         N={r['n']} D={r['d']}: {r['rows_differing']} node rows differ; {why}")
    else:
        print("  [SKIP] |dQ| and edges: reference not run")
        verdicts["accuracy"] = None
    # 2. speed-up
    sel = [r for r in rows if (r["n"], r["d"]) == SPEEDUP_AT and r["speedup"] is not None]
    if sel:
        s = sel[0]["speedup"]
        ok = s >= SPEEDUP_TARGET
        print(f"  [{'PASS' if ok else 'FAIL'}] speed-up ref/ours >= {SPEEDUP_TARGET:.0f}x at N={SPEEDUP_AT[0]}, "
              f"D={SPEEDUP_AT[1]}: {s:.0f}x")
        verdicts["speedup"] = ok
    else:
        print(f"  [SKIP] speed-up at N={SPEEDUP_AT[0]}, D={SPEEDUP_AT[1]}: not measured")
        verdicts["speedup"] = None
    # 3. distance to the matmul floor
    floor_rows = [r for r in rows if r["d"] == FLOOR_DIM]
    if not floor_rows:
        print(f"  [SKIP] ours/matmul <= {FLOOR_TARGET} at D={FLOOR_DIM}: not measured")
    for r in floor_rows:
        ok = r["ours_over_matmul"] <= FLOOR_TARGET
        print(f"  [{'PASS' if ok else 'FAIL'}] ours/matmul <= {FLOOR_TARGET} at N={r['n']}, D={FLOOR_DIM}: "
              f"{r['ours_over_matmul']:.2f} ({r['t_ours']:.4f}s vs {r['t_matmul']:.4f}s)")
        verdicts[f"floor_n{r['n']}"] = ok
    return verdicts


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=_ints, default=[1000, 5000, 20000], help="N values, comma-separated")
    parser.add_argument("--dims", type=_ints, default=None,
                        help="D values, comma-separated (default 128,2048,50176; 128,2048 with --quick)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed repeats (median) for ours, the matmul and faiss (sklearn: at most 3)")
    parser.add_argument("--skip-reference-above", type=int, default=5000, metavar="N",
                        help="do not run the (slow) reference for sizes above N (default 5000)")
    parser.add_argument("--skip-reference-above-dim", type=int, default=2048, metavar="D",
                        help="do not run the reference for dimensions above D (default 2048)")
    parser.add_argument("--skip-sklearn-above", type=int, default=None, metavar="N",
                        help="do not run the sklearn+networkx peer for sizes above N (0: never)")
    parser.add_argument("--skip-faiss-above", type=int, default=None, metavar="N",
                        help="do not run the faiss peer for sizes above N (0: never)")
    parser.add_argument("--max-feature-gb", type=float, default=MAX_FEATURE_GB, metavar="GB",
                        help=f"skip sizes whose float32 features N x D exceed GB (default {MAX_FEATURE_GB:g})")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the rows as JSON to PATH")
    parser.add_argument("--quick", action="store_true", help="smoke run: N=500 only (D=128,2048 by default)")
    args = parser.parse_args(argv)
    sizes = [500] if args.quick else args.sizes
    dims = args.dims or ([128, 2048] if args.quick else [128, 2048, 50176])
    versions = graph_peers.available()
    skip_above = {"sklearn": args.skip_sklearn_above, "faiss": args.skip_faiss_above}

    print(f"layermod kNN graph + modularity benchmark  (k={K}, cosine, mean symmetrisation, {N_CLASSES} classes)")
    print(f"python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"numpy {np.__version__}, scipy {scipy.__version__}, "
          f"networkx {nx.__version__}, " + ", ".join(
              f"{graph_peers.INSTALL[p]} {v or 'not installed'}" for p, v in versions.items())
          + f", {platform.machine()}")
    print(f"timings: median of {args.repeats} (ours, matmul, faiss interleaved) after a warm-up; sklearn+networkx: "
          f"median of {min(args.repeats, 3)} interleaved with ours again after a warm-up; reference: median of {min(args.repeats, 3)} at N<=500, "
          f"single run above; a warm-up over {SLOW_S:g}s is the only run\n")

    rows, skipped = [], []
    for n in sizes:
        for d in dims:
            gb = n * d * 4 / 1e9
            if gb > args.max_feature_gb:
                skipped.append({"n": n, "d": d, "feature_gb": gb})
                print(f"  skipping N={n} D={d}: features {gb:.1f} GB > --max-feature-gb {args.max_feature_gb:g}",
                      file=sys.stderr, flush=True)
                continue
            run_ref = n <= args.skip_reference_above and d <= args.skip_reference_above_dim
            peers = tuple(p for p in graph_peers.PEERS
                          if versions[p] and (skip_above[p] is None or n <= skip_above[p]))
            print(f"  running N={n} D={d}{'' if run_ref else ' (reference skipped)'} "
                  f"peers: {','.join(peers) or 'none'} ...", file=sys.stderr, flush=True)
            rows.append(bench_one(n, d, args.repeats, run_ref, peers))
    print_table(rows)
    for c in skipped:
        print(f"skipped N={c['n']} D={c['d']}: its float32 features take {c['feature_gb']:.1f} GB "
              f"(> --max-feature-gb {args.max_feature_gb:g})")
    verdicts = print_targets(rows)
    for p, v in versions.items():
        if v is None:
            print(f"\n{graph_peers.LABELS[p]} peer not run: `pip install {graph_peers.INSTALL[p]}`")
    graph_peers.print_peers(rows, Q_TOL, FLOAT32_NEAR_TIE, BUSY_WARN, BUSY_MIN_S)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "skipped": skipped, "targets": verdicts,
                       "torch_threads": torch.get_num_threads()}, fh, indent=2)
        print(f"\nrows written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
