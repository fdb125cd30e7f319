from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from browser import ARTIFACTS, render, require_chromium
from matplotlib.figure import Figure

from layermod.report.html import PNG_SIGNATURE, HtmlDocument

NASTY = "<script>alert(1)</script> \"double\" & 'single' <!-- -->"


class Page(HTMLParser):
    """Elements of a rendered page: scripts (attributes, text), attributes of every tag, text per tag."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[tuple[dict, str]] = []
        self.tags: list[tuple[str, dict]] = []
        self.text: dict[str, list[str]] = {}
        self._open: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self.scripts.append((dict(attrs), ""))
        if tag not in {"meta", "img", "br"}:
            self._open.append(tag)

    def handle_endtag(self, tag):
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data):
        if self._open and self._open[-1] == "script":
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)
        elif self._open:
            self.text.setdefault(self._open[-1], []).append(data)

    def attrs(self, tag: str) -> list[dict]:
        return [attrs for name, attrs in self.tags if name == tag]

    def joined(self, tag: str) -> str:
        return "".join(self.text.get(tag, []))

    def data_block(self, name: str) -> str:
        (text,) = [text for attrs, text in self.scripts if attrs.get("id") == f"data-{name}"]
        return text


def plot_figure(seed: int = 0) -> Figure:
    """A small matplotlib figure made without pyplot."""
    rng = np.random.default_rng(seed)
    figure = Figure(figsize=(4, 2.5))
    ax = figure.add_subplot()
    ax.plot(np.arange(10), rng.random(10), marker="o")
    ax.set_title(f"figure {seed}")
    return figure


def png_bytes(seed: int = 1) -> bytes:
    buffer = io.BytesIO()
    plot_figure(seed).savefig(buffer, format="png", dpi=50)
    return buffer.getvalue()


def decode_data_uri(uri: str, mime: str) -> bytes:
    prefix = f"data:{mime};base64,"
    assert uri.startswith(prefix)
    return base64.b64decode(uri[len(prefix):], validate=True)


def body_attrs(dom: str) -> dict:
    return Page(dom).attrs("body")[0]


def full_document() -> HtmlDocument:
    doc = HtmlDocument("Smoke test", subtitle="two figures, a table, data and a download")
    doc.notice("one run had no curve.json", kind="info")
    doc.section("Figures")
    doc.figure(plot_figure(0), caption="a matplotlib Figure")
    doc.figure(png_bytes(1), caption="PNG bytes")
    doc.section("Numbers")
    doc.table(["layer", "Q", "n"], [["conv1", 0.25, 3], ["fc", float("nan"), None]], caption="per layer")
    doc.data("curve", {"layers": ["conv1", "fc"], "q": [0.25, float("nan")], "note": "</script><!--"})
    doc.download("curve.csv", "layer,q\nconv1,0.25\nfc,nan\n")
    return doc


def test_text_arguments_are_escaped_everywhere_and_round_trip():
    doc = HtmlDocument(NASTY, subtitle=NASTY)
    doc.paragraph(NASTY)
    doc.section(NASTY)
    doc.subsection(NASTY)
    doc.notice(NASTY, kind="error")
    doc.figure(png_bytes(), caption=NASTY)
    doc.figure(png_bytes(), caption="plain", alt=NASTY)
    doc.table([NASTY, "n"], [[NASTY, 1]], caption=NASTY)
    doc.download(NASTY, NASTY, mime="text/plain", label=NASTY)
    doc.data("nasty", NASTY)
    text = doc.render()
    page = Page(text)

    assert "<script>alert" not in text
    scripts = [attrs for attrs, _ in page.scripts]
    assert scripts == [{"type": "application/json", "id": "data-nasty"}, {}]  # the data block and the check
    assert page.joined("title") == NASTY
    for tag in ("h1", "h2", "h3", "p", "div", "figcaption", "caption", "th", "td", "a"):
        assert NASTY in page.joined(tag), tag
    assert [a["alt"] for a in page.attrs("img")] == [NASTY, NASTY]
    (link,) = [a for a in page.attrs("a") if "download" in a]
    assert link["download"] == NASTY
    assert decode_data_uri(link["href"], "text/plain").decode("utf-8") == NASTY


def test_data_blocks_survive_script_and_comment_breakers():
    payload = {
        "end": "</script><script>alert(1)</script>",
        "comment": "<!-- not a comment -->",
        "amp": "a & b > c",
        "unicode": "Q ≈ 0.5, naïve",
        "numbers": [1, 2.5, None, True],
        "nested": {"list": [["</SCRIPT>"]]},
    }
    doc = HtmlDocument("data")
    doc.data("payload", payload)
    doc.data("plain-list_2", [1, 2, 3])
    text = doc.render()
    block = Page(text).data_block("payload")

    assert "<" not in block and ">" not in block and "&" not in block
    assert json.loads(block) == payload
    assert json.loads(Page(text).data_block("plain-list_2")) == [1, 2, 3]


def test_data_turns_nan_into_null_and_numpy_into_lists():
    doc = HtmlDocument("data")
    doc.data("values", {"q": np.array([0.5, np.nan, np.inf]), "n": np.int64(3), "x": float("-inf")})
    assert json.loads(Page(doc.render()).data_block("values")) == {"q": [0.5, None, None], "n": 3, "x": None}


@pytest.mark.parametrize("name", ["", "a b", "x</script>", "über"])
def test_data_rejects_unsafe_names(name):
    with pytest.raises(ValueError, match="data block name"):
        HtmlDocument("t").data(name, 1)


def test_data_rejects_a_repeated_name():
    doc = HtmlDocument("t")
    doc.data("curve", 1)
    with pytest.raises(ValueError, match="already used"):
        doc.data("curve", 2)


def test_figures_and_png_bytes_embed_as_png_data_uris():
    raw = png_bytes()
    doc = HtmlDocument("figures")
    doc.figure(plot_figure(), caption="from a Figure")
    doc.figure(raw)
    images = Page(doc.render()).attrs("img")

    decoded = [decode_data_uri(img["src"], "image/png") for img in images]
    assert all(png.startswith(PNG_SIGNATURE) for png in decoded)
    assert decoded[1] == raw
    assert [img["alt"] for img in images] == ["from a Figure", "figure"]
    assert int(images[1]["width"]) == int.from_bytes(raw[16:20], "big")


def test_figure_closes_a_pyplot_figure():
    import matplotlib.pyplot as plt

    figure = plt.figure()
    number = figure.number
    HtmlDocument("t").figure(figure)
    assert not plt.fignum_exists(number)


def test_figure_rejects_bytes_that_are_not_png():
    with pytest.raises(ValueError, match="not a PNG"):
        HtmlDocument("t").figure(b"GIF89a....")


def test_download_decodes_back_to_the_content():
    binary = bytes(range(256))
    doc = HtmlDocument("downloads")
    doc.download("curve.csv", "layer,q\nconv1,0.5\n")
    doc.download("raw.bin", binary, mime="application/octet-stream", label="raw bytes")
    doc.download("curve.json", '{"q": "ü"}', mime="application/json")
    links = Page(doc.render()).attrs("a")

    assert [link["download"] for link in links] == ["curve.csv", "raw.bin", "curve.json"]
    assert decode_data_uri(links[0]["href"], "text/csv") == b"layer,q\nconv1,0.5\n"
    assert decode_data_uri(links[1]["href"], "application/octet-stream") == binary
    assert json.loads(decode_data_uri(links[2]["href"], "application/json")) == {"q": "ü"}


def test_download_rejects_a_malformed_mime_type():
    with pytest.raises(ValueError, match="MIME"):
        HtmlDocument("t").download("x.csv", "a", mime="text/csv,<b>")


def test_table_formats_numbers_and_marks_missing_values():
    doc = HtmlDocument("table")
    doc.table(["name", "float", "int", "nan", "none", "mixed"],
              [["a", 0.123456, 3, float("nan"), None, True],
               ["b", np.float32(2.5), np.int64(-7), np.nan, None, "text"]])
    doc.table(["x"], [[1234.5678]], number_format="{:.1e}")
    page = Page(doc.render())
    cells = page.text["td"]

    assert cells == ["a", "0.1235", "3", "–", "–", "True", "b", "2.5000", "-7", "–", "–", "text", "1.2e+03"]
    classes = [attrs.get("class") for attrs in page.attrs("td")[:6]]
    assert classes == [None, "num", "num", None, None, None]  # nan/None columns hold no number: left
    header = [attrs.get("class") for attrs in page.attrs("th")[:6]]
    assert header == [None, "num", "num", None, None, None]


def test_missing_cells_in_a_numeric_column_are_right_aligned():
    doc = HtmlDocument("table")
    doc.table(["q"], [[0.5], [None], [math.nan]])
    assert [attrs.get("class") for attrs in Page(doc.render()).attrs("td")] == ["num", "num", "num"]


def test_table_rejects_ragged_rows():
    with pytest.raises(ValueError, match="row 1 has 1 cells"):
        HtmlDocument("t").table(["a", "b"], [[1, 2], [3]])


def test_section_anchors_are_safe_unique_and_listed_in_the_contents():
    doc = HtmlDocument("toc")
    titles = ["Results", "Results", "results!", "Results 2", "", "3 layers", "Data curve", "Contents", "Über <x>"]
    for title in titles:
        doc.section(title)
    doc.section("Explicit", anchor="my_anchor")
    doc.data("curve", [1])
    page = Page(doc.render())

    ids = [attrs["id"] for _, attrs in page.tags if "id" in attrs]
    assert len(ids) == len(set(ids))
    anchors = [attrs["id"] for attrs in page.attrs("section")]
    assert anchors == ["results", "results-2", "results-3", "results-2-2", "section", "section-3-layers",
                       "section-data-curve", "section-contents", "uber-x", "my_anchor"]
    toc = [attrs["href"] for attrs in page.attrs("a")]
    assert toc == [f"#{anchor}" for anchor in anchors]


@pytest.mark.parametrize("anchor", ["results", "contents", "data-x", "has space", "1st", "x\"><script>"])
def test_section_rejects_unsafe_or_taken_anchors(anchor):
    doc = HtmlDocument("t")
    doc.section("Results")
    with pytest.raises(ValueError, match="section anchor"):
        doc.section("Another", anchor=anchor)


def test_notice_kinds():
    doc = HtmlDocument("t")
    for kind in ("warning", "error", "info"):
        doc.notice(f"a {kind}", kind=kind)
    classes = [attrs["class"] for attrs in Page(doc.render()).attrs("div") if "notice" in attrs.get("class", "")]
    assert classes == ["notice notice-warning", "notice notice-error", "notice notice-info"]
    with pytest.raises(ValueError, match="notice kind"):
        doc.notice("x", kind="danger")


def test_all_or_nothing_keeps_a_block_only_when_it_succeeds():
    doc = HtmlDocument("t")
    doc.section("Run a")
    doc.paragraph("kept before")
    before = doc.render()
    with pytest.raises(RuntimeError), doc.all_or_nothing():
        doc.subsection("half")
        doc.section("Run b")
        doc.data("half", [1])
        raise RuntimeError("drawing failed")
    assert doc.render() == before
    doc.section("Run b")  # its anchor and data name are free again
    doc.data("half", [1])
    with doc.all_or_nothing():
        doc.paragraph("kept after")
    assert "<p>kept after</p>" in doc.render() and 'id="run-b"' in doc.render()


def test_page_has_the_required_head_and_footer():
    text = full_document().render()
    page = Page(text)
    metas = page.attrs("meta")

    assert text.startswith("<!DOCTYPE html>")
    assert {"charset": "utf-8"} in metas
    assert any(meta.get("name") == "viewport" for meta in metas)
    assert "Generated by layermod " in page.joined("footer")
    assert page.attrs("body") == [{"data-render-check": "pending"}]


def test_content_security_policy_pins_the_page_own_style_and_script():
    page = Page(full_document().render())
    (csp,) = [m["content"] for m in page.attrs("meta") if m.get("http-equiv") == "Content-Security-Policy"]
    (check_script,) = [text for attrs, text in page.scripts if not attrs]

    def pinned(source: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"

    assert "default-src 'none'" in csp and "img-src data:;" in csp and "unsafe-inline" not in csp
    assert f"script-src {pinned(check_script)};" in csp
    assert f"style-src {pinned(page.joined('style'))};" in csp


def test_page_references_nothing_outside_itself():
    text = full_document().render()
    links = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", text, flags=re.IGNORECASE)

    assert len(links) == 5  # two images, a download, two contents entries
    for link in links:
        assert re.fullmatch(r"data:[\w.+-]+/[\w.+-]+;base64,[A-Za-z0-9+/=]*|#[\w-]+", link), link[:80]
    assert "http:" not in text and "https:" not in text and "url(" not in text and "@import" not in text


def test_render_is_deterministic():
    assert full_document().render() == full_document().render()
    doc = full_document()
    assert doc.render() == doc.render()


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    doc = full_document()
    path = doc.write(tmp_path / "report.html")

    assert path == tmp_path / "report.html"
    assert path.read_bytes() == doc.render().encode("utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_write_failing_midway_leaves_no_file(tmp_path, monkeypatch):
    def half_then_fail(self, data):
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        full_document().write(tmp_path / "report.html")
    assert list(tmp_path.iterdir()) == []


def test_write_failing_midway_keeps_an_existing_report(tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    target.write_text("old report")
    def fail(self, data):
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", fail)
    with pytest.raises(OSError):
        full_document().write(target)
    assert target.read_text() == "old report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_page_renders_in_a_real_browser(tmp_path):
    require_chromium()
    path = full_document().write(tmp_path / "report.html")
    screenshot = ARTIFACTS / "html-smoke.png"
    screenshot.unlink(missing_ok=True)
    rendered = render(path, screenshot=screenshot)

    attrs = body_attrs(rendered.dom)
    assert attrs["data-render-check"] == "ok"
    assert attrs["data-images"] == "2/2"
    assert rendered.errors == []
    assert rendered.screenshot == screenshot
    assert screenshot.stat().st_size > 1000 and screenshot.read_bytes().startswith(PNG_SIGNATURE)


def test_browser_check_reports_a_broken_image(tmp_path):
    require_chromium()
    corrupt = png_bytes()[:33] + b"\x00garbage, not a PNG stream" * 4
    doc = HtmlDocument("broken")
    doc.figure(png_bytes(), caption="fine")
    doc.figure(corrupt, caption="corrupt")
    rendered = render(doc.write(tmp_path / "broken.html"))

    attrs = body_attrs(rendered.dom)
    assert attrs["data-render-check"] == "failed: image 2 did not decode"
    assert attrs["data-images"] == "1/2"


def test_browser_helper_reports_script_errors_and_refused_loads(tmp_path):
    require_chromium()
    path = tmp_path / "bad.html"
    path.write_text('<!DOCTYPE html><meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
                    'script-src \'unsafe-inline\'"><img src="https://example.invalid/x.png">'
                    '<script>console.log("fine"); notDefined();</script>')
    rendered = render(path)

    assert any('"fine"' in line for line in rendered.console)
    assert any("Uncaught ReferenceError" in line for line in rendered.errors)
    assert any("Content Security Policy" in line for line in rendered.errors)
    assert not any('"fine"' in line for line in rendered.errors)
