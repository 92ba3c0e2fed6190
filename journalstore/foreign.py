"""Foreign rewrites: an images.json that another program (containers/storage) wrote.

Owns telling our snapshots from someone else's images.json, noting one for the next writer,
and turning it into events by a three-way merge against the snapshot both sides started from.
It appends nothing itself: the transaction that runs the repair commits the events it returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal

from . import events as ev
from . import journal as jn
from . import publication as pub
from . import replay
from . import snapshot as snap
from .errors import ForeignDamage, SnapshotMismatch, StoreError, StoreWarning
from .live import Live
from .record import Image
from .reducer import State, apply

NameOp = Literal["set-names", "add-names", "remove-names"]


def is_our_snapshot(live: Live) -> bool:
    """Whether images.json is one of our archived snapshots (same file, or same bytes)."""
    disk = live.disk
    images_json = live.layout.images_json
    journal_dir = live.layout.journal_dir
    try:
        st = disk.stat(images_json)
    except FileNotFoundError:
        return False
    digest = None
    for name in disk.listdir(journal_dir):
        if snap.parse_archive_name(name) is None:
            continue
        path = os.path.join(journal_dir, name)
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


def note(live: Live, data: bytes) -> None:
    """Remember a foreign images.json: a read-write store merges it before its next write (a
    containers/storage save, told by its last-writer bytes, is merged as one after loading)."""
    live.foreign_rewrite = True
    live.foreign_data = data
    head = pub.parse(live.read_lock_head())
    if len(head.last_writer) == pub.LAST_WRITER_SIZE and go_document(data, live.layout.images_json) is not None:
        return  # opening.check_publication decides, once the journal is loaded
    if live.read_only:
        warnings.warn(
            f"{live.path}/images.json was rewritten by another program after the last snapshot; "
            "showing the journal's state. Open the store read-write to merge its changes.",
            StoreWarning,
            stacklevel=7,
        )


def check_unexpected_images_json(live: Live) -> None:
    """An images.json beside a segment that starts from no snapshot was written by another
    program, unless it is one of ours (a compaction that ran while we were opening)."""
    with contextlib.suppress(FileNotFoundError):
        data = live.disk.read_file(live.layout.images_json)
        if not is_our_snapshot(live):
            note(live, data)


def merge_events(live: Live) -> list[Mapping[str, Any]]:
    """The events that bring the journal's state to the noted foreign images.json (lock held).

    A three-way merge against the snapshot the current segment starts from: what the other
    program changed since then, as an external-rewrite event of put-image/delete changes.
    """
    data = live.foreign_data
    live.foreign_data = None
    cursor = live.cursor
    assert cursor is not None and data is not None
    images_json = live.layout.images_json
    journal_dir = live.layout.journal_dir
    reference = cursor.header.get("snapshot")
    base: list[Image] = []
    if reference:
        archive = os.path.join(journal_dir, str(reference.get("file")))
        base_data = replay.archive_bytes(live.disk, journal_dir, reference)
        if base_data is None:
            raise SnapshotMismatch(f"cannot merge {images_json}: the snapshot {archive} it was based on is lost")
        base = snap.images_from_docs(snap.decode(base_data, archive), archive, False)
    if go_document(data, images_json) is None:
        live.foreign_data = data  # still there for the deliberate merge
        raise damage(live, "is not a list of images containers/storage would write", acceptable=False)
    resolved = State()
    resolved.load(snap.images_from_docs(snap.decode(data, images_json), images_json, False))
    ours = {image.id: image for image in live.state}
    return list(snap.merge_events(base, resolved, ours, images_json))


def merged(live: Live, events: list[Mapping[str, Any]]) -> None:
    """Say that a foreign rewrite was merged as the last record."""
    live.foreign_rewrite = False
    warnings.warn(
        f"{live.layout.images_json} was rewritten by another program; merged its changes as record "
        f"{live.state.seq} ({len(events[0]['added'])} added, {len(events[0]['changed'])} changed, "
        f"{len(events[0]['removed'])} removed)",
        StoreWarning,
        stacklevel=7,
    )


# ---------------------------------------------------------------------- containers/storage's saves
#
# A store shared with containers/storage learns of Go's saves from images.lock: Go rewrites its
# first 64 bytes after every save, and our publication mark after them remembers the 64 bytes we
# wrote last (publication.py). Different bytes mean Go saved since; docs/coexistence.md.

GO_ACTOR = "containers-storage"


def accept_hint(live: Live) -> str:
    return f"journalstore --root {live.path} accept-images-json"


def go_document(data: bytes | None, source: str) -> list[Image] | None:
    """The records of an images.json containers/storage could have written (a JSON array of
    image objects, or `null`); None for anything else (empty, cut, not a list, bad records)."""
    if data is None or not data.strip():
        return None  # Go never writes an empty file, and never removes images.json
    try:
        docs = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if docs is None:
        return []
    if not isinstance(docs, list) or not all(isinstance(doc, dict) for doc in docs):
        return None
    try:
        images = snap.images_from_docs(docs, source, False)
    except SnapshotMismatch:
        return None
    if len({image.id for image in images}) != len(images):
        return None
    return images


def import_mark(live: Live) -> pub.Mark | None:
    """What an import recorded of images.lock and images.json (the first record of segment 1),
    standing in for our mark until the store publishes one."""
    cursor = jn.Cursor(live.disk, live.layout.journal_dir, 1, writable=False)
    try:
        for rec in cursor.poll():
            events = rec.body.get("events")
            first = events[0] if isinstance(events, list | tuple) and events else None
            if isinstance(first, Mapping) and first.get("op") == ev.IMPORT and isinstance(first.get("lock"), str):
                with contextlib.suppress(ValueError):
                    return pub.Mark(rec.seq, int(str(first.get("xxh3")), 16), bytes.fromhex(first["lock"]))
            return None
    finally:
        cursor.close()
    return None


def lock_state(live: Live, head: bytes) -> pub.LockBytes:
    """images.lock's bytes, with our mark (or, before the first one, the import's record)."""
    lock = pub.parse(head)
    if lock.mark is None and live.import_mark is not None:
        return pub.LockBytes(lock.last_writer, live.import_mark)
    return lock


def go_saved(live: Live, head: bytes) -> pub.LockBytes | None:
    """The lock bytes, if containers/storage saved since the last publication the journal knows of.

    The last-writer bytes differ from those our mark remembers; and since a Go save always
    rewrites images.json, it is not one of the files we publish either. (images.lock is not
    fsynced, by Go or by us: after a power cut its two parts may disagree while images.json is
    still ours.)
    """
    lock = lock_state(live, head)
    if len(lock.last_writer) < pub.LAST_WRITER_SIZE or lock.ours:
        return None
    try:
        data = live.disk.read_file(live.layout.images_json)
    except FileNotFoundError:
        # Go never removes images.json: with our mark it was there, and read_go_save reports
        # its loss; without, we never published, and there is nothing Go saved to read.
        return None if lock.mark is None else lock
    if published_by_us(live, pub.digest(data), lock.mark):
        return None  # one of our snapshots (after a power cut, maybe an older one: republished)
    return lock


def snapshot_xxh3(live: Live) -> int | None:
    """The checksum of the snapshot the current segment starts from (None: it starts from none)."""
    cursor = live.cursor
    reference = None if cursor is None else cursor.header.get("snapshot")
    return int(str(reference["xxh3"]), 16) if reference and reference.get("xxh3") else None


def published_by_us(live: Live, digest: int, mark: pub.Mark | None) -> bool:
    """Whether images.json with this checksum is one we published: the one our mark names, the
    current snapshot, any archived one, or (shared) the encoding of our state now."""
    ours = {mark.xxh3} if mark is not None else set()
    current = snapshot_xxh3(live)
    if current is not None:
        ours.add(current)
    if live.shared and not live.overlay:
        ours.add(pub.digest(live.encoder.encode(live.state)))
    return digest in ours or is_our_snapshot(live)


def damage(live: Live, why: str, *, acceptable: bool = True) -> StoreError:
    """The error (or, read-only, the warning) for an images.json we will not merge."""
    if acceptable:
        advice = f"If the file was edited by hand on purpose, `{accept_hint(live)}` merges it as a change."
    else:
        advice = "Restore it from journal/ (the newest snapshot-N.json) or let the next save replace it."
    return ForeignDamage(f"{live.layout.images_json} {why}; it is not merged, and nothing was deleted. {advice}")


def go_writer(live: Live, lock: pub.LockBytes) -> dict[str, Any]:
    """Who a containers/storage save is recorded as: its pid and time from the last-writer bytes."""
    ns, pid = lock.writer()
    uid = 0
    with contextlib.suppress(OSError):
        uid = live.disk.stat(live.layout.images_json).st_uid
    return {"actor": GO_ACTOR, "pid": pid, "time": ns or time.time_ns(), "uid": uid}


def read_go_save(live: Live, *, deliberate: bool = False) -> list[Image]:
    """Go's records from images.json; ForeignDamage if Go could not have written it."""
    data: bytes | None = None
    with contextlib.suppress(FileNotFoundError):
        data = live.disk.read_file(live.layout.images_json)
    theirs = go_document(data, live.layout.images_json)
    if theirs is None:
        if data is None:
            raise damage(live, "is missing although images.lock says containers/storage saved", acceptable=False)
        raise damage(live, "is not a list of images containers/storage would write", acceptable=False)
    return theirs


def base_images(live: Live, lock: pub.LockBytes) -> dict[str, Image]:
    """The records images.json held when Go loaded it: our state at the mark's record (the
    snapshot of the current segment for a store from before marks)."""
    mark = lock.mark
    state = live.state
    if mark is not None and mark.seq == state.seq and not live.overlay:
        return {image.id: image for image in state}
    if mark is None:
        cursor = live.cursor
        reference = None if cursor is None else cursor.header.get("snapshot")
        if not reference:
            return {}
        journal_dir = live.layout.journal_dir
        data = replay.archive_bytes(live.disk, journal_dir, reference)
        if data is None:
            raise SnapshotMismatch(f"cannot merge {live.layout.images_json}: the snapshot it was based on is lost")
        archive = os.path.join(journal_dir, str(reference.get("file")))
        return {image.id: image for image in snap.images_from_docs(snap.decode(data, archive), archive, False)}
    from .audit import Journal  # only here: merging a Go save is rare, and audit is heavy

    past = Journal(live.disk, live.path).state_at(mark.seq)
    return {image.id: image for image in past}


def merge_go_save(
    emit: Callable[[Mapping[str, Any]], None],
    state: State,
    base: Mapping[str, Image],
    theirs: list[Image],
    source: str,
    lock: pub.LockBytes,
    writer: str = GO_ACTOR,
) -> None:
    """Emit the events that bring `state` up to Go's save: what Go changed from `base` to
    `theirs`, as fine-grained events (create, names, metadata, flags, big data, mapped layers,
    delete), after an external-rewrite marker. A field Go changed that the events cannot make
    exact (Go's digest order, a removed big-data item) is set with a put-image of our record
    with Go's fields. Changes of ours that Go did not touch are kept."""
    their_ids = {image.id for image in theirs}
    added = [image.id for image in theirs if image.id not in base]
    removed = [image_id for image_id in base if image_id not in their_ids]
    changed = [image.id for image in theirs if image.id in base and base[image.id] != image]
    if not (added or removed or changed):
        return
    emit(
        {
            "op": ev.EXTERNAL_REWRITE,
            "source": source,
            "writer": writer,
            "lock": lock.last_writer.hex(),
            "added": added,
            "changed": changed,
            "removed": removed,
        }
    )
    for image_id in removed:
        if state.get(image_id) is not None:
            emit(ev.delete(image_id))
    by_id = {image.id: image for image in theirs}
    for image_id in changed:
        if state.get(image_id) is not None:  # changed by Go, deleted by us: stays deleted
            _merge_changes(emit, state, base[image_id], by_id[image_id])
    for image_id in added:
        _merge_create(emit, state, by_id[image_id])


def _merge_create(emit: Callable[[Mapping[str, Any]], None], state: State, their: Image) -> None:
    if state.get(their.id) is not None:
        emit({"op": ev.PUT_IMAGE, "id": their.id, "image": their.to_json()})
        return
    for name in their.names:
        holder = state.by_name.get(name)
        if holder is not None:
            emit(ev.names(ev.REMOVE_NAMES, holder, (name,)))
    emit(
        ev.create(
            their.id,
            their.created_ns,
            their.created_offset,
            their.names,
            their.names_history,
            their.top_layer,
            their.digest,
            their.metadata,
            _plain(their.flags),
        )
    )
    for layer in their.mapped_top_layers:
        emit(ev.mapped_layer(ev.ADD_MAPPED_LAYER, their.id, layer))
    for key in their.big_data_names:
        _set_big_data(emit, their, key)
    _make_exact(emit, state, their, set(their.to_json()))


def _merge_changes(emit: Callable[[Mapping[str, Any]], None], state: State, base: Image, their: Image) -> None:
    image_id = their.id
    if their.names != base.names:
        op, values = _names_op(base.names, their.names)
        emit(ev.names(op, image_id, values))
    if their.metadata != base.metadata:
        emit(ev.set_metadata(image_id, their.metadata))
    for key, value in their.flags.items():
        if key not in base.flags or base.flags[key] != value:
            emit(ev.set_flag(image_id, key, _plain(value)))
    for key in base.flags:
        if key not in their.flags:
            emit(ev.clear_flag(image_id, key))
    for key in their.big_data_names:
        if (their.big_data_sizes.get(key), their.big_data_digests.get(key)) != (
            base.big_data_sizes.get(key),
            base.big_data_digests.get(key),
        ) or key not in base.big_data_names:
            _set_big_data(emit, their, key)
    for layer in their.mapped_top_layers:
        if layer not in base.mapped_top_layers:
            emit(ev.mapped_layer(ev.ADD_MAPPED_LAYER, image_id, layer))
    for layer in base.mapped_top_layers:
        if layer not in their.mapped_top_layers:
            emit(ev.mapped_layer(ev.REMOVE_MAPPED_LAYER, image_id, layer))
    base_doc, their_doc = base.to_json(), their.to_json()
    _make_exact(emit, state, their, {k for k in {*base_doc, *their_doc} if base_doc.get(k) != their_doc.get(k)})


def _names_op(old: tuple[str, ...], new: tuple[str, ...]) -> tuple[NameOp, tuple[str, ...]]:
    """The names operation Go most likely ran: add (new names first), remove, or set."""
    fresh = tuple(n for n in new if n not in old)
    if fresh and new == tuple(dict.fromkeys((*fresh, *old))):
        return ev.ADD_NAMES, fresh
    if not fresh and new == tuple(n for n in old if n in new):
        return ev.REMOVE_NAMES, tuple(n for n in old if n not in new)
    return ev.SET_NAMES, new


def _set_big_data(emit: Callable[[Mapping[str, Any]], None], their: Image, key: str) -> None:
    size = their.big_data_sizes.get(key)
    digest = their.big_data_digests.get(key)
    if isinstance(size, int) and isinstance(digest, str):
        emit(ev.set_big_data(their.id, key, size, digest))


def _make_exact(emit: Callable[[Mapping[str, Any]], None], state: State, their: Image, keys: set[str]) -> None:
    """Put-image our record with Go's values of `keys` if the events did not make them Go's."""
    ours = state.get(their.id)
    if ours is None:
        return
    ours_doc, their_doc = ours.to_json(), their.to_json()
    if all(ours_doc.get(k) == their_doc.get(k) for k in keys):
        return
    doc = dict(ours_doc)
    for key in keys:
        if key in their_doc:
            doc[key] = their_doc[key]
        else:
            doc.pop(key, None)
    emit({"op": ev.PUT_IMAGE, "id": their.id, "image": doc})


def _plain(value: Any) -> Any:
    """Frozen flag values back to plain JSON values (lists and dicts) for an event."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def overlay(live: Live, lock: pub.LockBytes) -> None:
    """Apply a Go save to the state in memory only (a reader's view; no record is written).
    The next catch-up that finds new records reloads the journal instead (opening.catch_up)."""
    theirs = read_go_save(live)
    base = base_images(live, lock)
    state = live.state
    state.begin()
    try:
        merge_go_save(lambda event: apply(state, event), state, base, theirs, live.layout.images_json, lock)
    except BaseException:
        state.rollback()
        raise
    state.commit()
    live.overlay = True
    live.encoder.reset()  # the state changed behind its back
