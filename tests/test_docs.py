"""The documentation runs: every Python block of README.md and of the docs site's pages as written (the ones
marked for it on the local backend instead of Ray), after the `layermod train` line that makes the model they load;
the example model in examples/ and the getting-started commands through the command line; the site's strict
build, which a broken link or a stale API reference fails; and the tutorial notebook."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from layermod.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def section(markdown: str, title: str) -> str:
    """The text of the ``## title`` section, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", markdown, flags=re.MULTILINE | re.DOTALL)
    assert match, f"no '## {title}' section"
    return match.group(1)


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\s*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def nav_pages() -> list[str]:
    """The pages mkdocs.yml's nav names, as paths under docs/."""
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8").split("\nnav:\n", 1)[1]
    return re.findall(r"^\s*- (?:[^:\n]+: )?(\S+\.md)\s*$", nav, flags=re.MULTILINE)


# README.md, the root files the site shows, and every page of docs/ that the nav names
ROOT_PAGES = {"reproduction.md": "REPRODUCTION.md", "changelog.md": "CHANGELOG.md"}
PAGES = ["README.md", *(ROOT_PAGES.get(page, f"docs/{page}") for page in nav_pages())]
USE_IT = (DOCS / "guide" / "use-it.md").read_text(encoding="utf-8")
# ``<!-- docs-test: backend="local" -->`` before a block: the test runs it on the local backend (no Ray to start);
# ``<!-- docs-test: in-repository -->``: it reads the committed result files, so it runs from the repository root
MARKER = re.compile(r"<!-- docs-test: (\S+) -->\n$")
IN_REPOSITORY = "in-repository"


def python_blocks(page: str) -> list[tuple[str, int, str]]:
    """Every ```python block of ``page``, as (page, line, code), the marked ones rewritten as their marker says."""
    text = (ROOT / page).read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"^```python\s*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        code, line = match.group(1), text.count("\n", 0, match.start()) + 1
        marked = MARKER.search(text[max(0, match.start() - 60):match.start()])
        if marked and marked.group(1) == IN_REPOSITORY:
            code = f"# {IN_REPOSITORY}\n{code}"
        elif marked:
            assert 'backend="ray"' in code, f"{page}:{line}: the marker names a backend the block does not use"
            code = code.replace('backend="ray"', marked.group(1))
        blocks.append((page, line, code))
    return blocks


BLOCKS = [block for page in PAGES for block in python_blocks(page)]


def test_every_page_is_in_the_site_and_has_its_blocks_collected():
    pages = {str(path.relative_to(DOCS)) for folder in (DOCS, DOCS / "guide", DOCS / "api") for path in
             folder.glob("*.md")}
    assert pages == set(nav_pages()) - set(ROOT_PAGES), "every page under docs/ is in mkdocs.yml's nav"
    assert python_blocks("README.md") and python_blocks("docs/index.md") and python_blocks("docs/guide/use-it.md")


def use_it_checkpoint(folder: Path) -> None:
    """What the ``layermod train`` line of the user guide's "Use it" writes, run from its text."""
    line = next(line for block in code_blocks(USE_IT, "bash") for line in block.splitlines()
                if line.startswith("layermod train"))
    assert main([*line.split()[1:], "--quiet"]) == 0 and (folder / "runs/digits-mlp/best.safetensors").is_file()


def fashion_mnist_found() -> bool:
    import layermod as lm

    try:
        lm.load_dataset("fashion-mnist", split="test", download=False)
    except lm.DatasetError:
        return False
    return True


def run_block(code: str, page: str, line: int) -> dict:
    namespace = {"__name__": "__main__"}
    exec(compile("\n" * line + code, page, "exec"), namespace)
    return namespace


@pytest.mark.parametrize("page, line, code", BLOCKS, ids=[f"{page}:{line}" for page, line, _ in BLOCKS])
def test_every_python_block_runs(page, line, code, tmp_path, monkeypatch):
    for library in ("lightning", "transformers", "tensorboard", "torchvision"):
        if library in code:
            pytest.importorskip(library)
    monkeypatch.chdir(ROOT if code.startswith(f"# {IN_REPOSITORY}\n") else tmp_path)  # blocks write into it
    if "runs/digits-mlp" in code or '"digits"' in code:
        pytest.importorskip("sklearn")
    if '"fashion-mnist"' in code and not fashion_mnist_found():
        pytest.skip("Fashion-MNIST is not installed (scripts/setup.sh installs it as root)")
    if "runs/digits-mlp" in code:
        use_it_checkpoint(tmp_path)
    namespace = run_block(code, page, line)
    if "pooled" in namespace:
        check_pooled(namespace)
    if "fine_tune" in namespace:
        assert namespace["failed"] == {} and len(namespace["accuracy"]) == 6
        assert all(0.5 < value <= 1 for value in namespace["accuracy"].values())
    if "tracker" in namespace:
        assert namespace["tracker"].dynamics.epochs == [0, 5, 10] and (tmp_path / "runs/loop/dynamics.json").is_file()
    if "lm" in namespace and "pair" in namespace:
        check_use_it(namespace, tmp_path)
    if "lm" in namespace and "curve" in namespace and "torchvision" in namespace:
        check_first_curve(namespace, tmp_path)


def check_pooled(namespace: dict) -> None:
    pooled, studies = namespace["pooled"], namespace["studies"]
    assert len(studies) == 3 and len(pooled.rows) == sum(len(study.rows) for study in studies)
    assert {row["network"] for row in pooled.rows} == {0, 1, 2}
    assert all(p["networks"] == 3 for p in pooled.pooled())


def check_first_curve(namespace: dict, folder: Path) -> None:
    curve = namespace["curve"]
    assert curve.layers == ["conv1", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1",
                            "layer4.0", "layer4.1"]
    assert np.asarray(curve.values).shape == (3, 9) and curve.config["samples_per_draw"] == 500
    assert namespace["lm"].Curve.load(folder / "runs/first-curve").to_dict() == curve.to_dict()


def check_use_it(namespace: dict, folder: Path) -> None:
    lm = namespace["lm"]
    assert 0 < namespace["q"] < 1
    curve, pair, comparison = namespace["curve"], namespace["pair"], namespace["comparison"]
    n_layers = len(curve.layers)
    assert n_layers >= 2 and np.asarray(curve.values).shape == (5, n_layers)
    assert np.asarray(curve.z).shape == (n_layers,)
    assert (folder / "run" / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert lm.Curve.load(folder / "run").to_dict() == curve.to_dict()
    assert namespace["ax"].figure is not None and len(curve.to_frame()) == n_layers
    assert isinstance(pair.clean, lm.Curve) and pair.clean.layers == pair.attacked.layers == curve.layers
    assert np.asarray(comparison.d).shape == np.asarray(comparison.cka).shape == (n_layers, n_layers)


def test_the_commands_name_the_example_model():
    commands = "\n".join(code_blocks(USE_IT, "bash"))
    assert "--model examples/digits_resmlp.py:build" in commands and (ROOT / "examples" / "digits_resmlp.py").is_file()


def test_the_getting_started_commands(tmp_path, monkeypatch):
    """The getting-started page's ``layermod`` lines as written, in a folder where ``examples/`` is the
    repository's: the curve's run directory, then its report."""
    pytest.importorskip("sklearn")
    text = section((DOCS / "index.md").read_text(encoding="utf-8"), "A first curve on the command line")
    lines = [line.split("#")[0].split() for block in code_blocks(text, "bash") for line in block.splitlines()]
    assert [line[1] for line in lines] == ["curve", "report"]
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    for line in lines:
        assert main([*line[1:], "--quiet"] if line[1] == "curve" else line[1:]) == 0
    curve = json.loads((tmp_path / "runs/digits/curve.json").read_text())
    assert len(curve["layers"]) == 7 and np.asarray(curve["values"]).shape == (3, 7)
    page = (tmp_path / "runs/digits.html").read_text(encoding="utf-8")
    assert all(layer in page for layer in curve["layers"])


def test_the_example_model_through_the_command_line(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")  # the digits set comes from scikit-learn (the test extra installs it)
    monkeypatch.chdir(ROOT)  # the path as the README writes it, relative to the repository
    out = tmp_path / "digits"
    assert main(["curve", "--model", "examples/digits_resmlp.py:build", "--dataset", "digits", "--n-per-class", "10",
                 "--repeats", "2", "--views", "0", "--quiet", "--out", str(out)]) == 0
    curve = json.loads((out / "curve.json").read_text())
    assert curve["config"]["model"] == "examples/digits_resmlp.py:build"
    assert len(curve["layers"]) == 7  # the stem and the 6 residual blocks, found by tracing
    # a trained model: the classes separate more at the last block than at the stem
    mean = np.asarray(curve["values"]).mean(axis=0)
    assert mean[-1] > mean[0] and mean[-1] > 0.5



# --- the site -----------------------------------------------------------------------------------------------------


def require(module: str) -> None:
    """Skip without ``module`` (the ``docs`` extra installs it), but fail when ``CI`` is set."""
    try:
        importlib.import_module(module)
    except ImportError:
        message = f"{module} is not installed (pip install -e '.[docs]')"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must build the docs site and run the tutorial")
        pytest.skip(message)


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], capture_output=True, text=True, env=env, timeout=600)


def api_references() -> list[str]:
    return [ref for path in sorted((DOCS / "api").glob("*.md"))
            for ref in re.findall(r"^::: (\S+)", path.read_text(encoding="utf-8"), flags=re.MULTILINE)]


def resolve(reference: str) -> object:
    module, _, name = reference.rpartition(".")
    try:
        return importlib.import_module(reference)
    except ImportError:
        return getattr(importlib.import_module(module), name)


def test_the_api_reference_documents_every_public_name():
    import layermod as lm

    documented = [resolve(ref) for ref in api_references()]
    modules = [obj for obj in documented if isinstance(obj, type(lm))]
    missing = []
    for name in lm.__all__:
        value = getattr(lm, name)
        if name == "RESULT_TYPES":
            assert all(any(kind is obj for obj in documented) for kind in value)
        elif not any(value is obj for obj in documented) and not any(
                getattr(module, name, None) is value and name in getattr(module, "__all__", ()) for module in modules):
            missing.append(name)
    assert missing == [], f"layermod.{', '.join(missing)} not in docs/api/ (add a '::: module.name' line)"


def test_the_site_builds_strictly(tmp_path):
    require("mkdocs")
    require("material")
    require("mkdocstrings_handlers.python")
    run = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert run.returncode == 0, run.stderr[-3000:]
    site = tmp_path / "site"
    for page in nav_pages():
        assert (site / page.removesuffix(".md").removesuffix("index") / "index.html").is_file(), page
    # the API pages hold every documented object, the results their files, the directory links their listings
    api = "".join(path.read_text(encoding="utf-8") for path in (site / "api").glob("*/index.html"))
    assert all(f'id="{ref}"' in api for ref in api_references())
    assert (site / "demo/curve.png").read_bytes() == (DOCS / "demo/curve.png").read_bytes()
    assert (site / "pruning/comparison.md").read_bytes() == (DOCS / "pruning/comparison.md").read_bytes()
    assert 'href="vgg11/index.html"' in (site / "evidence/index.html").read_text(encoding="utf-8")
    reproduction = (site / "reproduction/index.html").read_text(encoding="utf-8")
    assert "Reproducing Lu et al." in reproduction and 'href="../repo/scripts/specs/size.toml"' in reproduction
    assert (site / "repo/scripts/specs/size.toml").read_bytes() == (ROOT / "scripts/specs/size.toml").read_bytes()


BREAKAGES = {  # what is appended to which page, and the name the build's complaint must give
    "a link to a missing file": ("guide/demo.md", "[gone](../demo/no-such-curve.png)", "no-such-curve.png"),
    "a link to a missing folder": ("guide/evidence.md", "[gone](../no-such-folder/)", "no-such-folder"),
    "a link to a missing section": ("guide/demo.md", "[gone](use-it.md#no-such-section)", "no-such-section"),
    "a stale API reference": ("api/curves.md", "::: layermod.analysis.curve.no_such_function", "no_such_function"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_the_strict_build_refuses(breakage, tmp_path):
    require("mkdocs")
    require("material")
    require("mkdocstrings_handlers.python")
    copy = tmp_path / "repo"
    shutil.copytree(DOCS, copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    for entry in ROOT.iterdir():  # the rest of the repository as it is
        if entry.name not in ("docs", "mkdocs.yml", "site", ".git") and not (copy / entry.name).exists():
            (copy / entry.name).symlink_to(entry)
    page, text, name = BREAKAGES[breakage]
    with open(copy / "docs" / page, "a", encoding="utf-8") as file:
        file.write(f"\n{text}\n")
    run = mkdocs_build(copy / "mkdocs.yml", tmp_path / "site")
    assert run.returncode != 0 and name in run.stderr, run.stderr[-3000:]


@pytest.mark.slow
def test_the_tutorial_notebook_runs(tmp_path, monkeypatch):
    require("nbclient")
    require("nbformat")
    require("ipykernel")
    pytest.importorskip("torchvision")
    pytest.importorskip("sklearn")
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(DOCS / "tutorial.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code), \
        "docs/tutorial.ipynb is committed without outputs"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on the first failing cell
    assert all(cell.execution_count for cell in code)
    printed = "".join(output.get("text", "") for cell in code for output in cell.outputs)
    # the parameters it prints: the network's, less those of the blocks it names as removed (counted here)
    import torchvision

    network = torchvision.models.resnet18(num_classes=10)
    removed = re.search(r"removed: +(.*)", printed).group(1)
    names = re.findall(r"(layer\d\.\d+) \(", removed)
    before, after = (int(n.replace(",", "")) for n in re.search(r"parameters: ([\d,]+) -> ([\d,]+)", printed).groups())
    assert len(names) == 2 and before == sum(p.numel() for p in network.parameters())
    assert before - after == sum(p.numel() for name in names for p in network.get_submodule(name).parameters())
    trained, _, tuned = map(float, re.search(r"([\d.]+)% unpruned, ([\d.]+)% pruned, ([\d.]+)% after", printed).groups())
    assert trained > 50 and tuned > 50  # 10 classes: chance is 10 %
