"""The fleet view: every shipped store's state, rebuilt from the stream with the library's reducer.

Each store's subject is replayed through `replay.apply_record` (so through `reducer.apply`), the
code a local open uses. A view resumes instead of replaying from the start: it remembers the
last stream sequence it applied (in memory, and in a cache file when given one) and reads only
the messages after it, with an ordered consumer (ephemeral: nothing to clean up on the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgpack
import xxhash

from .. import journal as jn
from .. import replay
from .. import snapshot as snap
from ..audit import Actor, Event
from ..errors import JournalCorrupt
from ..record import Image
from ..reducer import State
from . import messages as m
from .connect import FleetError, connect, stream_info

if TYPE_CHECKING:
    from nats.aio.client import Client

_NS = 1_000_000_000
CACHE_VERSION = 1
IDLE_TIMEOUT = 10.0  # seconds without a message while the stream says more are pending


class FleetWarning(UserWarning):
    """A message on a journalstore subject was skipped (foreign, damaged, or out of sequence)."""


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // _NS, UTC).replace(microsecond=(ns % _NS) // 1000)


def iso(ns: int) -> str:
    return _utc(ns).isoformat().replace("+00:00", "Z")


@dataclass
class StoreState:
    """One shipped store as the fleet sees it: its state and when its images and names appeared."""

    host: str
    store: str
    state: State = field(default_factory=lambda: State(True))
    since: dict[str, int] = field(default_factory=dict)  # image ID -> ns it appeared on this store
    name_since: dict[str, int] = field(default_factory=dict)  # name -> ns its current holder got it
    gaps: list[tuple[int, int]] = field(default_factory=list)  # records never shipped (gap markers)
    hole: str | None = None  # why the state stopped advancing (a record missing, unmarked)
    updated_ns: int = 0  # time of the last record applied
    chunks: list[bytes] = field(default_factory=list)  # the snapshot chunks read so far (1..i)
    chunk_of: tuple[int, int, int, str] | None = None  # (seq, n, size, sha256) of the snapshot they belong to

    @property
    def seq(self) -> int:
        return self.state.seq

    def images(self) -> list[Image]:
        """The store's images, as its own `images()` lists them."""
        return list(self.state)


@dataclass(frozen=True)
class Where:
    """A store that holds an image matching a reference."""

    host: str
    store: str
    image: Image
    matched: str  # "id", "name" or "digest"
    since_ns: int

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "store": self.store,
            "id": self.image.id,
            "names": list(self.image.names),
            "digest": self.image.digest,
            "matched": self.matched,
            "since": iso(self.since_ns),
            "since_ns": self.since_ns,
        }


@dataclass(frozen=True)
class FleetEvent:
    """An event of one store of the fleet (audit.Event plus where it happened)."""

    host: str
    store: str
    stream_seq: int
    event: Event

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "store": self.store, "stream_seq": self.stream_seq, **self.event.to_json()}


def _events_of(body: Mapping[str, Any]) -> list[Event]:
    seq = int(body.get("seq", 0))
    ns = int(body.get("time", 0))
    when = _utc(ns)
    actor = Actor(int(body.get("pid", 0)), int(body.get("uid", 0)), str(body.get("actor", "")))
    return [
        Event(seq, when, ns, actor, str(e.get("op")), e.get("id"), e)
        for e in body.get("events", ())
        if isinstance(e, Mapping)
    ]


class Fleet:
    """A view of every store shipped to a stream. `refresh()` reads what is new; reads are local.

        fleet = Fleet("nats://127.0.0.1:4222")
        for host, store, images in fleet.images():
            ...
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str = m.DEFAULT_STREAM,
        cache: str | os.PathLike[str] | None = None,
        connect_timeout: float = 5.0,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.stream = stream
        self.cache_path = None if cache is None else os.fspath(cache)
        self.connect_timeout = connect_timeout
        self.stores: dict[str, StoreState] = {}
        self.last_stream_seq = 0
        self._stream_created: str | None = None
        self._warn = warn
        self._loaded = False

    # ------------------------------------------------------------------ reading the stream

    def refresh(self) -> int:
        """Apply the messages added to the stream since the last refresh; returns how many."""
        return asyncio.run(self.refresh_async())

    async def refresh_async(self) -> int:
        if not self._loaded:
            self._loaded = True
            self._load_cache()
        client = await connect(self.url, timeout=self.connect_timeout, reconnect_for=10.0)
        try:
            info = await stream_info(client, self.stream)
            created = str(info.get("created", ""))
            state = info.get("state", {})
            first, last = int(state.get("first_seq", 0)), int(state.get("last_seq", 0))
            if self._stream_created not in (None, created) or last < self.last_stream_seq:
                self._reset()  # the stream was deleted and made again: start over
            self._stream_created = created
            if self.last_stream_seq and first > self.last_stream_seq + 1 and state.get("messages"):
                self._note(
                    f"stream {self.stream} no longer holds messages {self.last_stream_seq + 1}..{first - 1} "
                    "(its limits removed them): rebuilding the view from what it holds"
                )
                self._reset()
                self._stream_created = created
            count = 0
            if last > self.last_stream_seq:
                count = await self._consume(client, self.last_stream_seq + 1)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 5.0)
        self._save_cache()
        return count

    async def _consume(self, client: Client, start: int) -> int:
        from nats.js.api import ConsumerConfig, DeliverPolicy

        js = client.jetstream()
        sub = await js.subscribe(
            f"{m.SUBJECT_PREFIX}.>",
            stream=self.stream,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start),
            idle_heartbeat=2.0,
        )
        count = 0
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=IDLE_TIMEOUT)
                except TimeoutError:
                    raise FleetError(f"stream {self.stream} stopped delivering messages") from None
                meta = msg.metadata
                self._apply_message(msg.subject, msg.headers, msg.data, meta.sequence.stream, meta.timestamp)
                self.last_stream_seq = meta.sequence.stream
                count += 1
                if meta.num_pending == 0:
                    return count
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _apply_message(
        self, subject: str, headers: Mapping[str, str] | None, data: bytes, stream_seq: int, stamp: datetime
    ) -> FleetEvent | None:
        time_ns = int(stamp.timestamp() * _NS)
        try:
            msg = m.parse(subject, headers, data, stream_seq, time_ns)
        except m.Malformed as exc:
            self._note(f"skipped message {stream_seq} on {subject}: {exc}")
            return None
        view = self.stores.get(msg.store)
        if view is None:
            view = self.stores[msg.store] = StoreState(msg.host, msg.store)
        view.host = msg.host
        self._apply(view, msg)
        return None

    def _apply(self, view: StoreState, msg: m.Shipped) -> bool:
        """Apply one parsed message to its store's state; False if it was skipped."""
        if msg.kind == m.SNAPSHOT_CHUNK:
            whole = self._assemble(view, msg)
            if whole is None:
                return False
            msg = whole
        elif view.chunk_of is not None:
            self._note(
                f"store {msg.store} on {msg.host}: message {msg.stream_seq} interrupts the chunks of the snapshot "
                f"at record {view.chunk_of[0]}; dropped them"
            )
            view.chunks, view.chunk_of = [], None
        state = view.state
        if msg.kind == m.GAP:
            first, last = int(msg.body["first"]), int(msg.body["last"])
            view.gaps.append((first, last))
            return True
        if msg.kind == m.SNAPSHOT:
            if msg.seq < state.seq and view.hole is None:
                return False  # older than what we have
            try:
                new = m.snapshot_state(msg.body, f"snapshot message {msg.stream_seq}")
            except Exception as exc:  # a damaged snapshot is foreign
                self._note(f"skipped snapshot message {msg.stream_seq} of store {msg.store}: {exc}")
                return False
            view.state = new
            created = {image.id: image.created_ns for image in new}
            view.since = created
            view.name_since = {name: created[image.id] for image in new for name in image.names}
            view.hole = None
            return True
        if view.hole is not None:
            return False
        if msg.seq <= state.seq:
            self._note(f"skipped message {msg.stream_seq}: record {msg.seq} of store {msg.store} again")
            return False
        if msg.seq != state.seq + 1:
            view.hole = f"records {state.seq + 1}..{msg.seq - 1} are missing from the stream"
            self._note(f"store {msg.store} on {msg.host}: {view.hole}; its view stops at record {state.seq}")
            return False
        body = msg.body
        events = body["events"]
        touched: set[str] = {str(e["id"]) for e in events if isinstance(e, Mapping) and isinstance(e.get("id"), str)}
        before = {i: state.get(i) for i in touched}
        try:
            replay.apply_record(state, jn.Record(0, msg.stream_seq, msg.stream_seq, body))
        except (JournalCorrupt, TypeError, ValueError, KeyError, AttributeError) as exc:
            view.hole = f"record {msg.seq} cannot apply ({exc})"
            self._note(f"store {msg.store} on {msg.host}: {view.hole}; its view stops at record {state.seq}")
            return False
        ns = int(body.get("time", msg.time_ns))
        view.updated_ns = ns
        for image_id in touched:
            image = state.get(image_id)
            old = before[image_id]
            if image is None:
                view.since.pop(image_id, None)
                continue
            if old is None:
                view.since[image_id] = ns
            had = set(old.names) if old is not None else set()
            for name in image.names:
                if name not in had:
                    view.name_since[name] = ns
        return True

    def _assemble(self, view: StoreState, msg: m.Shipped) -> m.Shipped | None:
        """Collect chunk i of n; after chunk n, the snapshot they make (None until then, and for a
        chunk out of order or a set that does not add up, which is reported and dropped)."""
        body = msg.body
        index, count = int(body["chunk"]), int(body["chunks"])
        key = (msg.seq, count, int(body["size"]), str(body["sha256"]))
        if index == 1:
            if view.chunk_of is not None:
                self._note(f"store {msg.store}: the snapshot at record {view.chunk_of[0]} lacks its last chunks")
            view.chunks, view.chunk_of = [], key
        elif view.chunk_of != key or len(view.chunks) != index - 1:
            self._note(f"skipped message {msg.stream_seq}: chunk {index} of {count} of a snapshot out of order")
            view.chunks, view.chunk_of = [], None
            return None
        view.chunks.append(bytes(body["data"]))
        if index < count:
            return None
        parts, view.chunks, view.chunk_of = view.chunks, [], None
        try:
            return m.join_chunks(msg, parts)
        except m.Malformed as exc:
            self._note(
                f"skipped the snapshot of store {msg.store} at record {msg.seq} (chunks up to {msg.stream_seq}): {exc}"
            )
            return None

    def _note(self, text: str) -> None:
        if self._warn is not None:
            self._warn(text)
        else:
            warnings.warn(text, FleetWarning, stacklevel=4)

    def _reset(self) -> None:
        self.stores = {}
        self.last_stream_seq = 0

    # ------------------------------------------------------------------ questions

    def images(self, host: str | None = None) -> list[tuple[str, str, list[Image]]]:
        """(host, store ID, images) of each store (of one host), ordered by host then store."""
        out = []
        for view in sorted(self.stores.values(), key=lambda v: (v.host, v.store)):
            if host is None or view.host == host or m.host_token(view.host) == host:
                out.append((view.host, view.store, view.images()))
        return out

    def where(self, ref: str) -> list[Where]:
        """The stores holding an image with this ID (or unique ID prefix), name or digest."""
        found: list[Where] = []
        for view in sorted(self.stores.values(), key=lambda v: (v.host, v.store)):
            state = view.state
            for image in state.images_with_digest(ref):
                found.append(Where(view.host, view.store, image, "digest", view.since.get(image.id, image.created_ns)))
            if any(w.store == view.store for w in found):
                continue
            match = state.lookup(ref)
            if match is None:
                continue
            image = match
            if ref in image.names:
                since = view.name_since.get(ref, view.since.get(image.id, image.created_ns))
                found.append(Where(view.host, view.store, image, "name", since))
            else:
                found.append(Where(view.host, view.store, image, "id", view.since.get(image.id, image.created_ns)))
        return found

    def log(
        self, ref: str | None = None, *, host: str | None = None, since: datetime | None = None
    ) -> list[FleetEvent]:
        """The fleet's merged history, oldest first by record time (replays the whole stream)."""
        return asyncio.run(self.log_async(ref, host=host, since=since))

    async def log_async(
        self, ref: str | None = None, *, host: str | None = None, since: datetime | None = None
    ) -> list[FleetEvent]:
        replayer = _LogReplay(self.url, self.stream, self.connect_timeout, self._warn, ref)
        await replayer.run()
        since_ns = None if since is None else int(since.timestamp() * _NS)
        out = [
            e
            for e in replayer.events
            if (host is None or e.host == host or m.host_token(e.host) == host)
            and (since_ns is None or e.event.time_ns >= since_ns)
        ]
        out.sort(key=lambda e: (e.event.time_ns, e.host, e.store, e.event.seq))
        return out

    # ------------------------------------------------------------------ the cache

    def _load_cache(self) -> None:
        path = self.cache_path
        if path is None:
            return
        try:
            with open(path, "rb") as f:
                doc = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
            if doc.get("version") != CACHE_VERSION or doc.get("stream") != self.stream:
                return
            stores = {}
            for item in doc["stores"]:
                state = m.snapshot_state({"images": item["images"], "seq": item["seq"],
                                          "digest_orders": item["digest_orders"]}, path)
                partial = item.get("chunk_of")
                stores[item["store"]] = StoreState(
                    item["host"], item["store"], state, dict(item["since"]), dict(item["name_since"]),
                    [(a, b) for a, b in item["gaps"]], item["hole"], int(item["updated_ns"]),
                    [bytes(c) for c in item.get("chunks", ())], None if partial is None else tuple(partial),
                )
        except FileNotFoundError:
            return
        except Exception as exc:  # a damaged cache only costs a full replay
            self._note(f"ignoring the fleet cache {path}: {exc.__class__.__name__}")
            return
        self.stores = stores
        self.last_stream_seq = int(doc["last_stream_seq"])
        self._stream_created = doc.get("created")

    def _save_cache(self) -> None:
        path = self.cache_path
        if path is None:
            return
        doc = {
            "version": CACHE_VERSION,
            "stream": self.stream,
            "created": self._stream_created,
            "last_stream_seq": self.last_stream_seq,
            "stores": [
                {
                    "host": v.host,
                    "store": v.store,
                    "seq": v.state.seq,
                    "images": snap.encode(v.state),
                    "digest_orders": v.state.digest_orders(),
                    "since": v.since,
                    "name_since": v.name_since,
                    "gaps": [list(g) for g in v.gaps],
                    "hole": v.hole,
                    "updated_ns": v.updated_ns,
                    "chunks": v.chunks,  # a snapshot's chunks a refresh stopped in the middle of
                    "chunk_of": None if v.chunk_of is None else list(v.chunk_of),
                }
                for v in self.stores.values()
            ],
        }
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(msgpack.packb(doc, use_bin_type=True, default=_plain))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot cache {type(value).__name__}")


def default_cache(url: str, stream: str, environ: Mapping[str, str] | None = None) -> str:
    """$XDG_CACHE_HOME/journalstore/fleet/<xxh3 of url and stream>.msgpack (else ~/.cache/...)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = xxhash.xxh3_64_hexdigest(f"{url}\0{stream}".encode())
    return os.path.join(base, "journalstore", "fleet", f"{stream}-{key}.msgpack")


class _LogReplay(Fleet):
    """Replays the whole stream, keeping the events (of one image, with `ref`)."""

    def __init__(
        self, url: str, stream: str, timeout: float, warn: Callable[[str], None] | None, ref: str | None
    ) -> None:
        super().__init__(url, stream=stream, connect_timeout=timeout, warn=warn)
        self.ref = ref
        self.events: list[FleetEvent] = []
        self._loaded = True

    async def run(self) -> None:
        await self.refresh_async()

    def _apply(self, view: StoreState, msg: m.Shipped) -> bool:
        if msg.kind != m.COMMIT:
            return super()._apply(view, msg)
        ref = self.ref
        state = view.state
        related: set[str] = set()
        if ref is not None:
            related = {i for i in _ids_for(state, ref)}
        applied = super()._apply(view, msg)
        if not applied:
            return False
        if ref is not None:
            related |= set(_ids_for(view.state, ref))
        for event in _events_of(msg.body):
            if ref is None or event.image_id in related or event.image_id == ref or _mentions(event.data, ref):
                self.events.append(FleetEvent(view.host, view.store, msg.stream_seq, event))
        return True


def _ids_for(state: State, ref: str) -> Iterable[str]:
    image = state.lookup(ref)
    if image is not None:
        yield image.id
    for image in state.images_with_digest(ref):
        yield image.id


def _mentions(data: Mapping[str, Any], ref: str) -> bool:
    names = data.get("names")
    if isinstance(names, list | tuple) and ref in names:
        return True
    return data.get("digest") == ref
