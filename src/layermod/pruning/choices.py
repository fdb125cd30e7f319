"""The names and defaults the pruning functions and commands offer: methods, costs to match, retrainings, budgets
and the fine-tuning; no torch here, so the CLI builds its options from them quickly."""

from __future__ import annotations

from layermod.training.config import TrainConfig

__all__ = ["BUDGETS", "FINETUNE", "MATCHES", "METHODS", "RETRAINS"]

METHODS = ("none", "modularity", "steepest", "cosine", "angular", "cka", "reinit", "random", "first", "last")
"""Every pruning method (:func:`layermod.pruning.plans.method_order`); ``none`` removes nothing."""

MATCHES = ("flops", "params")
RETRAINS = ("finetune", "scratch")

BUDGETS = (0.1, 0.2, 0.3, 0.4)
"""The default budgets: shares of the model's FLOPs (or parameters) to remove."""

FINETUNE = TrainConfig(epochs=1, lr=0.01, batch_size=128, schedule="cosine", weight_decay=5e-4)
"""The default fine-tuning of every pruned model: one epoch of SGD, cosine schedule."""
