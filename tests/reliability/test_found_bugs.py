"""Regression tests for library bugs the reliability suites found (one test each, smallest repro)."""

from __future__ import annotations

from pathlib import Path

from journalstore import ImageStore


def test_verify_accepts_a_store_compacted_before_its_first_record(tmp_path: Path) -> None:
    """Found by the kill -9 suite: a fresh store whose first operation is compact() has segment 2
    starting at record 0; verify() only compared snapshots after applying a record, so it
    reported "segment 2 starts after record 0, which replay never reached"."""
    with ImageStore(tmp_path / "s", fsync="never") as store:
        assert store.compact() is True
        report = store.verify()
        assert report.ok, report.problems
        assert report.snapshots == 1
        store.create(names=["a"])
        assert store.verify().ok
