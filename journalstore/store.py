"""`ImageStore`: the facade. Every call flows one way: validate → event → journal → reducer.

Reads take no lock: they compare the journal's size with the position this instance has applied
and apply only new records (one fstat when nothing changed). Writes take the writers' lock,
catch up, validate against the fresh state, apply the events with an undo log, append them as
one record (fsynced by default) and keep them; any failure before the append undoes them.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, NamedTuple, TypeVar

from . import events as ev
from . import failpoints, replay
from . import journal as jn
from . import snapshot as snap
from .audit import Event, Follower, Journal, StoreView, VerifyReport, verify
from .bigdata import BigDataFiles, Write, check_key, sha256_digest
from .errors import (
    BigDataUnknown,
    DuplicateID,
    DuplicateImageNames,
    DuplicateName,
    JournalCorrupt,
    RecordTooLarge,
    SizeUnknown,
    SnapshotMismatch,
    StoreError,
    StoreIsReadOnly,
    StoreNotFound,
)
from .fsio import DEFAULT_DISK, Disk
from .locking import WriterLock
from .reads import StateReads
from .record import Image, time_from_datetime
from .reducer import State, apply, fold_equal
from .validation import (
    check_bytes,
    check_digest,
    check_flag_key,
    check_flag_value,
    check_flags,
    check_id,
    check_names,
    check_read_key,
    check_ref,
    check_str,
)

T = TypeVar("T")

FsyncMode = Literal["always", "never"]
NameOp = Literal["set-names", "add-names", "remove-names"]
DEFAULT_COMPACT_EVERY = 100_000
MIN_COMPACT_EVENTS = 10_000  # a small store's journal: a few MiB, replayed in tens of ms
DEFAULT_COMPACT_BYTES = 64 * 1024 * 1024
JOURNAL_DIR = "journal"
LOCK_FILE = "images.lock"
_HEX64 = frozenset("0123456789abcdef")
_CREATED_MIN = -62_135_596_800 * 1_000_000_000  # 0001-01-01T00:00:00Z, in ns since the epoch
_CREATED_MAX = 253_402_300_800 * 1_000_000_000 - 1  # 9999-12-31T23:59:59.999999999Z


class StoreWarning(UserWarning):
    """Something about the store a caller should know, that does not stop it from working."""


class _Plan(NamedTuple):
    """A snapshot to write: the records at `seq`, which ends at `offset` of `segment`."""

    images: list[Image]
    digest_orders: dict[str, list[str]]
    seq: int
    segment: int
    offset: int


class _Staged(NamedTuple):
    """A snapshot written to temporary files, not yet renamed into place."""

    archive: str  # its name in journal/
    digest: str
    size: int
    tmp: str
    twin_tmp: str


class _Txn:
    """What one write transaction (a single call or a whole batch) has done so far."""

    __slots__ = ("events", "pending", "removed", "stale", "writes")

    def __init__(self) -> None:
        self.events: list[Mapping[str, Any]] = []
        self.writes: list[Write] = []
        self.pending: dict[tuple[str, str], bytes] = {}  # big data not yet on disk, for reads
        self.removed: list[str] = []  # images deleted: their directories go after the commit
        self.stale: list[str] = []  # explicit IDs created over a leftover directory


def _journal_file_segment(name: str) -> int | None:
    """The segment a journal-directory file belongs to (segment, its .broken copies, its snapshot)."""
    head = name.split(".", 1)[0]
    for prefix in ("segment-", "snapshot-"):
        if head.startswith(prefix) and head[len(prefix) :].isdigit():
            return int(head[len(prefix) :])
    return None


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


def _is_hex_id(name: str) -> bool:
    return len(name) == 64 and _HEX64.issuperset(name)


class ImageStore(StateReads):
    """An image store directory: images.json, images.lock, journal/ and one directory per image.

    Thread-safe; many processes may open the same directory. See SPEC §3 for the operations.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        read_only: bool = False,
        fsync: FsyncMode = "always",
        actor: str = "",
        compact_every: int | None = DEFAULT_COMPACT_EVERY,
        compact_bytes: int | None = DEFAULT_COMPACT_BYTES,
        lock_timeout: float | None = None,
        keep_segments: int | None = None,
        keep_age: float | None = None,
        disk: Disk | None = None,
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"store path must be a string or path, not {type(path).__name__}")
        if not os.fspath(path):
            raise ValueError("store path is empty")  # abspath would make it the working directory
        if fsync not in ("always", "never"):
            raise ValueError(f"fsync must be 'always' or 'never', not {fsync!r}")
        check_str(actor, "actor")  # it goes into every record
        for name, value in (("compact_every", compact_every), ("compact_bytes", compact_bytes)):
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive integer or None, not {value!r}")
        for name, limit in (("keep_segments", keep_segments), ("keep_age", keep_age)):
            if limit is not None and (not isinstance(limit, int | float) or not 0 <= limit < float("inf")):
                raise ValueError(f"{name} must be a non-negative number or None, not {limit!r}")
        self.path = os.path.abspath(os.fspath(path))
        self.fsync: FsyncMode = fsync
        self.actor = actor
        self.compact_every = compact_every
        self.compact_bytes = compact_bytes
        self.keep_segments = keep_segments
        self.keep_age = keep_age
        self._sync = fsync == "always"
        self._disk = disk or DEFAULT_DISK
        self._journal_dir = os.path.join(self.path, JOURNAL_DIR)
        self._files = BigDataFiles(self._disk, self.path, self._journal_dir)
        self._mutex = threading.RLock()
        self._txn: _Txn | None = None
        self._pid = os.getpid()
        self._uid = os.getuid()
        self._lock: WriterLock | None = None
        self._cursor: jn.Cursor | None = None
        self._legacy_stamp: tuple[int, int, int] | None = None
        self._segment_events = 0
        self._repaired = False  # staging not yet cleaned by this instance
        self._needs_repair = True  # recovery work may be pending: look before the next write
        self._publish_pending = False
        self._foreign_data: bytes | None = None
        self.foreign_rewrite = False
        self._compact_soon = False  # a snapshot to (re)write before the next write
        self._compactor: threading.Thread | None = None  # an automatic compaction in progress
        self._read_only = read_only
        self._read_only_reason = "the store was opened read-only"
        self._state = State(read_only)
        try:
            self._open(lock_timeout)
        except BaseException:
            self.close()  # the journal and lock descriptors opened so far
            raise

    # ================================================================== opening

    def _open(self, lock_timeout: float | None) -> None:
        disk = self._disk
        if self._read_only:
            if not disk.is_dir(self.path):
                raise StoreNotFound(f"no store at {self.path}")
        else:
            try:
                self._make_directory()
            except PermissionError:
                if not disk.is_dir(self.path):
                    raise
            if not os.access(self.path, os.W_OK | os.X_OK):
                self._fall_back_read_only(f"{self.path} is not writable by this user")
            else:
                try:
                    self._lock = WriterLock(disk, os.path.join(self.path, LOCK_FILE), lock_timeout)
                except PermissionError:
                    self._fall_back_read_only(f"cannot open {LOCK_FILE} for writing")
        if self._lock is not None and not self._segments():
            self._lock.acquire()
            try:
                if not self._segments():
                    self._initialize()
            finally:
                self._lock.release()
        if self._segments():
            self._load_journal()
        else:
            self._load_legacy()
        if self._foreign_data is not None and not self._read_only:
            with self._locked():
                pass  # the repair step merges the foreign images.json

    def _make_directory(self) -> None:
        """Create the store directory and its missing parents, each entry made durable: without
        an fsync of its parent, a power cut could lose a new store with every write in it."""
        disk = self._disk
        missing: list[str] = []
        path = self.path
        while not disk.is_dir(path) and os.path.dirname(path) != path:
            missing.append(path)
            path = os.path.dirname(path)
        disk.makedirs(self.path, 0o700)
        if self._sync:
            for created in reversed(missing):
                disk.fsync_dir(os.path.dirname(created))

    def _fall_back_read_only(self, reason: str) -> None:
        self._read_only = True
        self._state.read_only = True
        self._read_only_reason = reason
        warnings.warn(f"opening {self.path} read-only: {reason}", StoreWarning, stacklevel=4)

    def _segments(self) -> list[int]:
        try:
            names = self._disk.listdir(self._journal_dir)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(n for n in map(jn.parse_segment_name, names) if n is not None)

    def _initialize(self) -> None:
        """Make a directory a journalstore store (caller holds the lock): a fresh one, or an
        import of the containers/storage images.json it holds."""
        disk = self._disk
        for directory in (self._journal_dir, self._files.staging):
            if not disk.is_dir(directory):
                disk.mkdir(directory, 0o700)
        disk.fsync_dir(self.path)
        images_json = os.path.join(self.path, snap.IMAGES_JSON)
        snapshot: dict[str, Any] | None = None
        import_event: dict[str, Any] | None = None
        if disk.exists(images_json):
            data = disk.read_file(images_json)
            docs = snap.decode(data, images_json)
            records = snap.images_from_docs(docs, images_json, False)
            dropped = State().load(records)
            archive = snap.archive_name(1)
            self._link_or_copy(images_json, os.path.join(self._journal_dir, archive), data)
            snapshot = {"file": archive, "xxh3": snap.snapshot_digest(data), "size": len(data)}
            self._write_twin(1, records, {}, snapshot["xxh3"], len(data))
            import_event = {
                "op": ev.IMPORT,
                "source": images_json,
                "count": len(records),
                "dropped_names": [list(pair) for pair in dropped],
            }
        self._create_segment(1, 0, snapshot)
        if import_event is not None:
            cursor = jn.Cursor(disk, self._journal_dir, 1, writable=True)
            try:
                body = self._record_body(1, [import_event])
                cursor.append(jn.encode_frame(jn.pack(body)), sync=self._sync)
            finally:
                cursor.close()
            if import_event["dropped_names"]:
                self._compact_soon = True  # give Go readers a file without duplicates

    def _link_or_copy(self, src: str, dst: str, data: bytes) -> None:
        """Give `src`'s bytes a second name (a hard link where the filesystem allows)."""
        tmp = dst + ".tmp"
        with contextlib.suppress(FileNotFoundError):
            self._disk.unlink(tmp)
        try:
            self._disk.link(src, tmp)
            if self._sync:
                fd = self._disk.open(tmp, os.O_RDONLY)
                try:
                    self._disk.fsync(fd)
                finally:
                    self._disk.close(fd)
        except OSError:
            self._disk.write_file(tmp, data, sync=self._sync)
        self._disk.rename(tmp, dst)
        if self._sync:
            self._disk.fsync_dir(os.path.dirname(dst))

    def _create_segment(
        self, number: int, base_seq: int, snapshot: dict[str, Any] | None, records: bytes = b""
    ) -> None:
        """Write a new segment file with its header (and any records), whole or not at all."""
        meta: dict[str, Any] = {
            "segment": number,
            "base_seq": base_seq,
            "snapshot": snapshot,
            "created": time.time_ns(),
        }
        path = os.path.join(self._journal_dir, jn.segment_name(number))
        tmp = path + ".tmp"
        self._disk.write_file(tmp, jn.encode_segment_header(meta) + records, sync=self._sync)
        self._disk.rename(tmp, path)
        if self._sync:
            self._disk.fsync_dir(self._journal_dir)

    def _load_journal(self) -> None:
        """The newest segment's snapshot, then that segment's records.

        If that snapshot is lost (images.json and its archive both missing or damaged), the
        state is rebuilt from the nearest older snapshot by replaying the segments after it.
        """
        with replay.gc_paused():
            self._load_journal_unpaused()

    def _load_journal_unpaused(self) -> None:
        disk = self._disk
        segs = self._segments()
        newest = segs[-1]
        meta = replay.header(disk, self._journal_dir, newest)
        reference = meta.get("snapshot")
        state: State | None = None
        start = newest
        if reference:
            data = self._base_snapshot(newest, reference)
            if data is not None:
                state = replay.snapshot_state(disk, self._journal_dir, newest, reference, data, self._read_only)
        else:
            reference = {}
            state = State(self._read_only)
            self._check_not_lost(newest)
            self._check_unexpected_images_json()
        if state is None:
            found = replay.nearest_base(disk, self._journal_dir, int(meta.get("base_seq", 0)), self._read_only)
            if found is None:
                raise SnapshotMismatch(
                    f"the snapshot segment {newest} starts from ({reference.get('file')}, xxh3 "
                    f"{reference.get('xxh3')}) is missing or damaged, in images.json and in journal/, "
                    "and no older segment remains to rebuild it from"
                )
            start, state = found
            warnings.warn(
                f"{self.path}: the snapshot of segment {newest} is damaged; rebuilt the state by replaying "
                f"the journal from segment {start}",
                StoreWarning,
                stacklevel=4,
            )
            self._compact_soon = True
        else:
            state.seq = int(meta.get("base_seq", 0))
        self._state = state
        self._segment_events = 0
        if self._cursor is not None:
            self._cursor.close()
        self._cursor = jn.Cursor(disk, self._journal_dir, start, writable=not self._read_only)
        self._needs_repair = True
        self._catch_up()

    def _check_unexpected_images_json(self) -> None:
        """An images.json beside a segment that starts from no snapshot was written by another
        program, unless it is one of ours (a compaction that ran while we were opening)."""
        images_json = os.path.join(self.path, snap.IMAGES_JSON)
        with contextlib.suppress(FileNotFoundError):
            data = self._disk.read_file(images_json)
            if not self._is_our_snapshot(images_json):
                self._note_foreign(data)

    def _note_foreign(self, data: bytes) -> None:
        self.foreign_rewrite = True
        self._foreign_data = data
        if self._read_only:
            warnings.warn(
                f"{self.path}/images.json was rewritten by another program after the last snapshot; "
                "showing the journal's state. Open the store read-write to merge its changes.",
                StoreWarning,
                stacklevel=6,
            )

    def _write_twin(
        self, segment: int, images: Iterable[Image], orders: Mapping[str, Sequence[str]], digest: str, size: int
    ) -> None:
        """Best effort: a missing or torn twin only makes the next cold open parse JSON."""
        path = os.path.join(self._journal_dir, snap.twin_name(segment))
        try:
            data = snap.encode_twin(images, orders, digest, size)
            tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
            self._disk.write_file(tmp, data, sync=False)
            self._disk.rename(tmp, path)
        except OSError as exc:
            warnings.warn(f"could not write {path}: {exc}", StoreWarning, stacklevel=4)

    def _base_snapshot(self, segment: int, reference: Mapping[str, Any]) -> bytes | None:
        """The verified bytes of the snapshot a segment starts from: images.json or its archive.

        Notes whether images.json must be published again (a compaction stopped before it) or
        was rewritten by another program. None when neither copy is intact.
        """
        want = reference.get("xxh3")
        images_json = os.path.join(self.path, snap.IMAGES_JSON)
        current: bytes | None = None
        with contextlib.suppress(FileNotFoundError):
            current = self._disk.read_file(images_json)
        if current is not None and snap.snapshot_digest(current) == want:
            self._publish_pending = False
            return current
        if current is not None:
            self._check_not_lost(segment)
        data = replay.archive_bytes(self._disk, self._journal_dir, reference)
        if current is None or self._is_our_snapshot(images_json):
            self._publish_pending = True  # a compaction stopped before publishing images.json
        elif data is not None:
            self._note_foreign(current)
        else:
            self._publish_pending = True  # damaged in place (it shares its inode with the archive)
        return data

    def _check_not_lost(self, newest: int) -> None:
        """JournalCorrupt if images.json is the archived snapshot of a segment after `newest`.

        A compaction publishes images.json (a hard link to the archive) only after the segment
        that starts from it exists, so that segment existed and is gone with its records: a
        missing newest segment, not a compaction that stopped early.
        """
        disk = self._disk
        try:
            st = disk.stat(os.path.join(self.path, snap.IMAGES_JSON))
        except FileNotFoundError:
            return
        for name in disk.listdir(self._journal_dir):
            number = snap.parse_archive_name(name)
            if number is None or number <= newest:
                continue
            with contextlib.suppress(FileNotFoundError):
                other = disk.stat(os.path.join(self._journal_dir, name))
                if (other.st_ino, other.st_dev) == (st.st_ino, st.st_dev):
                    if disk.exists(os.path.join(self._journal_dir, jn.segment_name(number))):
                        return  # a compaction finished after the segments were listed: not lost
                    raise JournalCorrupt(
                        f"segment {number} is missing from {self._journal_dir}: images.json was published from "
                        f"its snapshot {name}, so it existed, and the records it held are lost. To open the store "
                        f"as of that snapshot anyway, remove images.json.",
                        segment=number,
                        offset=0,
                    )

    def _is_our_snapshot(self, images_json: str) -> bool:
        """Whether images.json is one of our archived snapshots (same file, or same bytes)."""
        disk = self._disk
        try:
            st = disk.stat(images_json)
        except FileNotFoundError:
            return False
        digest = None
        for name in disk.listdir(self._journal_dir):
            if snap.parse_archive_name(name) is None:
                continue
            path = os.path.join(self._journal_dir, name)
            with contextlib.suppress(FileNotFoundError):
                other = disk.stat(path)
                if (other.st_ino, other.st_dev) == (st.st_ino, st.st_dev):
                    return True
                if other.st_size == st.st_size:
                    if digest is None:
                        digest = snap.snapshot_digest(disk.read_file(images_json))
                    if snap.snapshot_digest(disk.read_file(path)) == digest:
                        return True
        return False

    def _load_legacy(self) -> None:
        """A directory containers/storage wrote (read-only): images.json alone."""
        with replay.gc_paused():
            self._load_legacy_unpaused()

    def _load_legacy_unpaused(self) -> None:
        images_json = os.path.join(self.path, snap.IMAGES_JSON)
        disk = self._disk
        try:
            st = disk.stat(images_json)
            data = disk.read_file(images_json)
        except FileNotFoundError:
            self._legacy_stamp = (0, 0, 0)
            self._state = State(self._read_only)
            return
        records = snap.images_from_docs(snap.decode(data, images_json), images_json, self._read_only)
        state = State(self._read_only)
        dropped = state.load(records)
        if dropped:
            names = ", ".join(sorted({name for _, name in dropped}))
            raise DuplicateImageNames(f"{images_json} gives the same name to several images: {names}")
        self._state = state
        self._legacy_stamp = (st.st_ino, st.st_size, st.st_mtime_ns)

    def _refresh_legacy(self) -> bool:
        if self._segments():  # the directory became a journalstore store meanwhile
            self._load_journal()
            return True
        try:
            st = self._disk.stat(os.path.join(self.path, snap.IMAGES_JSON))
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = (0, 0, 0)
        if stamp == self._legacy_stamp:
            return False
        self._load_legacy()
        return True

    # ================================================================== applying records

    def _catch_up(self) -> bool:
        """Apply records other writers appended; True if there were any."""
        cursor = self._cursor
        if cursor is None:
            return self._refresh_legacy()
        if not cursor.changed():
            return False
        applied = False
        segment = cursor.segment
        for rec in cursor.poll():
            if cursor.segment != segment:
                segment = cursor.segment
                self._segment_events = 0
            try:
                self._apply_record(rec)
            except BaseException:
                cursor.rewind(rec)  # never step over a record that did not apply
                raise
            applied = True
        if cursor.segment != segment:
            self._segment_events = 0
        return applied

    def _apply_record(self, rec: jn.Record) -> None:
        replay.apply_record(self._state, rec)
        self._segment_events += len(rec.body["events"])

    # ================================================================== writing

    def _check_writable(self) -> None:
        if self._read_only:
            raise StoreIsReadOnly(f"cannot modify the image store at {self.path}: {self._read_only_reason}")

    @contextlib.contextmanager
    def _writing(self) -> Iterator[_Txn]:
        """One write transaction: lock, catch up, repair, run, commit (or undo everything)."""
        self._check_writable()
        with self._mutex:
            txn = self._txn
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
                self._abort()
                raise
            finally:
                self._end()

    def _mutate(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one mutation as its own transaction (or as part of the open batch)."""
        self._check_writable()
        with self._mutex:
            txn = self._txn
            if txn is not None:
                return fn(txn, *args)
            txn = self._begin()
            try:
                result = fn(txn, *args)
                self._commit(txn)
            except BaseException:
                self._abort()
                raise
            finally:
                self._end()
            return result

    def _acquire(self) -> None:
        """Take the writers' lock, catch up with the journal and finish any interrupted work."""
        if os.getpid() != self._pid:
            self._after_fork()
        assert self._lock is not None
        self._lock.acquire()
        try:
            self._catch_up()
            cursor = self._cursor
            assert cursor is not None
            if cursor.tail is not None or cursor.end_record is not None or self._needs_repair:
                self._repair()
        except BaseException:
            self._lock.release()
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the writers' lock, caught up, outside any transaction (compact, gc)."""
        self._check_writable()
        with self._mutex:
            if self._txn is not None:
                raise StoreError("this operation cannot run inside batch()")
            self._acquire()
            try:
                yield
            finally:
                assert self._lock is not None
                self._lock.release()

    def _savepoint(self, txn: _Txn) -> tuple[Any, ...]:
        return (
            self._state.savepoint(),
            len(txn.events),
            len(txn.writes),
            dict(txn.pending),
            len(txn.removed),
            len(txn.stale),
        )

    def _rollback_to(self, txn: _Txn, point: tuple[Any, ...]) -> None:
        state_point, events, writes, pending, removed, stale = point
        self._state.rollback_to(state_point)
        del txn.events[events:]
        del txn.writes[writes:]
        txn.pending = pending
        del txn.removed[removed:]
        del txn.stale[stale:]

    def _begin(self) -> _Txn:
        self._acquire()
        txn = self._txn = _Txn()
        self._state.begin()
        return txn

    def _end(self) -> None:
        self._txn = None
        assert self._lock is not None
        self._lock.release()

    def _abort(self) -> None:
        self._state.rollback()

    def _record_body(self, seq: int, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {
            "type": jn.COMMIT,
            "seq": seq,
            "time": time.time_ns(),
            "pid": self._pid,
            "uid": self._uid,
            "actor": self.actor,
            "events": events,
        }

    def _commit(self, txn: _Txn) -> None:
        state = self._state
        cursor = self._cursor
        assert cursor is not None
        if not txn.events:
            state.commit()
            return
        seq = state.seq + 1
        payload = jn.pack(self._record_body(seq, txn.events))
        if len(payload) > jn.MAX_FRAME:
            raise RecordTooLarge(
                f"this change would make a journal record of {len(payload)} bytes "
                f"(the maximum is {jn.MAX_FRAME}); split it into smaller changes"
            )
        frame = jn.encode_frame(payload)
        planned = None
        before = cursor.offset
        if txn.writes:
            files = self._files
            planned = files.plan(txn.writes)
            prepare = files.prepare_body(seq, planned)
            cursor.append(jn.encode_frame(jn.pack(prepare)), sync=False)
            failpoints.hit("bigdata-after-prepare")
            try:
                files.install(seq, planned, sync=self._sync)
                cursor.append(frame, sync=self._sync)
            except BaseException:
                files.undo(seq, prepare["files"])
                cursor.truncate(before, sync=self._sync)
                raise
            failpoints.hit("bigdata-after-commit")
        else:
            cursor.append(frame, sync=self._sync)
        state.seq = seq
        state.commit()
        self._segment_events += len(txn.events)
        if planned is not None:
            self._files.finish(seq, planned)
        self._after_commit(txn)

    def _after_commit(self, txn: _Txn) -> None:
        """Remove what the committed record made garbage, then compact if it is time."""
        state = self._state
        if txn.removed:
            failpoints.hit("delete-after-commit")
        for image_id in dict.fromkeys(txn.removed):
            image = state.get(image_id)
            if image is None:
                self._files.remove_dir(image_id)
            else:
                self._files.remove_stale(image_id, image.big_data_names)
        for image_id in txn.stale:
            image = state.get(image_id)
            if image is not None:
                self._files.remove_stale(image_id, image.big_data_names)
        cursor = self._cursor
        assert cursor is not None
        if self._compaction_due(cursor.offset):
            self._start_background_compaction()

    def _compaction_due(self, segment_bytes: int) -> bool:
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
        threshold = min(self.compact_every, max(MIN_COMPACT_EVENTS, self._state.count))
        return self._segment_events >= threshold

    def _start_background_compaction(self) -> None:
        """Snapshot the state as it is now and write it from a thread, so that no write waits
        for a compaction (caller holds the lock, outside any transaction).

        Records are immutable, so a copy of the record list is a consistent snapshot; writers
        go on appending while it is serialized, and the rotation copies their records into the
        new segment (docs/snapshots.md).
        """
        if self._compactor is not None and self._compactor.is_alive():
            return
        cursor = self._cursor
        assert cursor is not None
        state = self._state
        images = [image for image in state.images.values() if image is not None]
        plan = _Plan(images, state.digest_orders(), state.seq, cursor.segment, cursor.offset)
        compactor = threading.Thread(
            target=self._compact_in_background, args=(plan,), name="journalstore-compaction", daemon=True
        )
        compactor.start()  # before other threads can see it: joining an unstarted thread raises
        self._compactor = compactor

    def _compact_in_background(self, plan: _Plan) -> None:
        try:
            # Encoded and written without the lock, but put in place only under it: the archive's
            # name is the next segment's, which another writer may have created meanwhile.
            staged = self._stage_snapshot(plan)
            try:
                with self._mutex:
                    if self._lock is None or self._cursor is None or os.getpid() != self._pid:
                        return  # closed (or forked) meanwhile: the snapshot is not needed
                    self._acquire()
                    try:
                        if self._cursor.segment == plan.segment:  # nobody rotated meanwhile
                            self._rotate(plan, self._install_snapshot(plan, staged))
                    finally:
                        self._lock.release()
            finally:
                self._discard_snapshot(staged)  # what was not put in place
        except Exception as exc:  # a failed compaction loses nothing: the journal still holds it all
            warnings.warn(f"automatic compaction of {self.path} failed: {exc}", StoreWarning, stacklevel=2)

    def wait_for_compaction(self) -> None:
        """Wait until an automatic compaction this instance started has finished.

        Automatic compactions run in a background thread; call this before looking at the
        store's files directly (tests, backups) if the result must not change under you.
        """
        self._wait_for_compaction()

    def _wait_for_compaction(self) -> None:
        # Not reset to None afterwards: another thread may have started the next one meanwhile.
        compactor = self._compactor
        if compactor is not None and compactor is not threading.current_thread():
            compactor.join()

    def _repair(self) -> None:
        """Finish what a writer that died left undone (caller holds the lock, has caught up)."""
        cursor = self._cursor
        assert cursor is not None
        if cursor.tail is not None:
            tail = cursor.tail
            prepare = cursor.dangling_prepare
            if prepare is not None:
                self._files.undo(int(prepare.body.get("seq", 0)), prepare.body.get("files", ()))
            size = self._disk.size(cursor.fd)
            if prepare is None or size > prepare.end:
                self._keep_broken(tail)
            cursor.cut_tail(sync=self._sync)
        if cursor.end_record is not None and not self._disk.exists(cursor.path(cursor.segment + 1)):
            self._finish_rotation(cursor.end_record)
            self._catch_up()
        if self._publish_pending:
            self._publish()
        if not self._repaired:
            self._files.clean_staging(sync=self._sync)
            self._remove_dead_temporaries()
            self._repaired = True
        self._needs_repair = False
        if self._foreign_data is not None:
            self._merge_foreign()
        if self._compact_soon:
            self._compact_soon = False
            self._compact_locked()

    def _remove_dead_temporaries(self) -> None:
        """Delete temporary files in journal/ that writers killed mid-write left (lock held).

        `NAME.tmp` files are only written under the lock, so none is in use now; `NAME.tmp-PID-TID`
        files are written without it by a background compaction, so only those of a process that
        no longer exists go.
        """
        for name in self._disk.listdir(self._journal_dir):
            if not name.endswith(".tmp"):
                head, _, tail = name.rpartition(".tmp-")
                pid = tail.split("-", 1)[0]
                if not head or not pid.isdigit() or _process_exists(int(pid)):
                    continue
            with contextlib.suppress(FileNotFoundError):
                self._disk.unlink(os.path.join(self._journal_dir, name))

    def _keep_broken(self, tail: jn.Tail) -> None:
        """Keep a copy of bytes about to be cut from the journal (etcd's .broken file)."""
        cursor = self._cursor
        assert cursor is not None
        size = self._disk.size(cursor.fd)
        data = self._disk.pread(cursor.fd, size - tail.offset, tail.offset)
        name = f"{jn.segment_name(tail.segment)}.broken-{tail.offset}"
        self._disk.write_file(os.path.join(self._journal_dir, name), data, sync=self._sync)
        warnings.warn(
            f"cut {len(data)} bytes of an unfinished record from segment {tail.segment} at offset "
            f"{tail.offset} ({tail.reason}); a copy is in {name}",
            StoreWarning,
            stacklevel=6,
        )

    def _after_fork(self) -> None:
        """A child process must not share the parent's lock and journal descriptors."""
        self._pid = os.getpid()
        self._compactor = None  # the parent's thread did not come along
        if self._lock is not None:
            self._lock = WriterLock(self._disk, self._lock.path, self._lock.timeout)
        self._load_journal()

    # ================================================================== snapshots

    def _compact_locked(self) -> None:
        """Write a snapshot of the state now, close the segment and start the next one."""
        cursor = self._cursor
        assert cursor is not None
        state = self._state
        images = [image for image in state.images.values() if image is not None]
        plan = _Plan(images, state.digest_orders(), state.seq, cursor.segment, cursor.offset)
        self._rotate(plan, self._write_snapshot(plan))

    def _write_snapshot(self, plan: _Plan) -> dict[str, Any]:
        """Write the archive (and its twin) of segment `plan.segment + 1`; returns its reference.
        The caller holds the lock and has caught up: no other writer can create that segment."""
        return self._install_snapshot(plan, self._stage_snapshot(plan))

    def _stage_snapshot(self, plan: _Plan) -> _Staged:
        """Encode the snapshot into temporary files of this thread's own (needs no lock)."""
        segment = plan.segment + 1
        data = snap.encode(plan.images)
        archive = snap.archive_name(segment)
        digest = snap.snapshot_digest(data)
        suffix = f".tmp-{os.getpid()}-{threading.get_ident()}"
        tmp = os.path.join(self._journal_dir, archive) + suffix
        self._disk.write_file(tmp, data, sync=self._sync)
        twin = os.path.join(self._journal_dir, snap.twin_name(segment))
        try:
            twin_data = snap.encode_twin(plan.images, plan.digest_orders, digest, len(data))
            self._disk.write_file(twin + suffix, twin_data, sync=False)
        except OSError as exc:
            warnings.warn(f"could not write {twin}: {exc}", StoreWarning, stacklevel=4)
        return _Staged(archive, digest, len(data), tmp, twin + suffix)

    def _install_snapshot(self, plan: _Plan, staged: _Staged) -> dict[str, Any]:
        """Rename a staged snapshot into place (lock held, segment `plan.segment` not rotated)."""
        disk = self._disk
        archive_path = os.path.join(self._journal_dir, staged.archive)
        failpoints.hit("snapshot-before-rename")
        disk.rename(staged.tmp, archive_path)
        if self._sync:
            disk.fsync_dir(self._journal_dir)
        failpoints.hit("snapshot-after-archive")
        twin = os.path.join(self._journal_dir, snap.twin_name(plan.segment + 1))
        try:
            disk.rename(staged.twin_tmp, twin)
        except OSError as exc:  # best effort: a missing twin only makes a cold open parse JSON
            if disk.exists(staged.twin_tmp):
                warnings.warn(f"could not write {twin}: {exc}", StoreWarning, stacklevel=4)
        return {
            "file": staged.archive,
            "xxh3": staged.digest,
            "size": staged.size,
            "seq": plan.seq,
            "offset": plan.offset,
        }

    def _discard_snapshot(self, staged: _Staged) -> None:
        for path in (staged.tmp, staged.twin_tmp):
            with contextlib.suppress(FileNotFoundError):
                self._disk.unlink(path)

    def _rotate(self, plan: _Plan, reference: dict[str, Any]) -> None:
        """Close the segment with an end marker and start the next from the snapshot (lock held).

        Records appended after the snapshot was taken are copied, byte for byte, to the start of
        the new segment: a cold open replays them from there; a reader crossing over skips them.
        """
        cursor = self._cursor
        assert cursor is not None and cursor.segment == plan.segment
        segment = plan.segment + 1
        tail = self._disk.pread(cursor.fd, cursor.offset - plan.offset, plan.offset)
        end = {"type": jn.END, "seq": self._state.seq, "next": segment, "snapshot": reference}
        cursor.append(jn.encode_frame(jn.pack(end)), sync=self._sync)
        failpoints.hit("compact-after-end-marker")
        self._create_segment(segment, plan.seq, reference, tail)
        failpoints.hit("compact-after-segment")
        cursor.rotate(segment, after=tail)
        self._segment_events = 0
        failpoints.hit("compact-before-publish")
        self._publish()
        failpoints.hit("compact-after-publish")
        if self.keep_segments is not None or self.keep_age is not None:
            self._prune_locked(self.keep_segments, self.keep_age)

    def _finish_rotation(self, end: jn.Record) -> None:
        """Create the segment an end marker announces (its compaction died before doing so)."""
        reference = end.body.get("snapshot")
        if not isinstance(reference, Mapping):
            raise JournalCorrupt(
                f"segment {end.segment}: end marker at offset {end.offset} names no snapshot",
                segment=end.segment,
                offset=end.offset,
            )
        cursor = self._cursor
        assert cursor is not None
        base_seq = int(reference.get("seq", end.body["seq"]))
        start = int(reference.get("offset", end.offset))
        tail = self._disk.pread(cursor.fd, end.offset - start, start)
        self._create_segment(int(end.body["next"]), base_seq, dict(reference), tail)
        self._publish_pending = True

    def _publish(self) -> None:
        """Make images.json the snapshot the current segment starts from (a hard link)."""
        cursor = self._cursor
        assert cursor is not None
        reference = cursor.header.get("snapshot")
        if not reference:
            self._publish_pending = False
            return
        archive = os.path.join(self._journal_dir, str(reference["file"]))
        images_json = os.path.join(self.path, snap.IMAGES_JSON)
        tmp = os.path.join(self._journal_dir, ".images.json.tmp")
        with contextlib.suppress(FileNotFoundError):
            self._disk.unlink(tmp)
        try:
            self._disk.link(archive, tmp)
        except OSError:
            self._disk.write_file(tmp, self._disk.read_file(archive), sync=self._sync)
        if self._lock is not None:
            self._lock.record_write()
        self._disk.rename(tmp, images_json)
        if self._sync:
            self._disk.fsync_dir(self.path)
            self._disk.fsync_dir(self._journal_dir)
        self._publish_pending = False

    def _merge_foreign(self) -> None:
        """Merge the images.json another program wrote into the journal, then snapshot.

        A three-way merge against the snapshot both sides started from: what the other program
        changed is recorded as an external-rewrite record of put-image/delete events.
        """
        data = self._foreign_data
        self._foreign_data = None
        cursor = self._cursor
        assert cursor is not None and data is not None
        images_json = os.path.join(self.path, snap.IMAGES_JSON)
        reference = cursor.header.get("snapshot")
        base: list[Image] = []
        if reference:
            archive = os.path.join(self._journal_dir, str(reference.get("file")))
            base_data = replay.archive_bytes(self._disk, self._journal_dir, reference)
            if base_data is None:
                raise SnapshotMismatch(f"cannot merge {images_json}: the snapshot {archive} it was based on is lost")
            base = snap.images_from_docs(snap.decode(base_data, archive), archive, False)
        resolved = State()
        resolved.load(snap.images_from_docs(snap.decode(data, images_json), images_json, False))
        ours = {image.id: image for image in self._state}
        events = snap.merge_events(base, resolved, ours, images_json)
        self._commit_events(events)
        self.foreign_rewrite = False
        warnings.warn(
            f"{images_json} was rewritten by another program; merged its changes as record {self._state.seq} "
            f"({len(events[0]['added'])} added, {len(events[0]['changed'])} changed, "
            f"{len(events[0]['removed'])} removed)",
            StoreWarning,
            stacklevel=6,
        )
        self._compact_locked()

    def _commit_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Apply and append a record the store itself decided on (caller holds the lock)."""
        txn = self._txn = _Txn()
        self._state.begin()
        try:
            for event in events:
                self._emit(txn, event)
            self._commit(txn)
        except BaseException:
            self._abort()
            raise
        finally:
            self._txn = None

    def _prune_locked(self, keep_segments: int | None, older_than: float | None) -> list[str]:
        """Delete closed segments beyond a count or an age, with their snapshots."""
        cursor = self._cursor
        assert cursor is not None
        disk = self._disk
        closed = [n for n in self._segments() if n < cursor.segment]
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
        for name in sorted(disk.listdir(self._journal_dir)):
            owner = _journal_file_segment(name)
            if owner is not None and owner in victims:
                disk.unlink(os.path.join(self._journal_dir, name))
                removed.append(name)
        if removed and self._sync:
            disk.fsync_dir(self._journal_dir)
        return removed

    def prune_journal(self, keep_segments: int | None = None, older_than: float | None = None) -> list[str]:
        """Delete closed journal segments (and their snapshots) beyond `keep_segments` or older
        than `older_than` seconds. The current segment is never touched. Returns file names."""
        for name, value in (("keep_segments", keep_segments), ("older_than", older_than)):
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise ValueError(f"{name} must be a non-negative number or None, not {value!r}")
        with self._locked():
            return self._prune_locked(keep_segments, older_than)

    # ================================================================== reads

    def _fresh(self) -> State:
        """The state, caught up with other writers (one fstat when nothing changed)."""
        if self._txn is None:
            self._catch_up()
        return self._state

    @staticmethod
    def _find(state: State, ref: str) -> Image:
        return state.find(ref)

    def refresh(self) -> bool:
        """Apply records other processes appended; True if there were any."""
        with self._mutex:
            if self._txn is not None:
                return False
            return self._catch_up()

    def big_data(self, ref: str, key: str) -> bytes:
        """The bytes of a big-data item, exactly the bytes its recorded size and digest describe.

        Readers take no lock, so a read is checked like a seqlock: if the journal moved while the
        file was read, it is read again. While another process is replacing the file (its
        prepare record is in the journal, its commit is not), the old bytes are read from the
        backup that writer keeps until its commit.
        """
        check_read_key(key)
        with self._mutex:
            for attempt in range(200):
                image = self._find(self._fresh(), ref)
                if key not in image.big_data_names:
                    raise BigDataUnknown(f"image {image.id} has no big-data item {key!r}")
                txn = self._txn
                if txn is not None:
                    pending = txn.pending.get((image.id, key))
                    return pending if pending is not None else self._read_or_missing(image.id, key)
                cursor = self._cursor
                if cursor is None:  # a directory containers/storage wrote: nothing to race with
                    return self._read_or_missing(image.id, key)
                # The journal size the state was caught up to, not its size now: a writer may have
                # prepared and renamed its file in between, unseen by this state.
                size = cursor.seen_size
                data: bytes | None = None
                with contextlib.suppress(FileNotFoundError):
                    data = self._disk.read_file(self._files.path(image.id, key))
                # The backup is linked before the new file is renamed into place: if it exists,
                # what we read may already be the uncommitted bytes, and the backup holds ours.
                backup = self._files.backup_of(cursor.dangling_prepare, image.id, key)
                if backup is not None:
                    with contextlib.suppress(FileNotFoundError):
                        data = self._disk.read_file(backup)
                if not cursor.changed_since(size):
                    if data is None:
                        raise BigDataUnknown(f"the file of big-data item {key!r} of image {image.id} is missing")
                    return data
                if attempt > 10:
                    time.sleep(0.0005)  # a writer is between its prepare and its commit
            raise StoreError(f"big-data item {key!r} of image {ref!r} kept changing while being read")

    def _read_or_missing(self, image_id: str, key: str) -> bytes:
        try:
            return self._files.read(image_id, key)
        except FileNotFoundError:
            raise BigDataUnknown(f"the file of big-data item {key!r} of image {image_id} is missing") from None

    def big_data_size(self, ref: str, key: str) -> int:
        """The recorded size of a big-data item (or the length of its data)."""
        check_read_key(key)
        image = self.get(ref)
        size = image.big_data_sizes.get(key)
        if size is not None:
            return size
        try:
            return len(self.big_data(image.id, key))
        except BigDataUnknown:
            raise SizeUnknown(f"size of big-data item {key!r} of image {image.id} is not known") from None

    @property
    def position(self) -> jn.Position:
        """(segment, offset) of the journal this instance has applied up to."""
        with self._mutex:
            cursor = self._cursor
            return jn.Position(0, 0) if cursor is None else cursor.position

    @property
    def seq(self) -> int:
        """Sequence number of the last record applied."""
        return self._state.seq

    @property
    def read_only(self) -> bool:
        return self._read_only

    # ================================================================== writes

    def create(
        self,
        id: str | None = None,
        names: Iterable[str] = (),
        layer: str = "",
        *,
        digest: str = "",
        digests: Iterable[str] = (),
        metadata: str = "",
        created: datetime | int | None = None,
        names_history: Iterable[str] = (),
        flags: Mapping[str, Any] | None = None,
        big_data: Iterable[Sequence[Any]] = (),
    ) -> Image:
        """Create an image, with its big-data items, atomically; returns the new record.

        `id=None` generates a random ID. `created` is a datetime (naive means UTC) or
        nanoseconds since the epoch; None means now. `big_data` items are (key, data) or
        (key, data, digest). `digests` is accepted for compatibility and ignored, as in Go:
        the digests are always derived.
        """
        self._check_writable()
        image_id = None if id is None else check_id(id)
        name_list = tuple(dict.fromkeys(check_names(names)))
        layer = check_str(layer, "layer")
        if digest:
            check_digest(digest)
        elif not isinstance(digest, str):
            raise TypeError(f"digest must be a string, not {type(digest).__name__}")
        if digests:
            for d in check_names(digests, "digests"):
                check_digest(d, "digests entry")
        metadata = check_str(metadata, "metadata")
        created_ns, offset = self._created(created)
        history = check_names(names_history, "names_history")
        flag_map = check_flags(flags)
        items: list[tuple[str, bytes, str]] = []
        if isinstance(big_data, str | bytes) or not isinstance(big_data, Iterable):
            raise TypeError("big_data must be a list of (key, data) or (key, data, digest) items")
        for item in big_data or ():
            if not isinstance(item, Sequence) or isinstance(item, str | bytes) or len(item) not in (2, 3):
                raise TypeError("each big_data item must be (key, data) or (key, data, digest)")
            key = check_key(item[0])
            data = check_bytes(item[1], f"data of big-data item {key!r}")
            if len(item) == 3 and item[2]:
                item_digest = check_digest(item[2], f"digest of big-data item {key!r}")
            else:
                item_digest = sha256_digest(data)
            items.append((key, data, item_digest))
        return self._mutate(
            self._create, image_id, name_list, layer, digest, metadata, created_ns, offset, history, flag_map, items
        )

    @staticmethod
    def _created(created: datetime | int | None) -> tuple[int, int]:
        if created is None:
            return time.time_ns(), 0
        if isinstance(created, datetime):
            return time_from_datetime(created)
        if isinstance(created, int) and not isinstance(created, bool):
            if not _CREATED_MIN <= created <= _CREATED_MAX:
                raise ValueError(
                    f"created {created} ns is outside the times images.json can hold (years 1 to 9999 UTC)"
                )
            return created, 0
        raise TypeError(f"created must be a datetime or nanoseconds, not {type(created).__name__}")

    def _create(
        self,
        txn: _Txn,
        image_id: str | None,
        names: tuple[str, ...],
        layer: str,
        digest: str,
        metadata: str,
        created_ns: int,
        offset: int,
        history: tuple[str, ...],
        flags: dict[str, Any],
        items: list[tuple[str, bytes, str]],
    ) -> Image:
        state = self._state
        if image_id is None:
            image_id = self._new_id(state)
        elif state.get(image_id) is not None:
            raise DuplicateID(f"an image with ID {image_id} already exists")
        elif self._disk.exists(self._files.dir(image_id)):
            # A directory left by a deleted image of the same ID (a crash before its removal):
            # what the new image does not own goes after the commit.
            txn.stale.append(image_id)
        for name in names:
            holder = state.by_name.get(name)
            if holder is not None:
                raise DuplicateName(f"name {name!r} is already used by image {holder}")
        self._emit(txn, ev.create(image_id, created_ns, offset, names, history, layer, digest, metadata, flags))
        for key, data, item_digest in items:
            self._emit(txn, ev.set_big_data(image_id, key, len(data), item_digest))
            txn.writes.append(Write(image_id, key, data))
            txn.pending[(image_id, key)] = data
        image = state.get(image_id)
        assert image is not None
        return image

    @staticmethod
    def _new_id(state: State) -> str:
        while True:
            candidate = os.urandom(32).hex()
            if not candidate[:12].isdigit() and state.get(candidate) is None:
                return candidate

    def _emit(self, txn: _Txn, event: Mapping[str, Any]) -> None:
        """Apply an event to the state (undoable) and queue it for the transaction's record."""
        apply(self._state, event)
        txn.events.append(event)

    def _names_op(self, op: NameOp, ref: str, names: Iterable[str]) -> None:
        check_ref(ref)
        values = check_names(names)
        self._mutate(self._names_locked, op, ref, values)

    def _names_locked(self, txn: _Txn, op: NameOp, ref: str, values: tuple[str, ...]) -> None:
        image = self._find(self._state, ref)
        self._emit(txn, ev.names(op, image.id, values))

    def set_names(self, ref: str, names: Iterable[str]) -> None:
        """Replace the image's names; a name another image holds moves to this one."""
        self._names_op(ev.SET_NAMES, ref, names)

    def add_names(self, ref: str, names: Iterable[str]) -> None:
        """Add names in front of the image's names; a name another image holds moves here."""
        self._names_op(ev.ADD_NAMES, ref, names)

    def remove_names(self, ref: str, names: Iterable[str]) -> None:
        """Remove names from the image."""
        self._names_op(ev.REMOVE_NAMES, ref, names)

    def delete(self, ref: str) -> None:
        """Delete the image's record, then its data directory."""
        check_ref(ref)
        self._mutate(self._delete_locked, ref)

    def _delete_locked(self, txn: _Txn, ref: str) -> None:
        image = self._find(self._state, ref)
        self._emit(txn, ev.delete(image.id))
        txn.removed.append(image.id)
        for key in image.big_data_names:
            txn.pending.pop((image.id, key), None)

    def wipe(self) -> None:
        """Delete every image (one record)."""
        self._mutate(self._wipe_locked)

    def _wipe_locked(self, txn: _Txn) -> None:
        for image in list(self._state):
            self._delete_locked(txn, image.id)

    def set_metadata(self, ref: str, metadata: str) -> None:
        """Replace the image's metadata string."""
        check_ref(ref)
        metadata = check_str(metadata, "metadata")
        self._mutate(self._simple, ref, lambda image_id: ev.set_metadata(image_id, metadata))

    def set_flag(self, ref: str, key: str, value: Any) -> None:
        """Set a flag; the value must be representable in JSON and msgpack."""
        check_ref(ref)
        check_flag_key(key)
        check_flag_value(value, repr(key))
        self._mutate(self._simple, ref, lambda image_id: ev.set_flag(image_id, key, value))

    def clear_flag(self, ref: str, key: str) -> None:
        """Remove a flag (no error if it is not set)."""
        check_ref(ref)
        check_flag_key(key)
        self._mutate(self._simple, ref, lambda image_id: ev.clear_flag(image_id, key))

    def add_mapped_top_layer(self, ref: str, layer: str) -> None:
        """Append an alternate top layer."""
        check_ref(ref)
        layer = check_str(layer, "layer")
        self._mutate(self._simple, ref, lambda image_id: ev.mapped_layer(ev.ADD_MAPPED_LAYER, image_id, layer))

    def remove_mapped_top_layer(self, ref: str, layer: str) -> None:
        """Remove an alternate top layer (matched case-insensitively, as Go does)."""
        check_ref(ref)
        layer = check_str(layer, "layer")
        self._mutate(self._remove_mapped_locked, ref, layer)

    def _remove_mapped_locked(self, txn: _Txn, ref: str, layer: str) -> None:
        image = self._find(self._state, ref)
        if any(fold_equal(x, layer) for x in image.mapped_top_layers):
            self._emit(txn, ev.mapped_layer(ev.REMOVE_MAPPED_LAYER, image.id, layer))

    def _simple(self, txn: _Txn, ref: str, make: Callable[[str], Mapping[str, Any]]) -> None:
        """A one-event mutation of an existing image."""
        image = self._find(self._state, ref)
        self._emit(txn, make(image.id))

    def set_big_data(
        self,
        ref: str,
        key: str,
        data: bytes,
        digest_manifest: Callable[[bytes], str] | None = None,
    ) -> None:
        """Store `data` under `key`; a manifest key's digest also identifies the image."""
        check_ref(ref)
        key = check_key(key)
        data = check_bytes(data)
        if key.startswith("manifest") and digest_manifest is not None:
            digest = digest_manifest(data)
            check_digest(digest, f"manifest digest of {key!r}")
        else:
            digest = sha256_digest(data)
        self._mutate(self._set_big_data_locked, ref, key, data, digest)

    def _set_big_data_locked(self, txn: _Txn, ref: str, key: str, data: bytes, digest: str) -> None:
        image = self._find(self._state, ref)
        self._emit(txn, ev.set_big_data(image.id, key, len(data), digest))
        txn.writes.append(Write(image.id, key, data))
        txn.pending[(image.id, key)] = data

    @contextlib.contextmanager
    def batch(self) -> Iterator[ImageStore]:
        """Group mutations into one record, one lock hold and one fsync; all or nothing.

        Reads inside the block see the pending changes; other instances see nothing until the
        block ends. An exception inside the block appends nothing and changes no file.
        """
        with self._writing():
            yield self

    def garbage_collect(self) -> list[str]:
        """Remove image directories (64-hex names) that no image owns; returns their names."""
        removed: list[str] = []
        with self._locked():
            state = self._state
            for name in sorted(self._disk.listdir(self.path)):
                path = os.path.join(self.path, name)
                if _is_hex_id(name) and state.images.get(name) is None and self._disk.is_dir(path):
                    self._disk.rmtree(path)
                    removed.append(name)
            self._files.clean_staging(sync=self._sync)
        return removed

    def compact(self) -> bool:
        """Write images.json now and start a new journal segment.

        Returns False (and writes nothing) when images.json already holds the current state:
        no record was appended since the last snapshot.
        """
        with self._mutex:
            if self._txn is not None:  # waiting below would deadlock: the compactor needs the mutex
                raise StoreError("this operation cannot run inside batch()")
        self._wait_for_compaction()
        with self._locked():
            cursor = self._cursor
            assert cursor is not None
            if cursor.header.get("snapshot") and cursor.offset == cursor.start:
                return False
            self._compact_locked()
            return True

    # ================================================================== audit

    def _journal(self) -> Journal:
        if not self._segments():
            raise StoreError(f"{self.path} has no journal: it was written by containers/storage, not journalstore")
        return Journal(self._disk, self.path)

    def history(
        self,
        ref: str | None = None,
        *,
        since: int | datetime | None = None,
        until: int | datetime | None = None,
        kinds: Iterable[str] | None = None,
    ) -> Iterator[Event]:
        """The journal's events, oldest first (see journalstore.audit.Journal.history).

        `since`/`until` take a sequence number or a datetime (inclusive). With `ref`, only the
        events of that image, which may be asked for by its ID or any name it once had.
        """
        return self._journal().history(ref, since=since, until=until, kinds=kinds, current=self._lookup_now)

    def at(self, when: int | datetime) -> StoreView:
        """A read-only view of the store right after record `when` (or the last record at or
        before a datetime)."""
        state = self._journal().state_at(when)
        moment = when if isinstance(when, datetime) else None
        return StoreView(state, moment, self._current_by_id, self._files.read)

    def image_id_of(self, ref: str) -> str:
        """The ID a reference means for history: the current image, else the last image that had
        that ID or name (ImageUnknown if none ever did)."""
        return self._journal().resolve(ref, self._lookup_now)

    def follow(self, after_seq: int | None = None) -> Follower:
        """Events appended after record `after_seq` (default: now), polled with `.poll()`."""
        if after_seq is not None and (not isinstance(after_seq, int) or isinstance(after_seq, bool)):
            raise TypeError(f"after_seq must be a sequence number, not {type(after_seq).__name__}")
        return Follower(self._disk, self.path, self._state.seq if after_seq is None else after_seq)

    def verify(self) -> VerifyReport:
        """Check every segment's checksums and that replay reproduces every snapshot."""
        return verify(self.path, self._disk)

    @property
    def history_start(self) -> int:
        """The first sequence number whose event is still in the journal (after pruning)."""
        return self._journal().first_seq() + 1

    def _lookup_now(self, ref: str) -> Image | None:
        with self._mutex:
            return self._fresh().lookup(ref)

    def _current_by_id(self, image_id: str) -> Image | None:
        with self._mutex:
            return self._fresh().get(image_id)

    # ================================================================== lifetime

    def close(self) -> None:
        """Finish an automatic compaction in progress, then release the journal and lock."""
        with self._mutex:
            if self._txn is not None:  # waiting below would deadlock: the compactor needs the mutex
                raise StoreError("close() cannot run inside batch(): leave the batch first")
        self._wait_for_compaction()
        with self._mutex:
            if self._cursor is not None:
                self._cursor.close()
                self._cursor = None
            if self._lock is not None:
                self._lock.close()
                self._lock = None
            self._read_only = True
            self._read_only_reason = "the store was closed"

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self._read_only else "read-write"
        return f"<ImageStore {self.path} {mode} seq={self._state.seq} images={self._state.count}>"

