"""Regression tests for the defects a close reading of the package found (issue 15).

Each test failed before its fix; the test's name says which defect it guards.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from journalstore import (
    ImageStore,
    ImageUnknown,
    JournalCorrupt,
    LockTimeout,
    StoreWarning,
    failpoints,
    record,
    reducer,
)
from journalstore import events as ev
from journalstore import journal as jn
from journalstore import snapshot as snap
from journalstore.audit import HistoryPruned
from journalstore.fsio import Disk
from journalstore.record import Image

from .helpers import tree_bytes


def test_follow_after_seq_crosses_rotations(tmp_path: Path) -> None:
    """15.1: follow(after_seq) starts in the segment holding after_seq + 1, not the newest."""
    with ImageStore(tmp_path / "s", fsync="never") as store:
        for i in range(3):
            store.create(names=[f"a{i}"])
        store.compact()
        store.create(names=["b"])
        store.compact()
        store.create(names=["c"])
        assert [e.seq for e in store.follow(after_seq=0).poll()] == [1, 2, 3, 4, 5]
        assert [e.seq for e in store.follow(after_seq=2).poll()] == [3, 4, 5]
        follower = store.follow(after_seq=4)
        assert [e.seq for e in follower.poll()] == [5]
        store.compact()
        store.create(names=["d"])
        assert [e.seq for e in follower.poll()] == [6]
        follower.close()


def test_follow_from_pruned_history_is_refused(tmp_path: Path) -> None:
    """15.1: following from a record that retention removed is an error, never a silent gap."""
    with ImageStore(tmp_path / "s", fsync="never") as store:
        for i in range(3):
            store.create(names=[f"a{i}"])
        store.compact()
        store.create(names=["b"])
        store.prune_journal(keep_segments=0)
        with pytest.raises(HistoryPruned) as info:
            store.follow(after_seq=1)
        assert info.value.first_seq == 4
        assert [e.seq for e in store.follow(after_seq=3).poll()] == [4]


class _RefusingRmtree(Disk):
    """A disk on which removing a directory tree fails (a file the user may not delete)."""

    refuse = True

    def rmtree(self, path: str) -> None:
        if self.refuse:
            raise PermissionError(13, "Permission denied", path)
        super().rmtree(path)


def test_durable_delete_succeeds_when_cleanup_fails(tmp_path: Path) -> None:
    """15.3: once the record is durable the call succeeds; leftovers are a warning, then cleaned."""
    disk = _RefusingRmtree()
    root = tmp_path / "s"
    with ImageStore(root, fsync="never", disk=disk) as store:
        image = store.create(names=["app:1"], big_data=[("manifest", b"{}")])
        with pytest.warns(StoreWarning, match="committed, but cleaning up"):
            store.delete("app:1")  # must not raise
        assert not store.exists("app:1")
        assert (root / image.id).is_dir()  # left over
        with pytest.raises(ImageUnknown):
            store.delete("app:1")  # a retry says what is true: the image is gone
        disk.refuse = False
        assert store.garbage_collect() == [image.id]
    with ImageStore(root, read_only=True) as reopened:
        assert not reopened.exists("app:1") and reopened.seq == 2


def test_interrupt_after_the_append_keeps_the_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """15.4: an interrupt between the append and keeping the state must not roll the record back."""
    root = tmp_path / "s"
    real_hit = failpoints.hit

    def interrupt(name: str) -> None:
        if name == "commit-after-append":
            raise KeyboardInterrupt
        real_hit(name)

    with ImageStore(root, fsync="never") as store:
        store.create(names=["a"])
        monkeypatch.setattr(failpoints, "hit", interrupt)
        with pytest.raises(KeyboardInterrupt):
            store.create(names=["b"])
        with pytest.raises(KeyboardInterrupt):
            store.set_big_data("a", "manifest", b"{}")
        monkeypatch.setattr(failpoints, "hit", real_hit)
        assert store.seq == 3 and store.exists("b") and store.big_data("a", "manifest") == b"{}"
        store.create(names=["c"])  # seq 4, not a second seq 3
        assert store.seq == 4
    with ImageStore(root, read_only=True) as reopened:
        assert reopened.seq == 4 and [i.names[0] for i in reopened.images()] == ["a", "b", "c"]
        assert reopened.verify().ok


def _hold_flock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_reads_do_not_wait_behind_a_writers_lock_wait(tmp_path: Path) -> None:
    """15.5: a get() on an instance whose other thread waits for the writers' lock answers at once."""
    root = tmp_path / "s"
    with ImageStore(root, fsync="never") as store:
        store.create(names=["a"])
        fd = _hold_flock(root / "images.lock")  # another process's writer, as far as flock can tell
        try:
            writer = threading.Thread(target=store.create, kwargs={"names": ["b"]}, daemon=True)
            writer.start()
            time.sleep(0.1)  # let the writer start waiting
            answers: list[object] = []
            reader = threading.Thread(target=lambda: answers.append(store.get("a").names), daemon=True)
            reader.start()
            reader.join(10)  # the lock is still held: the reader must not need it
            assert answers == [("a",)], "get() waited behind the writer's lock wait"
            assert writer.is_alive()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        writer.join(10)
        assert not writer.is_alive() and store.exists("b")


def test_a_lock_held_with_filelock_excludes_writers(tmp_path: Path) -> None:
    """filelock users share the writers' lock: a write waits for it (here: times out)."""
    import filelock

    root = tmp_path / "s"
    with ImageStore(root, fsync="never", lock_timeout=0.2) as store:
        with filelock.FileLock(str(root / "images.lock")), pytest.raises(LockTimeout):
            store.create(names=["a"])
        store.create(names=["a"])


class _TruncatingFileLock:
    """filelock 3.x's UnixFileLock as it opened the lock file: with O_TRUNC."""

    def __init__(self, path: str, timeout: float = -1, **_: object) -> None:
        self.path = path
        self.timeout = timeout
        self.fd = -1

    def acquire(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def test_waiting_for_the_lock_keeps_the_last_writer_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """15.6: the contended wait must not truncate images.lock, whatever filelock version is installed:
    its first 64 bytes are containers/storage's "last writer" bytes."""
    import types

    stub = types.ModuleType("filelock")
    stub.FileLock = _TruncatingFileLock  # type: ignore[attr-defined]
    stub.Timeout = TimeoutError  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "filelock", stub)
    root = tmp_path / "s"
    with ImageStore(root, fsync="never") as store:
        store.create(names=["a"])
        lock_file = root / "images.lock"
        last_writer = bytes(range(64))
        with open(lock_file, "r+b") as f:  # as Go's Touch() writes them: in place, no truncation
            f.write(last_writer)
        fd = _hold_flock(lock_file)
        writer = threading.Thread(target=store.create, kwargs={"names": ["b"]}, daemon=True)
        writer.start()
        time.sleep(0.2)  # the writer is waiting for the lock now
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        writer.join(10)
        assert store.exists("b")
        assert lock_file.read_bytes()[:64] == last_writer


def _append_record(root: Path, body: dict[str, object]) -> None:
    segment = sorted((root / "journal").glob("segment-*"))[-1]
    with open(segment, "ab") as f:
        f.write(jn.encode_frame(jn.pack(body)))


@pytest.mark.parametrize(
    ("image_id", "name"),
    [
        ("..", "victim.txt"),
        (".", "victim.txt"),
        ("journal", "segment-00000001"),
        ("a", "../../victim.txt"),
        ("x", ".."),
    ],
)
def test_recovery_never_touches_a_file_outside_the_store(tmp_path: Path, image_id: str, name: str) -> None:
    """15.2: a checksum-valid dangling prepare naming `..` must not make recovery unlink outside."""
    root = tmp_path / "store"
    with ImageStore(root, fsync="never") as store:
        store.create(names=["a"])
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    before = tree_bytes(root / "journal")
    _append_record(root, {"type": "prepare", "seq": 2, "files": [[image_id, name, False, False]]})
    with ImageStore(root, fsync="never") as store:
        store.create(names=["b"])  # the writer's repair undoes the prepare
        assert store.seq == 2
    assert victim.read_text() == "keep me"
    assert set(before) <= set(tree_bytes(root / "journal"))


def test_a_record_creating_an_image_outside_the_store_is_corrupt(tmp_path: Path) -> None:
    """15.2: an image ID from a record passes the checks caller input does (no `..`, no `journal`)."""
    root = tmp_path / "store"
    with ImageStore(root, fsync="never") as store:
        store.create(names=["a"])
    _append_record(root, {**_commit_body(2), "events": [ev.create("..", 0, 0, (), (), "", "", "", {})]})
    _append_record(root, {**_commit_body(3), "events": [ev.delete("..")]})
    with pytest.raises(JournalCorrupt, match="cannot name a directory"):
        ImageStore(root, read_only=True)
    assert (tmp_path / "store").is_dir() and (tmp_path / "store" / "journal").is_dir()


def _commit_body(seq: int) -> dict[str, object]:
    return {"type": "commit", "seq": seq, "time": 0, "pid": 1, "uid": 0, "actor": "", "events": []}


# The twin row layout of each TWIN_VERSION. Changing Image's fields changes TWIN_FIELDS: add the
# new layout here under a new version number, and bump snapshot.TWIN_VERSION to it.
TWIN_LAYOUTS = {
    4: (
        "id",
        "digest",
        "digests",
        "names",
        "names_history",
        "top_layer",
        "mapped_top_layers",
        "metadata",
        "big_data_names",
        "created_ns",
        "created_offset",
    ),
}


def test_twin_version_is_tied_to_the_image_fields() -> None:
    """15.7: a new Image field cannot silently shift the twin's rows: the version must change."""
    assert TWIN_LAYOUTS[snap.TWIN_VERSION] == snap.TWIN_FIELDS == Image._fields[: len(snap.TWIN_FIELDS)]


def test_field_positions_come_from_the_field_list() -> None:
    """15.7: every position the reducer and the twin use names the field it says."""
    for constant, field in [
        ("F_ID", "id"),
        ("F_DIGEST", "digest"),
        ("F_DIGESTS", "digests"),
        ("F_NAMES", "names"),
        ("F_HISTORY", "names_history"),
        ("F_MAPPED", "mapped_top_layers"),
        ("F_METADATA", "metadata"),
        ("F_BD_NAMES", "big_data_names"),
        ("F_CREATED_NS", "created_ns"),
        ("F_BD_SIZES", "big_data_sizes"),
        ("F_BD_DIGESTS", "big_data_digests"),
        ("F_FLAGS", "flags"),
        ("F_READ_ONLY", "read_only"),
    ]:
        assert Image._fields[getattr(record, constant)] == field, constant
    opcodes = [name for name in vars(reducer) if name.startswith("_OP_")]
    assert len(opcodes) == len(reducer._UNDO) and not any(
        name.startswith("_") and name[1:] in {"DIGEST", "NAMES", "FLAGS"} for name in vars(reducer)
    )


def test_positional_builders_match_keyword_construction() -> None:
    """15.7: the records the reducer and the JSON loader build field by position equal the ones
    built by field name, for every field."""
    state = reducer.State()
    image_id = "f" * 64
    manifest = "sha256:" + "1" * 64
    for event in [
        ev.create(image_id, 1_700_000_000_123_456_789, 3600, ("n1", "n2"), ("old",), "L1", "", "meta", {"f": 1}),
        ev.mapped_layer(ev.ADD_MAPPED_LAYER, image_id, "L2"),
        ev.set_big_data(image_id, "manifest", 7, manifest),
        ev.set_flag(image_id, "g", [1, 2]),
        ev.set_metadata(image_id, "meta2"),
    ]:
        reducer.apply(state, event)
    expected = Image(
        id=image_id,
        digest=manifest,
        digests=(manifest,),
        names=("n1", "n2"),
        names_history=("old",),
        top_layer="L1",
        mapped_top_layers=("L2",),
        metadata="meta2",
        big_data_names=("manifest",),
        created_ns=1_700_000_000_123_456_789,
        created_offset=3600,
        big_data_sizes={"manifest": 7},
        big_data_digests={"manifest": manifest},
        flags={"f": 1, "g": (1, 2)},
        read_only=False,
    )
    got = state.get(image_id)
    assert got is not None
    assert got._asdict() == expected._asdict()
    assert Image.from_json(got.to_json())._asdict() == expected._asdict()


@pytest.mark.parametrize(
    ("timeout", "error"),
    [("x", TypeError), (True, TypeError), ([1], TypeError), (-1, ValueError), (float("nan"), ValueError)],
)
def test_a_bad_lock_timeout_fails_in_the_constructor(tmp_path: Path, timeout: object, error: type) -> None:
    """Issue 12's small rejection: lock_timeout='x' used to be accepted until the first wait."""
    with pytest.raises(error, match="lock_timeout"):
        ImageStore(tmp_path / "s", lock_timeout=timeout)  # type: ignore[arg-type]
    assert not (tmp_path / "s").exists()


def test_at_none_is_refused(tmp_path: Path) -> None:
    """Issue 12's small rejection: at(None) returned the current state; at() takes a seq or a time."""
    with ImageStore(tmp_path / "s", fsync="never") as store:
        store.create(names=["a"])
        with pytest.raises(TypeError, match="sequence number or a datetime"):
            store.at(None)  # type: ignore[arg-type]
        assert store.at(1).exists("a")


def test_writers_exclude_containers_storage_record_locks(tmp_path: Path) -> None:
    """Issue 12.1: a process holding a POSIX record lock on images.lock, as containers/storage
    does while it reads or writes, keeps our writers out; and our writers keep it out."""
    root = tmp_path / "s"
    with ImageStore(root, fsync="never", lock_timeout=0.3) as store:
        store.create(names=["a"])
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import fcntl, sys, time\n"
                "f = open(sys.argv[1], 'r+b')\n"
                "fcntl.lockf(f, fcntl.LOCK_SH)\n"  # Go's read lock: F_SETLKW, F_RDLCK, whole file
                "print('locked', flush=True)\n"
                "sys.stdin.readline()\n",
                str(root / "images.lock"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            with pytest.raises(LockTimeout):
                store.create(names=["b"])
        finally:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(10)
        store.create(names=["b"])
        with store.batch():
            store.create(names=["c"])
            probe = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import fcntl, sys\n"
                    "f = open(sys.argv[1], 'r+b')\n"
                    "try:\n"
                    "    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
                    "except OSError:\n"
                    "    print('busy')\n"
                    "else:\n"
                    "    print('free')\n",
                    str(root / "images.lock"),
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            assert probe.stdout.strip() == "busy"


@pytest.mark.parametrize(
    "body",
    [
        {"type": "prepare", "seq": None, "events": None},
        {"type": "prepare", "seq": 2, "files": 5},
        {"type": "prepare", "seq": 2, "files": [["a" * 64], 7, None]},
    ],
)
def test_a_malformed_dangling_prepare_is_cut_not_a_crash(tmp_path: Path, body: dict[str, object]) -> None:
    """Found by the read-write decoder fuzzing (issue 15.2's suite): a checksum-valid prepare with a
    seq or files of the wrong type made the next writer's repair raise TypeError."""
    root = tmp_path / "store"
    with ImageStore(root, fsync="never") as store:
        store.create(names=["a"])
    _append_record(root, body)
    with ImageStore(root, fsync="never") as store:
        store.create(names=["b"])
        assert store.seq == 2


def test_a_dangling_prepare_in_a_store_without_its_staging_directory_is_undone(tmp_path: Path) -> None:
    """Found by the read-write decoder fuzzing under make stress: undoing a prepare fsynced
    journal/staging even where it did not exist (a store copied by a tool that drops empty
    directories), and the writer's repair failed with FileNotFoundError."""
    root = tmp_path / "store"
    with ImageStore(root, fsync="never") as store:
        image = store.create(names=["a"])
    (root / "journal" / "staging").rmdir()
    _append_record(root, {"type": "prepare", "seq": 2, "files": [[image.id, "manifest", False, False]]})
    with ImageStore(root, fsync="never") as store:
        store.create(names=["b"])
        assert store.seq == 2 and store.exists("a") and store.exists("b")
        assert not (root / "journal" / "staging").exists()
        store.set_big_data("a", "manifest", b"written without journal/staging")  # it is made again
        assert store.big_data("a", "manifest") == b"written without journal/staging"
