"""Foreign rewrites: an images.json that another program (containers/storage) wrote.

Owns telling our snapshots from someone else's images.json, noting one for the next writer,
and turning it into events by a three-way merge against the snapshot both sides started from.
It appends nothing itself: the transaction that runs the repair commits the events it returns.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Mapping
from typing import Any

from . import replay
from . import snapshot as snap
from .errors import SnapshotMismatch, StoreWarning
from .live import Live
from .record import Image
from .reducer import State


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
    """Remember a foreign images.json: a read-write store merges it before its next write."""
    live.foreign_rewrite = True
    live.foreign_data = data
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
