"""Views of the past: the store as it was right after a record, read-only.

`StoreView` answers the same reads a live store does (reads.StateReads) over a state rebuilt by
`audit.Journal.state_at`; `PastBytes` finds the bytes a big-data item had then: the current file
if it has not changed since, else the blob the journal kept (blobs.py). Nothing here writes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any, NoReturn

from . import events as ev
from . import history_index as hx
from . import journal as jn
from . import replay
from .audit import Journal, utc_time
from .blobs import Blobs
from .errors import BigDataNotKept, BigDataUnknown, SizeUnknown, StoreIsReadOnly
from .reads import StateReads
from .record import Image
from .reducer import State
from .validation import check_read_key


class StoreView(StateReads):
    """The store as it was right after record `seq`: the read methods of ImageStore, no writes."""

    _mutex = contextlib.nullcontext()  # nothing changes a view's state

    def __init__(
        self,
        state: State,
        time: datetime | None,
        current: Callable[[str], Image | None],
        read: Callable[[str, str], bytes],
        past: PastBytes | None = None,
    ) -> None:
        self._state = state
        self.seq = state.seq
        self.time = time
        self._current = current
        self._read = read
        self._past = past

    def __repr__(self) -> str:
        return f"<StoreView at record {self.seq}: {len(self._state)} images>"

    def _fresh(self) -> State:
        return self._state

    def _moment(self) -> str:
        return f" at record {self.seq}"

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
        if replacer is not None:
            for entry in replacer.body.get("kept", ()):
                if entry[0] == image.id and entry[1] == key:
                    data = self._blobs.read(str(entry[2]))
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
        return (
            f"{what} {since}; journal retention has dropped them since (history now starts at record "
            f"{first + 1})"
        )


# ---------------------------------------------------------------------- verify and repair
