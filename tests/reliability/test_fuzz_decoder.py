"""Fuzzing the decoders: arbitrary bytes, and bytes shaped like what they decode (frames with
valid checksums around random msgpack, segment headers, images.json documents, binary twins).

Each decoder may only answer as documented: `journal.scan` returns what it decoded and where it
stopped (it never raises); `decode_segment_header` and a `Cursor` over a segment file raise
`JournalCorrupt`; `snapshot.decode` and `images_from_docs` raise `SnapshotCorrupt`;
`decode_twin` returns None for anything it cannot use; a read-only `ImageStore` over a fuzzed
journal raises `JournalCorrupt` or `SnapshotMismatch`. Never another exception, never a hang
(an alarm per example). The long suite runs many more examples.
"""

from __future__ import annotations

import contextlib
import signal
import struct
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journalstore import ImageStore
from journalstore import journal as jn
from journalstore import snapshot as snap
from journalstore.errors import JournalCorrupt, SnapshotMismatch, StoreError
from journalstore.fsio import DEFAULT_DISK

from .conftest import scale

EXAMPLES = scale(60, 4000)
ALARM = 20.0
COUNTS: dict[str, int] = {}

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
    ],
)


class Hang(Exception):
    pass


@contextlib.contextmanager
def alarm(what: str) -> Iterator[None]:
    def ring(_signum: int, _frame: Any) -> None:
        raise Hang(f"{what} did not answer in {ALARM} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, ALARM)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def count(target: str) -> None:
    COUNTS[target] = COUNTS.get(target, 0) + 1


# ---------------------------------------------------------------------- strategies

KEYS = [
    "type",
    "seq",
    "time",
    "pid",
    "uid",
    "actor",
    "events",
    "op",
    "id",
    "names",
    "history",
    "created",
    "offset",
    "layer",
    "digest",
    "metadata",
    "flags",
    "key",
    "value",
    "size",
    "image",
    "files",
    "next",
    "snapshot",
    "file",
    "xxh3",
    "source",
    "count",
    "dropped_names",
    "added",
    "changed",
    "removed",
    "segment",
    "base_seq",
]
OPS = [
    "create",
    "set-names",
    "add-names",
    "remove-names",
    "delete",
    "set-metadata",
    "set-flag",
    "clear-flag",
    "set-big-data",
    "add-mapped-layer",
    "remove-mapped-layer",
    "put-image",
    "import",
    "external-rewrite",
    "nope",
]
TYPES = ["commit", "prepare", "end", "other"]
# Names a record could give to send a path outside the store (issue 15.2).
HOSTILE_IDS = ["..", ".", "journal", "images.json", "a/b", "../x", "x\x00y"]
HOSTILE_FILES = [
    "victim.txt",
    "..",
    ".",
    "../victim.txt",
    "../../victim.txt",
    "=Li4=",
    "=Li4vdmljdGltLnR4dA==",
    "manifest",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.sampled_from(KEYS + OPS + TYPES + ["a" * 64, "sha256:" + "a" * 64]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=5), st.integers(0, 3)), children, max_size=5),
    ),
    max_leaves=25,
)


@st.composite
def events(draw: Any) -> dict[Any, Any]:
    event: dict[Any, Any] = {"op": draw(st.sampled_from(OPS))}
    if draw(st.booleans()):
        event["id"] = draw(st.sampled_from(["a" * 64, "b" * 64, "", 5, None, *HOSTILE_IDS]))
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=6)):
        event[key] = draw(values)
    return event


@st.composite
def bodies(draw: Any, seq: int) -> Any:
    """A record body: mostly commit-shaped, with the expected sequence number most of the time."""
    if draw(st.integers(0, 9)) == 0:
        return draw(values)
    body: dict[Any, Any] = {"type": draw(st.sampled_from(TYPES)) if draw(st.booleans()) else "commit"}
    body["seq"] = seq if draw(st.integers(0, 4)) else draw(values)
    body["events"] = draw(st.lists(events(), max_size=4)) if draw(st.integers(0, 5)) else draw(values)
    if body["type"] == "prepare" and draw(st.booleans()):
        entry = st.tuples(
            st.sampled_from(["a" * 64, *HOSTILE_IDS]), st.sampled_from(HOSTILE_FILES), st.booleans(), st.booleans()
        ).map(list)
        body["files"] = draw(st.lists(entry, max_size=3))
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=3)):
        body.setdefault(key, draw(values))
    if body["type"] == "commit" and draw(st.integers(0, 2)) == 0:  # format 3's array, well formed or not
        more = draw(st.one_of(st.none(), st.dictionaries(st.sampled_from([*KEYS, "type", "seq"]), values, max_size=2)))
        fields = [body["seq"], *(draw(values) if draw(st.integers(0, 3)) == 0 else default
                                 for default in (1_700_000_000_000_000_000, 1, 0, "fuzz")),
                  body["events"], 1, draw(st.one_of(st.none(), values)), more]  # fmt: skip
        return fields[: draw(st.integers(0, 10))] if draw(st.integers(0, 5)) == 0 else fields
    return body


def pack(value: Any) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return msgpack.packb(repr(value), use_bin_type=True)


@st.composite
def frames(draw: Any, first_seq: int = 1) -> bytes:
    """Frames back to back: valid ones around random bodies, and some damaged in one field."""
    out = bytearray()
    for i in range(draw(st.integers(0, 6))):
        payload = pack(draw(bodies(first_seq + i))) if draw(st.integers(0, 4)) else draw(st.binary(max_size=40))
        frame = bytearray(jn.encode_frame(payload))
        damage = draw(st.integers(0, 9))
        if damage == 0 and frame:
            pos = draw(st.integers(0, len(frame) - 1))
            frame[pos] ^= 1 << draw(st.integers(0, 7))
        elif damage == 1:
            frame = frame[: draw(st.integers(0, len(frame)))]
        elif damage == 2:
            struct.pack_into("<I", frame, 4, draw(st.integers(0, 2**32 - 1)))
        out += frame
    if draw(st.integers(0, 3)) == 0:
        out += draw(st.binary(max_size=64))
    return bytes(out)


@st.composite
def segment_files(draw: Any) -> bytes:
    """A segment: a header (usually valid, sometimes with odd metadata) and fuzzed frames."""
    meta: Any = {"segment": 1, "base_seq": 0, "snapshot": None, "created": 0}
    if draw(st.integers(0, 3)) == 0:
        key = draw(st.sampled_from(["segment", "base_seq", "snapshot", "created", "other"]))
        meta[key] = draw(values)
    if draw(st.integers(0, 9)) == 0:
        meta = draw(values)
    raw = pack(meta)
    header = jn.SEGMENT_HEADER.pack(jn.SEGMENT_MAGIC, jn.FORMAT_VERSION, 0, len(raw), xxhash.xxh3_64_intdigest(raw))
    head = bytearray(header + raw)
    if draw(st.integers(0, 9)) == 0 and head:
        head[draw(st.integers(0, len(head) - 1))] ^= 0xFF
    return bytes(head) + draw(frames())


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        st.text(max_size=12),
        st.sampled_from(
            [
                "2024-01-01T00:00:00Z",
                "2024-01-01T00:00:00.5+05:30",
                "0001-01-01T00:00:00Z",
                "x",
                "a" * 64,
                "sha256:" + "a" * 64,
            ]
        ),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "digest",
                    "names",
                    "names-history",
                    "layer",
                    "mapped-layers",
                    "metadata",
                    "big-data-names",
                    "big-data-sizes",
                    "big-data-digests",
                    "created",
                    "flags",
                    "x",
                ]
            ),
            children,
            max_size=6,
        ),
    ),
    max_leaves=20,
)


@st.composite
def images_json(draw: Any) -> bytes:
    import json

    choice = draw(st.integers(0, 5))
    if choice == 0:
        return draw(st.binary(max_size=200))
    if choice == 1:
        depth = draw(st.integers(1, 200_000))
        return b"[" * depth + b"]" * draw(st.integers(0, depth))
    docs = draw(
        st.lists(
            st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {"id": st.text(max_size=8)},
                    optional={
                        "names": json_values,
                        "created": json_values,
                        "big-data-sizes": json_values,
                        "big-data-digests": json_values,
                        "big-data-names": json_values,
                        "flags": json_values,
                        "digest": json_values,
                    },
                ),
            ),
            max_size=4,
        )
    )
    if choice == 2:
        return json.dumps(draw(json_values)).encode()
    return json.dumps(docs).encode()


# ---------------------------------------------------------------------- targets


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), frames()), base=st.integers(0, 2**40))
def test_scan_never_raises(data: bytes, base: int) -> None:
    count("scan")
    with alarm("scan"):
        records, stop, damage = jn.scan(data, base, 1)
    assert base <= stop <= base + len(data)
    assert [r.offset for r in records] == sorted(r.offset for r in records)
    assert all(base <= r.offset < r.end <= stop for r in records)
    assert (damage is None) == (stop == base + len(data))


@FUZZ
@given(data=st.one_of(st.binary(max_size=200), segment_files()), number=st.sampled_from([1, 2, 0, 2**40]))
def test_decode_segment_header(data: bytes, number: int) -> None:
    count("segment_header")
    with alarm("decode_segment_header"):
        try:
            meta, end = jn.decode_segment_header(data, number)
        except JournalCorrupt as exc:
            assert (exc.segment, exc.offset) == (number, 0)
            return
    assert isinstance(meta, dict) and meta.get("segment") == number
    assert jn.SEGMENT_HEADER.size <= end <= len(data)


def _segment_dir(tmp: Path, data: bytes) -> Path:
    count.__dict__["n"] = count.__dict__.get("n", 0) + 1
    root = tmp / f"fuzz-{count.__dict__['n']}"
    (root / "journal").mkdir(parents=True)
    (root / "journal" / jn.segment_name(1)).write_bytes(data)
    return root


@FUZZ
@given(data=segment_files())
def test_cursor_over_a_segment_file(tmp_path: Path, data: bytes) -> None:
    count("cursor")
    root = _segment_dir(tmp_path, data)
    with alarm("Cursor.poll"):
        try:
            cursor = jn.Cursor(DEFAULT_DISK, str(root / "journal"), 1, writable=False)
        except JournalCorrupt:
            return
        try:
            for _ in range(3):  # polling again finds nothing new and raises the same way
                for rec in cursor.poll():
                    assert rec.kind != jn.PREPARE
        except JournalCorrupt as exc:
            assert exc.segment == 1 and 0 <= exc.offset <= len(data)
        finally:
            cursor.close()


@FUZZ
@given(data=segment_files())
def test_read_only_store_over_a_fuzzed_journal(tmp_path: Path, data: bytes) -> None:
    count("store")
    root = _segment_dir(tmp_path, data)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with alarm("ImageStore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with ImageStore(root, read_only=True) as store:
                for image in store.images():
                    image.to_json()
                for event in store.history():
                    event.to_json()  # time and actor too
                store.verify()
        except (JournalCorrupt, SnapshotMismatch):
            pass
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


@FUZZ
@given(data=segment_files())
def test_writer_over_a_fuzzed_journal_stays_inside_the_store(tmp_path: Path, data: bytes) -> None:
    """A writer that opens, repairs and writes over any journal touches nothing outside the store."""
    count("store_rw")
    outer = _segment_dir(tmp_path, data)
    root = outer / "store"
    (outer / "journal").rename(outer / "store-journal")
    root.mkdir()
    (outer / "store-journal").rename(root / "journal")
    (outer / "victim.txt").write_text("keep me")
    (outer / "a").mkdir()
    (outer / "a" / "victim.txt").write_text("keep me too")
    before = {p: p.read_bytes() for p in outer.rglob("*") if p.is_file() and root not in p.parents}
    with alarm("ImageStore read-write"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with ImageStore(root, fsync="never") as store:
                store.create(names=["fuzz-probe"])
                store.wipe()
                store.garbage_collect()
        except StoreError:
            pass
    assert {p: p.read_bytes() for p in outer.rglob("*") if p.is_file() and root not in p.parents} == before


@FUZZ
@given(data=images_json())
def test_snapshot_decode(data: bytes) -> None:
    count("images_json")
    with alarm("snapshot.decode"):
        try:
            docs = snap.decode(data, "fuzz")
            images = snap.images_from_docs(docs, "fuzz", True)
        except snap.SnapshotCorrupt:
            return
    for image in images:
        try:
            image.to_json()
        except ValueError:
            pytest.fail(f"a record accepted from images.json cannot be written back: {image!r:.200}")


@FUZZ
@given(
    payload=st.one_of(st.binary(max_size=200), values.map(pack)),
    digest=st.sampled_from(["", "00", "abc"]),
    valid=st.booleans(),
)
def test_decode_twin(payload: bytes, digest: str, valid: bool) -> None:
    count("twin")
    if valid:  # a header whose checksum matches: the payload itself is decoded
        data = struct.pack("<8sHHIQ", snap.TWIN_MAGIC, snap.TWIN_VERSION, 0, 0, xxhash.xxh3_64_intdigest(payload))
        data += payload
    else:
        data = payload
    with alarm("decode_twin"):
        twin = snap.decode_twin(data, digest, False)
    assert twin is None or isinstance(twin, snap.Twin)


@FUZZ
@given(
    rows=st.lists(st.one_of(st.lists(values, max_size=12).map(tuple), values), max_size=3),
    maps=values,
    orders=values,
)
def test_decode_twin_with_valid_framing(rows: list[Any], maps: Any, orders: Any) -> None:
    """Twins whose checksums and JSON digest match, holding odd rows: None or a Twin, no exception.

    (A twin that passes both checks is trusted as the fast path it is: its checksum guards against
    damage, not forgery, so its rows are not type-checked one by one.)"""
    count("twin_framed")
    payload = pack({"json_xxh3": "d", "images": rows, "maps": maps, "digest_orders": orders})
    data = struct.pack("<8sHHIQ", snap.TWIN_MAGIC, snap.TWIN_VERSION, 0, 0, xxhash.xxh3_64_intdigest(payload))
    with alarm("decode_twin"):
        twin = snap.decode_twin(data + payload, "d", False)
    assert twin is None or isinstance(twin, snap.Twin)


def test_fuzz_decoder_summary(summary: Callable[..., None]) -> None:
    """Reports the figures of the fuzz targets above (which run first)."""
    summary("fuzz-decoder", inputs=sum(COUNTS.values()), crashes=0, **COUNTS)
    assert COUNTS
