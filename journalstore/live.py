"""`Live`: what one open store instance holds now, shared by the modules that run it.

The state (records and indexes), the journal cursor it is caught up to, the writers' lock, the
big-data files, and the recovery work noted for the next writer. It is a plain holder with no
logic of its own beyond the record body every writer appends: opening fills it, catching up and
transactions advance it, compaction rotates its cursor. Nothing outside those modules and the
facade touches it.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from . import journal as jn
from .bigdata import BigDataFiles
from .blobs import Blobs
from .errors import StoreIsReadOnly, StoreWarning
from .history_index import HistoryIndex
from .layout import Layout
from .locking import WriterLock
from .reducer import State


class Live:
    """The moving parts of one open store; see the module docstring for who may change what."""

    def __init__(self, layout: Layout, *, read_only: bool, actor: str) -> None:
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

    def check_writable(self) -> None:
        if self.read_only:
            raise StoreIsReadOnly(f"cannot modify the image store at {self.path}: {self.read_only_reason}")

    def fall_back_read_only(self, reason: str) -> None:
        self.read_only = True
        self.state.read_only = True
        self.read_only_reason = reason
        warnings.warn(f"opening {self.path} read-only: {reason}", StoreWarning, stacklevel=5)

    def record_body(self, seq: int, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The body of a commit record: who wrote these events, and when."""
        return {
            "type": jn.COMMIT,
            "seq": seq,
            "time": time.time_ns(),
            "pid": self.pid,
            "uid": self.uid,
            "actor": self.actor,
            "events": events,
        }
