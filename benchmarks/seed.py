"""`SeedStore`: a faithful Python port of containers/storage's image-store persistence (images.go).

This is the design journalstore replaces, kept honest so that the comparison means something:

- Every mutation runs under the writers' lock (an exclusive fcntl lock on images.lock, as Go's
  lockfile takes), re-checks the lock file's last-write token and reloads if another process
  wrote, changes the in-memory records, then `save()`s: the whole image list is serialized with
  json (Go's `json.Marshal(&r.images)`), a new random last-write token is written into the lock
  file (`lockfile.RecordWrite`, a pwrite at offset 0, before the data file), and images.json is
  replaced atomically (`ioutils.AtomicWriteFile`: a temp file in the same directory, fdatasync
  when fsync is on, rename). Nothing is cached between saves.
- Every read takes the shared lock, compares the token with the one it loaded, and when it moved
  reloads the whole file: read, `json.loads` (Go's `json.Unmarshal`), recompute every image's
  digests and rebuild the indexes by ID, name, digest and ID prefix (Go's `load`).
- `set_big_data` writes the item's file atomically (fdatasync when fsync is on) into the image's
  directory, then saves the whole list, as Go's `setBigData` does.
- `get` returns a copy of the record (Go's `copyImage`).

The ID-prefix index is a sorted list searched with bisect: Go uses a patricia trie
(`truncindex`); a sorted list is the natural Python structure with the same lookup cost.
"""

from __future__ import annotations

import base64
import bisect
import fcntl
import hashlib
import itertools
import json
import os
import re
import struct
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

IMAGES_JSON = "images.json"
IMAGES_LOCK = "images.lock"
LAST_WRITE_SIZE = 64  # lockfile.lastWriterIDSize

_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_COPY_KEYS = (
    "names",
    "names-history",
    "mapped-layers",
    "big-data-names",
    "big-data-sizes",
    "big-data-digests",
    "flags",
)
_BIG_DATA_PLAIN = frozenset(".0123456789abcdefghijklmnopqrstuvwxyz")
_counter = itertools.count(1)

Doc = dict[str, Any]


class SeedError(Exception):
    """A failed operation of the seed store (unknown image, duplicate name, ...)."""


class SeedImageUnknown(SeedError, KeyError):
    """No image has this ID, name or unique ID prefix."""


def go_time_now() -> str:
    """time.Now().UTC() as Go's RFC 3339 text with nanoseconds (trailing zeros trimmed)."""
    ns = time.time_ns()
    seconds, frac = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


def new_last_write() -> bytes:
    """lockfile.newLastWrite: time, a process-wide counter, the pid, then random bytes."""
    head = struct.pack("<QQI", time.time_ns(), next(_counter), os.getpid() & 0xFFFFFFFF)
    return head + os.urandom(LAST_WRITE_SIZE - len(head))


def big_data_base_name(key: str) -> str:
    """makeBigDataBaseName: the key itself if it has only [.0-9a-z], else '=' + base64."""
    if key and _BIG_DATA_PLAIN.issuperset(key):
        return key
    return "=" + base64.standard_b64encode(key.encode()).decode()


def atomic_write_file(path: str, data: bytes, fsync: bool, mode: int = 0o600) -> None:
    """ioutils.AtomicWriteFile: temp file beside `path`, write, fdatasync (unless NoSync), rename."""
    directory, base = os.path.split(path)
    tmp = os.path.join(directory, f".tmp-{base}{os.urandom(6).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fdatasync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)


def image_doc(image_id: str, names: Sequence[str], layer: str, digest: str, created: str) -> Doc:
    """An images.json record as Go's create() builds it (omitempty fields left out)."""
    doc: Doc = {"id": image_id}
    if digest:
        doc["digest"] = digest
    if names:
        doc["names"] = list(names)
    if layer:
        doc["layer"] = layer
    doc["created"] = created
    return doc


class LockFile:
    """containers/storage's lockfile: fcntl locks on images.lock plus a 64-byte last-write token."""

    def __init__(self, path: str, read_only: bool) -> None:
        self.path = path
        self.read_only = read_only
        flags = os.O_RDONLY if read_only else os.O_RDWR | os.O_CREAT
        self.fd = os.open(path, flags | os.O_CLOEXEC, 0o644)

    def lock(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_EX)

    def rlock(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_SH)

    def unlock(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def get_last_write(self) -> bytes:
        return os.pread(self.fd, LAST_WRITE_SIZE, 0)

    def record_write(self) -> bytes:
        """Write a new token (no fsync, as in Go) and return it."""
        token = new_last_write()
        os.pwrite(self.fd, token, 0)
        return token

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SeedStore:
    """One process's view of an image directory, persisted the containers/storage way."""

    def __init__(self, directory: str, *, fsync: bool = True, read_only: bool = False) -> None:
        self.dir = directory
        self.fsync = fsync
        self.read_only = read_only
        if not read_only:
            os.makedirs(directory, 0o700, exist_ok=True)
        self.lockfile = LockFile(os.path.join(directory, IMAGES_LOCK), read_only)
        self.images: list[Doc] = []
        self.byid: dict[str, Doc] = {}
        self.byname: dict[str, Doc] = {}
        self.bydigest: dict[str, list[Doc]] = {}
        self.digests: dict[str, list[str]] = {}  # Image.Digests (json:"-")
        self.idindex: list[str] = []
        # newImageStore / newROImageStore: lock, note the token, load.
        if read_only:
            self.lockfile.rlock()
        else:
            self.lockfile.lock()
        try:
            self.last_write = self.lockfile.get_last_write()
            self.load()
        finally:
            self.lockfile.unlock()

    # ------------------------------------------------------------------ persistence

    @property
    def images_path(self) -> str:
        return os.path.join(self.dir, IMAGES_JSON)

    def load(self) -> None:
        """Read images.json and rebuild every index (Go's load)."""
        try:
            with open(self.images_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        images: list[Doc] = json.loads(data) if data else []
        ids: dict[str, Doc] = {}
        names: dict[str, Doc] = {}
        bydigest: dict[str, list[Doc]] = {}
        digests: dict[str, list[str]] = {}
        idlist: list[str] = []
        for image in images:
            image_id = image["id"]
            ids[image_id] = image
            idlist.append(image_id)
            for name in image.get("names", ()):
                conflict = names.get(name)
                if conflict is not None:
                    conflict["names"] = [n for n in conflict["names"] if n != name]
            image_digests = self._recompute_digests(image)
            digests[image_id] = image_digests
            for name in image.get("names", ()):
                names[name] = image
            for d in image_digests:
                bydigest.setdefault(d, []).append(image)
        self.images = images
        self.idindex = sorted(idlist)
        self.byid = ids
        self.byname = names
        self.bydigest = bydigest
        self.digests = digests

    @staticmethod
    def _recompute_digests(image: Doc) -> list[str]:
        """Image.recomputeDigests: validate, explicit digest first, then manifest digests."""
        found: list[str] = []
        digest = image.get("digest", "")
        if digest:
            if not _DIGEST_RE.match(digest):
                raise SeedError(f"validating image digest {digest!r}")
            found.append(digest)
        for key, d in image.get("big-data-digests", {}).items():
            if not key.startswith("manifest"):
                continue
            if not _DIGEST_RE.match(d):
                raise SeedError(f"validating digest {d!r} for big data item {key!r}")
            if d not in found:
                found.append(d)
        if not digest and found:
            image["digest"] = found[0]
        return found

    def save(self) -> None:
        """Serialize every record, record the write in the lock file, replace images.json."""
        if self.read_only:
            raise SeedError("not allowed to modify a read-only image store")
        data = json.dumps(self.images, ensure_ascii=False, separators=(",", ":")).encode()
        self.last_write = self.lockfile.record_write()
        atomic_write_file(self.images_path, data, self.fsync)

    def reload_if_changed(self) -> bool:
        current = self.lockfile.get_last_write()
        if current == self.last_write:
            return False
        self.load()
        self.last_write = current
        return True

    def start_reading(self) -> None:
        self.lockfile.rlock()
        try:
            self.reload_if_changed()
        except BaseException:
            self.lockfile.unlock()
            raise

    def start_writing(self) -> None:
        self.lockfile.lock()
        try:
            self.reload_if_changed()
        except BaseException:
            self.lockfile.unlock()
            raise

    def stop(self) -> None:
        self.lockfile.unlock()

    def close(self) -> None:
        self.lockfile.close()

    # ------------------------------------------------------------------ lookups

    def _lookup(self, ref: str) -> Doc | None:
        image = self.byid.get(ref)
        if image is not None:
            return image
        image = self.byname.get(ref)
        if image is not None:
            return image
        index = self.idindex
        i = bisect.bisect_left(index, ref)
        if i < len(index) and index[i].startswith(ref) and not (i + 1 < len(index) and index[i + 1].startswith(ref)):
            return self.byid.get(index[i])
        return None

    def _find(self, ref: str) -> Doc:
        image = self._lookup(ref) if ref else None
        if image is None:
            raise SeedImageUnknown(f"locating image with ID {ref!r}")
        return image

    @staticmethod
    def copy_image(image: Doc) -> Doc:
        """Go's copyImage: the record with its slices and maps copied."""
        out = dict(image)
        for key in _COPY_KEYS:
            value = out.get(key)
            if value is not None:
                out[key] = value.copy()
        return out

    def refresh(self) -> bool:
        """startReading + stopReading: reload if another process wrote; True if it did."""
        self.lockfile.rlock()
        try:
            return self.reload_if_changed()
        finally:
            self.lockfile.unlock()

    def get(self, ref: str) -> Doc:
        self.start_reading()
        try:
            return self.copy_image(self._find(ref))
        finally:
            self.stop()

    def big_data(self, ref: str, key: str) -> bytes:
        self.start_reading()
        try:
            image = self._find(ref)
            with open(os.path.join(self.dir, image["id"], big_data_base_name(key)), "rb") as f:
                return f.read()
        finally:
            self.stop()

    # ------------------------------------------------------------------ writes

    def create(self, image_id: str | None, names: Iterable[str], layer: str, digest: str = "") -> str:
        self.start_writing()
        try:
            if not image_id:
                image_id = os.urandom(32).hex()
                while image_id in self.byid:
                    image_id = os.urandom(32).hex()
            if image_id in self.byid:
                raise SeedError(f"an image with ID {image_id!r} already exists")
            name_list = list(dict.fromkeys(names))
            for name in name_list:
                if name in self.byname:
                    raise SeedError(f"image name {name!r} is already associated with image {self.byname[name]['id']!r}")
            image = image_doc(image_id, name_list, layer, digest, go_time_now())
            image_digests = self._recompute_digests(image)
            self.images.append(image)
            bisect.insort(self.idindex, image_id)
            self.byid[image_id] = image
            self.digests[image_id] = image_digests
            for name in name_list:
                self.byname[name] = image
            for d in image_digests:
                self.bydigest.setdefault(d, []).append(image)
            self.save()
            return image_id
        finally:
            self.stop()

    def add_names(self, ref: str, names: Sequence[str]) -> None:
        """updateNames with the add operation: new names first, then the old ones."""
        self.start_writing()
        try:
            image = self._find(ref)
            old = image.get("names", [])
            new = list(dict.fromkeys([*names, *old]))
            for name in old:
                self.byname.pop(name, None)
            for name in new:
                other = self.byname.get(name)
                if other is not None and other is not image:
                    other["names"] = [n for n in other.get("names", ()) if n != name]
                self.byname[name] = image
                image["names-history"] = list(dict.fromkeys([name, *image.get("names-history", ())]))
            image["names"] = new
            self.save()
        finally:
            self.stop()

    def set_big_data(self, ref: str, key: str, data: bytes) -> None:
        """SetBigData for a non-manifest key: write the file, update sizes and digests, save."""
        if not key:
            raise SeedError("can't set empty name for image big data item")
        self.start_writing()
        try:
            image = self._find(ref)
            new_digest = "sha256:" + hashlib.sha256(data).hexdigest()
            datadir = os.path.join(self.dir, image["id"])
            os.makedirs(datadir, 0o700, exist_ok=True)
            atomic_write_file(os.path.join(datadir, big_data_base_name(key)), data, self.fsync)
            sizes = image.setdefault("big-data-sizes", {})
            digests = image.setdefault("big-data-digests", {})
            save = sizes.get(key) != len(data) or digests.get(key) != new_digest
            sizes[key] = len(data)
            digests[key] = new_digest
            bd_names = image.setdefault("big-data-names", [])
            if key not in bd_names:
                bd_names.append(key)
                save = True
            image_id = image["id"]
            for d in self.digests.get(image_id, ()):
                remaining = [i for i in self.bydigest.get(d, ()) if i is not image]
                if remaining:
                    self.bydigest[d] = remaining
                else:
                    self.bydigest.pop(d, None)
            self.digests[image_id] = self._recompute_digests(image)
            for d in self.digests[image_id]:
                self.bydigest.setdefault(d, []).append(image)
            if save:
                self.save()
        finally:
            self.stop()


def write_images_json(directory: str, docs: Sequence[Doc], fsync: bool) -> None:
    """Lay down a store as containers/storage would have saved it after creating `docs`.

    The benchmark uses this to build the state before the last few creates at sizes where
    creating every image one by one through `SeedStore` would take hours (O(N) per create).
    """
    os.makedirs(directory, 0o700, exist_ok=True)
    lock = LockFile(os.path.join(directory, IMAGES_LOCK), read_only=False)
    try:
        lock.lock()
        lock.record_write()
        data = json.dumps(list(docs), ensure_ascii=False, separators=(",", ":")).encode()
        atomic_write_file(os.path.join(directory, IMAGES_JSON), data, fsync)
        lock.unlock()
    finally:
        lock.close()
