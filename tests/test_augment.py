"""Tests of layermod.training.augment: batched random crop + flip against a per-sample reference."""

from __future__ import annotations

import pytest
import torch

from layermod.training.augment import augmentation_for, black_fill, random_crop_flip
from layermod.errors import TrainError


def reference(image: torch.Tensor, padding: int, dy: int, dx: int, mirrored: bool, fill: torch.Tensor) -> torch.Tensor:
    """One (C, H, W) image shifted by hand: padded with ``fill``, window at (dy, dx), maybe mirrored."""
    c, h, w = image.shape
    padded = fill.view(c, 1, 1).repeat(1, h + 2 * padding, w + 2 * padding)
    for y in range(h):
        for x in range(w):
            padded[:, y + padding, x + padding] = image[:, y, x]
    window = padded[:, dy : dy + h, dx : dx + w]
    return window.flip(2) if mirrored else window


def matching_transforms(out: torch.Tensor, image: torch.Tensor, padding: int, fill: torch.Tensor, flip: bool):
    """Every (dy, dx, mirrored) whose reference equals ``out``."""
    return [
        (dy, dx, mirrored)
        for dy in range(2 * padding + 1)
        for dx in range(2 * padding + 1)
        for mirrored in ((False, True) if flip else (False,))
        if torch.equal(out, reference(image, padding, dy, dx, mirrored, fill))
    ]


def test_shape_dtype_device():
    batch = torch.randn(5, 3, 6, 7)
    out = random_crop_flip(batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype and out.device == batch.device
    as_int = random_crop_flip(torch.randint(0, 255, (2, 1, 4, 4), dtype=torch.uint8), padding=1)
    assert as_int.dtype == torch.uint8
    assert random_crop_flip(torch.zeros(0, 3, 4, 4)).shape == (0, 3, 4, 4)


def test_no_padding_no_flip_is_identity():
    batch = torch.randn(4, 2, 5, 5)
    out = random_crop_flip(batch, padding=0, flip=False)
    assert torch.equal(out, batch) and out.data_ptr() != batch.data_ptr()


def test_no_padding_with_flip_mirrors_or_keeps():
    batch = torch.randn(16, 2, 3, 4)
    out = random_crop_flip(batch, padding=0, generator=torch.Generator().manual_seed(0))
    same = [torch.equal(o, b) for o, b in zip(out, batch)]
    mirrored = [torch.equal(o, b.flip(2)) for o, b in zip(out, batch)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(same) and any(mirrored)


@pytest.mark.parametrize("flip", [True, False])
@pytest.mark.parametrize("fill", [None, torch.tensor([-1.5, 7.0, 0.25])])
def test_each_output_is_a_shifted_copy(flip, fill):
    padding = 2
    batch = torch.rand(24, 3, 5, 6) + 10.0  # distinct from the fill values, so every window is unique
    out = random_crop_flip(batch, padding=padding, flip=flip, fill=fill, generator=torch.Generator().manual_seed(3))
    expected_fill = torch.zeros(3) if fill is None else fill
    seen = []
    for o, image in zip(out, batch):
        matches = matching_transforms(o, image, padding, expected_fill, flip)
        assert len(matches) == 1
        seen.append(matches[0])
    offsets = {(dy, dx) for dy, dx, _ in seen}
    assert len(offsets) > 5  # offsets vary over the batch
    assert {m for _, _, m in seen} == ({False, True} if flip else {False})


def test_black_fill_pads_with_normalised_black():
    normalization = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.5]}
    fill = black_fill(normalization)
    assert fill.dtype == torch.float32 and torch.allclose(fill, torch.tensor([-2.5, -1.6, -0.6]))
    image = (torch.ones(1, 3, 4, 4) - torch.tensor(normalization["mean"]).view(1, 3, 1, 1)) / torch.tensor(
        normalization["std"]
    ).view(1, 3, 1, 1)
    out = random_crop_flip(image.expand(8, 3, 4, 4), padding=4, fill=fill, generator=torch.Generator().manual_seed(1))
    is_black = (out == fill.view(1, 3, 1, 1)).all(dim=1)
    is_white = (out == image).all(dim=1)
    assert (is_black | is_white).all() and is_black.any()
    assert black_fill({}) is None
    assert torch.allclose(black_fill({"mean": [0.1307], "std": [0.3081]}), torch.tensor([-0.1307 / 0.3081]))
    with pytest.raises(TrainError):
        black_fill({"mean": [0.5]})


def test_seeded_generator_is_deterministic():
    batch = torch.randn(32, 3, 8, 8)
    a = random_crop_flip(batch, generator=torch.Generator().manual_seed(7))
    b = random_crop_flip(batch, generator=torch.Generator().manual_seed(7))
    c = random_crop_flip(batch, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(5)
    d = random_crop_flip(batch)
    torch.manual_seed(5)
    assert torch.equal(d, random_crop_flip(batch))


def test_bad_arguments():
    with pytest.raises(TrainError):
        random_crop_flip(torch.zeros(3, 4, 4))
    for padding in (-1, 1.5, True):
        with pytest.raises(TrainError):
            random_crop_flip(torch.zeros(1, 3, 4, 4), padding=padding)
    with pytest.raises(TrainError) as err:
        random_crop_flip(torch.zeros(1, 3, 4, 4), fill=torch.zeros(1))
    assert "3 channels" in str(err.value) and "\n" not in str(err.value)


def test_augmentation_for():
    assert augmentation_for("cifar10") and augmentation_for("CIFAR100")
    for name in ("mnist", "fashion-mnist", "digits", "folder:/data/x", "tensors"):
        assert not augmentation_for(name)
