"""The interop harness works: the real Go library writes, jsgo dumps, journalstore reads the same.

These pass today; they are what test_shared_failures.py builds on.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from journalstore import Image, ImageStore

from .conftest import CONFIG, MANIFEST
from .harness import GoStore, journalstore_import, parse_last_writer


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def assert_same_image(mine: Image, theirs: dict[str, Any], read_big_data: Any) -> None:
    """journalstore's Image against jsgo's dump of the same image, field by field."""
    assert mine.id == theirs["id"]
    assert mine.digest == theirs["digest"]
    # Go builds Digests from a map: the digest first, the rest in no stable order.
    assert mine.digests[:1] == tuple(theirs["digests"][:1])
    assert sorted(mine.digests) == sorted(theirs["digests"])
    assert list(mine.names) == theirs["names"]
    assert list(mine.names_history) == theirs["names_history"]
    assert mine.top_layer == theirs["top_layer"]
    assert list(mine.mapped_top_layers) == theirs["mapped_top_layers"]
    assert mine.metadata == theirs["metadata"]
    assert list(mine.big_data_names) == theirs["big_data_names"]
    assert dict(mine.big_data_sizes) == theirs["big_data_sizes"]
    assert dict(mine.big_data_digests) == theirs["big_data_digests"]
    assert mine.created_text == theirs["created"]
    assert mine.to_json().get("flags", {}) == theirs["flags"]
    for key, data in theirs["big_data"].items():
        assert read_big_data(mine.id, key) == data, f"big data {key!r} of {mine.id}"


def assert_store_matches_go(store: ImageStore, dump: dict[str, dict[str, Any]]) -> None:
    mine = {image.id: image for image in store.images()}
    assert sorted(mine) == sorted(dump)
    for image_id, theirs in dump.items():
        assert_same_image(mine[image_id], theirs, store.big_data)


@pytest.fixture
def rich_image(go_images: tuple[GoStore, str, str], tmp_path: Path) -> tuple[GoStore, str]:
    """An image with every field Go can set: a real top layer, a digest, flags, a created time with
    an offset, names history, a manifest and odd big-data keys (written through jsgo)."""
    go, _, _ = go_images
    layer = go.cs("create-layer").split()[0]
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes(MANIFEST + b"\n")
    odd = tmp_path / "odd.bin"
    odd.write_bytes(bytes(range(256)))
    image_id = go.gojs(
        "create",
        "--name", "quay.io/interop/rich:1",
        "--layer", layer,
        "--digest", sha256(b"declared"),
        "--metadata", "rich metadata",
        "--created", "2021-06-07T08:09:10.123456789+05:30",
        "--flag", 'labels={"a":"b","n":[1,2.5,null,true]}',
        "--flag", "pinned=true",
        "--big-data", f"manifest-{sha256(MANIFEST)}=@{manifest}",
        "--big-data", f"Weird Key/../é=@{odd}",
    ).strip()  # fmt: skip
    go.gojs("add-names", image_id, "rich:latest", "rich:2")
    go.gojs("remove-names", image_id, "rich:2")
    return go, image_id


def test_go_dump_shows_every_field(rich_image: tuple[GoStore, str], tmp_path: Path) -> None:
    go, image_id = rich_image
    dump = go.dump()
    assert len(dump) == 3
    rich = dump[image_id]
    assert rich["names"] == ["rich:latest", "quay.io/interop/rich:1"]
    assert rich["names_history"] == ["quay.io/interop/rich:1", "rich:latest", "rich:2"]
    assert rich["top_layer"] == go.cs("layers").split()[0]
    assert rich["digest"] == sha256(b"declared")
    assert sorted(rich["digests"]) == sorted([sha256(b"declared"), sha256(MANIFEST + b"\n")])
    assert rich["metadata"] == "rich metadata"
    assert rich["created"] == "2021-06-07T08:09:10.123456789+05:30"
    assert rich["flags"] == {"labels": {"a": "b", "n": [1, 2.5, None, True]}, "pinned": True}
    assert rich["read_only"] is False
    keys = [f"manifest-{sha256(MANIFEST)}", "Weird Key/../é"]
    assert rich["big_data_names"] == keys
    expected = {keys[0]: MANIFEST + b"\n", keys[1]: bytes(range(256))}
    assert rich["big_data"] == expected
    assert rich["big_data_sizes"] == {k: len(v) for k, v in expected.items()}
    assert rich["big_data_digests"] == {k: sha256(v) for k, v in expected.items()}
    # The CLI's view agrees with the dump (two ways into the same library).
    assert go.get_names(image_id) == rich["names"]
    a = next(i for i in dump.values() if "a:latest" in i["names"])
    assert a["big_data"] == {"manifest": MANIFEST, "sha256:Config/A": CONFIG, "notes.v1": b"plain name"}
    assert a["digest"] == sha256(MANIFEST)
    # Go's file names: the key itself when it is only [.0-9a-z], else "=" + standard base64.
    files = sorted(p.name for p in (go.images_dir / a["id"]).iterdir())
    assert files == sorted(["manifest", "=" + base64.b64encode(b"sha256:Config/A").decode(), "notes.v1"])


def test_go_writes_last_writer_bytes(go_images: tuple[GoStore, str, str]) -> None:
    go, a, _ = go_images
    before = go.last_writer()
    ns, _, _, _ = parse_last_writer(before)
    go.cs("add-names", "-n", "a:more", a)
    after = go.last_writer()
    assert after != before
    ns2, _, pid2, _ = parse_last_writer(after)
    assert ns2 >= ns and pid2 > 0
    assert go.lock_path.stat().st_size == 64  # pwrite at 0, never truncated or appended to
    go.cs("images")
    assert go.last_writer() == after  # a reader does not touch it


def test_journalstore_reads_go_store_read_only(rich_image: tuple[GoStore, str]) -> None:
    go, _ = rich_image
    dump = go.dump()
    store = ImageStore(go.images_dir, read_only=True)
    try:
        assert_store_matches_go(store, dump)
        assert all(image.read_only for image in store.images())
    finally:
        store.close()
    assert not (go.images_dir / "journal").exists()  # reading converted nothing


def test_journalstore_reads_the_same_after_import(rich_image: tuple[GoStore, str]) -> None:
    go, _ = rich_image
    dump = go.dump()
    journalstore_import(go.images_dir)
    assert (go.images_dir / "journal").is_dir()
    with ImageStore(go.images_dir) as store:
        assert_store_matches_go(store, dump)
    reader = ImageStore(go.images_dir, read_only=True)
    try:
        assert_store_matches_go(reader, dump)
    finally:
        reader.close()
    # Go still reads the converted directory, unchanged.
    assert go.dump() == dump


def test_watcher_sees_another_process_write(go_images: tuple[GoStore, str, str]) -> None:
    go, a, _ = go_images
    with go.watcher() as watcher:
        assert watcher.names(a) == ["quay.io/interop/a:1", "a:latest"]
        started = time.monotonic()
        go.cs("add-names", "-n", "a:watched", a)
        watcher.wait_for(lambda line: "a:watched" in (watcher.names(a, line) or []), timeout=5)
        assert time.monotonic() - started < 5
        go.cs("delete-image", a)
        watcher.wait_for(lambda line: watcher.names(a, line) is None, timeout=5)


def test_watcher_ignores_a_rewrite_without_new_last_writer_bytes(go_images: tuple[GoStore, str, str]) -> None:
    """Go's rule, which the library work must follow: nothing but new last-writer bytes makes a
    long-lived Go client reload images.json."""
    go, a, _ = go_images
    with go.watcher() as watcher:
        images_json = go.images_dir / "images.json"
        docs = json.loads(images_json.read_bytes())
        for doc in docs:
            if doc["id"] == a:
                doc["names"].append("a:silent")
        tmp = images_json.with_suffix(".tmp")
        tmp.write_text(json.dumps(docs))
        tmp.replace(images_json)
        with pytest.raises(AssertionError, match="no matching line"):
            watcher.wait_for(lambda line: "a:silent" in (watcher.names(a, line) or []), timeout=1.0)
        with open(go.lock_path, "r+b") as f:  # what journalstore will do after publishing
            f.write(b"\x01" * 64)
        watcher.wait_for(lambda line: "a:silent" in (watcher.names(a, line) or []), timeout=5)


def test_podman_imported_image_is_read_by_journalstore(go_store: GoStore, tmp_path: Path) -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman is missing (Debian package podman); install it with `make interop-deps`")
    context = tmp_path / "context"
    context.mkdir()
    (context / "hello.txt").write_text("hello from the interop tests\n")
    tarball = tmp_path / "rootfs.tar"
    subprocess.run(["tar", "-C", str(context), "-cf", str(tarball), "."], check=True, timeout=60)
    # podman refuses a runroot longer than 50 characters: a short one of its own, removed afterwards.
    runroot = Path(tempfile.mkdtemp(prefix="jsi-"))
    try:
        argv = ["podman", "--root", str(go_store.root), "--runroot", str(runroot)]
        argv += ["--tmpdir", str(runroot / "libpod"), "--events-backend", "none", "--storage-driver", "vfs"]
        argv += ["import", str(tarball), "localhost/interop:1"]
        proc = subprocess.run(argv, check=False, capture_output=True, timeout=180)
    finally:
        shutil.rmtree(runroot, ignore_errors=True)
    if proc.returncode != 0:
        pytest.skip(f"podman import failed here: {proc.stderr.decode('utf-8', 'replace').strip()[-500:]}")
    dump = go_store.dump()
    assert len(dump) == 1
    (theirs,) = dump.values()
    assert theirs["names"] == ["localhost/interop:1"]
    assert theirs["top_layer"] and "manifest" in theirs["big_data_names"]
    store = ImageStore(go_store.images_dir, read_only=True)
    try:
        assert_store_matches_go(store, dump)
        assert store.get("localhost/interop:1").id == theirs["id"]
        assert [i.id for i in store.by_digest(theirs["digest"])] == [theirs["id"]]
    finally:
        store.close()
