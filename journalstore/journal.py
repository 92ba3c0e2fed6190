"""The journal's on-disk format: segment files of framed, checksummed msgpack records.

docs/journal-format.md is the byte-level description; this module is its one implementation.
A `Cursor` follows the journal from a position, reading only bytes it has not seen, across
segment rotations, and tells a torn tail (a writer died mid-append: ignore it, a writer will cut
it) from damage with valid records after it (`JournalCorrupt`, never cut silently).
"""

from __future__ import annotations

import gc
import operator
import os
import struct
from collections.abc import Iterator
from typing import Any, NamedTuple

import msgpack
import xxhash

from . import failpoints
from .errors import JournalCorrupt
from .fsio import Disk

SEGMENT_MAGIC = b"JSTORSEG"
FORMAT_VERSION = 3  # 2: commit records carry history links; 3: commits in positional form (docs/journal-format.md)
READABLE_VERSIONS = (1, 2, 3)
POSITIONAL_VERSION = 3  # segments of this version or later may hold commits as arrays
SEGMENT_HEADER = struct.Struct("<8sHHIQ")  # magic, version, flags, meta length, meta xxh3-64
FRAME_MAGIC = b"\xabJR\x01"
FRAME_HEADER = struct.Struct("<4sIQ")  # magic, payload length, payload xxh3-64
FRAME_OVERHEAD = FRAME_HEADER.size
MAX_FRAME = 64 * 1024 * 1024  # payload bytes; a larger length is damage, never an allocation
MAX_SEGMENT_META = 1024 * 1024
READ_CHUNK = 16 * 1024 * 1024

COMMIT = "commit"
PREPARE = "prepare"
END = "end"

_checksum = xxhash.xxh3_64_intdigest
_pack_frame = FRAME_HEADER.pack
_unpack_frame = FRAME_HEADER.unpack_from


def segment_name(number: int) -> str:
    """The file name of segment `number` inside the journal directory."""
    return f"segment-{number:08d}"


def parse_segment_name(name: str) -> int | None:
    """The segment number of a journal file name, or None for other files."""
    if len(name) == 16 and name.startswith("segment-") and name[8:].isdigit():
        return int(name[8:])
    return None


class Position(NamedTuple):
    """A place in the journal: segment number and byte offset; ordered like the journal."""

    segment: int
    offset: int


# A format-3 commit payload is an array of these values, then a map of any other keys (or nil):
# the map form of the same record with "type" "commit" (docs/journal-format.md, "Positional commits").
POSITIONAL_FIELDS = ("seq", "time", "pid", "uid", "actor", "events", "chain", "prev")
POSITIONAL_SIZE = len(POSITIONAL_FIELDS) + 1
_NOT_MORE = frozenset(("type", *POSITIONAL_FIELDS))
_fixed_fields = operator.itemgetter(*POSITIONAL_FIELDS[:-1])


class Record(NamedTuple):
    """One decoded record and where it lies."""

    segment: int
    offset: int  # first byte of its frame
    end: int  # first byte after its frame
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body.get("type", COMMIT))

    @property
    def seq(self) -> int:
        return int(self.body.get("seq", 0))


class RawRecord(NamedTuple):
    """A record as `Cursor.poll_raw_batches` hands it out: a commit written in positional form
    has that tuple as its body (`POSITIONAL_FIELDS`, then the map of other keys or None); any
    other record has its map."""

    segment: int
    offset: int
    end: int
    body: tuple[Any, ...] | dict[str, Any]


def encode_frame(payload: bytes) -> bytes:
    """Frame a payload: magic, length, checksum, payload."""
    return _pack_frame(FRAME_MAGIC, len(payload), _checksum(payload)) + payload


def pack(body: dict[str, Any], *, positional: bool = False) -> bytes:
    """msgpack a record body (frozen mappings in flag values are packed as maps).

    With `positional` (the segment is format 3 or later), a commit that has every positional
    field but `prev` is packed as the array form, which reads back several times faster."""
    if positional and body.get("type") == COMMIT and type(body.get("chain")) is int:
        try:
            fixed = _fixed_fields(body)
        except KeyError:
            pass
        else:
            prev = body.get("prev")
            if len(body) == (8 if prev is None else 9):  # type, the fixed fields, prev: nothing more
                more = None
            else:
                more = {key: value for key, value in body.items() if key not in _NOT_MORE} or None
            return msgpack.packb((*fixed, prev, more), use_bin_type=True, default=_default)
    return msgpack.packb(body, use_bin_type=True, default=_default)


def _default(value: Any) -> Any:
    from collections.abc import Mapping

    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot journal a value of type {type(value).__name__}")


def unpack(payload: bytes | memoryview) -> dict[str, Any]:
    """The body of one record payload, in map form whichever form it was written in."""
    return _unpack_both(payload)[1]


def _unpack_both(payload: bytes | memoryview) -> tuple[Any, dict[str, Any]]:
    """(the decoded value, the body in map form) of one record payload; ValueError if it is
    neither a map nor a positional commit."""
    value = msgpack.unpackb(payload, raw=False, use_list=False, strict_map_key=True)
    body = expand(value) if type(value) is tuple else value
    if not isinstance(body, dict):
        raise ValueError("record payload is neither a map nor a positional commit")
    return value, body


def expand(value: tuple[Any, ...]) -> dict[str, Any] | None:
    """The map form of a positional commit, or None if `value` is not one."""
    if len(value) != POSITIONAL_SIZE:
        return None
    seq, time, pid, uid, actor, events, chain, prev, more = value
    body = {"type": COMMIT, "seq": seq, "time": time, "pid": pid, "uid": uid, "actor": actor, "events": events}
    if chain is not None:
        body["chain"] = chain
    if prev is not None:
        body["prev"] = prev
    if more is not None:
        if type(more) is not dict or not _NOT_MORE.isdisjoint(more):
            return None  # the map of other keys may not restate a positional one
        body.update(more)
    return body


def encode_segment_header(meta: dict[str, Any]) -> bytes:
    raw = msgpack.packb(meta, use_bin_type=True)
    return SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, 0, len(raw), _checksum(raw)) + raw


def decode_segment_header(data: bytes, segment: int) -> tuple[dict[str, Any], int]:
    """(meta, offset of the first frame) of a segment file's leading bytes."""
    meta, end, _version = decode_segment_header_version(data, segment)
    return meta, end


def decode_segment_header_version(data: bytes, segment: int) -> tuple[dict[str, Any], int, int]:
    """(meta, offset of the first frame, format version) of a segment file's leading bytes."""
    if len(data) < SEGMENT_HEADER.size:
        raise JournalCorrupt(f"segment {segment}: header is cut short", segment=segment, offset=0)
    magic, version, _flags, size, digest = SEGMENT_HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        raise JournalCorrupt(f"segment {segment}: not a journal segment (bad magic)", segment=segment, offset=0)
    if version not in READABLE_VERSIONS:
        raise JournalCorrupt(
            f"segment {segment}: format version {version} is not supported (this is {FORMAT_VERSION})",
            segment=segment,
            offset=0,
        )
    end = SEGMENT_HEADER.size + size
    if size > MAX_SEGMENT_META or len(data) < end:
        raise JournalCorrupt(f"segment {segment}: header is cut short", segment=segment, offset=0)
    raw = data[SEGMENT_HEADER.size : end]
    if _checksum(raw) != digest:
        raise JournalCorrupt(f"segment {segment}: header checksum mismatch", segment=segment, offset=0)
    try:
        meta = msgpack.unpackb(raw, raw=False)
    except Exception as exc:  # checksum-valid bytes that are not msgpack: damage all the same
        raise JournalCorrupt(
            f"segment {segment}: header metadata cannot be decoded ({exc.__class__.__name__})",
            segment=segment,
            offset=0,
        ) from None
    if not isinstance(meta, dict) or meta.get("segment") != segment:
        raise JournalCorrupt(f"segment {segment}: header names another segment", segment=segment, offset=0)
    base_seq = meta.get("base_seq", 0)
    if type(base_seq) is not int or base_seq < 0 or not isinstance(meta.get("snapshot"), dict | None):
        raise JournalCorrupt(f"segment {segment}: header metadata is malformed", segment=segment, offset=0)
    return meta, end, int(version)


def read_segment_header(disk: Disk, fd: int, segment: int) -> tuple[dict[str, Any], int]:
    meta, end, _version = read_segment_header_version(disk, fd, segment)
    return meta, end


def read_segment_header_version(disk: Disk, fd: int, segment: int) -> tuple[dict[str, Any], int, int]:
    head = disk.pread(fd, SEGMENT_HEADER.size, 0)
    if len(head) == SEGMENT_HEADER.size:
        size = SEGMENT_HEADER.unpack_from(head)[3]
        if size <= MAX_SEGMENT_META:
            head += disk.pread(fd, size, SEGMENT_HEADER.size)
    return decode_segment_header_version(head, segment)


def valid_frame_at(data: bytes | memoryview, pos: int) -> int:
    """The end offset of a whole, checksum-valid frame starting at `pos`, or -1."""
    if pos + FRAME_OVERHEAD > len(data):
        return -1
    magic, size, digest = _unpack_frame(data, pos)
    end = pos + FRAME_OVERHEAD + size
    if magic != FRAME_MAGIC or size > MAX_FRAME or end > len(data):
        return -1
    if _checksum(memoryview(data)[pos + FRAME_OVERHEAD : end]) != digest:
        return -1
    return int(end)


def one_torn_frame(rest: bytes) -> bool:
    """Whether the bytes after the last whole frame could all be what one interrupted append left.

    A torn append is one frame cut short: a kill -9 leaves a prefix of it, a power cut a prefix
    or zeros where its data never reached the disk. So if the first frame's length field says
    it ends before the end of the file, either that frame is whole but for its length field (one
    damaged frame), or the tear went through the length field and zeroed everything after it;
    anything else means the damage reaches into more than one record.
    """
    if len(rest) < FRAME_OVERHEAD:
        return True
    magic, size, digest = _unpack_frame(rest, 0)
    if size > MAX_FRAME or FRAME_OVERHEAD + size >= len(rest):
        return True
    if magic == FRAME_MAGIC and _checksum(memoryview(rest)[FRAME_OVERHEAD:]) == digest:
        return True
    after = rest[8:]  # from the checksum field on
    return after.count(0) == len(after)


def find_valid_frame(data: bytes, start: int) -> int:
    """The offset of the first valid frame at or after `start`, or -1 (resynchronisation)."""
    pos = data.find(FRAME_MAGIC, start)
    while pos != -1:
        if valid_frame_at(data, pos) != -1:
            return pos
        pos = data.find(FRAME_MAGIC, pos + 1)
    return -1


class Damage(NamedTuple):
    """Where scanning stopped short of the end of the data, and why."""

    offset: int
    reason: str
    needed: int  # for an incomplete frame: bytes it needs from `offset`; 0 for a bad frame


SCAN_BATCH = 128  # frames decoded together (one msgpack.Unpacker over their payloads)

_new_record = tuple.__new__


def scan(data: bytes, base: int, segment: int = 0) -> tuple[list[Record], int, Damage | None]:
    """Decode the whole frames of `data`, which starts at file offset `base`.

    Returns (records, offset after the last whole frame, damage or None). The caller decides
    whether damage is a torn tail, a frame cut by the read size, or corruption.
    """
    records: list[Record] = []
    view = memoryview(data)
    pos = 0
    while True:
        batch, pos, damage, _commits = scan_batch(data, view, pos, base, segment, len(data))
        records += batch
        if damage is not None or pos >= len(data) or not batch:
            return records, base + pos, damage


def scan_batch(
    data: bytes, view: memoryview, pos: int, base: int, segment: int, count: int, *, raw: bool = False
) -> tuple[list[Record], int, Damage | None, bool]:
    """Up to `count` whole frames of `data` from index `pos` (file offset `base` + `pos`).

    Returns (records, index after the last whole frame, damage or None, whether every record
    is a commit). Checksums are checked frame by frame; the payloads are then decoded by one
    unpacker, each one checked to be exactly one map or positional commit, and decoded one by
    one (to find the bad one) if any is not. Bodies are maps, or with `raw` as `RawRecord` has them.
    """
    starts: list[int] = []
    parts: list[memoryview] = []
    limit = len(data)
    damage: Damage | None = None
    first = pos
    while pos < limit and len(starts) < count:
        if pos + FRAME_OVERHEAD > limit:
            damage = Damage(base + pos, "incomplete frame header", FRAME_OVERHEAD)
            break
        magic, size, digest = _unpack_frame(data, pos)
        if magic != FRAME_MAGIC:
            damage = Damage(base + pos, "bad frame magic", 0)
            break
        if size > MAX_FRAME:
            damage = Damage(base + pos, f"frame length {size} exceeds the maximum", 0)
            break
        end = pos + FRAME_OVERHEAD + size
        if end > limit:
            damage = Damage(base + pos, "incomplete frame", FRAME_OVERHEAD + size)
            break
        payload = view[pos + FRAME_OVERHEAD : end]
        if _checksum(payload) != digest:
            damage = Damage(base + pos, "checksum mismatch", 0)
            break
        starts.append(pos)
        parts.append(payload)
        pos = end
    if not starts:
        return [], pos, damage, True
    decoded = _decode_together(starts, parts, base, segment, raw)
    if decoded is None:
        records, pos, damage = _decode_each(data, view, first, pos, base, segment, damage, raw)
        return records, pos, damage, False
    return decoded[0], pos, damage, decoded[1]


def _decode_together(
    starts: list[int], parts: list[memoryview], base: int, segment: int, raw: bool
) -> tuple[list[Record], bool] | None:
    """(records, all commits) of checksum-valid frames, or None if a payload is not exactly one
    msgpack map or positional commit."""
    joined = b"".join(parts)
    unpacker = msgpack.Unpacker(raw=False, use_list=False, strict_map_key=True, max_buffer_size=max(len(joined), 1))
    unpacker.feed(joined)
    # Nothing decoded here forms cycles: collecting while hundreds of maps are built would only
    # traverse them again and again.
    collecting = gc.isenabled()
    if collecting:
        gc.disable()
    try:
        return _decoded(unpacker, starts, parts, base, segment, raw)
    finally:
        if collecting:
            gc.enable()


def _decoded(
    unpacker: msgpack.Unpacker, starts: list[int], parts: list[memoryview], base: int, segment: int, raw: bool
) -> tuple[list[Record], bool] | None:
    records: list[Record] = []
    append = records.append
    tell = unpacker.tell
    new = _new_record
    used = 0
    commits = True
    try:
        for start, payload, value in zip(starts, parts, unpacker, strict=False):
            size = len(payload)
            used += size
            if tell() != used:
                return None  # each payload must be exactly one object
            body = value
            if type(value) is tuple:
                if len(value) != POSITIONAL_SIZE:
                    return None
                if raw:
                    more = value[8]
                    if more is not None and (type(more) is not dict or not _NOT_MORE.isdisjoint(more)):
                        return None  # as expand() would refuse it
                else:
                    body = expand(value)
                    if body is None:
                        return None
            elif type(value) is dict:
                if value.get("type", COMMIT) in (PREPARE, END):
                    commits = False
            else:
                return None
            append(new(Record, (segment, base + start, base + start + FRAME_OVERHEAD + size, body)))
    except Exception:  # any decoding failure: find the bad frame one by one
        return None
    return (records, commits) if len(records) == len(starts) else None


def _decode_each(
    data: bytes,
    view: memoryview,
    pos: int,
    stop: int,
    base: int,
    segment: int,
    damage: Damage | None,
    raw: bool = False,
) -> tuple[list[Record], int, Damage | None]:
    """Decode the (checksum-valid) frames from `pos` to `stop` one by one, stopping at a bad one."""
    records: list[Record] = []
    while pos < stop:
        size = _unpack_frame(data, pos)[1]
        end = pos + FRAME_OVERHEAD + size
        try:
            value, body = _unpack_both(view[pos + FRAME_OVERHEAD : end])
        except Exception as exc:  # any decoding failure is damage
            return records, pos, Damage(base + pos, f"undecodable payload ({exc.__class__.__name__})", 0)
        kept: Any = value if raw and type(value) is tuple else body  # RawRecord's form, or the map
        records.append(Record(segment, base + pos, base + end, kept))
        pos = end
    return records, pos, damage


class Tail(NamedTuple):
    """Unfinished bytes after the last whole unit: a torn frame or a prepare with no commit."""

    segment: int
    offset: int
    reason: str


class Cursor:
    """Follows the journal from a position, across segments, yielding only new whole records.

    `poll()` costs one fstat when nothing changed. A prepare record (the intent of a big-data
    write) is held back until the commit that follows it; a prepare with no commit after it is
    reported as an unfinished tail, like a torn frame. Nothing in a tail is ever applied.
    """

    def __init__(self, disk: Disk, journal_dir: str, segment: int, *, writable: bool) -> None:
        self.disk = disk
        self.dir = journal_dir
        self.writable = writable
        self.segment = segment
        self.fd = -1
        self.offset = 0  # end of the last whole unit read
        self.start = 0
        self.skip_through = 0  # records up to this sequence number are copies to step over
        self.header: dict[str, Any] = {}
        self.seen_size = -1  # file size when the last poll finished
        self.tail: Tail | None = None
        self.dangling_prepare: Record | None = None
        self.end_record: Record | None = None  # the segment's end marker, once read
        self.version = FORMAT_VERSION  # of the segment open: what pack() may write into it
        self._raw = False  # leave positional commits as tuples (poll_raw_batches)
        self._open(segment)

    # ------------------------------------------------------------------ files

    def path(self, segment: int) -> str:
        return os.path.join(self.dir, segment_name(segment))

    def _open(self, segment: int) -> None:
        flags = os.O_RDWR | os.O_APPEND if self.writable else os.O_RDONLY
        fd = self.disk.open(self.path(segment), flags)
        try:
            header, offset, version = read_segment_header_version(self.disk, fd, segment)
        except BaseException:
            self.disk.close(fd)
            raise
        if self.fd >= 0:
            self.disk.close(self.fd)
        self.fd = fd
        self.header = header
        self.version = version
        self.start = offset  # the first frame of this segment
        self.offset = offset
        self.skip_through = 0
        self.segment = segment
        self.seen_size = -1
        self.tail = None
        self.dangling_prepare = None
        self.end_record = None

    def rewind(self, record: Record) -> None:
        """Step back before a record the caller could not apply, so it is read again."""
        if record.segment == self.segment:
            self.offset = record.offset
            self.seen_size = -1

    def rotate(self, segment: int, after: bytes = b"") -> None:
        """Move to the segment this writer has just created, past the records `after` it copied
        there (records this instance has already applied)."""
        self._open(segment)
        self.offset += len(after)
        self.seen_size = self.offset

    def close(self) -> None:
        if self.fd >= 0:
            self.disk.close(self.fd)
            self.fd = -1

    @property
    def position(self) -> Position:
        return Position(self.segment, self.offset)

    def pack(self, body: dict[str, Any]) -> bytes:
        """A record body encoded for the segment this cursor appends to: a commit goes in
        positional form only into a segment whose header says format 3 or later."""
        return pack(body, positional=self.version >= POSITIONAL_VERSION)

    # ------------------------------------------------------------------ reading

    def changed(self) -> bool:
        """Could a poll find something new? One fstat in the common case."""
        if self.end_record is not None:
            return self.disk.exists(self.path(self.segment + 1))
        return self.tail is not None or self.disk.size(self.fd) != self.seen_size

    def changed_since(self, size: int) -> bool:
        """Whether the journal moved on from a segment size seen earlier (a new segment counts)."""
        if self.end_record is not None:
            return self.disk.exists(self.path(self.segment + 1))
        return self.disk.size(self.fd) != size

    def poll(self) -> Iterator[Record]:
        """Yield every new commit record, following end markers into the next segment.

        Raises JournalCorrupt on damage that is not a torn tail; sets `tail` when unfinished
        bytes remain at the end. While a record is being handled, `offset` is its end.
        """
        for batch in self.poll_batches():
            after = self.offset
            for rec in batch:
                self.offset = rec.end
                yield rec
            self.offset = after

    def poll_raw_batches(self) -> Iterator[list[RawRecord]]:
        """`poll_batches()` with a commit written in positional form left as its tuple, as
        `RawRecord` describes (for a reader of every record: it builds no map per record)."""
        self._raw = True
        try:
            yield from self.poll_batches()  # type: ignore[misc]  # the same tuples, with RawRecord's bodies
        finally:
            self._raw = False

    def poll_batches(self) -> Iterator[list[Record]]:
        """`poll()` a batch of records at a time: `offset` is the end of the batch meanwhile
        (a caller that stops in the middle of a batch must not use this cursor again)."""
        while True:
            if self.end_record is not None:
                nxt = self.segment + 1
                if not self.disk.exists(self.path(nxt)):
                    return  # the compaction that wrote the marker has not created it yet
                last = int(self.end_record.body.get("seq", -1))
                ended_at = self.end_record.offset
                self._open(nxt)
                base = self.header.get("base_seq")
                if not isinstance(base, int) or base > last:
                    raise JournalCorrupt(
                        f"segment {nxt} starts after record {base}, but segment {nxt - 1} ends at record {last}",
                        segment=nxt,
                        offset=0,
                    )
                self.skip_through = last  # records a background compaction copied over: seen already
                self._step_over_copies(ended_at)
                continue
            size = self.disk.size(self.fd)
            if size == self.seen_size and self.tail is None:
                return
            yield from self._read_to(size)
            if self.end_record is None:
                return

    def _step_over_copies(self, end_offset: int) -> None:
        """Just after crossing into a new segment: move past its leading copies of records the
        previous segment already held (those after its snapshot), checking their frames but not
        decoding them. The previous segment's end marker at `end_offset` and the snapshot its
        successor names say how many bytes were copied; if the frames do not end exactly there,
        nothing is skipped and the copies are read and stepped over one by one, by `skip_through`."""
        snapshot = self.header.get("snapshot")
        start = snapshot.get("offset") if isinstance(snapshot, dict) else None
        if type(start) is not int or not 0 <= start <= end_offset:
            return
        copied = end_offset - start
        if not copied:
            return
        if copied > MAX_FRAME * 4:
            return  # not worth a guess: read them
        data = self.disk.pread(self.fd, copied, self.offset)
        if len(data) != copied:
            return
        view = memoryview(data)
        pos = last = 0
        while 0 <= pos < copied:
            last = pos
            pos = valid_frame_at(view, pos)  # magic, length and checksum; -1 if not a frame
        if pos != copied:
            return
        try:  # the last copy must be the previous segment's last record
            body = unpack(view[last + FRAME_OVERHEAD :])
        except Exception:
            return
        if body.get("type", COMMIT) == COMMIT and body.get("seq") == self.skip_through:
            self.offset += copied

    def _read_to(self, size: int) -> Iterator[list[Record]]:
        self.tail = None
        self.dangling_prepare = None
        pending: Record | None = None
        pos = self.offset
        want = READ_CHUNK
        raw = self._raw
        while pos < size:
            data = self.disk.pread(self.fd, min(size - pos, want), pos)
            if not data:
                break  # the file shrank under us: a writer cut a tail; read again next poll
            want = READ_CHUNK
            view = memoryview(data)
            at = 0
            damage: Damage | None = None
            while at < len(data):
                records, at, damage, commits = scan_batch(data, view, at, pos, self.segment, SCAN_BATCH, raw=raw)
                skip = self.skip_through
                if records and not skip and commits:  # the usual batch
                    pending = None
                    self.offset = records[-1].end
                    yield records
                    if damage is not None:
                        break
                    continue
                out: list[Record] = []
                for rec in records:
                    body: Any = rec.body  # a map, or with poll_raw_batches a commit's tuple
                    kind = COMMIT if type(body) is tuple else body.get("type", COMMIT)
                    if kind == PREPARE:
                        pending = rec
                    elif kind == END:
                        if out:
                            yield out
                        if pending is not None or rec.end < size:
                            raise JournalCorrupt(
                                f"segment {self.segment}: end marker at offset {rec.offset} is not the last record",
                                segment=self.segment,
                                offset=rec.offset,
                            )
                        self.offset = rec.end
                        self.end_record = rec
                        self.seen_size = size
                        return
                    else:
                        pending = None
                        self.offset = rec.end
                        if skip and int(body[0] if type(body) is tuple else body.get("seq", 0)) <= skip:
                            continue  # a copy of a record applied from the previous segment
                        out.append(rec)
                if out:
                    yield out
                if damage is not None or not records:
                    break
            stop = pos + at
            pos = stop
            if damage is None:
                continue
            if damage.needed and damage.offset + damage.needed <= size:
                want = max(READ_CHUNK, damage.needed)  # only the read size cut this frame
                continue
            if self._classify(damage, size):
                size = self.disk.size(self.fd)  # the rest was written while we read: read it too
                continue
            break
        if pending is not None:
            self.dangling_prepare = pending
            self.tail = Tail(self.segment, pending.offset, "big-data write prepared but never committed")
        self.seen_size = size

    def _classify(self, damage: Damage, size: int) -> bool:
        """A torn tail (nothing valid after it, in the newest segment), corruption (raise), or a
        frame still being written when the size was taken (True: read again to the new size)."""
        rest = self.disk.pread(self.fd, size - damage.offset, damage.offset)
        later = find_valid_frame(rest, 1)
        if later != -1:
            raise JournalCorrupt(
                f"segment {self.segment}: damaged record at offset {damage.offset} ({damage.reason}); "
                f"a valid record follows at offset {damage.offset + later}",
                segment=self.segment,
                offset=damage.offset,
            )
        if self.disk.exists(self.path(self.segment + 1)):
            # A writer closes a segment only after its last append, so once the next segment
            # exists the size is final: an incomplete frame within a larger size was being
            # written when we looked, not cut short.
            if damage.needed and self.disk.size(self.fd) > size:
                return True
            raise JournalCorrupt(
                f"segment {self.segment}: damaged record at offset {damage.offset} "
                f"({damage.reason}) in a closed segment",
                segment=self.segment,
                offset=damage.offset,
            )
        if not one_torn_frame(rest):
            raise JournalCorrupt(
                f"segment {self.segment}: damaged record at offset {damage.offset} ({damage.reason}) "
                "with more damaged bytes after it: not one torn append",
                segment=self.segment,
                offset=damage.offset,
            )
        self.tail = Tail(self.segment, damage.offset, damage.reason)
        return False

    # ------------------------------------------------------------------ writing

    def append(self, frame: bytes, *, sync: bool) -> None:
        """Append one whole frame in one write, fsynced when asked; all or nothing.

        If the write or the fsync fails, the file is cut back to where it was, so a failed
        append leaves no partial frame and no record whose durability is unknown.
        """
        disk = self.disk
        before = self.offset
        failpoints.hit("append-before-write")
        if failpoints.fires("append-torn-write"):
            disk.write(self.fd, frame[: max(1, len(frame) // 2)])
            failpoints.die()
        try:
            disk.write(self.fd, frame)
            failpoints.hit("append-before-sync")
            if sync:
                disk.fdatasync(self.fd)
        except BaseException:
            self.truncate(before, sync=False)
            raise
        failpoints.hit("append-after-sync")
        self.offset = before + len(frame)
        self.seen_size = self.offset

    def settle(self, end: int) -> bool:
        """After an append was interrupted: whether the segment holds this writer's bytes through
        `end` (then they count, and the cursor moves there) or not (the caller undoes them)."""
        if self.disk.size(self.fd) < end:
            return False
        self.offset = end
        self.seen_size = end
        return True

    def truncate(self, offset: int, *, sync: bool) -> None:
        """Cut the segment back to `offset` (a writer undoing its own unfinished append)."""
        self.disk.truncate(self.fd, offset)
        if sync:
            self.disk.fsync(self.fd)
        self.offset = offset
        self.seen_size = offset

    def cut_tail(self, *, sync: bool) -> bytes:
        """Remove an unfinished tail (caller holds the writers' lock); returns the bytes cut."""
        tail = self.tail
        if tail is None:
            return b""
        size = self.disk.size(self.fd)
        cut = self.disk.pread(self.fd, size - tail.offset, tail.offset)
        self.disk.truncate(self.fd, tail.offset)
        if sync:
            self.disk.fsync(self.fd)
        self.offset = tail.offset
        self.seen_size = tail.offset
        self.tail = None
        self.dangling_prepare = None
        return cut
