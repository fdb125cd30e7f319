"""The text half of scripts/evidence_hub.sh, built offline: a synthetic 3-class sentence task, a tiny BERT with
random weights and a word-level tokenizer, and a plain torch training loop.

    python scripts/hub_text.py data  runs/hub/text --task mod3   # train.csv (6,000 rows), test.csv (1,500 rows)
    python scripts/hub_text.py model runs/hub/text/bert     # BertForSequenceClassification + tokenizer, random
    python scripts/hub_text.py train runs/hub/text/bert runs/hub/text --metrics docs/text/metrics.csv

The task (``--task mod3``, what the evidence uses): every sentence holds two content words among 5-9 fillers, in
random places, each from one of three groups (animals 0, food 1, tools 2); the class is the sum of the two groups
modulo 3 (animal + animal or food + tool: class 0, and so on). No single word tells the class and the classes are
not linearly separable in the bag of words: the model has to combine the two words. It stays at chance for about
3 epochs, then learns it. ``--task majority`` (two words of the class's group and one of another) is solved by a
single attention layer. Everything is seeded.
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from pathlib import Path

import torch

GROUPS = (
    ("cat", "dog", "bird", "horse", "fish", "goat", "mouse", "frog"),
    ("apple", "bread", "rice", "cheese", "soup", "cake", "plum", "bean"),
    ("hammer", "saw", "drill", "wrench", "nail", "rake", "shovel", "file"),
)
CLASSES = ("sum0", "sum1", "sum2")
FILLERS = ("the", "a", "on", "under", "near", "big", "small", "old", "new", "red", "blue", "and", "with", "by",
           "is", "was", "there", "here", "very", "some")
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def sentence(rng: random.Random, label: int, task: str = "majority") -> str:
    if task == "majority":
        other = rng.choice([g for g in range(len(GROUPS)) if g != label])
        content = [rng.choice(GROUPS[label]), rng.choice(GROUPS[label]), rng.choice(GROUPS[other])]
    else:  # "mod3": two words whose groups sum to the label modulo 3
        first = rng.randrange(len(GROUPS))
        content = [rng.choice(GROUPS[first]), rng.choice(GROUPS[(label - first) % len(GROUPS)])]
    words = [rng.choice(FILLERS) for _ in range(rng.randint(5, 9))]
    for word in content:
        words.insert(rng.randint(0, len(words)), word)
    return " ".join(words)


def write_data(out: Path, n_train: int, n_test: int, seed: int, task: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for name, n in (("train.csv", n_train), ("test.csv", n_test)):
        labels = [i % len(CLASSES) for i in range(n)]
        rng.shuffle(labels)
        with open(out / name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows((sentence(rng, y, task), CLASSES[y]) for y in labels)
    print(f"wrote {out}/train.csv ({n_train} rows), {out}/test.csv ({n_test} rows)")


def word_tokenizer(single: str = "[CLS] $A [SEP]"):
    """A fast WordLevel tokenizer over the task's words (the special tokens first, [PAD] id 0), split on whitespace,
    each text wrapped by the template ``single`` (BERT's [CLS] ... [SEP] by default)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for g in GROUPS for w in g} | set(FILLERS))
    vocab = {token: i for i, token in enumerate((*SPECIAL, *words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def build_model(directory: Path, layers: int, hidden: int, seed: int) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    fast = word_tokenizer()
    vocab = fast.get_vocab()
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=4, intermediate_size=2 * hidden, max_position_embeddings=32,
                        pad_token_id=0, num_labels=len(CLASSES),
                        id2label=dict(enumerate(CLASSES)), label2id={c: i for i, c in enumerate(CLASSES)})
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    model.save_pretrained(str(directory), safe_serialization=True)
    fast.save_pretrained(str(directory))
    print(f"wrote {directory}: BERT, {layers} layers, hidden {hidden}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, vocabulary {len(vocab)}")


def _load(path: Path, tokenizer) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    enc = tokenizer([r["text"] for r in rows], padding=True, return_tensors="pt")
    y = torch.tensor([CLASSES.index(r["label"]) for r in rows])
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, y


def accuracy(model, x: dict[str, torch.Tensor], y: torch.Tensor) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), 500):
            logits = model(**{k: v[i:i + 500] for k, v in x.items()}).logits
            correct += int((logits.argmax(1) == y[i:i + 500]).sum())
    return correct / len(y)


def train(directory: Path, data: Path, epochs: int, lr: float, batch: int, seed: int, metrics: Path | None) -> None:
    from transformers import AutoTokenizer, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    model = BertForSequenceClassification.from_pretrained(str(directory))
    xtr, ytr = _load(data / "train.csv", tokenizer)
    xte, yte = _load(data / "test.csv", tokenizer)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * -(-len(ytr) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    rows = [("epoch", "train_loss", "test_acc", "seconds")]
    print(f"epoch 0: test acc {accuracy(model, xte, yte):.4f}")
    for epoch in range(1, epochs + 1):
        start, total = time.perf_counter(), 0.0
        model.train()
        order = torch.randperm(len(ytr))
        for i in range(0, len(ytr), batch):
            idx = order[i:i + batch]
            loss = model(**{k: v[idx] for k, v in xtr.items()}, labels=ytr[idx]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        acc = accuracy(model, xte, yte)
        seconds = time.perf_counter() - start
        rows.append((epoch, f"{total / len(ytr):.4f}", f"{acc:.4f}", f"{seconds:.1f}"))
        print(f"epoch {epoch}/{epochs}: loss {total / len(ytr):.4f}, test acc {acc:.4f}, {seconds:.1f}s")
    model.save_pretrained(str(directory), safe_serialization=True)
    if metrics is not None:
        metrics.parent.mkdir(parents=True, exist_ok=True)
        with open(metrics, "w", newline="") as f:
            csv.writer(f).writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data")
    p.add_argument("out", type=Path)
    p.add_argument("--train", type=int, default=6000)
    p.add_argument("--test", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task", choices=("majority", "mod3"), default="mod3")
    p = sub.add_parser("model")
    p.add_argument("dir", type=Path)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("train")
    p.add_argument("dir", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metrics", type=Path)
    a = parser.parse_args()
    if a.command == "data":
        write_data(a.out, a.train, a.test, a.seed, a.task)
    elif a.command == "model":
        build_model(a.dir, a.layers, a.hidden, a.seed)
    else:
        torch.set_num_threads(max(1, torch.get_num_threads()))
        train(a.dir, a.data, a.epochs, a.lr, a.batch_size, a.seed, a.metrics)


if __name__ == "__main__":
    main()
