"""The history index: each image's newest record, so that its history is a walk of its own records.

Every commit record (journal format 2) names, for each image it touches, the position of that
image's previous record (`prev`), like ZODB FileStorage's back-pointers; this index keeps only
the head of each chain: image ID -> (seq, segment, offset) of its newest record, plus the image
that last took each name and, for retention, the newest record that kept each past big-data
blob. Memory is O(images ever), the walk O(the image's own records). The index is a function
of the journal: the reducer's caller (`replay.apply_record`, the writer's commit) updates it
after each record, and each snapshot gets it as a sidecar (`journal/history-N.msgpack`, best
effort like the binary twin: without it, the index restarts at the snapshot and older history
is found by a scan). docs/journal-format.md, "History links", is the byte-level description.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import struct
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack
import xxhash

from . import events as ev
from . import journal as jn
from .blobs import kept_digests
from .fsio import Disk

if TYPE_CHECKING:
    from .reducer import State

Pointer = tuple[int, int, int]  # (seq, segment, offset) of a commit record

MARK_EVERY = 64  # every image's 64th, 128th, ... linked record is remembered: a walk to a moment
# in the past starts at most this many records after it, however long the image's history since

SIDECAR_MAGIC = b"JSTORHIX"
SIDECAR_VERSION = 1
_SIDECAR_HEADER = struct.Struct("<8sHHIQ")  # magic, version, reserved, unused, payload xxh3


def sidecar_name(segment: int) -> str:
    """The journal-directory name of the history index as of segment `segment`'s snapshot."""
    return f"history-{segment:08d}.msgpack"


_NAMING = frozenset((ev.CREATE, ev.SET_NAMES, ev.ADD_NAMES, ev.PUT_IMAGE))  # events that give names


class HistoryIndex:
    """Heads of the per-image record chains, name holders and kept blobs, as of record `seq`.

    `chain_from`: every record from this sequence number on is linked (a record of format 1, or
    a snapshot loaded without its sidecar, moves it forward). `origin`: the index has seen every
    record from this one on (names and blobs are complete from there).
    """

    __slots__ = ("blobs", "chain_from", "counts", "last", "marks", "names", "origin", "seq")

    def __init__(self, seq: int, chain_from: int, origin: int) -> None:
        self.seq = seq
        self.chain_from = chain_from
        self.origin = origin
        self.last: dict[str, Pointer] = {}
        self.names: dict[str, str] = {}
        self.blobs: dict[str, int] = {}  # blob digest -> newest record that kept it
        self.counts: dict[str, int] = {}  # image ID -> linked records noted
        self.marks: dict[str, tuple[Pointer, ...]] = {}  # image ID -> every MARK_EVERY-th of them

    @classmethod
    def fresh(cls, state: State) -> HistoryIndex:
        """An index starting at a state (a snapshot without its sidecar, or an empty store)."""
        index = cls(state.seq, state.seq + 1, state.seq + 1)
        index.names = dict(state.by_name)
        return index

    def copy(self) -> HistoryIndex:
        other = HistoryIndex(self.seq, self.chain_from, self.origin)
        other.last = dict(self.last)
        other.names = dict(self.names)
        other.blobs = dict(self.blobs)
        other.counts = dict(self.counts)
        other.marks = dict(self.marks)  # tuples: appending replaces them, so sharing is safe
        return other

    def start_before(self, image_id: str, seq: int) -> Pointer | None:
        """Where to start walking back to an image's records up to `seq`: its first mark after
        `seq`, else its newest record (None if it has no linked record)."""
        marks = self.marks.get(image_id, ())
        try:
            at = bisect.bisect_right([int(mark[0]) for mark in marks], seq)
        except (TypeError, ValueError, IndexError):  # a sidecar's marks are only a shortcut
            at = len(marks)
        return marks[at] if at < len(marks) else self.last.get(image_id)

    # ------------------------------------------------------------------ writing a record

    def links(self, seq: int, touched: Iterable[str], also: Mapping[str, Sequence[int]]) -> dict[str, Any]:
        """The history fields of a new commit record that touches these images."""
        last = self.last
        prev = {image_id: last[image_id] for image_id in touched if image_id in last}  # packed as arrays
        body: dict[str, Any] = {"chain": min(self.chain_from, seq)}
        if prev:
            body["prev"] = prev
        if also:
            body["also"] = {k: list(v) for k, v in also.items()}
        return body

    # ------------------------------------------------------------------ applying a record

    def note(
        self, state: State, body: Mapping[str, Any], segment: int, offset: int, images: list[str] | None = None
    ) -> None:
        """Take in a commit record just applied to `state` (which is the state after it);
        `images`: the images it touches, when its writer already knows them."""
        seq = int(body.get("seq", 0))
        events = body.get("events", ())
        names = self.names
        for event in events:
            op = event.get("op")
            if op not in _NAMING:
                continue
            given: Any = event.get("names") if op == ev.CREATE else given_names(event)
            if given:
                for name in given:
                    names[name] = event.get("id")
        for digest in kept_digests(body):
            self.blobs[digest] = seq
        if "chain" not in body:  # format 1: no links, so chains restart after it
            if self.last:
                self.last.clear()
                self.counts.clear()
                self.marks.clear()
            self.chain_from = seq + 1
        else:
            pointer = (seq, segment, offset)
            last = self.last
            counts = self.counts
            for image_id in touched(state, events, body.get("also")) if images is None else images:
                last[image_id] = pointer
                count = counts.get(image_id, 0) + 1
                counts[image_id] = count
                if not count % MARK_EVERY:
                    marks = self.marks
                    marks[image_id] = (*marks.get(image_id, ()), pointer)
        self.seq = seq

    # ------------------------------------------------------------------ the sidecar

    def encode(self, json_digest: str) -> bytes:
        payload = msgpack.packb(
            {
                "json_xxh3": json_digest,
                "seq": self.seq,
                "chain_from": self.chain_from,
                "origin": self.origin,
                "last": self.last,
                "names": self.names,
                "blobs": self.blobs,
                "counts": self.counts,
                "marks": self.marks,
            },
            use_bin_type=True,
        )
        head = _SIDECAR_HEADER.pack(SIDECAR_MAGIC, SIDECAR_VERSION, 0, 0, xxhash.xxh3_64_intdigest(payload))
        return head + payload

    @classmethod
    def decode(cls, data: bytes, json_digest: str, seq: int) -> HistoryIndex | None:
        """The index a sidecar holds, or None if it does not belong to that snapshot."""
        if len(data) < _SIDECAR_HEADER.size:
            return None
        magic, version, _r, _u, digest = _SIDECAR_HEADER.unpack_from(data)
        payload = memoryview(data)[_SIDECAR_HEADER.size :]
        if magic != SIDECAR_MAGIC or version != SIDECAR_VERSION or xxhash.xxh3_64_intdigest(payload) != digest:
            return None
        try:
            body = msgpack.unpackb(payload, raw=False, use_list=False, strict_map_key=False)
            if body.get("json_xxh3") != json_digest or body.get("seq") != seq:
                return None
            index = cls(seq, int(body["chain_from"]), int(body["origin"]))
            index.last = body["last"]
            index.names = body["names"]
            index.blobs = body["blobs"]
            index.counts = body.get("counts", {})  # absent from the first sidecars: marks restart
            index.marks = body.get("marks", {})
        except Exception:  # a damaged sidecar is only a missed shortcut
            return None
        if not all(isinstance(x, dict) for x in (index.last, index.names, index.blobs, index.counts, index.marks)):
            return None
        return index


def touched(state: State, events: Sequence[Mapping[str, Any]], also: Any) -> list[str]:
    """The images a record changed or concerns (the state is the one after the record)."""
    if len(events) == 1 and not also:  # the usual record: one event of one image
        event = events[0]
        op = event.get("op")
        if op not in (ev.IMPORT, ev.EXTERNAL_REWRITE):
            image_id = event.get("id")
            return [image_id] if isinstance(image_id, str) else []
    out: dict[str, None] = {}
    for event in events:
        op = event.get("op")
        if op == ev.IMPORT:
            out.update((image.id, None) for image in state)
        elif op == ev.EXTERNAL_REWRITE:
            for key in ("added", "changed", "removed"):
                out.update((image_id, None) for image_id in event.get(key, ()))
        else:
            image_id = event.get("id")
            if isinstance(image_id, str):
                out[image_id] = None
    if isinstance(also, Mapping):
        out.update((image_id, None) for image_id in also)
    return list(out)


_LISTS = ("added", "changed", "removed")


def concerning(body: Mapping[str, Any], image_id: str) -> list[int]:
    """Indexes of the events of a linked record that belong to this image's history."""
    found: list[int] = []
    for index, event in enumerate(body.get("events", ())):
        op = event.get("op")
        listed = op == ev.EXTERNAL_REWRITE and any(image_id in event.get(k, ()) for k in _LISTS)
        if event.get("id") == image_id or op == ev.IMPORT or listed:
            found.append(index)
    also = body.get("also")
    if isinstance(also, Mapping) and image_id in also:
        found = sorted({*found, *also[image_id]})
    return found


def given_names(event: Mapping[str, Any]) -> Sequence[str]:
    """The names an event gives its image, taking them from any image that holds them."""
    op = event.get("op")
    if op in (ev.SET_NAMES, ev.ADD_NAMES):
        given = event.get("names", ())
    elif op == ev.PUT_IMAGE:
        image = event.get("image")
        given = image.get("names", ()) if isinstance(image, Mapping) else ()
    else:
        return ()
    return given if isinstance(given, tuple | list) else ()


def victims(state: State, event: Mapping[str, Any]) -> list[str]:
    """Images an event about to be applied takes a name from (it changes them without naming them)."""
    given = given_names(event)
    if not given:
        return []
    image_id = event.get("id")
    by_name = state.by_name
    out: list[str] = []
    for name in given:
        holder = by_name.get(name)
        if holder is not None and holder != image_id and holder not in out:
            out.append(holder)
    return out


# ---------------------------------------------------------------------- the sidecar on disk


def load(
    disk: Disk, journal_dir: str, segment: int, reference: Mapping[str, Any] | None, seq: int
) -> HistoryIndex | None:
    """The sidecar of the snapshot segment `segment` starts from, if it mirrors that snapshot."""
    try:
        data = disk.read_file(os.path.join(journal_dir, sidecar_name(segment)))
    except OSError:
        return None
    digest = str(reference.get("xxh3")) if reference else ""
    return HistoryIndex.decode(data, digest, seq)


def stage(disk: Disk, journal_dir: str, segment: int, index: HistoryIndex, json_digest: str) -> str:
    """Write a sidecar to a temporary file of this thread's own; '' if that failed."""
    path = os.path.join(journal_dir, sidecar_name(segment)) + f".tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        disk.write_file(path, index.encode(json_digest), sync=False)
    except OSError:
        return ""
    return path


# ---------------------------------------------------------------------- walking a chain


class Linked(NamedTuple):
    """One record of an image's chain, newest first."""

    record: jn.Record
    events: list[int]  # the indexes of its events that belong to the image's history


class ChainReader:
    """Reads records at known positions (preads through descriptors kept open for one walk)."""

    def __init__(self, disk: Disk, journal_dir: str) -> None:
        self.disk = disk
        self.dir = journal_dir
        self._fds: dict[int, int] = {}

    def _fd(self, segment: int) -> int | None:
        fd = self._fds.get(segment)
        if fd is None:
            try:
                fd = self.disk.open(os.path.join(self.dir, jn.segment_name(segment)), os.O_RDONLY)
            except OSError:
                return None
            self._fds[segment] = fd
        return fd

    def read(self, pointer: Sequence[int]) -> jn.Record | None:
        """The commit record at a pointer, or None if it is not there (pruned, cut, damaged)."""
        seq, segment, offset = int(pointer[0]), int(pointer[1]), int(pointer[2])
        fd = self._fd(segment)
        if fd is None:
            return None
        data = self.disk.pread(fd, 4096, offset)
        if len(data) < jn.FRAME_OVERHEAD:
            return None
        size = jn.FRAME_HEADER.unpack_from(data)[1]
        if size > jn.MAX_FRAME:
            return None
        if len(data) < jn.FRAME_OVERHEAD + size:
            data += self.disk.pread(fd, jn.FRAME_OVERHEAD + size - len(data), offset + len(data))
        end = jn.valid_frame_at(data, 0)
        if end == -1:
            return None
        try:
            body = jn.unpack(memoryview(data)[jn.FRAME_OVERHEAD : end])
        except Exception:
            return None
        if body.get("seq") != seq or body.get("type", jn.COMMIT) != jn.COMMIT:
            return None
        return jn.Record(segment, offset, offset + end, body)

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                self.disk.close(fd)
        self._fds.clear()


class Walk(NamedTuple):
    """The linked part of an image's history, and what lies before it."""

    records: list[Linked]  # newest first
    scan_below: int  # records before this seq may hold more of its events (0: none)
    broken: bool  # a pointer led nowhere: fall back to a scan of everything


def walk(
    reader: ChainReader, head: Pointer | None, image_id: str, *, first_seq: int, chain_from: int, since_seq: int | None
) -> Walk:
    """Follow an image's chain back from its newest record to the oldest one kept.

    `first_seq`: records up to it were pruned. Stops early at `since_seq`.
    """
    out: list[Linked] = []
    pointer: Sequence[int] | None = head
    if pointer is None:
        return Walk(out, chain_from if chain_from > first_seq + 1 else 0, False)
    while pointer is not None:
        seq = int(pointer[0])
        if seq <= first_seq or (since_seq is not None and seq < since_seq):
            return Walk(out, 0, False)
        rec = reader.read(pointer)
        if rec is None:
            return Walk(out, 0, True)
        body = rec.body
        out.append(Linked(rec, concerning(body, image_id)))
        prev = body.get("prev")
        pointer = prev.get(image_id) if isinstance(prev, Mapping) else None
        if pointer is None:
            chain = int(body.get("chain", seq))
            return Walk(out, chain if chain > first_seq + 1 else 0, False)
    return Walk(out, 0, False)


def linked_records(reader: ChainReader, head: Pointer | None, image_id: str) -> Iterator[jn.Record]:
    """An image's linked records, newest first, as far as the links reach."""
    pointer: Sequence[int] | None = head
    while pointer is not None:
        rec = reader.read(pointer)
        if rec is None:
            return
        yield rec
        prev = rec.body.get("prev")
        pointer = prev.get(image_id) if isinstance(prev, Mapping) else None
