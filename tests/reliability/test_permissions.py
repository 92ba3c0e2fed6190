"""Permissions (issue 7, suite 6): the modes containers/storage gives its files, and a user who
cannot write the store.

- With umask 0 (so the modes the code asks for show unmasked), every directory and file a store
  makes has containers/storage's mode: the store directory, journal/, staging/ and image
  directories 0700; segments, snapshots, twins, images.json, .broken copies and big-data files
  0600; images.lock 0644 (Go's lockfile). With umask 022 and 077 the modes are the same.
- A user who cannot write the store (root drops to nobody in a subprocess, after importing
  everything: the interpreter lives in root's home) opens it read-write: it falls back to
  read-only with a StoreWarning saying why, every read works, and every write (each method,
  batch(), compact(), garbage_collect(), prune_journal()) raises StoreIsReadOnly whose message
  says why. Both reasons are covered: a directory the user cannot write, and an images.lock the
  user cannot open for writing.
- Such a user, or `read_only=True`, opening a store a writer died in the middle of (a torn record,
  a prepared big-data write never committed, a compaction cut after its end marker or before
  publishing images.json, a deleted image's directory half removed, a background compaction
  killed while writing its snapshot) sees the state the next writer will repair it to and
  changes nothing: not a byte, mode, inode or time of any file.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from journalstore import ImageStore, StoreWarning, failpoints

from ..helpers import tree_stat
from ..model import snapshot_of_store
from .conftest import STRESS

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534

SETUP = """
from journalstore import ImageStore
s = ImageStore(ROOT, compact_every=None)
s.create("a" * 64, ["keep", "keep:2"], "L1", big_data=[("manifest", b"manifest a"), ("config", b"config a")])
s.create("b" * 64, ["doomed"], big_data=[("manifest", b"manifest b"), ("Key/é", b"weird key")])
s.create("c" * 64, ["plain"], flags={"f": [1, "x"]})
s.compact()
s.set_metadata("keep", "meta")
s.add_mapped_top_layer("plain", "M1")
s.close()
"""

# (name, operation that a writer is killed in, failpoint, skip)
OPEN = "from journalstore import ImageStore\ns = ImageStore(ROOT)\n"
CRASHES = [
    ("torn-record", OPEN + 's.create("d" * 64, ["new"])', "append-torn-write", 0),
    (
        "prepare-never-committed",
        OPEN + 's.set_big_data("keep", "manifest", b"new manifest")',
        "bigdata-after-rename",
        0,
    ),
    ("compaction-after-end-marker", OPEN + "s.compact()", "compact-after-end-marker", 0),
    ("compaction-before-publish", OPEN + "s.compact()", "compact-before-publish", 0),
    ("delete-mid-remove", OPEN + 's.delete("doomed")', "delete-mid-remove", 0),
    (
        "background-snapshot-tmp",
        OPEN.replace("(ROOT)", "(ROOT, compact_every=1)") + 's.create("e" * 64, ["bg"])\ns.close()',
        "snapshot-before-rename",
        0,
    ),
]

# Stress mode adds a writer killed at each of the other failpoints, in an operation that passes it.
_OP_OF = {
    "append": OPEN + 's.create("d" * 64, ["new"])',
    "commit": OPEN + 's.create("d" * 64, ["new"])',
    "bigdata": OPEN + 's.set_big_data("keep", "manifest", b"new")',
    "delete": OPEN + 's.delete("doomed")',
    "snapshot": OPEN + "s.compact()",
    "compact": OPEN + "s.compact()",
    "publish": OPEN + "s.compact()",
}
if STRESS:
    _covered = {failpoint for _, _, failpoint, _ in CRASHES}
    CRASHES += [
        (f"at-{name}", _OP_OF[name.split("-", 1)[0]], name, 0) for name in failpoints.NAMES if name not in _covered
    ]
    CRASHES += [
        (f"at-{name}-second-append", _OP_OF["bigdata"], name, 1)
        for name in failpoints.NAMES
        if name.startswith("append")
    ]

# Run by the unprivileged user: reads everything, tries every write, prints one JSON document.
NOBODY_SCRIPT = """
import hashlib, json, os, sys, warnings
import journalstore, journalstore.audit
from journalstore import ImageStore, StoreIsReadOnly
from tests.model import snapshot_of_store
paths = json.loads(sys.argv[1])
os.setgroups([]); os.setgid(NOBODY); os.setuid(NOBODY)  # everything is imported: drop privileges

WRITES = {
    "create": lambda s: s.create(names=["new"]),
    "set_names": lambda s: s.set_names("keep", ["x"]),
    "add_names": lambda s: s.add_names("keep", ["x"]),
    "remove_names": lambda s: s.remove_names("keep", ["keep"]),
    "delete": lambda s: s.delete("keep"),
    "wipe": lambda s: s.wipe(),
    "set_metadata": lambda s: s.set_metadata("keep", "x"),
    "set_flag": lambda s: s.set_flag("keep", "k", 1),
    "clear_flag": lambda s: s.clear_flag("plain", "f"),
    "set_big_data": lambda s: s.set_big_data("keep", "config", b"x"),
    "add_mapped_top_layer": lambda s: s.add_mapped_top_layer("keep", "M"),
    "remove_mapped_top_layer": lambda s: s.remove_mapped_top_layer("plain", "M1"),
    "batch": lambda s: s.batch().__enter__(),
    "compact": lambda s: s.compact(),
    "garbage_collect": lambda s: s.garbage_collect(),
    "prune_journal": lambda s: s.prune_journal(keep_segments=0),
}

def visit(path, read_only):
    out = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = ImageStore(path, read_only=read_only)
        out["read_only"] = store.read_only
        out["snapshot"] = snapshot_of_store(store)
        data = {}
        for image in store.images():
            for key in image.big_data_names:
                blob = store.big_data(image.id, key)
                data[image.id + "/" + key] = [len(blob), "sha256:" + hashlib.sha256(blob).hexdigest()]
        out["data"] = data
        out["history"] = sum(1 for _ in store.history())
        out["past"] = len(store.at(1).images()) if store.seq else 0
        out["writes"] = {}
        for name, write in WRITES.items():
            try:
                write(store)
                out["writes"][name] = "accepted"
            except StoreIsReadOnly as exc:
                out["writes"][name] = "refused: " + str(exc)
            except Exception as exc:
                out["writes"][name] = "raised " + type(exc).__name__ + ": " + str(exc)
        out["snapshot_after"] = snapshot_of_store(store)
        store.close()
    out["warnings"] = [type(w.message).__name__ + ": " + str(w.message) for w in caught]
    return out

result = {path: {"rw": visit(path, False), "ro": visit(path, True)} for path in paths}
print(json.dumps(result))
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _run(root: Path, code: str, failpoint: str | None = None, skip: int = 0) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNALSTORE_FAILPOINT")}
    if failpoint:
        env["JOURNALSTORE_FAILPOINT"] = failpoint
        env["JOURNALSTORE_FAILPOINT_SKIP"] = str(skip)
    script = f"ROOT = {str(root)!r}\n" + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, check=False).returncode


def _plain(value: Any) -> Any:
    """The form a value takes after a JSON round trip (for comparing with the subprocess)."""
    return json.loads(json.dumps(value))


def _world_readable(root: Path) -> None:
    """What a store shared with other users looks like: directories 0755, files 0644."""
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


@pytest.fixture
def shared_base() -> Iterator[Path]:
    """A directory other users can traverse (pytest's own temporary directory is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="js-perm-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _as_nobody(paths: list[Path]) -> dict[str, Any]:
    code = NOBODY_SCRIPT.replace("NOBODY", str(NOBODY))
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps([str(p) for p in paths])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


# ----------------------------------------------------------------------------- modes


def _every_kind_of_file(root: Path) -> None:
    """Make a store create each kind of file it has: big data, snapshots and twins, a new
    segment, a .broken copy of a torn record."""
    assert _run(root, SETUP) == 0
    assert _run(root, OPEN + 's.create("d" * 64)', "append-torn-write") == -9
    with ImageStore(root) as s:
        s.create("e" * 64, ["e"], big_data=[("manifest", b"e")])  # cuts the torn record: .broken copy
        s.compact()


EXPECTED_MODES = {
    "store": 0o700,
    "journal": 0o700,
    "staging": 0o700,
    "image directory": 0o700,
    "big data": 0o600,
    "segment": 0o600,
    "snapshot": 0o600,
    "twin": 0o600,
    "broken copy": 0o600,
    "images.json": 0o600,
    "images.lock": 0o644,
    "publication mark": 0o600,
}


def _kind(root: Path, path: Path) -> str:
    rel = path.relative_to(root).parts
    name = path.name
    if not rel:
        return "store"
    if rel in (("images.json",), ("images.lock",)):
        return name
    if rel[0] == "journal":
        if len(rel) == 1:
            return "journal"
        if rel[1] == "staging":
            return "staging"
        if ".broken-" in name:
            return "broken copy"
        if name.startswith("segment-"):
            return "segment"
        if name.endswith(".msgpack"):
            return "twin"
        if name.startswith("snapshot-") and name.endswith(".json"):
            return "snapshot"
        if name == "published":
            return "publication mark"
    if len(rel[0]) == 64:
        return "image directory" if len(rel) == 1 else "big data"
    raise AssertionError(f"a file of no known kind: {path}")


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_files_get_containers_storage_modes(tmp_path: Path, umask: int, summary: Callable[..., None]) -> None:
    root = tmp_path / "store"
    old = os.umask(umask)  # the children inherit it
    try:
        # It leaves an unfinished record on purpose (to make a .broken copy); the cut is announced.
        with pytest.warns(StoreWarning, match="unfinished record"):
            _every_kind_of_file(root)
    finally:
        os.umask(old)
    seen: dict[str, int] = {}
    for path in [root, *root.rglob("*")]:
        kind = _kind(root, path)
        assert _mode(path) == EXPECTED_MODES[kind] & ~umask, f"{path.relative_to(root)} ({kind}): {oct(_mode(path))}"
        seen[kind] = seen.get(kind, 0) + 1
    assert set(seen) == set(EXPECTED_MODES), f"kinds not made: {set(EXPECTED_MODES) - set(seen)}"
    if umask == 0:
        summary("permissions-modes", files=sum(seen.values()), kinds=len(seen), wrong_modes=0)


# ----------------------------------------------------------------------------- other users


def _check_refusals(writes: dict[str, str], reason: str, path: Path) -> None:
    for name, outcome in writes.items():
        assert outcome.startswith("refused: "), f"{name}: {outcome}"
        assert str(path) in outcome and reason in outcome, f"{name}: the message does not say why: {outcome}"


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")


@needs_root
def test_a_user_who_cannot_write_gets_a_read_only_store(shared_base: Path, summary: Callable[..., None]) -> None:
    # A store nobody can read but not write, and one whose directory is writable by everyone
    # but whose lock file is not (so only opening the lock fails).
    locked_dir = shared_base / "store"
    assert _run(locked_dir, SETUP) == 0
    _world_readable(locked_dir)
    locked_lock = shared_base / "lock-only"
    assert _run(locked_lock, SETUP) == 0
    _world_readable(locked_lock)
    locked_lock.chmod(0o777)
    expected: dict[Path, Any] = {}
    for path in (locked_dir, locked_lock):
        with ImageStore(path, read_only=True) as reader:
            expected[path] = _plain(snapshot_of_store(reader))
            history = sum(1 for _ in reader.history())
    before = {p: tree_stat(p) for p in (locked_dir, locked_lock)}
    time.sleep(0.01)  # a change of any time stamp would show

    result = _as_nobody([locked_dir, locked_lock])

    refusals = 0
    for path, reason in ((locked_dir, "is not writable by this user"), (locked_lock, "cannot open images.lock")):
        rw, ro = result[str(path)]["rw"], result[str(path)]["ro"]
        assert rw["read_only"] is True and ro["read_only"] is True
        assert len(rw["warnings"]) == 1 and rw["warnings"][0].startswith("StoreWarning: opening")
        assert "read-only" in rw["warnings"][0] and reason in rw["warnings"][0], rw["warnings"]
        assert ro["warnings"] == []
        for visit in (rw, ro):
            assert visit["snapshot"] == expected[path] == visit["snapshot_after"]
            assert visit["history"] == history > 0 and visit["past"] == 1
            assert len(visit["data"]) == 4
        _check_refusals(rw["writes"], reason, path)
        _check_refusals(ro["writes"], "opened read-only", path)
        refusals += len(rw["writes"]) + len(ro["writes"])
        assert tree_stat(path) == before[path], f"{path.name}: the read-only user changed files"
    summary("permissions-other-user", stores=2, writes_refused=refusals, files_changed=0)


@needs_root
def test_a_read_only_user_on_a_store_a_writer_died_in_changes_nothing(
    shared_base: Path, summary: Callable[..., None]
) -> None:
    stores: list[tuple[Path, str]] = []
    for name, op, failpoint, skip in CRASHES:
        root = shared_base / name
        assert _run(root, SETUP) == 0
        assert _run(root, op, failpoint, skip) == -9, f"{name}: {failpoint} was not hit"
        _world_readable(root)
        stores.append((root, name))
    expected: dict[Path, Any] = {}
    before: dict[Path, Any] = {}
    for root, _ in stores:
        with ImageStore(root, read_only=True) as reader:  # root reading changes nothing either
            expected[root] = _plain(snapshot_of_store(reader))
        before[root] = tree_stat(root)
    time.sleep(0.01)

    result = _as_nobody([root for root, _ in stores])

    for root, name in stores:
        rw, ro = result[str(root)]["rw"], result[str(root)]["ro"]
        assert tree_stat(root) == before[root], f"{name}: a read-only open changed files"
        for visit in (rw, ro):
            assert visit["read_only"] is True
            assert visit["snapshot"] == expected[root] == visit["snapshot_after"], name
            for item, (size, digest) in visit["data"].items():
                image_id, key = item.split("/", 1)
                image = next(dict(i) for i in visit["snapshot"]["images"] if dict(i)["id"] == image_id)
                assert size == dict(image["big-data-sizes"])[key], item
                assert digest == dict(image["big-data-digests"])[key], item
        _check_refusals(rw["writes"], "is not writable by this user", root)
        # The next writer repairs the store to exactly what the readers saw (announcing any cut it
        # makes: a StoreWarning, expected here for the writers that died mid-append).
        with warnings.catch_warnings(), ImageStore(root, fsync="never") as writer:
            warnings.simplefilter("ignore", StoreWarning)
            writer.garbage_collect()
            assert _plain(snapshot_of_store(writer)) == expected[root], f"{name}: the repair changed the state"
            assert writer.verify().ok
    summary("permissions-crashed-stores", stores=len(stores), read_only_opens=2 * len(stores), files_changed=0)
