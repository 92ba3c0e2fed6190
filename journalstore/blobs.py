"""Past big-data bytes: what an overwrite or a delete replaced, kept by content under journal/blobs/.

Before the record that replaces an item's file commits, the writer keeps the file's bytes as
`journal/blobs/sha256/<hex of their sha256>`: a hard link of the file (its inode never changes:
big-data files are only ever replaced by a rename), or, where links fail, a copy written to a
temporary file, fsynced and renamed. The record lists what it kept (`kept`); a blob is kept as
long as a retained journal segment holds a record that kept it, and pruning the journal removes
the others. containers/storage never looks in journal/.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from . import failpoints
from .fsio import Disk

BLOBS = "blobs"
ALGORITHM = "sha256"


class Replaced(NamedTuple):
    """A big-data file a transaction is about to replace (overwrite or delete)."""

    image_id: str
    key: str
    path: str


def blob_digest(data: bytes) -> str:
    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


def _hex_ok(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def kept_entries(body: Mapping[str, Any]) -> Iterator[tuple[Any, Any, str]]:
    """(image ID, key, blob digest) of each item a commit record lists in `kept` (entries of
    another shape are skipped)."""
    for entry in body.get("kept", ()):
        try:
            item = (entry[0], entry[1], str(entry[2]))
        except (TypeError, IndexError, KeyError):
            continue
        yield item


def kept_digests(body: Mapping[str, Any]) -> Iterator[str]:
    """The blob digests a commit record lists in `kept`."""
    for _image_id, _key, digest in kept_entries(body):
        yield digest


def kept_digest(body: Mapping[str, Any], image_id: str, key: str) -> str | None:
    """The digest of the blob a commit record kept for one image's item, if it kept one."""
    for kept_id, kept_key, digest in kept_entries(body):
        if kept_id == image_id and kept_key == key:
            return digest
    return None


class Blobs:
    """The kept past bytes of one store."""

    def __init__(self, disk: Disk, journal_dir: str, sync: bool) -> None:
        self.disk = disk
        self.dir = os.path.join(journal_dir, BLOBS)
        self.sync = sync

    def path(self, digest: str) -> str | None:
        """Where the blob of a digest lives; None for a digest that cannot name one."""
        algorithm, _, hexpart = digest.partition(":")
        if algorithm != ALGORITHM or not _hex_ok(hexpart):
            return None
        return os.path.join(self.dir, algorithm, hexpart)

    def read(self, digest: str) -> bytes | None:
        """The blob's bytes if it is kept and they still match the digest."""
        path = self.path(digest)
        if path is None:
            return None
        try:
            data = self.disk.read_file(path)
        except OSError:
            return None
        return data if blob_digest(data) == digest else None

    # ------------------------------------------------------------------ keeping

    def keep(self, replaced: Iterable[Replaced]) -> list[list[str]]:
        """Keep the bytes of files about to be replaced; returns `[image_id, key, blob digest]`
        for each (caller holds the writers' lock; runs before the record that replaces them)."""
        disk = self.disk
        kept: list[list[str]] = []
        made = created = False
        for item in replaced:
            try:
                data = disk.read_file(item.path)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                continue  # nothing on disk to keep (never written, or already gone)
            digest = blob_digest(data)
            path = self.path(digest)
            assert path is not None
            if not disk.exists(path):
                directory = os.path.dirname(path)
                if not disk.is_dir(directory):
                    created = not disk.is_dir(self.dir)  # journal/blobs itself is new
                    disk.makedirs(directory, 0o700)
                try:
                    disk.link(item.path, path)  # atomic: the name appears with whole bytes
                except FileExistsError:
                    pass
                except OSError:
                    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
                    disk.write_file(tmp, data, sync=self.sync)
                    disk.rename(tmp, path)
                made = True
            kept.append([item.image_id, item.key, digest])
        if made and self.sync:  # each new name durable in its directory, up to journal/
            disk.fsync_dir(os.path.join(self.dir, ALGORITHM))
            disk.fsync_dir(self.dir)
            if created:
                disk.fsync_dir(os.path.dirname(self.dir))
        if kept:
            failpoints.hit("bigdata-after-keep")
        return kept

    # ------------------------------------------------------------------ listing, retention

    def listing(self) -> Iterator[tuple[str, str]]:
        """(digest, path) of every blob file (temporaries left out)."""
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for algorithm in sorted(self.disk.listdir(self.dir)):
                directory = os.path.join(self.dir, algorithm)
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    for name in sorted(self.disk.listdir(directory)):
                        if ".tmp-" not in name:
                            yield f"{algorithm}:{name}", os.path.join(directory, name)

    def prune(self, newest_keeper: Mapping[str, int], complete_from: int, first_seq: int) -> list[str]:
        """Remove blobs no retained record kept: their newest keeper is at or before `first_seq`
        (history starts after it), or, when the index has seen every retained record
        (`complete_from` <= first_seq + 1), no record it knows kept them."""
        removed: list[str] = []
        complete = complete_from <= first_seq + 1
        for digest, path in list(self.listing()):
            keeper = newest_keeper.get(digest)
            if (keeper is not None and keeper <= first_seq) or (keeper is None and complete):
                with contextlib.suppress(FileNotFoundError):
                    self.disk.unlink(path)
                removed.append(digest)
        if removed and self.sync:
            with contextlib.suppress(FileNotFoundError):
                self.disk.fsync_dir(os.path.join(self.dir, ALGORITHM))
        return removed

    def remove_temporaries(self) -> None:
        """Copies a dead writer did not finish (caller holds the writers' lock)."""
        directory = os.path.join(self.dir, ALGORITHM)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for name in self.disk.listdir(directory):
                if ".tmp-" in name:
                    with contextlib.suppress(FileNotFoundError):
                        self.disk.unlink(os.path.join(directory, name))
