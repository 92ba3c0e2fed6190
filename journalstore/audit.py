"""The journal as an audit log: who changed what and when, and the store at any past moment.

`history()` streams events oldest first (by image: a walk of that image's history links);
`state_at()` rebuilds the state right after a record; `Follower` follows new records. Views of
that past are in views.py, verify and repair in checking.py (re-exported here). Everything
streams: a journal of a million records is never held in memory.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import FrozenInstanceError, dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from . import events as ev
from . import history_index as hx
from . import journal as jn
from . import replay
from . import snapshot as snap
from .checking import VerifyReport, repair, verify  # re-exported (see __all__): they lived here
from .errors import (
    BigDataNotKept,
    HistoryPruned,
    ImageUnknown,
    JournalCorrupt,
    StoreError,
    StoreWarning,
)
from .fsio import Disk, PinnedDisk
from .record import Image, time_from_datetime
from .reducer import State, apply

__all__ = [
    "Actor",
    "BigDataNotKept",
    "Event",
    "Follower",
    "HistoryPruned",
    "Journal",
    "VerifyReport",
    "repair",
    "utc_time",
    "verify",
]

_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Actor:
    """Who wrote a record: process, user and the store's `actor` string."""

    pid: int
    uid: int
    name: str

    def __str__(self) -> str:
        return f"{self.name or '-'}(pid={self.pid},uid={self.uid})"


class _Given(NamedTuple):
    """The time and actor of an event built from its fields rather than from a record."""

    time: datetime
    actor: Actor


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

    # Layout: (seq, time_ns, kind, image_id, data, segment, offset, who), where `who` is the
    # record's body, as a map or in positional form (time and actor derived from it), or a
    # `_Given` (time, actor) pair.
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
        return _new_tuple(cls, (seq, time_ns, kind, image_id, data, segment, offset, _Given(time, actor)))

    @property
    def time(self) -> datetime:
        who = self[7]
        if type(who) is _Given:
            return who.time
        try:
            return utc_time(self[1])
        except (*_MALFORMED, OSError):
            raise _malformed(self[5], self[6], f"time {self[1]} is out of range") from None

    @property
    def actor(self) -> Actor:
        who = self[7]
        if type(who) is _Given:
            return who.actor
        try:
            if type(who) is tuple:  # positional: seq, time, pid, uid, actor, ...
                return Actor(int(who[2]), int(who[3]), str(who[4]))
            return Actor(int(who.get("pid", 0)), int(who.get("uid", 0)), str(who.get("actor", "")))
        except _MALFORMED:
            raise _malformed(self[5], self[6], "its pid or uid is not a number") from None

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


def _seq_time_events(body: Any) -> tuple[Any, Any, Any]:
    """(seq, time, events) of a commit's body, a map or a positional tuple."""
    if type(body) is tuple:
        return body[0], body[1], body[5]
    return body.get("seq", 0), body.get("time", 0), body.get("events", ())


def utc_time(ns: int) -> datetime:
    """An aware UTC datetime from nanoseconds since the epoch (microsecond precision)."""
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
            if since_seq is None and since_ns is None and until_seq is None and until_ns is None and wanted is None:
                for batch in self._all_event_batches(None):  # the common case, at full speed
                    yield from batch
                return
            source: Iterator[Event] = (event for batch in self._all_event_batches(since_seq) for event in batch)
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

    def _all_event_batches(self, since_seq: int | None) -> Iterator[list[Event]]:
        """Every event from the segment holding `since_seq`, a list per batch of records."""
        new = _new_tuple
        cursor = jn.Cursor(self.disk, self.dir, self.start_segment(since_seq), writable=False)
        try:
            batches: Iterator[list[Any]] = cursor.poll_raw_batches()
            for batch in batches:  # only commits: positional tuples, or maps
                try:  # the positional form, at full speed
                    events = [
                        new(Event, (int(body[0]), int(body[1]), str(event.get("op")), event.get("id"), event,
                                    segment, offset, body))
                        for segment, offset, _end, body in batch
                        for event in body[5]
                    ]  # fmt: skip
                except (KeyError, *_MALFORMED):  # a map (body[5] of a map is a KeyError), or damage
                    try:
                        events = [
                            new(Event, (int(seq), int(ns), str(event.get("op")), event.get("id"), event, segment,
                                        offset, body))
                            for segment, offset, _end, body in batch
                            for seq, ns, body_events in (_seq_time_events(body),)
                            for event in body_events
                        ]  # fmt: skip
                    except _MALFORMED:
                        events = [event for rec in batch for event in _events_of(rec)]  # names the bad record
                yield events
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

    def pinned(self, seq: int) -> Journal:
        """This journal as `state_at(seq)` will need it later: the segment that holds record
        `seq` and the snapshot it starts from are kept open, so pruning cannot take them away."""
        segs = self.segments()
        names: list[str] = []
        for number in reversed(segs):
            with contextlib.suppress(OSError, JournalCorrupt):
                meta = replay.header(self.disk, self.dir, number)
                if int(meta.get("base_seq", 0)) > seq:
                    continue
                names = [jn.segment_name(number), snap.twin_name(number)]
                reference = meta.get("snapshot")
                if isinstance(reference, Mapping):
                    names.append(os.path.basename(str(reference.get("file"))))
                break
        return Journal(PinnedDisk(self.disk, self.dir, names), self.root)

    def check_moment(self, seq: int, last: int) -> None:
        """Raise what `state_at(seq)` would for a record before the journal's start or after
        `last` (the newest record), without rebuilding anything."""
        _bound(seq, "when")
        self._check_kept(seq, self.first_seq())
        if seq > last:
            raise StoreError(f"record {seq} does not exist yet (the journal ends at record {last})")

    def _check_kept(self, seq: int, first: int) -> None:
        if seq < first:
            raise HistoryPruned(
                f"the state at record {seq} cannot be rebuilt: the journal of {self.root} starts after record {first}",
                first_seq=first,
            )

    def _state_at(self, when: int | datetime) -> State:
        seq, ns = _bound(when, "when")
        segs = self.segments()
        if not segs:
            raise StoreError(f"{self.root} has no journal")
        first = self.first_seq()
        if seq is not None:
            self._check_kept(seq, first)
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


_MALFORMED = (TypeError, ValueError, AttributeError, OverflowError)  # a field of the wrong type


def _events_of(rec: jn.Record | jn.RawRecord) -> list[Event]:
    """The events of one commit (map or positional body); JournalCorrupt if its fields are not
    what the format says (a record that no replay checked: one in a segment before the snapshot)."""
    segment, offset, _end, body = rec
    new = _new_tuple
    try:
        seq, ns, events = _seq_time_events(body)
        seq, ns = int(seq), int(ns)
        return [new(Event, (seq, ns, str(event.get("op")), event.get("id"), event, segment, offset, body))
                for event in events]  # fmt: skip
    except _MALFORMED as exc:
        raise _malformed(segment, offset, f"{exc.__class__.__name__}: {exc}") from None


def _malformed(segment: int, offset: int, why: str) -> JournalCorrupt:
    return JournalCorrupt(
        f"segment {segment}: record at offset {offset} is malformed ({why})", segment=segment, offset=offset
    )


# ---------------------------------------------------------------------- views of the past


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
