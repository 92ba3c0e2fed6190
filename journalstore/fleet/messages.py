"""The wire form of a shipped journal: subjects, headers, and the snapshot and gap messages.

docs/fleet.md describes every byte; this module is its one implementation, shared by the
shipper (which builds messages) and the fleet view (which parses them, skipping foreign ones).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from .. import journal as jn
from .. import snapshot as snap
from ..reducer import State

SUBJECT_PREFIX = "journalstore"
DEFAULT_STREAM = "JOURNALSTORE"

# Headers of every message we publish.
MSG_ID = "Nats-Msg-Id"
STORE = "Journalstore-Store"
HOST = "Journalstore-Host"
SEQ = "Journalstore-Seq"
KIND = "Journalstore-Kind"
GAP_FIRST = "Journalstore-Gap-First"
GAP_LAST = "Journalstore-Gap-Last"
CHUNK = "Journalstore-Chunk"  # i of a snapshot chunk (1-based)
CHUNKS = "Journalstore-Chunks"  # n: how many chunks the snapshot was cut into
SNAPSHOT_SIZE = "Journalstore-Snapshot-Size"  # bytes of the whole snapshot payload
SNAPSHOT_SHA256 = "Journalstore-Snapshot-Sha256"  # hex SHA-256 of the whole snapshot payload
# JetStream's own headers we use.
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
BATCH_ID = "Nats-Batch-Id"
BATCH_SEQ = "Nats-Batch-Sequence"
BATCH_COMMIT = "Nats-Batch-Commit"

COMMIT = "commit"
SNAPSHOT = "snapshot"
GAP = "gap"
SNAPSHOT_CHUNK = "snapshot-chunk"
KINDS = (COMMIT, SNAPSHOT, GAP, SNAPSHOT_CHUNK)
SNAPSHOT_FORMAT = 1
HEADER_ROOM = 4096  # bytes kept free for the headers and protocol line when a snapshot is cut to max_payload

_TOKEN_BAD = re.compile(r"[^A-Za-z0-9_-]")
_STORE_ID = re.compile(r"^[0-9a-f]{32}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII but ':' (as nats-py checks names)
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})


def host_token(host: str) -> str:
    """A host name as one subject token: every character outside [A-Za-z0-9_-] becomes `_`.

    `web1.example.com` -> `web1_example_com`. The mapping is not one-to-one (the store ID,
    the next token, is what identifies a store); the exact host name travels in a header.
    """
    token = _TOKEN_BAD.sub("_", host)
    return token or "_"


def subject(host: str, store_id: str) -> str:
    """`journalstore.<host token>.<store id>`: where one store publishes."""
    return f"{SUBJECT_PREFIX}.{host_token(host)}.{store_id}"


def valid_store_id(value: str) -> bool:
    """Store IDs are 32 lower-case hex digits (a random 128-bit number)."""
    return bool(_STORE_ID.match(value))


def commit_headers(store_id: str, host: str, seq: int) -> dict[str, str]:
    return {MSG_ID: f"{store_id}:{seq}", STORE: store_id, HOST: host, SEQ: str(seq), KIND: COMMIT}


def snapshot_messages(
    store_id: str, host: str, state: State, time_ns: int, max_payload: int
) -> list[tuple[bytes, dict[str, str]]]:
    """A snapshot of `state` as the messages that carry it: one `snapshot` message when its
    payload fits in `max_payload` (less HEADER_ROOM), else n `snapshot-chunk` messages whose
    payloads, joined in order, are that payload (docs/fleet.md, "Snapshots in chunks")."""
    payload, headers = snapshot_message(store_id, host, state, time_ns)
    room = max_payload - HEADER_ROOM
    if room <= 0:
        raise ValueError(f"max_payload {max_payload} leaves no room for a snapshot chunk")
    if len(payload) <= room:
        return [(payload, headers)]
    return snapshot_chunks(store_id, host, state.seq, payload, room)


def snapshot_chunks(
    store_id: str, host: str, seq: int, payload: bytes, size: int
) -> list[tuple[bytes, dict[str, str]]]:
    """A snapshot payload cut into `snapshot-chunk` messages of at most `size` bytes each."""
    count = -(-len(payload) // size)
    digest = hashlib.sha256(payload).hexdigest()
    out = []
    for index in range(1, count + 1):
        headers = {
            MSG_ID: f"{store_id}:snapshot:{seq}:{index}/{count}",
            STORE: store_id,
            HOST: host,
            SEQ: str(seq),
            KIND: SNAPSHOT_CHUNK,
            CHUNK: str(index),
            CHUNKS: str(count),
            SNAPSHOT_SIZE: str(len(payload)),
            SNAPSHOT_SHA256: digest,
        }
        out.append((payload[(index - 1) * size : index * size], headers))
    return out


def snapshot_message(store_id: str, host: str, state: State, time_ns: int) -> tuple[bytes, dict[str, str]]:
    """A snapshot of `state` (at record state.seq) as (payload, headers), whatever its size.

    Payload: a msgpack map {type: "snapshot", format: 1, seq, time, images, digest_orders};
    `images` is the images.json bytes (containers/storage's format) of the state, as `bin`.
    """
    body = {
        "type": SNAPSHOT,
        "format": SNAPSHOT_FORMAT,
        "seq": state.seq,
        "time": time_ns,
        "images": snap.encode(state),
        "digest_orders": {d: list(ids) for d, ids in state.digest_orders().items()},
    }
    headers = {
        MSG_ID: f"{store_id}:snapshot:{state.seq}",
        STORE: store_id,
        HOST: host,
        SEQ: str(state.seq),
        KIND: SNAPSHOT,
    }
    return msgpack.packb(body, use_bin_type=True), headers


def gap_message(store_id: str, host: str, first: int, last: int, time_ns: int) -> tuple[bytes, dict[str, str]]:
    """A marker saying records first..last of the store were never shipped (pruned locally first).

    Payload: msgpack {type: "gap", first, last, time, reason: "pruned"}. Its Journalstore-Seq is
    `last`: a snapshot at `last` (or later) follows it on the subject.
    """
    body = {"type": GAP, "first": first, "last": last, "time": time_ns, "reason": "pruned"}
    headers = {
        MSG_ID: f"{store_id}:gap:{first}-{last}",
        STORE: store_id,
        HOST: host,
        SEQ: str(last),
        KIND: GAP,
        GAP_FIRST: str(first),
        GAP_LAST: str(last),
    }
    return msgpack.packb(body, use_bin_type=True), headers


# ---------------------------------------------------------------------------- the wire form
#
# The shipper writes NATS protocol (HPUB) itself: nats-py's publish() builds and checks a
# header block per message from a dict, which was the largest cost of catching up. These
# produce the bytes publish() would, with the constant headers of a store encoded once.


def header_value(value: str) -> bytes:
    """A header value as nats-py sends it: stripped, CR and LF turned into spaces, UTF-8."""
    return value.strip().translate(_NEWLINES).encode()


def header_block(headers: Mapping[str, str]) -> bytes:
    """`NATS/1.0` and one `Name: value` line per header, then an empty line."""
    parts = [b"NATS/1.0\r\n"]
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"bad header name {name!r}")
        parts.append(b"%s: %s\r\n" % (name.encode(), header_value(value)))
    parts.append(b"\r\n")
    return b"".join(parts)


def hpub(subject_name: bytes, reply: bytes, header: bytes, payload: bytes) -> bytes:
    """One HPUB command: `HPUB <subject> [reply] <header bytes> <total bytes>`, headers, payload."""
    if reply:
        line = b"HPUB %s %s %d %d\r\n" % (subject_name, reply, len(header), len(header) + len(payload))
    else:
        line = b"HPUB %s %d %d\r\n" % (subject_name, len(header), len(header) + len(payload))
    return b"%s%s%s\r\n" % (line, header, payload)


class CommitWire:
    """The HPUB bytes of a store's commit messages inside an atomic batch, the constant headers
    (store, host, kind, batch ID) encoded once per batch."""

    def __init__(self, subject_name: str, store_id: str, host: str) -> None:
        self.subject = subject_name.encode()
        self.store = store_id.encode()
        self.constant = b"%s: %s\r\n%s: %s\r\n%s: %s\r\n" % (
            STORE.encode(), header_value(store_id), HOST.encode(), header_value(host), KIND.encode(), COMMIT.encode()
        )

    def batch_headers(self, batch_id: str) -> bytes:
        """The headers every commit message of batch `batch_id` shares."""
        return b"%s%s: %s\r\n" % (self.constant, BATCH_ID.encode(), batch_id.encode())

    def message(self, shared: bytes, seq: int, payload: bytes, index: int, reply: bytes = b"") -> bytes:
        """Commit record `seq` as message `index` of a batch; the batch's last (with its reply
        subject, and Nats-Batch-Commit) when `reply` is given."""
        header = b"NATS/1.0\r\nNats-Msg-Id: %s:%d\r\nJournalstore-Seq: %d\r\n%sNats-Batch-Sequence: %d\r\n%s\r\n" % (
            self.store, seq, seq, shared, index, b"Nats-Batch-Commit: 1\r\n" if reply else b""
        )
        return hpub(self.subject, reply, header, payload)


# ---------------------------------------------------------------------------- parsing


class Malformed(ValueError):
    """A message on a journalstore subject that is not one of ours (foreign or damaged)."""


@dataclass(frozen=True, slots=True)
class Shipped:
    """One parsed message of a store's subject."""

    kind: str
    host: str
    store: str
    seq: int  # the record it is, or the record the snapshot / gap marker reaches
    body: dict[str, Any]
    stream_seq: int
    time_ns: int  # the stream's receive time


def parse(
    subject_name: str, headers: Mapping[str, str] | None, payload: bytes, stream_seq: int, time_ns: int
) -> Shipped:
    """Check and decode one message; raises Malformed saying what is wrong with it."""
    tokens = subject_name.split(".")
    if len(tokens) != 3 or tokens[0] != SUBJECT_PREFIX:
        raise Malformed(f"subject {subject_name!r} is not journalstore.<host>.<store-id>")
    store_id = tokens[2]
    hdr = headers or {}
    if not valid_store_id(store_id) or hdr.get(STORE) != store_id:
        raise Malformed(f"its {STORE} header does not name the store of its subject")
    kind = hdr.get(KIND, COMMIT)
    if kind not in KINDS:
        raise Malformed(f"unknown {KIND} {kind!r}")
    seq_text = hdr.get(SEQ, "")
    if not seq_text.isdigit():
        raise Malformed(f"no valid {SEQ} header")
    seq = int(seq_text)
    host_name = hdr.get(HOST, tokens[1])
    if kind == SNAPSHOT_CHUNK:
        return Shipped(kind, host_name, store_id, seq, _chunk_body(hdr, payload), stream_seq, time_ns)
    return Shipped(kind, host_name, store_id, seq, decode_body(kind, seq, payload), stream_seq, time_ns)


def decode_body(kind: str, seq: int, payload: bytes) -> dict[str, Any]:
    """The msgpack map of a commit, snapshot or gap message, checked against its kind and seq."""
    try:
        body = jn.unpack(payload)
    except Exception as exc:  # any undecodable payload is foreign
        raise Malformed(f"payload is not a msgpack map ({exc.__class__.__name__})") from None
    if body.get("type", COMMIT) != kind:
        raise Malformed(f"payload type {body.get('type')!r} does not match {KIND} {kind!r}")
    if kind == GAP:
        first, last = body.get("first"), body.get("last")
        if type(first) is not int or type(last) is not int or not 0 < first <= last or last != seq:
            raise Malformed("gap marker without a valid first..last range")
    elif body.get("seq") != seq:
        raise Malformed(f"payload seq {body.get('seq')!r} differs from its {SEQ} header {seq}")
    if kind == COMMIT and not isinstance(body.get("events"), Sequence):
        raise Malformed("commit record without events")
    if kind == SNAPSHOT and not isinstance(body.get("images"), bytes):
        raise Malformed("snapshot without images")
    return body


def _chunk_body(hdr: Mapping[str, str], payload: bytes) -> dict[str, Any]:
    """{chunk, chunks, size, sha256, data} of a snapshot-chunk message."""
    fields = [hdr.get(CHUNK, ""), hdr.get(CHUNKS, ""), hdr.get(SNAPSHOT_SIZE, "")]
    if not all(f.isdigit() for f in fields):
        raise Malformed(f"snapshot chunk without valid {CHUNK}, {CHUNKS} and {SNAPSHOT_SIZE} headers")
    index, count, size = (int(f) for f in fields)
    digest = hdr.get(SNAPSHOT_SHA256, "")
    if not 1 <= index <= count or not _SHA256.match(digest) or len(payload) > size:
        raise Malformed(f"snapshot chunk {index} of {count} is malformed")
    return {"chunk": index, "chunks": count, "size": size, "sha256": digest, "data": payload}


def join_chunks(last: Shipped, parts: Sequence[bytes]) -> Shipped:
    """The snapshot message that chunks 1..n (`parts`, n = last.body["chunks"]) carry, checked
    against the size and SHA-256 in their headers; Malformed if they do not add up."""
    payload = b"".join(parts)
    body = last.body
    if len(parts) != body["chunks"] or len(payload) != body["size"]:
        raise Malformed(f"snapshot chunks add up to {len(payload)} bytes, not {body['size']}")
    if hashlib.sha256(payload).hexdigest() != body["sha256"]:
        raise Malformed("snapshot chunks do not match their SHA-256")
    whole = decode_body(SNAPSHOT, last.seq, payload)
    return Shipped(SNAPSHOT, last.host, last.store, last.seq, whole, last.stream_seq, last.time_ns)


def message_id(msg: Shipped) -> str:
    """The Nats-Msg-Id a message of ours carries: `<store>:<seq>`, `<store>:snapshot:<seq>`,
    `<store>:snapshot:<seq>:<i>/<n>`, `<store>:gap:<first>-<last>`."""
    if msg.kind == COMMIT:
        return f"{msg.store}:{msg.seq}"
    if msg.kind == SNAPSHOT:
        return f"{msg.store}:snapshot:{msg.seq}"
    if msg.kind == SNAPSHOT_CHUNK:
        return f"{msg.store}:snapshot:{msg.seq}:{msg.body['chunk']}/{msg.body['chunks']}"
    return f"{msg.store}:gap:{msg.body.get('first')}-{msg.body.get('last')}"


def snapshot_state(body: Mapping[str, Any], source: str) -> State:
    """The read-only state a snapshot message holds."""
    state = State(True)
    docs = snap.decode(bytes(body["images"]), source)
    orders = body.get("digest_orders")
    state.load(snap.images_from_docs(docs, source, True), orders if isinstance(orders, Mapping) else None)
    state.seq = int(body["seq"])
    return state
