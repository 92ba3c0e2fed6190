"""The wire form of a shipped journal: subjects, headers, and the snapshot and gap messages.

docs/fleet.md describes every byte; this module is its one implementation, shared by the
shipper (which builds messages) and the fleet view (which parses them, skipping foreign ones).
"""

from __future__ import annotations

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
# JetStream's own headers we use.
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
BATCH_ID = "Nats-Batch-Id"
BATCH_SEQ = "Nats-Batch-Sequence"
BATCH_COMMIT = "Nats-Batch-Commit"

COMMIT = "commit"
SNAPSHOT = "snapshot"
GAP = "gap"
KINDS = (COMMIT, SNAPSHOT, GAP)
SNAPSHOT_FORMAT = 1

_TOKEN_BAD = re.compile(r"[^A-Za-z0-9_-]")
_STORE_ID = re.compile(r"^[0-9a-f]{32}$")


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


def snapshot_message(store_id: str, host: str, state: State, time_ns: int) -> tuple[bytes, dict[str, str]]:
    """A snapshot of `state` (at record state.seq) as (payload, headers).

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
    try:
        body = jn.unpack(payload)
    except Exception as exc:  # any undecodable payload is foreign
        raise Malformed(f"payload is not a msgpack map ({exc.__class__.__name__})") from None
    expected_type = kind
    if body.get("type", COMMIT) != expected_type:
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
    return Shipped(kind, hdr.get(HOST, tokens[1]), store_id, seq, body, stream_seq, time_ns)


def message_id(msg: Shipped) -> str:
    """The Nats-Msg-Id a message of ours carries: `<store>:<seq>`, `<store>:snapshot:<seq>`,
    `<store>:gap:<first>-<last>`."""
    if msg.kind == COMMIT:
        return f"{msg.store}:{msg.seq}"
    if msg.kind == SNAPSHOT:
        return f"{msg.store}:snapshot:{msg.seq}"
    return f"{msg.store}:gap:{msg.body.get('first')}-{msg.body.get('last')}"


def snapshot_state(body: Mapping[str, Any], source: str) -> State:
    """The read-only state a snapshot message holds."""
    state = State(True)
    docs = snap.decode(bytes(body["images"]), source)
    orders = body.get("digest_orders")
    state.load(snap.images_from_docs(docs, source, True), orders if isinstance(orders, Mapping) else None)
    state.seq = int(body["seq"])
    return state
