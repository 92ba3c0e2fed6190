"""Checking and repairing a journal: `verify` re-derives every snapshot and checks every
checksum and kept blob; `repair` is the only way to cut a damaged journal, and keeps what it cuts.
Neither trusts the state of an open store: both read the files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import journal as jn
from . import replay
from . import snapshot as snap
from .blobs import Blobs, blob_digest, kept_digests
from .errors import JournalCorrupt, StoreError
from .fsio import Disk
from .locking import WriterLock


class _Files:
    """The journal directory of a store, as checking reads it (no state)."""

    def __init__(self, disk: Disk, root: str) -> None:
        self.disk = disk
        self.dir = os.path.join(root, "journal")

    def segments(self) -> list[int]:
        return replay.segments(self.disk, self.dir)


@dataclass
class VerifyReport:
    """What `verify` read and what it found wrong."""

    segments: int = 0
    records: int = 0
    bytes: int = 0
    snapshots: int = 0
    first_seq: int = 0
    last_seq: int = 0
    problems: list[str] = field(default_factory=list)
    damage: list[tuple[int, int]] = field(default_factory=list)  # (segment, offset)
    blobs: int = 0  # kept past big-data bytes checked against their digests

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "segments": self.segments,
            "records": self.records,
            "bytes": self.bytes,
            "snapshots_checked": self.snapshots,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "problems": self.problems,
            "damage": [{"segment": s, "offset": o} for s, o in self.damage],
            "blobs_checked": self.blobs,
        }


def verify(root: str, disk: Disk, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Read every segment, check every checksum, and check that replay reproduces each snapshot.

    `progress(bytes_done, bytes_total)` is called as segments are read.
    """
    journal = _Files(disk, root)
    report = VerifyReport()
    segs = journal.segments()
    if not segs:
        report.problems.append(f"{root}: no journal segments")
        return report
    sizes = {n: disk.stat(os.path.join(journal.dir, jn.segment_name(n))).st_size for n in segs}
    total = sum(sizes.values())
    report.segments = len(segs)
    try:
        metas = {n: replay.header(disk, journal.dir, n) for n in segs}
    except JournalCorrupt as exc:
        report.problems.append(str(exc))
        report.damage.append((exc.segment, exc.offset))
        return report
    base = replay.base_state(disk, journal.dir, segs[0], True)
    report.first_seq = int(metas[segs[0]].get("base_seq", 0))
    if base is None:
        report.problems.append(f"segment {segs[0]}: the snapshot it starts from is missing or damaged")
        report.damage.append((segs[0], 0))
        return report
    # Each later segment's snapshot must equal the state replay reaches at its base record.
    checks: dict[int, list[int]] = {}
    for n in segs[1:]:
        if metas[n].get("snapshot"):
            checks.setdefault(int(metas[n].get("base_seq", -1)), []).append(n)
    state = base
    kept: dict[str, int] = {}  # blob digest -> the newest retained record that kept it

    def check_snapshot() -> None:
        for number in checks.pop(state.seq, ()):
            check_one(number, metas[number]["snapshot"])

    def check_one(number: int, reference: Mapping[str, Any]) -> None:
        report.snapshots += 1
        if snap.snapshot_digest(snap.encode(state)) != reference.get("xxh3"):
            report.problems.append(
                f"segment {number}: replaying the journal does not reproduce its snapshot {reference.get('file')}"
            )
        if replay.archive_bytes(disk, journal.dir, reference) is None and not (
            number == segs[-1] and _images_json_matches(disk, root, reference)
        ):
            report.problems.append(f"segment {number}: its snapshot {reference.get('file')} is missing or damaged")

    check_snapshot()  # a segment may start where the first one does (compacted before any record)
    done = 0
    for number in segs:
        cursor = jn.Cursor(disk, journal.dir, number, writable=False)
        if number != segs[0]:
            cursor.skip_through = state.seq  # records copied over by a background compaction
        try:
            for rec in _one_segment(cursor, number):
                replay.apply_record(state, rec)
                report.records += 1
                for digest in kept_digests(rec.body):
                    kept[digest] = rec.seq
                check_snapshot()
            if cursor.tail is not None:
                report.problems.append(
                    f"segment {number}: unfinished record at offset {cursor.tail.offset} ({cursor.tail.reason}); "
                    "the next write cuts it (a writer died mid-append)"
                )
                report.damage.append((number, cursor.tail.offset))
        except JournalCorrupt as exc:
            report.problems.append(str(exc))
            report.damage.append((exc.segment, exc.offset))
            return report
        finally:
            cursor.close()
        done += sizes[number]
        report.bytes += sizes[number]
        if progress is not None:
            progress(done, total)
    verify_blobs(report, Blobs(disk, journal.dir, False), kept)
    for seq, numbers in checks.items():
        for number in numbers:
            report.problems.append(f"segment {number} starts after record {seq}, which replay never reached")
    report.last_seq = state.seq
    newest = metas[segs[-1]].get("snapshot")
    if newest and not _images_json_matches(disk, root, newest):
        report.problems.append(
            "images.json differs from the newest snapshot (rewritten by another program, "
            "or a compaction did not finish publishing it)"
        )
    return report


def verify_blobs(report: VerifyReport, blobs: Blobs, kept: Mapping[str, int]) -> None:
    """Every kept past big-data blob must hash to the digest it is named by, and every blob a
    retained record kept (`kept`: digest -> the newest such record) must be there."""
    for digest, seq in kept.items():
        path = blobs.path(digest)
        if path is not None and not blobs.disk.exists(path):
            report.problems.append(f"blob {path}: missing, but record {seq} kept it (its past bytes are lost)")
    for digest, path in blobs.listing():
        report.blobs += 1
        try:
            data = blobs.disk.read_file(path)
        except OSError as exc:
            report.problems.append(f"blob {digest}: cannot be read ({exc})")
            continue
        if blob_digest(data) != digest:
            report.problems.append(f"blob {path}: its bytes do not match its digest {digest}")


def _images_json_matches(disk: Disk, root: str, reference: Mapping[str, Any]) -> bool:
    try:
        return snap.snapshot_digest(disk.read_file(os.path.join(root, snap.IMAGES_JSON))) == reference.get("xxh3")
    except OSError:
        return False


def _one_segment(cursor: jn.Cursor, number: int) -> Iterator[jn.Record]:
    """The records of one segment only (a cursor would follow into the next)."""
    if cursor.segment != number or cursor.end_record is not None:
        return
    for rec in cursor.poll():
        if rec.segment != number:
            return
        yield rec


def repair(root: str, disk: Disk, offset: int, segment: int | None = None, force: bool = False) -> tuple[str, int]:
    """Cut segment `segment` (default: the newest) at `offset`, keeping a copy of what was cut.

    Refuses unless the bytes before `offset` are whole records (or `force`). Returns the path of
    the copy and the number of bytes cut. Takes the writers' lock.
    """
    journal = _Files(disk, root)
    segs = journal.segments()
    if not segs:
        raise StoreError(f"{root} has no journal")
    number = segs[-1] if segment is None else segment
    if number not in segs:
        raise StoreError(f"segment {number} does not exist in {journal.dir}")
    if number != segs[-1] and not force:
        raise StoreError(
            f"segment {number} is closed: cutting it would break the chain of later segments (use --force)"
        )
    path = os.path.join(journal.dir, jn.segment_name(number))
    lock = WriterLock(disk, os.path.join(root, "images.lock"), 30.0)
    lock.acquire()
    try:
        fd = disk.open(path, os.O_RDWR)
        try:
            _meta, start = jn.read_segment_header(disk, fd, number)
            size = disk.size(fd)
            if not start <= offset <= size:
                raise StoreError(f"offset {offset} is outside segment {number} (records lie in {start}..{size})")
            _records, stop, _damage = jn.scan(disk.pread(fd, offset - start, start), start)
            if stop != offset and not force:
                raise StoreError(
                    f"offset {offset} is not the end of a whole record of segment {number} "
                    f"(the whole records before it end at {stop}); use --force to cut anyway"
                )
            cut = disk.pread(fd, size - offset, offset)
            copy = os.path.join(journal.dir, f"{jn.segment_name(number)}.cut-{offset}")
            disk.write_file(copy, cut, sync=True)
            disk.truncate(fd, offset)
            disk.fsync(fd)
        finally:
            disk.close(fd)
    finally:
        lock.release()
        lock.close()
    return copy, len(cut)
