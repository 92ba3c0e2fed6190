"""Regression tests for library bugs the reliability suites found (one test each, smallest repro)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from journalstore import ImageStore, StoreError, StoreWarning
from journalstore import compaction as compaction_module
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


def test_compact_from_another_thread_while_a_background_compaction_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the concurrency suite (threads): compact() in one thread, while a write in
    another thread was starting an automatic compaction, joined the compactor thread between
    its creation and its start(): RuntimeError("cannot join thread before it is started")."""
    starting = threading.Event()

    class SlowStart(threading.Thread):
        def start(self) -> None:
            if self.name == "journalstore-compaction":
                starting.set()
                time.sleep(0.3)  # widen the window between creating and starting the thread
            super().start()

    monkeypatch.setattr(compaction_module.threading, "Thread", SlowStart)
    store = ImageStore(tmp_path / "s", fsync="never", compact_every=1)
    errors: list[BaseException] = []

    def compact_when_starting() -> None:
        try:
            assert starting.wait(30)
            store.compact()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=compact_when_starting, daemon=True)
    thread.start()
    store.create(names=["a"])  # starts an automatic compaction
    thread.join(30)
    store.close()
    assert errors == []
    with ImageStore(tmp_path / "s", read_only=True) as fresh:
        assert fresh.verify().ok


def test_compact_inside_a_batch_during_a_background_compaction_raises_instead_of_hanging(tmp_path: Path) -> None:
    """Found reading the code the concurrency suite exercises: compact() inside `with
    store.batch()` first waited for the background compaction, which waits for the instance's
    mutex the batch holds: a deadlock. It must refuse at once, as garbage_collect() does."""
    held = _HeldSnapshotDisk()
    store = ImageStore(tmp_path / "s", fsync="never", compact_every=1, disk=held)
    store.create(names=["a"])  # starts a background compaction
    assert held.entered.wait(30)
    outcome: list[BaseException | None] = []

    def compact_in_batch() -> None:
        try:
            with store.batch():
                store.set_metadata("a", "m")
                held.release.set()  # the compactor now wants the mutex this batch holds
                time.sleep(0.2)
                store.compact()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=compact_in_batch, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "compact() inside a batch hangs"
    assert len(outcome) == 1 and isinstance(outcome[0], StoreError), outcome
    assert "batch" in str(outcome[0])
    store.close()
    with ImageStore(tmp_path / "s", read_only=True) as fresh:
        assert fresh.metadata("a") == ""  # the batch was undone


def test_temporary_files_of_killed_writers_are_removed_by_the_next_writer(tmp_path: Path) -> None:
    """Found by the kill -9 suite: a writer killed while writing a snapshot (or a segment) left
    its temporary file in journal/ for ever; long-lived stores collected one per such crash.
    The next writer's repair removes those of processes that no longer exist, and keeps those a
    live process (a background compaction, which writes without the lock) may be writing."""
    root = tmp_path / "s"
    with ImageStore(root, fsync="never") as store:
        store.create(names=["a"])
    code = "from journalstore import ImageStore\ns = ImageStore(ROOT)\ns.create(names=['b'])\ns.compact()"
    env = {**os.environ, "JOURNALSTORE_FAILPOINT": "snapshot-before-rename"}
    proc = subprocess.run([sys.executable, "-c", f"ROOT = {str(root)!r}\n" + code], env=env, check=False)
    assert proc.returncode == -9
    journal = root / "journal"
    dead = sorted(p.name for p in journal.iterdir() if ".tmp-" in p.name)
    assert dead, "the killed compaction left no temporary file"
    (journal / "segment-00000009.tmp").write_bytes(b"left by a writer killed creating a segment")
    alive = journal / f"snapshot-00000009.json.tmp-{os.getpid()}-1"
    alive.write_bytes(b"being written by a live process")
    with ImageStore(root, fsync="never") as store:
        store.create(names=["c"])  # the first write repairs
    left = sorted(p.name for p in journal.iterdir() if ".tmp" in p.name)
    assert left == [alive.name]


class _Abort(Exception):
    pass


def test_an_aborted_batch_that_deletes_and_recreates_an_image_changes_nothing(tmp_path: Path) -> None:
    """Found by the kill -9 suite (a lost clear_flag and a phantom set_flag after a compaction):
    a batch that deleted an image and created it again (same ID) logged a reorder in its undo
    log, whose rollback replaced the state's dict of records by a new one; the undo entries of
    the batch's other changes, logged earlier, then restored records into the discarded dict.
    The aborted batch's set_flag stayed in the live state, and the next compaction wrote it to
    images.json: the store then held a change nobody had committed."""
    path = tmp_path / "s"
    store = ImageStore(path, fsync="never")
    store.create("a" * 64, ["x"])
    store.create("b" * 64, ["y"], metadata="m")
    with contextlib.suppress(_Abort), store.batch():
        store.delete("x")
        store.set_flag("y", "f", 1)
        store.set_metadata("y", "changed")
        store.create("a" * 64, ["x2"])  # the same ID again: it now goes last
        raise _Abort
    live = [image.to_json() for image in store.images()]
    with ImageStore(path, read_only=True) as fresh:
        assert live == [image.to_json() for image in fresh.images()]
    assert store.get("y").flags == {} and store.metadata("y") == "m"
    assert [image.id[0] for image in store.images()] == ["a", "b"]
    store.compact()
    store.close()
    with ImageStore(path, read_only=True) as fresh:
        assert live == [image.to_json() for image in fresh.images()]


class _HoldAfterRename(Disk):
    """A writer's disk that stops right after a big-data file is renamed into place: its prepare
    record is in the journal, its commit is not."""

    def __init__(self) -> None:
        self.armed = False
        self.renamed = threading.Event()
        self.release = threading.Event()

    def rename(self, src: str, dst: str) -> None:
        super().rename(src, dst)
        if self.armed and src.endswith(".tmp") and os.sep + "staging" + os.sep in src:
            self.renamed.set()
            assert self.release.wait(30)


class _HookOnSize(Disk):
    """A reader's disk that runs `hook` once, inside its next size() call (after taking the size)."""

    def __init__(self) -> None:
        self.hook: Callable[[], None] | None = None

    def size(self, fd: int) -> int:
        value = super().size(fd)
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        return value


def test_a_lock_free_big_data_read_never_returns_uncommitted_bytes(tmp_path: Path) -> None:
    """Found by the concurrency suite (a reader process read 7,595 bytes of an item its record
    said had 176): big_data() caught up with the journal, then took the journal's size as the
    start of its seqlock check. A writer that appended its prepare record and renamed the new
    file into place between the two went unseen: the read returned the uncommitted bytes, and
    the size check passed because the commit was not appended yet."""
    path = tmp_path / "s"
    held = _HoldAfterRename()
    writer = ImageStore(path, fsync="never", disk=held)
    writer.create("a" * 64, ["a"], big_data=[("config", b"old bytes")])
    hooked = _HookOnSize()
    reader = ImageStore(path, read_only=True, disk=hooked)
    assert reader.big_data("a", "config") == b"old bytes"
    thread = threading.Thread(target=writer.set_big_data, args=("a", "config", b"new, uncommitted bytes"))

    def writer_replaces_the_file() -> None:  # runs between the reader's catch-up and its read
        held.armed = True
        thread.start()
        assert held.renamed.wait(30)

    hooked.hook = writer_replaces_the_file
    try:
        assert reader.big_data("a", "config") == b"old bytes"
    finally:
        held.release.set()
        thread.join(30)
    assert reader.big_data("a", "config") == b"new, uncommitted bytes"  # committed now
    reader.close()
    writer.close()
