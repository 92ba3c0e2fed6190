"""The reducer: the one function that turns (state, event) into the next state.

Live writes and replay both call `apply`; the store's records and indexes are therefore a pure
function of a snapshot plus the events after it. `State` holds the records and their indexes
(by ID, by name, by digest, by ID prefix) and an optional undo log, so that a transaction that
fails after applying some events can be rolled back exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from . import events as ev
from .errors import EventError, ImageUnknown
from .prefix import PrefixIndex
from .record import (
    EMPTY_MAP,
    F_BD_DIGESTS,
    F_BD_NAMES,
    F_BD_SIZES,
    F_DIGEST,
    F_DIGESTS,
    F_FLAGS,
    F_HISTORY,
    F_MAPPED,
    F_METADATA,
    F_NAMES,
    Image,
    derive_digests,
    freeze,
    image_from_json,
)
from .validation import is_directory_name

_new = tuple.__new__



# Opcodes of the undo log; _UNDO (after State) maps each to the method that reverts it.
_OP_UNINSERT, _OP_REORDER, _OP_RESET, _OP_UNREMOVE, _OP_NAME, _OP_DIGEST, _OP_UNADD_DIGEST = range(7)


class State:
    """The in-memory store: records in creation order plus the indexes over them.

    Inside a transaction (`begin` .. `commit`/`rollback`) every change is logged so that it can
    be undone, and a deleted record leaves a tombstone (None) holding its place in the order.
    """

    __slots__ = (
        "_prefix",
        "_tombstones",
        "_undo",
        "by_digest",
        "by_name",
        "count",
        "images",
        "read_only",
        "seq",
    )

    def __init__(self, read_only: bool = False) -> None:
        self.images: dict[str, Image | None] = {}
        self.by_name: dict[str, str] = {}
        self.by_digest: dict[str, str | dict[str, None]] = {}
        self._prefix: PrefixIndex | None = None
        self.count = 0
        self.seq = 0
        self.read_only = read_only
        # Undo entries are flat tuples (opcode, args...): no bound method per change, and tuples
        # of strings the garbage collector soon stops tracking (_UNDO, below the class).
        self._undo: list[tuple[Any, ...]] | None = None
        self._tombstones: list[str] = []

    # ------------------------------------------------------------------ reads

    def get(self, image_id: str) -> Image | None:
        """The record with exactly this ID."""
        return self.images.get(image_id)

    def lookup(self, ref: str) -> Image | None:
        """A full ID, else a name, else the unique ID prefix (containers/storage's order)."""
        images = self.images
        image = images.get(ref)
        if image is not None:
            return image
        image_id = self.by_name.get(ref)
        if image_id is not None:
            return images.get(image_id)
        found = self.prefix.unique(ref)
        return None if found is None else images.get(found)

    def find(self, ref: str) -> Image:
        """`lookup`, raising ImageUnknown (saying whether the reference is ambiguous)."""
        image = self.lookup(ref)
        if image is None:
            if not isinstance(ref, str):
                raise TypeError(f"image reference must be a string, not {type(ref).__name__}")
            if len(self.prefix_matches(ref)) > 1:
                raise ImageUnknown(f"image reference {ref!r} is ambiguous: several image IDs start with it")
            raise ImageUnknown(f"image {ref!r} not known")
        return image

    def digest_orders(self) -> dict[str, list[str]]:
        """The order of the images of every digest several images share (kept by our snapshots)."""
        return {digest: list(ids) for digest, ids in self.by_digest.items() if isinstance(ids, dict)}

    def prefix_matches(self, prefix: str, limit: int = 2) -> list[str]:
        """IDs that start with `prefix` (to tell an unknown reference from an ambiguous one)."""
        return self.prefix.matches(prefix, limit)

    @property
    def prefix(self) -> PrefixIndex:
        """The ID-prefix index, built on first use so that opening a store does not pay for it."""
        index = self._prefix
        if index is None:
            index = self._prefix = PrefixIndex(k for k, v in self.images.items() if v is not None)
        return index

    def __iter__(self) -> Iterator[Image]:
        """Records in creation order."""
        return (image for image in self.images.values() if image is not None)

    def __len__(self) -> int:
        return self.count

    # ------------------------------------------------------------------ primitives

    def _log(self, entry: tuple[Any, ...]) -> None:
        undo = self._undo
        if undo is not None:
            undo.append(entry)

    def insert(self, image: Image) -> None:
        """Add a new record at the end of the creation order."""
        image_id = image.id
        images = self.images
        if image_id in images:  # a tombstone of this transaction: the new record goes last
            if self._undo is not None:
                self._undo.append((_OP_REORDER, list(images)))  # O(n), and only in this rare case
            del images[image_id]
        images[image_id] = image
        self.count += 1
        if self._undo is not None:
            self._undo.append((_OP_UNINSERT, image_id))
        if self._prefix is not None:
            self._prefix.add(image_id)

    def _reset(self, image_id: str, image: Image | None) -> None:
        self.images[image_id] = image

    def _uninsert(self, image_id: str) -> None:
        del self.images[image_id]
        self.count -= 1

    def _reorder(self, order: list[str]) -> None:
        images = self.images  # kept in place: others may hold this dict
        items = [(key, images.get(key)) for key in order]
        images.clear()
        images.update(items)

    def replace(self, image: Image) -> None:
        """Swap a record for its changed copy, keeping its place in the order."""
        images = self.images
        if self._undo is not None:
            self._undo.append((_OP_RESET, image.id, images[image.id]))
        images[image.id] = image

    def remove(self, image_id: str) -> None:
        """Drop a record (a tombstone inside a transaction)."""
        images = self.images
        old = images[image_id]
        if self._undo is not None:
            self._undo.append((_OP_UNREMOVE, image_id, old))
            images[image_id] = None
            self._tombstones.append(image_id)
        else:
            del images[image_id]
        self.count -= 1
        if self._prefix is not None:
            self._prefix.remove(image_id)

    def _unremove(self, image_id: str, image: Image) -> None:
        self.images[image_id] = image
        self.count += 1

    def set_name(self, name: str, image_id: str) -> None:
        by_name = self.by_name
        if self._undo is not None:
            self._undo.append((_OP_NAME, name, by_name.get(name)))
        by_name[name] = image_id

    def drop_name(self, name: str) -> None:
        by_name = self.by_name
        if self._undo is not None:
            self._undo.append((_OP_NAME, name, by_name.get(name)))
        by_name.pop(name, None)

    def _restore_name(self, name: str, image_id: str | None) -> None:
        if image_id is None:
            self.by_name.pop(name, None)
        else:
            self.by_name[name] = image_id

    # by_digest maps a digest to the one image ID that has it (the common case, no container
    # object) or to an insertion-ordered dict of IDs when several images share it.

    def digest_ids(self, digest: str) -> tuple[str, ...]:
        """IDs of the images with this digest, in the order they were added (Go's ByDigest)."""
        found = self.by_digest.get(digest)
        if found is None:
            return ()
        if isinstance(found, str):
            return (found,)
        return tuple(found)

    def images_with_digest(self, digest: str) -> list[Image]:
        """The records with this digest, in by_digest order."""
        found = (self.images.get(i) for i in self.digest_ids(digest))
        return [image for image in found if image is not None]

    def add_digest(self, digest: str, image_id: str) -> None:
        """Add the image at the end of the digest's list unless it is there already."""
        by_digest = self.by_digest
        found = by_digest.get(digest)
        if found is None:
            by_digest[digest] = image_id
            self._log((_OP_DIGEST, digest, None))
        elif isinstance(found, str):
            if found != image_id:
                by_digest[digest] = {found: None, image_id: None}
                self._log((_OP_DIGEST, digest, found))
        elif image_id not in found:
            found[image_id] = None
            self._log((_OP_UNADD_DIGEST, digest, image_id))

    def drop_digest(self, digest: str, image_id: str) -> None:
        by_digest = self.by_digest
        found = by_digest.get(digest)
        if found is None:
            return
        if isinstance(found, str):
            if found == image_id:
                del by_digest[digest]
                self._log((_OP_DIGEST, digest, found))
        elif image_id in found:
            self._log((_OP_DIGEST, digest, dict(found)))  # O(images sharing it), keeps their order
            del found[image_id]
            if len(found) == 1:
                by_digest[digest] = next(iter(found))

    def _set_digest(self, digest: str, value: str | dict[str, None] | None) -> None:
        if value is None:
            self.by_digest.pop(digest, None)
        else:
            self.by_digest[digest] = value

    def _unadd_digest(self, digest: str, image_id: str) -> None:
        found = self.by_digest[digest]
        assert isinstance(found, dict)
        del found[image_id]
        if len(found) == 1:
            self.by_digest[digest] = next(iter(found))

    # ------------------------------------------------------------------ transactions

    def begin(self) -> None:
        """Start logging changes so that `rollback` can undo them."""
        self._undo = []
        self._tombstones = []

    def commit(self) -> None:
        """Keep the changes: drop the undo log and the tombstones."""
        images = self.images
        for image_id in self._tombstones:
            if image_id in images and images[image_id] is None:
                del images[image_id]
        self._undo = None
        self._tombstones = []

    def savepoint(self) -> tuple[int, int]:
        """A point inside the transaction that `rollback_to` can return to (a nested batch)."""
        assert self._undo is not None
        return len(self._undo), len(self._tombstones)

    def rollback_to(self, point: tuple[int, int]) -> None:
        """Undo every change made since `point`, exactly (order included)."""
        undo = self._undo
        assert undo is not None
        while len(undo) > point[0]:
            entry = undo.pop()
            _UNDO[entry[0]](self, *entry[1:])
        del self._tombstones[point[1] :]
        self._prefix = None  # rebuilt on demand; cheaper than logging every index move

    def rollback(self) -> None:
        """Undo every change since `begin`."""
        if self._undo is not None:
            self.rollback_to((0, 0))
        self._undo = None
        self._tombstones = []

    @property
    def in_transaction(self) -> bool:
        """Whether changes are being logged for a possible rollback."""
        return self._undo is not None

    # ------------------------------------------------------------------ loading

    def load(
        self, images: Iterable[Image], digest_orders: Mapping[str, Sequence[str]] | None = None
    ) -> list[tuple[str, str]]:
        """Fill an empty state from a snapshot's records, in file order.

        A name held by several records stays with the later one, as containers/storage resolves
        it on load; the (image id, name) pairs taken away are returned. `digest_orders` restores
        the order of images sharing a digest (our binary twin keeps it; images.json cannot).
        """
        dropped = self._load(images)
        for digest, order in (digest_orders or {}).items():
            found = self.by_digest.get(digest)
            if isinstance(found, dict) and set(order) == set(found):
                self.by_digest[digest] = dict.fromkeys(order)
        return dropped

    def _load(self, images: Iterable[Image]) -> list[tuple[str, str]]:
        records = list(images)
        # The common case in C-speed comprehensions; fall back to the careful loop on any clash.
        by_id = {image.id: image for image in records}
        by_name = {name: image.id for image in records for name in image.names}
        by_digest: dict[str, str | dict[str, None]] = {d: image.id for image in records for d in image.digests}
        clean = (
            len(by_id) == len(records)
            and len(by_name) == sum(len(image.names) for image in records)
            and len(by_digest) == sum(len(image.digests) for image in records)
        )
        if clean and not self.images:
            self.images.update(by_id)
            self.by_name = by_name
            self.by_digest = by_digest
            self.count = len(self.images)
            return []
        return self._load_slowly(records)

    def _load_slowly(self, images: Iterable[Image]) -> list[tuple[str, str]]:
        records = self.images
        by_name = self.by_name
        by_digest = self.by_digest
        dropped: list[tuple[str, str]] = []
        for image in images:
            image_id = image.id
            if image_id in records:
                raise EventError(f"snapshot lists image {image_id} twice")
            records[image_id] = image
            for name in image.names:
                holder = by_name.get(name)
                if holder is not None:
                    dropped.append((holder, name))
                    self.strip_name(holder, name)
                by_name[name] = image_id
            for digest in image.digests:
                found = by_digest.get(digest)
                if found is None:
                    by_digest[digest] = image_id
                elif isinstance(found, str):
                    by_digest[digest] = {found: None, image_id: None}
                else:
                    found[image_id] = None
        self.count = len(records)
        return dropped

    def strip_name(self, image_id: str, name: str) -> None:
        """Take a name from a record without touching its history (Go's removeName)."""
        image = self.images[image_id]
        assert image is not None
        self.replace(_new(Image, (*image[:F_NAMES], tuple(n for n in image.names if n != name), *image[F_NAMES + 1 :])))


_UNDO: tuple[Callable[..., None], ...] = (
    State._uninsert,
    State._reorder,
    State._reset,
    State._unremove,
    State._restore_name,
    State._set_digest,
    State._unadd_digest,
)


# ---------------------------------------------------------------------- the reducer


def _image(state: State, event: Mapping[str, Any]) -> Image:
    image = state.images.get(event["id"])
    if image is None:
        raise EventError(f"{event['op']} event for unknown image {event['id']}")
    return image


def _created_ns(value: Any) -> int:
    """A create event's time: [seconds, nanoseconds] since the epoch (any year Go can hold)."""
    seconds, nanos = value
    return int(seconds) * 1_000_000_000 + int(nanos)


def _create(state: State, event: Mapping[str, Any]) -> None:
    image_id = event["id"]
    if not isinstance(image_id, str) or not is_directory_name(image_id):
        raise EventError(f"create event with an image ID that cannot name a directory: {image_id!r:.80}")
    if state.images.get(image_id) is not None:
        raise EventError(f"create event for existing image {image_id}")
    names = tuple(dict.fromkeys(event.get("names", ())))
    by_name = state.by_name
    for name in names:
        if name in by_name:
            raise EventError(f"create event gives image {image_id} the name {name!r} of {by_name[name]}")
    digest = event.get("digest", "")
    digests = (digest,) if digest else ()
    flags = event.get("flags")
    state.insert(
        _new(
            Image,
            (
                image_id,
                digest,
                digests,
                names,
                tuple(dict.fromkeys(event.get("history", ()))),
                event.get("layer", ""),
                (),
                event.get("metadata", ""),
                (),
                _created_ns(event["created"]),
                event.get("offset", 0),
                EMPTY_MAP,
                EMPTY_MAP,
                freeze(flags) if flags else EMPTY_MAP,
                state.read_only,
            ),
        )
    )
    for name in names:
        state.set_name(name, image_id)
    if digest:
        state.add_digest(digest, image_id)


def _names(state: State, event: Mapping[str, Any]) -> None:
    image = _image(state, event)
    image_id = image.id
    old = image.names
    given = event["names"]
    op = event["op"]
    if op == ev.SET_NAMES:
        new = tuple(dict.fromkeys(given))
    elif op == ev.ADD_NAMES:
        new = tuple(dict.fromkeys((*given, *old)))
    else:
        gone = set(given)
        new = tuple(n for n in old if n not in gone)
    by_name = state.by_name
    if state.in_transaction:
        for name in old:
            state.drop_name(name)
        for name in new:
            holder = by_name.get(name)
            if holder is not None and holder != image_id:
                state.strip_name(holder, name)
            state.set_name(name, image_id)
    else:  # replay: the same, without logging for undo
        for name in old:
            by_name.pop(name, None)
        for name in new:
            holder = by_name.get(name)
            if holder is not None and holder != image_id:
                state.strip_name(holder, name)
            by_name[name] = image_id
    # Each resulting name is pushed to the front of the history in order (Go's addNameToHistory,
    # which deduplicates the whole history on every push): the last one ends up first.
    history = tuple(dict.fromkeys((*reversed(new), *image.names_history))) if new else image.names_history
    state.replace(_new(Image, (*image[:F_NAMES], new, history, *image[F_HISTORY + 1 :])))


def _delete(state: State, event: Mapping[str, Any]) -> None:
    image = _image(state, event)
    for name in image.names:
        state.drop_name(name)
    for digest in image.digests:
        state.drop_digest(digest, image.id)
    state.remove(image.id)


def _set_metadata(state: State, event: Mapping[str, Any]) -> None:
    image = _image(state, event)
    state.replace(_new(Image, (*image[:F_METADATA], event["metadata"], *image[F_METADATA + 1 :])))


def _set_flags(state: State, image: Image, flags: dict[str, Any]) -> None:
    state.replace(_new(Image, (*image[:F_FLAGS], freeze(flags) if flags else EMPTY_MAP, *image[F_FLAGS + 1 :])))


def _set_flag(state: State, event: Mapping[str, Any]) -> None:
    image = _image(state, event)
    flags = dict(image.flags)
    flags[event["key"]] = event["value"]
    _set_flags(state, image, flags)


def _clear_flag(state: State, event: Mapping[str, Any]) -> None:
    image = _image(state, event)
    if event["key"] in image.flags:
        flags = dict(image.flags)
        del flags[event["key"]]
        _set_flags(state, image, flags)


def _set_big_data(state: State, event: Mapping[str, Any]) -> None:
    image = _image(state, event)
    image_id = image.id
    key = event["key"]
    names = image.big_data_names
    if key not in names:
        names = (*names, key)
    sizes = dict(image.big_data_sizes)
    sizes[key] = event["size"]
    digests_map = dict(image.big_data_digests)
    digests_map[key] = event["digest"]
    digest, digests = derive_digests(image.digest, names, digests_map)
    for old in image.digests:
        state.drop_digest(old, image_id)
    row = list(image)
    row[F_DIGEST] = digest
    row[F_DIGESTS] = digests
    row[F_BD_NAMES] = names
    row[F_BD_SIZES] = freeze(sizes)
    row[F_BD_DIGESTS] = freeze(digests_map)
    state.replace(_new(Image, row))
    for new in digests:
        state.add_digest(new, image_id)


def fold_equal(a: str, b: str) -> bool:
    """Go's strings.EqualFold: equal under Unicode simple case folding, rune by rune."""
    if a == b:
        return True
    if len(a) != len(b):
        return False
    if a.isascii() and b.isascii():
        return a.lower() == b.lower()
    return all(x == y or x.lower() == y.lower() or x.upper() == y.upper() for x, y in zip(a, b, strict=True))


def _mapped_layer(state: State, event: Mapping[str, Any]) -> None:
    image = _image(state, event)
    layer = event["layer"]
    if event["op"] == ev.ADD_MAPPED_LAYER:
        layers = (*image.mapped_top_layers, layer)
    else:
        layers = tuple(x for x in image.mapped_top_layers if not fold_equal(x, layer))
    state.replace(_new(Image, (*image[:F_MAPPED], layers, *image[F_MAPPED + 1 :])))


def _put_image(state: State, event: Mapping[str, Any]) -> None:
    try:
        image = image_from_json(event["image"], state.read_only)
    except ValueError as exc:
        raise EventError(f"put-image event: {exc}") from None
    image_id = image.id
    old = state.images.get(image_id)
    if old is not None:
        for name in old.names:
            state.drop_name(name)
        for digest in old.digests:
            state.drop_digest(digest, image_id)
    by_name = state.by_name
    for name in image.names:
        holder = by_name.get(name)
        if holder is not None and holder != image_id:
            state.strip_name(holder, name)
    if old is None:
        state.insert(image)
    else:
        state.replace(image)
    for name in image.names:
        state.set_name(name, image_id)
    for digest in image.digests:
        state.add_digest(digest, image_id)


def _marker(state: State, event: Mapping[str, Any]) -> None:
    """Events that record something about the store without changing a record."""


_APPLY: dict[str, Callable[[State, Mapping[str, Any]], None]] = {
    ev.CREATE: _create,
    ev.SET_NAMES: _names,
    ev.ADD_NAMES: _names,
    ev.REMOVE_NAMES: _names,
    ev.DELETE: _delete,
    ev.SET_METADATA: _set_metadata,
    ev.SET_FLAG: _set_flag,
    ev.CLEAR_FLAG: _clear_flag,
    ev.SET_BIG_DATA: _set_big_data,
    ev.ADD_MAPPED_LAYER: _mapped_layer,
    ev.REMOVE_MAPPED_LAYER: _mapped_layer,
    ev.PUT_IMAGE: _put_image,
    ev.IMPORT: _marker,
    ev.EXTERNAL_REWRITE: _marker,
}


def apply(state: State, event: Mapping[str, Any]) -> None:
    """Apply one event to the state (records and indexes). Raises EventError if it cannot."""
    try:
        handler = _APPLY[event["op"]]
    except (KeyError, TypeError):
        raise EventError(f"unknown event {event!r:.120}") from None
    try:
        handler(state, event)
    except EventError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EventError(f"malformed {event.get('op')} event: {exc}") from None
