"""One self-contained HTML page, built section by section: opens anywhere, offline, with nothing to fetch.

The decisions behind it: docs/design.md, section layermod.report.html.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import io
import json
import math
import numbers
import os
import re
import sys
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from layermod import __version__
from layermod.io.files import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["NOTICE_KINDS", "PNG_SIGNATURE", "HtmlDocument"]

NOTICE_KINDS = ("warning", "error", "info")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MISSING = "\u2013"  # en dash, shown for None and NaN table cells
FIGURE_DPI = 110

_SAFE_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")
_MIME = re.compile(r"[\w.+-]+/[\w.+-]+(;[\w.+-]+=[\w.+-]+)*")
_RESERVED_IDS = frozenset({"contents"})
_JSON_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}

_STYLE = """
:root { color-scheme: light; }
body { margin: 0; background: #fff; color: #1f2328; line-height: 1.5; font-size: 16px;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
.page { max-width: 1100px; margin: 0 auto; padding: 24px 28px 40px; }
h1 { font-size: 1.9em; margin: 0.2em 0; }
h2 { font-size: 1.4em; margin: 1.6em 0 0.5em; padding-bottom: 0.25em; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 1.12em; margin: 1.3em 0 0.4em; }
p { margin: 0.6em 0; white-space: pre-line; }
.subtitle { color: #59636e; font-size: 1.05em; }
nav { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 20px; margin: 18px 0; }
nav h2 { font-size: 1em; margin: 0 0 4px; border: 0; padding: 0; }
nav ol { margin: 0; padding-left: 1.4em; }
a { color: #0969da; text-decoration: none; }
a:hover { text-decoration: underline; }
.notice { border-left: 4px solid; border-radius: 4px; padding: 8px 14px; margin: 12px 0; white-space: pre-line; }
.notice-warning { background: #fff8c5; border-color: #bf8700; }
.notice-error { background: #ffebe9; border-color: #cf222e; }
.notice-info { background: #ddf4ff; border-color: #0969da; }
figure { margin: 18px 0; text-align: center; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #59636e; font-size: 0.92em; margin-top: 6px; }
.table-wrap { overflow-x: auto; margin: 14px 0; }
table { border-collapse: collapse; font-size: 0.92em; }
caption { caption-side: top; text-align: left; color: #59636e; padding-bottom: 6px; }
th, td { padding: 4px 12px; border-bottom: 1px solid #d0d7de; text-align: left; vertical-align: top; }
th { background: #f6f8fa; border-bottom-width: 2px; }
tbody tr:nth-child(even) { background: #f6f8fa; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.download .size { color: #59636e; font-size: 0.9em; }
footer { margin-top: 40px; padding-top: 10px; border-top: 1px solid #d0d7de; color: #59636e; font-size: 0.85em; }
"""

_CHECK_SCRIPT = """
(function () {
  "use strict";
  var body = document.body;
  function check() {
    var problems = [], images = document.images, loaded = 0, i;
    for (i = 0; i < images.length; i++) {
      if (images[i].complete && images[i].naturalWidth > 0) { loaded++; }
      else { problems.push("image " + (i + 1) + " did not decode"); }
    }
    var blocks = document.querySelectorAll('script[type="application/json"]');
    for (i = 0; i < blocks.length; i++) {
      try { JSON.parse(blocks[i].textContent); }
      catch (e) { problems.push(blocks[i].id + " is not JSON"); }
    }
    body.setAttribute("data-images", loaded + "/" + images.length);
    body.setAttribute("data-render-check", problems.length ? "failed: " + problems.join("; ") : "ok");
  }
  window.addEventListener("load", function () {
    try { check(); } catch (e) { body.setAttribute("data-render-check", "failed: " + e); }
  });
})();
"""


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


_CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; img-src data:; style-src {_csp_hash(_STYLE)}; script-src {_csp_hash(_CHECK_SCRIPT)}; "
    "base-uri 'none'; form-action 'none'"
)


@dataclass
class _Section:
    anchor: str
    title: str
    parts: list[str] = field(default_factory=list)


class HtmlDocument:
    """A self-contained HTML page built section by section; every text argument is escaped (html.escape) —
    callers pass plain text, never markup.

    Content added before the first :meth:`section` appears under the title, above the table of contents.

    Example::

        doc = HtmlDocument("run 3", subtitle="resnet18 on Fashion-MNIST")
        doc.section("Modularity")
        doc.figure(fig, caption="Q per layer")
        doc.table(["layer", "Q"], [["conv1", 0.12], ["fc", 0.71]])
        doc.download("curve.csv", csv_text)
        doc.write(out / "report.html")
    """

    def __init__(self, title: str, *, subtitle: str | None = None) -> None:
        self.title = title
        self.subtitle = subtitle
        self._intro: list[str] = []
        self._sections: list[_Section] = []
        self._ids: set[str] = set(_RESERVED_IDS)
        self._data: list[str] = []

    def section(self, title: str, *, anchor: str | None = None) -> None:
        """Start a new ``<section>`` headed ``<h2>title</h2>`` and list it in the table of contents.

        ``anchor`` (the section's id) is derived from the title when not given, numbered to stay unique.
        Raises ValueError for a given anchor that is not ``[A-Za-z][A-Za-z0-9_-]*``, starts with ``data-``,
        or is already used.
        """
        if anchor is None:
            anchor = self._unique_id(_slug(title))
        elif not _SAFE_ID.fullmatch(anchor) or anchor.startswith("data-") or anchor in self._ids:
            raise ValueError(f"section anchor {anchor!r} is not a safe, unused id ([A-Za-z][A-Za-z0-9_-]*, "
                             f"not data-..., not {sorted(_RESERVED_IDS)})")
        self._ids.add(anchor)
        self._sections.append(_Section(anchor, title))

    def subsection(self, title: str) -> None:
        """An ``<h3>`` heading inside the current section."""
        self._add(f"<h3>{_esc(title)}</h3>")

    def paragraph(self, text: str) -> None:
        """A paragraph of plain text; line breaks in ``text`` are kept."""
        self._add(f"<p>{_esc(text)}</p>")

    def notice(self, text: str, *, kind: str = "warning") -> None:
        """A coloured box, e.g. for a missing or corrupt file; ``kind`` is "warning", "error" or "info"."""
        if kind not in NOTICE_KINDS:
            raise ValueError(f"notice kind must be one of {', '.join(NOTICE_KINDS)}, not {kind!r}")
        self._add(f'<div class="notice notice-{kind}" role="note"><strong>{kind.capitalize()}:</strong> '
                  f"{_esc(text)}</div>")

    def figure(self, figure_or_png: Figure | bytes, *, caption: str | None = None, alt: str | None = None) -> None:
        """An image: a matplotlib Figure (saved as PNG at dpi 110, tight bounding box) or PNG bytes.

        A Figure managed by pyplot is closed afterwards (pyplot is not imported for this). ``alt`` defaults to
        the caption, else "figure". Raises ValueError for bytes that do not start with the PNG signature.
        """
        png = _png_bytes(figure_or_png)
        alt_text = alt if alt is not None else caption if caption is not None else "figure"
        img = f'<img src="{_data_uri("image/png", png)}" alt="{_esc(alt_text)}"{_png_size_attrs(png)}>'
        label = f"<figcaption>{_esc(caption)}</figcaption>" if caption is not None else ""
        self._add(f"<figure>{img}{label}</figure>")

    def table(
        self,
        header: Sequence[str],
        rows: Sequence[Sequence[object]],
        *,
        caption: str | None = None,
        number_format: str = "{:.4f}",
    ) -> None:
        """A table: floats through ``number_format``, None and NaN as "–", integers as integers, anything else
        ``str()``. Numeric cells are right-aligned, and so are the header and missing cells of a numeric column.

        Raises ValueError when a row's length differs from the header's.
        """
        cells = []
        for i, row in enumerate(rows):
            if len(row) != len(header):
                raise ValueError(f"table row {i} has {len(row)} cells, the header {len(header)}")
            cells.append([_format_cell(value, number_format) for value in row])
        numeric = [_numeric_column([row[j][1] for row in cells]) for j in range(len(header))]
        head = "".join(f"<th{_num_class(numeric[j])}>{_esc(name)}</th>" for j, name in enumerate(header))
        body = "".join(_table_row(row, numeric) for row in cells)
        title = f"<caption>{_esc(caption)}</caption>" if caption is not None else ""
        self._add(f'<div class="table-wrap"><table>{title}\n<thead><tr>{head}</tr></thead>\n'
                  f"<tbody>\n{body}</tbody></table></div>")

    def download(self, filename: str, content: bytes | str, *, mime: str = "text/csv",
                 label: str | None = None) -> None:
        """A link that saves ``content`` (str is encoded as UTF-8) as ``filename``, embedded as a data: URI.

        ``label`` defaults to the file name; the size is shown next to it. Raises ValueError for a ``mime`` that
        is not ``type/subtype`` with optional ``;key=value`` parameters.
        """
        if not _MIME.fullmatch(mime):
            raise ValueError(f"not a MIME type: {mime!r}")
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        text = label if label is not None else filename
        self._add(f'<p class="download"><a download="{_esc(filename)}" href="{_data_uri(mime, data)}">'
                  f'{_esc(text)}</a> <span class="size">({_size(len(data))})</span></p>')

    def data(self, name: str, payload: object) -> None:
        """Embed ``payload`` as JSON in ``<script type="application/json" id="data-NAME">``.

        The element's text parses back with ``JSON.parse`` / :func:`json.loads`; non-finite floats become null.
        Raises ValueError for a name that is not ``[A-Za-z0-9_-]+`` or is already used.
        """
        element_id = f"data-{name}"
        if not _SAFE_NAME.fullmatch(name) or element_id in self._ids:
            raise ValueError(f"data block name {name!r} is not [A-Za-z0-9_-]+ or is already used")
        self._ids.add(element_id)
        self._data.append(f'<script type="application/json" id="{element_id}">{_script_json(payload)}</script>')

    @contextlib.contextmanager
    def all_or_nothing(self) -> Iterator[None]:
        """Keep what the ``with`` block adds only when it ends without an exception; otherwise the page is as it
        was before the block (sections, anchors, content and data blocks), and the exception goes on.

        Example: an item that fails half-way leaves no heading without its figure::

            try:
                with doc.all_or_nothing():
                    doc.subsection("Curve")
                    doc.figure(plot())  # raises
            except ValueError as err:
                doc.notice(f"left out: {err}", kind="error")
        """
        sections, intro, data, ids = len(self._sections), len(self._intro), len(self._data), set(self._ids)
        parts = len(self._sections[-1].parts) if self._sections else 0
        try:
            yield
        except BaseException:
            del self._sections[sections:], self._intro[intro:], self._data[data:]
            if self._sections:
                del self._sections[-1].parts[parts:]
            self._ids = ids
            raise

    def render(self) -> str:
        """The whole page as a string."""
        head = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
                f'<meta http-equiv="Content-Security-Policy" content="{_CONTENT_SECURITY_POLICY}">\n'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
                f'<meta name="generator" content="layermod {_esc(__version__)}">\n'
                f"<title>{_esc(self.title)}</title>\n<style>{_STYLE}</style>\n</head>\n")
        header = f"<header>\n<h1>{_esc(self.title)}</h1>\n"
        if self.subtitle is not None:
            header += f'<p class="subtitle">{_esc(self.subtitle)}</p>\n'
        intro = "".join(part + "\n" for part in self._intro)
        sections = "".join(_render_section(section) for section in self._sections)
        footer = f"<footer>Generated by layermod {_esc(__version__)}</footer>\n"
        body = (f'<body data-render-check="pending">\n<div class="page">\n{header}</header>\n'
                f"<main>\n{intro}{self._toc()}{sections}</main>\n{footer}</div>\n" + "".join(d + "\n" for d in self._data)
                + f"<script>{_CHECK_SCRIPT}</script>\n</body>\n</html>\n")
        return head + body

    def write(self, path: str | os.PathLike) -> Path:
        """Write the page to ``path`` as UTF-8, atomically (the parent directory must exist); returns the path."""
        target = Path(path)
        with atomic_path(target) as tmp:
            tmp.write_bytes(self.render().encode("utf-8"))
        return target

    def _add(self, fragment: str) -> None:
        (self._sections[-1].parts if self._sections else self._intro).append(fragment)

    def _unique_id(self, base: str) -> str:
        candidate, n = base, 1
        while candidate in self._ids:
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def _toc(self) -> str:
        if not self._sections:
            return ""
        items = "".join(f'<li><a href="#{s.anchor}">{_esc(s.title)}</a></li>\n' for s in self._sections)
        return f'<nav id="contents">\n<h2>Contents</h2>\n<ol>\n{items}</ol>\n</nav>\n'


def _esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def _slug(title: str) -> str:
    """ASCII letters, digits and hyphens from ``title``, starting with a letter and outside ``data-``."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii").lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_title).strip("-")
    if not slug or not slug[0].isalpha() or slug.startswith("data-") or slug in _RESERVED_IDS:
        slug = f"section-{slug}".rstrip("-")
    return slug


def _render_section(section: _Section) -> str:
    parts = "".join(part + "\n" for part in section.parts)
    return f'<section id="{section.anchor}">\n<h2>{_esc(section.title)}</h2>\n{parts}</section>\n'


def _png_bytes(figure_or_png: Figure | bytes) -> bytes:
    if isinstance(figure_or_png, (bytes, bytearray, memoryview)):
        png = bytes(figure_or_png)
        if not png.startswith(PNG_SIGNATURE):
            raise ValueError("figure(): the bytes are not a PNG image (no PNG signature)")
        return png
    buffer = io.BytesIO()
    figure_or_png.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:  # closes a pyplot-managed figure; a no-op for a plain Figure
        pyplot.close(figure_or_png)
    return buffer.getvalue()


def _png_size_attrs(png: bytes) -> str:
    """``width``/``height`` attributes from the PNG header (so the layout does not jump), or "" if unreadable."""
    if len(png) < 24 or png[12:16] != b"IHDR":
        return ""
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    return f' width="{width}" height="{height}"'


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _format_cell(value: object, number_format: str) -> tuple[str, str]:
    """(text, kind) of one table cell; kind is "num", "missing" (None, NaN) or "text"."""
    if value is None:
        return MISSING, "missing"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value), "text"
    if isinstance(value, numbers.Integral):
        return str(int(value)), "num"
    number = float(value)
    return (MISSING, "missing") if math.isnan(number) else (number_format.format(number), "num")


def _numeric_column(kinds: list[str]) -> bool:
    """A column of numbers, some perhaps missing: its header and missing cells are right-aligned too."""
    return "num" in kinds and "text" not in kinds


def _table_row(cells: list[tuple[str, str]], numeric_columns: list[bool]) -> str:
    tds = (f"<td{_num_class(kind == 'num' or (kind == 'missing' and numeric))}>{_esc(text)}</td>"
           for (text, kind), numeric in zip(cells, numeric_columns))
    return "<tr>" + "".join(tds) + "</tr>\n"


def _num_class(numeric: bool) -> str:
    return ' class="num"' if numeric else ""


def _size(n_bytes: int) -> str:
    if n_bytes < 1000:
        return f"{n_bytes} B"
    if n_bytes < 1_000_000:
        return f"{n_bytes / 1000:.1f} kB"
    return f"{n_bytes / 1_000_000:.1f} MB"


def _script_json(payload: object) -> str:
    text = json.dumps(_plain_json(payload), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.translate(_JSON_ESCAPES)


def _plain_json(value: object) -> object:
    """``value`` with non-finite floats as None and numpy arrays/scalars as lists/numbers, for :func:`json.dumps`."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _plain_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(item) for item in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _plain_json(value.tolist())
    return value
