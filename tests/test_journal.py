"""The journal format: frames, segment headers, torn tails versus corruption, chunked reads."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from journalstore import ImageStore, JournalCorrupt
from journalstore import journal as jn
from journalstore.fsio import DEFAULT_DISK


def segment_path(root: Path, number: int = 1) -> Path:
    return root / "journal" / jn.segment_name(number)


def records_of(path: Path) -> list[jn.Record]:
    data = path.read_bytes()
    _, start = jn.decode_segment_header(data, jn.parse_segment_name(path.name) or 0)
    records, stop, damage = jn.scan(data[start:], start)
    assert damage is None and stop == len(data)
    return records


def make_store(root: Path, count: int) -> list[str]:
    with ImageStore(root, fsync="never") as s:
        return [s.create(names=[f"n{i}"]).id for i in range(count)]


def files_of(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


# ---------------------------------------------------------------- frames


def test_frame_round_trip_and_checksum() -> None:
    body = {"type": "commit", "seq": 7, "events": [{"op": "delete", "id": "x"}]}
    frame = jn.encode_frame(jn.pack(body))
    records, stop, damage = jn.scan(frame, 100)
    assert damage is None and stop == 100 + len(frame)
    assert records[0].offset == 100 and records[0].end == 100 + len(frame)
    assert records[0].body["seq"] == 7 and records[0].body["events"][0]["op"] == "delete"
    flipped = bytearray(frame)
    flipped[-3] ^= 0x10
    records, stop, damage = jn.scan(bytes(flipped), 0)
    assert records == [] and damage is not None and damage.reason == "checksum mismatch" and damage.offset == 0


def test_incomplete_and_oversized_frames_are_reported() -> None:
    frame = jn.encode_frame(jn.pack({"type": "commit", "seq": 1, "events": []}))
    _, _, damage = jn.scan(frame[:-1], 0)
    assert damage is not None and damage.reason == "incomplete frame" and damage.needed == len(frame)
    _, _, damage = jn.scan(frame[:5], 0)
    assert damage is not None and damage.reason == "incomplete frame header"
    huge = jn.FRAME_HEADER.pack(jn.FRAME_MAGIC, jn.MAX_FRAME + 1, 0)
    _, _, damage = jn.scan(huge + b"x" * 10, 0)
    assert damage is not None and "exceeds the maximum" in damage.reason and damage.needed == 0


def test_resynchronisation_finds_the_next_valid_frame() -> None:
    a = jn.encode_frame(jn.pack({"seq": 1}))
    b = jn.encode_frame(jn.pack({"seq": 2}))
    junk = b"\x00" * 7 + jn.FRAME_MAGIC + b"\xff" * 20  # a fake magic that does not validate
    data = a + junk + b
    assert jn.find_valid_frame(data, 1) == len(a) + len(junk)
    assert jn.find_valid_frame(a + junk, 1) == -1


def test_segment_header_round_trip_and_damage() -> None:
    raw = jn.encode_segment_header({"segment": 3, "base_seq": 10, "snapshot": None})
    meta, end = jn.decode_segment_header(raw + b"rest", 3)
    assert meta["base_seq"] == 10 and end == len(raw)
    with pytest.raises(JournalCorrupt) as exc:
        jn.decode_segment_header(raw, 4)
    assert exc.value.segment == 4 and exc.value.offset == 0
    bad = bytearray(raw)
    bad[-1] ^= 1
    with pytest.raises(JournalCorrupt, match="checksum"):
        jn.decode_segment_header(bytes(bad), 3)
    with pytest.raises(JournalCorrupt, match="magic"):
        jn.decode_segment_header(b"X" + raw[1:], 3)
    wrong_version = raw[:8] + (99).to_bytes(2, "little") + raw[10:]
    with pytest.raises(JournalCorrupt, match="version 99"):
        jn.decode_segment_header(wrong_version, 3)


# ---------------------------------------------------------------- torn tails


def test_truncation_at_every_offset_of_the_last_record(tmp_path: Path) -> None:
    root = tmp_path / "s"
    ids = make_store(root, 4)
    seg = segment_path(root)
    last = records_of(seg)[-1]
    original = seg.read_bytes()
    for cut in range(last.offset + 1, last.end):
        seg.write_bytes(original[:cut])
        with ImageStore(root, read_only=True) as r:
            assert [i.id for i in r.images()] == ids[:3], cut
            assert r.position == jn.Position(1, last.offset)
        assert seg.read_bytes() == original[:cut]  # a reader never cuts


def test_writer_cuts_a_torn_tail_and_keeps_a_copy(tmp_path: Path) -> None:
    root = tmp_path / "s"
    ids = make_store(root, 3)
    seg = segment_path(root)
    last = records_of(seg)[-1]
    data = seg.read_bytes()
    seg.write_bytes(data[: last.end - 5])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ImageStore(root, fsync="never") as s:
            assert [i.id for i in s.images()] == ids[:2]
            s.create(names=["after"])
            assert s.get("after").names == ("after",)
    assert any("cut" in str(w.message) for w in caught)
    broken = root / "journal" / f"{jn.segment_name(1)}.broken-{last.offset}"
    assert broken.read_bytes() == data[last.offset : last.end - 5]
    with ImageStore(root, read_only=True) as r:
        assert [i.names for i in r.images()] == [("n0",), ("n1",), ("after",)]


def test_garbage_appended_is_a_torn_tail(tmp_path: Path) -> None:
    root = tmp_path / "s"
    ids = make_store(root, 3)
    seg = segment_path(root)
    with seg.open("ab") as f:
        f.write(os.urandom(3000))
    with ImageStore(root, read_only=True) as r:
        assert [i.id for i in r.images()] == ids


@pytest.mark.parametrize("which", [0, 1])
def test_flipped_bit_in_a_middle_record_is_corruption(tmp_path: Path, which: int) -> None:
    root = tmp_path / "s"
    make_store(root, 4)
    seg = segment_path(root)
    target = records_of(seg)[which]
    data = bytearray(seg.read_bytes())
    data[target.offset + jn.FRAME_OVERHEAD + 3] ^= 0x04
    seg.write_bytes(bytes(data))
    before = files_of(root)
    for read_only in (True, False):
        with pytest.raises(JournalCorrupt) as exc:
            ImageStore(root, read_only=read_only, fsync="never")
        assert exc.value.segment == 1
        assert exc.value.offset == target.offset
        assert str(target.offset) in str(exc.value)
    assert files_of(root) == before  # nothing was cut


def test_zeroed_block_in_the_middle_is_corruption(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with ImageStore(root, fsync="never") as s:
        for i in range(200):
            s.create(names=[f"name-{i}"], metadata="m" * 50)
    seg = segment_path(root)
    data = bytearray(seg.read_bytes())
    data[4096:8192] = bytes(4096)
    seg.write_bytes(bytes(data))
    first_bad = records_of_prefix(bytes(data))[-1].end
    assert first_bad <= 4096
    with pytest.raises(JournalCorrupt) as exc:
        ImageStore(root, read_only=True)
    assert exc.value.offset == first_bad


def records_of_prefix(data: bytes) -> list[jn.Record]:
    _, start = jn.decode_segment_header(data, 1)
    records, _, _ = jn.scan(data[start:], start)
    return records


def test_damaged_header_is_corruption_at_offset_zero(tmp_path: Path) -> None:
    root = tmp_path / "s"
    make_store(root, 2)
    seg = segment_path(root)
    data = bytearray(seg.read_bytes())
    data[20] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt) as exc:
        ImageStore(root, read_only=True)
    assert (exc.value.segment, exc.value.offset) == (1, 0)


# ---------------------------------------------------------------- reading


def test_chunked_reads_cross_frame_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "s"
    with ImageStore(root, fsync="never") as s:
        for i in range(30):
            s.create(names=[f"n{i}"], metadata="x" * (i * 37))
        s.set_metadata("n3", "y" * 5000)  # one record larger than the chunk
        expected = [i.to_json() for i in s.images()]
    for chunk in (17, 64, 1000):
        monkeypatch.setattr(jn, "READ_CHUNK", chunk)
        with ImageStore(root, read_only=True) as r:
            assert [i.to_json() for i in r.images()] == expected


def test_reader_refresh_is_incremental(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with ImageStore(root, fsync="never") as w, ImageStore(root, read_only=True) as r:
        assert r.refresh() is False
        w.create(names=["a"])
        before = r.position
        assert r.refresh() is True
        assert r.position > before and r.get("a")
        assert r.refresh() is False
        assert w.refresh() is False  # its own writes are not news


def test_reader_ignores_a_record_being_written(tmp_path: Path) -> None:
    root = tmp_path / "s"
    make_store(root, 1)
    with ImageStore(root, read_only=True) as r:
        frame = jn.encode_frame(jn.pack({"type": "commit", "seq": 2, "events": [
            {"op": "create", "id": "f" * 64, "created": [0, 0], "names": ["half"]}]}))
        seg = segment_path(root)
        with seg.open("ab") as f:
            f.write(frame[:10])
        assert r.refresh() is False and not r.exists("half")
        with seg.open("ab") as f:
            f.write(frame[10:])
        assert r.refresh() is True and r.exists("half")


class _SizeTakenMidWrite(type(DEFAULT_DISK)):  # type: ignore[misc]
    """A disk whose first size of segment 1 is taken while its last frame was half written:
    what a reader sees when it looks just before a writer finishes an append and rotates."""

    def __init__(self, seen: int) -> None:
        self.seen = seen

    def size(self, fd: int) -> int:
        if self.seen:
            seen, self.seen = self.seen, 0
            return seen
        return super().size(fd)


def test_a_frame_finished_while_the_segment_closed_is_not_damage(tmp_path: Path) -> None:
    # Found by make stress: a reader took the size mid-append, the writer then finished the frame
    # and rotated, and the reader called the half frame damage "in a closed segment".
    root = tmp_path / "s"
    with ImageStore(root, fsync="never", compact_every=None) as s:
        for i in range(5):
            s.create(names=[f"n{i}"], metadata="m" * 3000)
        s.compact()  # segment 1 ends with an end marker; segment 2 exists
    last = records_of(segment_path(root))[-2]  # the last commit, before the end marker
    whole = [r.seq for r in jn.Cursor(DEFAULT_DISK, str(root / "journal"), 1, writable=False).poll()]
    disk = _SizeTakenMidWrite(last.offset + (last.end - last.offset) // 2)
    cursor = jn.Cursor(disk, str(root / "journal"), 1, writable=False)
    assert [r.seq for r in cursor.poll()] == whole
    assert cursor.tail is None


def test_record_with_wrong_sequence_number_is_corruption(tmp_path: Path) -> None:
    root = tmp_path / "s"
    make_store(root, 1)
    frame = jn.encode_frame(jn.pack({"type": "commit", "seq": 5, "events": []}))
    seg = segment_path(root)
    size = seg.stat().st_size
    with seg.open("ab") as f:
        f.write(frame)
    with pytest.raises(JournalCorrupt) as exc:
        ImageStore(root, read_only=True)
    assert exc.value.offset == size


def test_unapplicable_event_is_corruption_and_is_not_skipped(tmp_path: Path) -> None:
    root = tmp_path / "s"
    make_store(root, 1)
    with ImageStore(root, read_only=True) as r:
        seg = segment_path(root)
        size = seg.stat().st_size
        bad = jn.encode_frame(jn.pack({"type": "commit", "seq": 2, "events": [{"op": "delete", "id": "nope"}]}))
        with seg.open("ab") as f:
            f.write(bad)
        for _ in range(2):  # the second refresh must hit the same record, not step over it
            with pytest.raises(JournalCorrupt) as exc:
                r.refresh()
            assert exc.value.offset == size


def test_disk_pread_reads_across_short_reads(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"abcdef")
    fd = os.open(p, os.O_RDONLY)
    try:
        assert DEFAULT_DISK.pread(fd, 100, 2) == b"cdef"
    finally:
        os.close(fd)
