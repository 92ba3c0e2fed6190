"""Compaction: fold the journal into a snapshot, rotate to a new segment, publish, prune.

Owns when a snapshot is due, writing it (staged without the lock, renamed under it), closing
the segment with an end marker, starting the next segment from the snapshot, finishing a
rotation a crash interrupted, making images.json the current snapshot, retention, and the
background thread that does all this off the write path. It never changes the state (it only
reads a consistent copy of its records) and takes the writers' lock only through the callables
it is given. Every step and what a crash after it leaves: docs/snapshots.md.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from . import failpoints, history_index, replay
from . import journal as jn
from . import publication as pub
from . import snapshot as snap
from .errors import JournalCorrupt, StoreWarning
from .history_index import HistoryIndex
from .layout import journal_file_segment
from .live import Live
from .record import Image

DEFAULT_COMPACT_EVERY = 100_000
MIN_COMPACT_EVENTS = 10_000  # a small store's journal: a few MiB, replayed in tens of ms
DEFAULT_COMPACT_BYTES = 64 * 1024 * 1024


class Plan(NamedTuple):
    """A snapshot to write: the records at `seq`, which ends at `offset` of `segment`."""

    images: list[Image]
    digest_orders: dict[str, list[str]]
    seq: int
    segment: int
    offset: int
    history: HistoryIndex | None = None  # the history index at `seq`, saved as the snapshot's sidecar


class Staged(NamedTuple):
    """A snapshot written to temporary files, not yet renamed into place."""

    archive: str  # its name in journal/
    digest: str
    size: int
    tmp: str
    twin_tmp: str
    index_tmp: str = ""  # the history-index sidecar ('' if none was written)


class Compactor:
    """Snapshots, rotation, publication and retention of one open store."""

    def __init__(
        self,
        live: Live,
        *,
        acquire: Callable[[], None],
        release: Callable[[], None],
        compact_every: int | None,
        compact_bytes: int | None,
        keep_segments: int | None,
        keep_age: float | None,
    ) -> None:
        self._live = live
        self._layout = live.layout
        self._disk = live.disk
        self._acquire = acquire  # the writers' lock, caught up and repaired
        self._release = release
        self.compact_every = compact_every
        self.compact_bytes = compact_bytes
        self.keep_segments = keep_segments
        self.keep_age = keep_age
        self._thread: threading.Thread | None = None  # an automatic compaction in progress

    # ------------------------------------------------------------------ when

    def due(self, segment_bytes: int) -> bool:
        """Whether the current segment should be folded into a snapshot.

        After `compact_every` events or `compact_bytes` bytes at most; a smaller store sooner,
        once the segment holds as many events as the store has images (at least
        MIN_COMPACT_EVENTS): opening it then never replays more events than the snapshot holds
        images (or MIN_COMPACT_EVENTS), and since that threshold grows with the store, snapshots
        cost O(1) per event amortized. The floor keeps that constant small in small stores, where
        a snapshot after every thousand events cost a fifth of a write's time.
        """
        if self.compact_bytes is not None and segment_bytes >= self.compact_bytes:
            return True
        if self.compact_every is None:
            return False
        threshold = min(self.compact_every, max(MIN_COMPACT_EVENTS, self._live.state.count))
        return self._live.segment_events >= threshold

    def plan(self) -> Plan:
        """The state as it is now, as a snapshot to write (caller holds the lock)."""
        live = self._live
        cursor = live.cursor
        assert cursor is not None
        state = live.state
        images = [image for image in state.images.values() if image is not None]
        index = None if live.index is None else live.index.copy()
        return Plan(images, state.digest_orders(), state.seq, cursor.segment, cursor.offset, index)

    # ------------------------------------------------------------------ in the background

    def start_background(self) -> None:
        """Snapshot the state as it is now and write it from a thread, so that no write waits
        for a compaction (caller holds the lock, outside any transaction).

        Records are immutable, so a copy of the record list is a consistent snapshot; writers
        go on appending while it is serialized, and the rotation copies their records into the
        new segment (docs/snapshots.md).
        """
        if self._thread is not None and self._thread.is_alive():
            return
        thread = threading.Thread(
            target=self._compact_in_background, args=(self.plan(),), name="journalstore-compaction", daemon=True
        )
        thread.start()  # before other threads can see it: joining an unstarted thread raises
        self._thread = thread

    def _compact_in_background(self, plan: Plan) -> None:
        live = self._live
        try:
            # Encoded and written without the lock, but put in place only under it: the archive's
            # name is the next segment's, which another writer may have created meanwhile.
            staged = self.stage(plan)
            try:
                with live.mutex:
                    if live.lock is None or live.cursor is None or os.getpid() != live.pid:
                        return  # closed (or forked) meanwhile: the snapshot is not needed
                    self._acquire()
                    try:
                        if live.cursor.segment == plan.segment:  # nobody rotated meanwhile
                            self.rotate(plan, self.install(plan, staged))
                    finally:
                        self._release()
            finally:
                self.discard(staged)  # what was not put in place
        except Exception as exc:  # a failed compaction loses nothing: the journal still holds it all
            warnings.warn(f"automatic compaction of {live.path} failed: {exc}", StoreWarning, stacklevel=2)

    def wait(self) -> None:
        """Wait until an automatic compaction this instance started has finished."""
        # Not reset to None afterwards: another thread may have started the next one meanwhile.
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def forget_thread(self) -> None:
        """After a fork: the parent's compaction thread did not come along."""
        self._thread = None

    # ------------------------------------------------------------------ the steps

    def compact_locked(self) -> None:
        """Write a snapshot of the state now, close the segment and start the next one."""
        plan = self.plan()
        self.rotate(plan, self.install(plan, self.stage(plan)))

    def stage(self, plan: Plan) -> Staged:
        """Encode the snapshot into temporary files of this thread's own (needs no lock)."""
        journal_dir = self._layout.journal_dir
        segment = plan.segment + 1
        data = snap.encode(plan.images)
        archive = snap.archive_name(segment)
        digest = snap.snapshot_digest(data)
        suffix = f".tmp-{os.getpid()}-{threading.get_ident()}"
        tmp = os.path.join(journal_dir, archive) + suffix
        self._disk.write_file(tmp, data, sync=self._layout.sync)
        twin = os.path.join(journal_dir, snap.twin_name(segment))
        try:
            twin_data = snap.encode_twin(plan.images, plan.digest_orders, digest, len(data))
            self._disk.write_file(twin + suffix, twin_data, sync=False)
        except OSError as exc:
            warnings.warn(f"could not write {twin}: {exc}", StoreWarning, stacklevel=4)
        index_tmp = ""
        if plan.history is not None:
            index_tmp = history_index.stage(self._disk, journal_dir, segment, plan.history, digest)
        return Staged(archive, digest, len(data), tmp, twin + suffix, index_tmp)

    def install(self, plan: Plan, staged: Staged) -> dict[str, Any]:
        """Rename a staged snapshot into place (lock held, segment `plan.segment` not rotated);
        returns the reference the next segment's header and the end marker carry."""
        disk = self._disk
        journal_dir = self._layout.journal_dir
        archive_path = os.path.join(journal_dir, staged.archive)
        failpoints.hit("snapshot-before-rename")
        disk.rename(staged.tmp, archive_path)
        if self._layout.sync:
            disk.fsync_dir(journal_dir)
        failpoints.hit("snapshot-after-archive")
        twin = os.path.join(journal_dir, snap.twin_name(plan.segment + 1))
        try:
            disk.rename(staged.twin_tmp, twin)
        except OSError as exc:  # best effort: a missing twin only makes a cold open parse JSON
            if disk.exists(staged.twin_tmp):
                warnings.warn(f"could not write {twin}: {exc}", StoreWarning, stacklevel=4)
        if staged.index_tmp:  # best effort too: without it, older history is found by a scan
            with contextlib.suppress(OSError):
                disk.rename(staged.index_tmp, os.path.join(journal_dir, history_index.sidecar_name(plan.segment + 1)))
        return {
            "file": staged.archive,
            "xxh3": staged.digest,
            "size": staged.size,
            "seq": plan.seq,
            "offset": plan.offset,
        }

    def discard(self, staged: Staged) -> None:
        for path in (staged.tmp, staged.twin_tmp, staged.index_tmp):
            if not path:
                continue
            with contextlib.suppress(FileNotFoundError):
                self._disk.unlink(path)

    def rotate(self, plan: Plan, reference: dict[str, Any]) -> None:
        """Close the segment with an end marker and start the next from the snapshot (lock held).

        Records appended after the snapshot was taken are copied, byte for byte, to the start of
        the new segment: a cold open replays them from there; a reader crossing over skips them.
        """
        live = self._live
        cursor = live.cursor
        assert cursor is not None and cursor.segment == plan.segment
        segment = plan.segment + 1
        tail = self._disk.pread(cursor.fd, cursor.offset - plan.offset, plan.offset)
        end = {"type": jn.END, "seq": live.state.seq, "next": segment, "snapshot": reference}
        cursor.append(jn.encode_frame(jn.pack(end)), sync=self._layout.sync)
        failpoints.hit("compact-after-end-marker")
        self._layout.create_segment(segment, plan.seq, reference, tail)
        failpoints.hit("compact-after-segment")
        cursor.rotate(segment, after=tail)
        live.segment_events = 0
        failpoints.hit("compact-before-publish")
        self.publish()
        failpoints.hit("compact-after-publish")
        if self.keep_segments is not None or self.keep_age is not None:
            self.prune_locked(self.keep_segments, self.keep_age)

    def finish_rotation(self, end: jn.Record) -> None:
        """Create the segment an end marker announces (its compaction died before doing so)."""
        reference = end.body.get("snapshot")
        if not isinstance(reference, Mapping):
            raise JournalCorrupt(
                f"segment {end.segment}: end marker at offset {end.offset} names no snapshot",
                segment=end.segment,
                offset=end.offset,
            )
        cursor = self._live.cursor
        assert cursor is not None
        base_seq = int(reference.get("seq", end.body["seq"]))
        start = int(reference.get("offset", end.offset))
        tail = self._disk.pread(cursor.fd, end.offset - start, start)
        self._layout.create_segment(int(end.body["next"]), base_seq, reference, tail)
        self._live.publish_pending = True

    def publish(self) -> None:
        """Make images.json what containers/storage should read now, then tell it (lock held).

        A shared store publishes its current state (see `publish_state`). Otherwise images.json
        becomes the snapshot the current segment starts from (a hard link to the archive).
        Either way the last-writer bytes of images.lock change after images.json is in place, so
        a Go reader that sees them reloads the new file, and our publication mark records what
        images.json now holds (publication.py).
        """
        live = self._live
        if live.shared:
            self.publish_state()
            return
        layout = self._layout
        disk = self._disk
        cursor = live.cursor
        assert cursor is not None
        reference = cursor.header.get("snapshot")
        if not reference:
            live.publish_pending = False
            return
        archive = os.path.join(layout.journal_dir, str(reference["file"]))
        tmp = os.path.join(layout.journal_dir, ".images.json.tmp")
        with contextlib.suppress(FileNotFoundError):
            disk.unlink(tmp)
        try:
            disk.link(archive, tmp)
        except OSError:
            disk.write_file(tmp, disk.read_file(archive), sync=layout.sync)
        disk.rename(tmp, layout.images_json)
        if layout.sync:
            disk.fsync_dir(layout.path)
            disk.fsync_dir(layout.journal_dir)
        self._mark(int(cursor.header.get("base_seq", 0)), int(str(reference["xxh3"]), 16))
        live.publish_pending = False

    def publish_state(self) -> None:
        """Write images.json from the current state, then new last-writer bytes (lock held).

        The encoding reuses each unchanged record's bytes (publication.Encoder); the file is
        written whole, as containers/storage writes it, so that its readers need nothing new.
        """
        live = self._live
        data = live.encoder.encode(live.state)
        pub.write_images_json(self._disk, self._layout.images_json, data, sync=self._layout.sync)
        self._mark(live.state.seq, pub.digest(data))
        live.publish_pending = False

    def _mark(self, seq: int, digest: int) -> None:
        """New last-writer bytes and our mark, in one write (after images.json is in place)."""
        live = self._live
        if live.lock is None:
            return
        failpoints.hit("publish-before-mark")
        live.write_lock_head(pub.lock_bytes(seq, digest, pub.new_last_writer()))

    def prune_locked(self, keep_segments: int | None, older_than: float | None) -> list[str]:
        """Delete closed segments beyond a count or an age, with their snapshots (lock held)."""
        cursor = self._live.cursor
        assert cursor is not None
        disk = self._disk
        journal_dir = self._layout.journal_dir
        closed = [n for n in self._layout.segments() if n < cursor.segment]
        victims: set[int] = set()
        if keep_segments is not None:
            victims.update(closed[: max(0, len(closed) - keep_segments)])
        if older_than is not None:
            now = time.time()
            for number in closed:
                with contextlib.suppress(FileNotFoundError):
                    if now - disk.stat(cursor.path(number)).st_mtime > older_than:
                        victims.add(number)
        # History must stay contiguous: prune only a prefix of the closed segments.
        keep_from = min((n for n in closed if n not in victims), default=cursor.segment)
        victims = {n for n in victims if n < keep_from}
        removed: list[str] = []
        for name in sorted(disk.listdir(journal_dir)):
            owner = journal_file_segment(name)
            if owner is not None and owner in victims:
                disk.unlink(os.path.join(journal_dir, name))
                removed.append(name)
        if removed and self._layout.sync:
            disk.fsync_dir(journal_dir)
        self.prune_blobs()
        return removed

    def prune_blobs(self) -> list[str]:
        """Remove the kept past bytes no retained record kept (lock held)."""
        index = self._live.index
        segs = self._layout.segments()
        if index is None or not segs:
            return []
        first = int(replay.header(self._disk, self._layout.journal_dir, segs[0]).get("base_seq", 0))
        return self._live.blobs.prune(index.blobs, index.origin, first)
