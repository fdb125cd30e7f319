"""Benchmark: the time to the first curve of one's own torchvision model, as a new user meets it.

A fresh Python process (started by this script, so nothing is imported or cached in memory) runs the three lines a
user writes: import layermod and torchvision, build ``torchvision.models.resnet18(num_classes=10)`` (random init
stands in for one's own weights) and call ``lm.modularity_curve(model, (x, y))`` with its defaults on the
Fashion-MNIST test set (1x28x28 repeated to 3 channels). The child prints the seconds of each step; this script
prints them with the total wall time of the child, start-up included. It is a report: the exit code is 0 whatever
the figures.

Run from the repository root::

    .venv/bin/python benchmarks/first_curve.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

CHILD = """
import json, time
start = time.perf_counter()
import layermod as lm
import torchvision
imported = time.perf_counter()
data = lm.load_dataset("fashion-mnist", split="test")
x, y = data.data.repeat(1, 3, 1, 1), data.targets
model = torchvision.models.resnet18(num_classes=10)
loaded = time.perf_counter()
curve = lm.modularity_curve(model, (x, y), progress=False)
done = time.perf_counter()
print(json.dumps({"import_s": imported - start, "data_and_model_s": loaded - imported, "curve_s": done - loaded,
                  "layers": len(curve.layers), "draws": len(curve.values),
                  "samples_per_draw": curve.config["samples_per_draw"]}))
"""


def main() -> None:
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    total = time.perf_counter() - start
    parts = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"first curve of torchvision resnet18: {total:.1f} s in all (import {parts['import_s']:.1f} s, data and "
          f"model {parts['data_and_model_s']:.1f} s, curve {parts['curve_s']:.1f} s: {parts['layers']} layers, "
          f"{parts['draws']} draws of {parts['samples_per_draw']} samples)")
    print(json.dumps({**parts, "total_s": total}))


if __name__ == "__main__":
    main()
