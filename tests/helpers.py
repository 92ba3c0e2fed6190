"""Small helpers shared by the model-based tests: file-tree fingerprints and store comparisons."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any


def tree_bytes(root: str | os.PathLike[str]) -> dict[str, tuple[str, str]]:
    """Every file and directory under `root` (itself excluded): relative path -> (kind, sha256 of
    the bytes, "" for a directory). Equal values mean a byte-identical tree."""
    out: dict[str, tuple[str, str]] = {}
    base = Path(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames:
            out[str(Path(dirpath, name).relative_to(base))] = ("dir", "")
        for name in filenames:
            path = Path(dirpath, name)
            out[str(path.relative_to(base))] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def tree_stat(root: str | os.PathLike[str]) -> dict[str, tuple[Any, ...]]:
    """Like `tree_bytes`, with each entry's type, mode, size, inode, link count, mtime and ctime
    (atime left out: reading is allowed to change it). The root directory itself is included."""
    out: dict[str, tuple[Any, ...]] = {}
    base = Path(root)

    def record(path: Path) -> None:
        st = os.lstat(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
        out[str(path.relative_to(base))] = (
            stat.S_IFMT(st.st_mode),
            stat.S_IMODE(st.st_mode),
            st.st_size if not stat.S_ISDIR(st.st_mode) else 0,
            st.st_ino,
            st.st_nlink,
            st.st_mtime_ns,
            st.st_ctime_ns,
            digest,
        )

    record(base)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            record(Path(dirpath, name))
    return out


def lookup_id(store: Any, ref: str) -> str | None:
    """The ID the store resolves `ref` to, or None when it raises ImageUnknown."""
    from journalstore.errors import ImageUnknown

    try:
        image = store.get(ref)
    except ImageUnknown:
        return None
    return str(image.id)


def history_problems(store: Any, limit: int = 6) -> list[str]:
    """What is wrong with a store's history index: each image's history found by walking its
    records' back-pointers must equal the one a full replay of the journal finds (checked for up
    to `limit` images, deleted ones included), and every kept past big-data blob must match its
    digest (verify checks them)."""
    from journalstore.audit import Journal
    from journalstore.fsio import DEFAULT_DISK

    journal = Journal(DEFAULT_DISK, str(store.path))
    ids = sorted({e.image_id for e in store.history() if e.image_id})
    problems: list[str] = []
    for image_id in ids[:limit]:
        linked = [(e.seq, e.kind, e.image_id) for e in store.history(image_id)]
        scanned = [(e.seq, e.kind, e.image_id) for e in journal.history(image_id)]
        if linked != scanned:
            problems.append(f"history of {image_id[:12]}: linked {linked} != scanned {scanned}")
    report = store.verify()
    problems += [f"verify: {p}" for p in report.problems]
    return problems
