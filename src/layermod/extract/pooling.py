"""One feature vector per sample from a layer's output: token pooling for 3-D outputs, flattening otherwise.

The decisions behind it: docs/design.md, section layermod.extract.pooling.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from layermod.errors import FeatureError
from layermod.extract.inputs import Batch

__all__ = ["CLS_MODEL_TYPES", "DECODER_MODEL_TYPES", "POOLS", "check_pool", "pool_output", "resolve_pool"]

POOLS = ("auto", "cls", "mean", "last", "flatten")

# config.model_type of Hugging Face encoders whose classifier reads the first ([CLS]) token
CLS_MODEL_TYPES = frozenset({
    "albert", "bert", "camembert", "deberta", "deberta-v2", "distilbert", "electra", "ernie", "mpnet",
    "roberta", "xlm-roberta", "vit", "deit",
})
# config.model_type of decoder language models whose classifier reads the last non-padding token
DECODER_MODEL_TYPES = frozenset({
    "bloom", "codegen", "falcon", "gemma", "gemma2", "gpt2", "gpt_neo", "gpt_neox", "gptj", "llama", "mistral",
    "mixtral", "mpt", "olmo", "opt", "phi", "phi3", "qwen2", "qwen3", "starcoder2",
})


def check_pool(pool: str) -> str:
    """``pool`` if it is one of :data:`POOLS`, else a :class:`FeatureError`.

    Args:
        pool: the pooling's name.

    Returns:
        ``pool``.

    Raises:
        FeatureError: ``pool`` not one of :data:`POOLS`.
    """
    if not isinstance(pool, str) or pool not in POOLS:
        raise FeatureError(f"pool={pool!r} is not one of {', '.join(POOLS)}")
    return pool


def _hf_config(model: nn.Module):
    """The ``config`` (with a ``model_type``) of the model or of its first submodule that has one."""
    for module in model.modules():
        config = getattr(module, "config", None)
        if isinstance(getattr(config, "model_type", None), str):
            return config
    return None


def resolve_pool(model: nn.Module, pool: str, example: Batch) -> str:
    """The pooling ``pool`` stands for on ``model`` fed batches like ``example``.

    ``"auto"`` is, for a **token model** (its batches are dicts or integer token ids, or it carries a Hugging
    Face ``config``): ``"last"`` for a decoder (``config.is_decoder`` or ``model_type`` in
    :data:`DECODER_MODEL_TYPES`), ``"cls"`` for an encoder with a ``[CLS]`` token (``model_type`` in
    :data:`CLS_MODEL_TYPES`, or a submodule named ``pooler``), else ``"mean"``. For any other model (float
    inputs, no config: CNNs, MLPs, a timm ViT) ``"auto"`` is ``"flatten"``.

    Args:
        model: the network.
        pool: one of :data:`POOLS`.
        example: a batch of inputs, (B, ...) tensor or a dict of them.

    Returns:
        The pooling's name; values other than ``"auto"`` as given.

    Raises:
        FeatureError: ``pool`` not one of :data:`POOLS`.
    """
    if check_pool(pool) != "auto":
        return pool
    config = _hf_config(model)
    tokens = isinstance(example, Mapping) or not (example.is_floating_point() or example.dtype == torch.bool)
    if config is None and not tokens:
        return "flatten"
    model_type = getattr(config, "model_type", None)
    if getattr(config, "is_decoder", False) or model_type in DECODER_MODEL_TYPES:
        return "last"
    has_pooler = any(name.rsplit(".", 1)[-1] == "pooler" and module is not None
                     for name, module in model.named_modules())
    if model_type in CLS_MODEL_TYPES or has_pooler:
        return "cls"
    return "mean"


def batch_mask(batch: Batch) -> torch.Tensor | None:
    """The batch's ``attention_mask`` (B, T) as booleans on the CPU, None when it has none."""
    if isinstance(batch, Mapping):
        mask = batch.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.ndim == 2:
            return mask.detach().cpu() != 0
    return None


def _layout(out: torch.Tensor, size: int, name: str, known: str | None) -> str:
    """``"batch_first"`` or ``"sequence_first"`` for a 3-D output of a batch of ``size`` samples."""
    first, second = out.shape[0] == size, out.shape[1] == size
    if known == "batch_first" and first or known == "sequence_first" and second:
        return known
    if known is None and first and second:
        raise FeatureError(
            f"layer {name!r} returns shape {tuple(out.shape)}: with batch size {size} equal to its sequence length "
            "it is ambiguous whether the batch or the sequence comes first; use another batch size"
        )
    if known is None and (first or second):
        return "batch_first" if first else "sequence_first"
    raise FeatureError(
        f"layer {name!r} returns shape {tuple(out.shape)}, whose first dimension is not the batch size {size}; "
        "choose another layer"
    )


def pool_output(
    out: torch.Tensor, pool: str, size: int, name: str, *, mask: torch.Tensor | None = None, layout: str | None = None
) -> tuple[torch.Tensor, str | None]:
    """Features (size, D) float32, on the output's device, of one layer's output on a batch of ``size`` samples.

    Args:
        out: the layer's output tensor.
        pool: a resolved pool (not ``"auto"``, see :func:`resolve_pool`).
        size: samples in the batch.
        name: the layer (for messages).
        mask: (size, T) booleans, True for real tokens, or None.
        layout: the layer's layout found on an earlier batch (3-D outputs), or None.

    Returns:
        The features and the layout to pass with the next batch (None for outputs that are not 3-D).

    Raises:
        FeatureError: an output that does not carry the batch dimension first (or second, for 3-D), an
            ambiguous layout, or a mask whose length differs from the tokens' for ``mean`` / ``last``.
    """
    if out.ndim != 3:
        if out.ndim == 0 or out.shape[0] != size:
            raise FeatureError(
                f"layer {name!r} returns shape {tuple(out.shape)}, whose first dimension is not the batch size "
                f"{size}; choose another layer"
            )
        return out.reshape(size, -1).float(), None
    if pool == "flatten" and layout is None and out.shape[0] == size:
        layout = "batch_first"  # the first dimension is the batch when it fits
    layout = _layout(out, size, name, layout)
    tokens = (out if layout == "batch_first" else out.transpose(0, 1)).detach()
    if pool == "flatten":
        return tokens.reshape(size, -1).float(), layout
    if pool == "cls":
        return tokens[:, 0].float(), layout
    length = tokens.shape[1]
    if mask is None:
        mask = torch.ones(size, length, dtype=torch.bool, device=tokens.device)
    elif mask.shape != (size, length):
        raise FeatureError(
            f"layer {name!r} has {length} tokens but the attention mask has shape {tuple(mask.shape)}, so padding "
            f"cannot be left out of pool={pool!r}; use pool='cls' or 'flatten', or choose another layer"
        )
    mask = mask.to(tokens.device)
    if pool == "last":
        positions = torch.arange(length, device=tokens.device).expand(size, length)
        last = torch.where(mask, positions, torch.zeros_like(positions)).amax(dim=1)
        return tokens[torch.arange(size, device=tokens.device), last].float(), layout
    weights = mask.to(torch.float64).unsqueeze(-1)
    total = (tokens.to(torch.float64) * weights).sum(dim=1)
    return (total / weights.sum(dim=1).clamp(min=1.0)).float(), layout
