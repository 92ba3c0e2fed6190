"""Issue 12: a store directory shared live with the real containers/storage (1.43).

Each test states the correct behaviour, measured as failing before issue 12's library work (Go's
fcntl lock on images.lock, its 64 last-writer bytes read after taking it, images.json + big data +
new last-writer bytes published after each acknowledged write, no auto-merge of a damaged
images.json) and kept as a regression test.

An ordinary Go write in a shared directory is expected to raise no StoreWarning (the project's
pytest configuration turns an unexpected one into an error): sharing is the normal case there.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest

from journalstore import ImageStore, StoreWarning
from journalstore.errors import JournalCorrupt, StoreError

from .harness import GoStore, journalstore_cli, journalstore_import, running

STRESS = bool(os.environ.get("JOURNALSTORE_STRESS"))
RACE_WRITES = 200 if STRESS else 20  # per side; JOURNALSTORE_STRESS=1 (make stress) for the full count


@pytest.fixture
def shared(go_images: tuple[GoStore, str, str]) -> tuple[GoStore, str, str]:
    """go_images converted in place into a journalstore store (`journalstore import`)."""
    go, a, b = go_images
    journalstore_import(go.images_dir)
    return go, a, b


def names_of(path: Path, ref: str) -> tuple[str, ...]:
    """A fresh read-only journalstore's view of an image's names."""
    reader = ImageStore(path, read_only=True)
    try:
        return reader.get(ref).names
    finally:
        reader.close()


# (1) A store kept open sees Go's write and keeps it through its own writes and compactions.



def test_open_store_sees_go_add_names_and_keeps_them(shared: tuple[GoStore, str, str]) -> None:
    go, a, b = shared
    with ImageStore(go.images_dir) as store:
        assert "go/2" not in store.get(a).names
        go.cs("add-names", "-n", "go/2", a)
        assert store.refresh() is True
        assert "go/2" in store.get(a).names
        store.add_names(b, ["js/after-go"])
        store.compact()
        assert "go/2" in store.get(a).names
        assert "go/2" in go.get_names(a)
        assert "js/after-go" in go.get_names(b)
    assert "go/2" in names_of(go.images_dir, a)



def test_go_delete_stays_deleted_after_journalstore_writes(shared: tuple[GoStore, str, str]) -> None:
    go, a, b = shared
    with ImageStore(go.images_dir) as store:
        assert store.exists(a)
        go.cs("delete-image", a)
        store.add_names(b, ["js/after-delete"])
        store.compact()
        assert not store.exists(a)
    assert go.cs("exists", "-i", a, check=False).strip() != a
    assert a not in go.dump()
    reader = ImageStore(go.images_dir, read_only=True)
    try:
        assert not reader.exists(a)
        assert "js/after-delete" in reader.get(b).names
    finally:
        reader.close()
    assert not (go.images_dir / a).exists()


# (2) Racing writers: nothing acknowledged is lost, in either view.


def _journalstore_writes(path: Path, ref: str, prefix: str, count: int) -> None:
    """count add_names writes: the first half each on a fresh store, the rest on one long-lived
    store that compacts every 10 writes."""
    fresh = count // 2
    for i in range(fresh):
        with ImageStore(path) as store:
            store.add_names(ref, [f"{prefix}{i}"])
    with ImageStore(path) as store:
        for i in range(fresh, count):
            store.add_names(ref, [f"{prefix}{i}"])
            if i % 10 == 9:
                store.compact()



def test_racing_writers_lose_nothing(shared: tuple[GoStore, str, str]) -> None:
    """jsgo's N AddNames writes on A (one process, each write its own lock hold and save) race
    journalstore's N add_names on B (this process, meanwhile)."""
    go, a, b = shared
    argv = [str(go.jsgo), "--root", str(go.root), "--runroot", str(go.runroot), "race", str(RACE_WRITES), "go-", a]
    with running(argv, timeout=300) as proc, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StoreWarning)  # recorded, checked last: the losses come first
        _journalstore_writes(go.images_dir, b, "js-", RACE_WRITES)
    assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
    go_names = {i: set(image["names"]) for i, image in go.dump().items()}
    wanted_a = {f"go-{i}" for i in range(RACE_WRITES)}
    wanted_b = {f"js-{i}" for i in range(RACE_WRITES)}
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always", StoreWarning)
        js_a, js_b = set(names_of(go.images_dir, a)), set(names_of(go.images_dir, b))
    lost = {
        "Go lost its own writes": len(wanted_a - go_names[a]),
        "Go's view lost journalstore's writes": len(wanted_b - go_names[b]),
        "journalstore's view lost Go's writes": len(wanted_a - js_a),
        "journalstore lost its own writes": len(wanted_b - js_b),
    }
    assert lost == dict.fromkeys(lost, 0), f"of {RACE_WRITES} writes per side: {lost}"
    assert [str(w.message) for w in caught] == []


# (3) Go sees journalstore's acknowledged writes on its next look.



def test_go_sees_add_names_while_the_store_is_open(shared: tuple[GoStore, str, str]) -> None:
    go, _, b = shared
    with ImageStore(go.images_dir) as store:
        store.add_names(b, ["js/visible"])
        assert "js/visible" in go.get_names(b)  # the store is still open: published at the write
        assert go.dump()[b]["names"] == list(store.get(b).names)



def test_go_sees_create_and_set_big_data(shared: tuple[GoStore, str, str]) -> None:
    go, _, _ = shared
    config = b'{"os":"linux","from":"journalstore"}'
    with ImageStore(go.images_dir) as store:
        image = store.create(names=["js/new:1"])
        store.set_big_data(image.id, "sha256:Config/New", config)
        assert go.get_names(image.id) == ["js/new:1"]
        assert go.cs("get-image-data", image.id, "sha256:Config/New").encode() == config
        assert go.cs("get-image-data-digest", image.id, "sha256:Config/New").strip() == (
            store.big_data_digest(image.id, "sha256:Config/New")
        )
        assert go.dump()[image.id]["big_data"] == {"sha256:Config/New": config}



def test_go_sees_a_journalstore_cli_write(shared: tuple[GoStore, str, str]) -> None:
    go, _, b = shared
    journalstore_cli(go.images_dir, "add-names", "-n", "js/from-cli", b)
    assert "js/from-cli" in go.get_names(b)



def test_long_lived_go_client_sees_each_write_within_3s(shared: tuple[GoStore, str, str]) -> None:
    go, _, b = shared
    with go.watcher() as watcher, ImageStore(go.images_dir) as store:
        for i in range(5):
            name = f"js/watched-{i}"
            store.add_names(b, [name])

            def seen(line: dict[str, Any], name: str = name) -> bool:
                return name in (watcher.names(b, line) or [])

            watcher.wait_for(seen, timeout=3)


# (4) A damaged images.json (written by something other than Go: the last-writer bytes are
# unchanged) is never merged: no image deleted, no delete recorded.


def _damage(path: Path, how: str) -> None:
    images_json = path / "images.json"
    data = images_json.read_bytes()
    damaged = {
        "emptied": b"",
        "cut-in-half": data[: len(data) // 2],
        "null": b"null",
        "empty-list": b"[]",
        "bogus-list": b'[1, "two", null, {"names": ["no id"]}]',
    }[how]
    tmp = path / "images.json.damage"
    tmp.write_bytes(damaged)
    tmp.replace(images_json)


# Before issue 12, a half file and a list of non-images already failed to decode (SnapshotCorrupt)
# before any merge; the three that decode as a valid empty store were merged as "Go deleted
# everything" and recorded deletes.
@pytest.mark.parametrize(
    "how",
    [
        "emptied",
        "cut-in-half",
        "null",
        "empty-list",
        "bogus-list",
    ],
)
def test_damaged_images_json_is_never_merged(shared: tuple[GoStore, str, str], how: str) -> None:
    go, a, b = shared
    expected = {a: names_of(go.images_dir, a), b: names_of(go.images_dir, b)}
    writer_bytes = go.last_writer()
    _damage(go.images_dir, how)
    assert go.last_writer() == writer_bytes

    with pytest.warns(StoreWarning):
        reader = ImageStore(go.images_dir, read_only=True)
    try:
        assert {image.id: image.names for image in reader.images()} == expected
    finally:
        reader.close()

    with warnings.catch_warnings(), pytest.raises(StoreError, match=r"images\.json"):
        warnings.simplefilter("ignore", StoreWarning)
        ImageStore(go.images_dir).close()

    with pytest.warns(StoreWarning):
        reader = ImageStore(go.images_dir, read_only=True)
    try:
        assert {image.id: image.names for image in reader.images()} == expected
        kinds = [(event.kind, event.data) for event in reader.history()]
    finally:
        reader.close()
    assert not [kind for kind, _ in kinds if kind == "delete"], kinds
    assert not [data for kind, data in kinds if kind == "external-rewrite" and data.get("removed")], kinds
    assert (go.images_dir / a).is_dir() and (go.images_dir / b).is_dir()


# (5) A copy without hard links, newest segment lost: refused exactly like the original.


# The original already refuses (images.json is a hard link of the newest snapshot, so its loss is
# seen); a copytree breaks the link, and the copy opens silently one segment back.
@pytest.mark.parametrize("which", ["original", "copytree-copy"])
@pytest.mark.parametrize("read_only", [True, False], ids=["read-only", "read-write"])
def test_lost_newest_segment_is_refused(tmp_path: Path, which: str, read_only: bool) -> None:
    original = tmp_path / "store"
    with ImageStore(original, fsync="never") as store:
        store.create(names=["one"])
        store.compact()
        store.add_names("one", ["two"])
        store.compact()
        store.add_names("one", ["three"])  # only in the newest segment
    path = original
    if which == "copytree-copy":
        path = tmp_path / "copy"
        shutil.copytree(original, path)
    newest = max((path / "journal").glob("segment-*"))
    newest.unlink()
    with pytest.raises(JournalCorrupt):
        ImageStore(path, read_only=read_only).close()

