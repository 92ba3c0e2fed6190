"""Rebuilding state from the journal: a segment's snapshot, then its records, segment after segment.

Used by a cold open (and its fallback when a snapshot is damaged), by audit replay (`at()`,
`history()`) and by `verify`. Records stream through a read-only `Cursor`: a journal of a
million records is never held in memory at once.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator, Mapping
from typing import Any

from . import journal as jn
from . import snapshot as snap
from .errors import EventError, JournalCorrupt
from .fsio import Disk
from .history_index import HistoryIndex
from .reducer import State, apply


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many objects at once.

    Loading 100,000 records allocates a few hundred thousand tuples; each allocation burst
    triggers collections that traverse everything built so far, which costs more than the
    loading itself. Nothing built here forms cycles, so nothing is lost by waiting.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def segments(disk: Disk, journal_dir: str) -> list[int]:
    """The segment numbers present, oldest first."""
    try:
        names = disk.listdir(journal_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in map(jn.parse_segment_name, names) if n is not None)


def header(disk: Disk, journal_dir: str, segment: int) -> dict[str, Any]:
    fd = disk.open(os.path.join(journal_dir, jn.segment_name(segment)), os.O_RDONLY)
    try:
        return jn.read_segment_header(disk, fd, segment)[0]
    finally:
        disk.close(fd)


def archive_bytes(disk: Disk, journal_dir: str, reference: Mapping[str, Any]) -> bytes | None:
    """The archived snapshot a segment header names, if present and matching its checksum."""
    path = os.path.join(journal_dir, os.path.basename(str(reference.get("file"))))
    try:
        data = disk.read_file(path)
    except OSError:
        return None
    return data if snap.snapshot_digest(data) == reference.get("xxh3") else None


def snapshot_state(
    disk: Disk, journal_dir: str, segment: int, reference: Mapping[str, Any], data: bytes, read_only: bool
) -> State:
    """The state of a verified snapshot: from its binary twin when it mirrors `data`."""
    state = State(read_only)
    with contextlib.suppress(OSError):
        twin = snap.decode_twin(
            disk.read_file(os.path.join(journal_dir, snap.twin_name(segment))), str(reference.get("xxh3")), read_only
        )
        if twin is not None:
            state.load(twin.images, twin.digest_orders)
            return state
    source = os.path.join(journal_dir, str(reference.get("file")))
    state.load(snap.images_from_docs(snap.decode(data, source), source, read_only))
    return state


def base_state(disk: Disk, journal_dir: str, segment: int, read_only: bool) -> State | None:
    """The state a segment starts from, from its archived snapshot; None if unavailable."""
    meta = header(disk, journal_dir, segment)
    state = State(read_only)
    reference = meta.get("snapshot")
    if reference:
        data = archive_bytes(disk, journal_dir, reference)
        if data is None:
            return None
        state = snapshot_state(disk, journal_dir, segment, reference, data, read_only)
    state.seq = int(meta.get("base_seq", 0))
    return state


def nearest_base(disk: Disk, journal_dir: str, seq: int, read_only: bool = True) -> tuple[int, State] | None:
    """The newest segment starting at or before `seq` whose snapshot can be loaded."""
    for number in reversed(segments(disk, journal_dir)):
        with contextlib.suppress(JournalCorrupt):
            if int(header(disk, journal_dir, number).get("base_seq", 0)) > seq:
                continue
            state = base_state(disk, journal_dir, number, read_only)
            if state is not None:
                return number, state
    return None


def apply_record(state: State, rec: jn.Record, index: HistoryIndex | None = None) -> None:
    """Apply one commit record to a state, all or nothing; JournalCorrupt if it cannot apply.

    With `index`, the history index (the heads of the image chains) takes the record in too."""
    body = rec.body
    seq = body.get("seq")
    events = body.get("events")
    if seq != state.seq + 1 or not isinstance(events, tuple | list):
        raise JournalCorrupt(
            f"segment {rec.segment}: record at offset {rec.offset} has sequence number {seq}, expected {state.seq + 1}",
            segment=rec.segment,
            offset=rec.offset,
        )
    try:
        if len(events) == 1:
            apply(state, events[0])
        else:
            state.begin()
            try:
                for event in events:
                    apply(state, event)
            except BaseException:
                state.rollback()
                raise
            state.commit()
    except EventError as exc:
        raise JournalCorrupt(
            f"segment {rec.segment}: record {seq} at offset {rec.offset} cannot apply: {exc}",
            segment=rec.segment,
            offset=rec.offset,
        ) from None
    state.seq = seq
    if index is not None:
        index.note(state, body, rec.segment, rec.offset)


def records(disk: Disk, journal_dir: str, segment: int) -> Iterator[jn.Record]:
    """Every commit record from the start of `segment` to the end of the journal, streamed."""
    cursor = jn.Cursor(disk, journal_dir, segment, writable=False)
    try:
        yield from cursor.poll()
    finally:
        cursor.close()
