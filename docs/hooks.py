"""MkDocs hooks: the site is built from ``docs/``, where the pages sit beside the result files they link to.

Every page writes its links as the repository holds its files, so they work where the markdown is read as it is
(on GitHub, in an editor); here each relative link is resolved from the page's place in the repository:

* to a file under ``docs/``: left as it is (MkDocs checks it);
* to ``REPRODUCTION.md`` or ``CHANGELOG.md``: to their pages, built from the files at the repository's root;
* to another file of the repository (a script, a spec): to a copy of it under ``repo/``;
* to a directory (``../evidence/``): to a generated listing of its files, ``DIR/index.html``.

A target that does not exist stays a link to nothing, which MkDocs reports (and ``--strict`` refuses). A markdown
file that the nav does not name is a result file (``pruning/comparison.md``): it is published as it is, not as a
page.
"""

from __future__ import annotations

import html
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
# the repository's own markdown files that are pages of the site: repository path -> page
ROOT_PAGES = {"REPRODUCTION.md": "reproduction.md", "CHANGELOG.md": "changelog.md"}
LINK = re.compile(r"(\]\()([^)\s]+)(\))")
FENCE = re.compile(r"^(```|~~~).*?^\1", flags=re.MULTILINE | re.DOTALL)


class _AsIs(File):
    """A markdown file published byte for byte, as a result file."""

    def is_documentation_page(self) -> bool:
        return False


def _nav_pages(nav: object) -> set[str]:
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, dict):
        return set().union(*(_nav_pages(value) for value in nav.values()))
    if isinstance(nav, list):
        return set().union(*(_nav_pages(value) for value in nav))
    return set()


def on_files(files: Files, config) -> Files:
    pages = _nav_pages(config["nav"])
    for file in list(files):
        if file.is_documentation_page() and file.src_uri not in pages:
            files.remove(file)
            files.append(_AsIs(file.src_uri, file.src_dir, file.dest_dir, file.use_directory_urls))
    for source, page in ROOT_PAGES.items():
        files.append(File.generated(config, page, abs_src_path=str(ROOT / source)))
    return files


def _listing(config, files: Files, folder: str) -> None:
    """``folder/index.html`` (and one for each folder inside it): a list of its files, linked."""
    if files.get_file_from_path(f"{folder}/index.html") is not None:
        return
    entries = []
    for path in sorted((Path(config["docs_dir"]) / folder).iterdir()):
        if path.is_dir():
            _listing(config, files, f"{folder}/{path.name}")
            entries.append(f'<li><a href="{html.escape(path.name)}/index.html">{html.escape(path.name)}/</a></li>')
        else:
            entries.append(f'<li><a href="{html.escape(path.name)}">{html.escape(path.name)}</a></li>')
    title = html.escape(f"docs/{folder}/")
    content = (f'<!DOCTYPE html><meta charset="utf-8"><title>{title}</title><h1>{title}</h1>'
               f'<ul>{"".join(entries)}</ul>')
    files.append(File.generated(config, f"{folder}/index.html", content=content))


def _resolve(target: str, page_repo_path: str, page_uri: str, config, files: Files) -> str:
    if "://" in target or target.startswith(("#", "/", "mailto:")):
        return target
    path, hash_, anchor = target.partition("#")
    repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(page_repo_path), path))
    if repo_path in ROOT_PAGES:
        site_path = ROOT_PAGES[repo_path]
    elif repo_path.startswith("docs/"):
        site_path = repo_path[len("docs/"):]
    else:
        site_path = f"repo/{repo_path}"
        if (ROOT / repo_path).is_file() and files.get_file_from_path(site_path) is None:
            files.append(File.generated(config, site_path, abs_src_path=str(ROOT / repo_path)))
    if path.endswith("/"):
        if (Path(config["docs_dir"]) / site_path).is_dir():
            _listing(config, files, site_path)
        site_path = f"{site_path}/index.html"
    relative = posixpath.relpath(site_path, posixpath.dirname(page_uri) or ".")
    return relative + hash_ + anchor


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    uri = page.file.src_uri
    repo_path = next((source for source, page_uri in ROOT_PAGES.items() if page_uri == uri), f"docs/{uri}")

    def rewrite(text: str) -> str:
        return LINK.sub(lambda m: m.group(1) + _resolve(m.group(2), repo_path, uri, config, files) + m.group(3),
                        text)

    pieces, end = [], 0
    for fence in FENCE.finditer(markdown):
        pieces += [rewrite(markdown[end:fence.start()]), fence.group(0)]
        end = fence.end()
    return "".join(pieces) + rewrite(markdown[end:])
