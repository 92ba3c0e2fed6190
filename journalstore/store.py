"""`ImageStore`: the facade. Every call flows one way: validate → event → journal → reducer.

The public methods check their arguments, then hand them to the module that does the work:
`opening` (open, recover, catch up), `transaction` (the writers' lock, commit, undo),
`mutations` (the events of each write), `compaction` (snapshots, rotation, retention) and
`audit` (history and the past). The facade itself holds no store logic.

Reads take no lock: they compare the journal's size with the position this instance has applied
and apply only new records (one fstat when nothing changed).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from . import events as ev
from . import journal as jn
from . import mutations, opening
from .audit import Event, Follower, Journal
from .bigdata import check_key, sha256_digest
from .checking import VerifyReport, verify
from .compaction import DEFAULT_COMPACT_BYTES, DEFAULT_COMPACT_EVERY, MIN_COMPACT_EVENTS, Compactor
from .errors import BigDataUnknown, SizeUnknown, StoreError, StoreWarning
from .fsio import DEFAULT_DISK, Disk
from .history_index import HistoryIndex
from .layout import JOURNAL_DIR, LOCK_FILE, Layout
from .live import Live
from .reads import StateReads
from .record import Image, is_manifest_key, time_from_datetime
from .reducer import State
from .transaction import Transactions
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
from .views import ImagesAt, PastBytes, StoreView

__all__ = [
    "DEFAULT_COMPACT_BYTES",
    "DEFAULT_COMPACT_EVERY",
    "JOURNAL_DIR",
    "LOCK_FILE",
    "MIN_COMPACT_EVENTS",
    "FsyncMode",
    "ImageStore",
    "StoreWarning",
]

FsyncMode = Literal["always", "never"]
_HEX64 = frozenset("0123456789abcdef")
_CREATED_MIN = -62_135_596_800 * 1_000_000_000  # 0001-01-01T00:00:00Z, in ns since the epoch
_CREATED_MAX = 253_402_300_800 * 1_000_000_000 - 1  # 9999-12-31T23:59:59.999999999Z


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
        shared: bool | None = None,
        accept_images_json: bool = False,
        disk: Disk | None = None,
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"store path must be a string or path, not {type(path).__name__}")
        if not os.fspath(path):
            raise ValueError("store path is empty")  # abspath would make it the working directory
        if accept_images_json and read_only:
            raise ValueError("accept_images_json merges images.json into the journal: it needs a read-write store")
        if shared is not None and not isinstance(shared, bool):
            raise TypeError(f"shared must be True, False or None, not {type(shared).__name__}")
        if fsync not in ("always", "never"):
            raise ValueError(f"fsync must be 'always' or 'never', not {fsync!r}")
        check_str(actor, "actor")  # it goes into every record
        for name, value in (("compact_every", compact_every), ("compact_bytes", compact_bytes)):
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive integer or None, not {value!r}")
        if lock_timeout is not None:
            if not isinstance(lock_timeout, int | float) or isinstance(lock_timeout, bool):
                raise TypeError(f"lock_timeout must be a number of seconds or None, not {type(lock_timeout).__name__}")
            if not lock_timeout >= 0:  # NaN too
                raise ValueError(f"lock_timeout must be a non-negative number of seconds, not {lock_timeout!r}")
        for name, limit in (("keep_segments", keep_segments), ("keep_age", keep_age)):
            if limit is not None and (not isinstance(limit, int | float) or not 0 <= limit < float("inf")):
                raise ValueError(f"{name} must be a non-negative number or None, not {limit!r}")
        self.path = os.path.abspath(os.fspath(path))
        self.fsync: FsyncMode = fsync
        self.actor = actor
        self._disk = disk or DEFAULT_DISK
        self._layout = Layout(self._disk, self.path, fsync == "always")
        if shared is None:
            shared = self._layout.in_containers_storage_root()
        self._live = live = Live(self._layout, read_only=read_only, actor=actor, shared=shared)
        self._mutex = live.mutex
        self._tx = Transactions(live)
        self._compactor = Compactor(
            live,
            acquire=self._tx.acquire,
            release=self._tx.release,
            compact_every=compact_every,
            compact_bytes=compact_bytes,
            keep_segments=keep_segments,
            keep_age=keep_age,
        )
        self._tx.compactor = self._compactor
        live.accepting = accept_images_json
        try:
            opening.open_store(live, lock_timeout)
            if (live.foreign_data is not None or live.go_pending) and not live.read_only:
                with self._tx.locked():
                    pass  # the repair step merges the foreign images.json
            live.accepting = False
        except BaseException:
            self.close()  # the journal and lock descriptors opened so far
            raise

    # ================================================================== settings

    @property
    def compact_every(self) -> int | None:
        return self._compactor.compact_every

    @property
    def compact_bytes(self) -> int | None:
        return self._compactor.compact_bytes

    @property
    def keep_segments(self) -> int | None:
        return self._compactor.keep_segments

    @property
    def keep_age(self) -> float | None:
        return self._compactor.keep_age

    @property
    def shared(self) -> bool:
        """Whether every commit is published for containers/storage (images.json and the
        last-writer bytes of images.lock) before the call returns; docs/coexistence.md."""
        return self._live.shared

    @property
    def foreign_rewrite(self) -> bool:
        """Whether images.json was rewritten by another program and is not merged yet."""
        return self._live.foreign_rewrite

    @property
    def position(self) -> jn.Position:
        """(segment, offset) of the journal this instance has applied up to."""
        with self._mutex:
            cursor = self._live.cursor
            return jn.Position(0, 0) if cursor is None else cursor.position

    @property
    def seq(self) -> int:
        """Sequence number of the last record applied."""
        return self._live.state.seq

    @property
    def read_only(self) -> bool:
        return self._live.read_only

    # ================================================================== reads

    def _fresh(self) -> State:
        """The state, caught up with other writers (one fstat when nothing changed; and in a
        shared store one pread of images.lock, to see containers/storage's saves)."""
        if self._tx.txn is None:
            live = self._live
            opening.catch_up(live)
            if live.shared and live.cursor is not None:
                opening.notice_go_save(live)
        return self._live.state

    def refresh(self) -> bool:
        """Apply records other processes appended (and, in a shared store, what containers/storage
        saved); True if there were any."""
        with self._mutex:
            if self._tx.txn is not None:
                return False
            live = self._live
            appended = opening.catch_up(live)
            saved = live.shared and live.cursor is not None and opening.notice_go_save(live)
            return appended or saved

    def big_data(self, ref: str, key: str) -> bytes:
        """The bytes of a big-data item, exactly the bytes its recorded size and digest describe.

        Readers take no lock, so a read is checked like a seqlock: if the journal moved while the
        file was read, it is read again. While another process is replacing the file (its
        prepare record is in the journal, its commit is not), the old bytes are read from the
        backup that writer keeps until its commit.
        """
        check_read_key(key)
        files = self._live.files
        with self._mutex:
            for attempt in range(200):
                image = self._fresh().find(ref)
                if key not in image.big_data_names:
                    raise BigDataUnknown(f"image {image.id} has no big-data item {key!r}")
                txn = self._tx.txn
                if txn is not None:
                    pending = txn.pending.get((image.id, key))
                    return pending if pending is not None else self._read_or_missing(image.id, key)
                cursor = self._live.cursor
                if cursor is None:  # a directory containers/storage wrote: nothing to race with
                    return self._read_or_missing(image.id, key)
                # The journal size the state was caught up to, not its size now: a writer may have
                # prepared and renamed its file in between, unseen by this state.
                size = cursor.seen_size
                data: bytes | None = None
                with contextlib.suppress(FileNotFoundError):
                    data = self._disk.read_file(files.path(image.id, key))
                # The backup is linked before the new file is renamed into place: if it exists,
                # what we read may already be the uncommitted bytes, and the backup holds ours.
                backup = files.backup_of(cursor.dangling_prepare, image.id, key)
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
            return self._live.files.read(image_id, key)
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
        self._live.check_writable()
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
        return self._tx.mutate(
            mutations.create,
            self._live.files,
            image_id,
            name_list,
            layer,
            digest,
            metadata,
            created_ns,
            offset,
            history,
            flag_map,
            items,
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

    def set_names(self, ref: str, names: Iterable[str]) -> None:
        """Replace the image's names; a name another image holds moves to this one."""
        self._names_op(ev.SET_NAMES, ref, names)

    def add_names(self, ref: str, names: Iterable[str]) -> None:
        """Add names in front of the image's names; a name another image holds moves here."""
        self._names_op(ev.ADD_NAMES, ref, names)

    def remove_names(self, ref: str, names: Iterable[str]) -> None:
        """Remove names from the image."""
        self._names_op(ev.REMOVE_NAMES, ref, names)

    def _names_op(self, op: mutations.NameOp, ref: str, names: Iterable[str]) -> None:
        check_ref(ref)
        values = check_names(names)
        self._tx.mutate(mutations.names, op, ref, values)

    def delete(self, ref: str) -> None:
        """Delete the image's record, then its data directory."""
        check_ref(ref)
        self._tx.mutate(mutations.delete, ref)

    def wipe(self) -> None:
        """Delete every image (one record)."""
        self._tx.mutate(mutations.wipe)

    def set_metadata(self, ref: str, metadata: str) -> None:
        """Replace the image's metadata string."""
        check_ref(ref)
        metadata = check_str(metadata, "metadata")
        self._tx.mutate(mutations.simple, ref, lambda image_id: ev.set_metadata(image_id, metadata))

    def set_flag(self, ref: str, key: str, value: Any) -> None:
        """Set a flag; the value must be representable in JSON and msgpack."""
        check_ref(ref)
        check_flag_key(key)
        check_flag_value(value, repr(key))
        self._tx.mutate(mutations.simple, ref, lambda image_id: ev.set_flag(image_id, key, value))

    def clear_flag(self, ref: str, key: str) -> None:
        """Remove a flag (no error if it is not set)."""
        check_ref(ref)
        check_flag_key(key)
        self._tx.mutate(mutations.simple, ref, lambda image_id: ev.clear_flag(image_id, key))

    def add_mapped_top_layer(self, ref: str, layer: str) -> None:
        """Append an alternate top layer."""
        check_ref(ref)
        layer = check_str(layer, "layer")
        self._tx.mutate(
            mutations.simple, ref, lambda image_id: ev.mapped_layer(ev.ADD_MAPPED_LAYER, image_id, layer)
        )

    def remove_mapped_top_layer(self, ref: str, layer: str) -> None:
        """Remove an alternate top layer (matched case-insensitively, as Go does)."""
        check_ref(ref)
        layer = check_str(layer, "layer")
        self._tx.mutate(mutations.remove_mapped_layer, ref, layer)

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
        if is_manifest_key(key) and digest_manifest is not None:
            digest = digest_manifest(data)
            check_digest(digest, f"manifest digest of {key!r}")
        else:
            digest = sha256_digest(data)
        self._tx.mutate(mutations.set_big_data, ref, key, data, digest)

    @contextlib.contextmanager
    def batch(self) -> Iterator[ImageStore]:
        """Group mutations into one record, one lock hold and one fsync; all or nothing.

        Reads inside the block see the pending changes; other instances see nothing until the
        block ends. An exception inside the block appends nothing and changes no file.
        """
        with self._tx.writing():
            yield self

    # ================================================================== maintenance

    def garbage_collect(self) -> list[str]:
        """Remove image directories (64-hex names) that no image owns; returns their names."""
        removed: list[str] = []
        with self._tx.locked():
            state = self._live.state
            for name in sorted(self._disk.listdir(self.path)):
                path = os.path.join(self.path, name)
                if _is_hex_id(name) and state.images.get(name) is None and self._disk.is_dir(path):
                    self._disk.rmtree(path)
                    removed.append(name)
            self._live.files.clean_staging(sync=self._layout.sync)
        return removed

    def compact(self) -> bool:
        """Write images.json now and start a new journal segment.

        Returns False (and writes nothing) when images.json already holds the current state:
        no record was appended since the last snapshot.
        """
        self._refuse_in_batch("this operation cannot run inside batch()")
        self._compactor.wait()
        with self._tx.locked():
            cursor = self._live.cursor
            assert cursor is not None
            if cursor.header.get("snapshot") and cursor.offset == cursor.start:
                return False
            self._compactor.compact_locked()
            return True

    def prune_journal(self, keep_segments: int | None = None, older_than: float | None = None) -> list[str]:
        """Delete closed journal segments (and their snapshots) beyond `keep_segments` or older
        than `older_than` seconds. The current segment is never touched. Returns file names."""
        for name, value in (("keep_segments", keep_segments), ("older_than", older_than)):
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise ValueError(f"{name} must be a non-negative number or None, not {value!r}")
        with self._tx.locked():
            return self._compactor.prune_locked(keep_segments, older_than)

    def wait_for_compaction(self) -> None:
        """Wait until an automatic compaction this instance started has finished.

        Automatic compactions run in a background thread; call this before looking at the
        store's files directly (tests, backups) if the result must not change under you.
        """
        self._compactor.wait()

    def _refuse_in_batch(self, message: str) -> None:
        # Waiting for the compactor inside a batch would deadlock: it needs the mutex.
        with self._mutex:
            if self._tx.txn is not None:
                raise StoreError(message)

    # ================================================================== audit

    def _journal(self) -> Journal:
        if not self._layout.segments():
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
        journal = self._journal()
        index = self._caught_up_index() if ref is not None else None
        return journal.history(ref, since=since, until=until, kinds=kinds, current=self._lookup_now, index=index)

    def at(self, when: int | datetime) -> StoreView:
        """A read-only view of the store right after record `when` (or the last record at or
        before a datetime)."""
        if isinstance(when, bool) or not isinstance(when, int | datetime):
            raise TypeError(f"at() takes a sequence number or a datetime, not {type(when).__name__}")
        journal = self._journal()
        index = self._caught_up_index()
        past = PastBytes(journal, self._live.blobs, index)
        if isinstance(when, datetime):
            return StoreView(journal.state_at(when), when, self._current_by_id, self._live.files.read, past)
        journal.check_moment(when, self.seq)
        pinned = journal.pinned(when)  # what the rebuild reads stays readable, pruned or not
        return StoreView(
            lambda: pinned.state_at(when),  # only when a read needs more than one image
            None,
            self._current_by_id,
            self._live.files.read,
            past,
            seq=when,
            quick=ImagesAt(journal, index, when),
        )

    def image_id_of(self, ref: str) -> str:
        """The ID a reference means for history: the current image, else the last image that had
        that ID or name (ImageUnknown if none ever did)."""
        return self._journal().resolve(ref, self._lookup_now, self._caught_up_index())

    def follow(self, after_seq: int | None = None) -> Follower:
        """Events appended after record `after_seq` (default: now), polled with `.poll()`."""
        if after_seq is not None and (not isinstance(after_seq, int) or isinstance(after_seq, bool)):
            raise TypeError(f"after_seq must be a sequence number, not {type(after_seq).__name__}")
        return Follower(self._disk, self.path, self.seq if after_seq is None else after_seq)

    def verify(self) -> VerifyReport:
        """Check every segment's checksums and that replay reproduces every snapshot."""
        return verify(self.path, self._disk)

    @property
    def history_start(self) -> int:
        """The first sequence number whose event is still in the journal (after pruning)."""
        return self._journal().first_seq() + 1

    def _caught_up_index(self) -> HistoryIndex | None:
        """The history index, caught up with the journal (None outside a transaction-free read)."""
        with self._mutex:
            if self._tx.txn is None:
                opening.catch_up(self._live)
            return self._live.index

    def _lookup_now(self, ref: str) -> Image | None:
        with self._mutex:
            return self._fresh().lookup(ref)

    def _current_by_id(self, image_id: str) -> Image | None:
        with self._mutex:
            return self._fresh().get(image_id)

    # ================================================================== lifetime

    def close(self) -> None:
        """Finish an automatic compaction in progress, then release the journal and lock."""
        self._refuse_in_batch("close() cannot run inside batch(): leave the batch first")
        self._compactor.wait()
        live = self._live
        with self._mutex:
            if live.cursor is not None:
                live.cursor.close()
                live.cursor = None
            if live.lock is not None:
                live.lock.close()
                live.lock = None
            live.close_head()
            live.read_only = True
            live.read_only_reason = "the store was closed"

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self._live.read_only else "read-write"
        state = self._live.state
        return f"<ImageStore {self.path} {mode} seq={state.seq} images={state.count}>"
