"""Names of the Hugging Face hub (``hf:DIR_OR_ID``): where one points, transformers calls whose failures are one
line, and the tokenizer saved with a model. Both models (:mod:`layermod.models.hub`) and texts read through here.

transformers is imported inside the functions that use it.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from layermod.errors import ModelError, one_line

__all__ = ["hf_call", "hf_source", "load_tokenizer", "quiet_hub"]

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
T = TypeVar("T")


def load_tokenizer(spec: str) -> Any:
    """The fast tokenizer saved with the hf: model ``spec`` (``AutoTokenizer.from_pretrained(.., use_fast=True)``).

    Raises:
        ModelError: ``spec`` is not ``hf:DIR_OR_ID``, or no tokenizer can be read from it.
    """
    library, _, name = str(spec).partition(":")
    if library != "hf" or not name:
        raise ModelError(f"a tokenizer comes with an hf:DIR_OR_ID model, not {spec!r:.80}")
    from transformers import AutoTokenizer

    source = hf_source(name, pretrained=False)
    with quiet_hub():
        return hf_call(name, lambda: AutoTokenizer.from_pretrained(source, use_fast=True, trust_remote_code=False))


def hf_source(name: str, *, pretrained: bool) -> str:
    """The directory or hub id of ``hf:name``; with ``pretrained`` a directory must hold safetensors weights."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"hf:{name} holds no config.json; save the model with save_pretrained(DIR)")
        if pretrained and not any(p.name.endswith(".safetensors") or p.name.endswith(".safetensors.index.json")
                                  for p in path.iterdir()):
            pickles = sorted(p.name for p in path.iterdir() if p.suffix in _PICKLES)
            if pickles:
                raise ModelError(f"hf:{name} holds only pickle weights ({', '.join(pickles[:3])}), which layermod "
                                 "never loads; convert once in trusted code: model.save_pretrained(DIR, "
                                 "safe_serialization=True)")
            raise ModelError(f"hf:{name} holds no .safetensors weights; drop pretrained=True for random weights")
        return str(path)
    if name.startswith((".", "/", "~")) or not _HUB_ID.fullmatch(name):
        raise ModelError(f"no directory {name!r:.80}; point hf: at a save_pretrained directory or a hub id org/name")
    return name


def hf_call(name: str, build: Callable[[], T]) -> T:
    """``build()``, a transformers call; its failures as one ModelError line."""
    try:
        return build()
    except ModelError:
        raise
    except Exception as err:  # noqa: BLE001  (transformers raises OSError, ValueError, KeyError, ...)
        reason = one_line(err)
        if isinstance(err, OSError) and not Path(name).expanduser().is_dir():
            raise ModelError(f"cannot fetch hf:{name} from the Hugging Face hub ({reason}); point hf: at a local "
                             "save_pretrained directory, or run where the hub is reachable") from None
        raise ModelError(f"transformers cannot build hf:{name}: {reason}") from None


@contextlib.contextmanager
def quiet_hub() -> Iterator[None]:
    """huggingface_hub's retry warnings off (a failed download is then our one line, not a page of retries)."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
