"""Depth pruning of two text transformers at matched FLOPs, offline, through the command line: a BERT-style encoder
and a GPT-2 decoder, each 6 layers of width 64, trained from scratch by ``layermod train`` on a synthetic task,
then compared by ``layermod prune-study`` (its default methods, one FLOPs budget, fine-tuned with AdamW, a few
seeds).

    python scripts/text_pruning.py --out docs/text-prune

The task (:func:`sentence`), in the words of ``scripts/hub_text.py``: two words of one group (animals, food,
tools) and one of another among 3-6 fillers; the class is the doubled group, shifted by one (modulo 3) when the
sentence holds the word "was". Counting alone gets half of it right: the model must combine the count with the
flag, which it learns over a few epochs rather than at once.

Writes, under ``--out``: ``bert/`` and ``gpt2/`` (the study runs: matched.json/.csv/.md, the Pareto figure,
run.json), ``bert-curve/`` and ``gpt2-curve/`` (the modularity curve on the test set that the study's
``modularity`` and ``steepest`` methods read), ``bert-metrics.csv`` and ``gpt2-metrics.csv`` (the training
curves) and ``summary.json``, ``.csv`` and ``.md`` (both models side by side, with the CPU time of every step). The data, the models' directories and
the trained checkpoints stay in ``--work``: no weights are written under ``--out``. Everything is seeded.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hub_text  # noqa: E402  (the task's words, sentences and tokenizer)

KINDS = ("bert", "gpt2")
FLAG = "was"  # the word that shifts the class


def sentence(rng: random.Random, label: int) -> str:
    """Two words of one group and one of another among 3-6 fillers; the class is the doubled group, shifted by
    one (modulo 3) when the sentence holds :data:`FLAG` (half of them do)."""
    flagged = rng.random() < 0.5
    group = (label - flagged) % len(hub_text.GROUPS)
    other = rng.choice([g for g in range(len(hub_text.GROUPS)) if g != group])
    words = [rng.choice([w for w in hub_text.FILLERS if w != FLAG]) for _ in range(rng.randint(3, 6))]
    for word in (rng.choice(hub_text.GROUPS[group]), rng.choice(hub_text.GROUPS[group]),
                 rng.choice(hub_text.GROUPS[other]), *([FLAG] if flagged else [])):
        words.insert(rng.randint(0, len(words)), word)
    return " ".join(words)


def write_data(out: Path, n_train: int, n_test: int, seed: int) -> None:
    """train.csv and test.csv of :func:`sentence`, classes balanced, in a seeded order."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for name, n in (("train.csv", n_train), ("test.csv", n_test)):
        labels = [i % len(hub_text.CLASSES) for i in range(n)]
        rng.shuffle(labels)
        with open(out / name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows((sentence(rng, y), hub_text.CLASSES[y]) for y in labels)
TEMPLATES = {"bert": "[CLS] $A [SEP]", "gpt2": "$A [SEP]"}  # the decoder reads its last token, [SEP]


def build_model(kind: str, directory: Path, *, layers: int, hidden: int) -> None:
    """The config (random weights: ``layermod train`` initialises them, seeded) and tokenizer of ``kind``."""
    from transformers import BertConfig, GPT2Config

    tokenizer = hub_text.word_tokenizer(TEMPLATES[kind])
    vocab = tokenizer.get_vocab()
    labels = {"num_labels": len(hub_text.CLASSES), "id2label": dict(enumerate(hub_text.CLASSES)),
              "label2id": {name: i for i, name in enumerate(hub_text.CLASSES)}}
    if kind == "bert":
        config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=4, intermediate_size=2 * hidden, max_position_embeddings=32,
                            pad_token_id=vocab["[PAD]"], architectures=["BertForSequenceClassification"], **labels)
    else:
        config = GPT2Config(vocab_size=len(vocab), n_embd=hidden, n_layer=layers, n_head=4, n_inner=2 * hidden,
                            n_positions=32, pad_token_id=vocab["[PAD]"], bos_token_id=vocab["[CLS]"],
                            eos_token_id=vocab["[SEP]"], architectures=["GPT2ForSequenceClassification"], **labels)
    config.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))


def timed(step) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) that ``step()`` took."""
    cpu, wall = time.process_time(), time.perf_counter()
    step()
    return time.process_time() - cpu, time.perf_counter() - wall


def run(command: list[str]) -> None:
    from layermod.cli import main

    status = main(command)
    if status != 0:
        raise SystemExit(f"layermod {command[0]} failed with status {status}")


def study(kind: str, args: argparse.Namespace, data: Path, out: Path) -> dict:
    """Train ``kind``, measure its curve and run the study; returns the times and the trained accuracy."""
    model_dir, trained = args.work / kind, args.work / f"{kind}-train"
    for folder in (model_dir, trained):
        shutil.rmtree(folder, ignore_errors=True)
    build_model(kind, model_dir, layers=args.layers, hidden=args.hidden)
    train = ["train", "--model", f"hf:{model_dir}", "--dataset", str(data / "train.csv"), "--test-dataset",
             str(data / "test.csv"), "--optimizer", "adamw", "--lr", str(args.lr), "--weight-decay", "0.01",
             "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--seed", "0", "--quiet",
             "--out", str(trained)]
    train_cpu, train_wall = timed(lambda: run(train))
    curve = ["curve", "--weights", str(trained / "best.safetensors"), "--dataset", str(data / "test.csv"),
             "--views", "0", "--quiet", "--out", str(out / f"{kind}-curve")]
    curve_cpu, curve_wall = timed(lambda: run(curve))
    prune = ["prune-study", "--weights", str(trained / "best.safetensors"), "--curve", str(out / f"{kind}-curve"),
             "--budgets", str(args.budget),
             "--match", "flops", "--retrain", "finetune", "--seeds", str(args.seeds), "--optimizer", "adamw",
             "--finetune-lr", str(args.finetune_lr), "--finetune-epochs", str(args.finetune_epochs),
             "--batch-size", str(args.batch_size), "--quiet", "--out", str(out / kind)]
    prune_cpu, prune_wall = timed(lambda: run(prune))
    shutil.copyfile(trained / "metrics.csv", out / f"{kind}-metrics.csv")
    sidecar = json.loads((trained / "best.json").read_text())
    return {"trained_accuracy": sidecar["accuracy"], "best_epoch": sidecar["epoch"],
            "train_cpu_s": train_cpu, "train_wall_s": train_wall, "curve_cpu_s": curve_cpu,
            "curve_wall_s": curve_wall, "study_cpu_s": prune_cpu, "study_wall_s": prune_wall}


def summarise(out: Path, runs: dict[str, dict], settings: dict) -> None:
    """summary.json / .csv / .md: per model and method, the units removed, the FLOPs removed and the accuracy
    before and after fine-tuning (mean ± std over seeds), beside the unpruned model."""
    from layermod import Curve, find_redundant
    from layermod.pruning.pareto import MatchedComparison

    rows = []
    for kind in KINDS:
        comparison = MatchedComparison.load(out / kind)
        for cell in comparison.summary():
            mine = [row for row in comparison.rows if row["method"] == cell["method"]]
            rows.append({"model": kind, "method": cell["method"],
                         "removed_seed0": " ".join(mine[0]["layers_removed"]) or "-",
                         "flops_removed": cell["flops_removed"],
                         "acc_pruned": sum(row["acc_pruned"] for row in mine) / len(mine),
                         "acc_mean": cell["acc_mean"], "acc_std": cell["acc_std"], "n": cell["n"],
                         "vs_modularity": cell["vs_modularity"]})
    (out / "summary.json").write_text(json.dumps({"settings": settings, "models": runs, "rows": rows}, indent=2)
                                      + "\n")
    columns = ["model", "method", "removed_seed0", "flops_removed", "acc_pruned", "acc_mean", "acc_std", "n"]
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([row[c] for c in columns] for row in rows)
    lines = ["| model | method | removed (seed 0) | FLOPs removed | before fine-tuning | after fine-tuning |",
             "|---|---|---|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['method']} | {row['removed_seed0']} | "
                     f"{100 * row['flops_removed']:.1f} % | {100 * row['acc_pruned']:.2f} % | "
                     f"{100 * row['acc_mean']:.2f} ± {100 * row['acc_std']:.2f} % |")
    lines += ["", "| model | trained accuracy | training CPU s (wall s) | curve CPU s (wall s) | study CPU s (wall s) |",
              "|---|---:|---:|---:|---:|"]
    for kind, times in runs.items():
        lines.append(f"| {kind} | {100 * times['trained_accuracy']:.2f} % | {times['train_cpu_s']:.0f} "
                     f"({times['train_wall_s']:.0f}) | {times['curve_cpu_s']:.0f} ({times['curve_wall_s']:.0f}) | "
                     f"{times['study_cpu_s']:.0f} ({times['study_wall_s']:.0f}) |")
    lines += ["", "| model | layer | Q | increment | verdict |", "|---|---|---:|---:|---|"]
    for kind in KINDS:
        curve = Curve.load(out / f"{kind}-curve")
        for verdict, q in zip(find_redundant(curve), curve.mean):
            step = "-" if math.isnan(verdict.increment) else f"{verdict.increment:+.4f}"
            lines.append(f"| {kind} | {verdict.layer} | {q:.3f} | {step} | {verdict.verdict} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/text-prune"), help="results (no weights)")
    parser.add_argument("--work", type=Path, default=Path("runs/text-prune"), help="data, models and checkpoints")
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=900)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--budget", type=float, default=0.33, help="share of the FLOPs to remove")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--finetune-lr", type=float, default=0.0005)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.work / "data"
    write_data(data, args.train, args.test, 0)
    runs = {kind: study(kind, args, data, args.out) for kind in KINDS}
    settings = {key: value for key, value in vars(args).items() if key not in ("out", "work")}
    summarise(args.out, runs, settings)


if __name__ == "__main__":
    main()
