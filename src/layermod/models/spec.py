"""Turn the model a user names into an ``nn.Module`` (:func:`resolve_model`), and read the text options a text
classifier's checkpoint records (:func:`text_options`).

A specification is one of: a registered architecture name (``layermod.models.available()``), optionally with a
``.safetensors`` weights file; ``module:function`` or ``file.py:function`` returning an ``nn.Module``;
``torchvision:NAME``, ``timm:NAME`` or ``hf:DIR_OR_ID`` (:mod:`layermod.models.hub`); or nothing, with weights
whose sidecar names the architecture. Datasets are :func:`layermod.data.spec.resolve_data`'s.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from layermod import models
from layermod.coerce import torch_seed
from layermod.data.spec import TEXT_DEFAULTS
from layermod.data.text import MAX_LENGTH
from layermod.errors import ModelError, WeightsError
from layermod.io.usercode import call_user_function, import_object
from layermod.models import hub
from layermod.models.checkpoint import check_weights_fit, load_checkpoint, load_weights, read_sidecar

__all__ = ["resolve_model", "text_options"]

_MAX_CLASS_NAMES = 2**16


def resolve_model(
    spec: str | None,
    *,
    weights: str | os.PathLike | None = None,
    arch_args: dict | None = None,
    seed: int = 0,
    pretrained: bool = False,
) -> tuple[nn.Module, dict]:
    """Build the model a user named.

    The model is built under ``torch.manual_seed(seed)`` in a forked RNG state (the caller's is left as it was),
    so that an untrained model, or any weights the file does not hold, are the same on every run.

    Args:
        spec: architecture name, ``torchvision:NAME`` / ``timm:NAME`` / ``hf:DIR_OR_ID`` (:mod:`.hub`),
            ``module:function``, or None to take the architecture from the weights' sidecar.
        weights: a ``.safetensors`` file, optional.
        arch_args: keyword arguments for a registered architecture (num_classes, in_channels, width, ...) or a
            library model (num_classes, in_channels, hf_task, the library's own arguments).
        seed: seed of the initial weights, any integer (:func:`layermod.coerce.torch_seed`).
        pretrained: a library model's weights through the library's own loader (not with ``weights``).

    Returns:
        (model in eval mode, description dict for the run's config).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed(seed, ModelError))
        return _build_model(spec, weights, {k: v for k, v in (arch_args or {}).items() if v is not None},
                            pretrained)


def _build_model(spec: str | None, weights: str | os.PathLike | None, arch_args: dict,
                 pretrained: bool) -> tuple[nn.Module, dict]:
    library = hub.is_library_spec(spec)
    if pretrained and not library:
        raise ModelError("pretrained=True loads the weights of a torchvision:, timm: or hf: model; layermod's own "
                         "architectures and module:function have none (pass weights=)")
    if pretrained and weights is not None:
        raise ModelError("pretrained=True and weights= both give the weights; pass one of them")
    if not library and "hf_task" in arch_args:
        raise ModelError(f"hf_task is for hf: models, not {spec!r}; drop it")
    if spec is None:
        if weights is None:
            raise ModelError("no model given; pass a model spec (NAME or module:function), or weights= of a layermod checkpoint")
        model, meta = load_checkpoint(weights)
        return model, {"model": meta.get("arch"), "arch_args": meta.get("arch_args", {}), "weights": str(weights)}
    if ":" in spec and not library:
        factory = import_object(spec)
        if not callable(factory):
            raise ModelError(f"{spec!r} is not callable; point at a function that returns an nn.Module")
        model = call_user_function(spec, factory, ModelError)
        if not isinstance(model, nn.Module):
            raise ModelError(f"{spec!r} returned {type(model).__name__}, not an nn.Module")
        description = {"model": spec}
    else:
        spec = hub.canonical(spec) if library else spec
        create = hub.create if library else models.create
        if weights is not None and Path(weights).with_suffix(".json").is_file():
            sidecar = read_sidecar(weights)
            if sidecar.get("arch") not in (None, spec):
                raise ModelError(f"weights {weights} are for {sidecar['arch']!r}, not {spec!r}; drop the model spec "
                                 "or fix it")
            saved = sidecar.get("arch_args", {})
            if library and isinstance(saved, dict):
                hub.recorded(saved, f"checkpoint sidecar of {weights}")
            clashes = [f"{key} {saved[key]} (asked {value})" for key, value in arch_args.items()
                       if key in saved and saved[key] != value]
            if clashes:
                raise ModelError(f"weights {weights} were saved with {', '.join(clashes)}; drop those options or fix them")
            arch_args = {**saved, **arch_args}
        if weights is not None:  # options may ask for a model far larger than the file: compare shapes first
            with torch.device("meta"):
                check_weights_fit(create(spec, **arch_args), weights)
        model = create(spec, **arch_args, **({"pretrained": True} if pretrained else {}))
        description = {"model": spec, "arch_args": arch_args, **({"pretrained": True} if pretrained else {})}
    if weights is not None:
        load_weights(model, weights)
        description["weights"] = str(weights)
    return model.eval(), description


def text_options(meta: dict, where: object) -> dict:
    """The keywords of :func:`~layermod.data.spec.resolve_data` that rebuild a text classifier's inputs as its
    checkpoint's sidecar ``meta`` records them under ``"text"``: ``tokenizer`` (an ``hf:`` model spec),
    ``text_column``, ``label_column``, ``max_length`` and ``classes``; ``{}`` for a checkpoint of other data.

    Raises:
        WeightsError: (naming ``where``) a ``"text"`` entry that is not such an object.
    """
    text = meta.get("text")
    if text is None:
        return {}
    problem = None
    if not isinstance(text, dict) or set(text) != {"tokenizer", *TEXT_DEFAULTS, "classes"}:
        problem = f"an object with tokenizer, {', '.join(TEXT_DEFAULTS)} and classes"
    elif not (isinstance(text["tokenizer"], str) and text["tokenizer"].startswith("hf:")
              and hub.is_library_spec(text["tokenizer"])):
        problem = "a tokenizer named as an hf: model"
    elif not all(isinstance(text[key], str) and 0 < len(text[key]) <= 200 for key in ("text_column", "label_column")):
        problem = "text and label columns named by short strings"
    elif not (isinstance(text["classes"], list) and 0 < len(text["classes"]) <= _MAX_CLASS_NAMES
              and all(isinstance(name, str) for name in text["classes"])):
        problem = f"classes as a list of 1 to {_MAX_CLASS_NAMES} names"
    elif isinstance(text["max_length"], bool) or not (isinstance(text["max_length"], int)
                                                       and 1 <= text["max_length"] <= MAX_LENGTH):
        problem = f"a max_length from 1 to {MAX_LENGTH} tokens"
    if problem is not None:
        raise WeightsError(f"checkpoint sidecar {where}: 'text' must be {problem}; train the checkpoint again")
    return dict(text)
