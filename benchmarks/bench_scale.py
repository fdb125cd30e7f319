"""Benchmark: measuring at scale -- peak memory, the approximate kNN, the sketch, a ResNet18 curve, and the GPU.

Every figure is a ratio or a difference against a reference measured in the same run; nothing is asserted.
Parts (``--only``, comma-separated; default all but ``gpu``, which runs only where CUDA exists):

* ``memory`` -- peak resident memory (``VmHWM`` of a fresh child process, so torch's own allocations count) of
  a curve over the Fashion-MNIST test set (N = 10,000 in one draw) on a residual MLP of L blocks of width
  ``--width``, for L in ``--layers-list``, within ``--budget`` (features held at once). Flat in L means the
  features are held a bounded pass at a time; the peak also includes torch, the data and the kNN blocks.
* ``ann`` -- exact kNN vs faiss IVF and HNSW at N = ``--ann-n`` Fashion-MNIST training images (pixels, D = 784,
  k = 3, cosine): time, speed-up, |dQ| and the recall layermod records.
* ``sketch`` -- exact vs the Gaussian sketch (``--sketch-dim``) for D in ``--dims``: wide ReLU features of a
  clustered 32-dimensional latent (10 classes), written to a memmap and searched within a 512 MB budget;
  N = ``--sketch-n``, and ``--sketch-n-wide`` above D = 50,000 (to keep the exact reference affordable on 2
  cores). Time, speed-up, |dQ| and recall.
* ``resnet`` -- a ResNet18 curve (zoo ``resnet18``, random init, Fashion-MNIST test, ``--per-class`` x
  ``--repeats`` draws) against the bare work it cannot avoid: one forward pass of the same samples without
  hooks, plus one blockwise matmul of the L2-normalised features per layer and draw. Ratio curve / (forward +
  matmuls); the curve runs within ``--resnet-budget`` so the features take one pass. Then its parts, each
  timed alone: the forward, what the hooks and copies add to it, the draws' copies, the graphs (and what they
  cost beyond the matmuls: the float64 scores, top-k, sparse matrix), the modularity with its null, and the
  rest (the curve's time not in those parts).
* ``gpu`` -- the whole Fashion-MNIST test set (N = 10,000, one draw) curve of ResNet18 on ``cuda``, end to end
  (model built, data loaded, curve measured), and |dQ| / time of ``precision`` tf32 and bf16 against float32.

Run from the repository root::

    .venv/bin/python benchmarks/bench_scale.py                       # CPU parts (several minutes on 2 cores)
    .venv/bin/python benchmarks/bench_scale.py --only memory,resnet
    .venv/bin/python benchmarks/bench_scale.py --only gpu --json $OUT/scale_gpu.json   # on a GPU

Results go to ``--json`` (default ``$OUT/bench_scale.json`` when ``$OUT`` is set, else
``benchmarks/results/bench_scale.json``), and a table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import layermod as lm
from layermod.measure.config import GraphConfig
from layermod.measure.graph import build_graph, default_block_size
from layermod.measure.modularity import modularity_with_null

ROOT = Path(__file__).resolve().parent.parent


def fashion(split: str) -> tuple[torch.Tensor, np.ndarray]:
    data = lm.load_dataset("fashion-mnist", split=split)
    return data.data, data.targets.numpy()


class Residual(nn.Module):
    """``x + relu(W x)``: a block deep stacks of which keep their inputs apart (a plain deep ReLU MLP at random
    init maps all samples to nearly one direction, whose cosine kNN is all ties)."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.linear(x))


def mlp(layers: int, width: int) -> tuple[nn.Module, list[str]]:
    """A residual MLP of ``layers`` blocks of ``width`` on 28 x 28 images, and the names of the blocks."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, width), *[Residual(width) for _ in range(layers)])
    return model, [str(i + 2) for i in range(layers)]


def peak_child(layers: int, width: int, budget: int) -> dict:
    """Run one curve in a fresh process; its VmHWM and time."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import bench_scale as b; "
            f"b.memory_child({layers}, {width}, {budget})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"the memory child failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_child(layers: int, width: int, budget: int) -> None:
    status = Path("/proc/self/status").read_text()
    baseline = int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024
    x, y = fashion("test")
    model, names = mlp(layers, width)
    start = time.perf_counter()
    curve = lm.modularity_curve(model, (x, y), layers=names, n_per_class=1000, repeats=1, max_bytes=budget)
    seconds = time.perf_counter() - start
    status = Path("/proc/self/status").read_text()
    hwm = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024
    print(json.dumps({"peak_mb": hwm, "after_import_mb": baseline, "seconds": seconds,
                      "q_last": float(curve.mean[-1])}))


def part_memory(args) -> dict:
    rows = {}
    for layers in args.layers_list:
        rows[layers] = peak_child(layers, args.width, args.budget)
        row = rows[layers]
        print(f"memory  L={layers:3d}  width={args.width}  budget={args.budget / 2**20:.0f} MB  "
              f"peak={row['peak_mb']:.0f} MB (torch imported: {row['after_import_mb']:.0f} MB)  "
              f"time={row['seconds']:.1f} s", flush=True)
    peaks = [r["peak_mb"] for r in rows.values()]
    return {"n": 10000, "width": args.width, "budget_mb": args.budget / 2**20, "by_layers": rows,
            "peak_max_mb": max(peaks), "peak_spread_mb": max(peaks) - min(peaks)}


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def part_ann(args) -> dict:
    x, y = fashion("train")
    x, y = x[: args.ann_n].reshape(args.ann_n, -1).contiguous(), y[: args.ann_n]
    exact, t_exact = timed(lambda: build_graph(x, graph=GraphConfig()))
    q = lm.modularity(exact.adjacency, y)
    out = {"n": args.ann_n, "d": int(x.shape[1]), "q_exact": q, "t_exact": t_exact}
    print(f"ann     exact  N={args.ann_n} D={x.shape[1]}  Q={q:.4f}  t={t_exact:.1f} s", flush=True)
    for method in ("ivf", "hnsw"):
        graph, t = timed(lambda: build_graph(x, graph=GraphConfig(knn=method)))
        dq = abs(lm.modularity(graph.adjacency, y) - q)
        out[method] = {"t": t, "speedup": t_exact / t, "dq": dq, "recall": graph.recall}
        print(f"ann     {method:5s}  t={t:.1f} s  speed-up={t_exact / t:.1f}x  |dQ|={dq:.5f}  "
              f"recall={graph.recall:.4f}", flush=True)
    return out


def wide_features(n: int, d: int, path: Path, seed: int = 0) -> tuple[np.memmap, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    z = (rng.normal(size=(10, 32))[y] * 1.5 + rng.normal(size=(n, 32))).astype(np.float32)
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for start in range(0, d, 8192):
        stop = min(start + 8192, d)
        x[:, start:stop] = np.maximum(z @ rng.normal(size=(32, stop - start)).astype(np.float32), 0)
    x.flush()
    return np.load(path, mmap_mode="r"), y


def part_sketch(args) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        for d in args.dims:
            n = args.sketch_n if d <= 50000 else args.sketch_n_wide
            x, y = wide_features(n, d, Path(folder) / f"x{d}.npy")
            exact, t_exact = timed(lambda: build_graph(x, graph=GraphConfig(), max_bytes=512 * 2**20))
            q = lm.modularity(exact.adjacency, y)
            graph, t = timed(lambda: build_graph(x, graph=GraphConfig(sketch_dim=args.sketch_dim),
                                                 max_bytes=512 * 2**20))
            dq = abs(lm.modularity(graph.adjacency, y) - q)
            out[d] = {"n": n, "q_exact": q, "t_exact": t_exact, "t_sketch": t, "speedup": t_exact / t, "dq": dq,
                      "recall": graph.recall}
            print(f"sketch  D={d:7d} N={n:5d} m={args.sketch_dim}  exact={t_exact:.1f} s  sketch={t:.1f} s  "
                  f"speed-up={t_exact / t:.1f}x  |dQ|={dq:.4f}  recall={graph.recall:.3f}", flush=True)
            del x
    return {"sketch_dim": args.sketch_dim, "by_dim": out}


def part_resnet(args) -> dict:
    x, y = fashion("test")
    model = lm.models.create("resnet18", num_classes=10, in_channels=1)
    draws = lm.balanced_draws(y, n_per_class=args.per_class, repeats=args.repeats, seed=0)
    union = np.unique(np.concatenate(draws))
    inputs = x[union]
    curve, t_curve = timed(lambda: lm.modularity_curve(model, (x, y), n_per_class=args.per_class,
                                                       repeats=args.repeats, max_bytes=args.resnet_budget))

    def forward():
        with torch.inference_mode():
            model.eval()
            for start in range(0, len(inputs), 256):
                model(inputs[start:start + 256])

    _, t_forward = timed(forward)
    features, t_extract = timed(lambda: lm.extract_features(model, inputs, layers=curve.layers))
    positions = [np.searchsorted(union, draw) for draw in draws]
    config = GraphConfig()
    parts = {"draws": 0.0, "graphs": 0.0, "modularity": 0.0}
    t_matmul = 0.0
    for feats in features.values():
        for row, pos in enumerate(positions):
            chosen, t = timed(lambda: feats[pos])
            parts["draws"] += t
            graph, t = timed(lambda: build_graph(chosen, graph=config, max_bytes=args.resnet_budget))
            parts["graphs"] += t
            _, t = timed(lambda: modularity_with_null(graph.adjacency, y[union][pos], permutations=20, seed=row))
            parts["modularity"] += t
            xn = chosen / chosen.norm(dim=1, keepdim=True).clamp_min(1e-8)
            block = default_block_size(len(xn))
            start = time.perf_counter()
            for first in range(0, len(xn), block):
                xn[first:first + block] @ xn.T
            t_matmul += time.perf_counter() - start
    ratio = t_curve / (t_forward + t_matmul)
    breakdown = {"forward": t_forward, "hooks_and_copies": t_extract - t_forward, **parts,
                 "graphs_beyond_matmul": parts["graphs"] - t_matmul}
    breakdown["rest"] = t_curve - t_extract - sum(parts.values())
    print(f"resnet  {args.per_class * 10} x {args.repeats} draws, {len(curve.layers)} layers  curve={t_curve:.1f} s  "
          f"forward={t_forward:.1f} s  matmuls={t_matmul:.1f} s  ratio={ratio:.2f} (target <= 1.1)", flush=True)
    print("resnet  breakdown of the curve's parts, each timed alone: "
          + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in breakdown.items()), flush=True)
    return {"samples_per_draw": args.per_class * 10, "repeats": args.repeats, "layers": len(curve.layers),
            "t_curve": t_curve, "t_forward": t_forward, "t_matmul": t_matmul, "ratio": ratio,
            "breakdown": breakdown}


def part_gpu(args) -> dict:
    if not torch.cuda.is_available():
        print("gpu     skipped: no CUDA device", flush=True)
        return {"skipped": "no CUDA device"}

    def whole():
        x, y = fashion("test")
        model = lm.models.create("resnet18", num_classes=10, in_channels=1).cuda()
        return lm.modularity_curve(model, (x, y), n_per_class=1000, repeats=1), (model, x, y)

    whole()  # warm-up: CUDA context, cuBLAS handles, kernels
    torch.cuda.synchronize()
    (curve, (model, x, y)), t_whole = timed(whole)
    out = {"n": 10000, "t_end_to_end": t_whole, "layers": len(curve.layers), "device": torch.cuda.get_device_name()}
    print(f"gpu     ResNet18 curve, N=10000, {len(curve.layers)} layers: {t_whole:.1f} s end to end (target < 30 s)",
          flush=True)
    for precision in ("tf32", "bf16"):
        fast, t = timed(lambda: lm.modularity_curve(model, (x, y), n_per_class=1000, repeats=1, precision=precision))
        dq = float(np.abs(fast.values - curve.values).max())
        out[precision] = {"t": t, "max_dq": dq}
        print(f"gpu     precision={precision}: {t:.1f} s, max |dQ| over layers = {dq:.5f}", flush=True)
    return out


PARTS = {"memory": part_memory, "ann": part_ann, "sketch": part_sketch, "resnet": part_resnet, "gpu": part_gpu}


def main() -> None:
    ints = lambda text: [int(v) for v in text.split(",")]  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="memory,ann,sketch,resnet")
    parser.add_argument("--layers-list", type=ints, default=[5, 10, 20])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--budget", type=int, default=64 * 2**20)
    parser.add_argument("--ann-n", type=int, default=50000)
    parser.add_argument("--dims", type=ints, default=[512, 4096, 32768, 131072, 400000])
    parser.add_argument("--sketch-dim", type=int, default=256)
    parser.add_argument("--sketch-n", type=int, default=2000)
    parser.add_argument("--sketch-n-wide", type=int, default=1000)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--resnet-budget", type=int, default=6 * 2**30)
    default_json = Path(os.environ["OUT"]) / "bench_scale.json" if os.environ.get("OUT") else \
        ROOT / "benchmarks" / "results" / "bench_scale.json"
    parser.add_argument("--json", type=Path, default=default_json)
    args = parser.parse_args()
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                           "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}}
    for name in args.only.split(","):
        results[name] = PARTS[name](args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str))
    tmp.replace(args.json)
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
