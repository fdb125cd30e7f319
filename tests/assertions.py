"""Assertions shared by the test modules."""

from __future__ import annotations

import pytest


def assert_one_line(err: pytest.ExceptionInfo, *fragments: str) -> str:
    """The raised error's message: one line containing every fragment."""
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message
