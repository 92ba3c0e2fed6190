"""Journal format 3: commits written in positional form (an array) into format-3 segments, maps
everywhere else; every reader sees the same records and events whichever form a record has."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgpack
import pytest

from journalstore import ImageStore, JournalCorrupt, StoreWarning
from journalstore import journal as jn
from journalstore.audit import Journal
from journalstore.fsio import DEFAULT_DISK

from .helpers import history_problems
from .test_snapshots import _store_with_copies

ID = "ab" * 32
COMMIT: dict[str, Any] = {
    "type": "commit",
    "seq": 7,
    "time": 1_796_450_163_613_282_457,
    "pid": 42,
    "uid": 1000,
    "actor": "ci",
    "events": [{"op": "add-names", "id": ID, "names": ["app:1"]}],
    "chain": 1,
}


def frames(*payloads: bytes) -> bytes:
    return b"".join(jn.encode_frame(p) for p in payloads)


def decoded_form(payload: bytes) -> type:
    return type(msgpack.unpackb(payload))


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"prev": {ID: [3, 1, 200]}},
        {"prev": {ID: [3, 1, 200]}, "kept": [[ID, "manifest", "sha256:" + "0" * 64]], "also": {ID: [0]}},
        {"kept": [[ID, "config", "sha256:" + "1" * 64]], "future-key": {"x": 1}},
    ],
)
def test_a_positional_commit_reads_back_as_the_same_map(extra: dict[str, Any]) -> None:
    body = {**COMMIT, **extra}
    array = jn.pack(body, positional=True)
    mapped = jn.pack(body)
    assert decoded_form(array) is list and decoded_form(mapped) is dict
    assert len(array) < len(mapped)
    assert jn.unpack(array) == jn.unpack(mapped)
    assert list(jn.unpack(array)) == list(body)  # the keys in the writer's order
    both, stop, damage = jn.scan(frames(array, mapped), 100, 3)
    assert damage is None and stop == 100 + len(frames(array, mapped))
    assert both[0].body == both[1].body == jn.unpack(mapped)


@pytest.mark.parametrize(
    "body",
    [
        {"type": "prepare", "seq": 3, "files": [[ID, "config", False, True]]},
        {"type": "end", "seq": 9, "next": 2, "snapshot": None},
        {k: v for k, v in COMMIT.items() if k != "chain"},  # format 1: no links
        {k: v for k, v in COMMIT.items() if k != "actor"},
        {k: v for k, v in COMMIT.items() if k != "type"},  # a commit by default, but not written so
    ],
)
def test_only_whole_commits_take_the_positional_form(body: dict[str, Any]) -> None:
    payload = jn.pack(body, positional=True)
    assert decoded_form(payload) is dict
    assert jn.unpack(payload) == jn.unpack(jn.pack(body))


def arrays() -> list[list[Any]]:
    good = msgpack.unpackb(jn.pack(COMMIT, positional=True))
    return [
        good[:-1],  # one value short
        [*good, None],  # one too many
        [*good[:-1], {"seq": 8}],  # the map of other keys restates a positional one
        [*good[:-1], {"type": "prepare"}],
        [*good[:-1], [1, 2]],  # not a map
        [],
    ]


@pytest.mark.parametrize("bad", arrays())
def test_a_malformed_positional_commit_is_damage_never_a_record(bad: list[Any]) -> None:
    good = jn.pack(COMMIT, positional=True)
    payload = msgpack.packb(bad)
    with pytest.raises(ValueError):
        jn.unpack(payload)
    data = frames(good, payload, good)
    for raw in (False, True):
        records, stop, damage, _ = jn.scan_batch(data, memoryview(data), 0, 0, 1, 128, raw=raw)
        assert len(records) == 1 and damage is not None
        assert damage.offset == stop == len(jn.encode_frame(good))
        assert damage.reason.startswith("undecodable payload")


def segment_version(path: Path) -> int:
    with open(path, "rb") as f:
        return int(jn.SEGMENT_HEADER.unpack_from(f.read(jn.SEGMENT_HEADER.size))[1])


def payload_forms(path: Path) -> list[tuple[str, type]]:
    """(record type, decoded msgpack type) of every frame of a segment file."""
    data = path.read_bytes()
    _meta, pos = jn.decode_segment_header(data, jn.parse_segment_name(path.name) or 0)
    out = []
    while pos < len(data):
        size = jn.FRAME_HEADER.unpack_from(data, pos)[1]
        value = msgpack.unpackb(data[pos + jn.FRAME_OVERHEAD : pos + jn.FRAME_OVERHEAD + size])
        kind = "commit" if isinstance(value, list) else str(value.get("type", "commit"))
        out.append((kind, type(value)))
        pos += jn.FRAME_OVERHEAD + size
    return out


def every_event(store: ImageStore) -> list[tuple[Any, ...]]:
    return [
        (e.seq, e.time_ns, e.time, e.actor, e.kind, e.image_id, dict(e.data), e.segment, e.offset)
        for e in store.history()
    ]


def events_from_maps(root: Path) -> list[tuple[Any, ...]]:
    """The same events built from the records as every other reader sees them (map form)."""
    journal = Journal(DEFAULT_DISK, str(root))
    out = []
    for rec in journal.records():
        body = rec.body
        for event in body["events"]:
            out.append((body["seq"], body["time"], body["pid"], body["uid"], body["actor"], event["op"],
                        event.get("id"), dict(event), rec.segment, rec.offset))  # fmt: skip
    return out


def flatten(events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [(s, ns, a.pid, a.uid, a.name, k, i, d, seg, off) for s, ns, _t, a, k, i, d, seg, off in events]


def test_a_format_2_segment_keeps_getting_maps_and_the_next_segment_gets_arrays(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:
        m.setattr(jn, "FORMAT_VERSION", 2)  # a store written by the previous release
        with ImageStore(store_dir, fsync="never", actor="old") as s:
            a = s.create(names=["a:1"], big_data=[("manifest", b"m0")])
            s.set_metadata(a.id, "before")
    journal = store_dir / "journal"
    first = journal / jn.segment_name(1)
    assert segment_version(first) == 2
    with ImageStore(store_dir, fsync="never", actor="new") as s:
        s.add_names(a.id, ["a:2"])
        s.set_big_data(a.id, "manifest", b"m1")  # a prepare, then a commit keeping the old bytes
        assert {form for _kind, form in payload_forms(first)} == {dict}  # readable by format 2
        s.compact()
        s.set_flag(a.id, "seen", 1)
        b = s.create(names=["b"])
        s.add_names(b.id, ["a:1"])  # takes a name from a
        s.delete(b.id)
    second = journal / jn.segment_name(2)
    assert segment_version(second) == 3
    forms = payload_forms(second)
    assert ("commit", list) in forms and all(form is dict for kind, form in forms if kind != "commit")
    with ImageStore(store_dir, read_only=True) as r:
        events = every_event(r)
        assert flatten(events) == events_from_maps(store_dir)
        assert {e[3].name for e in events} == {"old", "new"}
        assert history_problems(r, limit=100) == []
        assert r.at(3).big_data("a:2", "manifest") == b"m0"


@pytest.mark.parametrize("first_version", [2, 3])
def test_the_positional_reader_steps_over_copied_records_like_the_map_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_version: int
) -> None:
    """A background compaction copies the records after its snapshot, byte for byte, into the
    next segment: maps out of a format-2 segment, arrays out of a format-3 one."""
    root = tmp_path / "s"
    with monkeypatch.context() as m:
        m.setattr(jn, "FORMAT_VERSION", first_version)
        with ImageStore(root, fsync="never") as s:
            s.create(names=["first"])
    _store_with_copies(root)
    journal = root / "journal"
    assert segment_version(journal / jn.segment_name(2)) == 3
    seqs = [[r.seq for r in jn.scan(*_frames_of(journal / jn.segment_name(n)), n)[0]] for n in (1, 2)]
    copies = set(seqs[0]) & set(seqs[1])
    assert len(copies) >= 5
    forms = payload_forms(journal / jn.segment_name(2))
    copied_form = dict if first_version == 2 else list
    assert [form for _kind, form in forms[: len(copies)]] == [copied_form] * len(copies)
    assert forms[-1] == ("commit", list)
    with ImageStore(root, read_only=True) as r:
        events = every_event(r)
        assert flatten(events) == events_from_maps(root)
        assert [e[0] for e in events] == list(range(1, r.seq + 1))  # copies are not repeated
        assert history_problems(r, limit=100) == []
        report = r.verify()
        assert report.ok, report.problems
    # With segment 1 pruned, history starts at segment 2: its copies are its first records, read
    # in the same batch as the arrays after them.
    with ImageStore(root, fsync="never") as s:
        s.prune_journal(keep_segments=0)
    assert not (journal / jn.segment_name(1)).exists()
    with ImageStore(root, read_only=True) as r, pytest.warns(StoreWarning):
        events = every_event(r)
    assert flatten(events) == events_from_maps(root)
    assert [e[0] for e in events] == sorted(copies) + list(range(max(copies) + 1, r.seq + 1))


def _frames_of(path: Path) -> tuple[bytes, int]:
    data = path.read_bytes()
    _meta, start = jn.decode_segment_header(data, jn.parse_segment_name(path.name) or 0)
    return data[start:], start


def test_an_array_payload_that_is_not_a_commit_stops_the_reader(store_dir: Path) -> None:
    with ImageStore(store_dir, fsync="never") as s:
        s.create(names=["x"])
        s.create(names=["y"])
    segment = store_dir / "journal" / jn.segment_name(1)
    data = segment.read_bytes()
    _meta, start = jn.decode_segment_header(data, 1)
    size = jn.FRAME_HEADER.unpack_from(data, start)[1]
    first = msgpack.unpackb(data[start + jn.FRAME_OVERHEAD : start + jn.FRAME_OVERHEAD + size])
    assert isinstance(first, list)
    bad = msgpack.packb(first[:-1])  # checksum-valid, but not a positional commit
    with open(segment, "wb") as f:
        f.write(data[:start] + jn.encode_frame(bad) + data[start + jn.FRAME_OVERHEAD + size :])
    with pytest.raises(JournalCorrupt) as info, ImageStore(store_dir, read_only=True) as r:
        list(r.history())
    assert info.value.offset == start
    assert os.path.getsize(segment) == len(data) - size + len(bad)


def rewrite_first_commit(root: Path, change: Any) -> int:
    """Replace segment 1's first commit with `change(body)` (a checksum-valid frame); its offset."""
    segment = root / "journal" / jn.segment_name(1)
    data = segment.read_bytes()
    _meta, start = jn.decode_segment_header(data, 1)
    size = jn.FRAME_HEADER.unpack_from(data, start)[1]
    body = jn.unpack(data[start + jn.FRAME_OVERHEAD : start + jn.FRAME_OVERHEAD + size])
    payload = change(body)
    segment.write_bytes(data[:start] + jn.encode_frame(payload) + data[start + jn.FRAME_OVERHEAD + size :])
    return start


def malformed(field: str, value: Any, positional: bool) -> Any:
    def change(body: dict[str, Any]) -> bytes:
        body = dict(body)
        if field == "event":
            body["events"] = (value, *body["events"][1:])
        else:
            body[field] = value
        if positional:
            return msgpack.packb([body["seq"], body["time"], body["pid"], body["uid"], body["actor"],
                                  body["events"], body["chain"], body.get("prev"), None])  # fmt: skip
        return msgpack.packb(body)

    return change


@pytest.mark.parametrize("positional", [False, True])
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("time", "noon"),
        ("time", 1e30),
        ("time", float("nan")),
        ("time", None),
        ("pid", "me"),
        ("uid", [1]),
        ("event", 5),
        ("event", [1]),
    ],
)
def test_history_names_a_record_it_cannot_read(store_dir: Path, field: str, value: Any, positional: bool) -> None:
    """A checksum-valid record with fields of the wrong type, in a segment before the snapshot
    (which no open replays): history() raises JournalCorrupt at that record, never another error."""
    with ImageStore(store_dir, fsync="never") as s:
        s.create(names=["x"])
        s.create(names=["y"])
        s.compact()
        s.create(names=["z"])
    offset = rewrite_first_commit(store_dir, malformed(field, value, positional))
    with ImageStore(store_dir, read_only=True) as r:
        assert len(r) == 3  # the damaged record lies before the snapshot the store opens from
        with pytest.raises(JournalCorrupt) as info:
            for event in r.history():
                assert isinstance(event.time_ns, int)
                event.time, event.actor  # noqa: B018  # derived on demand: checked as well
        assert (info.value.segment, info.value.offset) == (1, offset)
