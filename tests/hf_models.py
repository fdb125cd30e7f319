"""Tiny transformers models and a tokenizer saved as local ``save_pretrained`` directories, built offline with
random weights, for tests of ``hf:DIR`` models and text data (no hub, no download).

    bert = tiny_bert_dir(tmp_path / "bert", num_labels=3)      # BertForSequenceClassification + tokenizer
    gpt2 = tiny_gpt2_dir(tmp_path / "gpt2")                    # GPT2LMHeadModel + tokenizer
    vit = tiny_vit_dir(tmp_path / "vit", num_labels=3)         # ViTForImageClassification on 3x32x32 images

Every directory holds ``config.json`` and ``model.safetensors`` (``safe_serialization``); the text ones also the
tokenizer files (:func:`save_tokenizer`: a WordLevel vocabulary of :data:`WORDS` split on whitespace).
"""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("the", "a", "cat", "dog", "bird", "sat", "ran", "flew", "on", "mat", "good", "bad", "very", "not")
"""The vocabulary of the test tokenizer (besides [PAD], [UNK], [CLS], [SEP], [MASK])."""
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def save_tokenizer(directory: str | Path, words: tuple[str, ...] = WORDS, cls_sep: bool = True):
    """A fast tokenizer (tokenizers WordLevel + whitespace, wrapped in transformers.PreTrainedTokenizerFast) saved
    in ``directory``; ``cls_sep`` adds [CLS] ... [SEP] around every text (BERT-like). Returns the tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate((*SPECIAL, *words))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    if cls_sep:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(str(directory))
    return fast


def _save(model, directory: str | Path, tokenizer: bool, cls_sep: bool = True) -> Path:
    directory = Path(directory)
    model.save_pretrained(str(directory), safe_serialization=True)
    if tokenizer:
        save_tokenizer(directory, cls_sep=cls_sep)
    return directory


def tiny_bert_dir(directory: str | Path, num_labels: int | None = 2, tokenizer: bool = True, seed: int = 0) -> Path:
    """A 2-layer BERT (hidden 16) saved in ``directory``: BertForSequenceClassification with ``num_labels``, or
    BertModel when ``num_labels`` is None."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    config = BertConfig(vocab_size=len(SPECIAL) + len(WORDS), hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                        pad_token_id=0, **({"num_labels": num_labels} if num_labels else {}))
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config) if num_labels else BertModel(config)
    return _save(model, directory, tokenizer)


def tiny_gpt2_dir(directory: str | Path, tokenizer: bool = True, seed: int = 0) -> Path:
    """A 2-layer GPT-2 (GPT2LMHeadModel, hidden 16) saved in ``directory``, its tokenizer without [CLS]/[SEP]."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(SPECIAL) + len(WORDS), n_embd=16, n_layer=2, n_head=2, n_positions=64,
                        pad_token_id=0, bos_token_id=2, eos_token_id=3)
    torch.manual_seed(seed)
    return _save(GPT2LMHeadModel(config), directory, tokenizer, cls_sep=False)


def tiny_vit_dir(directory: str | Path, num_labels: int = 3, image_size: int = 32, channels: int = 3,
                 seed: int = 0) -> Path:
    """A 2-layer ViT (ViTForImageClassification, patches of 8, hidden 16) for ``channels`` x ``image_size``^2
    images, saved in ``directory``."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=image_size, patch_size=8, num_channels=channels, hidden_size=16,
                       num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, num_labels=num_labels)
    torch.manual_seed(seed)
    return _save(ViTForImageClassification(config), directory, tokenizer=False)
