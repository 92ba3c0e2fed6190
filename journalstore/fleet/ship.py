"""Shipping a store's journal to a JetStream stream, exactly once, without local state.

Records go out in atomic batches (JetStream's `Nats-Batch-*` headers): a batch is stored whole
or not at all, and its first message carries `Nats-Expected-Last-Subject-Sequence`, the stream
sequence of the subject's last message when the batch was built. So a batch applies only on top
of exactly the history this shipper saw: a lost ack, a restarted server or a second shipper of
the same store can make a batch fail, never make it land twice or out of order. After any
failure the shipper asks the stream for the subject's last message and goes on after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import journal as jn
from .. import replay
from ..audit import Journal
from ..errors import StoreError
from ..fsio import DEFAULT_DISK, Disk
from . import messages as m
from .connect import FleetError, connect, ensure_stream, get_message, last_on_subject
from .storeid import store_id as get_store_id

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.subscription import Subscription

MAX_BATCH = 1000  # JetStream's default limit of messages in one atomic batch
MAX_BATCH_BYTES = 4 * 1024 * 1024
ACK_TIMEOUT = 10.0
PREPARE_SLICE = 64  # messages encoded between two turns of the event loop while an ack is outstanding
MAX_POLL_INTERVAL = 0.05  # the longest sleep between two looks at an idle journal
WRONG_LAST_SEQUENCE = 10071
DUPLICATE_IN_BATCH = 10201


class ShipGap(FleetError):
    """Records were pruned from the local journal before they were shipped (a gap marker was
    published in their place). Raised after everything else was shipped; `.report` says what."""

    def __init__(self, message: str, report: ShipReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class ShipReport:
    """What one run of the shipper did."""

    store: str
    host: str
    subject: str
    stream: str
    resumed_after: int = 0  # the last record the stream held when the shipper started
    shipped: int = 0  # commit records this run published
    last_seq: int = 0  # the last record the stream holds now
    batches: int = 0
    retries: int = 0
    snapshots: list[int] = field(default_factory=list)  # records snapshots were published at
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (first, last) records never shipped

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "host": self.host,
            "subject": self.subject,
            "stream": self.stream,
            "resumed_after": self.resumed_after,
            "shipped": self.shipped,
            "last_seq": self.last_seq,
            "batches": self.batches,
            "retries": self.retries,
            "snapshots": self.snapshots,
            "gaps": [{"first": a, "last": b} for a, b in self.gaps],
        }


def gap_text(store: str, first: int, last: int) -> str:
    what = f"record {first}" if first == last else f"records {first}..{last}"
    return (
        f"{what} of store {store} were pruned from its journal before they were shipped; "
        f"a gap marker records them in the stream and shipping goes on from a snapshot at record {last}"
    )


class _Retry(Exception):
    """A batch did not land: ask the stream where it stands and start over from there."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Batch:
    """An atomic batch, encoded but for its first message's Nats-Expected-Last-Subject-Sequence
    (known only once the batch before it is acknowledged)."""

    batch_id: str
    reply: str
    first: tuple[bytes, dict[str, str]]  # payload and headers of message 1
    rest: list[bytes]  # HPUB bytes of messages 2..n
    count: int
    reaches: int  # the record the batch's last message reaches
    commits: int  # how many commit records it carries


class _Message:
    """A message waiting to be put in a batch: a commit record (`headers` None: its headers are
    encoded by messages.CommitWire) or a snapshot, snapshot-chunk or gap message."""

    __slots__ = ("headers", "payload", "seq")

    def __init__(self, payload: bytes, headers: dict[str, str] | None, seq: int) -> None:
        self.payload = payload
        self.headers = headers
        self.seq = seq  # the record it is or reaches


class Shipper:
    """Ships one store's journal; `run()` (async) or `journalstore.fleet.ship()` (blocking)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        url: str,
        *,
        stream: str = m.DEFAULT_STREAM,
        host: str | None = None,
        replicas: int = 1,
        batch: int = MAX_BATCH,
        retry_for: float = 60.0,
        connect_timeout: float = 5.0,
        poll_interval: float = 0.002,
        max_poll_interval: float = MAX_POLL_INTERVAL,
        on_gap: Callable[[int, int], None] | None = None,
        on_batch: Callable[[ShipReport], None] | None = None,
        disk: Disk = DEFAULT_DISK,
    ) -> None:
        if not isinstance(replicas, int) or not 1 <= replicas <= 5:
            raise ValueError(f"replicas must be 1 to 5, not {replicas!r}")
        if not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
            raise ValueError(f"batch must be 1 to {MAX_BATCH}, not {batch!r}")
        if not stream or any(c in stream for c in " .*>\t\r\n"):
            raise ValueError(f"bad stream name {stream!r}")
        self.root = os.path.abspath(os.fspath(root))
        self.url = url
        self.stream = stream
        self.host = host or socket.gethostname()
        self.replicas = replicas
        self.batch = batch
        self.retry_for = retry_for
        self.connect_timeout = connect_timeout
        self.poll_interval = poll_interval
        self.max_poll_interval = max(poll_interval, max_poll_interval)
        self.on_gap = on_gap
        self.on_batch = on_batch
        self.disk = disk
        self.journal = Journal(disk, self.root)
        if not self.journal.segments():
            raise StoreError(f"{self.root} has no journal: not a journalstore store")
        self.store = get_store_id(self.root, disk)
        self.subject = m.subject(self.host, self.store)
        self.report = ShipReport(self.store, self.host, self.subject, stream)
        self._client: Client | None = None
        self._acked = 0  # the last record the subject holds
        self._stream_seq = 0  # the stream sequence of the subject's last message
        self._cursor: jn.Cursor | None = None
        self._after = 0  # the last record read from the cursor into a batch
        self._pending: list[_Message] = []  # gap / snapshot messages that must go first
        self._carry: _Message | None = None  # a record read but left for the next batch
        self._wire = m.CommitWire(self.subject, self.store, self.host)
        self._inbox = ""
        self._acks: Subscription | None = None
        self._records_iter: Iterator[tuple[int, bytes]] = iter(())
        self._built: _Batch | None = None

    # ------------------------------------------------------------------ running

    async def run(self, *, follow: bool = False, stop: threading.Event | None = None) -> ShipReport:
        """Ship what the journal holds; with `follow`, keep shipping until `stop` is set."""
        self._client = await connect(self.url, timeout=self.connect_timeout, reconnect_for=self.retry_for)
        try:
            await ensure_stream(self._client, self.stream, self.replicas)
            if not callable(getattr(self._client, "_send_command", None)):
                raise FleetError("this nats-py has no Client._send_command: install nats-py 2.16 or later 2.x")
            self._inbox = self._client.new_inbox()
            self._acks = await self._client.subscribe(f"{self._inbox}.*")
            await self._resync(first=True)
            self.report.resumed_after = self._acked
            while True:
                await self._ship_available()
                if not follow:
                    break
                pause = self.poll_interval  # back to the shortest sleep after every record found
                while not self._changed():
                    if stop is not None and stop.is_set():
                        return self.report
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, self.max_poll_interval)
                if stop is not None and stop.is_set():
                    await self._ship_available()
                    break
        finally:
            if self._cursor is not None:
                self._cursor.close()
                self._cursor = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._client.close(), 5.0)
        return self.report

    def _changed(self) -> bool:
        """Did the journal move? One fstat (as readers do) when nothing changed."""
        return self._cursor is None or self._cursor.changed()

    async def _ship_available(self) -> None:
        deadline = time.monotonic() + self.retry_for
        duplicates = 0
        while True:
            try:
                if self._cursor is None:
                    self._reopen()
                await self._ship_once()
                return
            except _Retry as exc:
                self.report.retries += 1
                duplicates = duplicates + 1 if exc.code == DUPLICATE_IN_BATCH else 0
                if duplicates >= 2:  # the records are in the stream, but not on our subject
                    raise FleetError(
                        f"stream {self.stream} already holds records of store {self.store} after record "
                        f"{self._acked}, under another subject than {self.subject}: was it shipped under "
                        "another host name? (ship with the same --host)"
                    ) from None
                if time.monotonic() > deadline:
                    raise FleetError(f"shipping {self.subject} keeps failing: {exc}") from None
                self._drop_cursor()
                await asyncio.sleep(0.05)
                await self._resync(first=False)

    async def _ship_once(self) -> None:
        """Ship what the cursor holds, batch after batch. Batch k+1 is read and encoded while
        batch k's ack is outstanding, but sent only after that ack: if batch k fails, k+1 is
        dropped unsent (with the cursor: the caller re-reads the stream and reopens it)."""
        self._records_iter = self._records()
        batch = self._prepare()
        while batch is not None:
            await self._send(batch)
            try:
                upcoming = await self._prepare_async()
            except Exception:
                await self._finish(batch)  # a record we cannot ship: report what landed first
                raise
            await self._finish(batch)
            batch = upcoming

    # ------------------------------------------------------------------ where to start

    async def _resync(self, *, first: bool) -> None:
        """Ask the stream for the subject's last message: ship after the record it reaches."""
        assert self._client is not None
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                last = await last_on_subject(self._client, self.stream, self.subject)
                break
            except FleetError:
                raise
            except Exception as exc:  # timeouts and lost connections while a server restarts
                if first or time.monotonic() > deadline:
                    raise FleetError(
                        f"cannot read the last message of {self.subject} from stream {self.stream}: "
                        f"{exc.__class__.__name__}"
                    ) from None
                await asyncio.sleep(0.25)
        if last is None:
            self._acked, self._stream_seq = 0, 0
        else:
            stream_seq, headers, payload = last
            seq = self._ours(headers, payload)
            if seq is None:  # someone else published on our subject: find our last message before it
                seq = await self._last_ours_before(stream_seq)
            self._acked, self._stream_seq = seq, stream_seq
        self.report.last_seq = self._acked

    def _ours(self, headers: dict[str, str], payload: bytes) -> int | None:
        """The record a message of ours reaches (its Journalstore-Seq), None for a foreign one:
        headers, message ID and payload must all agree (m.parse), as the fleet view checks them."""
        try:
            msg = m.parse(self.subject, headers, payload, 0, 0)
        except m.Malformed:
            return None
        if msg.store != self.store or m.KIND not in headers or headers.get(m.MSG_ID) != m.message_id(msg):
            return None
        return msg.seq

    async def _last_ours_before(self, foreign: int) -> int:
        """The record our last message before stream sequence `foreign` reaches (0 if none): read
        the subject forward over a window before it, widened until one of ours is in it."""
        assert self._client is not None
        window = 64
        while True:
            start = max(1, foreign - window)
            found: int | None = None
            position = start
            while True:
                got = await get_message(
                    self._client, self.stream, {"seq": position, "next_by_subj": self.subject}, self.subject
                )
                if got is None or got[0] >= foreign:
                    break
                seq = self._ours(got[1], got[2])
                if seq is not None:
                    found = seq
                position = got[0] + 1
            if found is not None or start == 1:
                return found or 0
            window *= 4

    def _reopen(self) -> None:
        """A cursor positioned after the last shipped record, and the snapshot/gap messages that
        must go first when the journal no longer holds the records right after it."""
        for _attempt in range(5):
            try:
                self._open_after(self._acked)
                return
            except FileNotFoundError:  # a segment was pruned as we opened it: look again
                self._drop_cursor()
        raise FleetError(f"the journal of {self.root} keeps changing under the shipper")

    def _open_after(self, acked: int) -> None:
        journal = self.journal
        segs = journal.segments()
        if not segs:
            raise StoreError(f"{self.root} has no journal")
        first = journal.first_seq()
        oldest = replay.header(self.disk, journal.dir, segs[0])
        self._pending, self._carry = [], None
        if acked < first or (acked == 0 and oldest.get("snapshot")):
            state = replay.base_state(self.disk, journal.dir, segs[0], True)
            if state is None:
                raise StoreError(f"{self.root}: the snapshot segment {segs[0]} starts from is missing or damaged")
            when = int(oldest.get("created", time.time_ns()))
            if acked < first:
                self.report.gaps.append((acked + 1, first))
                payload, headers = m.gap_message(self.store, self.host, acked + 1, first, time.time_ns())
                self._pending.append(_Message(payload, headers, first))
                if self.on_gap is not None:
                    self.on_gap(acked + 1, first)
            limit = self._client.max_payload if self._client is not None else 1 << 20
            for payload, headers in m.snapshot_messages(self.store, self.host, state, when, limit):
                self._pending.append(_Message(payload, headers, state.seq))
            if len(self._pending) > MAX_BATCH:
                raise FleetError(
                    f"the snapshot of {self.root} at record {state.seq} needs {len(self._pending)} messages of "
                    f"the server's max_payload ({limit} bytes), more than one atomic batch holds ({MAX_BATCH}): "
                    "raise max_payload in the server's configuration"
                )
            self.report.snapshots.append(state.seq)
            self._cursor = jn.Cursor(self.disk, journal.dir, segs[0], writable=False)
            self._after = state.seq
        else:
            self._cursor = jn.Cursor(self.disk, journal.dir, journal.start_segment(acked + 1), writable=False)
            self._after = acked

    def _drop_cursor(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None
        self._pending, self._carry = [], None

    def _records(self) -> Iterator[tuple[int, bytes]]:
        """(seq, payload bytes exactly as framed) of each new commit record, in order."""
        cursor = self._cursor
        assert cursor is not None
        for rec in cursor.poll():
            seq = rec.seq
            if seq <= self._after:
                continue  # before the resume point (or a copy a compaction made)
            if seq != self._after + 1:
                raise StoreError(f"the journal of {self.root} jumps from record {self._after} to {seq}")
            frame = self.disk.pread(cursor.fd, rec.end - rec.offset, rec.offset)
            if rec.segment != cursor.segment or jn.valid_frame_at(frame, 0) != len(frame):
                raise StoreError(f"record {seq} changed on disk while it was being shipped")
            self._after = seq
            yield seq, frame[jn.FRAME_OVERHEAD :]

    # ------------------------------------------------------------------ publishing

    def _prepare(self) -> _Batch | None:
        """The next batch, or None when the cursor holds nothing more (synchronously)."""
        for _ in self._builder():
            pass
        return self._built

    async def _prepare_async(self) -> _Batch | None:
        """The next batch, giving the event loop a turn every PREPARE_SLICE messages (so the
        batch in flight is written out and its ack read meanwhile)."""
        for _ in self._builder():
            await asyncio.sleep(0)
        return self._built

    def _builder(self) -> Iterator[None]:
        """Builds the next batch into self._built, yielding every PREPARE_SLICE messages.

        The snapshot and gap messages that must go first make up the start of a batch whatever
        their size (a snapshot's chunks never span batches); commit records follow up to
        `batch` messages and MAX_BATCH_BYTES."""
        self._built = None
        batch_id = uuid.uuid4().hex
        reply = f"{self._inbox}.{batch_id}".encode()
        shared = self._wire.batch_headers(batch_id)
        queue: list[_Message] = self._pending
        self._pending = []
        if self._carry is not None:
            queue.append(self._carry)
            self._carry = None
        records = self._records_iter
        limit = self._client.max_payload if self._client is not None else 1 << 20
        held: _Message | None = None  # the last message so far: encoded once we know whether it ends the batch
        first: tuple[bytes, dict[str, str]] | None = None
        rest: list[bytes] = []
        count = size = commits = last_seq = 0
        position = 0
        while True:
            if position < len(queue):
                message: _Message | None = queue[position]
                position += 1
            elif count >= self.batch:
                break
            else:
                got = next(records, None)
                if got is None:
                    break
                seq, payload = got
                if len(payload) + 512 > limit:
                    raise FleetError(
                        f"record {seq} of {self.root} is {len(payload)} bytes: more than the server's max_payload "
                        f"({limit}); raise max_payload in the server's configuration"
                    )
                message = _Message(payload, None, seq)
                if count and size + len(payload) > MAX_BATCH_BYTES:
                    self._carry = message
                    break
            assert message is not None
            if held is not None:
                self._encode(held, count, batch_id, shared, b"", rest)
            if count == 0:
                first = (message.payload, self._headers(message, batch_id, 1))
            else:
                held = message
            count += 1
            size += len(message.payload)
            commits += message.headers is None
            last_seq = message.seq
            if count % PREPARE_SLICE == 0:
                yield
        if count == 0 or first is None:
            return
        if held is not None:
            self._encode(held, count, batch_id, shared, reply, rest)
        else:  # a batch of one: its first message is its last
            first[1][m.BATCH_COMMIT] = "1"
        self._built = _Batch(batch_id, reply.decode(), first, rest, count, last_seq, commits)

    def _headers(self, message: _Message, batch_id: str, index: int) -> dict[str, str]:
        headers = dict(message.headers) if message.headers is not None else m.commit_headers(
            self.store, self.host, message.seq
        )
        headers[m.BATCH_ID] = batch_id
        headers[m.BATCH_SEQ] = str(index)
        return headers

    def _encode(
        self, message: _Message, index: int, batch_id: str, shared: bytes, reply: bytes, out: list[bytes]
    ) -> None:
        """Append the HPUB bytes of message `index` (the batch's last when `reply` is given)."""
        if message.headers is None:
            out.append(self._wire.message(shared, message.seq, message.payload, index, reply))
            return
        headers = self._headers(message, batch_id, index)
        if reply:
            headers[m.BATCH_COMMIT] = "1"
        out.append(m.hpub(self._wire.subject, reply, m.header_block(headers), message.payload))

    async def _send(self, batch: _Batch) -> None:
        """Write the batch out: its first message now carries the subject's last stream sequence."""
        client = self._client
        assert client is not None
        payload, headers = batch.first
        headers[m.EXPECTED_LAST_SUBJECT_SEQ] = str(self._stream_seq)
        reply = batch.reply.encode() if batch.count == 1 else b""
        data = b"".join([m.hpub(self._wire.subject, reply, m.header_block(headers), payload), *batch.rest])
        try:
            if client.is_closed or not client.is_connected:
                raise ConnectionError("not connected")
            await client._send_command(data)
            await client._flush_pending()
        except Exception as exc:  # lost connection
            raise _Retry(f"{exc.__class__.__name__} {exc}".strip()) from None

    async def _finish(self, batch: _Batch) -> None:
        """Wait for the batch's one ack; on success the subject holds it, else _Retry."""
        acks = self._acks
        assert acks is not None
        deadline = time.monotonic() + ACK_TIMEOUT
        try:
            while True:
                reply = await acks.next_msg(timeout=max(0.001, deadline - time.monotonic()))
                if reply.subject == batch.reply:
                    break  # (an ack of an earlier batch that timed out is dropped)
        except Exception as exc:  # timeouts, lost connection
            raise _Retry(f"no acknowledgement of the batch: {exc.__class__.__name__} {exc}".strip()) from None
        try:
            answer = json.loads(reply.data)
        except ValueError:
            raise _Retry("the batch's acknowledgement is not JSON") from None
        error = answer.get("error") if isinstance(answer, dict) else {"description": "not a JSON object"}
        if error:
            code = int(error.get("err_code", 0))
            raise _Retry(f"the stream refused the batch: {error.get('description')} ({code})", code)
        self._stream_seq = int(answer["seq"])
        self._acked = batch.reaches
        self.report.shipped += batch.commits
        self.report.batches += 1
        self.report.last_seq = self._acked
        if self.on_batch is not None:
            self.on_batch(self.report)
