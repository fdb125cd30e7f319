"""Open a page in headless Chromium, as a person would, and report what it ended up as.

Test helper (``from browser import render, require_chromium``). One Chromium run per :func:`render`, with
``--dump-dom`` (the DOM after the page's scripts ran on ``load``) and, when asked, ``--screenshot`` together.

Decisions, on purpose:

* **Errors by message, not level.** Chromium 156 logs every console message as ``INFO:CONSOLE`` whatever its
  level, so an error is a console line saying ``Uncaught ...``, one naming an ``...Error``, or a Content
  Security Policy refusal ("Refused to ..." / "violates the following Content Security Policy").
* **Own process group.** Chromium starts helper processes; on a time-out the whole group it leads is killed.
* **CI must run it.** Without Chromium a test is skipped locally but fails when ``CI`` is set.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["ARTIFACTS", "Rendered", "chromium", "render", "require_chromium"]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"  # screenshots kept from the browser checks
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_S = 60
_CONSOLE = re.compile(r":(?P<level>[A-Z]+):CONSOLE[^\]]*\] (?P<message>.*)")
_ERROR_WORD = re.compile(r"\b\w*Error\b")


@dataclass(frozen=True)
class Rendered:
    """What Chromium made of a page: the DOM after scripts, console lines, the error lines among them."""

    dom: str
    console: list[str]
    errors: list[str]
    screenshot: Path | None


def chromium() -> str | None:
    """Path of the first of chromium, chromium-browser, google-chrome on PATH, else None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def require_chromium() -> str:
    """The browser's path; skips the test when there is none, but fails it when ``CI`` is set."""
    path = chromium()
    if path is None:
        message = "chromium not installed (scripts/setup.sh test installs Debian's chromium as root)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the browser check")
        pytest.skip(message)
    return path


def render(html_path: str | os.PathLike, screenshot: Path | None = None, width: int = 1280,
           height: int = 4000) -> Rendered:
    """Load ``html_path`` in headless Chromium; the DOM after ``load``, console lines and errors, a screenshot.

    Raises AssertionError when there is no browser, it exits non-zero or it takes more than 60 s.
    """
    browser = chromium()
    assert browser is not None, "chromium not installed; call require_chromium() first"
    with tempfile.TemporaryDirectory(prefix="layermod-chromium-", ignore_cleanup_errors=True) as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                   f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
                   "--hide-scrollbars", f"--window-size={width},{height}", "--dump-dom"]
        if screenshot is not None:
            screenshot = Path(screenshot).absolute()
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            command.append(f"--screenshot={screenshot}")
        command.append(Path(html_path).absolute().as_uri())
        dom, stderr = _run(command)
    console = [line for line in stderr.splitlines() if _CONSOLE.search(line)]
    if screenshot is not None:
        assert screenshot.is_file(), f"chromium wrote no screenshot to {screenshot}"
    return Rendered(dom, console, [line for line in console if _is_error(line)], screenshot)


def _run(command: list[str]) -> tuple[str, str]:
    """stdout and stderr of ``command``; its process group is killed if it outlives the time-out."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise AssertionError(f"chromium did not finish within {TIMEOUT_S} s") from None
    assert process.returncode == 0, f"chromium exited with {process.returncode}:\n{stderr[-3000:]}"
    return stdout, stderr


def _is_error(line: str) -> bool:
    match = _CONSOLE.search(line)
    message = match["message"]
    return (match["level"] == "ERROR" or "Uncaught" in message or bool(_ERROR_WORD.search(message))
            or "Refused to" in message or "Content Security Policy" in message)
