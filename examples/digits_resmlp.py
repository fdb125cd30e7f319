"""A model defined outside layermod: a residual MLP trained on scikit-learn's 8x8 digits in a few seconds.

    layermod curve --model examples/digits_resmlp.py:build --dataset digits --n-per-class 30 --out runs/digits

``layers="auto"`` finds the residual blocks by tracing, so nothing here is written for layermod.
"""

import torch
from torch import nn

from layermod.data.datasets import load_dataset


class ResidualBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.fc(self.norm(x)))


def build(depth: int = 6, dim: int = 64, epochs: int = 30, seed: int = 0) -> nn.Module:
    """Train the residual MLP on the digits training split and return it in eval mode."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, dim), *(ResidualBlock(dim) for _ in range(depth)),
                          nn.Linear(dim, 10))
    train = load_dataset("digits", split="train")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for batch in torch.randperm(len(train)).split(64):
            loss = nn.functional.cross_entropy(model(train.data[batch]), train.targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()
