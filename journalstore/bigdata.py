"""Big-data files: their names on disk and the protocol that keeps them in step with the journal.

A big-data write is made durable in this order (docs/journal-format.md, "Big data"):
prepare record → staged copy (fsync) → backup link of the old file → rename into place →
fsync of the image directory → commit record. A crash before the commit is undone from the
prepare record (old bytes restored, new files removed); after it, only backups remain to be
deleted. No key, ID or name can make the store write outside its directory.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from . import failpoints
from .errors import InvalidBigDataName, InvalidID
from .fsio import Disk
from .validation import MAX_FILE_NAME, check_id, is_directory_name

_PLAIN_KEY = re.compile(r"[.0-9a-z]+")
STAGING = "staging"


def file_name(key: str) -> str:
    """The file name containers/storage uses for a big-data key (`=` + base64 unless plain)."""
    if _PLAIN_KEY.fullmatch(key) and key not in (".", ".."):
        return key
    return "=" + base64.b64encode(key.encode("utf-8")).decode("ascii")


def is_file_name(name: object) -> bool:
    """Whether `name` is what `file_name` makes of some key (so it names a file in the image's
    directory and nothing else): checked on every name a record gives."""
    if not isinstance(name, str) or not name:
        return False
    if not name.startswith("="):
        return _PLAIN_KEY.fullmatch(name) is not None and name not in (".", "..")
    try:
        key = base64.b64decode(name[1:].encode("ascii"), validate=True).decode("utf-8")
    except (ValueError, UnicodeError):
        return False
    return bool(key) and file_name(key) == name


def check_key(key: object) -> str:
    """A big-data key that names a file inside the image's directory."""
    if not isinstance(key, str):
        raise TypeError(f"big-data key must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidBigDataName("big-data key is empty")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidBigDataName(f"big-data key {key!r} cannot be encoded as UTF-8") from None
    if len(file_name(key)) > MAX_FILE_NAME:
        raise InvalidBigDataName(f"big-data key {key[:40]!r}... makes a file name over {MAX_FILE_NAME} bytes")
    return key


def sha256_digest(data: bytes) -> str:
    """The default digest of a big-data item (digest.Canonical.FromBytes)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Write(NamedTuple):
    """One big-data file a transaction writes."""

    image_id: str
    key: str
    data: bytes


class Planned(NamedTuple):
    """A write with its paths, decided under the writers' lock just before the commit."""

    image_id: str
    name: str  # file name inside the image directory
    had_old: bool
    dir_created: bool
    data: bytes


def _staged(staging: str, seq: int, index: int, suffix: str) -> str:
    return os.path.join(staging, f"{seq}-{index}.{suffix}")


class BigDataFiles:
    """The image directories of one store, and the staged-write protocol over them."""

    def __init__(self, disk: Disk, root: str, journal_dir: str) -> None:
        self.disk = disk
        self.root = root
        self.staging = os.path.join(journal_dir, STAGING)

    def dir(self, image_id: str) -> str:
        """The image's directory; InvalidID for an ID that would name anything else."""
        if not is_directory_name(image_id):
            check_id(image_id)  # says what is wrong
            raise InvalidID(f"image ID {image_id!r} cannot name a directory of the store")
        return os.path.join(self.root, image_id)

    def path(self, image_id: str, key: str) -> str:
        return os.path.join(self.dir(image_id), file_name(key))

    def read(self, image_id: str, key: str) -> bytes:
        return self.disk.read_file(self.path(image_id, key))

    def backup_of(self, prepare: Any, image_id: str, key: str) -> str | None:
        """Where the old bytes of a file being replaced wait, if a prepare record (not yet
        committed) is replacing it: the backup the writer keeps until its commit."""
        if prepare is None:
            return None
        body = prepare.body
        name = file_name(key)
        for index, entry in enumerate(body.get("files", ())):
            if entry[0] == image_id and entry[1] == name:
                return _staged(self.staging, int(body.get("seq", 0)), index, "old") if entry[2] else None
        return None

    # ------------------------------------------------------------------ writing

    def plan(self, writes: Sequence[Write]) -> list[Planned]:
        """Deduplicate (the last write of a key wins) and look at what is on disk now."""
        last: dict[tuple[str, str], bytes] = {}
        for w in writes:
            last.pop((w.image_id, w.key), None)
            last[(w.image_id, w.key)] = w.data
        planned: list[Planned] = []
        existed: dict[str, bool] = {}
        for (image_id, key), data in last.items():
            first = image_id not in existed
            if first:
                existed[image_id] = self.disk.is_dir(self.dir(image_id))
            name = file_name(key)
            had_old = existed[image_id] and self.disk.exists(os.path.join(self.dir(image_id), name))
            planned.append(Planned(image_id, name, had_old, first and not existed[image_id], data))
        return planned

    @staticmethod
    def prepare_body(seq: int, planned: Sequence[Planned]) -> dict[str, Any]:
        """The prepare record: everything recovery needs to undo these writes."""
        return {
            "type": "prepare",
            "seq": seq,
            "files": [[p.image_id, p.name, p.had_old, p.dir_created] for p in planned],
        }

    def install(self, seq: int, planned: Sequence[Planned], *, sync: bool) -> None:
        """Stage, back up and rename every file into place (after the prepare record)."""
        disk = self.disk
        if not disk.is_dir(self.staging):  # a copy of the store that dropped empty directories
            disk.mkdir(self.staging, 0o700)
            if sync:
                disk.fsync_dir(os.path.dirname(self.staging))
        for i, p in enumerate(planned):
            disk.write_file(_staged(self.staging, seq, i, "tmp"), p.data, sync=sync)
        failpoints.hit("bigdata-after-stage")
        for i, p in enumerate(planned):
            if p.dir_created:
                with contextlib.suppress(FileExistsError):
                    disk.mkdir(self.dir(p.image_id), 0o700)
            if p.had_old:
                disk.link(os.path.join(self.dir(p.image_id), p.name), _staged(self.staging, seq, i, "old"))
        failpoints.hit("bigdata-after-backup")
        for i, p in enumerate(planned):
            disk.rename(_staged(self.staging, seq, i, "tmp"), os.path.join(self.dir(p.image_id), p.name))
        failpoints.hit("bigdata-after-rename")
        if sync:
            for image_id in dict.fromkeys(p.image_id for p in planned):
                disk.fsync_dir(self.dir(image_id))
            disk.fsync_dir(self.staging)  # a rename is durable once both its directories are
            if any(p.dir_created for p in planned):
                disk.fsync_dir(self.root)

    def finish(self, seq: int, planned: Sequence[Planned]) -> None:
        """After the commit: the backups are no longer needed."""
        for i, p in enumerate(planned):
            if p.had_old:
                self._unlink(_staged(self.staging, seq, i, "old"))

    def undo(self, seq: int, files: Iterable[Sequence[Any]]) -> None:
        """Put the disk back as it was before an uncommitted prepare (idempotent)."""
        disk = self.disk
        touched: dict[str, bool] = {}
        for i, entry in enumerate(files):
            if not isinstance(entry, list | tuple) or len(entry) != 4:
                continue  # never act on an entry a damaged record would give
            image_id, name, had_old, dir_created = entry[0], entry[1], bool(entry[2]), bool(entry[3])
            if not isinstance(image_id, str) or not is_directory_name(image_id) or not is_file_name(name):
                continue  # never follow a path a damaged record would name
            final = os.path.join(self.dir(image_id), name)
            self._unlink(_staged(self.staging, seq, i, "tmp"))
            old = _staged(self.staging, seq, i, "old")
            # Staged names repeat when a sequence number is reused after a cut prepare: an .old
            # of this name is this write's backup only if the prepare says there was one.
            if had_old and disk.exists(old):
                disk.rename(old, final)
            elif not had_old:
                self._unlink(final)
            touched[image_id] = touched.get(image_id, False) or dir_created
        if touched and disk.is_dir(self.staging):  # without it, nothing was renamed back from it
            # The renames back must be durable before the caller cuts the prepare away: a rename
            # is durable once both its directories are fsynced (the image's are, below).
            disk.fsync_dir(self.staging)
        for image_id, dir_created in touched.items():
            directory = self.dir(image_id)
            if dir_created:
                try:
                    disk.rmdir(directory)
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
                        raise
            if disk.is_dir(directory):
                disk.fsync_dir(directory)

    def clean_staging(self, *, sync: bool = True) -> int:
        """Remove leftovers of finished transactions from the staging directory.

        With `sync`, the removals are made durable: staged names repeat when a sequence number
        is reused after a crash, and a leftover that a power cut brought back could pass for the
        backup of a later write.
        """
        removed = 0
        try:
            names = self.disk.listdir(self.staging)
        except FileNotFoundError:
            return 0
        for name in names:
            self._unlink(os.path.join(self.staging, name))
            removed += 1
        if removed and sync:
            self.disk.fsync_dir(self.staging)
        return removed

    def remove_dir(self, image_id: str) -> None:
        """Remove a deleted image's directory (missing is fine)."""
        directory = self.dir(image_id)
        if self.disk.is_dir(directory):
            failpoints.hit("delete-mid-remove")
            self.disk.rmtree(directory)

    def remove_stale(self, image_id: str, keep: Iterable[str]) -> None:
        """Delete files of a directory that the image now living there does not own."""
        directory = self.dir(image_id)
        if not self.disk.is_dir(directory):
            return
        wanted = {file_name(k) for k in keep}
        for name in self.disk.listdir(directory):
            if name not in wanted:
                path = os.path.join(directory, name)
                if self.disk.is_dir(path):
                    self.disk.rmtree(path)
                else:
                    self._unlink(path)

    def _unlink(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.disk.unlink(path)
