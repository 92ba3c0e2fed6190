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
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from . import failpoints, foreign, history_links, opening
from . import journal as jn
from .bigdata import Write
from .compaction import Compactor
from .errors import RecordTooLarge, StoreError
from .live import Live
from .locking import WriterLock
from .reducer import State, apply

T = TypeVar("T")


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
        live.lock.acquire()
        try:
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
        except BaseException:
            live.lock.release()
            raise

    def release(self) -> None:
        assert self._live.lock is not None
        self._live.lock.release()

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

    def _commit(self, txn: Txn) -> None:
        live = self._live
        state = live.state
        cursor = live.cursor
        assert cursor is not None
        if not txn.events:
            state.commit()
            return
        seq = state.seq + 1
        body = live.record_body(seq, txn.events)
        body.update(history_links.record_fields(live, txn, seq))
        payload = jn.pack(body)
        if len(payload) > jn.MAX_FRAME:
            raise RecordTooLarge(
                f"this change would make a journal record of {len(payload)} bytes "
                f"(the maximum is {jn.MAX_FRAME}); split it into smaller changes"
            )
        frame = jn.encode_frame(payload)
        planned = None
        before = cursor.offset
        if txn.writes:
            files = live.files
            planned = files.plan(txn.writes)
            prepare = files.prepare_body(seq, planned)
            cursor.append(jn.encode_frame(jn.pack(prepare)), sync=False)
            failpoints.hit("bigdata-after-prepare")
            try:
                files.install(seq, planned, sync=live.sync)
                cursor.append(frame, sync=live.sync)
            except BaseException:
                files.undo(seq, prepare["files"])
                cursor.truncate(before, sync=live.sync)
                raise
            failpoints.hit("bigdata-after-commit")
        else:
            cursor.append(frame, sync=live.sync)
        history_links.committed(live, body, cursor.segment, cursor.offset - len(frame))
        state.seq = seq
        state.commit()
        live.segment_events += len(txn.events)
        if planned is not None:
            live.files.finish(seq, planned)
        self._after_commit(txn)

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
