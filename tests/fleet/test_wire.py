"""The shipper's hand-made NATS protocol bytes say what nats-py's publish() would, and snapshot
chunks join back into the snapshot (no server needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from journalstore import ImageStore
from journalstore.fleet import messages as m
from journalstore.reducer import State

STORE = "0123456789abcdef0123456789abcdef"


def nats_py_bytes(subject: str, reply: str, headers: dict[str, str], payload: bytes) -> bytes:
    """What nats-py's Client._send_publish hands to the connection for this message."""
    from nats.aio.client import Client

    captured: list[bytes] = []

    async def capture(cmd: bytes, priority: bool = False) -> None:
        captured.append(cmd)

    client = Client()
    client._send_command = capture  # type: ignore[method-assign]
    asyncio.run(client._send_publish(subject, reply, payload, len(payload), headers))
    (data,) = captured
    return data


def split(data: bytes) -> tuple[list[bytes], dict[bytes, bytes], bytes]:
    """(protocol line tokens, headers, payload) of one HPUB command, checking its lengths."""
    line, _, rest = data.partition(b"\r\n")
    tokens = line.split()
    header_len, total = int(tokens[-2]), int(tokens[-1])
    assert len(rest) == total + 2 and rest.endswith(b"\r\n")
    block, payload = rest[:header_len], rest[header_len:total]
    lines = block.split(b"\r\n")
    assert lines[0] == b"NATS/1.0" and lines[-2:] == [b"", b""]
    headers = dict(item.split(b": ", 1) for item in lines[1:-2])
    assert len(headers) == len(lines) - 3
    return tokens[:-2], headers, payload


@pytest.mark.parametrize("reply", ["", "_INBOX.abc.def"])
def test_header_block_is_what_nats_py_sends(reply: str) -> None:
    headers = {**m.commit_headers(STORE, " web 1\r\nx.example ", 7), m.BATCH_ID: "b" * 32, m.BATCH_SEQ: "3"}
    payload = b"\x81\xa4type\xa6commit"
    ours = m.hpub(b"journalstore.web_1.x", reply.encode(), m.header_block(headers), payload)
    assert split(ours) == split(nats_py_bytes("journalstore.web_1.x", reply, headers, payload))


@pytest.mark.parametrize("last", [False, True])
def test_commit_wire_is_the_commit_headers(last: bool) -> None:
    subject = m.subject("h\u00e9st", STORE)
    wire = m.CommitWire(subject, STORE, "h\u00e9st")
    reply = b"_INBOX.x.y" if last else b""
    ours = wire.message(wire.batch_headers("c" * 32), 41, b"payload", 12, reply)
    headers = {**m.commit_headers(STORE, "h\u00e9st", 41), m.BATCH_ID: "c" * 32, m.BATCH_SEQ: "12"}
    if last:
        headers[m.BATCH_COMMIT] = "1"
    assert split(ours) == split(nats_py_bytes(subject, reply.decode(), headers, b"payload"))


def test_snapshot_chunks_join_into_the_snapshot(tmp_path: Path) -> None:
    with ImageStore(f"{tmp_path}/s", fsync="never") as store:
        with store.batch():
            for i in range(300):
                store.create(names=[f"app-{i}:v1"], layer=f"L{i}", digest=f"sha256:{i:064x}")
        state = State(True)
        state.load(store.images())
        state.seq = store.seq
    whole, _headers = m.snapshot_message(STORE, "h", state, 5)
    (single,) = m.snapshot_messages(STORE, "h", state, 5, len(whole) + m.HEADER_ROOM)
    assert single[1][m.KIND] == m.SNAPSHOT
    chunks = m.snapshot_messages(STORE, "h", state, 5, -(-len(whole) // 4) + m.HEADER_ROOM)
    assert len(chunks) == 4 and b"".join(p for p, _h in chunks) == whole
    parsed = [m.parse(m.subject("h", STORE), h, p, i, 0) for i, (p, h) in enumerate(chunks, 1)]
    assert [(s.kind, s.seq, s.body["chunk"], s.body["chunks"]) for s in parsed] == [
        (m.SNAPSHOT_CHUNK, state.seq, i, 4) for i in range(1, 5)
    ]
    assert all(h[m.MSG_ID] == m.message_id(s) for s, (_p, h) in zip(parsed, chunks, strict=True))
    joined = m.join_chunks(parsed[-1], [s.body["data"] for s in parsed])
    expected = m.decode_body(m.SNAPSHOT, state.seq, whole)
    assert (joined.kind, joined.seq, joined.body) == (m.SNAPSHOT, state.seq, expected)
    damaged = [s.body["data"] for s in parsed]
    damaged[1] = bytes([damaged[1][0] ^ 1]) + damaged[1][1:]
    with pytest.raises(m.Malformed, match="SHA-256"):
        m.join_chunks(parsed[-1], damaged)
    with pytest.raises(m.Malformed, match="add up"):
        m.join_chunks(parsed[-1], [s.body["data"] for s in parsed[:-1]])


def test_a_refresh_that_stops_between_chunks_resumes_from_the_cache(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from journalstore.fleet import Fleet

    with ImageStore(tmp_path / "s", fsync="never") as store:
        with store.batch():
            for i in range(200):
                store.create(names=[f"app-{i}:v1"], layer=f"L{i}")
        state = State(True)
        state.load(store.images())
        state.seq = store.seq
        images = store.images()
    whole, _headers = m.snapshot_message(STORE, "h", state, 5)
    chunks = m.snapshot_messages(STORE, "h", state, 5, -(-len(whole) // 3) + m.HEADER_ROOM)
    assert len(chunks) == 3
    now = datetime.now(UTC)
    cache = tmp_path / "cache"
    first = Fleet("nats://127.0.0.1:1", cache=cache)
    first._apply_message(m.subject("h", STORE), chunks[0][1], chunks[0][0], 1, now)
    first.last_stream_seq = 1
    first._save_cache()
    second = Fleet("nats://127.0.0.1:1", cache=cache)
    second._load_cache()
    assert second.stores[STORE].chunk_of is not None and second.last_stream_seq == 1
    for seq, (payload, headers) in enumerate(chunks[1:], 2):
        second._apply_message(m.subject("h", STORE), headers, payload, seq, now)
    view = second.stores[STORE]
    assert view.chunk_of is None and view.seq == state.seq
    assert [i.id for i in view.images()] == [i.id for i in images]
    # a chunk out of order is reported and dropped, and so is the rest of its set
    notes: list[str] = []
    third = Fleet("nats://127.0.0.1:1", warn=notes.append)
    for seq, (payload, headers) in enumerate([chunks[0], chunks[2], chunks[1]], 1):
        third._apply_message(m.subject("h", STORE), headers, payload, seq, now)
    assert third.stores[STORE].seq == 0 and len(notes) == 2
