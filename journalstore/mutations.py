"""What each write does: resolve its reference and check its preconditions against the state
caught up under the writers' lock, then emit its events into the transaction.

Each function runs inside a transaction (`Txn`), after the facade validated the arguments and
before the record is appended. They only read the state and emit events: the reducer changes
records and indexes, the transaction appends and keeps them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Literal

from . import events as ev
from .bigdata import BigDataFiles, Write
from .errors import DuplicateID, DuplicateName
from .record import Image
from .reducer import State, fold_equal
from .transaction import Txn

NameOp = Literal["set-names", "add-names", "remove-names"]


def new_id(state: State) -> str:
    """A random image ID that is not all digits in its short form and not taken."""
    while True:
        candidate = os.urandom(32).hex()
        if not candidate[:12].isdigit() and state.get(candidate) is None:
            return candidate


def create(
    txn: Txn,
    files: BigDataFiles,
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
    state = txn.state
    if image_id is None:
        image_id = new_id(state)
    elif state.get(image_id) is not None:
        raise DuplicateID(f"an image with ID {image_id} already exists")
    elif files.disk.exists(files.dir(image_id)):
        # A directory left by a deleted image of the same ID (a crash before its removal):
        # what the new image does not own goes after the commit.
        txn.stale.append(image_id)
    for name in names:
        holder = state.by_name.get(name)
        if holder is not None:
            raise DuplicateName(f"name {name!r} is already used by image {holder}")
    txn.emit(ev.create(image_id, created_ns, offset, names, history, layer, digest, metadata, flags))
    for key, data, item_digest in items:
        txn.emit(ev.set_big_data(image_id, key, len(data), item_digest))
        txn.writes.append(Write(image_id, key, data))
        txn.pending[(image_id, key)] = data
    image = state.get(image_id)
    assert image is not None
    return image


def names(txn: Txn, op: NameOp, ref: str, values: tuple[str, ...]) -> None:
    image = txn.state.find(ref)
    txn.emit(ev.names(op, image.id, values))


def delete(txn: Txn, ref: str) -> None:
    image = txn.state.find(ref)
    txn.emit(ev.delete(image.id))
    txn.removed.append(image.id)
    for key in image.big_data_names:
        txn.pending.pop((image.id, key), None)


def wipe(txn: Txn) -> None:
    for image in list(txn.state):
        delete(txn, image.id)


def simple(txn: Txn, ref: str, make: Callable[[str], Mapping[str, Any]]) -> None:
    """A one-event mutation of an existing image."""
    image = txn.state.find(ref)
    txn.emit(make(image.id))


def remove_mapped_layer(txn: Txn, ref: str, layer: str) -> None:
    image = txn.state.find(ref)
    if any(fold_equal(x, layer) for x in image.mapped_top_layers):
        txn.emit(ev.mapped_layer(ev.REMOVE_MAPPED_LAYER, image.id, layer))


def set_big_data(txn: Txn, ref: str, key: str, data: bytes, digest: str) -> None:
    image = txn.state.find(ref)
    txn.emit(ev.set_big_data(image.id, key, len(data), digest))
    txn.writes.append(Write(image.id, key, data))
    txn.pending[(image.id, key)] = data
