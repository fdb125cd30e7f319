"""Text classifiers through the command line: ``train`` fine-tunes an ``hf:`` model on a table of texts, records
how its inputs are read in the sidecar, and ``eval``, ``prune`` and ``prune-study`` rebuild the same inputs (dict
batches of ``input_ids`` and ``attention_mask``) from it. The user guide's text example (docs/guide/pruning.md)
runs as written."""

from __future__ import annotations

import json
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest
import torch

from layermod.cli import main
from layermod.models import PassThrough
from layermod.models.checkpoint import load_checkpoint

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "guide" / "pruning.md").read_text(encoding="utf-8")
MARK = "<!-- tested by tests/test_text_prune.py -->"


def guide_commands() -> list[str]:
    """The commands of the guide's marked text example, continuation lines joined."""
    block = re.search(re.escape(MARK) + r"\n```bash\n(.*?)^```", GUIDE, flags=re.MULTILINE | re.DOTALL)
    assert block, f"docs/guide/pruning.md has no bash block after {MARK}"
    return [line.split("  #")[0].strip() for line in block.group(1).replace("\\\n", " ").splitlines() if line.strip()]


def run_command(line: str) -> None:
    """A guide line: ``python scripts/X.py ...`` runs the script in this process, ``layermod ...`` is ``main``."""
    words = shlex.split(line)
    if words[0] == "python":
        script = ROOT / words[1]
        saved = sys.argv
        sys.argv = [str(script), *words[2:]]
        try:
            runpy.run_path(str(script), run_name="__main__")
        finally:
            sys.argv = saved
    else:
        quiet = [] if words[1] == "eval" else ["--quiet"]
        assert words[0] == "layermod" and main([*words[1:], *quiet]) == 0, line


@pytest.fixture(scope="module")
def guide_run(tmp_path_factory) -> Path:
    """The folder the guide's text example ran in: data, model, trained checkpoint, prune run."""
    folder = tmp_path_factory.mktemp("guide")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        for line in guide_commands():
            run_command(line)
    return folder


def paths(folder: Path) -> dict[str, Path]:
    commands = " ".join(guide_commands())
    found = dict(re.findall(r"--(weights|out|test-dataset|model) (\S+)", commands))
    trained = re.search(r"layermod train .*?--out (\S+)", commands).group(1)
    pruned = re.search(r"layermod prune .*?--out (\S+)", commands).group(1)
    return {"model": folder / found["model"].removeprefix("hf:"), "test": folder / found["test-dataset"],
            "trained": folder / trained / "best.safetensors", "pruned": folder / pruned}


def by_hand(weights: Path, table: Path, *, text_column: str = "text", label_column: str = "label",
            max_length: int = 128) -> float:
    """Accuracy of a checkpoint on a CSV table computed without layermod's data path: the tokenizer saved with the
    model, labels numbered in sorted order, one batch of all texts padded to the longest."""
    import csv

    model, meta = load_checkpoint(weights)
    tokenizer = transformers.AutoTokenizer.from_pretrained(meta["arch"].removeprefix("hf:"))
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    names = sorted({row[label_column] for row in rows})
    batch = tokenizer([row[text_column] for row in rows], truncation=True, max_length=max_length, padding=True,
                      return_tensors="pt")
    y = torch.tensor([names.index(row[label_column]) for row in rows])
    with torch.no_grad():
        logits = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return float((logits.argmax(1) == y).float().mean())


def eval_accuracy(capsys, *args: str) -> float:
    capsys.readouterr()
    assert main(["eval", *args]) == 0
    return float(re.search(r"accuracy (\d\.\d+)", capsys.readouterr().out).group(1))


@pytest.fixture
def files(guide_run, monkeypatch) -> dict[str, Path]:
    """The guide run's files; the test runs in its folder, where the sidecars' relative table paths point."""
    monkeypatch.chdir(guide_run)
    return paths(guide_run)


def test_the_guide_example_trains_prunes_and_evaluates_a_text_classifier(files, capsys):
    model, meta = load_checkpoint(files["trained"])
    assert meta["training"]["optimizer"] == "adamw"
    assert meta["text"] == {"tokenizer": f"hf:{files['model'].resolve()}", "text_column": "text",
                            "label_column": "label", "max_length": 128, "classes": ["sum0", "sum1", "sum2"]}
    trained = eval_accuracy(capsys, "--weights", str(files["trained"]))
    assert trained == pytest.approx(by_hand(files["trained"], files["test"]), abs=1e-4)
    assert trained > 0.6  # learned: 3 classes, chance is 1/3
    plan = json.loads((files["pruned"] / "plan.json").read_text())
    comparison = json.loads((files["pruned"] / "comparison.json").read_text())
    rows = {row["method"]: row for row in comparison["rows"]}
    pruned, pruned_meta = load_checkpoint(files["pruned"] / "pruned.safetensors")
    assert pruned_meta["text"] == meta["text"] and pruned_meta["test_dataset"] == meta["test_dataset"]
    assert all(isinstance(pruned.get_submodule(name), PassThrough) for name in plan["remove"])
    after = eval_accuracy(capsys, "--weights", str(files["pruned"] / "pruned.safetensors"))
    assert after == pytest.approx(rows[plan["method"]]["accs"][0], abs=1e-4)
    assert after == pytest.approx(by_hand(files["pruned"] / "pruned.safetensors", files["test"]), abs=1e-4)
    assert set(rows) == {"none", "modularity", "cosine", "random", plan["method"]}  # the plan's method is compared too
    assert main(["curve", "--weights", str(files["trained"]), "--dataset", str(files["test"]), "--n-per-class", "10",
                 "--repeats", "2", "--views", "0", "--quiet", "--out", "curve"]) == 0  # the sidecar's tokenizer
    curve = json.loads(Path("curve/curve.json").read_text())
    assert curve["layers"][1:] == [f"model.bert.encoder.layer.{i}" for i in range(4)]
    assert rows["modularity"]["flops"] < rows["none"]["flops"] and rows["none"]["n_removed"] == 0


def test_columns_and_length_go_through_the_sidecar(files, tmp_path, capsys):
    import csv

    from layermod.training import evaluation

    renamed = {}
    for name in ("train", "test"):
        text = (files["test"].parent / f"{name}.csv").read_text().replace("text,label", "sentence,kind", 1)
        renamed[name] = tmp_path / f"{name}.csv"
        renamed[name].write_text(text)
    out = tmp_path / "short"
    assert main(["train", "--model", f"hf:{files['model']}", "--dataset", str(renamed["train"]), "--test-dataset",
                 str(renamed["test"]), "--text-column", "sentence", "--label-column", "kind", "--max-length", "6",
                 "--epochs", "1", "--optimizer", "adamw", "--lr", "0.003", "--quiet", "--out", str(out)]) == 0
    _, meta = load_checkpoint(out / "last.safetensors")
    assert (meta["text"]["text_column"], meta["text"]["label_column"], meta["text"]["max_length"]) == \
        ("sentence", "kind", 6)
    evaluated = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluation, "evaluate", lambda model, data, **kw: evaluated.append(data) or 0.5)
        assert main(["eval", "--weights", str(out / "last.safetensors")]) == 0
    with open(renamed["test"], newline="") as f:
        sentences = [row["sentence"] for row in csv.DictReader(f)]
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(files["model"]))
    expected = tokenizer(sentences, truncation=True, max_length=6, padding=True, return_tensors="pt")
    (data,) = evaluated
    assert data.input_ids.shape == (len(sentences), 6) and torch.equal(data.input_ids, expected["input_ids"])
    assert torch.equal(data.attention_mask, expected["attention_mask"])
    expected_accuracy = by_hand(out / "last.safetensors", renamed["test"], text_column="sentence",
                                label_column="kind", max_length=6)
    assert eval_accuracy(capsys, "--weights", str(out / "last.safetensors")) == pytest.approx(expected_accuracy,
                                                                                           abs=1e-4)


def test_the_study_runs_on_dict_batches(files, tmp_path, monkeypatch, capsys):
    from layermod.pruning import budgets

    seen = []
    scores, retrain = budgets.method_scores, budgets.retrain_pruned

    def spy_scores(model, units, methods, inputs, *args, **kwargs):
        seen.append(("scores", type(inputs)))
        return scores(model, units, methods, inputs, *args, **kwargs)

    def spy_retrain(model, job, config, train_data, test_data, example):
        seen.append(("retrain", type(example)))
        return retrain(model, job, config, train_data, test_data, example)

    monkeypatch.setattr(budgets, "method_scores", spy_scores)
    monkeypatch.setattr(budgets, "retrain_pruned", spy_retrain)
    out = tmp_path / "study"
    assert main(["prune-study", "--weights", str(files["trained"]), "--budgets", "0.3", "--match", "flops",
                 "--retrain", "finetune", "--methods", "cosine,angular,first", "--seeds", "1", "--optimizer", "adamw",
                 "--finetune-lr", "0.0005", "--train-subset", "150", "--n-per-class", "10", "--repeats", "2",
                 "--quiet", "--out", str(out)]) == 0
    assert {kind for kind, _ in seen} == {"scores", "retrain"} and {t for _, t in seen} == {dict}
    rows = json.loads((out / "matched.json").read_text())["rows"]
    assert {row["method"] for row in rows} == {"none", "cosine", "angular", "first"}
    unpruned = next(row for row in rows if row["method"] == "none")
    assert unpruned["acc_pruned"] == pytest.approx(eval_accuracy(capsys, "--weights", str(files["trained"])),
                                                   abs=1e-4)
    assert all(row["flops"] <= 0.7 * unpruned["flops"] for row in rows if row["method"] != "none")


def test_adamw_runs_resume_exactly(files, tmp_path):
    train = ["train", "--model", f"hf:{files['model']}", "--dataset", str(files["test"]), "--test-dataset",
             str(files["test"]), "--optimizer", "adamw", "--lr", "0.002", "--batch-size", "50", "--schedule",
             "constant", "--quiet"]  # a cosine schedule is planned anew over a longer run
    assert main([*train, "--epochs", "2", "--out", str(tmp_path / "straight")]) == 0
    assert main([*train, "--epochs", "1", "--out", str(tmp_path / "resumed")]) == 0
    assert main([*train, "--epochs", "2", "--resume", "--out", str(tmp_path / "resumed")]) == 0
    straight, resumed = ((tmp_path / name / "last.safetensors").read_bytes() for name in ("straight", "resumed"))
    assert straight == resumed


def test_bad_text_input_is_one_line(files, tmp_path, capsys):
    out = tmp_path / "run"
    train = ["train", "--model", f"hf:{files['model']}", "--dataset", str(files["test"]), "--test-dataset",
             str(files["test"]), "--epochs", "1", "--quiet", "--out", str(out)]
    code = main([*train, "--text-column", "review"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "has no column 'review'; its columns are 'text', 'label'" in err[0], err
    with pytest.raises(SystemExit) as parsed:
        main([*train, "--optimizer", "adam"])
    err = capsys.readouterr().err.strip().splitlines()
    assert parsed.value.code == 2 and len(err) == 1 and "invalid choice: 'adam'" in err[0], err
    assert not out.exists()


def test_a_held_out_table_of_other_classes_is_refused(files, tmp_path, capsys):
    other = tmp_path / "other.csv"
    other.write_text(files["test"].read_text().replace("sum1", "sum7"))
    for command in (["train", "--model", f"hf:{files['model']}", "--dataset", str(files["test"]), "--test-dataset",
                     str(other), "--epochs", "1", "--out", str(tmp_path / "run")],
                    ["eval", "--weights", str(files["trained"]), "--dataset", str(other)]):
        code = main([*command, "--quiet"] if command[0] == "train" else command)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "not the model's 'sum0', 'sum1', 'sum2'" in err[0], err


def test_a_decoder_prunes_on_the_curve_layermod_curve_measured(files, tmp_path):
    """GPT-2's position embedding returns a batch of 1: the auto points of a curve and of prune must agree."""
    decoder = tmp_path / "gpt2"
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(files["model"]))
    transformers.GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=3, n_head=2, n_positions=32, pad_token_id=0,
                            architectures=["GPT2ForSequenceClassification"]).save_pretrained(str(decoder))
    tokenizer.save_pretrained(str(decoder))
    table = str(files["test"])
    assert main(["train", "--model", f"hf:{decoder}", "--dataset", table, "--test-dataset", table, "--epochs", "1",
                 "--optimizer", "adamw", "--lr", "0.003", "--quiet", "--out", str(tmp_path / "run")]) == 0
    weights = str(tmp_path / "run" / "best.safetensors")
    assert main(["curve", "--weights", weights, "--dataset", table, "--n-per-class", "10", "--repeats", "2",
                 "--views", "0", "--quiet", "--out", str(tmp_path / "curve")]) == 0
    assert json.loads((tmp_path / "curve" / "curve.json").read_text())["layers"][0] == "model.transformer.wte"
    assert main(["prune", "--weights", weights, "--curve", str(tmp_path / "curve"), "--remove", "1", "--methods",
                 "modularity", "--seeds", "1", "--optimizer", "adamw", "--finetune-lr", "0.001", "--quiet",
                 "--out", str(tmp_path / "pruned")]) == 0
    (removed,) = json.loads((tmp_path / "pruned" / "plan.json").read_text())["remove"]
    assert removed.startswith("model.transformer.h.")
