"""The names and defaults the pruning functions and commands offer: methods, costs to match, retrainings, budgets
and the fine-tuning; no torch here, so the CLI builds its options from them quickly."""

from __future__ import annotations

from layermod.training.config import TrainConfig

__all__ = ["AUTO", "BUDGETS", "DEFAULT_METHODS", "FINETUNE", "MATCHES", "METHODS", "PROBE_SPLITS", "RETRAINS"]

METHODS = ("none", "modularity", "modularity-phase", "modularity-ablation", "steepest", "cosine", "angular", "cka",
           "reinit", "ablation-accuracy", "random", "first", "last")
"""Every pruning method (:func:`layermod.pruning.plans.method_order`); ``none`` removes nothing."""

DEFAULT_METHODS = tuple(m for m in METHODS if m not in ("modularity-phase", "modularity-ablation", "ablation-accuracy"))
"""The methods the commands compare unless told: the removal-based scores and the phase rule cost a network
evaluation per unit, or need the curve's draws, so they are asked for by name."""

AUTO = "modularity-ablation"
"""The method ``auto`` takes: the best pooled margin at matched FLOPs over the committed studies of the design
networks (:func:`layermod.pruning.evidence.pool`), as ``scripts/pruning_evidence.py`` computes it from their
files; chosen before the held-out networks were run."""

MATCHES = ("flops", "params")
RETRAINS = ("finetune", "scratch")

BUDGETS = (0.1, 0.2, 0.3, 0.4)
"""The default budgets: shares of the model's FLOPs (or parameters) to remove."""

FINETUNE = TrainConfig(epochs=1, lr=0.01, batch_size=128, schedule="cosine", weight_decay=5e-4)
"""The default fine-tuning of every pruned model: one epoch of SGD, cosine schedule."""

PROBE_SPLITS = ("train-heldout", "test")
"""Where the images that choose the layers come from (:func:`layermod.pruning.study.choice_split`)."""
