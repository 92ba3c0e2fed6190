"""Regression tests for library bugs the reliability suites found (one test each, smallest repro)."""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

from journalstore import ImageStore, StoreWarning
from journalstore.fsio import Disk


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


class _HeldSnapshotDisk(Disk):
    """A disk that holds the writer of a snapshot's temporary file until `release` is set."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def write_file(self, path: str, data: bytes, *, sync: bool, mode: int = 0o600) -> None:
        super().write_file(path, data, sync=sync, mode=mode)
        if ".json.tmp-" in os.path.basename(path) and not self.release.is_set():
            self.entered.set()
            assert self.release.wait(30)


def test_a_late_background_compaction_does_not_overwrite_the_archive_of_another(tmp_path: Path) -> None:
    """Found by the concurrency suite: a background compaction writes its snapshot without the
    writers' lock, as journal/snapshot-(N+1).json. If another writer compacted segment N
    meanwhile (its segment N+1 names its own snapshot-(N+1).json), the late one renamed its
    different bytes over that archive: the segment's snapshot was then damaged, a cold open
    rebuilt the state from an older segment, verify() reported it."""
    path = tmp_path / "s"
    held = _HeldSnapshotDisk()
    slow = ImageStore(path, fsync="never", compact_every=2, disk=held)
    other = ImageStore(path, fsync="never", compact_every=None)
    slow.create("a" * 64, names=["a"])
    slow.create("b" * 64, names=["b"])  # starts a background compaction of segment 1 ...
    assert held.entered.wait(30)  # ... which is now writing its snapshot
    other.create("c" * 64, names=["c"])
    assert other.compact()  # the other writer compacts segment 1 first: segment 2 starts
    held.release.set()
    slow.close()  # waits for the background compaction
    other.create("d" * 64, names=["d"])
    assert other.compact()  # segment 2 is closed: its snapshot must still be the one it names
    other.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)  # no "snapshot damaged, rebuilt" fallback
        with ImageStore(path, read_only=True) as fresh:
            assert [i.names for i in fresh.images()] == [("a",), ("b",), ("c",), ("d",)]
            report = fresh.verify()
    assert report.ok, report.problems
