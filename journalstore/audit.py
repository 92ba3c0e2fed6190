"""The journal as an audit log: who changed what and when, and the store at any past moment.

`history()` streams events oldest first; `at()` rebuilds the read-only state right after a
record; `verify()` checks every checksum and that replay reproduces every snapshot; `repair()`
is the only way to cut a damaged journal. Everything streams: a journal of a million records
is never held in memory.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import FrozenInstanceError, dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NoReturn

from . import events as ev
from . import history_index as hx
from . import journal as jn
from . import replay
from . import snapshot as snap
from .blobs import Blobs, blob_digest
from .errors import (
    BigDataNotKept,
    BigDataUnknown,
    HistoryPruned,
    ImageUnknown,
    JournalCorrupt,
    SizeUnknown,
    StoreError,
    StoreIsReadOnly,
    StoreWarning,
)
from .fsio import Disk
from .locking import WriterLock
from .reads import StateReads
from .record import Image, time_from_datetime
from .reducer import State, apply
from .validation import check_read_key

_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Actor:
    """Who wrote a record: process, user and the store's `actor` string."""

    pid: int
    uid: int
    name: str

    def __str__(self) -> str:
        return f"{self.name or '-'}(pid={self.pid},uid={self.uid})"


_FIELDS = ("seq", "time", "time_ns", "actor", "kind", "image_id", "data", "segment", "offset")


class Event(tuple[Any, ...]):
    """One event of the journal, with the record it came in (immutable).

    Attributes: `seq`, `time` (aware, UTC, microsecond precision; `time_ns` is exact), `time_ns`,
    `actor`, `kind`, `image_id`, `data` (the event's map), `segment`, `offset`. `time` and
    `actor` are derived from the record when first asked for: history() builds an event with
    little more than a tuple's work.
    """

    __slots__ = ()
    __match_args__ = ("seq", "time", "time_ns", "actor", "kind", "image_id", "data", "segment", "offset")

    # Layout: (seq, time_ns, kind, image_id, data, segment, offset, who), where `who` is either
    # the record's body (time and actor derived from it) or a (time, actor) pair.
    if TYPE_CHECKING:
        seq: int
        time_ns: int
        kind: str
        image_id: str | None
        data: Mapping[str, Any]
        segment: int
        offset: int
    else:
        seq = property(itemgetter(0))
        time_ns = property(itemgetter(1))
        kind = property(itemgetter(2))
        image_id = property(itemgetter(3))
        data = property(itemgetter(4))
        segment = property(itemgetter(5))
        offset = property(itemgetter(6))

    def __new__(
        cls,
        seq: int,
        time: datetime,
        time_ns: int,
        actor: Actor,
        kind: str,
        image_id: str | None,
        data: Mapping[str, Any],
        segment: int = 0,
        offset: int = 0,
    ) -> Event:
        return _new_tuple(cls, (seq, time_ns, kind, image_id, data, segment, offset, (time, actor)))

    @property
    def time(self) -> datetime:
        who = self[7]
        if type(who) is tuple:
            return who[0]  # type: ignore[no-any-return]
        return _utc(self[1])

    @property
    def actor(self) -> Actor:
        who = self[7]
        if type(who) is tuple:
            return who[1]  # type: ignore[no-any-return]
        return Actor(int(who.get("pid", 0)), int(who.get("uid", 0)), str(who.get("actor", "")))

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Event)
        return self._values() == other._values()

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # type: ignore[assignment]  # like the dataclass it was: its data is a dict

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS if name != "data")
        return f"{self.__class__.__qualname__}({shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, self._values())

    def __copy__(self) -> Event:
        return self

    def __deepcopy__(self, memo: Any) -> Event:
        return self.__class__(*copy.deepcopy(self._values(), memo))

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form (for `journalstore log --json`)."""
        actor = self.actor
        return {
            "seq": self.seq,
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "time_ns": self.time_ns,
            "actor": {"pid": actor.pid, "uid": actor.uid, "name": actor.name},
            "kind": self.kind,
            "image_id": self.image_id,
            "data": _plain({k: v for k, v in self.data.items() if k not in ("op", "id")}),
            "segment": self.segment,
            "offset": self.offset,
        }


_new_tuple = tuple.__new__


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // _NS, UTC).replace(microsecond=(ns % _NS) // 1000)


def _bound(value: int | datetime | None, what: str) -> tuple[int | None, int | None]:
    """(seq bound, time bound in ns) of a since/until argument."""
    if value is None:
        return None, None
    if isinstance(value, datetime):
        return None, time_from_datetime(value)[0]
    if isinstance(value, int) and not isinstance(value, bool):
        return value, None
    raise TypeError(f"{what} must be a sequence number or a datetime, not {type(value).__name__}")


class Journal:
    """Read access to one store directory's journal (no lock, never writes)."""

    def __init__(self, disk: Disk, root: str) -> None:
        self.disk = disk
        self.root = root
        self.dir = os.path.join(root, "journal")

    def segments(self) -> list[int]:
        return replay.segments(self.disk, self.dir)

    def first_seq(self) -> int:
        """The oldest sequence number whose state can be rebuilt (the oldest segment's start)."""
        segs = self.segments()
        if not segs:
            return 0
        return int(replay.header(self.disk, self.dir, segs[0]).get("base_seq", 0))

    def start_segment(self, seq: int | None) -> int:
        """The segment holding record `seq` (the oldest for None): its base precedes `seq`."""
        segs = self.segments()
        if not segs:
            raise StoreError(f"{self.root} has no journal (a directory containers/storage wrote?)")
        if seq is None:
            return segs[0]
        start = segs[0]
        for number in segs:
            if int(replay.header(self.disk, self.dir, number).get("base_seq", 0)) < seq:
                start = number
        return start

    def records(self, since_seq: int | None = None) -> Iterator[jn.Record]:
        """Commit records from the segment holding `since_seq` (or the oldest) to the end."""
        yield from replay.records(self.disk, self.dir, self.start_segment(since_seq))

    # ------------------------------------------------------------------ history

    def history(
        self,
        ref: str | None = None,
        *,
        since: int | datetime | None = None,
        until: int | datetime | None = None,
        kinds: Iterable[str] | None = None,
        current: Callable[[str], Image | None] | None = None,
        index: hx.HistoryIndex | None = None,
    ) -> Iterator[Event]:
        """Events oldest first, optionally of one image (by ID, current name or a past name).

        An image's history includes events on other images that took one of its names. With the
        store's history `index`, one image's history is a walk of its own records.
        """
        since_seq, since_ns = _bound(since, "since")
        until_seq, until_ns = _bound(until, "until")
        wanted = None if kinds is None else frozenset(_kinds(kinds))
        first = self.first_seq()
        if since_seq is not None and since_seq <= first and first > 0:
            raise HistoryPruned(
                f"history before record {first + 1} was pruned from {self.root}; it is available from there",
                first_seq=first + 1,
            )
        if ref is None:
            if first > 0 and since_seq is None and since_ns is None:
                warnings.warn(
                    f"history before record {first + 1} was pruned; showing from record {first + 1}",
                    StoreWarning,
                    stacklevel=3,
                )
            source = self._all_events(since_seq)
        elif index is not None:
            source = self._linked_events(self.resolve(ref, current, index), index, since_seq, first)
        else:
            source = self._image_events(self.resolve(ref, current))
        if since_seq is None and since_ns is None and until_seq is None and until_ns is None and wanted is None:
            yield from source
            return
        for event in source:
            if since_seq is not None and event.seq < since_seq:
                continue
            if since_ns is not None and event.time_ns < since_ns:
                continue
            if until_seq is not None and event.seq > until_seq:
                return
            if until_ns is not None and event.time_ns > until_ns:
                return
            if wanted is not None and event.kind not in wanted:
                continue
            yield event

    def _all_events(self, since_seq: int | None) -> Iterator[Event]:
        new = _new_tuple
        cursor = jn.Cursor(self.disk, self.dir, self.start_segment(since_seq), writable=False)
        try:
            for batch in cursor.poll_batches():
                for segment, offset, _end, body in batch:
                    seq = int(body.get("seq", 0))
                    ns = int(body.get("time", 0))
                    for event in body.get("events", ()):
                        yield new(Event, (seq, ns, str(event.get("op")), event.get("id"), event, segment, offset, body))
        finally:
            cursor.close()

    def resolve(
        self, ref: str, current: Callable[[str], Image | None] | None = None, index: hx.HistoryIndex | None = None
    ) -> str:
        """The image a reference means: the current one, else the last that had that ID or name."""
        if not isinstance(ref, str):
            raise TypeError(f"image reference must be a string, not {type(ref).__name__}")
        if index is not None:
            # Exact answers first: the index holds the last holder of every name (so the current
            # one of a name held now) and every image ever touched. A name that is not hex cannot
            # be an ID prefix, so the current store (and its prefix index) need not be asked.
            if ref in index.last:
                return ref
            holder = index.names.get(ref)
            if holder is not None and not _hexish(ref):
                return holder
        if current is not None:
            image = current(ref)
            if image is not None:
                return image.id
        if index is not None:
            holder = index.names.get(ref)
            if holder is not None:
                return holder
            first = self.first_seq() + 1
            if index.origin <= first and index.chain_from <= first:  # it has seen every record kept
                raise ImageUnknown(f"no image was ever known as {ref!r} in the journal of {self.root}")
        found: str | None = None
        base = self._base_of_oldest()
        if base is not None:
            image = base.get(ref)
            if image is not None:
                found = image.id
            else:
                holder = base.by_name.get(ref)
                if holder is not None:
                    found = holder
        for rec in self.records():
            for event in rec.body.get("events", ()):
                image_id = event.get("id")
                if image_id == ref:
                    found = image_id
                    continue
                names = event.get("names")
                if names is None and event.get("op") == ev.PUT_IMAGE:
                    names = event.get("image", {}).get("names")
                if names and ref in names and event.get("op") != ev.REMOVE_NAMES:
                    found = image_id
        if found is None:
            raise ImageUnknown(f"no image was ever known as {ref!r} in the journal of {self.root}")
        return found

    def _base_of_oldest(self) -> State | None:
        segs = self.segments()
        return replay.base_state(self.disk, self.dir, segs[0], True) if segs else None

    def _linked_events(
        self, image_id: str, index: hx.HistoryIndex, since_seq: int | None, first: int
    ) -> Iterator[Event]:
        """The image's events by walking its records' back-pointers from the newest; records of
        format 1 (before any link) are found by a scan of the journal before the links start."""
        reader = hx.ChainReader(self.disk, self.dir)
        try:
            found = hx.walk(
                reader,
                index.last.get(image_id),
                image_id,
                first_seq=first,
                chain_from=index.chain_from,
                since_seq=since_seq,
            )
        finally:
            reader.close()
        if found.broken:  # a link led nowhere (a segment cut or pruned under us): scan instead
            yield from self._image_events(image_id)
            return
        if found.scan_below and (since_seq is None or since_seq < found.scan_below):
            yield from self._image_events(image_id, until_seq=found.scan_below - 1)
        for linked in reversed(found.records):
            if linked.events:
                events = list(_events_of(linked.record))
                for position in linked.events:
                    yield events[position]

    def _image_events(self, image_id: str, until_seq: int | None = None) -> Iterator[Event]:
        """Replay from the oldest snapshot, yielding every event that changed this image."""
        segs = self.segments()
        state = replay.base_state(self.disk, self.dir, segs[0], True)
        if state is None:
            raise JournalCorrupt(
                f"segment {segs[0]}: the snapshot it starts from is missing or damaged",
                segment=segs[0],
                offset=0,
            )
        for rec in replay.records(self.disk, self.dir, segs[0]):
            if until_seq is not None and state.seq >= until_seq:
                return
            if rec.body.get("seq") != state.seq + 1:
                replay.apply_record(state, rec)  # raises JournalCorrupt with the offset
            events = rec.body.get("events", ())
            touched: list[int] = []
            for index, event in enumerate(events):
                before = state.get(image_id)
                apply(state, event)
                after = state.get(image_id)
                if event.get("id") == image_id or before is not after or _marks(event, image_id, after):
                    touched.append(index)
            state.seq = rec.body["seq"]
            if touched:
                all_events = list(_events_of(rec))
                for index in touched:
                    yield all_events[index]

    # ------------------------------------------------------------------ the past

    def state_at(self, when: int | datetime) -> State:
        """The state right after record `when` (a datetime: the last record at or before it)."""
        with replay.gc_paused():
            return self._state_at(when)

    def _state_at(self, when: int | datetime) -> State:
        seq, ns = _bound(when, "when")
        segs = self.segments()
        if not segs:
            raise StoreError(f"{self.root} has no journal")
        first = self.first_seq()
        if seq is not None:
            if seq < first:
                raise HistoryPruned(
                    f"the state at record {seq} cannot be rebuilt: the journal of {self.root} starts "
                    f"after record {first}",
                    first_seq=first,
                )
            found = replay.nearest_base(self.disk, self.dir, seq)
            if found is None:
                raise HistoryPruned(f"no snapshot to rebuild record {seq} from", first_seq=first)
            start, state = found
        else:
            start = segs[0]
            base = replay.base_state(self.disk, self.dir, start, True)
            if base is None:
                raise HistoryPruned(f"the oldest snapshot of {self.root} is damaged", first_seq=first)
            state = base
        if seq is not None and seq == state.seq:
            return state
        for rec in replay.records(self.disk, self.dir, start):
            if ns is not None and int(rec.body.get("time", 0)) > ns:
                break
            replay.apply_record(state, rec)
            if seq is not None and state.seq >= seq:
                break
        if seq is not None and state.seq < seq:
            raise StoreError(f"record {seq} does not exist yet (the journal ends at record {state.seq})")
        return state


def _hexish(ref: str) -> bool:
    return all(c in "0123456789abcdef" for c in ref)


def _kinds(kinds: Iterable[str]) -> list[str]:
    if isinstance(kinds, str):
        kinds = [kinds]
    out = list(kinds)
    unknown = [k for k in out if k not in ev.KINDS]
    if unknown:
        raise ValueError(f"unknown event kind(s) {', '.join(map(repr, unknown))}; known: {', '.join(ev.KINDS)}")
    return out


def _marks(event: Mapping[str, Any], image_id: str, image: Image | None) -> bool:
    """Whether a marker event concerns this image (imported with it, or listed by a merge)."""
    op = event.get("op")
    if op == ev.IMPORT:
        return image is not None
    if op == ev.EXTERNAL_REWRITE:
        return any(image_id in event.get(k, ()) for k in ("added", "changed", "removed"))
    return False


def _events_of(rec: jn.Record) -> Iterator[Event]:
    segment, offset, _end, body = rec
    seq = int(body.get("seq", 0))
    ns = int(body.get("time", 0))
    new = _new_tuple
    for event in body.get("events", ()):
        yield new(Event, (seq, ns, str(event.get("op")), event.get("id"), event, segment, offset, body))


# ---------------------------------------------------------------------- views of the past


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
                f"started {_utc(created).isoformat().replace('+00:00', 'Z')})"
            )
        if replacer is None:
            return f"{what} were overwritten or deleted since and are not kept"
        when = _utc(int(replacer.body.get("time", 0))).isoformat().replace("+00:00", "Z")
        since = f"were overwritten or deleted by record {replacer.seq} ({when})"
        if "chain" not in replacer.body:
            return f"{what} {since}, written by a version of journalstore that kept no past bytes"
        return (
            f"{what} {since}; journal retention has dropped them since (history now starts at record "
            f"{first + 1})"
        )


# ---------------------------------------------------------------------- verify and repair


@dataclass
class VerifyReport:
    """What `verify` read and what it found wrong."""

    segments: int = 0
    records: int = 0
    bytes: int = 0
    snapshots: int = 0
    first_seq: int = 0
    last_seq: int = 0
    problems: list[str] = field(default_factory=list)
    damage: list[tuple[int, int]] = field(default_factory=list)  # (segment, offset)
    blobs: int = 0  # kept past big-data bytes checked against their digests

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "segments": self.segments,
            "records": self.records,
            "bytes": self.bytes,
            "snapshots_checked": self.snapshots,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "problems": self.problems,
            "damage": [{"segment": s, "offset": o} for s, o in self.damage],
            "blobs_checked": self.blobs,
        }


def verify(root: str, disk: Disk, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Read every segment, check every checksum, and check that replay reproduces each snapshot.

    `progress(bytes_done, bytes_total)` is called as segments are read.
    """
    journal = Journal(disk, root)
    report = VerifyReport()
    segs = journal.segments()
    if not segs:
        report.problems.append(f"{root}: no journal segments")
        return report
    sizes = {n: disk.stat(os.path.join(journal.dir, jn.segment_name(n))).st_size for n in segs}
    total = sum(sizes.values())
    report.segments = len(segs)
    try:
        metas = {n: replay.header(disk, journal.dir, n) for n in segs}
    except JournalCorrupt as exc:
        report.problems.append(str(exc))
        report.damage.append((exc.segment, exc.offset))
        return report
    base = replay.base_state(disk, journal.dir, segs[0], True)
    report.first_seq = int(metas[segs[0]].get("base_seq", 0))
    if base is None:
        report.problems.append(f"segment {segs[0]}: the snapshot it starts from is missing or damaged")
        report.damage.append((segs[0], 0))
        return report
    # Each later segment's snapshot must equal the state replay reaches at its base record.
    checks: dict[int, list[int]] = {}
    for n in segs[1:]:
        if metas[n].get("snapshot"):
            checks.setdefault(int(metas[n].get("base_seq", -1)), []).append(n)
    state = base

    def check_snapshot() -> None:
        for number in checks.pop(state.seq, ()):
            check_one(number, metas[number]["snapshot"])

    def check_one(number: int, reference: Mapping[str, Any]) -> None:
        report.snapshots += 1
        if snap.snapshot_digest(snap.encode(state)) != reference.get("xxh3"):
            report.problems.append(
                f"segment {number}: replaying the journal does not reproduce its snapshot {reference.get('file')}"
            )
        if replay.archive_bytes(disk, journal.dir, reference) is None and not (
            number == segs[-1] and _images_json_matches(disk, root, reference)
        ):
            report.problems.append(f"segment {number}: its snapshot {reference.get('file')} is missing or damaged")

    check_snapshot()  # a segment may start where the first one does (compacted before any record)
    done = 0
    for number in segs:
        cursor = jn.Cursor(disk, journal.dir, number, writable=False)
        if number != segs[0]:
            cursor.skip_through = state.seq  # records copied over by a background compaction
        try:
            for rec in _one_segment(cursor, number):
                replay.apply_record(state, rec)
                report.records += 1
                check_snapshot()
            if cursor.tail is not None:
                report.problems.append(
                    f"segment {number}: unfinished record at offset {cursor.tail.offset} ({cursor.tail.reason}); "
                    "the next write cuts it (a writer died mid-append)"
                )
                report.damage.append((number, cursor.tail.offset))
        except JournalCorrupt as exc:
            report.problems.append(str(exc))
            report.damage.append((exc.segment, exc.offset))
            return report
        finally:
            cursor.close()
        done += sizes[number]
        report.bytes += sizes[number]
        if progress is not None:
            progress(done, total)
    verify_blobs(report, Blobs(disk, journal.dir, False))
    for seq, numbers in checks.items():
        for number in numbers:
            report.problems.append(f"segment {number} starts after record {seq}, which replay never reached")
    report.last_seq = state.seq
    newest = metas[segs[-1]].get("snapshot")
    if newest and not _images_json_matches(disk, root, newest):
        report.problems.append(
            "images.json differs from the newest snapshot (rewritten by another program, "
            "or a compaction did not finish publishing it)"
        )
    return report


def verify_blobs(report: VerifyReport, blobs: Blobs) -> None:
    """Every kept past big-data blob must hash to the digest it is named by."""
    for digest, path in blobs.listing():
        report.blobs += 1
        try:
            data = blobs.disk.read_file(path)
        except OSError as exc:
            report.problems.append(f"blob {digest}: cannot be read ({exc})")
            continue
        if blob_digest(data) != digest:
            report.problems.append(f"blob {path}: its bytes do not match its digest {digest}")


def _images_json_matches(disk: Disk, root: str, reference: Mapping[str, Any]) -> bool:
    try:
        return snap.snapshot_digest(disk.read_file(os.path.join(root, snap.IMAGES_JSON))) == reference.get("xxh3")
    except OSError:
        return False


def _one_segment(cursor: jn.Cursor, number: int) -> Iterator[jn.Record]:
    """The records of one segment only (a cursor would follow into the next)."""
    if cursor.segment != number or cursor.end_record is not None:
        return
    for rec in cursor.poll():
        if rec.segment != number:
            return
        yield rec


def repair(root: str, disk: Disk, offset: int, segment: int | None = None, force: bool = False) -> tuple[str, int]:
    """Cut segment `segment` (default: the newest) at `offset`, keeping a copy of what was cut.

    Refuses unless the bytes before `offset` are whole records (or `force`). Returns the path of
    the copy and the number of bytes cut. Takes the writers' lock.
    """
    journal = Journal(disk, root)
    segs = journal.segments()
    if not segs:
        raise StoreError(f"{root} has no journal")
    number = segs[-1] if segment is None else segment
    if number not in segs:
        raise StoreError(f"segment {number} does not exist in {journal.dir}")
    if number != segs[-1] and not force:
        raise StoreError(
            f"segment {number} is closed: cutting it would break the chain of later segments (use --force)"
        )
    path = os.path.join(journal.dir, jn.segment_name(number))
    lock = WriterLock(disk, os.path.join(root, "images.lock"), 30.0)
    lock.acquire()
    try:
        fd = disk.open(path, os.O_RDWR)
        try:
            _meta, start = jn.read_segment_header(disk, fd, number)
            size = disk.size(fd)
            if not start <= offset <= size:
                raise StoreError(f"offset {offset} is outside segment {number} (records lie in {start}..{size})")
            _records, stop, _damage = jn.scan(disk.pread(fd, offset - start, start), start)
            if stop != offset and not force:
                raise StoreError(
                    f"offset {offset} is not the end of a whole record of segment {number} "
                    f"(the whole records before it end at {stop}); use --force to cut anyway"
                )
            cut = disk.pread(fd, size - offset, offset)
            copy = os.path.join(journal.dir, f"{jn.segment_name(number)}.cut-{offset}")
            disk.write_file(copy, cut, sync=True)
            disk.truncate(fd, offset)
            disk.fsync(fd)
        finally:
            disk.close(fd)
    finally:
        lock.release()
        lock.close()
    return copy, len(cut)


class Follower:
    """Events as other processes append them, from a cursor kept open (for `log --follow`)."""

    def __init__(self, disk: Disk, root: str, after_seq: int) -> None:
        journal = Journal(disk, root)
        if not journal.segments():
            raise StoreError(f"{root} has no journal")
        first = journal.first_seq()
        if after_seq < first:
            raise HistoryPruned(
                f"records {after_seq + 1} to {first} were pruned from {root}; following is possible from "
                f"record {first + 1} on",
                first_seq=first + 1,
            )
        # The segment holding record after_seq + 1: the cursor crosses every rotation after it.
        start = journal.start_segment(after_seq + 1)
        self._cursor = jn.Cursor(disk, journal.dir, start, writable=False)
        self._after = after_seq

    def poll(self) -> list[Event]:
        """Events of records after the last one seen (nothing when the journal did not grow)."""
        out: list[Event] = []
        if not self._cursor.changed():
            return out
        for rec in self._cursor.poll():
            seq = int(rec.body.get("seq", 0))
            if seq <= self._after:
                continue
            self._after = seq
            out.extend(_events_of(rec))
        return out

    def close(self) -> None:
        self._cursor.close()
