"""A curve of given weights does not depend on the torch thread count or on how the exact search is blocked:
its files are the same bytes. Training does depend on the thread count, which is why the scripts pin it. (The
forward pass's batch size is another matter: a convolution's floats depend on it in their last bits.)"""

from __future__ import annotations

import torch

import layermod as lm
from layermod import models


def weights_and_data():
    torch.manual_seed(0)
    model = models.create("resnet20", width=0.25, num_classes=10, in_channels=1).eval()
    g = torch.Generator().manual_seed(1)
    y = torch.arange(400) % 10
    x = torch.randn(400, 1, 28, 28, generator=g) + y.float()[:, None, None, None] / 5
    return model, (x, y)


def curve_files(tmp_path, name: str, threads: int, **options) -> dict[str, bytes]:
    model, data = weights_and_data()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        curve = lm.modularity_curve(model, data, n_per_class=20, repeats=2, seed=0, progress=False, **options)
    finally:
        torch.set_num_threads(before)
    out = curve.save(tmp_path / name)
    return {file: (out / file).read_bytes() for file in ("curve.json", "curve.csv")}


def test_a_curve_is_the_same_bytes_with_one_and_two_threads_and_any_blocking(tmp_path):
    one = curve_files(tmp_path, "one", 1)
    assert curve_files(tmp_path, "two", 2) == one
    assert curve_files(tmp_path, "two-small-blocks", 2, max_bytes=1 << 21) == one  # the search in many blocks
