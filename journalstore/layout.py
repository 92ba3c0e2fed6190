"""The store directory's layout: where each file lives, and the whole-file steps on them.

Owns the names (images.json, images.lock, journal/, segment files) and the few operations that
create or clean whole files there: a new store directory, a new segment, a second name for a
snapshot, a binary twin, dead temporaries. It holds no state of the store and takes no lock:
callers hold the writers' lock where a step needs it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import journal as jn
from . import snapshot as snap
from .errors import StoreWarning
from .fsio import Disk
from .record import Image

JOURNAL_DIR = "journal"
LOCK_FILE = "images.lock"
MARK_FILE = "published"  # in journal/: what images.json holds, for telling Go's saves from ours
CONTAINERS_STORAGE_LOCK = "storage.lock"  # in the root whose <driver>-images/ a store may be


def journal_file_segment(name: str) -> int | None:
    """The segment a journal-directory file belongs to (segment, its .broken copies, its snapshot,
    the snapshot's history-index sidecar)."""
    head = name.split(".", 1)[0]
    for prefix in ("segment-", "snapshot-", "history-"):
        if head.startswith(prefix) and head[len(prefix) :].isdigit():
            return int(head[len(prefix) :])
    return None


def process_exists(pid: int) -> bool:
    """Whether a process with this pid exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


class Layout:
    """The paths of one store directory and the whole-file operations on them."""

    def __init__(self, disk: Disk, path: str, sync: bool) -> None:
        self.disk = disk
        self.path = path
        self.sync = sync
        self.journal_dir = os.path.join(path, JOURNAL_DIR)
        self.images_json = os.path.join(path, snap.IMAGES_JSON)
        self.lock_file = os.path.join(path, LOCK_FILE)
        self.mark_file = os.path.join(self.journal_dir, MARK_FILE)

    def in_containers_storage_root(self) -> bool:
        """Whether the directory is the image store of a containers/storage root (a sibling
        `storage.lock`, which every containers/storage root has): then it is shared with Go."""
        return self.disk.exists(os.path.join(os.path.dirname(self.path), CONTAINERS_STORAGE_LOCK))

    def segments(self) -> list[int]:
        """The segment numbers in journal/, oldest first ([] for no journal)."""
        try:
            names = self.disk.listdir(self.journal_dir)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(n for n in map(jn.parse_segment_name, names) if n is not None)

    def make_directory(self) -> None:
        """Create the store directory and its missing parents, each entry made durable: without
        an fsync of its parent, a power cut could lose a new store with every write in it."""
        disk = self.disk
        missing: list[str] = []
        path = self.path
        while not disk.is_dir(path) and os.path.dirname(path) != path:
            missing.append(path)
            path = os.path.dirname(path)
        disk.makedirs(self.path, 0o700)
        if self.sync:
            for created in reversed(missing):
                disk.fsync_dir(os.path.dirname(created))

    def link_or_copy(self, src: str, dst: str, data: bytes) -> None:
        """Give `src`'s bytes a second name (a hard link where the filesystem allows)."""
        disk = self.disk
        tmp = dst + ".tmp"
        with contextlib.suppress(FileNotFoundError):
            disk.unlink(tmp)
        try:
            disk.link(src, tmp)
            if self.sync:
                fd = disk.open(tmp, os.O_RDONLY)
                try:
                    disk.fsync(fd)
                finally:
                    disk.close(fd)
        except OSError:
            disk.write_file(tmp, data, sync=self.sync)
        disk.rename(tmp, dst)
        if self.sync:
            disk.fsync_dir(os.path.dirname(dst))

    def create_segment(
        self, number: int, base_seq: int, snapshot: Mapping[str, Any] | None, records: bytes = b""
    ) -> None:
        """Write a new segment file with its header (and any records), whole or not at all."""
        meta: dict[str, Any] = {
            "segment": number,
            "base_seq": base_seq,
            "snapshot": None if snapshot is None else dict(snapshot),
            "created": time.time_ns(),
        }
        path = os.path.join(self.journal_dir, jn.segment_name(number))
        tmp = path + ".tmp"
        self.disk.write_file(tmp, jn.encode_segment_header(meta) + records, sync=self.sync)
        self.disk.rename(tmp, path)
        if self.sync:
            self.disk.fsync_dir(self.journal_dir)

    def write_twin(
        self, segment: int, images: Iterable[Image], orders: Mapping[str, Sequence[str]], digest: str, size: int
    ) -> None:
        """Best effort: a missing or torn twin only makes the next cold open parse JSON."""
        path = os.path.join(self.journal_dir, snap.twin_name(segment))
        try:
            data = snap.encode_twin(images, orders, digest, size)
            tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
            self.disk.write_file(tmp, data, sync=False)
            self.disk.rename(tmp, path)
        except OSError as exc:
            warnings.warn(f"could not write {path}: {exc}", StoreWarning, stacklevel=4)

    def remove_dead_temporaries(self) -> None:
        """Delete temporary files in journal/ that writers killed mid-write left (lock held).

        `NAME.tmp` files are only written under the lock, so none is in use now; `NAME.tmp-PID-TID`
        files are written without it by a background compaction, so only those of a process that
        no longer exists go.
        """
        for name in self.disk.listdir(self.journal_dir):
            if not name.endswith(".tmp"):
                head, _, tail = name.rpartition(".tmp-")
                pid = tail.split("-", 1)[0]
                if not head or not pid.isdigit() or process_exists(int(pid)):
                    continue
            with contextlib.suppress(FileNotFoundError):
                self.disk.unlink(os.path.join(self.journal_dir, name))
