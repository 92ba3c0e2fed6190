"""`Live`: what one open store instance holds now, shared by the modules that run it.

The state (records and indexes), the journal cursor it is caught up to, the writers' lock, the
big-data files, and the recovery work noted for the next writer. It is a plain holder with no
logic of its own beyond the record body every writer appends: opening fills it, catching up and
transactions advance it, compaction rotates its cursor. Nothing outside those modules and the
facade touches it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from . import journal as jn
from .bigdata import BigDataFiles
from .blobs import Blobs
from .errors import StoreIsReadOnly, StoreWarning
from .history_index import HistoryIndex
from .layout import Layout
from .locking import WriterLock, hold_read_lock
from .publication import LAST_WRITER_SIZE, MARK_SIZE, Encoder, Mark
from .reducer import State


class Live:
    """The moving parts of one open store; see the module docstring for who may change what."""

    def __init__(self, layout: Layout, *, read_only: bool, actor: str, shared: bool) -> None:
        self.layout = layout
        self.disk = layout.disk
        self.path = layout.path
        self.sync = layout.sync
        self.actor = actor
        self.files = BigDataFiles(layout.disk, layout.path, layout.journal_dir)
        self.mutex = threading.RLock()  # the instance's state, cursor and transaction slot
        self.pid = os.getpid()
        self.uid = os.getuid()
        self.lock: WriterLock | None = None
        self.cursor: jn.Cursor | None = None
        self.state = State(read_only)
        self.index: HistoryIndex | None = None  # heads of the image chains, as of state.seq
        self.blobs = Blobs(layout.disk, layout.journal_dir, layout.sync)
        self.read_only = read_only
        self.read_only_reason = "the store was opened read-only"
        self.segment_events = 0  # events in the current segment, for the compaction threshold
        self.legacy_stamp: tuple[int, int, int] | None = None  # images.json of a store with no journal
        # Recovery work for the next writer, noted while opening or catching up.
        self.needs_repair = True  # look before the next write
        self.repaired = False  # staging and temporaries not yet cleaned by this instance
        self.publish_pending = False  # images.json is not yet the current segment's snapshot
        self.foreign_data: bytes | None = None  # an images.json another program wrote, to merge
        self.foreign_rewrite = False
        self.compact_soon = False  # a snapshot to (re)write before the next write
        # Living next to containers/storage (docs/coexistence.md).
        self.shared = shared  # publish images.json and the last-writer bytes after every commit
        self.encoder = Encoder()  # images.json, re-encoding only changed records
        self.lock_seen = b""  # the start of images.lock when this instance last looked at it
        self.overlay = False  # the state holds a Go save merged in memory only (a reader's)
        self.go_pending = False  # a Go save seen at open, to merge under the lock
        self.accepting = False  # merge images.json as a deliberate edit, however it changed
        self.import_mark: Mark | None = None  # an import's record of images.lock, until our first mark
        self._head_fd = -1  # images.lock opened for reading, when there is no writers' lock

    def read_last_writer(self) -> bytes:
        """containers/storage's 64 last-writer bytes at the start of images.lock (b"" if there
        is no lock file). One pread: readers call it without any lock."""
        if self.lock is not None:
            return self.lock.read_head(LAST_WRITER_SIZE)
        if self._head_fd < 0:
            try:
                self._head_fd = self.disk.open(self.layout.lock_file, os.O_RDONLY)
            except (FileNotFoundError, PermissionError):
                return b""
        return self.disk.pread(self._head_fd, LAST_WRITER_SIZE, 0)

    def read_lock_head(self) -> bytes:
        """The last-writer bytes, then our publication mark (journal/published), as one string
        for publication.parse."""
        last_writer = self.read_last_writer()
        try:
            mark = self.disk.read_file(self.layout.mark_file)[:MARK_SIZE]
        except (FileNotFoundError, PermissionError):
            mark = b""
        return last_writer + mark if len(last_writer) == LAST_WRITER_SIZE else last_writer

    def write_lock_head(self, head: bytes) -> None:
        """Publish: our mark first, then the last-writer bytes Go readers compare (lock held).
        Neither is fsynced (Go does not sync images.lock either); a cut between the two reads as
        "not ours", which the images.json checksum then settles (foreign.go_saved)."""
        assert self.lock is not None
        fd = self.disk.open(self.layout.mark_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            self.disk.pwrite(fd, head[LAST_WRITER_SIZE:], 0)
        finally:
            self.disk.close(fd)
        self.lock.write_head(head[:LAST_WRITER_SIZE])
        self.lock_seen = head

    @contextlib.contextmanager
    def read_locked(self, timeout: float = 30.0) -> Iterator[None]:
        """Hold containers/storage's read lock on images.lock (no save can be in progress).
        Readers take it only to confirm a problem they saw without it."""
        fd = self.disk.open(self.layout.lock_file, os.O_RDONLY)
        try:
            hold_read_lock(fd, timeout, self.layout.lock_file)
            yield
        finally:
            self.disk.close(fd)  # closing the descriptor releases its OFD lock

    def close_head(self) -> None:
        if self._head_fd >= 0:
            self.disk.close(self._head_fd)
            self._head_fd = -1

    def check_writable(self) -> None:
        if self.read_only:
            raise StoreIsReadOnly(f"cannot modify the image store at {self.path}: {self.read_only_reason}")

    def fall_back_read_only(self, reason: str) -> None:
        self.read_only = True
        self.state.read_only = True
        self.read_only_reason = reason
        warnings.warn(f"opening {self.path} read-only: {reason}", StoreWarning, stacklevel=5)

    def record_body(
        self, seq: int, events: Sequence[Mapping[str, Any]], writer: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The body of a commit record: who wrote these events, and when (`writer` overrides
        time, pid, uid and actor for changes another program made)."""
        body = {
            "type": jn.COMMIT,
            "seq": seq,
            "time": time.time_ns(),
            "pid": self.pid,
            "uid": self.uid,
            "actor": self.actor,
            "events": events,
        }
        if writer:
            body.update(writer)
        return body
