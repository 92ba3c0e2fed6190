"""SPEC §1–§3 and §8 and the core issue's "Details users will rely on", one focused test each.

Most tests also run the same calls on the in-memory model (tests/model.py) and compare, so the
expected values are written once, in the model, and SPEC's own examples are checked verbatim.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from journalstore import Image, ImageStore
from journalstore.errors import (
    BigDataUnknown,
    DigestUnknown,
    DuplicateID,
    DuplicateName,
    ImageUnknown,
    InvalidBigDataName,
    InvalidDigest,
    InvalidID,
    JournalCorrupt,
    SizeUnknown,
    StoreError,
    StoreIsReadOnly,
)

from .helpers import tree_bytes, tree_stat
from .model import ImageModel, canonical, diff_snapshots, snapshot_of_store

ID_A = "a" * 64
ID_B = "b" * 64
ID_C = "c" * 64


def hexid(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def open_rw(path: Path, **kw: Any) -> ImageStore:
    return ImageStore(path, fsync="never", **kw)


def assert_same(model: ImageModel, store: ImageStore) -> None:
    expected, actual = model.snapshot(), snapshot_of_store(store, model.by_digest_lists)
    assert expected == actual, diff_snapshots(expected, actual)


# ============================================================================ names and history


class TestNamesHistory:
    """SPEC §3's names/history cases, exactly as written there."""

    def test_add_example_from_spec(self, store: ImageStore) -> None:
        # "after add of [5] on an image named [1,2,3,4] with history [4,3,2,1] the names are
        # [5,1,2,3,4] and the history [4,3,2,1,5]"
        store.create(ID_A, names=["1", "2", "3", "4"], names_history=["4", "3", "2", "1"])
        store.add_names(ID_A, ["5"])
        image = store.get(ID_A)
        assert image.names == ("5", "1", "2", "3", "4")
        assert image.names_history == ("4", "3", "2", "1", "5")

    def test_add_example_reached_through_set_names(self, store: ImageStore) -> None:
        store.create(ID_A)
        store.set_names(ID_A, ["1", "2", "3", "4"])
        assert store.get(ID_A).names_history == ("4", "3", "2", "1")
        store.add_names(ID_A, ["5"])
        assert store.get(ID_A).names == ("5", "1", "2", "3", "4")
        assert store.get(ID_A).names_history == ("4", "3", "2", "1", "5")

    def test_remove_example_from_spec(self, store: ImageStore) -> None:
        # "removing 2 from names [1,2,3] with history [3,2,1] gives history [3,1,2]"
        store.create(ID_A, names=["1", "2", "3"], names_history=["3", "2", "1"])
        store.remove_names(ID_A, ["2"])
        image = store.get(ID_A)
        assert image.names == ("1", "3")
        assert image.names_history == ("3", "1", "2")

    def test_set_replaces_old_names(self, store: ImageStore) -> None:
        store.create(ID_A, names=["a", "b"])
        store.set_names(ID_A, ["c", "a", "c"])
        image = store.get(ID_A)
        assert image.names == ("c", "a")
        assert image.names_history == ("a", "c")
        assert not store.exists("b")

    def test_add_puts_new_names_first_deduplicated(self, store: ImageStore) -> None:
        store.create(ID_A, names=["a", "c"])
        store.add_names(ID_A, ["b", "a", "b"])
        assert store.get(ID_A).names == ("b", "a", "c")
        assert store.get(ID_A).names_history == ("c", "a", "b")

    def test_remove_keeps_the_others_in_order(self, store: ImageStore) -> None:
        store.create(ID_A, names=["n-a", "n-b", "n-c", "n-d"])
        store.remove_names(ID_A, ["n-c", "n-a", "zzz"])
        assert store.get(ID_A).names == ("n-b", "n-d")
        assert not store.exists("n-a")

    @pytest.mark.parametrize("op", ["set_names", "add_names"])
    def test_a_name_another_image_holds_moves(self, store: ImageStore, op: str) -> None:
        store.create(ID_A, names=["shared", "a-only"])
        store.create(ID_B, names=["b-only"])
        store.set_names(ID_A, ["shared", "a-only"])  # puts both into A's history
        getattr(store, op)(ID_B, ["shared"])
        assert store.get("shared").id == ID_B
        assert store.get(ID_A).names == ("a-only",)
        assert "shared" in store.get(ID_A).names_history  # the loser keeps it in its history
        assert "shared" in store.get(ID_B).names

    def test_create_does_not_touch_history(self, store: ImageStore) -> None:
        image = store.create(ID_A, names=["x", "y"])
        assert image.names_history == ()
        image = store.create(ID_B, names=["z"], names_history=["old2", "old1"])
        assert image.names_history == ("old2", "old1")

    def test_create_deduplicates_names_in_order(self, store: ImageStore) -> None:
        assert store.create(ID_A, names=["b", "a", "b", "c", "a"]).names == ("b", "a", "c")

    def test_names_operation_leaves_no_duplicate_in_history(self, store: ImageStore) -> None:
        store.create(ID_A, names=["x"], names_history=["h", "h", "x"])
        store.add_names(ID_A, ["z"])
        # Go: push z -> [z,h,x]; push x -> [x,z,h]
        assert store.get(ID_A).names_history == ("x", "z", "h")

    def test_create_history_has_no_duplicates(self, store: ImageStore) -> None:
        try:
            image = store.create(ID_A, names_history=["h", "g", "h"])
        except StoreError as exc:  # refusing the duplicates would honour SPEC too
            assert isinstance(exc, ValueError)
            return
        assert image.names_history == ("h", "g")

    def test_model_agrees_on_a_names_sequence(self, store: ImageStore) -> None:
        model = ImageModel()
        calls: list[tuple[str, tuple[Any, ...]]] = [
            ("create", (ID_A, ["n1", "n2"], "", 0)),
            ("create", (ID_B, ["n3"], "", 0)),
            ("add_names", (ID_B, ["n1", "n4"])),
            ("set_names", (ID_A, ["n4", "n5", "n3"])),
            ("remove_names", (ID_B, ["n1"])),
            ("add_names", (ID_A, ["n1", "n2", "n5"])),
            ("set_names", (ID_B, [])),
        ]
        for name, args in calls:
            if name == "create":
                model.create(*args[:3], created=args[3])
                store.create(*args[:3], created=args[3])
            else:
                getattr(model, name)(*args)
                getattr(store, name)(*args)
            assert_same(model, store)


# ============================================================================ errors


def populated(store: ImageStore) -> None:
    store.create(ID_A, names=["a:1", "a:2"], layer="L", big_data=[("manifest", b"m-a"), ("config", b"c-a")])
    store.create(ID_B, names=["b:1"], digest=sha(b"digest-b"), flags={"f": 1})
    store.add_mapped_top_layer(ID_A, "M1")


class TestErrors:
    @pytest.mark.parametrize(
        "call",
        [
            lambda s: s.get("nope"),
            lambda s: s.metadata("nope"),
            lambda s: s.big_data("nope", "manifest"),
            lambda s: s.big_data_size("nope", "manifest"),
            lambda s: s.big_data_digest("nope", "manifest"),
            lambda s: s.big_data_names("nope"),
            lambda s: s.set_names("nope", ["x"]),
            lambda s: s.add_names("nope", ["x"]),
            lambda s: s.remove_names("nope", ["x"]),
            lambda s: s.delete("nope"),
            lambda s: s.set_metadata("nope", "m"),
            lambda s: s.set_flag("nope", "k", 1),
            lambda s: s.clear_flag("nope", "k"),
            lambda s: s.set_big_data("nope", "k", b"x"),
            lambda s: s.add_mapped_top_layer("nope", "L"),
            lambda s: s.remove_mapped_top_layer("nope", "L"),
        ],
    )
    def test_unknown_reference_is_image_unknown(self, store: ImageStore, call: Callable[[ImageStore], Any]) -> None:
        populated(store)
        with pytest.raises(ImageUnknown) as info:
            call(store)
        assert isinstance(info.value, KeyError)
        assert isinstance(info.value, StoreError)
        assert not store.exists("nope")

    def test_duplicate_id_and_name(self, store: ImageStore) -> None:
        populated(store)
        with pytest.raises(DuplicateID):
            store.create(ID_A)
        with pytest.raises(DuplicateName):
            store.create(ID_C, names=["fresh", "b:1"])
        assert not store.exists(ID_C)
        assert not store.exists("fresh")

    def test_missing_big_data_key_is_big_data_unknown_not_image_unknown(self, store: ImageStore) -> None:
        populated(store)
        with pytest.raises(BigDataUnknown) as info:
            store.big_data(ID_A, "no-such-key")
        exc = info.value
        assert isinstance(exc, StoreError)
        assert isinstance(exc, KeyError)
        assert not isinstance(exc, ImageUnknown)
        with pytest.raises(BigDataUnknown):
            store.big_data(ID_B, "manifest")  # an image with no big data at all

    def test_missing_digest_and_size(self, store: ImageStore) -> None:
        populated(store)
        with pytest.raises(DigestUnknown):
            store.big_data_digest(ID_A, "no-such-key")
        with pytest.raises(SizeUnknown):
            store.big_data_size(ID_A, "no-such-key")
        assert store.big_data_size(ID_A, "manifest") == 3
        assert store.big_data_digest(ID_A, "manifest") == sha(b"m-a")

    def test_big_data_of_image_deleted_by_another_instance(self, store_dir: Path) -> None:
        with open_rw(store_dir) as writer, open_rw(store_dir) as reader:
            writer.create(ID_A, big_data=[("k", b"bytes")])
            assert reader.big_data(ID_A, "k") == b"bytes"
            writer.delete(ID_A)
            with pytest.raises(ImageUnknown):
                reader.big_data(ID_A, "k")

    @pytest.mark.parametrize(
        "bad_id",
        [
            "",
            "a/b",
            "/abs",
            "nul\x00id",
            ".",
            "..",
            "x" * 256,
            "é" * 128,  # 256 bytes in UTF-8
            "\ud800",
            "lone\udfffsurrogate",
            "images.json",
            "images.lock",
            "journal",
        ],
    )
    def test_invalid_ids(self, store: ImageStore, bad_id: str) -> None:
        with pytest.raises(InvalidID) as info:
            store.create(bad_id)
        assert isinstance(info.value, ValueError)
        assert store.images() == []

    @pytest.mark.parametrize("good_id", ["x" * 255, "é" * 127, "...", "images.json2", "Journal", "a b"])
    def test_ids_at_the_limits_are_accepted(self, store: ImageStore, good_id: str) -> None:
        image = store.create(good_id, big_data=[("k", b"v")])
        assert store.get(good_id).id == good_id == image.id
        assert store.big_data(good_id, "k") == b"v"

    def test_id_none_generates_one(self, store: ImageStore) -> None:
        ids = {store.create().id for _ in range(20)}
        assert len(ids) == 20
        for image_id in ids:
            assert len(image_id) == 64
            assert set(image_id) <= set("0123456789abcdef")
            assert not image_id[:12].isdigit()

    @pytest.mark.parametrize(
        "call",
        [
            lambda s: s.create(ID_C, names=[1]),
            lambda s: s.create(ID_C, names=["ok", None]),
            lambda s: s.create(ID_C, names=["\ud800"]),
            lambda s: s.set_names(ID_A, [b"bytes"]),
            lambda s: s.add_names(ID_A, [3.5]),
            lambda s: s.remove_names(ID_A, [("t",)]),
            lambda s: s.add_names(ID_A, ["bad\udcff"]),
        ],
    )
    def test_bad_names_are_value_errors(self, store: ImageStore, call: Callable[[ImageStore], Any]) -> None:
        populated(store)
        before = snapshot_of_store(store)
        with pytest.raises(StoreError) as info:
            call(store)
        assert isinstance(info.value, ValueError)
        assert snapshot_of_store(store) == before

    @pytest.mark.parametrize(
        "value",
        [
            object(),
            {1, 2},
            frozenset(),
            b"bytes",
            bytearray(b"x"),
            float("nan"),
            float("inf"),
            float("-inf"),
            {1: "int key"},
            {"ok": {2: "nested int key"}},
            2**64,
            -(2**63) - 1,
            [1, [2, {"x": {3}}]],
            {"x": "\ud800"},
            1 + 2j,
        ],
        ids=repr,
    )
    def test_bad_flag_values_are_value_errors(self, store: ImageStore, value: Any) -> None:
        populated(store)
        before = snapshot_of_store(store)
        with pytest.raises(StoreError) as info:
            store.set_flag(ID_A, "f", value)
        assert isinstance(info.value, ValueError)
        with pytest.raises(StoreError) as info:
            store.create(ID_C, flags={"f": value})
        assert isinstance(info.value, ValueError)
        assert snapshot_of_store(store) == before

    @pytest.mark.parametrize(
        "value",
        [
            None,
            True,
            False,
            0,
            -(2**63),
            2**63 - 1,
            1.5,
            -0.25,
            1e300,
            "",
            "text é \u2028",
            [],
            {},
            [1, "a", None],
            {"a": {"b": [1, 2.5, False]}, "z": None},
        ],
        ids=repr,
    )
    def test_good_flag_values_round_trip(self, store_dir: Path, value: Any) -> None:
        with open_rw(store_dir) as s:
            s.create(ID_A, flags={"at-create": value})
            s.set_flag(ID_A, "later", value)
            assert s.get(ID_A).to_json()["flags"] == {"at-create": value, "later": value}
            s.compact()
        with ImageStore(store_dir, read_only=True) as ro:
            flags = ro.get(ID_A).to_json()["flags"]
            assert canonical(flags) == canonical({"at-create": value, "later": value})

    def test_invalid_digests(self, store: ImageStore) -> None:
        populated(store)
        for bad in ["sha256:xyz", "sha256:" + "A" * 64, "md5:" + "0" * 32, "nocolon", "sha256:" + "0" * 63]:
            with pytest.raises(InvalidDigest):
                store.create(ID_C, digest=bad)
            with pytest.raises(InvalidDigest):
                store.create(ID_C, big_data=[("manifest", b"x", bad)])
            with pytest.raises(InvalidDigest):
                store.set_big_data(ID_A, "manifest", b"x", digest_manifest=lambda _d, bad=bad: bad)
        assert not store.exists(ID_C)
        assert store.big_data(ID_A, "manifest") == b"m-a"
        for good in ["sha384:" + "1" * 96, "sha512:" + "2" * 128]:
            store.create(hexid(good), digest=good)
            assert [i.id for i in store.by_digest(good)] == [hexid(good)]

    def test_invalid_big_data_names(self, store: ImageStore) -> None:
        populated(store)
        with pytest.raises(InvalidBigDataName) as info:
            store.set_big_data(ID_A, "", b"x")
        assert isinstance(info.value, ValueError)
        with pytest.raises(InvalidBigDataName):
            store.create(ID_C, big_data=[("", b"x")])
        for read in (store.big_data, store.big_data_size, store.big_data_digest):
            with pytest.raises(InvalidBigDataName):
                read(ID_A, "")
        # the file name may be 255 bytes, not more: a plain key is its own name ...
        with pytest.raises(InvalidBigDataName):
            store.set_big_data(ID_A, "a" * 256, b"x")
        store.set_big_data(ID_A, "a" * 255, b"x")
        # ... any other key is "=" + base64: 190 bytes -> 1 + 256 characters, 189 -> 1 + 252
        with pytest.raises(InvalidBigDataName):
            store.set_big_data(ID_A, "A" * 190, b"x")
        store.set_big_data(ID_A, "A" * 189, b"y")
        assert store.big_data(ID_A, "A" * 189) == b"y"
        assert not store.exists(ID_C)

    @pytest.mark.parametrize(
        "call",
        [
            lambda p: ImageStore(None),  # type: ignore[arg-type]
            lambda p: ImageStore(123),  # type: ignore[arg-type]
            lambda p: open_rw(p).set_big_data(ID_A, "k", 5),
            lambda p: open_rw(p).set_big_data(ID_A, "k", "text"),
            lambda p: open_rw(p).create(ID_C, big_data=[("k", 5)]),
        ],
    )
    def test_wrong_types_are_type_errors(self, store_dir: Path, call: Callable[[Path], Any]) -> None:
        with open_rw(store_dir) as s:
            populated(s)
        with pytest.raises(TypeError):
            call(store_dir)

    def test_journal_corrupt_has_segment_and_offset_inside_the_record(self, store_dir: Path) -> None:
        spans = []
        with open_rw(store_dir) as s:
            for i in range(4):
                before = s.position
                s.create(hexid(f"img{i}"), names=[f"n{i}"], metadata="m" * 50)
                spans.append((before, s.position))
        (seg, start), (seg2, end) = spans[1]
        assert seg == seg2
        segment_file = next(p for p in (store_dir / "journal").iterdir() if p.name.startswith("segment-"))
        data = bytearray(segment_file.read_bytes())
        data[(start + end) // 2] ^= 0xFF
        segment_file.write_bytes(bytes(data))
        with pytest.raises(JournalCorrupt) as info:
            ImageStore(store_dir, read_only=True)
        assert info.value.segment == seg
        assert isinstance(info.value.offset, int)
        assert start <= info.value.offset < end
        with pytest.raises(JournalCorrupt):
            open_rw(store_dir)


# ============================================================================ rejected calls change nothing


REJECTED_CALLS: list[tuple[str, Callable[[ImageStore], Any], type[BaseException]]] = [
    ("duplicate id", lambda s: s.create(ID_A), DuplicateID),
    ("duplicate name", lambda s: s.create(ID_C, names=["new", "a:1"], big_data=[("k", b"v")]), DuplicateName),
    ("empty id", lambda s: s.create(""), InvalidID),
    ("slash id", lambda s: s.create("x/y", big_data=[("k", b"v")]), InvalidID),
    ("reserved id", lambda s: s.create("images.json"), InvalidID),
    ("long id", lambda s: s.create("x" * 256), InvalidID),
    ("surrogate id", lambda s: s.create("\udc80"), InvalidID),
    ("bad digest", lambda s: s.create(ID_C, digest="sha256:xyz"), InvalidDigest),
    ("bad item digest", lambda s: s.create(ID_C, big_data=[("manifest", b"x", "sha256:1")]), InvalidDigest),
    ("bad flag at create", lambda s: s.create(ID_C, flags={"x": {1, 2}}), ValueError),
    ("bad flag", lambda s: s.set_flag(ID_A, "x", float("nan")), ValueError),
    ("flag int too big", lambda s: s.set_flag(ID_A, "x", 2**64), ValueError),
    ("non-string name", lambda s: s.add_names(ID_A, [42]), ValueError),
    ("unknown ref names", lambda s: s.set_names("nope", ["a"]), ImageUnknown),
    ("unknown ref delete", lambda s: s.delete("nope"), ImageUnknown),
    ("unknown ref metadata", lambda s: s.set_metadata("nope", "m"), ImageUnknown),
    ("unknown ref big data", lambda s: s.set_big_data("nope", "k", b"v"), ImageUnknown),
    ("unknown ref layer", lambda s: s.add_mapped_top_layer("nope", "L"), ImageUnknown),
    ("ambiguous prefix", lambda s: s.delete("a"), None),  # only ImageUnknown if "a" is ambiguous
    ("empty key", lambda s: s.set_big_data(ID_A, "", b"v"), InvalidBigDataName),
    ("long key", lambda s: s.set_big_data(ID_A, "k" * 256, b"v"), InvalidBigDataName),
    ("int bytes", lambda s: s.set_big_data(ID_A, "manifest", 5), TypeError),
    ("int bytes at create", lambda s: s.create(ID_C, big_data=[("k", b"ok"), ("j", 7)]), TypeError),
    ("bad manifest digest", lambda s: s.set_big_data(ID_A, "manifest", b"n", lambda d: "sha256:no"), InvalidDigest),
    ("empty key at create", lambda s: s.create(ID_C, big_data=[("k", b"v"), ("", b"w")]), InvalidBigDataName),
]


@pytest.mark.parametrize(("label", "call", "error"), REJECTED_CALLS, ids=[c[0] for c in REJECTED_CALLS])
def test_rejected_call_leaves_every_file_byte_identical(
    store_dir: Path, label: str, call: Callable[[ImageStore], Any], error: type[BaseException] | None
) -> None:
    with open_rw(store_dir) as s:
        populated(s)
        s.create(ID_A[:-1] + "0", names=["a-prefix-twin"])  # makes the prefix "a" ambiguous
        before_files = tree_bytes(store_dir)
        before_state = snapshot_of_store(s)
        before_position = s.position
        with pytest.raises(error or ImageUnknown):
            call(s)
        assert tree_bytes(store_dir) == before_files
        assert snapshot_of_store(s) == before_state
        assert s.position == before_position
    with ImageStore(store_dir, read_only=True) as ro:
        assert snapshot_of_store(ro) == before_state


def test_rejected_call_inside_a_batch_changes_nothing_and_the_batch_goes_on(store_dir: Path) -> None:
    with open_rw(store_dir) as s:
        populated(s)
        with s.batch():
            s.create(ID_C, names=["c:1"])
            with pytest.raises(DuplicateName):
                s.create(hexid("x"), names=["new", "a:1"], big_data=[("k", b"v")])
            with pytest.raises(InvalidBigDataName):
                s.set_big_data(ID_C, "", b"v")
            s.set_big_data(ID_C, "k", b"kept")
        assert not s.exists(hexid("x"))
        assert not s.exists("new")
        assert s.big_data(ID_C, "k") == b"kept"
        assert s.get("a:1").id == ID_A
    assert not (store_dir / hexid("x")).exists()


# ============================================================================ read-only stores


def _run_batch(s: ImageStore) -> None:
    with s.batch():
        s.create(ID_C)


WRITES: list[tuple[str, Callable[[ImageStore], Any]]] = [
    ("create", lambda s: s.create(ID_C)),
    ("create-generated", lambda s: s.create()),
    ("set_names", lambda s: s.set_names(ID_A, ["x"])),
    ("add_names", lambda s: s.add_names(ID_A, ["x"])),
    ("remove_names", lambda s: s.remove_names(ID_A, ["a:1"])),
    ("delete", lambda s: s.delete(ID_A)),
    ("wipe", lambda s: s.wipe()),
    ("set_metadata", lambda s: s.set_metadata(ID_A, "m")),
    ("set_flag", lambda s: s.set_flag(ID_A, "k", 1)),
    ("clear_flag", lambda s: s.clear_flag(ID_B, "f")),
    ("set_big_data", lambda s: s.set_big_data(ID_A, "manifest", b"new")),
    ("add_mapped_top_layer", lambda s: s.add_mapped_top_layer(ID_A, "L")),
    ("remove_mapped_top_layer", lambda s: s.remove_mapped_top_layer(ID_A, "M1")),
    ("garbage_collect", lambda s: s.garbage_collect()),
    ("compact", lambda s: s.compact()),
    ("batch", lambda s: s.batch().__enter__()),
    ("batch-block", _run_batch),
]


@pytest.mark.parametrize(("label", "call"), WRITES, ids=[w[0] for w in WRITES])
def test_read_only_store_refuses_every_write(store_dir: Path, label: str, call: Callable[[ImageStore], Any]) -> None:
    with open_rw(store_dir) as s:
        populated(s)
        os.mkdir(store_dir / hexid("orphan"))  # something garbage_collect would remove
    before = tree_stat(store_dir)
    with ImageStore(store_dir, read_only=True) as ro:
        state = snapshot_of_store(ro)
        with pytest.raises(StoreIsReadOnly):
            call(ro)
        assert snapshot_of_store(ro) == state
    assert tree_stat(store_dir) == before


def _read_everything(store: ImageStore) -> None:
    for image in store.images():
        store.get(image.id)
        store.exists(image.id[:6])
        store.metadata(image.id)
        for key in store.big_data_names(image.id):
            store.big_data(image.id, key)
            store.big_data_size(image.id, key)
            store.big_data_digest(image.id, key)
        for d in image.digests:
            store.by_digest(d)
    store.refresh()
    _ = store.position


@pytest.mark.parametrize("compacted", [False, True])
def test_read_only_open_changes_nothing_in_a_journal_store(store_dir: Path, compacted: bool) -> None:
    with open_rw(store_dir) as s:
        populated(s)
        s.set_big_data(ID_B, "manifest", b"m-b")
        if compacted:
            s.compact()
            s.set_metadata(ID_A, "after the snapshot")
    before = tree_stat(store_dir)
    with ImageStore(store_dir, read_only=True) as ro:
        _read_everything(ro)
        assert tree_stat(store_dir) == before
    assert tree_stat(store_dir) == before


def test_read_only_open_changes_nothing_with_a_torn_tail(store_dir: Path) -> None:
    with open_rw(store_dir) as s:
        populated(s)
    segment = store_dir / "journal" / "segment-00000001"
    with open(segment, "ab") as f:
        f.write(b"\xabJR\x01\x40\x00\x00\x00garbage")  # a frame header whose payload never came
    before = tree_stat(store_dir)
    with ImageStore(store_dir, read_only=True) as ro:
        _read_everything(ro)
        assert len(ro.images()) == 2
    assert tree_stat(store_dir) == before


def test_read_only_open_changes_nothing_in_a_containers_storage_dir(fixture_copy: Path) -> None:
    before = tree_stat(fixture_copy)
    with ImageStore(fixture_copy, read_only=True) as ro:
        _read_everything(ro)
        assert len(ro.images()) == 6
        for name in ("garbage_collect", "compact"):
            with pytest.raises(StoreIsReadOnly):
                getattr(ro, name)()
    assert tree_stat(fixture_copy) == before


# ============================================================================ batch


class TestBatch:
    def test_reads_inside_see_pending_writes(self, store: ImageStore) -> None:
        populated(store)
        model = ImageModel.from_images_json([i.to_json() for i in store.images()])
        for image in store.images():
            for key in image.big_data_names:
                model.data[(image.id, key)] = store.big_data(image.id, key)
        with store.batch():
            store.create(ID_C, names=["c:1"], big_data=[("manifest", b"m-c")])
            model.create(ID_C, names=["c:1"], created=store.get(ID_C).created_ns, big_data=[("manifest", b"m-c")])
            store.set_big_data(ID_A, "manifest", b"overwritten")
            model.set_big_data(ID_A, "manifest", b"overwritten")
            store.add_names(ID_C, ["a:1"])
            model.add_names(ID_C, ["a:1"])
            store.delete(ID_B)
            model.delete(ID_B)
            assert store.big_data(ID_C, "manifest") == b"m-c"
            assert store.big_data(ID_A, "manifest") == b"overwritten"
            assert store.big_data_size(ID_A, "manifest") == len(b"overwritten")
            assert store.get("a:1").id == ID_C
            assert not store.exists(ID_B)
            assert [i.id for i in store.by_digest(sha(b"m-c"))] == [ID_C]
            assert_same(model, store)
        assert_same(model, store)
        assert store.big_data(ID_A, "manifest") == b"overwritten"

    def test_other_instances_see_nothing_until_the_block_ends(self, store_dir: Path) -> None:
        with open_rw(store_dir) as s, open_rw(store_dir) as other:
            populated(s)
            other.refresh()
            before = snapshot_of_store(other)
            with s.batch():
                s.create(ID_C, names=["c:1"], big_data=[("k", b"v")])
                s.set_metadata(ID_A, "changed")
                s.delete(ID_B)
                assert other.refresh() is False
                assert snapshot_of_store(other) == before
                with ImageStore(store_dir, read_only=True) as fresh:
                    assert snapshot_of_store(fresh) == before
            assert other.refresh() is True
            assert snapshot_of_store(other) == snapshot_of_store(s)
            assert other.big_data(ID_C, "k") == b"v"

    def test_batch_is_one_record(self, store: ImageStore) -> None:
        populated(store)
        seq = store.seq
        with store.batch():
            for i in range(5):
                store.create(hexid(f"batch{i}"), names=[f"batch{i}"])
        assert store.seq == seq + 1

    def test_aborted_batch_leaves_every_file_as_it_was(self, store_dir: Path) -> None:
        with open_rw(store_dir) as s:
            populated(s)
            files = tree_bytes(store_dir)
            state = snapshot_of_store(s)
            position = s.position
            with pytest.raises(RuntimeError, match="abort"), s.batch():
                s.set_big_data(ID_A, "manifest", b"overwritten")
                s.set_big_data(ID_A, "new-key", b"new")
                s.create(ID_C, names=["c:1"], big_data=[("k", b"v")])
                s.delete(ID_B)
                s.delete(ID_A)
                s.add_names(ID_C, ["b:1"])
                s.set_flag(ID_C, "x", [1])
                raise RuntimeError("abort")
            assert tree_bytes(store_dir) == files
            assert (store_dir / ID_A).is_dir()  # the directory of an image deleted in the block stays
            assert s.big_data(ID_A, "manifest") == b"m-a"  # overwritten big data keeps its old bytes
            assert snapshot_of_store(s) == state
            assert s.position == position
            s.create(ID_C)  # and the store goes on working
        with ImageStore(store_dir, read_only=True) as ro:
            assert [i.id for i in ro.images()] == [ID_A, ID_B, ID_C]

    def test_aborted_batch_that_deleted_and_recreated_an_id(self, store_dir: Path) -> None:
        with open_rw(store_dir) as s:
            populated(s)
            s.create(ID_C)
            order = [i.id for i in s.images()]
            state = snapshot_of_store(s)
            files = tree_bytes(store_dir)
            with pytest.raises(KeyboardInterrupt), s.batch():
                s.delete(ID_A)
                s.create(ID_A, names=["a:1"], big_data=[("manifest", b"again")])
                raise KeyboardInterrupt
            assert [i.id for i in s.images()] == order
            assert snapshot_of_store(s) == state
            assert tree_bytes(store_dir) == files
            assert s.big_data(ID_A, "manifest") == b"m-a"


# ============================================================================ refresh and position


def test_refresh_true_only_for_other_instances_records(store_dir: Path) -> None:
    with open_rw(store_dir) as a, open_rw(store_dir) as b:
        assert a.refresh() is False
        a.create(ID_A)
        assert a.refresh() is False  # its own write
        assert b.refresh() is True
        assert b.refresh() is False
        assert b.exists(ID_A)
        b.set_metadata(ID_A, "m")
        b.set_metadata(ID_A, "n")
        assert b.refresh() is False
        assert a.refresh() is True
        assert a.metadata(ID_A) == "n"
        with ImageStore(store_dir, read_only=True) as ro:
            assert ro.refresh() is False
            b.create(ID_B)
            assert ro.refresh() is True
            assert ro.exists(ID_B)


def test_position_only_moves_forward(store_dir: Path) -> None:
    with open_rw(store_dir) as s, ImageStore(store_dir, read_only=True) as ro:
        seen = [s.position]
        ro_seen = [ro.position]

        def step() -> None:
            seen.append(s.position)
            ro.refresh()
            ro_seen.append(ro.position)
            assert ro.position == s.position

        s.create(ID_A, big_data=[("k", b"v")])
        step()
        s.set_big_data(ID_A, "k", b"w")
        step()
        with pytest.raises(DuplicateID):
            s.create(ID_A)
        step()
        with pytest.raises(RuntimeError), s.batch():
            s.create(ID_B)
            raise RuntimeError
        step()
        s.compact()
        step()
        s.create(ID_B)
        step()
        s.compact()
        s.compact()
        step()
        for positions in (seen, ro_seen):
            assert all(earlier <= later for earlier, later in itertools.pairwise(positions))
            assert positions[-1] > positions[0]
        assert seen[3] == seen[2]  # a rejected call does not move it
        assert seen[4] == seen[3]  # nor an aborted batch
    with ImageStore(store_dir, read_only=True) as again:
        assert again.position == seen[-1]


# ============================================================================ lookups


class TestLookups:
    def test_id_wins_over_a_name(self, store: ImageStore) -> None:
        store.create(ID_A)
        store.create(ID_B, names=[ID_A, "b"])  # a name equal to another image's ID is allowed
        assert store.get(ID_A).id == ID_A
        store.delete(ID_A)
        assert store.get(ID_A).id == ID_B  # now only the name matches

    def test_id_created_over_an_existing_name_wins(self, store: ImageStore) -> None:
        store.create(ID_B, names=["taken-as-name"])
        store.create("taken-as-name")
        assert store.get("taken-as-name").id == "taken-as-name"
        assert store.get(ID_B).names == ("taken-as-name",)

    def test_name_wins_over_a_prefix(self, store: ImageStore) -> None:
        store.create(ID_A)
        store.create(ID_B, names=["aaaa"])
        assert store.get("aaaa").id == ID_B
        assert store.get("aaa").id == ID_A

    def test_unique_prefix_and_ambiguous_prefix(self, store: ImageStore) -> None:
        one, two = "abc1" + "0" * 60, "abc2" + "0" * 60
        store.create(one)
        store.create(two)
        assert store.get("abc1").id == one
        assert store.get("abc2000").id == two
        for ref in ("abc", "ab", "a"):
            with pytest.raises(ImageUnknown):
                store.get(ref)
            assert not store.exists(ref)
        with pytest.raises(ImageUnknown):
            store.delete("abc")
        assert len(store.images()) == 2
        store.delete(two)
        assert store.get("abc").id == one  # no longer ambiguous

    def test_empty_and_unknown_references(self, store: ImageStore) -> None:
        store.create(ID_A, names=["x"])
        for ref in ("", "b", ID_A + "0", "X", "x "):
            with pytest.raises(ImageUnknown):
                store.get(ref)
            assert store.exists(ref) is False

    def test_an_id_that_is_a_prefix_of_another_id(self, store: ImageStore) -> None:
        store.create("ab")
        store.create("ab" + "c" * 62)
        assert store.get("ab").id == "ab"
        assert store.get("abc").id == "ab" + "c" * 62


# ============================================================================ digests


class TestDigests:
    def test_by_digest_malformed_or_unknown_is_empty(self, store: ImageStore) -> None:
        populated(store)
        for d in ("", "sha256:xyz", "garbage", "sha256:" + "0" * 64, sha(b"m-a").upper(), "sha256"):
            assert store.by_digest(d) == []

    def test_digests_given_at_create_are_dropped(self, store: ImageStore) -> None:
        d1, d2 = sha(b"1"), sha(b"2")
        image = store.create(ID_A, digest=d1, digests=[d1, d2, d1])
        assert image.digests == (d1,)
        assert store.by_digest(d2) == []
        store.set_big_data(ID_A, "manifest", b"m")
        assert store.get(ID_A).digests == (d1, sha(b"m"))
        image = store.create(ID_B, digests=[d2])
        assert image.digest == ""
        assert image.digests == ()
        assert store.by_digest(d2) == []

    def test_derived_digests_order_and_sticky_digest(self, store: ImageStore) -> None:
        store.create(ID_A)
        store.set_big_data(ID_A, "config", b"c")  # not a manifest
        assert store.get(ID_A).digests == ()
        store.set_big_data(ID_A, "manifest-b", b"mb")
        store.set_big_data(ID_A, "manifest-a", b"ma")
        store.set_big_data(ID_A, "manifest", b"mb")  # same digest as manifest-b: not repeated
        image = store.get(ID_A)
        assert image.digest == sha(b"mb")  # the first manifest digest
        assert image.digests == (sha(b"mb"), sha(b"ma"))
        store.set_big_data(ID_A, "manifest-b", b"mb2")
        store.set_big_data(ID_A, "manifest", b"mb3")
        image = store.get(ID_A)
        assert image.digest == sha(b"mb")  # sticky, though no item has it any more
        assert image.digests == (sha(b"mb"), sha(b"mb2"), sha(b"ma"), sha(b"mb3"))
        assert [i.id for i in store.by_digest(sha(b"mb"))] == [ID_A]

    def test_digest_manifest_callback(self, store: ImageStore) -> None:
        custom = "sha512:" + "e" * 128
        store.create(ID_A)
        store.set_big_data(ID_A, "manifest", b"m", digest_manifest=lambda data: custom)
        store.set_big_data(ID_A, "other", b"o", digest_manifest=lambda data: custom)  # ignored: not a manifest
        assert store.big_data_digest(ID_A, "manifest") == custom
        assert store.big_data_digest(ID_A, "other") == sha(b"o")
        assert store.get(ID_A).digests == (custom,)
        assert [i.id for i in store.by_digest(custom)] == [ID_A]

    def test_by_digest_order_follows_go(self, store: ImageStore) -> None:
        shared = b"same manifest"
        model = ImageModel()
        for image_id in (ID_A, ID_B, ID_C):
            store.create(image_id, created=0)
            model.create(image_id, created=0)
            store.set_big_data(image_id, "manifest", shared)
            model.set_big_data(image_id, "manifest", shared)
        assert [i.id for i in store.by_digest(sha(shared))] == [ID_A, ID_B, ID_C]
        # Go's setBigData takes the image out of every digest list and appends it again
        store.set_big_data(ID_A, "config", b"c")
        model.set_big_data(ID_A, "config", b"c")
        assert [i.id for i in store.by_digest(sha(shared))] == model.by_digest(sha(shared)) == [ID_B, ID_C, ID_A]
        store.delete(ID_B)
        model.delete(ID_B)
        assert [i.id for i in store.by_digest(sha(shared))] == [ID_C, ID_A]
        assert_same(model, store)

    def test_by_digest_order_survives_compaction(self, store_dir: Path) -> None:
        shared = b"same manifest"
        with open_rw(store_dir) as s:
            s.create(ID_A, big_data=[("manifest", shared)])
            s.create(ID_B, big_data=[("manifest", shared)])
            s.set_big_data(ID_A, "config", b"c")  # A leaves the list and joins it again, after B
            live = [i.id for i in s.by_digest(sha(shared))]
            assert live == [ID_B, ID_A]
            with ImageStore(store_dir, read_only=True) as replayed:
                assert [i.id for i in replayed.by_digest(sha(shared))] == live
            s.compact()
            assert [i.id for i in s.by_digest(sha(shared))] == live
        with ImageStore(store_dir, read_only=True) as fresh:
            assert [i.id for i in fresh.by_digest(sha(shared))] == live

    def test_by_digest_with_explicit_digest_and_manifest(self, store: ImageStore) -> None:
        d = sha(b"explicit")
        store.create(ID_A, digest=d)
        store.create(ID_B, big_data=[("manifest", b"explicit")])
        assert store.get(ID_B).digest == d
        assert [i.id for i in store.by_digest(d)] == [ID_A, ID_B]


# ============================================================================ records and JSON


class TestRecords:
    @pytest.mark.parametrize(
        "created",
        [
            datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC),
            datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(0))),
            datetime(2024, 5, 6, 7, 8, 9, 100000),  # naive means UTC
            1_700_000_000_000_000_001,
        ],
        ids=["utc", "zero-offset", "naive", "ns"],
    )
    def test_zero_offset_is_written_as_z(self, store: ImageStore, created: Any) -> None:
        image = store.create(ID_A, created=created)
        text = image.to_json()["created"]
        assert text.endswith("Z")
        assert "+00:00" not in text
        assert Image.from_json(image.to_json()) == image

    def test_offsets_and_fractions(self, store: ImageStore) -> None:
        tz = timezone(timedelta(hours=2))
        image = store.create(ID_A, created=datetime(2024, 3, 15, 10, 20, 30, 120000, tzinfo=tz))
        assert image.to_json()["created"] == "2024-03-15T10:20:30.12+02:00"
        image = store.create(ID_B, created=datetime(2024, 3, 15, 10, 20, 30, tzinfo=timezone(-timedelta(hours=5))))
        assert image.to_json()["created"] == "2024-03-15T10:20:30-05:00"
        assert image.created == datetime(2024, 3, 15, 15, 20, 30, tzinfo=UTC)
        assert image.created.utcoffset() == -timedelta(hours=5)

    def test_to_json_from_json_round_trip(self, store: ImageStore) -> None:
        populated(store)
        store.set_flag(ID_A, "nested", {"a": [1, 2.5, None, True], "b": {"c": "d"}})
        store.set_metadata(ID_A, "<&> \u2028 é")
        for image in store.images():
            doc = image.to_json()
            assert isinstance(doc, dict)
            json.dumps(doc)  # plain JSON values only
            again = Image.from_json(doc)
            assert isinstance(again, Image)
            assert again == image
            assert again.to_json() == doc

    def test_fixture_records_round_trip_exactly(self) -> None:
        from .conftest import FIXTURE

        if not FIXTURE.exists():
            pytest.skip("golden fixture not found")
        docs = json.loads((FIXTURE / "store" / "images.json").read_text())
        for doc in docs:
            assert Image.from_json(doc).to_json() == doc

    def test_returned_records_cannot_change_the_store(self, store: ImageStore) -> None:
        image = store.create(ID_A, names=["x"], flags={"f": [1]})
        with pytest.raises((TypeError, AttributeError)):
            image.flags["g"] = 2  # type: ignore[index]
        with pytest.raises(AttributeError):
            image.names = ("y",)  # type: ignore[misc]
        doc = image.to_json()
        doc["names"].append("z")
        doc["flags"]["f"].append(2)
        store.add_names(ID_A, ["w"])
        assert image.names == ("x",)
        assert store.get(ID_A).names == ("w", "x")
        assert store.get(ID_A).to_json()["flags"] == {"f": [1]}


# ============================================================================ order, layers, big data files, gc


def test_images_in_creation_order_also_after_reopen(store_dir: Path) -> None:
    ids = [hexid(f"order{i}") for i in range(8)]
    ids[3] = "0" + ids[3][1:]  # sorting by ID would differ from creation order
    with open_rw(store_dir) as s:
        for image_id in ids:
            s.create(image_id)
        s.delete(ids[2])
        s.create(ids[2])  # re-created: it goes last
        expected = [*ids[:2], *ids[3:], ids[2]]
        assert [i.id for i in s.images()] == expected
    with ImageStore(store_dir, read_only=True) as ro:
        assert [i.id for i in ro.images()] == expected
    with open_rw(store_dir) as s:
        s.compact()
        s.create(ID_A)
    with ImageStore(store_dir, read_only=True) as ro:
        assert [i.id for i in ro.images()] == [*expected, ID_A]


def test_imported_store_keeps_images_json_order(fixture_copy: Path) -> None:
    docs = json.loads((fixture_copy / "images.json").read_text())
    with open_rw(fixture_copy) as s:
        assert [i.id for i in s.images()] == [d["id"] for d in docs]
        s.create(ID_A)
        assert [i.id for i in s.images()] == [*(d["id"] for d in docs), ID_A]
    with ImageStore(fixture_copy, read_only=True) as ro:
        assert [i.id for i in ro.images()] == [*(d["id"] for d in docs), ID_A]


def test_mapped_top_layers(store: ImageStore) -> None:
    store.create(ID_A)
    for layer in ("ABC", "def", "abc", "AbC", "def"):
        store.add_mapped_top_layer(ID_A, layer)
    assert store.get(ID_A).mapped_top_layers == ("ABC", "def", "abc", "AbC", "def")  # duplicates kept
    store.remove_mapped_top_layer(ID_A, "aBc")  # every case-insensitive match goes
    assert store.get(ID_A).mapped_top_layers == ("def", "def")
    position = store.position
    store.remove_mapped_top_layer(ID_A, "absent")  # a no-op, and (as in Go) nothing is saved
    assert store.get(ID_A).mapped_top_layers == ("def", "def")
    assert store.position == position
    store.remove_mapped_top_layer(ID_A, "DEF")
    assert store.get(ID_A).mapped_top_layers == ()


@pytest.mark.parametrize(
    ("key", "file_name"),
    [
        ("manifest", "manifest"),
        ("signatures.v1", "signatures.v1"),
        ("Some Key/with:odd chars", "=" + base64.b64encode(b"Some Key/with:odd chars").decode()),
        ("manifest-sha256:ab", "=" + base64.b64encode(b"manifest-sha256:ab").decode()),
        (".", "=" + base64.b64encode(b".").decode()),
        ("..", "=" + base64.b64encode(b"..").decode()),
        ("../../escape", "=" + base64.b64encode(b"../../escape").decode()),
        ("UPPER", "=" + base64.b64encode(b"UPPER").decode()),
        ("é", "=" + base64.b64encode("é".encode()).decode()),
    ],
)
def test_big_data_file_names(store_dir: Path, key: str, file_name: str) -> None:
    with open_rw(store_dir) as s:
        s.create(ID_A)
        s.set_big_data(ID_A, key, b"payload")
        assert s.big_data(ID_A, key) == b"payload"
    assert (store_dir / ID_A / file_name).read_bytes() == b"payload"
    assert sorted(os.listdir(store_dir / ID_A)) == [file_name]
    assert not (store_dir.parent / "escape").exists()


def test_delete_removes_the_data_directory(store_dir: Path) -> None:
    with open_rw(store_dir) as s:
        populated(s)
        assert (store_dir / ID_A).is_dir()
        s.delete("a:1")
        assert not (store_dir / ID_A).exists()
        assert not s.exists("a:2")
        s.create(ID_C, big_data=[("k", b"v")])
        s.wipe()
        assert s.images() == []
        assert not (store_dir / ID_C).exists()
        assert s.by_digest(sha(b"m-a")) == []
    with ImageStore(store_dir, read_only=True) as ro:
        assert ro.images() == []


def test_garbage_collect_removes_only_orphan_id_directories(store_dir: Path) -> None:
    with open_rw(store_dir) as s:
        populated(s)
        orphan = hexid("orphan")
        (store_dir / orphan).mkdir()
        (store_dir / orphan / "file").write_bytes(b"left by a crash")
        (store_dir / "not-an-id").mkdir()
        (store_dir / ("A" * 64)).mkdir()  # upper case: not a 64-hex ID
        (store_dir / hexid("file")).write_bytes(b"a file, not a directory")
        s.garbage_collect()
        assert not (store_dir / orphan).exists()
        for kept in ("not-an-id", "A" * 64, hexid("file"), ID_A):
            assert (store_dir / kept).exists()
        assert s.big_data(ID_A, "manifest") == b"m-a"


def test_create_is_all_or_nothing_with_big_data(store_dir: Path) -> None:
    with open_rw(store_dir) as s:
        s.create(ID_A, names=["x"], big_data=[("manifest", b"m"), ("config", b"c", sha(b"other")), ("manifest", b"m2")])
        image = s.get(ID_A)
        assert image.big_data_names == ("manifest", "config")
        assert image.big_data_digests["config"] == sha(b"other")
        assert s.big_data(ID_A, "manifest") == b"m2"
        # items apply one after the other, as Go's create calls setBigData: the first manifest
        # digest sticks as `digest`
        assert image.digest == sha(b"m")
        assert image.digests == (sha(b"m"), sha(b"m2"))
    with ImageStore(store_dir, read_only=True) as ro:
        assert ro.get(ID_A).big_data_names == ("manifest", "config")


# ============================================================================ creation times Go can hold


@pytest.mark.parametrize(
    ("created", "text"),
    [
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00Z"),  # Go's zero time
        (datetime(1600, 6, 1, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=1))), "1600-06-01T12:00:00.000005+01:00"),
        (datetime(2600, 1, 1, tzinfo=UTC), "2600-01-01T00:00:00Z"),  # beyond uint64 ns
    ],
)
def test_created_outside_int64_ns_round_trips(store_dir: Path, created: datetime, text: str) -> None:
    with open_rw(store_dir) as s:
        assert s.create(ID_A, created=created).to_json()["created"] == text
        s.compact()
    with ImageStore(store_dir, read_only=True) as ro:
        assert ro.get(ID_A).to_json()["created"] == text


@pytest.mark.parametrize("created", [None, "0001-01-01T00:00:00Z"])
def test_import_of_go_zero_creation_time(store_dir: Path, created: str | None) -> None:
    store_dir.mkdir()
    doc: dict[str, Any] = {"id": ID_A, "names": ["old:1"]}
    if created is not None:
        doc["created"] = created
    (store_dir / "images.json").write_text(json.dumps([doc]))
    with open_rw(store_dir) as s:
        assert s.get("old:1").to_json()["created"] == "0001-01-01T00:00:00Z"
        s.set_metadata("old:1", "m")
    with ImageStore(store_dir, read_only=True) as ro:
        assert ro.get("old:1").metadata == "m"


# ============================================================================ isolation and resources


def test_other_instances_never_read_uncommitted_big_data(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from journalstore import failpoints

    with open_rw(store_dir) as writer, ImageStore(store_dir, read_only=True) as reader:
        writer.create(ID_A, big_data=[("k", b"old")])
        assert reader.big_data(ID_A, "k") == b"old"
        seen: list[tuple[bytes, int]] = []
        real_hit = failpoints.hit

        def hit(name: str) -> None:
            real_hit(name)
            if name == "bigdata-after-rename":  # files in place, commit record not yet written
                seen.append((reader.big_data(ID_A, "k"), reader.big_data_size(ID_A, "k")))
                raise OSError("disk full while appending the commit record")

        monkeypatch.setattr(failpoints, "hit", hit)
        with pytest.raises(OSError, match="disk full"):
            writer.set_big_data(ID_A, "k", b"never committed")
        monkeypatch.setattr(failpoints, "hit", real_hit)
        assert writer.big_data(ID_A, "k") == b"old"  # the failed write was undone ...
        assert seen == [(b"old", 3)]  # ... and nobody may have seen it


def test_an_aborted_nested_batch_writes_nothing(store: ImageStore) -> None:
    with store.batch():
        store.create(ID_A)
        try:
            with store.batch():  # refusing to nest would honour the contract too
                store.create(ID_B, big_data=[("k", b"v")])
                raise RuntimeError("inner abort")
        except StoreError:
            pass
        except RuntimeError:
            pass
    assert store.exists(ID_A)
    assert not store.exists(ID_B)
    assert not (Path(store.path) / ID_B).exists()


def test_aborted_batches_leak_no_file_descriptors(store: ImageStore) -> None:
    store.create(ID_A)

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc")
    before = open_fds()
    for _ in range(10):
        with pytest.raises(RuntimeError), store.batch():
            store.delete(ID_A)
            store.create(ID_A)
            raise RuntimeError
    assert open_fds() == before


@pytest.mark.parametrize(("stored", "given"), [("ς", "σ"), ("Σ", "ς"), ("ſ", "s"), ("layerſ", "LAYERS")])
def test_mapped_layer_removal_folds_case_like_go(store: ImageStore, stored: str, given: str) -> None:
    store.create(ID_A)
    store.add_mapped_top_layer(ID_A, stored)
    store.remove_mapped_top_layer(ID_A, given)
    assert store.get(ID_A).mapped_top_layers == ()


@pytest.mark.parametrize(("stored", "given"), [("K", "k"), ("\u212a", "k"), ("ẞ", "ß"), ("Ab-Cd", "aB-cD")])
def test_mapped_layer_removal_folds_common_cases(store: ImageStore, stored: str, given: str) -> None:
    store.create(ID_A)
    store.add_mapped_top_layer(ID_A, stored)
    store.add_mapped_top_layer(ID_A, "other")
    store.remove_mapped_top_layer(ID_A, given)
    assert store.get(ID_A).mapped_top_layers == ("other",)


# ============================================================================ opening


def test_read_only_open_of_a_missing_or_empty_directory_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(StoreError) as info:
        ImageStore(missing, read_only=True)
    assert isinstance(info.value, FileNotFoundError)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    before = tree_stat(empty)
    with ImageStore(empty, read_only=True) as ro:
        assert ro.images() == []
        assert ro.by_digest(sha(b"x")) == []
        with pytest.raises(StoreIsReadOnly):
            ro.create(ID_A)
    assert tree_stat(empty) == before


def test_read_only_open_does_not_finish_an_interrupted_publish(store_dir: Path) -> None:
    with open_rw(store_dir) as s:
        populated(s)
        s.compact()
    (store_dir / "images.json").unlink()  # as if the compaction died before publishing it
    before = tree_stat(store_dir)
    with ImageStore(store_dir, read_only=True) as ro:
        assert [i.id for i in ro.images()] == [ID_A, ID_B]
    assert tree_stat(store_dir) == before
    with open_rw(store_dir) as s:  # a writer does finish it
        s.create(ID_C)
    assert (store_dir / "images.json").exists()


def test_imported_duplicate_names_go_to_the_later_image(store_dir: Path) -> None:
    store_dir.mkdir()
    docs = [
        {"id": ID_A, "names": ["dup", "a-only"], "created": "2020-01-01T00:00:00Z"},
        {"id": ID_B, "names": ["dup"], "created": "2020-01-02T00:00:00Z"},
    ]
    (store_dir / "images.json").write_text(json.dumps(docs))
    with pytest.raises(StoreError):  # read-only, Go refuses: ErrDuplicateImageNames
        ImageStore(store_dir, read_only=True)
    model = ImageModel.from_images_json(docs)
    with open_rw(store_dir) as s:
        assert_same(model, s)
        assert s.get("dup").id == ID_B
    with ImageStore(store_dir, read_only=True) as ro:  # the writer fixed the file
        assert_same(model, ro)


@pytest.mark.parametrize(
    "kwargs",
    [{"fsync": "sometimes"}, {"compact_every": 0}, {"compact_every": -1}, {"actor": 5}, {"compact_bytes": 0}],
    ids=repr,
)
def test_bad_constructor_arguments_create_nothing(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    path = tmp_path / "store"
    with pytest.raises((TypeError, ValueError)):
        ImageStore(path, **kwargs)
    assert not path.exists()


def test_read_write_open_creates_the_directory_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "store"
    with open_rw(path) as s:
        s.create(ID_A, big_data=[("k", b"v")])
        s.compact()
    assert path.stat().st_mode & 0o777 == 0o700
    # the modes containers/storage uses (fixture README): 0700 directories, 0600 data and images.json
    assert (path / ID_A).stat().st_mode & 0o777 == 0o700
    assert (path / ID_A / "k").stat().st_mode & 0o777 == 0o600
    assert (path / "images.json").stat().st_mode & 0o777 == 0o600


def test_reader_follows_several_compactions_at_once(store_dir: Path) -> None:
    model = ImageModel()
    with open_rw(store_dir) as s, ImageStore(store_dir, read_only=True) as reader:
        start = reader.position
        for i in range(3):
            for args in ((hexid(f"c{i}"), [f"name{i}"]), (hexid(f"d{i}"), [f"name{i}-d"])):
                s.create(*args, created=i)
                model.create(*args, created=i)
            s.add_names(hexid(f"c{i}"), [f"name{i}-d"])
            model.add_names(hexid(f"c{i}"), [f"name{i}-d"])
            s.compact()
        s.set_big_data(hexid("c0"), "manifest", b"after the last snapshot")
        model.set_big_data(hexid("c0"), "manifest", b"after the last snapshot")
        assert reader.refresh() is True
        assert reader.position == s.position
        assert reader.position > start
        assert_same(model, reader)
        assert reader.big_data(hexid("c0"), "manifest") == b"after the last snapshot"


def test_read_only_reader_of_a_containers_storage_dir_follows_its_import(fixture_copy: Path) -> None:
    with ImageStore(fixture_copy, read_only=True) as reader:
        before = snapshot_of_store(reader)
        position = reader.position
        assert reader.refresh() is False
        with open_rw(fixture_copy) as s:  # imports the directory, then writes
            assert snapshot_of_store(s) == before
            s.create(ID_A, names=["new:1"])
        assert reader.refresh() is True
        assert reader.get("new:1").id == ID_A
        assert reader.position >= position
        assert len(reader.images()) == len(before["images"]) + 1
