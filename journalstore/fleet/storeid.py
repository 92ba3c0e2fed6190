"""The store ID: a stable random identifier a store keeps in `journal/store-id`, made once.

The file holds 32 lower-case hex digits and a newline. The first `ship` of a store creates it
under the writers' lock, crash-safely (write `store-id.tmp`, fsync, rename, fsync journal/), so
two shippers starting together agree on one ID and a crash never leaves a half-written one.
"""

from __future__ import annotations

import os
import uuid

from ..errors import StoreError, StoreNotFound
from ..fsio import DEFAULT_DISK, Disk
from ..locking import WriterLock
from .messages import valid_store_id

FILE = "store-id"
_JOURNAL = "journal"
_LOCK = "images.lock"


def read_store_id(root: str, disk: Disk = DEFAULT_DISK) -> str | None:
    """The store's ID, or None if it has none yet; StoreError if the file is damaged."""
    path = os.path.join(root, _JOURNAL, FILE)
    try:
        text = disk.read_file(path).decode("ascii", "replace").strip()
    except FileNotFoundError:
        return None
    if not valid_store_id(text):
        raise StoreError(f"{path} does not hold a store ID (32 hex digits): remove it to make a new one")
    return text


def store_id(root: str, disk: Disk = DEFAULT_DISK, lock_timeout: float = 30.0) -> str:
    """The store's ID, created (under the writers' lock) if it has none yet."""
    found = read_store_id(root, disk)
    if found is not None:
        return found
    journal = os.path.join(root, _JOURNAL)
    if not disk.is_dir(journal):
        raise StoreNotFound(f"{root} has no journal: not a journalstore store")
    lock = WriterLock(disk, os.path.join(root, _LOCK), lock_timeout)
    lock.acquire()
    try:
        found = read_store_id(root, disk)
        if found is not None:
            return found
        new = uuid.uuid4().hex
        tmp = os.path.join(journal, FILE + ".tmp")
        disk.write_file(tmp, (new + "\n").encode("ascii"), sync=True, mode=0o644)
        disk.rename(tmp, os.path.join(journal, FILE))
        disk.fsync_dir(journal)
        return new
    finally:
        lock.release()
        lock.close()
