"""A writer killed (SIGKILL) at every named failpoint: the store reopens to exactly the state
before or after the interrupted call, files agree with the journal, and nothing leaks."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

from journalstore import ImageStore, StoreWarning, failpoints

from .helpers import history_problems

SETUP = """
from journalstore import ImageStore
s = ImageStore(ROOT)
a = s.create(id="a" * 64, names=["keep"], big_data=[("manifest", b"old manifest"), ("config", b"old config")])
b = s.create(id="b" * 64, names=["doomed"], big_data=[("manifest", b"doomed manifest")])
s.close()
"""

OPS = {
    "create": 's.create(id="c" * 64, names=["new"], layer="L")',
    "create-big": 's.create(id="d" * 64, names=["big"], big_data=[("manifest", b"m2"), ("x", b"y")])',
    "overwrite": 's.set_big_data("keep", "manifest", b"new manifest bytes")',
    "delete": 's.delete("doomed")',
    "compact": "s.compact()",
    "batch": (
        'with s.batch():\n'
        '    s.set_big_data("keep", "config", b"new config")\n'
        '    s.delete("doomed")\n'
        '    s.create(id="e" * 64, names=["batched"], big_data=[("k", b"v")])'
    ),
}

# Which operations pass through which failpoints.
CASES = [
    (fp, op, 0)
    for fp in failpoints.NAMES
    for op in OPS
    if (fp.startswith("append") and op in ("create", "overwrite", "batch"))
    or (fp == "bigdata-after-keep" and op in ("overwrite", "delete", "batch"))  # bytes replaced
    or (fp.startswith("bigdata") and fp != "bigdata-after-keep" and op in ("create-big", "overwrite", "batch"))
    or (fp.startswith("delete") and op in ("delete", "batch"))
    or (fp.startswith("commit") and op in ("create", "create-big", "overwrite", "delete", "batch"))
    or ((fp.startswith("snapshot") or fp.startswith("compact") or fp.startswith("publish")) and op == "compact")
]
# A big-data write appends twice (prepare, then commit): die in the second append too.
CASES += [(fp, op, 1) for fp in failpoints.NAMES if fp.startswith("append") for op in ("overwrite", "batch")]


def run(root: Path, code: str, failpoint: str | None = None, skip: int = 0) -> int:
    env = dict(os.environ)
    env.pop("JOURNALSTORE_FAILPOINT", None)
    env["JOURNALSTORE_FAILPOINT_SKIP"] = str(skip)
    if failpoint:
        env["JOURNALSTORE_FAILPOINT"] = failpoint
    script = f"ROOT = {str(root)!r}\n" + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], env=env, check=False).returncode


def state_of(root: Path) -> list[dict[str, Any]]:
    with ImageStore(root, read_only=True) as r:
        return [i.to_json() for i in r.images()]


def check_past_bytes(store: ImageStore) -> None:
    """Every past state still in the journal gives back the exact bytes of its big-data items."""
    for seq in range(store.history_start - 1, store.seq + 1):
        view = store.at(seq)
        for image in view.images():
            for key in image.big_data_names:
                data = view.big_data(image.id, key)
                assert "sha256:" + hashlib.sha256(data).hexdigest() == image.big_data_digests[key], (seq, key)


def check_files(store: ImageStore) -> None:
    for image in store.images():
        for key in image.big_data_names:
            data = store.big_data(image.id, key)
            assert len(data) == image.big_data_sizes[key], (image.id, key)
            assert "sha256:" + hashlib.sha256(data).hexdigest() == image.big_data_digests[key], (image.id, key)


def test_every_failpoint_is_exercised() -> None:
    assert {fp for fp, _, _ in CASES} == set(failpoints.NAMES)


@pytest.mark.parametrize(("failpoint", "op", "skip"), CASES)
def test_killed_writer_recovers(tmp_path: Path, failpoint: str, op: str, skip: int) -> None:
    root = tmp_path / "s"
    assert run(root, SETUP) == 0
    before = state_of(root)
    after_root = tmp_path / "reference"
    assert run(after_root, SETUP) == 0
    assert run(after_root, "from journalstore import ImageStore\ns = ImageStore(ROOT)\n" + OPS[op]) == 0
    after = state_of(after_root)

    code = "from journalstore import ImageStore\ns = ImageStore(ROOT)\n" + OPS[op] + "\nprint('survived')"
    assert run(root, code, failpoint, skip) == -9, f"{failpoint} was not hit by {op}"

    # A reader sees a consistent state without repairing anything.
    got = state_of(root)
    assert _strip_created(got) in (_strip_created(before), _strip_created(after))

    with ImageStore(root) as s:
        got = [i.to_json() for i in s.images()]
        assert _strip_created(got) in (_strip_created(before), _strip_created(after))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", StoreWarning)
            s.create(names=["probe"])  # the next writer repairs what the dead one left
        # A cut is always announced, with where the cut bytes were kept.
        for w in caught:
            assert issubclass(w.category, StoreWarning) and "a copy is in" in str(w.message), w
        check_files(s)
        assert history_problems(s) == []  # history complete, every kept blob matching its digest
        s.garbage_collect()
        assert s.garbage_collect() == []
        assert os.listdir(root / "journal" / "staging") == []
        dirs = {p.name for p in root.iterdir() if p.is_dir() and len(p.name) == 64}
        assert dirs <= {i.id for i in s.images()}
    with ImageStore(root, read_only=True) as r:
        assert r.exists("probe")
        check_files(r)
        check_past_bytes(r)


def _strip_created(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Creation times differ between the two runs; everything else must match exactly."""
    return [{k: v for k, v in d.items() if k != "created"} for d in docs]
