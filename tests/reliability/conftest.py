"""Shared machinery of the reliability suites: short or long mode, and one-line summaries.

`make test` runs the short versions; `make stress` (JOURNALSTORE_STRESS=1) the long ones. Each
suite reports one line of figures through the `summary` fixture; the lines are printed at the
end of the pytest run (so they show even when output is captured) and appended to
$JOURNALSTORE_SUMMARY_FILE when that is set.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

STRESS = os.environ.get("JOURNALSTORE_STRESS", "") not in ("", "0")

_LINES: list[str] = []


def scale(short: int, long: int) -> int:
    """How many trials, operations, ... to run: `short` in make test, `long` in make stress."""
    return long if STRESS else short


def _format(suite: str, figures: dict[str, Any]) -> str:
    parts = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in figures.items())
    return f"[{suite}] {'stress' if STRESS else 'short'}: {parts}"


@pytest.fixture
def summary() -> Callable[..., None]:
    """summary("kill-9", trials=30, acknowledged=812, lost=0) records one line of figures."""

    def record(suite: str, **figures: Any) -> None:
        line = _format(suite, figures)
        _LINES.append(line)
        path = os.environ.get("JOURNALSTORE_SUMMARY_FILE")
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _LINES:
        terminalreporter.section("reliability summaries")
        for line in _LINES:
            terminalreporter.write_line(line)
