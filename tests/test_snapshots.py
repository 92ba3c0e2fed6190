"""Snapshots: Go-format fidelity, import, compaction, rotation, retention, foreign rewrites."""

from __future__ import annotations

import json
import os
import shutil
import struct
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from journalstore import DuplicateImageNames, ImageStore, StoreWarning
from journalstore import journal as jn
from journalstore import snapshot as snap
from journalstore.errors import ForeignDamage
from journalstore.fsio import Disk

from .conftest import FIXTURE


def tree(root: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for dirpath, dirs, names in os.walk(root):
        for d in dirs:
            out[str((Path(dirpath) / d).relative_to(root)) + "/"] = b""
        for name in names:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for rel, data in sorted(files.items()):
        p = root / rel
        if rel.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)


def docs(store: ImageStore) -> list[dict[str, Any]]:
    return [i.to_json() for i in store.images()]


# ------------------------------------------------------------------ format fidelity


def test_fixture_round_trips_byte_for_byte() -> None:
    data = (FIXTURE / "store" / "images.json").read_bytes()
    records = snap.images_from_docs(snap.decode(data, "fixture"), "fixture", False)
    assert snap.encode(records) == data
    assert [r.to_json() for r in records] == json.loads(data)


@pytest.mark.parametrize(
    ("value", "text"),
    [(1.5, "1.5"), (42.0, "42"), (1e21, "1e+21"), (1e20, "100000000000000000000"), (1e-7, "1e-7"),
     (1e-6, "0.000001"), (-2.5e-10, "-2.5e-10"), (0.1, "0.1"), (-0.0, "-0")],
)
def test_floats_are_written_as_go_writes_them(value: float, text: str) -> None:
    assert snap.go_float(value) == text


def test_go_escaping_and_key_order(store: ImageStore) -> None:
    store.create(id="e" * 64, names=["a<b>&c"], metadata="\u2028 é", flags={"z": 1, "a": {"y": 2.0, "b": [1.5]}})
    out = snap.encode(store.images()).decode()
    assert "a\\u003cb\\u003e\\u0026c" in out and "\\u2028 é" in out
    assert '"flags":{"a":{"b":[1.5],"y":2},"z":1}' in out
    keys = ['"id"', '"names"', '"metadata"', '"created"', '"flags"']
    assert [out.index(k) for k in keys] == sorted(out.index(k) for k in keys)


# ------------------------------------------------------------------ import


def test_read_write_open_imports_without_rewriting(fixture_copy: Path) -> None:
    before = {name: (fixture_copy / name).read_bytes() for name in ("images.json", "images.lock")}
    with ImageStore(fixture_copy, fsync="never") as s:
        assert len(s.images()) == 6
        assert s.seq == 1
    for name, data in before.items():
        assert (fixture_copy / name).read_bytes() == data
    seg = fixture_copy / "journal" / jn.segment_name(1)
    header, start = jn.decode_segment_header(seg.read_bytes(), 1)
    assert header["snapshot"]["file"] == snap.archive_name(1)
    records, _, _ = jn.scan(seg.read_bytes()[start:], start)
    (event,) = records[0].body["events"]
    assert event["op"] == "import" and event["count"] == 6 and event["dropped_names"] == ()
    with ImageStore(fixture_copy, read_only=True) as r:
        assert docs(r) == json.loads(before["images.json"])


def duplicate_store(root: Path) -> None:
    root.mkdir()
    images = [
        {"id": "1" * 64, "names": ["shared", "one"], "created": "2024-01-01T00:00:00Z"},
        {"id": "2" * 64, "names": ["shared", "two"], "created": "2024-01-01T00:00:00Z"},
    ]
    (root / "images.json").write_text(json.dumps(images))


def test_duplicate_names_read_only_raises(tmp_path: Path) -> None:
    duplicate_store(tmp_path / "d")
    with pytest.raises(DuplicateImageNames, match="shared"):
        ImageStore(tmp_path / "d", read_only=True)


def test_duplicate_names_are_resolved_and_recorded_on_import(tmp_path: Path) -> None:
    root = tmp_path / "d"
    duplicate_store(root)
    with ImageStore(root, fsync="never") as s:
        assert s.get("shared").id == "2" * 64  # the later image keeps the name
        assert s.get("1" * 64).names == ("one",)
        s.create(names=["x"])  # the first write compacts: images.json loses the duplicate
    on_disk = json.loads((root / "images.json").read_text())
    assert on_disk[0]["names"] == ["one"] and on_disk[1]["names"] == ["shared", "two"]
    seg1 = (root / "journal" / jn.segment_name(1)).read_bytes()
    _, start = jn.decode_segment_header(seg1, 1)
    first = jn.scan(seg1[start:], start)[0][0]
    assert first.body["events"][0]["dropped_names"] == (("1" * 64, "shared"),)
    with ImageStore(root, read_only=True) as r:
        assert r.get("shared").id == "2" * 64


# ------------------------------------------------------------------ compaction and opening


class CountingDisk(Disk):
    """Records which files are read and opened."""

    def __init__(self) -> None:
        self.reads: list[str] = []
        self.opens: list[str] = []

    def read_file(self, path: str) -> bytes:
        self.reads.append(path)
        return super().read_file(path)

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        self.opens.append(path)
        return super().open(path, flags, mode)


def test_cold_open_reads_only_the_newest_segment(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with ImageStore(root, fsync="never") as s:
        for i in range(20):
            s.create(names=[f"n{i}"])
        s.compact()
        s.add_names("n1", ["after"])
        expected = docs(s)
    disk = CountingDisk()
    with ImageStore(root, read_only=True, disk=disk) as r:
        assert docs(r) == expected
    assert not any(p.endswith(jn.segment_name(1)) for p in disk.opens)
    assert any(p.endswith(snap.twin_name(2)) for p in disk.reads)


def test_damaged_twin_falls_back_to_json(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with ImageStore(root, fsync="never") as s:
        s.create(names=["a"], flags={"f": [1, {"g": None}]}, big_data=[("manifest", b"m")])
        s.compact()
        expected = docs(s)
    twin = root / "journal" / snap.twin_name(2)
    data = bytearray(twin.read_bytes())
    data[-2] ^= 0xFF
    twin.write_bytes(bytes(data))
    with ImageStore(root, read_only=True) as r:
        assert docs(r) == expected


def segment_numbers(root: Path) -> list[int]:
    return sorted(n for n in (jn.parse_segment_name(p.name) for p in (root / "journal").iterdir()) if n is not None)


def test_automatic_compaction_by_events_and_bytes(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with ImageStore(root, fsync="never", compact_every=10) as s:
        for i in range(25):
            s.create(names=[f"n{i}"])
    assert len(segment_numbers(root)) >= 2  # compactions ran (in the background), close() waited
    with ImageStore(root / "b", fsync="never", compact_every=None, compact_bytes=4000) as s:
        for i in range(60):
            s.create(names=[f"n{i}"])
    assert len(segment_numbers(root / "b")) > 1
    with ImageStore(root / "b", read_only=True) as r:
        assert [i.names[0] for i in r.images()] == [f"n{i}" for i in range(60)]
        assert r.verify().ok
    with ImageStore(root, read_only=True) as r:
        assert len(r.images()) == 25


class SlowArchiveDisk(Disk):
    """Holds the background compaction inside its archive write until released."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def write_file(self, path: str, data: bytes, *, sync: bool, mode: int = 0o600) -> None:
        if os.path.basename(path).startswith("snapshot-") and ".json.tmp" in path:
            self.started.set()
            assert self.release.wait(10)
        super().write_file(path, data, sync=sync, mode=mode)


def test_writes_go_on_while_a_compaction_runs_in_the_background(tmp_path: Path) -> None:
    root = tmp_path / "s"
    disk = SlowArchiveDisk()
    with ImageStore(root, fsync="never", compact_every=20, disk=disk) as s, ImageStore(root, read_only=True) as r:
        for i in range(20):
            s.create(names=[f"before-{i}"])
        assert disk.started.wait(10)  # the 20th create started a compaction, and returned
        for i in range(5):  # the snapshot does not hold these: the rotation copies them over
            s.create(names=[f"during-{i}"])
        assert r.refresh() and len(r) == 25
        disk.release.set()
        s.wait_for_compaction()
        s.create(names=["after"])
        assert s.position.segment == 2
        assert r.refresh() and [i.names[0] for i in r.images()] == [i.names[0] for i in s.images()]
        assert r.position == s.position
        expected = docs(s)
    header = jn.decode_segment_header((root / "journal" / jn.segment_name(2)).read_bytes(), 2)[0]
    assert header["base_seq"] == 20 and header["snapshot"]["seq"] == 20
    with ImageStore(root, read_only=True) as cold:
        assert docs(cold) == expected
        assert [e.seq for e in cold.history()] == list(range(1, 27))  # copies are not repeated
        report = cold.verify()
        assert report.ok, report.problems
        assert report.records == 26 and report.snapshots == 1
        assert [i.to_json() for i in cold.at(22).images()] == expected[:22]


def _store_with_copies(root: Path) -> None:
    """26 records: 20 in the snapshot segment 2 starts from, 5 copied over by the rotation, 1 after."""
    disk = SlowArchiveDisk()
    with ImageStore(root, fsync="never", compact_every=20, disk=disk) as s:
        for i in range(20):
            s.create(names=[f"before-{i}"])
        assert disk.started.wait(10)
        for i in range(5):
            s.create(names=[f"during-{i}"])
        disk.release.set()
        s.wait_for_compaction()
        s.create(names=["after"])


def test_a_reader_crossing_a_rotation_steps_over_the_copies_without_decoding_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "s"
    _store_with_copies(root)
    decoded: list[int] = []
    real = jn._decoded

    def counting(unpacker: Any, starts: list[int], *args: Any) -> Any:
        decoded.append(len(starts))
        return real(unpacker, starts, *args)

    monkeypatch.setattr(jn, "_decoded", counting)
    cursor = jn.Cursor(jn_disk(), str(root / "journal"), 1, writable=False)
    assert [r.seq for r in cursor.poll()] == list(range(1, 27))
    assert sum(decoded) == 25 + 1 + 1  # segment 1 with its end marker, then only "after"


@pytest.mark.parametrize("shift", [-1, 1])
def test_a_snapshot_offset_that_does_not_match_the_copies_only_costs_speed(tmp_path: Path, shift: int) -> None:
    # The copied length comes from the header's snapshot offset; if it is wrong by a frame either
    # way, the frames still line up, but the reader must neither skip a new record nor repeat one.
    root = tmp_path / "s"
    _store_with_copies(root)
    first = jn.Cursor(jn_disk(), str(root / "journal"), 1, writable=False)
    records = [r for r in first.poll() if r.segment == 1]
    seg2 = root / "journal" / jn.segment_name(2)
    data = seg2.read_bytes()
    meta, start = jn.decode_segment_header(data, 2)
    offset = meta["snapshot"]["offset"]
    at = next(i for i, r in enumerate(records) if r.offset == offset)
    meta["snapshot"]["offset"] = records[at + shift].offset  # one frame more, or one less
    seg2.write_bytes(jn.encode_segment_header(meta) + data[start:])
    cursor = jn.Cursor(jn_disk(), str(root / "journal"), 1, writable=False)
    assert [r.seq for r in cursor.poll()] == list(range(1, 27))


def jn_disk() -> Disk:
    return Disk()


def test_reader_follows_a_rotation_without_reloading(tmp_path: Path) -> None:
    root = tmp_path / "s"
    disk = CountingDisk()
    with ImageStore(root, fsync="never") as w, ImageStore(root, read_only=True, disk=disk) as r:
        for i in range(50):
            w.create(names=[f"n{i}"])
        assert r.refresh()
        w.compact()
        w.create(names=["after"])
        disk.reads.clear()
        assert r.refresh() is True
        assert r.get("after") and r.position == w.position
        assert disk.reads == []  # no snapshot, no images.json: only the new records
        assert docs(r) == [d for d in docs(w)]


def test_images_lock_changes_at_compaction_for_go_readers(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with ImageStore(root, fsync="never") as s:
        s.create(names=["a"])
        before = (root / "images.lock").read_bytes()
        s.compact()
        after = (root / "images.lock").read_bytes()
    assert len(after) == 64 and after != before


def test_lost_snapshot_is_rebuilt_from_history(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with ImageStore(root, fsync="never") as s:
        for i in range(10):
            s.create(names=[f"n{i}"])
        s.compact()
        s.delete("n3")
        expected = docs(s)
    # images.json is a hard link to the archive: damage in place reaches both.
    data = bytearray((root / "images.json").read_bytes())
    data[40] ^= 0x01
    (root / "images.json").write_bytes(bytes(data))
    with pytest.warns(StoreWarning, match="rebuilt"):
        r = ImageStore(root, read_only=True)
    assert docs(r) == expected
    r.close()
    with pytest.warns(StoreWarning, match="rebuilt"), ImageStore(root, fsync="never") as s:
        s.create(names=["x"])  # the next write writes a fresh snapshot
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ImageStore(root, read_only=True) as r:
            assert docs(r) == [*expected, docs(r)[-1]]


# ------------------------------------------------------------------ intermediate states


class RecordingDisk(Disk):
    """Takes a picture of the directory tree after every mutating file operation."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.states: list[tuple[str, dict[str, bytes]]] = []

    def _snap(self, what: str) -> None:
        self.states.append((what, tree(self.root)))

    def write(self, fd: int, data: bytes) -> None:
        super().write(fd, data)
        self._snap("write")

    def write_file(self, path: str, data: bytes, *, sync: bool, mode: int = 0o600) -> None:
        super().write_file(path, data, sync=sync, mode=mode)
        self._snap(f"write_file {os.path.basename(path)}")

    def rename(self, src: str, dst: str) -> None:
        super().rename(src, dst)
        self._snap(f"rename {os.path.basename(src)} -> {os.path.basename(dst)}")

    def link(self, src: str, dst: str) -> None:
        super().link(src, dst)
        self._snap(f"link {os.path.basename(dst)}")

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        super().pwrite(fd, data, offset)
        self._snap("pwrite")

    def unlink(self, path: str) -> None:
        super().unlink(path)
        self._snap(f"unlink {os.path.basename(path)}")


def test_every_intermediate_state_of_a_compaction_opens(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with ImageStore(root, fsync="never") as s:
        for i in range(5):
            s.create(names=[f"n{i}"], big_data=[("manifest", f"m{i}".encode())])
        s.delete("n2")
    expected = None
    disk = RecordingDisk(root)
    with ImageStore(root, fsync="never", disk=disk) as s:
        expected = docs(s)
        disk.states.clear()
        s.compact()
    assert len(disk.states) >= 5
    copy = tmp_path / "copy"
    for what, files in disk.states:
        write_tree(copy, files)
        with ImageStore(copy, read_only=True) as r:
            assert docs(r) == expected, what
        with ImageStore(copy, fsync="never") as s:
            assert docs(s) == expected, what
            s.create(names=["probe"])
        with ImageStore(copy, read_only=True) as r:
            assert docs(r)[:-1] == expected, what


# ------------------------------------------------------------------ retention


def test_retention_keeps_history_contiguous(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with ImageStore(root, fsync="never") as s:
        for round_ in range(5):
            s.create(names=[f"n{round_}"])
            s.compact()
        assert s.position.segment == 6
        removed = s.prune_journal(keep_segments=2)
        assert {jn.parse_segment_name(n.split(".")[0]) for n in removed if n.startswith("segment-")} == {1, 2, 3}
        left = sorted(n for n in os.listdir(root / "journal") if n.startswith("segment-"))
        assert left == [jn.segment_name(n) for n in (4, 5, 6)]
        assert s.prune_journal(keep_segments=0) and s.position.segment == 6
        assert sorted(n for n in os.listdir(root / "journal") if n.startswith("segment-")) == [jn.segment_name(6)]
        s.create(names=["later"])
    with ImageStore(root, read_only=True) as r:
        assert len(r.images()) == 6


def test_automatic_retention_setting(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with ImageStore(root, fsync="never", compact_every=3, keep_segments=1) as s:
        for i in range(20):
            s.create(names=[f"n{i}"])
    segments = sorted(n for n in os.listdir(root / "journal") if n.startswith("segment-"))
    assert len(segments) == 2


# ------------------------------------------------------------------ foreign rewrites


def go_rewrite(root: Path, change: Any, *, touch: bool = True) -> None:
    """Rewrite images.json as containers/storage would: a new file renamed into place, then new
    last-writer bytes at the start of images.lock (its Touch(); `touch=False`: a program that
    is not containers/storage)."""
    images = json.loads((root / "images.json").read_text())
    change(images)
    tmp = root / ".tmp-images.json"
    tmp.write_bytes(json.dumps(images, separators=(",", ":")).encode())
    os.rename(tmp, root / "images.json")
    if touch:
        with open(root / "images.lock", "r+b") as f:  # in place: Go never truncates it
            f.write(struct.pack("<QQI", time.time_ns(), 1, 4242) + os.urandom(44))


def _rewritten_store(root: Path) -> tuple[Any, Any, Any, Callable[[list[dict[str, Any]]], None]]:
    with ImageStore(root, fsync="never") as s:
        a = s.create(names=["a"], metadata="old")
        b = s.create(names=["b"])
        gone = s.create(names=["gone"])
        s.compact()
        s.add_names("b", ["ours-after-snapshot"])  # a journal record after the snapshot

    def change(images: list[dict[str, Any]]) -> None:
        images[0]["metadata"] = "theirs"
        images[:] = [i for i in images if i["id"] != gone.id]
        images.append({"id": "f" * 64, "names": ["new-from-podman"], "created": "2025-01-01T00:00:00Z"})

    return a, b, gone, change


def test_foreign_rewrite_is_merged_on_read_write_open(tmp_path: Path) -> None:
    """A containers/storage save (images.json, then the last-writer bytes) is merged three-way,
    event by event: readers see it at once (in memory), the first writer records it."""
    root = tmp_path / "s"
    a, b, gone, change = _rewritten_store(root)
    go_rewrite(root, change)
    with ImageStore(root, read_only=True) as ro:  # issue 12: readers see Go's save, in memory
        assert ro.get("a").metadata == "theirs" and not ro.exists("gone")
        assert ro.get("b").names == ("ours-after-snapshot", "b")
    with ImageStore(root, fsync="never") as s:
        assert s.get("a").metadata == "theirs"
        assert s.get("new-from-podman").id == "f" * 64
        assert not s.exists("gone") and not s.exists(gone.id)
        assert s.get("b").names == ("ours-after-snapshot", "b")  # our record survived
        assert s.get(a.id).id == a.id and s.get(b.id)
        merged = docs(s)
        kinds = [(e.kind, e.actor.name, e.actor.pid) for e in s.history(since=5)]
    assert kinds[0] == ("external-rewrite", "containers-storage", 4242)
    assert {k for k, _, _ in kinds} >= {"set-metadata", "delete", "create"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ImageStore(root, read_only=True) as r:
            assert docs(r) == merged
    assert json.loads((root / "images.json").read_text()) == merged


def test_a_rewrite_without_new_last_writer_bytes_is_not_merged(tmp_path: Path) -> None:
    """Issue 12: an images.json changed while the last-writer bytes did not is not a save of
    containers/storage: readers show the journal's state with a warning, writers refuse."""
    root = tmp_path / "s"
    _a, _b, gone, change = _rewritten_store(root)
    go_rewrite(root, change, touch=False)
    with pytest.warns(StoreWarning, match="accept-images-json"), ImageStore(root, read_only=True) as ro:
        assert ro.get("a").metadata == "old" and ro.exists("gone")
    with pytest.raises(ForeignDamage, match=r"images\.json"):
        ImageStore(root, fsync="never")
    with pytest.warns(StoreWarning), ImageStore(root, read_only=True) as ro:
        assert ro.exists(gone.id) and [e.kind for e in ro.history()].count("delete") == 0
