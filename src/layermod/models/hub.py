"""Third-party models: ``torchvision:NAME``, ``timm:NAME`` and ``hf:DIR_OR_ID``, built by the library that owns them.

The decisions behind it: docs/design.md, section layermod.models.hub.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from layermod.data.hfhub import hf_call, hf_source, quiet_hub
from layermod.errors import ModelError, one_line
from layermod.models._registry import MAX_CLASSES, MAX_IN_CHANNELS, MAX_UNITS, check_count

__all__ = ["HF_TASKS", "PREFIXES", "HFModel", "canonical", "create", "is_library_spec",
           "recorded"]

PREFIXES = ("torchvision", "timm", "hf")
"""The libraries a model spec may name, as ``PREFIX:NAME``."""
HF_TASKS = {
    "image-classification": "AutoModelForImageClassification",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "feature-extraction": "AutoModel",
    "text-generation": "AutoModelForCausalLM",
}
"""``hf_task`` -> the transformers Auto class that builds it."""
_REFUSED = {"pretrained", "weights", "weights_backbone", "checkpoint_path", "pretrained_cfg",
            "pretrained_cfg_overlay", "pretrained_strict", "cache_dir", "trust_remote_code", "use_safetensors",
            "revision", "token", "local_files_only", "auto_map", "config", "state_dict", "progress"}
_DEPTHS = {"depth", "depths", "layers", "num_layers", "num_hidden_layers", "n_layer", "num_blocks", "blocks"}


def is_library_spec(spec: object) -> bool:
    """Whether ``spec`` names a third-party model (``torchvision:``, ``timm:`` or ``hf:``)."""
    return isinstance(spec, str) and spec.partition(":")[0] in PREFIXES and spec.partition(":")[2] != ""


def canonical(spec: str) -> str:
    """``spec`` as a checkpoint records it: an hf: directory as an absolute path, anything else unchanged."""
    library, _, name = spec.partition(":")
    if library == "hf" and Path(name).expanduser().is_dir():
        return f"hf:{Path(name).expanduser().resolve()}"
    return spec


def recorded(args: dict, where: object) -> dict:
    """``args`` read from a file (a sidecar at ``where``) for :func:`create`; ModelError if they ask for the
    library's weights (a checkpoint rebuilds without them: its weights are its own)."""
    if "pretrained" in args:
        raise ModelError(f"{where}: 'pretrained' is not an architecture argument; remove it (the checkpoint's "
                         "weights are loaded, never a library's)")
    return args


def create(spec: str, /, *, num_classes: int | None = None, in_channels: int | None = None, pretrained: bool = False,
           hf_task: str | None = None, **kwargs: Any) -> nn.Module:
    """Build the third-party model ``spec`` (docs/design.md has the grammar and the arguments).

    Raises:
        ModelError: an unknown library or model name, an argument the library does not take, a refused argument,
            or weights that cannot be had (offline, pickle only), each one line saying what to do.
    """
    library, _, name = spec.partition(":")
    if library not in PREFIXES or not name:
        raise ModelError(f"cannot read model {spec!r:.80}; write torchvision:NAME, timm:NAME or hf:DIR_OR_ID")
    if num_classes is not None:
        check_count("num_classes", num_classes, 1, MAX_CLASSES)
    if in_channels is not None:
        check_count("in_channels", in_channels, 1, MAX_IN_CHANNELS)
    if "width" in kwargs:
        raise ModelError(f"{spec} takes no width (layermod's own multiplier); pass the library's arguments as "
                         "keyword arguments")
    for key, value in kwargs.items():
        if key in _REFUSED or key.startswith("_"):
            raise ModelError(f"{key!r:.40} is not an architecture argument layermod passes to {spec}; use "
                             "pretrained=True for the library's weights, weights= for a layermod checkpoint")
        if key in _DEPTHS:  # module objects cost time even on the meta device: bound them as the registry does
            counts = value if isinstance(value, list) else [value]
            for count in counts:
                check_count(key, count, 0, MAX_UNITS)
            check_count(f"the sum of {key}", sum(counts), 0, MAX_UNITS)
    if hf_task is not None and library != "hf":
        raise ModelError(f"hf_task is for hf: models, not {spec}; drop it")
    with quiet_hub():
        if library == "torchvision":
            return _torchvision(name, num_classes, in_channels, pretrained, kwargs)
        if library == "timm":
            return _timm(name, num_classes, in_channels, pretrained, kwargs)
        return _hf(name, num_classes, in_channels, pretrained, hf_task, kwargs)


def _torchvision(name: str, num_classes: int | None, in_channels: int | None, pretrained: bool,
                 kwargs: dict) -> nn.Module:
    from torchvision import models as tv

    if name not in tv.list_models():
        raise ModelError(f"torchvision has no model {name!r:.60}; see torchvision.models.list_models() (e.g. "
                         "resnet18, vgg11_bn, vit_b_16)")
    if in_channels not in (None, 3):
        raise ModelError(f"torchvision models take 3 input channels, not {in_channels}; use timm:{name} (in_chans) "
                         "or convert the images")
    if num_classes is not None:
        kwargs = {**kwargs, "num_classes": num_classes}
    try:
        return tv.get_model(name, weights="DEFAULT" if pretrained else None, **kwargs)
    except Exception as err:  # noqa: BLE001  (the library raises TypeError, ValueError, URLError, ...)
        reason = one_line(err)
        if pretrained and isinstance(err, OSError):
            raise ModelError(f"cannot download torchvision's weights of {name} ({reason}); run once where "
                             "download.pytorch.org is reachable (they are kept in $TORCH_HOME/hub), or drop "
                             "pretrained=True") from None
        hint = ("; torchvision's pretrained weights fix num_classes (drop num_classes or use timm:, which "
                "replaces the head)" if pretrained and num_classes is not None else "")
        raise ModelError(f"torchvision cannot build {name} with {_shown(kwargs)}: {reason}{hint}") from None


def _timm(name: str, num_classes: int | None, in_channels: int | None, pretrained: bool, kwargs: dict) -> nn.Module:
    import timm

    if ":" in name or not timm.is_model(name):
        raise ModelError(f"timm has no model {name!r:.60}; see timm.list_models() (e.g. resnet18, "
                         "vit_tiny_patch16_224); for a hub or local model use hf:")
    given = {**kwargs, **({"num_classes": num_classes} if num_classes is not None else {}),
             **({"in_chans": in_channels} if in_channels is not None else {})}
    try:
        return timm.create_model(name, pretrained=pretrained, **given)
    except Exception as err:  # noqa: BLE001
        reason = one_line(err)
        if pretrained and isinstance(err, OSError):
            raise ModelError(f"cannot download timm's weights of {name} ({reason}); run once where the Hugging Face "
                             "hub is reachable (they are kept in $HF_HOME), or drop pretrained=True") from None
        raise ModelError(f"timm cannot build {name} with {_shown(given)}: {reason}") from None


def _hf(name: str, num_classes: int | None, in_channels: int | None, pretrained: bool, task: str | None,
        kwargs: dict) -> nn.Module:
    import transformers

    source = hf_source(name, pretrained=pretrained)
    config = hf_call(name, lambda: transformers.AutoConfig.from_pretrained(source, trust_remote_code=False))
    if getattr(config, "auto_map", None):
        raise ModelError(f"hf:{name} needs its own code (auto_map), which layermod never runs; use a model "
                         "transformers implements")
    task = task or _task_of(config)
    if task not in HF_TASKS:
        raise ModelError(f"unknown hf_task {task!r:.40}; use one of {', '.join(HF_TASKS)}")
    if num_classes is not None:
        if not task.endswith("classification"):
            raise ModelError(f"hf:{name} as {task} has no classes; pass hf_task='image-classification' "
                             "or 'text-classification', or drop num_classes")
        config.num_labels = num_classes
    if in_channels is not None:
        if not hasattr(config, "num_channels"):
            raise ModelError(f"hf:{name} ({config.model_type}) takes no input channels; drop in_channels")
        config.num_channels = in_channels
    for key, value in kwargs.items():
        if not hasattr(config, key):
            raise ModelError(f"hf:{name}: the {config.model_type} config has no attribute {key!r:.40}")
        setattr(config, key, value)
    saved = _architecture(config) if task == _task_of(config) else None
    if saved is not None:
        if pretrained:
            model = hf_call(name, lambda: saved.from_pretrained(
                source, config=config, use_safetensors=True, ignore_mismatched_sizes=num_classes is not None))
        else:
            model = hf_call(name, lambda: saved(config))
        return HFModel(model)
    auto = getattr(transformers, HF_TASKS[task])
    if pretrained:
        model = hf_call(name, lambda: auto.from_pretrained(
            source, config=config, use_safetensors=True, trust_remote_code=False,
            ignore_mismatched_sizes=num_classes is not None))
    else:
        model = hf_call(name, lambda: auto.from_config(config, trust_remote_code=False))
    return HFModel(model)


def _architecture(config) -> type | None:
    """The class the config's first ``architectures`` entry names, looked up by name in the ``transformers``
    namespace only (nothing from the directory is imported or run), if it is a ``PreTrainedModel`` built from
    configs of this config's class; else None."""
    import transformers

    architecture = (getattr(config, "architectures", None) or [None])[0]
    if not isinstance(architecture, str) or not architecture.isidentifier():
        return None
    try:
        found = getattr(transformers, architecture, None)
    except Exception:  # noqa: BLE001 - a lazily imported class whose own dependencies are missing
        return None
    if not (isinstance(found, type) and issubclass(found, transformers.PreTrainedModel)):
        return None
    config_class = getattr(found, "config_class", None)
    return found if isinstance(config_class, type) and isinstance(config, config_class) else None


class HFModel(nn.Module):
    """A transformers model whose ``forward`` returns a tensor: the logits, else the last hidden state.

    ``forward(x)`` passes a tensor as the model's first input (``pixel_values`` or ``input_ids``) and a mapping
    (``{"input_ids": ..., "attention_mask": ...}``) as keyword arguments; ``forward(**inputs)`` (how layermod calls
    a model with a dict batch) passes them on as they are. The transformers model is ``.model``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Any = None, **kwargs: Any) -> Any:
        if isinstance(x, Mapping):
            out = self.model(**x, **kwargs)
        elif x is None:
            out = self.model(**kwargs)
        else:
            out = self.model(x, **kwargs)
        logits = getattr(out, "logits", None)
        return logits if logits is not None else out[0]


# --------------------------------------------------------------------------------------------- helpers


def _task_of(config) -> str:
    """The task of a config's first ``architectures`` entry (feature-extraction when it names none)."""
    architecture = (getattr(config, "architectures", None) or [""])[0]
    for suffix, task in (("ForImageClassification", "image-classification"),
                         ("ForSequenceClassification", "text-classification"),
                         ("ForTokenClassification", "token-classification"),
                         ("ForCausalLM", "text-generation"), ("LMHeadModel", "text-generation")):
        if architecture.endswith(suffix):
            return task
    return "feature-extraction"


def _shown(kwargs: dict) -> str:
    return ", ".join(f"{key}={value!r:.30}" for key, value in kwargs.items()) or "no arguments"

