"""Views of the past: the store as it was right after a record, read-only.

`StoreView` answers the same reads a live store does (reads.StateReads) over a state rebuilt by
`audit.Journal.state_at`; `PastBytes` finds the bytes a big-data item had then: the current file
if it has not changed since, else the blob the journal kept (blobs.py). Nothing here writes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, NoReturn

from . import events as ev
from . import history_index as hx
from . import journal as jn
from . import replay
from .audit import Journal, utc_time
from .blobs import Blobs, kept_digest
from .errors import BigDataNotKept, BigDataUnknown, EventError, SizeUnknown, StoreIsReadOnly
from .reads import StateReads
from .record import Image
from .reducer import State, apply
from .validation import check_read_key, check_ref


class StoreView(StateReads):
    """The store as it was right after record `seq`: the read methods of ImageStore, no writes.

    The whole state of that moment is rebuilt (nearest snapshot plus replay) only when a read
    needs it: one image, asked for by ID or by a name it held then, is rebuilt from its own
    records when the history index links them (`ImagesAt`), which takes milliseconds.
    """

    _mutex = contextlib.nullcontext()  # nothing changes a view's state

    def __init__(
        self,
        state: State | Callable[[], State],
        time: datetime | None,
        current: Callable[[str], Image | None],
        read: Callable[[str, str], bytes],
        past: PastBytes | None = None,
        *,
        seq: int | None = None,
        quick: ImagesAt | None = None,
    ) -> None:
        if isinstance(state, State):
            self._state: State | None = state
            self._load: Callable[[], State] | None = None
            self.seq = state.seq
        else:
            if seq is None:
                raise TypeError("a view whose state is rebuilt later needs its sequence number")
            self._state = None
            self._load = state
            self.seq = seq
        self.time = time
        self._current = current
        self._read = read
        self._past = past
        self._quick = quick

    def __repr__(self) -> str:
        shown = "" if self._state is None else f": {len(self._state)} images"
        return f"<StoreView at record {self.seq}{shown}>"

    def _fresh(self) -> State:
        state = self._state
        if state is None:
            assert self._load is not None
            state = self._state = self._load()
            self._load = self._quick = None  # lets the pinned journal files go
        return state

    def _moment(self) -> str:
        return f" at record {self.seq}"

    def get(self, ref: str) -> Image:
        check_ref(ref)
        if self._state is None and self._quick is not None:
            image = self._quick.find(ref)
            if image is not None:
                return image
        return super().get(ref)

    def exists(self, ref: str) -> bool:
        check_ref(ref)
        if self._state is None and self._quick is not None and self._quick.find(ref) is not None:
            return True
        return super().exists(ref)

    def big_data_size(self, ref: str, key: str) -> int:
        key = check_read_key(key)
        image = self.get(ref)
        size = image.big_data_sizes.get(key)
        if size is None:
            raise SizeUnknown(f"size of big-data item {key!r} of image {image.id} is not known{self._moment()}")
        return size

    def big_data(self, ref: str, key: str) -> bytes:
        """The item's bytes, if the store still holds exactly the bytes it had then."""
        key = check_read_key(key)
        image = self.get(ref)
        if key not in image.big_data_digests:
            raise BigDataUnknown(f"image {image.id} had no big-data item {key!r} at record {self.seq}")
        now = self._current(image.id)
        if (
            now is None
            or now.big_data_digests.get(key) != image.big_data_digests[key]
            or now.big_data_sizes.get(key) != image.big_data_sizes.get(key)
        ):
            if self._past is not None:
                return self._past.bytes_of(image, key, self.seq)
            raise BigDataNotKept(
                f"the bytes of big-data item {key!r} of image {image.id} as of record {self.seq} were "
                "overwritten or deleted since; the journal keeps only their size and digest "
                f"({image.big_data_sizes.get(key)} bytes, {image.big_data_digests[key]})"
            )
        return self._read(image.id, key)

    def _read_only(self, *_args: Any, **_kwargs: Any) -> NoReturn:
        raise StoreIsReadOnly(f"a view of the store at record {self.seq} is read-only")

    create = set_names = add_names = remove_names = delete = wipe = _read_only
    set_metadata = set_flag = clear_flag = set_big_data = _read_only
    add_mapped_top_layer = remove_mapped_top_layer = garbage_collect = compact = batch = _read_only


class _Unknown:
    """What `ImagesAt` answers when it cannot be sure from an image's own records."""


UNKNOWN = _Unknown()


class ImagesAt:
    """One image as it was right after record `seq`, rebuilt from its own linked records.

    The walk back starts at the image's first mark after `seq` (history_index.MARK_EVERY), so
    it reads at most that many newer records, then every record of the image up to `seq`, and
    replays those events from the one that created it. `find` answers None whenever it cannot
    be sure (a record not linked, an import, a name another image may have held): the caller
    then rebuilds the whole state, which is always right.
    """

    WALK_LIMIT = 20_000  # records of one image; past that, the whole state is the quicker way

    def __init__(self, journal: Journal, index: hx.HistoryIndex | None, seq: int) -> None:
        self._journal = journal
        self._index = index
        self.seq = seq
        self._cache: dict[str, Image | _Unknown | None] = {}

    def find(self, ref: str) -> Image | None:
        """The image `ref` meant at `seq` (containers/storage's order: an ID, then a name), or
        None when that takes the whole state to tell."""
        index = self._index
        if index is None:
            return None
        if ref in index.last:
            found = self.image(ref)
            if isinstance(found, Image):
                return found
            if found is UNKNOWN:
                return None
        elif index.chain_from > 1:
            return None  # an image whose records are not linked may have had this ID then
        holder = index.names.get(ref)  # the image that took the name last
        if holder is None or holder == ref:
            return None
        found = self.image(holder)
        if isinstance(found, Image) and ref in found.names:
            return found
        return None  # another image may have held the name then

    def image(self, image_id: str) -> Image | _Unknown | None:
        """The image's record at `seq`, None if it did not exist then, or UNKNOWN."""
        found = self._cache.get(image_id)
        if found is None and image_id not in self._cache:
            found = self._cache[image_id] = self._rebuild(image_id)
        return found

    def _rebuild(self, image_id: str) -> Image | _Unknown | None:
        index = self._index
        assert index is not None
        seq = self.seq
        linked: list[jn.Record] = []  # newest first: the image's records up to `seq`
        oldest: jn.Record | None = None
        reader = hx.ChainReader(self._journal.disk, self._journal.dir)
        try:
            pointer: Any = index.start_before(image_id, seq)
            while pointer is not None:
                rec = reader.read(pointer)
                if rec is None or len(linked) >= self.WALK_LIMIT:
                    return UNKNOWN  # pruned, damaged or too long: the whole state will tell
                if rec.seq <= seq:
                    linked.append(rec)
                oldest = rec
                prev = rec.body.get("prev")
                pointer = prev.get(image_id) if isinstance(prev, Mapping) else None
        finally:
            reader.close()
        if oldest is None or not _creates(oldest.body, image_id):
            return UNKNOWN  # its chain starts after it was created: older records are not linked
        return _replayed(image_id, linked[::-1])


def _creates(body: Mapping[str, Any], image_id: str) -> bool:
    """Whether the first event of a record that is the image's own creates it."""
    for event in body.get("events", ()):
        if event.get("id") == image_id:
            return event.get("op") in (ev.CREATE, ev.PUT_IMAGE)
    return False


def _replayed(image_id: str, records: list[jn.Record]) -> Image | _Unknown | None:
    """The image after its own records (oldest first, starting with its creation)."""
    state = State(read_only=True)
    for rec in records:
        events = rec.body.get("events", ())
        for at in hx.concerning(rec.body, image_id):
            event = events[at]
            op = event.get("op")
            if op == ev.IMPORT:
                return UNKNOWN  # it came from a snapshot: its state then is not in these records
            if op == ev.EXTERNAL_REWRITE:
                continue  # a marker: the merge's changes are events of their own
            if event.get("id") != image_id:  # another image took some of its names
                for name in hx.given_names(event):
                    if state.by_name.get(name) == image_id:
                        state.strip_name(image_id, name)
                        state.by_name.pop(name, None)
                continue
            try:
                apply(state, event)
            except EventError:
                return UNKNOWN
    return state.get(image_id)


class PastBytes:
    """Big-data bytes an overwrite or a delete replaced, from the blobs the writer kept."""

    def __init__(self, journal: Journal, blobs: Blobs, index: hx.HistoryIndex | None) -> None:
        self._journal = journal
        self._blobs = blobs
        self._index = index

    def bytes_of(self, image: Image, key: str, seq: int) -> bytes:
        digest = image.big_data_digests[key]
        size = image.big_data_sizes.get(key)
        data = self._blobs.read(digest)  # the common case: the recorded digest is the bytes' sha256
        if data is not None and (size is None or len(data) == size):
            return data
        replacer = self._replacer(image.id, key, seq)
        kept = None if replacer is None else kept_digest(replacer.body, image.id, key)
        if kept is not None:
            data = self._blobs.read(kept)
            if data is not None:
                return data
        raise BigDataNotKept(self._why(image, key, seq, replacer))

    def _replacer(self, image_id: str, key: str, seq: int) -> jn.Record | None:
        """The first record after `seq` that overwrote the item or deleted the image."""
        index = self._index
        if index is None:
            return None
        found: jn.Record | None = None
        reader = hx.ChainReader(self._journal.disk, self._journal.dir)
        try:
            for rec in hx.linked_records(reader, index.last.get(image_id), image_id):
                if rec.seq <= seq:
                    break
                for event in rec.body.get("events", ()):
                    op = event.get("op")
                    if event.get("id") == image_id and (
                        op == ev.DELETE or (op == ev.SET_BIG_DATA and event.get("key") == key)
                    ):
                        found = rec
        finally:
            reader.close()
        return found

    def _why(self, image: Image, key: str, seq: int, replacer: jn.Record | None) -> str:
        what = (
            f"the bytes of big-data item {key!r} of image {image.id} as of record {seq} "
            f"({image.big_data_sizes.get(key)} bytes, {image.big_data_digests[key]})"
        )
        first = self._journal.first_seq()
        if replacer is None and first >= seq:
            segs = self._journal.segments()
            journal = self._journal
            created = int(replay.header(journal.disk, journal.dir, segs[0]).get("created", 0)) if segs else 0
            return (
                f"{what} were overwritten or deleted after it; journal retention has dropped them with the record "
                f"that replaced them: history now starts at record {first + 1} (segment {segs[0] if segs else '-'}, "
                f"started {utc_time(created).isoformat().replace('+00:00', 'Z')})"
            )
        if replacer is None:
            return f"{what} were overwritten or deleted since and are not kept"
        when = utc_time(int(replacer.body.get("time", 0))).isoformat().replace("+00:00", "Z")
        since = f"were overwritten or deleted by record {replacer.seq} ({when})"
        if "chain" not in replacer.body:
            return f"{what} {since}, written by a version of journalstore that kept no past bytes"
        kept = kept_digest(replacer.body, image.id, key)
        if kept is not None:
            where = self._blobs.path(kept) or kept
            return f"{what} {since}, which kept them as {where}; that blob is missing or damaged (verify names it)"
        return f"{what} {since}, which could not keep them (no blob could be linked or copied then)"


# ---------------------------------------------------------------------- verify and repair
