"""Small models of the shapes layermod must handle (Sequential, residual, ModuleList, tuple/dict outputs), and
small labelled samples for them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


class Block(nn.Module):
    """Basic residual block; a strided block gets a 1x1 projection on the shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class TinyResNet(nn.Module):
    """Stem conv + 2 stages of 2 blocks: 5 measurement points."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.layer1 = nn.Sequential(Block(4, 4), Block(4, 4))
        self.layer2 = nn.Sequential(Block(4, 8, 2), Block(8, 8))
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(x.mean(dim=(2, 3)))


class Encoder(nn.Module):
    """A transformer-like layer whose forward fx cannot trace (data-dependent branch), returning a tuple."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mix = nn.Linear(dim, dim)

    def forward(self, x):
        if x.sum() > 1e9:  # data-dependent control flow
            x = x * 0
        y = x + self.mix(self.norm(x))
        return y, {"attention": y.mean()}


class TupleStack(nn.Module):
    """Embedding + a ModuleList of tuple-returning layers + head; (B, T, dim) features."""

    def __init__(self, dim: int = 6, depth: int = 3, tokens: int = 4, num_classes: int = 3):
        super().__init__()
        self.tokens = tokens
        self.embed = nn.Linear(16, tokens * dim)
        self.layers = nn.ModuleList(Encoder(dim) for _ in range(depth))
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        h = self.embed(x.flatten(1)).view(len(x), self.tokens, -1)
        for layer in self.layers:
            h, _ = layer(h)
        return self.head(h.mean(1))


class DictOutput(nn.Module):
    """Returns a dict like a Hugging Face ModelOutput; has a layer that is never called."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8))
        self.unused = nn.Linear(8, 8)

    def forward(self, x):
        h = self.body(x.flatten(1))
        return {"logits": h, "hidden": [h]}


class Shared(nn.Module):
    """Calls the same linear layer twice in one forward pass."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(16, 8)
        self.twice = nn.Linear(8, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        h = self.inp(x.flatten(1))
        return self.out(self.twice(torch.relu(self.twice(h))))


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


def vgg_like() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )


def blobs(n_per_class=40, classes=4, side=4, spread=0.3, seed=0):
    """Gaussian classes around random centres: (X (N, 1, side, side), y (N,))."""
    g = torch.Generator().manual_seed(seed)
    dim = side * side
    centres = torch.randn(classes, dim, generator=g) * 3
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = centres[y] + spread * torch.randn(len(y), dim, generator=g)
    return x.view(-1, 1, side, side), y


def blobs_npz(path: Path, **kwargs) -> Path:
    """:func:`blobs` (same arguments) written as a dataset file the command line reads: a .npz with X and y."""
    x, y = blobs(**kwargs)
    np.savez(path, X=x.numpy(), y=y.numpy())
    return path
