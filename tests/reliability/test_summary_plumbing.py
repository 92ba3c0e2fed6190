"""The summary lines the reliability suites print are well formed."""

from __future__ import annotations

from .conftest import _format, scale


def test_summary_line_format() -> None:
    line = _format("kill-9", {"trials": 30, "lost": 0})
    assert line.endswith("trials 30, lost 0") and line.startswith("[kill-9]")
    assert scale(3, 1000) in (3, 1000)
