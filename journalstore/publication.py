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
from typing import NamedTuple

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
    """images.json bytes, re-encoding only the records that changed since the last call.

    Records are immutable, so a record object seen before has the same encoding; the rest of the
    work is joining the cached bytes (O(n) bytes, no Python work per unchanged image).
    """

    def __init__(self) -> None:
        self._cache: dict[str, tuple[Image, bytes]] = {}

    def encode(self, images: State) -> bytes:
        """The images.json bytes of these records, in order (byte for byte `snapshot.encode`);
        `images` is iterated twice at most (a State is)."""
        cache = self._cache
        parts: list[bytes] = []
        append = parts.append
        for image in images:
            hit = cache.get(image.id)
            if hit is not None and hit[0] is image:
                append(hit[1])
                continue
            text = snap.image_json_text(image).translate(snap.GO_ESCAPES).encode("utf-8")
            cache[image.id] = (image, text)
            append(text)
        if len(cache) > 2 * len(parts) + 64:  # deleted images: forget them now and then
            self._cache = {image.id: cache[image.id] for image in images}
        return b"[" + b",".join(parts) + b"]"


def write_images_json(disk: Disk, path: str, data: bytes, *, sync: bool) -> None:
    """Replace images.json whole (temporary file, rename), as containers/storage does."""
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".tmp-images.json-{os.getpid()}")
    disk.write_file(tmp, data, sync=sync, mode=0o600)
    disk.rename(tmp, path)
    if sync:
        disk.fsync_dir(directory)
