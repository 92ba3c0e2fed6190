"""Fixtures for the fleet tests: a real nats-server on 127.0.0.1, stores, and an exactly-once check."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("nats", reason="the fleet tests need journalstore[fleet]")

from journalstore import ImageStore
from journalstore.audit import Journal
from journalstore.fleet import messages as m
from journalstore.fleet.connect import FleetError, api, connect, last_on_subject
from journalstore.fleet.storeid import read_store_id
from journalstore.fleet.testing import NatsServer, wait_for_jetstream
from journalstore.fsio import DEFAULT_DISK
from journalstore.journal import FRAME_OVERHEAD, segment_name

STREAM = m.DEFAULT_STREAM


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(str(tmp_path_factory.mktemp("nats")))
    server.start()
    try:
        wait_for_jetstream(server.url)
        yield server
    finally:
        server.stop()


@pytest.fixture
def url(nats_server: NatsServer) -> Iterator[str]:
    """The shared server's URL; the stream is deleted after each test so tests never see each other."""
    yield nats_server.url
    delete_stream(nats_server.url)


def delete_stream(url: str, stream: str = STREAM) -> None:
    async def run() -> None:
        client = await connect(url, timeout=5.0, reconnect_for=1.0)
        try:
            await api(client, f"STREAM.DELETE.{stream}")
        finally:
            await client.close()

    asyncio.run(run())


def make_store(root: Path, records: int, *, prefix: str = "app", **options: object) -> ImageStore:
    """A store with `records` records: creates with digests, then name moves."""
    store = ImageStore(root, fsync="never", **options)  # type: ignore[arg-type]
    add_records(store, records, prefix=prefix)
    return store


def add_records(store: ImageStore, count: int, *, prefix: str = "app") -> None:
    for _ in range(count):
        i = store.seq
        if i % 4 == 3:
            j = (i * 7) % i
            j -= j % 4 == 3  # a record that created an image (its name stays)
            store.add_names(f"{prefix}-{j}:v1", [f"{prefix}-moving:{i % 5}"])
        else:
            store.create(names=[f"{prefix}-{i}:v1"], layer=f"L{i}", digest=f"sha256:{i:064x}")


def journal_payloads(root: str | os.PathLike[str], since: int | None = None) -> dict[int, bytes]:
    """seq -> the payload bytes of each commit record (from record `since` on), as framed on disk."""
    journal = Journal(DEFAULT_DISK, os.fspath(root))
    out: dict[int, bytes] = {}
    files: dict[int, bytes] = {}
    for rec in journal.records(since):
        if since is not None and rec.seq < since:
            continue
        if rec.segment not in files:
            files[rec.segment] = Path(journal.dir, segment_name(rec.segment)).read_bytes()
        out[rec.seq] = files[rec.segment][rec.offset + FRAME_OVERHEAD : rec.end]
    return out


def subject_messages(
    url: str, subject: str, after_stream_seq: int = 0, stream: str = STREAM
) -> list[tuple[int, dict[str, str], bytes]]:
    """(stream seq, headers, payload) of every message on `subject` after a stream sequence."""

    async def run() -> list[tuple[int, dict[str, str], bytes]]:
        from nats.js.api import ConsumerConfig, DeliverPolicy

        client = await connect(url, timeout=5.0, reconnect_for=5.0)
        try:
            last = await last_on_subject(client, stream, subject)
            if last is None or last[0] <= after_stream_seq:
                return []
            js = client.jetstream()
            sub = await js.subscribe(
                subject,
                stream=stream,
                ordered_consumer=True,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_stream_seq + 1
                ),
            )
            out = []
            while True:
                msg = await sub.next_msg(timeout=10)
                seq = msg.metadata.sequence.stream
                out.append((seq, dict(msg.headers or {}), msg.data))
                if seq >= last[0]:
                    await sub.unsubscribe()
                    return out
        finally:
            await client.close()

    return asyncio.run(run())


def store_subject(root: str | os.PathLike[str], host: str) -> str:
    sid = read_store_id(os.fspath(root))
    assert sid is not None
    return m.subject(host, sid)


class ExactlyOnce:
    """Checks a subject holds the store's records 1..N exactly once, in order, byte for byte;
    incrementally (each call reads only the messages after the previous call's)."""

    def __init__(self, url: str, root: str | os.PathLike[str], host: str) -> None:
        self.url = url
        self.root = root
        self.host = host
        self.last_seq = 0
        self.stream_seq = 0

    def check(self) -> int:
        if read_store_id(os.fspath(self.root)) is None:
            return self.last_seq  # the shipper has not started yet
        payloads = journal_payloads(self.root, self.last_seq + 1)
        subject = store_subject(self.root, self.host)
        try:
            messages = subject_messages(self.url, subject, self.stream_seq)
        except FleetError as exc:
            # Killed after creating its store ID, before creating the stream: nothing shipped.
            if self.last_seq == 0 and "not found" in str(exc):
                return 0
            raise
        for stream_seq, headers, data in messages:
            assert headers.get(m.KIND) == m.COMMIT, headers
            seq = int(headers[m.SEQ])
            assert seq == self.last_seq + 1, f"record {seq} follows record {self.last_seq} (stream seq {stream_seq})"
            assert headers[m.MSG_ID] == f"{headers[m.STORE]}:{seq}"
            assert data == payloads[seq], f"record {seq} differs from the journal's bytes"
            self.last_seq = seq
            self.stream_seq = stream_seq
        return self.last_seq


def last_shipped(url: str, root: str | os.PathLike[str], host: str) -> int:
    """The record the subject's last message reaches (a cheap probe: one request)."""
    if read_store_id(os.fspath(root)) is None:
        return 0

    async def run() -> int:
        client = await connect(url, timeout=5.0, reconnect_for=1.0)
        try:
            last = await last_on_subject(client, STREAM, store_subject(root, host))
        finally:
            await client.close()
        return 0 if last is None else int(last[1].get(m.SEQ, 0))

    return asyncio.run(run())
