"""The writer's side of history: what each event of a transaction does to other images and to
big-data bytes, turned into the history fields of its record (`chain`, `prev`, `also`, `kept`).

Noted as each event is emitted (the state before it is needed: who held a name it takes, which
bytes it replaces), resolved when the record is built: events a savepoint rolled back are left
out, the replaced bytes are kept as blobs before the record commits, and after the append the
history index takes the record in like any reader would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from . import events as ev
from .blobs import Replaced
from .history_index import touched, victims

if TYPE_CHECKING:
    from .live import Live
    from .reducer import State


class Txn(Protocol):
    """What this module reads of a transaction (transaction.Txn), without importing it."""

    @property
    def state(self) -> State: ...
    @property
    def events(self) -> Sequence[Mapping[str, Any]]: ...
    @property
    def notes(self) -> list[Note]: ...
    @property
    def pending(self) -> dict[tuple[str, str], bytes]: ...


class Note(NamedTuple):
    """What one emitted event does besides changing its own image."""

    event: Mapping[str, Any]  # held so that its identity stays unique while the transaction lives
    victims: list[str]  # images it takes a name from
    replaced: list[tuple[str, str]]  # (image id, key) of big-data files whose bytes it replaces


_NOTED = frozenset((ev.SET_BIG_DATA, ev.DELETE, ev.SET_NAMES, ev.ADD_NAMES, ev.PUT_IMAGE))


def before(txn: Txn, event: Mapping[str, Any]) -> Note | None:
    """Look at the state before an event is applied (None when it touches nothing else)."""
    op = event.get("op")
    if op not in _NOTED:
        return None  # it cannot take a name from another image, nor replace big-data bytes
    state = txn.state
    replaced: list[tuple[str, str]] = []
    if op in (ev.SET_BIG_DATA, ev.DELETE):
        image = state.get(str(event.get("id")))
        if image is not None:
            keys = [event.get("key")] if op == ev.SET_BIG_DATA else list(image.big_data_names)
            for key in keys:
                # Bytes written in this transaction are not on disk yet: nothing to keep.
                if isinstance(key, str) and key in image.big_data_digests and (image.id, key) not in txn.pending:
                    replaced.append((image.id, key))
    taken = victims(state, event)
    if not taken and not replaced:
        return None
    return Note(event, taken, replaced)


def record_fields(live: Live, txn: Txn, seq: int) -> tuple[dict[str, Any], list[str] | None]:
    """The history fields of the record about to be appended, and the images it touches (for
    `committed`); keeps the bytes it replaces."""
    also: dict[str, list[int]] = {}
    replaced: dict[tuple[str, str], None] = {}
    notes = txn.notes
    position = {id(event): index for index, event in enumerate(txn.events)} if notes else {}
    for note in notes:
        index = position.get(id(note.event))
        if index is None:
            continue  # rolled back by a savepoint
        for image_id in note.victims:
            also.setdefault(image_id, []).append(index)
        for pair in note.replaced:
            replaced.setdefault(pair)
    fields: dict[str, Any] = {}
    if replaced:
        files = live.files
        kept = live.blobs.keep(Replaced(i, k, files.path(i, k)) for i, k in replaced)
        if kept:
            fields["kept"] = kept
    history = live.index
    if history is None:
        fields["chain"] = seq
        return fields, None
    images = touched(live.state, txn.events, also)
    fields.update(history.links(seq, images, also))
    return fields, images


def committed(live: Live, body: Mapping[str, Any], segment: int, offset: int, images: list[str] | None) -> None:
    """The record is in the journal: the index takes it in (`images`: what `record_fields` found
    it touches)."""
    if live.index is not None:
        live.index.note(live.state, body, segment, offset, images)
