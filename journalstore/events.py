"""The events: one kind per mutation, in the exact form they take inside a journal record.

An event is a plain mapping (msgpack-native, so the wire form and the in-memory form are the
same object and replay builds nothing in between). The TypedDicts below are its schema; the
functions build well-formed events for the store facade. docs/journal-format.md lists them.
"""

from __future__ import annotations

from typing import Any, Final, Literal, NotRequired, TypedDict

CREATE: Final = "create"
SET_NAMES: Final = "set-names"
ADD_NAMES: Final = "add-names"
REMOVE_NAMES: Final = "remove-names"
DELETE: Final = "delete"
SET_METADATA: Final = "set-metadata"
SET_FLAG: Final = "set-flag"
CLEAR_FLAG: Final = "clear-flag"
SET_BIG_DATA: Final = "set-big-data"
ADD_MAPPED_LAYER: Final = "add-mapped-layer"
REMOVE_MAPPED_LAYER: Final = "remove-mapped-layer"
PUT_IMAGE: Final = "put-image"
IMPORT: Final = "import"
EXTERNAL_REWRITE: Final = "external-rewrite"

KINDS: Final = (
    CREATE,
    SET_NAMES,
    ADD_NAMES,
    REMOVE_NAMES,
    DELETE,
    SET_METADATA,
    SET_FLAG,
    CLEAR_FLAG,
    SET_BIG_DATA,
    ADD_MAPPED_LAYER,
    REMOVE_MAPPED_LAYER,
    PUT_IMAGE,
    IMPORT,
    EXTERNAL_REWRITE,
)


class CreateEvent(TypedDict):
    """A new image record. Empty fields are left out of the record."""

    op: Literal["create"]
    id: str
    created: list[int]  # [seconds since the Unix epoch, nanoseconds]: any year Go can hold
    offset: NotRequired[int]  # UTC offset of `created`, seconds east; 0 when absent
    names: NotRequired[list[str]]
    history: NotRequired[list[str]]
    layer: NotRequired[str]
    digest: NotRequired[str]
    metadata: NotRequired[str]
    flags: NotRequired[dict[str, Any]]


class NamesEvent(TypedDict):
    """set-names, add-names or remove-names, with the names the caller gave."""

    op: Literal["set-names", "add-names", "remove-names"]
    id: str
    names: list[str]


class DeleteEvent(TypedDict):
    op: Literal["delete"]
    id: str


class MetadataEvent(TypedDict):
    op: Literal["set-metadata"]
    id: str
    metadata: str


class SetFlagEvent(TypedDict):
    op: Literal["set-flag"]
    id: str
    key: str
    value: Any


class ClearFlagEvent(TypedDict):
    op: Literal["clear-flag"]
    id: str
    key: str


class BigDataEvent(TypedDict):
    """A big-data item was written: its bytes are in the image's directory, not the journal."""

    op: Literal["set-big-data"]
    id: str
    key: str
    size: int
    digest: str


class MappedLayerEvent(TypedDict):
    op: Literal["add-mapped-layer", "remove-mapped-layer"]
    id: str
    layer: str


class PutImageEvent(TypedDict):
    """A whole record in images.json form: written when another program rewrote images.json."""

    op: Literal["put-image"]
    id: str
    image: dict[str, Any]


class ImportEvent(TypedDict):
    """The history of an imported store begins here; the snapshot holds the imported images."""

    op: Literal["import"]
    source: str
    count: int
    dropped_names: list[list[str]]  # [image id, name] pairs lost to a later image in the file


class ExternalRewriteEvent(TypedDict):
    """images.json was rewritten by another program; the put-image/delete events that follow
    bring the journal's state up to it."""

    op: Literal["external-rewrite"]
    source: str
    added: list[str]
    changed: list[str]
    removed: list[str]




def create(
    image_id: str,
    created: int,
    offset: int,
    names: tuple[str, ...],
    history: tuple[str, ...],
    layer: str,
    digest: str,
    metadata: str,
    flags: dict[str, Any],
) -> CreateEvent:
    """A create event, leaving out empty fields."""
    seconds, nanos = divmod(created, 1_000_000_000)
    ev: CreateEvent = {"op": "create", "id": image_id, "created": [seconds, nanos]}
    if offset:
        ev["offset"] = offset
    if names:
        ev["names"] = list(names)
    if history:
        ev["history"] = list(history)
    if layer:
        ev["layer"] = layer
    if digest:
        ev["digest"] = digest
    if metadata:
        ev["metadata"] = metadata
    if flags:
        ev["flags"] = flags
    return ev


def names(
    op: Literal["set-names", "add-names", "remove-names"], image_id: str, values: tuple[str, ...]
) -> NamesEvent:
    return {"op": op, "id": image_id, "names": list(values)}


def delete(image_id: str) -> DeleteEvent:
    return {"op": "delete", "id": image_id}


def set_metadata(image_id: str, metadata: str) -> MetadataEvent:
    return {"op": "set-metadata", "id": image_id, "metadata": metadata}


def set_flag(image_id: str, key: str, value: Any) -> SetFlagEvent:
    return {"op": "set-flag", "id": image_id, "key": key, "value": value}


def clear_flag(image_id: str, key: str) -> ClearFlagEvent:
    return {"op": "clear-flag", "id": image_id, "key": key}


def set_big_data(image_id: str, key: str, size: int, digest: str) -> BigDataEvent:
    return {"op": "set-big-data", "id": image_id, "key": key, "size": size, "digest": digest}


def mapped_layer(
    op: Literal["add-mapped-layer", "remove-mapped-layer"], image_id: str, layer: str
) -> MappedLayerEvent:
    return {"op": op, "id": image_id, "layer": layer}
