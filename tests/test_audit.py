"""The journal as an audit log: history, the store at any past record, verify and repair."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from journalstore import ImageStore, ImageUnknown, JournalCorrupt, StoreError, StoreIsReadOnly
from journalstore import journal as jn
from journalstore.audit import BigDataNotKept, HistoryPruned, repair, verify
from journalstore.fsio import DEFAULT_DISK


def docs(images: Any) -> list[dict[str, Any]]:
    return [i.to_json() for i in images]


def test_history_of_an_image_through_its_whole_life(store: ImageStore) -> None:
    a = store.create(names=["app:1"], layer="L")
    store.set_names(a.id, ["app:2", "app:latest"])  # renamed
    b = store.create(names=["other"])
    store.add_names(b.id, ["app:latest"])  # b takes a name from a
    store.set_big_data(a.id, "manifest", b"{}")
    store.set_metadata(b.id, "unrelated")
    store.delete(a.id)
    expected = [
        ("create", a.id),
        ("set-names", a.id),
        ("add-names", b.id),
        ("set-big-data", a.id),
        ("delete", a.id),
    ]
    assert [(e.kind, e.image_id) for e in store.history(a.id)] == expected
    # A deleted image can still be asked for by a name it once had.
    assert [(e.kind, e.image_id) for e in store.history("app:1")] == expected
    assert [(e.kind, e.image_id) for e in store.history("app:2")] == expected
    with pytest.raises(ImageUnknown):
        list(store.history("never-was"))
    # The name is held by b now: asking by it means b.
    assert [e.kind for e in store.history("app:latest")] == ["create", "add-names", "set-metadata"]


def test_event_fields(store_dir: Path) -> None:
    with ImageStore(store_dir, fsync="never", actor="ci-bot") as s:
        before = datetime.now(UTC)
        s.create(names=["x"])
        (event,) = list(s.history())
    assert event.seq == 1 and event.kind == "create" and event.data["names"] == ("x",)
    assert event.actor.name == "ci-bot" and event.actor.pid > 0
    assert event.time.tzinfo is not None and before - timedelta(seconds=5) < event.time < before + timedelta(seconds=5)
    as_json = event.to_json()
    assert as_json["actor"]["name"] == "ci-bot"
    assert as_json["data"] == {"created": list(event.data["created"]), "names": ["x"]}


def test_filters_since_until_kinds(store: ImageStore) -> None:
    for i in range(6):
        store.create(names=[f"n{i}"])
        store.set_metadata(f"n{i}", str(i))
    assert [e.seq for e in store.history(since=4, until=7)] == [4, 5, 6, 7]
    assert {e.kind for e in store.history(kinds=["set-metadata"])} == {"set-metadata"}
    assert len(list(store.history(kinds="create"))) == 6
    with pytest.raises(ValueError, match="unknown event kind"):
        list(store.history(kinds=["bogus"]))
    events = list(store.history())
    middle = events[5].time_ns
    cut = datetime.fromtimestamp(middle / 1e9, UTC) + timedelta(microseconds=1)
    assert all(e.time_ns <= cut.timestamp() * 1e9 + 1000 for e in store.history(until=cut))


def test_at_every_record_equals_the_live_state(store: ImageStore) -> None:
    seen: dict[int, list[dict[str, Any]]] = {0: []}

    def mark() -> None:
        seen[store.seq] = docs(store.images())

    a = store.create(names=["a"], big_data=[("manifest", b"1")])
    mark()
    store.add_names("a", ["a2"])
    mark()
    b = store.create(names=["b"], flags={"k": [1, 2]})
    mark()
    store.set_names(b.id, ["a2"])
    mark()
    store.compact()
    store.set_big_data(a.id, "manifest", b"2")
    mark()
    with store.batch():
        store.clear_flag(b.id, "k")
        store.add_mapped_top_layer(b.id, "M")
    mark()
    store.delete(a.id)
    mark()
    for seq, expected in seen.items():
        view = store.at(seq)
        assert view.seq == seq
        assert docs(view.images()) == expected, seq
    with pytest.raises(StoreError, match="does not exist yet"):
        store.at(store.seq + 1)


def test_at_a_datetime(store: ImageStore) -> None:
    store.create(names=["early"])
    time.sleep(0.01)
    middle = datetime.now(UTC)
    time.sleep(0.01)
    store.create(names=["late"])
    view = store.at(middle)
    assert [i.names for i in view.images()] == [("early",)]
    assert [i.names for i in store.at(datetime(2000, 1, 1, tzinfo=UTC)).images()] == []


def test_views_are_read_only_and_know_what_was_overwritten(store: ImageStore) -> None:
    a = store.create(names=["a"], big_data=[("manifest", b"one"), ("config", b"kept")])
    store.set_big_data(a.id, "manifest", b"two")
    old = store.at(1)
    assert old.big_data(a.id, "config") == b"kept"
    assert old.big_data_size(a.id, "manifest") == 3 and old.big_data_digest(a.id, "manifest")
    # The bytes an overwrite replaced are kept (journal/blobs) while the journal holds the record.
    assert old.big_data(a.id, "manifest") == b"one"
    store.compact()
    store.prune_journal(keep_segments=0)  # retention drops the record that replaced them
    dropped = r"overwritten or deleted after it; journal retention has dropped them .*starts at record 3"
    with pytest.raises(BigDataNotKept, match=dropped):
        old.big_data(a.id, "manifest")
    with pytest.raises(StoreIsReadOnly):
        old.create(names=["x"])
    with pytest.raises(StoreIsReadOnly):
        old.set_metadata(a.id, "x")
    assert old.get("a").id == a.id and old.exists(a.id[:10]) and old.by_digest(a.digest)


def test_pruned_history_says_where_it_starts(store_dir: Path) -> None:
    with ImageStore(store_dir, fsync="never") as s:
        for i in range(4):
            s.create(names=[f"n{i}"])
            s.compact()
        s.create(names=["last"])
        s.prune_journal(keep_segments=1)
        assert s.history_start == 4
        with pytest.raises(HistoryPruned) as exc:
            s.at(1)
        assert exc.value.first_seq == 3
        with pytest.raises(HistoryPruned, match="available from"):
            list(s.history(since=2))
        with pytest.warns(UserWarning, match="pruned"):
            assert [e.seq for e in s.history()] == [4, 5]
        assert [i.names for i in s.at(3).images()] == [("n0",), ("n1",), ("n2",)]


def test_verify_catches_a_flipped_bit_and_names_its_offset(store_dir: Path) -> None:
    with ImageStore(store_dir, fsync="never") as s:
        for i in range(5):
            s.create(names=[f"n{i}"])
        s.compact()
        for i in range(5):
            s.set_metadata(f"n{i}", "m")
        report = s.verify()
    assert report.ok and report.segments == 2 and report.records == 10 and report.snapshots == 1
    seg = store_dir / "journal" / jn.segment_name(2)
    data = bytearray(seg.read_bytes())
    _, start = jn.decode_segment_header(bytes(data), 2)
    records, _, _ = jn.scan(bytes(data[start:]), start)
    target = records[1]
    data[target.offset + 20] ^= 0x01
    seg.write_bytes(bytes(data))
    report = verify(str(store_dir), DEFAULT_DISK)
    assert not report.ok
    assert report.damage == [(2, target.offset)]
    assert str(target.offset) in report.problems[0]


def test_repair_cuts_only_at_a_record_boundary_and_keeps_a_copy(store_dir: Path) -> None:
    with ImageStore(store_dir, fsync="never") as s:
        for i in range(4):
            s.create(names=[f"n{i}"])
    seg = store_dir / "journal" / jn.segment_name(1)
    data = seg.read_bytes()
    _, start = jn.decode_segment_header(data, 1)
    records, _, _ = jn.scan(data[start:], start)
    damaged = bytearray(data)
    damaged[records[1].offset + 20] ^= 0x01
    seg.write_bytes(bytes(damaged))
    with pytest.raises(JournalCorrupt) as exc:
        ImageStore(store_dir, read_only=True)
    with pytest.raises(StoreError, match="not the end of a whole record"):
        repair(str(store_dir), DEFAULT_DISK, exc.value.offset + 3)
    copy, cut = repair(str(store_dir), DEFAULT_DISK, exc.value.offset)
    assert cut == len(data) - records[1].offset
    assert Path(copy).read_bytes() == bytes(damaged[records[1].offset :])
    with ImageStore(store_dir, read_only=True) as r:
        assert [i.names for i in r.images()] == [("n0",)]
