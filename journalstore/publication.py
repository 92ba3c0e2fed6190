"""Publication: what containers/storage reads of a store, and how we tell its writes from ours.

containers/storage reads `images.json` and the big-data files, and reloads `images.json` only
when the first 64 bytes of `images.lock` (its "last writer" bytes) change. This module owns the
layout of those bytes, the incremental encoding of images.json (re-encoding only changed
records), and our *publication mark* (`journal/published`, which Go never reads): the sequence
number images.json holds, its checksum, and the 64 bytes we wrote into images.lock with it. Bytes
in images.lock that differ from the mark's mean Go saved since (docs/coexistence.md).

It does not append records and does not decide when to publish: the transaction does.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import xxhash

from . import snapshot as snap
from .fsio import Disk
from .record import Image
from .reducer import State

LAST_WRITER_SIZE = 64
MARK_MAGIC = b"JSTORPUB"
MARK_VERSION = 1
# magic, version, reserved, seq, xxh3 of images.json, the 64 last-writer bytes, xxh3 of all before
_MARK = struct.Struct("<8sHHQQ64s")
MARK_SIZE = _MARK.size + 8
READ_SIZE = LAST_WRITER_SIZE + MARK_SIZE
_LAST_WRITER = struct.Struct("<QQI")  # ns since the epoch, counter, pid; then random bytes
_counter = 0


class Mark(NamedTuple):
    """Our publication mark: images.json held record `seq` (checksum `xxh3`) when we wrote
    `last_writer` into images.lock."""

    seq: int
    xxh3: int
    last_writer: bytes


class LockBytes(NamedTuple):
    """What images.lock holds now: Go's last-writer bytes and our mark (None if absent or torn)."""

    last_writer: bytes
    mark: Mark | None

    @property
    def ours(self) -> bool:
        """Whether nobody saved since our last publication (the bytes are still the ones we wrote)."""
        return self.mark is not None and self.mark.last_writer == self.last_writer

    def writer(self) -> tuple[int, int]:
        """(nanoseconds, pid) the last-writer bytes name, as Go writes them ((0, 0) if none)."""
        if len(self.last_writer) < _LAST_WRITER.size:
            return 0, 0
        ns, _counter_value, pid = _LAST_WRITER.unpack_from(self.last_writer)
        return ns, pid


def parse(data: bytes) -> LockBytes:
    """Split what was read from the start of images.lock."""
    last_writer = data[:LAST_WRITER_SIZE]
    raw = data[LAST_WRITER_SIZE:READ_SIZE]
    mark = None
    if len(raw) == MARK_SIZE and xxhash.xxh3_64_intdigest(raw[:-8]) == int.from_bytes(raw[-8:], "little"):
        magic, version, _reserved, seq, digest, written = _MARK.unpack_from(raw)
        if magic == MARK_MAGIC and version == MARK_VERSION:
            mark = Mark(seq, digest, written)
    return LockBytes(last_writer, mark)


def new_last_writer() -> bytes:
    """Fresh last-writer bytes in Go's layout (time, counter, pid, random), as its Touch() makes."""
    global _counter
    _counter += 1
    head = _LAST_WRITER.pack(time.time_ns(), _counter, os.getpid() & 0xFFFFFFFF)
    return head + os.urandom(LAST_WRITER_SIZE - len(head))


def lock_bytes(seq: int, digest: int, last_writer: bytes) -> bytes:
    """The bytes to write at the start of images.lock: last-writer bytes, then our mark."""
    body = _MARK.pack(MARK_MAGIC, MARK_VERSION, 0, seq, digest, last_writer)
    return last_writer + body + xxhash.xxh3_64_intdigest(body).to_bytes(8, "little")


def digest(data: bytes) -> int:
    """The checksum a mark records of images.json."""
    return xxhash.xxh3_64_intdigest(data)


class Encoder:
    """images.json bytes, kept up to date record by record: O(change) Python work per call.

    The encoded records are kept in a dict in the state's order (creation order: an update keeps
    its place, a new record goes last, a deleted one leaves), and the callers name the images
    each applied record touched (`touched`). Anything the encoder was not told about (a state
    replaced by a reload, a merge in memory) makes it start over from the state (`reset`).
    What is left per call is joining the cached bytes: C work over O(n) bytes, as writing them is.
    """

    def __init__(self) -> None:
        self._parts: dict[str, bytes] = {}
        self._images: dict[str, Image] = {}
        self._state: State | None = None  # the state the parts mirror (None: not started)
        self._dirty: set[str] | None = None  # images touched since the last call; None: all

    def reset(self) -> None:
        """Forget what changed: the next call encodes every record (and stops tracking until then)."""
        self._state = None
        self._dirty = None

    def touched(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Note the images a record's events changed (cheap; nothing is kept before the first call)."""
        dirty = self._dirty
        if dirty is None:
            return
        for event in events:
            image_id = event.get("id")
            if not isinstance(image_id, str):
                if event.get("op") == "import":
                    self.reset()
                    return
                continue
            if event.get("op") in ("create", "put-image") and image_id in self._images:
                # An ID that comes back: the state may have moved it to the end (a delete in an
                # earlier record) or not (in the same one). Rare: start over instead of guessing.
                self.reset()
                return
            dirty.add(image_id)

    def encode(self, state: State) -> bytes:
        """The images.json bytes of the state's records, in order (byte for byte `snapshot.encode`)."""
        parts, images = self._parts, self._images
        dirty = self._dirty
        if self._state is not state or dirty is None:
            parts.clear()
            images.clear()
            for image in state:
                parts[image.id] = _encoded(image)
                images[image.id] = image
        else:
            for image_id in dirty:
                found = state.get(image_id)
                if found is None:
                    parts.pop(image_id, None)
                    images.pop(image_id, None)
                elif images.get(image_id) is not found:
                    parts[image_id] = _encoded(found)
                    images[image_id] = found
            if len(parts) != len(state):  # never expected; a full pass is always right
                self.reset()
                return self.encode(state)
        self._state = state
        self._dirty = set()
        values = list(parts.values())
        if not values:
            return b"[]"
        values[0] = b"[" + values[0]
        values[-1] = values[-1] + b"]"
        return b",".join(values)


def _encoded(image: Image) -> bytes:
    return snap.image_json_text(image).translate(snap.GO_ESCAPES).encode("utf-8")


def write_images_json(disk: Disk, path: str, data: bytes, *, sync: bool) -> None:
    """Replace images.json whole (temporary file, rename), as containers/storage does."""
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".tmp-images.json-{os.getpid()}")
    disk.write_file(tmp, data, sync=sync, mode=0o600)
    disk.rename(tmp, path)
    if sync:
        disk.fsync_dir(directory)
