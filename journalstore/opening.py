"""Opening and recovery: make an instance's `Live` match the directory, and keep it caught up.

Owns the first open (a fresh store, or the import of a containers/storage images.json), loading
the newest snapshot and the records after it (rebuilding a lost snapshot from history), the
checks that a segment is not missing, reading a store containers/storage wrote, catching up
with records other writers appended, and the repair a writer runs after a crash (cutting a torn
tail, finishing a rotation, publishing, cleaning staging). It does not append commit records of
its own (but the import record), and it does not decide when to compact.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any

from . import events as ev
from . import foreign, history_index, replay
from . import journal as jn
from . import publication as pub
from . import snapshot as snap
from .compaction import Compactor
from .errors import (
    DuplicateImageNames,
    ForeignDamage,
    JournalCorrupt,
    SnapshotMismatch,
    StoreError,
    StoreNotFound,
    StoreWarning,
)
from .live import Live
from .locking import WriterLock
from .reducer import State


def open_store(live: Live, lock_timeout: float | None) -> None:
    """Open the directory: create it and its journal if asked to write, then load it."""
    layout = live.layout
    disk = live.disk
    if live.read_only:
        if not disk.is_dir(live.path):
            raise StoreNotFound(f"no store at {live.path}")
    else:
        try:
            layout.make_directory()
        except PermissionError:
            if not disk.is_dir(live.path):
                raise
        if not os.access(live.path, os.W_OK | os.X_OK):
            live.fall_back_read_only(f"{live.path} is not writable by this user")
        else:
            try:
                live.lock = WriterLock(disk, layout.lock_file, lock_timeout)
            except PermissionError:
                live.fall_back_read_only(f"cannot open {os.path.basename(layout.lock_file)} for writing")
    if live.lock is not None and not layout.segments():
        live.lock.acquire()
        try:
            if not layout.segments():
                initialize(live)
        finally:
            live.lock.release()
    if layout.segments():
        load_journal(live)
    else:
        load_legacy(live)


def initialize(live: Live) -> None:
    """Make a directory a journalstore store (caller holds the lock): a fresh one, or an
    import of the containers/storage images.json it holds."""
    layout = live.layout
    disk = live.disk
    for directory in (layout.journal_dir, live.files.staging):
        if not disk.is_dir(directory):
            disk.mkdir(directory, 0o700)
    disk.fsync_dir(live.path)
    images_json = layout.images_json
    snapshot: dict[str, Any] | None = None
    import_event: dict[str, Any] | None = None
    if disk.exists(images_json):
        data = disk.read_file(images_json)
        docs = snap.decode(data, images_json)
        records = snap.images_from_docs(docs, images_json, False)
        dropped = State().load(records)
        archive = snap.archive_name(1)
        layout.link_or_copy(images_json, os.path.join(layout.journal_dir, archive), data)
        snapshot = {"file": archive, "xxh3": snap.snapshot_digest(data), "size": len(data)}
        layout.write_twin(1, records, {}, snapshot["xxh3"], len(data))
        import_event = {
            "op": ev.IMPORT,
            "source": images_json,
            "count": len(records),
            "dropped_names": [list(pair) for pair in dropped],
            # What images.lock and images.json held: a later save of containers/storage changes
            # the first, damage changes only the second (foreign.lock_state).
            "lock": live.read_last_writer().hex(),
            "xxh3": f"{pub.digest(data):016x}",
        }
    layout.create_segment(1, 0, snapshot)
    if import_event is not None:
        cursor = jn.Cursor(disk, layout.journal_dir, 1, writable=True)
        try:
            body = live.record_body(1, [import_event])
            body["chain"] = 1  # the first record: nothing before it to link to
            cursor.append(jn.encode_frame(cursor.pack(body)), sync=live.sync)
        finally:
            cursor.close()
        if import_event["dropped_names"]:
            live.compact_soon = True  # give Go readers a file without duplicates


def load_journal(live: Live, *, locked: bool = False) -> None:
    """The newest segment's snapshot, then that segment's records.

    If that snapshot is lost (images.json and its archive both missing or damaged), the
    state is rebuilt from the nearest older snapshot by replaying the segments after it.
    """
    with replay.gc_paused():
        _load_journal(live, locked)


def _load_journal(live: Live, locked: bool) -> None:
    disk = live.disk
    journal_dir = live.layout.journal_dir
    segs = live.layout.segments()
    newest = segs[-1]
    meta = replay.header(disk, journal_dir, newest)
    reference = meta.get("snapshot")
    state: State | None = None
    start = newest
    live.overlay = False
    head = live.read_lock_head()
    live.import_mark = None
    if pub.parse(head).mark is None and segs[0] == 1:
        live.import_mark = foreign.import_mark(live)
    marked = foreign.lock_state(live, head).mark is not None  # we know what images.json holds
    if reference:
        data = base_snapshot(live, newest, reference, marked)
        if data is not None:
            state = replay.snapshot_state(disk, journal_dir, newest, reference, data, live.read_only)
    else:
        reference = {}
        state = State(live.read_only)
        check_not_lost(live, newest)
        if not marked:
            foreign.check_unexpected_images_json(live)
    if state is None:
        found = replay.nearest_base(disk, journal_dir, int(meta.get("base_seq", 0)), live.read_only)
        if found is None:
            raise SnapshotMismatch(
                f"the snapshot segment {newest} starts from ({reference.get('file')}, xxh3 "
                f"{reference.get('xxh3')}) is missing or damaged, in images.json and in journal/, "
                "and no older segment remains to rebuild it from"
            )
        start, state = found
        reference = replay.header(disk, journal_dir, start).get("snapshot") or {}
        warnings.warn(
            f"{live.path}: the snapshot of segment {newest} is damaged; rebuilt the state by replaying "
            f"the journal from segment {start}",
            StoreWarning,
            stacklevel=5,
        )
        live.compact_soon = True
    else:
        state.seq = int(meta.get("base_seq", 0))
    live.state = state
    index = history_index.load(disk, journal_dir, start, reference, state.seq)
    live.index = index if index is not None else history_index.HistoryIndex.fresh(state)
    live.segment_events = 0
    if live.cursor is not None:
        live.cursor.close()
    live.cursor = jn.Cursor(disk, journal_dir, start, writable=not live.read_only)
    live.needs_repair = True
    catch_up(live)
    check_publication(live, head, locked)


def check_publication(live: Live, head: bytes, locked: bool = False) -> None:
    """After loading: what images.lock says of images.json (a store with a publication mark).

    JournalCorrupt if images.json holds a record the journal no longer has; ForeignDamage (a
    warning when read-only) if images.json changed while the last-writer bytes did not; a Go
    save is noted for the first write (read-write) or merged in memory (read-only).

    Without a lock, a save in progress (Go's, or another writer's publication) can look like
    either problem, so a verdict against the store is only given under containers/storage's
    read lock, which no save holds: the one place an open waits for a writer.
    """
    live.lock_seen = b""
    lock = foreign.lock_state(live, head)
    if lock.mark is None:  # never published with a mark (an older store)
        if live.foreign_data is not None and foreign.go_saved(live, head) is not None:
            live.foreign_data = None  # a containers/storage save: merged as one, event by event
            if not live.read_only:
                live.go_pending = True
            else:
                notice_go_save(live, head)
        return
    problem = _publication_problem(live, head)
    if problem is not None and not locked:  # `locked`: the caller holds the writers' lock
        with live.read_locked():
            catch_up(live)
            head = live.read_lock_head()
            problem = _publication_problem(live, head)
    if problem is None:
        return
    if isinstance(problem, JournalCorrupt) or not live.read_only:
        raise problem
    warnings.warn(f"{problem} Showing the journal's state.", StoreWarning, stacklevel=6)
    live.lock_seen = head


def _publication_problem(live: Live, head: bytes) -> StoreError | None:
    """What is wrong with images.json and images.lock now (None: nothing), noting what to do."""
    lock = foreign.lock_state(live, head)
    mark = lock.mark
    cursor = live.cursor
    assert cursor is not None
    if mark is None:
        return None
    if mark.seq > live.state.seq:
        return JournalCorrupt(
            f"images.json holds record {mark.seq} (so images.lock says), but the journal in "
            f"{live.layout.journal_dir} ends at record {live.state.seq}: its newest records are missing",
            segment=cursor.segment,
            offset=cursor.offset,
        )
    if not lock.ours and foreign.go_saved(live, head) is not None:
        if not live.read_only:
            live.go_pending = True  # merged under the lock before anything else
        else:
            notice_go_save(live, head)
        return None
    # Ours, or ours with images.lock half written when the power went: images.json tells.
    data: bytes | None = None
    with contextlib.suppress(FileNotFoundError):
        data = live.disk.read_file(live.layout.images_json)
    if data is None:
        live.publish_pending = True  # nothing to merge or to lose: the next writer publishes again
        return None
    digest = pub.digest(data)
    reference = cursor.header.get("snapshot") or {}
    snapshot_digest = foreign.snapshot_xxh3(live)
    if digest == mark.xxh3:
        live.lock_seen = head
        if live.shared:
            live.publish_pending = mark.seq < live.state.seq
        else:  # a compaction that stopped before publishing its snapshot
            live.publish_pending = snapshot_digest is not None and digest != snapshot_digest
        return None
    if foreign.published_by_us(live, digest, None):
        live.publish_pending = True  # a publication that stopped (or a power cut undid) part way
        return None
    if reference.get("file"):
        with contextlib.suppress(FileNotFoundError):
            archive = live.disk.read_file(os.path.join(live.layout.journal_dir, str(reference["file"])))
            if pub.digest(archive) == digest:
                return None  # our snapshot, damaged in place with its hard link: rebuilt from history
    if live.accepting:
        live.go_pending = True  # a hand edit the caller accepts: merged under the lock
        return None
    return foreign.damage(
        live, "changed while the last-writer bytes of images.lock did not (not a save of containers/storage)"
    )


def notice_go_save(live: Live, head: bytes | None = None) -> bool:
    """Whether containers/storage saved since this instance last looked; if so, its changes are
    applied to the state in memory only (a reader's view; the next writer records them).
    One pread of images.lock when nothing changed."""
    if head is None:
        if live.read_last_writer() == live.lock_seen[: pub.LAST_WRITER_SIZE]:
            return False
        head = live.read_lock_head()
    if head == live.lock_seen:
        return False
    lock = foreign.go_saved(live, head)
    live.lock_seen = head
    if lock is None:
        return False
    try:
        foreign.overlay(live, lock)
    except ForeignDamage as exc:
        warnings.warn(f"{exc} Showing the journal's state.", StoreWarning, stacklevel=5)
        return False
    return True


def base_snapshot(live: Live, segment: int, reference: dict[str, Any], marked: bool) -> bytes | None:
    """The verified bytes of the snapshot a segment starts from: images.json or its archive.

    Notes whether images.json must be published again (a compaction stopped before it) or
    was rewritten by another program. None when neither copy is intact.
    """
    want = reference.get("xxh3")
    images_json = live.layout.images_json
    current: bytes | None = None
    with contextlib.suppress(FileNotFoundError):
        current = live.disk.read_file(images_json)
    if current is not None and snap.snapshot_digest(current) == want:
        live.publish_pending = False
        return current
    if current is not None:
        check_not_lost(live, segment)
    data = replay.archive_bytes(live.disk, live.layout.journal_dir, reference)
    if marked:
        return data  # images.json is published state or a Go save: check_publication tells which
    if current is None or foreign.is_our_snapshot(live):
        live.publish_pending = True  # a compaction stopped before publishing images.json
    elif data is not None:
        foreign.note(live, current)
    else:
        live.publish_pending = True  # damaged in place (it shares its inode with the archive)
    return data


def check_not_lost(live: Live, newest: int) -> None:
    """JournalCorrupt if images.json is the archived snapshot of a segment after `newest`.

    A compaction publishes images.json (the archive's bytes) only after the segment that starts
    from it exists, so that segment existed and is gone with its records: a missing newest
    segment, not a compaction that stopped early. Compared by checksum, not by inode, so that a
    copy made without hard links behaves as the original.
    """
    disk = live.disk
    journal_dir = live.layout.journal_dir
    later = []
    for name in disk.listdir(journal_dir):
        number = snap.parse_archive_name(name)
        if number is not None and number > newest:
            later.append((number, name))
    if not later:
        return
    try:
        published = snap.snapshot_digest(disk.read_file(live.layout.images_json))
    except FileNotFoundError:
        return
    for number, name in sorted(later):
        with contextlib.suppress(FileNotFoundError):
            if snap.snapshot_digest(disk.read_file(os.path.join(journal_dir, name))) != published:
                continue
            if disk.exists(os.path.join(journal_dir, jn.segment_name(number))):
                return  # a compaction finished after the segments were listed: not lost
            raise JournalCorrupt(
                f"segment {number} is missing from {journal_dir}: images.json was published from "
                f"its snapshot {name}, so it existed, and the records it held are lost. To open the store "
                f"as of that snapshot anyway, remove images.json.",
                segment=number,
                offset=0,
            )


# ---------------------------------------------------------------------- a store Go wrote


def load_legacy(live: Live) -> None:
    """A directory containers/storage wrote (read-only): images.json alone."""
    with replay.gc_paused():
        _load_legacy(live)


def _load_legacy(live: Live) -> None:
    images_json = live.layout.images_json
    disk = live.disk
    try:
        st = disk.stat(images_json)
        data = disk.read_file(images_json)
    except FileNotFoundError:
        live.legacy_stamp = (0, 0, 0)
        live.state = State(live.read_only)
        return
    records = snap.images_from_docs(snap.decode(data, images_json), images_json, live.read_only)
    state = State(live.read_only)
    dropped = state.load(records)
    if dropped:
        names = ", ".join(sorted({name for _, name in dropped}))
        raise DuplicateImageNames(f"{images_json} gives the same name to several images: {names}")
    live.state = state
    live.legacy_stamp = (st.st_ino, st.st_size, st.st_mtime_ns)


def _refresh_legacy(live: Live) -> bool:
    if live.layout.segments():  # the directory became a journalstore store meanwhile
        load_journal(live)
        return True
    try:
        st = live.disk.stat(live.layout.images_json)
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    except FileNotFoundError:
        stamp = (0, 0, 0)
    if stamp == live.legacy_stamp:
        return False
    load_legacy(live)
    return True


# ---------------------------------------------------------------------- catching up


def catch_up(live: Live) -> bool:
    """Apply records other writers appended; True if there were any (caller holds the mutex)."""
    cursor = live.cursor
    if cursor is None:
        return _refresh_legacy(live)
    if not cursor.changed():
        return False
    if live.overlay:  # a Go save merged in memory only: the journal may now record it
        load_journal(live)
        return True
    applied = False
    segment = cursor.segment
    for rec in cursor.poll():
        if cursor.segment != segment:
            segment = cursor.segment
            live.segment_events = 0
        try:
            replay.apply_record(live.state, rec, live.index)
        except BaseException:
            cursor.rewind(rec)  # never step over a record that did not apply
            raise
        live.segment_events += len(rec.body["events"])
        live.encoder.touched(rec.body["events"])
        applied = True
    if cursor.segment != segment:
        live.segment_events = 0
    return applied


# ---------------------------------------------------------------------- repair


def repair(live: Live, compactor: Compactor) -> None:
    """Finish what a writer that died left undone (caller holds the lock, has caught up).

    What remains for the caller's transaction: merging a foreign images.json and a snapshot
    noted as due (`live.foreign_data`, `live.compact_soon`).
    """
    cursor = live.cursor
    assert cursor is not None
    if cursor.tail is not None:
        tail = cursor.tail
        prepare = cursor.dangling_prepare
        if prepare is not None:
            seq, files = prepare.body.get("seq"), prepare.body.get("files")
            if isinstance(seq, int) and isinstance(files, list | tuple):
                live.files.undo(seq, files)  # a prepare we could not have written undoes nothing
        size = live.disk.size(cursor.fd)
        if prepare is None or size > prepare.end:
            _keep_broken(live, tail)
        cursor.cut_tail(sync=live.sync)
    if cursor.end_record is not None and not live.disk.exists(cursor.path(cursor.segment + 1)):
        compactor.finish_rotation(cursor.end_record)
        catch_up(live)
    if live.publish_pending:
        compactor.publish()
    if not live.repaired:
        live.files.clean_staging(sync=live.sync)
        live.layout.remove_dead_temporaries()
        live.blobs.remove_temporaries()
        live.repaired = True
    live.needs_repair = False


def _keep_broken(live: Live, tail: jn.Tail) -> None:
    """Keep a copy of bytes about to be cut from the journal (etcd's .broken file)."""
    cursor = live.cursor
    assert cursor is not None
    disk = live.disk
    size = disk.size(cursor.fd)
    data = disk.pread(cursor.fd, size - tail.offset, tail.offset)
    name = f"{jn.segment_name(tail.segment)}.broken-{tail.offset}"
    disk.write_file(os.path.join(live.layout.journal_dir, name), data, sync=live.sync)
    warnings.warn(
        f"cut {len(data)} bytes of an unfinished record from segment {tail.segment} at offset "
        f"{tail.offset} ({tail.reason}); a copy is in {name}",
        StoreWarning,
        stacklevel=7,
    )
