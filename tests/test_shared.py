"""A store shared with containers/storage (issue 12), without Go: publication after every commit,
Go's saves simulated as containers/storage makes them (images.json renamed into place, then new
last-writer bytes), damage, acceptance of a hand edit, and the missing-segment checks.
tests/interop/ runs the same protocol against the real containers/storage."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from journalstore import ImageStore, JournalCorrupt, StoreWarning
from journalstore import publication as pub
from journalstore import snapshot as snap
from journalstore.errors import ForeignDamage
from journalstore.fsio import Disk

SCRIPT = Path(sys.executable).parent / "journalstore"


def last_writer(root: Path) -> bytes:
    return (root / "images.lock").read_bytes()[:64]


def go_save(root: Path, change: Any, *, touch: bool = True, pid: int = 777) -> None:
    """What containers/storage's Save does: images.json rewritten whole, then Touch()."""
    images = json.loads((root / "images.json").read_bytes() or b"null") or []
    images = change(images) or images
    tmp = root / ".tmp-images.json123"
    tmp.write_bytes(json.dumps(images, separators=(",", ":")).encode())
    os.rename(tmp, root / "images.json")
    if touch:
        with open(root / "images.lock", "r+b") as f:
            f.write(struct.pack("<QQI", time.time_ns(), 9, pid) + os.urandom(44))


def expected_images_json(store: ImageStore) -> bytes:
    return snap.encode(store.images())


@pytest.fixture
def shared(tmp_path: Path) -> ImageStore:
    store = ImageStore(tmp_path / "s", fsync="never", shared=True)
    yield store
    store.close()


def test_every_commit_is_published(shared: ImageStore) -> None:
    root = Path(shared.path)
    seen = set()
    image = shared.create(names=["a"], big_data=[("manifest", b"{}")])
    for step in range(5):
        if step == 1:
            shared.add_names("a", ["b"])
        elif step == 2:
            shared.set_metadata("a", "m")
        elif step == 3:
            shared.create(names=["c"])
        elif step == 4:
            shared.delete("c")
        assert (root / "images.json").read_bytes() == expected_images_json(shared)
        seen.add(last_writer(root))
    assert len(seen) == 5  # Go readers reload after each
    assert (root / image.id / "manifest").read_bytes() == b"{}"


class CountingRenames(Disk):
    def __init__(self) -> None:
        self.renames: list[str] = []

    def rename(self, src: str, dst: str) -> None:
        self.renames.append(os.path.basename(dst))
        super().rename(src, dst)


def test_a_batch_publishes_once(tmp_path: Path) -> None:
    disk = CountingRenames()
    with ImageStore(tmp_path / "s", fsync="never", shared=True, disk=disk) as store:
        with store.batch():
            for i in range(10):
                store.create(names=[f"n{i}"])
        assert disk.renames.count("images.json") == 1


def test_the_incremental_encoding_is_byte_for_byte_go_s(shared: ImageStore) -> None:
    root = Path(shared.path)
    ids = [shared.create(names=[f"n{i}"], metadata=f"<{i}>&\u2028").id for i in range(30)]
    for i, image_id in enumerate(ids):
        if i % 3 == 0:
            shared.set_flag(image_id, "f", {"x": [1, 2.5, "é"]})
        elif i % 3 == 1:
            shared.delete(image_id)
        else:
            shared.add_names(image_id, [f"again-{i}"])
        assert (root / "images.json").read_bytes() == expected_images_json(shared)
    recreated = shared.create(id=ids[1], names=["back"])  # a deleted ID comes back, last
    assert (root / "images.json").read_bytes() == expected_images_json(shared)
    assert json.loads((root / "images.json").read_bytes())[-1]["id"] == recreated.id


def test_a_go_save_is_seen_by_readers_and_recorded_by_the_next_writer(shared: ImageStore) -> None:
    root = Path(shared.path)
    a = shared.create(names=["a"], metadata="ours")
    b = shared.create(names=["b"])

    def change(images: list[dict[str, Any]]) -> None:
        for doc in images:
            if doc["id"] == a.id:
                doc["names"] = ["go/new", *doc["names"]]
                doc["metadata"] = "theirs"
        images[:] = [d for d in images if d["id"] != b.id]
        images.append({"id": "f" * 64, "names": ["from-go"], "created": "2025-01-01T00:00:00Z"})

    go_save(root, change)
    with ImageStore(root, read_only=True) as reader:
        assert reader.get("go/new").metadata == "theirs" and not reader.exists(b.id) and reader.exists("from-go")
        assert shared.refresh() is True  # an open read-write instance sees it too, before writing
        assert shared.get("a").names == ("go/new", "a")
        shared.add_names("from-go", ["ours/1"])  # the first write records Go's save first
        assert reader.refresh() is True
        assert reader.get("ours/1").id == "f" * 64 and reader.get("go/new").metadata == "theirs"
    events = [(e.kind, e.actor.name, e.actor.pid, e.data) for e in shared.history(since=3)]
    assert events[0][:3] == ("external-rewrite", "containers-storage", 777)
    kinds = [kind for kind, *_ in events]
    assert kinds[:5] == ["external-rewrite", "delete", "add-names", "set-metadata", "create"]
    assert events[-1][0] == "add-names" and events[-1][1] == ""
    assert (root / "images.json").read_bytes() == expected_images_json(shared)


def test_go_saves_racing_a_long_lived_writer_lose_nothing(shared: ImageStore) -> None:
    root = Path(shared.path)
    shared.create(names=["x"])
    for i in range(20):
        go_save(root, lambda images, i=i: images.append({"id": f"{i:064x}", "created": "2025-01-01T00:00:00Z"}))
        shared.add_names("x", [f"ours-{i}"])
    assert len(shared.images()) == 21 and len(shared.get("x").names) == 21
    docs = json.loads((root / "images.json").read_bytes())
    assert len(docs) == 21 and len(docs[0]["names"]) == 21


@pytest.mark.parametrize("content", [b"", b"null", b"[]", b"[1, 2]", b'[{"id": "a"'])
def test_damage_is_not_a_change(shared: ImageStore, content: bytes) -> None:
    root = Path(shared.path)
    shared.create(names=["a"])
    shared.create(names=["b"])
    shared.close()
    (root / "images.json").write_bytes(content)  # last-writer bytes unchanged
    with pytest.warns(StoreWarning, match="accept-images-json"), ImageStore(root, read_only=True) as reader:
        assert [i.names[0] for i in reader.images()] == ["a", "b"]
    with pytest.raises(ForeignDamage, match=r"images\.json.*accept-images-json"):
        ImageStore(root, fsync="never")
    assert (root / "images.json").read_bytes() == content  # nothing was rewritten either


def test_a_go_save_that_is_not_a_list_of_images_is_refused(shared: ImageStore) -> None:
    root = Path(shared.path)
    shared.create(names=["a"])
    go_save(root, lambda images: {"not": "a list"})
    with pytest.raises(ForeignDamage, match="Restore it"):
        shared.create(names=["b"])
    with pytest.warns(StoreWarning, match="not a list of images"):
        assert [i.names[0] for i in shared.images()] == ["a"]


def test_a_deliberate_hand_edit_is_accepted(shared: ImageStore) -> None:
    root = Path(shared.path)
    a = shared.create(names=["a"])
    shared.close()
    docs = json.loads((root / "images.json").read_bytes())
    docs[0]["metadata"] = "edited by hand"
    (root / "images.json").write_bytes(json.dumps(docs).encode())
    with pytest.raises(ForeignDamage):
        ImageStore(root, fsync="never")
    result = subprocess.run(
        [str(SCRIPT), "--root", str(root), "--actor", "alice", "--json", "accept-images-json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "JOURNALSTORE_FSYNC": "never"},
    )
    out = json.loads(result.stdout)
    assert [e["kind"] for e in out["events"]] == ["external-rewrite", "set-metadata"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ImageStore(root, fsync="never") as store:
            assert store.get(a.id).metadata == "edited by hand"
            last = list(store.history(a.id))[-1]
            assert last.kind == "set-metadata" and last.actor.name == "alice"


def test_a_copy_without_hard_links_missing_its_newest_records_is_refused(shared: ImageStore, tmp_path: Path) -> None:
    root = Path(shared.path)
    for i in range(5):
        shared.create(names=[f"n{i}"])
    shared.compact()
    for i in range(5):
        shared.create(names=[f"m{i}"])
    shared.compact()
    shared.create(names=["last"])
    shared.close()
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)  # no hard links
    newest = sorted((copy / "journal").glob("segment-*"))[-1]
    newest.unlink()
    for read_only in (True, False):
        with pytest.raises(JournalCorrupt):
            ImageStore(copy, read_only=read_only, fsync="never", shared=True)


def test_shared_is_detected_from_a_containers_storage_root(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "storage.lock").touch()
    with ImageStore(tmp_path / "root" / "vfs-images", fsync="never") as store:
        assert store.shared
    with ImageStore(tmp_path / "root" / "vfs-images", fsync="never", shared=False) as store:
        assert not store.shared
    with ImageStore(tmp_path / "plain", fsync="never") as store:
        assert not store.shared
        store.create(names=["a"])
        assert not (tmp_path / "plain" / "images.json").exists()  # unshared: only at compaction


def test_mark_bytes_round_trip() -> None:
    lw = pub.new_last_writer()
    head = pub.lock_bytes(12, 34, lw)
    parsed = pub.parse(head)
    assert parsed.ours and parsed.mark == pub.Mark(12, 34, lw)
    assert parsed.writer()[1] == os.getpid()
    torn = head[:-3] + b"xyz"
    assert pub.parse(torn).mark is None
