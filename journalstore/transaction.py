"""Transactions: the writers' lock, one record per transaction, savepoints, commit and undo.

Owns the write path after validation: take the writers' lock, catch up and repair, run the
mutation (which emits events into the state with an undo log), append them as one record and
keep them, or undo them exactly. A batch is one transaction; a batch inside a batch is a
savepoint. Also the work after a commit (removing what the record made garbage, starting a
background compaction). It does not decide what a mutation emits (mutations.py) and touches
snapshots only through the compactor.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from . import failpoints, foreign, history_links, opening
from . import journal as jn
from . import publication as pub
from .bigdata import Planned, Write
from .compaction import Compactor
from .errors import RecordTooLarge, StoreError, StoreWarning
from .live import Live
from .locking import Holder, WriterLock
from .reducer import State, apply

T = TypeVar("T")
THREAD_WAIT = 0.05  # seconds; a waiter re-checks the lock at least this often


class Txn:
    """What one write transaction (a single call or a whole batch) has done so far."""

    __slots__ = ("events", "notes", "pending", "removed", "stale", "state", "writes")

    def __init__(self, state: State) -> None:
        self.state = state  # the state the events are applied to (with an undo log)
        self.events: list[Mapping[str, Any]] = []
        self.writes: list[Write] = []
        self.pending: dict[tuple[str, str], bytes] = {}  # big data not yet on disk, for reads
        self.removed: list[str] = []  # images deleted: their directories go after the commit
        self.stale: list[str] = []  # explicit IDs created over a leftover directory
        self.notes: list[history_links.Note] = []  # what each event does to history (history_links)

    def emit(self, event: Mapping[str, Any]) -> None:
        """Apply an event to the state (undoable) and queue it for the transaction's record."""
        note = history_links.before(self, event)
        apply(self.state, event)
        self.events.append(event)
        if note is not None:
            self.notes.append(note)


class Transactions:
    """The write path of one open store: at most one transaction at a time per instance."""

    def __init__(self, live: Live) -> None:
        self._live = live
        self.txn: Txn | None = None  # the open transaction (read under the instance mutex)
        # Signalled when this instance's writers' lock is released. Waiting on it releases the
        # instance mutex, so readers of this instance never wait behind a writer's lock wait.
        self._lock_free = threading.Condition(live.mutex)
        self.compactor: Compactor | None = None  # set by the facade right after construction

    def _compactor(self) -> Compactor:
        assert self.compactor is not None
        return self.compactor

    # ------------------------------------------------------------------ entry points

    @contextlib.contextmanager
    def writing(self) -> Iterator[Txn]:
        """One write transaction: lock, catch up, repair, run, commit (or undo everything)."""
        live = self._live
        live.check_writable()
        with live.mutex:
            txn = self.txn
            if txn is not None:  # a batch inside a batch: a savepoint of the open transaction
                point = self._savepoint(txn)
                try:
                    yield txn
                except BaseException:
                    self._rollback_to(txn, point)
                    raise
                return
            txn = self._begin()
            try:
                yield txn
                self._commit(txn)
            except BaseException:
                live.state.rollback()
                raise
            finally:
                self._end()

    def mutate(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one mutation as its own transaction (or as part of the open batch)."""
        live = self._live
        live.check_writable()
        with live.mutex:
            txn = self.txn
            if txn is not None:
                return fn(txn, *args)
            txn = self._begin()
            try:
                result = fn(txn, *args)
                self._commit(txn)
            except BaseException:
                live.state.rollback()
                raise
            finally:
                self._end()
            return result

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the writers' lock, caught up, outside any transaction (compact, gc, prune)."""
        live = self._live
        live.check_writable()
        with live.mutex:
            if self.txn is not None:
                raise StoreError("this operation cannot run inside batch()")
            self.acquire()
            try:
                yield
            finally:
                self.release()

    # ------------------------------------------------------------------ the lock

    def acquire(self) -> None:
        """Take the writers' lock, catch up with the journal and finish any interrupted work
        (caller holds the instance mutex)."""
        live = self._live
        if os.getpid() != live.pid:
            self._after_fork()
        assert live.lock is not None
        live.lock.acquire(self._wait)
        try:
            if live.overlay:
                opening.load_journal(live, locked=True)  # drop what was merged in memory only
            opening.catch_up(live)
            cursor = live.cursor
            assert cursor is not None
            if cursor.tail is not None or cursor.end_record is not None or live.needs_repair:
                opening.repair(live, self._compactor())
                if live.foreign_data is not None:
                    events = foreign.merge_events(live)
                    self._commit_events(events)
                    foreign.merged(live, events)
                    self._compactor().compact_locked()
                if live.compact_soon:
                    live.compact_soon = False
                    self._compactor().compact_locked()
            self._merge_go_save()
        except BaseException:
            self.release()
            raise

    def _merge_go_save(self) -> None:
        """Record what containers/storage saved since the last publication, before our own
        change (lock held, caught up): one pread of images.lock when it saved nothing."""
        live = self._live
        assert live.lock is not None
        if live.read_last_writer() == live.lock_seen[: pub.LAST_WRITER_SIZE] and not live.publish_pending:
            return
        head = live.read_lock_head()
        lock = foreign.go_saved(live, head)
        writer: Mapping[str, Any] | None = None if lock is None else foreign.go_writer(live, lock)
        if lock is None and live.accepting and live.go_pending:
            lock = foreign.lock_state(live, head)  # a hand edit, recorded under our own actor
        live.go_pending = False
        if lock is not None:
            theirs = foreign.read_go_save(live)  # ForeignDamage: this write fails, nothing changes
            base = foreign.base_images(live, lock)
            state = live.state
            state.begin()
            txn = self.txn = Txn(state)
            try:
                by = foreign.GO_ACTOR if writer is not None else f"hand edit accepted by {live.actor or 'journalstore'}"
                foreign.merge_go_save(txn.emit, state, base, theirs, live.layout.images_json, lock, by)
                self._commit(txn, writer)
            except BaseException:
                state.rollback()
                raise
            finally:
                self.txn = None
            if not live.shared:  # a shared store published in the commit
                self._compactor().publish_state()
            return
        mark = foreign.lock_state(live, head).mark
        if live.shared and (live.publish_pending or (mark is not None and mark.seq < live.state.seq)):
            self._compactor().publish_state()  # a commit whose publication did not finish
        else:
            live.lock_seen = head

    def _wait(self, holder: Holder, seconds: float | None) -> None:
        """Wait for the writers' lock without holding the instance mutex (caller holds it once
        or more; Condition.wait releases every level and takes them back)."""
        if holder == "thread":  # woken by release(); the bound only guards against a lost wakeup
            seconds = THREAD_WAIT if seconds is None else min(seconds, THREAD_WAIT)
        self._lock_free.wait(seconds)

    def release(self) -> None:
        """Release the writers' lock (caller holds the instance mutex) and wake its waiters."""
        assert self._live.lock is not None
        self._live.lock.release()
        self._lock_free.notify_all()

    def _after_fork(self) -> None:
        """A child process must not share the parent's lock and journal descriptors."""
        live = self._live
        live.pid = os.getpid()
        self._compactor().forget_thread()
        if live.lock is not None:
            live.lock = WriterLock(live.disk, live.lock.path, live.lock.timeout)
        opening.load_journal(live)

    # ------------------------------------------------------------------ transactions

    def _begin(self) -> Txn:
        self.acquire()
        self._live.state.begin()
        txn = self.txn = Txn(self._live.state)
        return txn

    def _end(self) -> None:
        self.txn = None
        self.release()

    def _savepoint(self, txn: Txn) -> tuple[Any, ...]:
        return (
            self._live.state.savepoint(),
            len(txn.events),
            len(txn.writes),
            dict(txn.pending),
            len(txn.removed),
            len(txn.stale),
        )

    def _rollback_to(self, txn: Txn, point: tuple[Any, ...]) -> None:
        state_point, events, writes, pending, removed, stale = point
        self._live.state.rollback_to(state_point)
        del txn.events[events:]
        del txn.writes[writes:]
        txn.pending = pending
        del txn.removed[removed:]
        del txn.stale[stale:]

    def _commit(self, txn: Txn, writer: Mapping[str, Any] | None = None) -> None:
        """Append the transaction's record and keep its events; undo both if it did not land.

        Whether the record counts depends only on where the journal's bytes are: if anything
        (an error, an interrupt) stops this method after the whole record reached the segment,
        the record is kept in memory too and the exception goes on; otherwise every byte and
        file it wrote is undone and the caller rolls the state back.
        """
        live = self._live
        state = live.state
        cursor = live.cursor
        assert cursor is not None
        if not txn.events:
            state.commit()
            return
        seq = state.seq + 1
        body = live.record_body(seq, txn.events, writer)
        fields, images = history_links.record_fields(live, txn, seq)
        body.update(fields)
        payload = cursor.pack(body)
        if len(payload) > jn.MAX_FRAME:
            raise RecordTooLarge(
                f"this change would make a journal record of {len(payload)} bytes "
                f"(the maximum is {jn.MAX_FRAME}); split it into smaller changes"
            )
        frame = jn.encode_frame(payload)
        files = live.files
        planned = files.plan(txn.writes) if txn.writes else None
        prepare = None if planned is None else files.prepare_body(seq, planned)
        prepare_frame = b"" if prepare is None else jn.encode_frame(jn.pack(prepare))
        before = cursor.offset
        end = before + len(prepare_frame) + len(frame)
        try:
            if planned is not None:
                cursor.append(prepare_frame, sync=False)
                failpoints.hit("bigdata-after-prepare")
                files.install(seq, planned, sync=live.sync)
            cursor.append(frame, sync=live.sync)
            if planned is not None:
                failpoints.hit("bigdata-after-commit")
            failpoints.hit("commit-after-append")
        except BaseException:
            if not cursor.settle(end):
                if prepare is not None:
                    files.undo(seq, prepare["files"])
                cursor.truncate(before, sync=live.sync)
                raise
            self._keep(txn, seq, planned, body, end - len(frame), images)  # the record is in the journal: it counts
            raise
        self._keep(txn, seq, planned, body, end - len(frame), images)

    def _keep(
        self,
        txn: Txn,
        seq: int,
        planned: list[Planned] | None,
        body: Mapping[str, Any],
        offset: int,
        images: list[str] | None,
    ) -> None:
        """The record of `txn` (its frame at `offset`) is in the journal: keep its events, then
        clean up after it.

        Nothing after this point may make the call fail: what cleanup leaves behind is reported
        as a StoreWarning and removed by garbage_collect() or the next repair.
        """
        live = self._live
        cursor = live.cursor
        assert cursor is not None
        history_links.committed(live, body, cursor.segment, offset, images)
        live.state.seq = seq
        live.state.commit()
        live.encoder.touched(txn.events)
        live.segment_events += len(txn.events)
        try:
            if live.shared:  # before the call returns, containers/storage sees the change
                self._compactor().publish_state()
            if planned is not None:
                live.files.finish(seq, planned)
            self._after_commit(txn)
        except Exception as exc:
            warnings.warn(
                f"record {seq} is committed, but cleaning up after it failed ({exc}); garbage_collect() "
                "or the next write's repair removes what is left",
                StoreWarning,
                stacklevel=5,
            )
            live.repaired = False  # the next writer cleans staging again
            if live.shared:
                live.publish_pending = True  # and publishes, if this did not

    def _after_commit(self, txn: Txn) -> None:
        """Remove what the committed record made garbage, then compact if it is time."""
        live = self._live
        state = live.state
        if txn.removed:
            failpoints.hit("delete-after-commit")
        for image_id in dict.fromkeys(txn.removed):
            image = state.get(image_id)
            if image is None:
                live.files.remove_dir(image_id)
            else:
                live.files.remove_stale(image_id, image.big_data_names)
        for image_id in txn.stale:
            image = state.get(image_id)
            if image is not None:
                live.files.remove_stale(image_id, image.big_data_names)
        cursor = live.cursor
        assert cursor is not None
        if self._compactor().due(cursor.offset):
            self._compactor().start_background()

    def _commit_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Apply and append a record the store itself decided on (caller holds the lock)."""
        state = self._live.state
        state.begin()
        txn = self.txn = Txn(state)
        try:
            for event in events:
                txn.emit(event)
            self._commit(txn)
        except BaseException:
            state.rollback()
            raise
        finally:
            self.txn = None
