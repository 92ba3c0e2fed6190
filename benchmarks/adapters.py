"""One small interface over the three image stores the harness compares.

`Adapter` is what a workload sees: open a directory, create, add names, set big data, look an
image up by ID, name or ID prefix (`get`, in containers/storage's order of precedence), refresh
a second instance, and batch writes where the store can. Each implementation is one class:

- `JournalstoreAdapter`: this project, library defaults except `fsync`.
- `SeedAdapter`: `benchmarks.seed`, the containers/storage persistence ported to Python.
- `SqliteAdapter`: sqlite3 in WAL mode, one transaction per mutation, indexed tables.

`get` returns a `Found` (ID and names), the common shape the correctness checks read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import ClassVar, NamedTuple

from journalstore import ImageStore
from journalstore.errors import ImageUnknown

from . import seed as seed_mod


class Found(NamedTuple):
    """What a lookup returned, normalized across implementations."""

    id: str
    names: tuple[str, ...]


class NotFound(KeyError):
    """A lookup that found no image (each adapter maps its own miss to this)."""


class Adapter(ABC):
    """An image store under test. One instance is one open handle on one directory."""

    name: ClassVar[str] = ""
    #: True when every mutation costs O(store size) (the harness caps its op counts).
    rewrites_everything: ClassVar[bool] = False
    #: True when `batch()` groups mutations into one commit.
    supports_batch: ClassVar[bool] = False

    def __init__(self) -> None:
        self.path = ""
        self.fsync = False
        self.read_only = False

    @abstractmethod
    def open(self, path: str, fsync: bool, read_only: bool = False) -> None:
        """Open (creating if needed, unless read-only) the store at `path`."""

    @abstractmethod
    def close(self) -> None:
        """Release everything `open` took."""

    @abstractmethod
    def create(self, image_id: str | None, names: Sequence[str], layer: str, digest: str = "") -> str:
        """Create an image; returns its ID."""

    @abstractmethod
    def add_names(self, ref: str, names: Sequence[str]) -> None:
        """Add names in front of the image's names."""

    @abstractmethod
    def set_big_data(self, ref: str, key: str, data: bytes) -> None:
        """Store a big-data item (a non-manifest key)."""

    @abstractmethod
    def big_data(self, ref: str, key: str) -> bytes:
        """Read a big-data item back."""

    @abstractmethod
    def get(self, ref: str) -> Found:
        """The image with this full ID, else name, else unique ID prefix; `NotFound` otherwise."""

    @abstractmethod
    def refresh(self) -> bool:
        """Pick up other instances' writes; True if there were any."""

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group the mutations of the block into one commit (only where `supports_batch`)."""
        raise NotImplementedError(f"{self.name} has no batch()")
        yield  # pragma: no cover

    def compact(self) -> None:
        """Write a snapshot now, where the store has one (journalstore); otherwise nothing."""
        return None

    def images_json(self) -> str | None:
        """The path of the store's containers/storage images.json, if it has one."""
        return None

    def __enter__(self) -> Adapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JournalstoreAdapter(Adapter):
    """journalstore.ImageStore with its defaults, fsync "always" or "never"."""

    name = "journalstore"
    supports_batch = True
    #: ImageStore's `shared` argument: None is the library default (auto-detected, off in the
    #: harness's work directory); `shared_variant()` makes a class that forces it on.
    shared: ClassVar[bool | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.store: ImageStore | None = None

    @classmethod
    def shared_variant(cls) -> type[JournalstoreAdapter]:
        """This adapter class with every store opened in shared mode (publishing each commit)."""
        return type(f"Shared{cls.__name__}", (cls,), {"shared": True})

    @property
    def is_shared(self) -> bool:
        return self._s().shared

    def _s(self) -> ImageStore:
        assert self.store is not None, "adapter is not open"
        return self.store

    def open(self, path: str, fsync: bool, read_only: bool = False) -> None:
        self.path, self.fsync, self.read_only = path, fsync, read_only
        self.store = ImageStore(path, read_only=read_only, fsync="always" if fsync else "never", shared=self.shared)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def create(self, image_id: str | None, names: Sequence[str], layer: str, digest: str = "") -> str:
        return self._s().create(image_id, names, layer, digest=digest).id

    def add_names(self, ref: str, names: Sequence[str]) -> None:
        self._s().add_names(ref, names)

    def set_big_data(self, ref: str, key: str, data: bytes) -> None:
        self._s().set_big_data(ref, key, data)

    def big_data(self, ref: str, key: str) -> bytes:
        return self._s().big_data(ref, key)

    def get(self, ref: str) -> Found:
        try:
            image = self._s().get(ref)
        except ImageUnknown:
            raise NotFound(ref) from None
        return Found(image.id, image.names)

    def refresh(self) -> bool:
        return self._s().refresh()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        with self._s().batch():
            yield

    def compact(self) -> None:
        self._s().compact()

    def images_json(self) -> str | None:
        return os.path.join(self.path, "images.json")


class SeedAdapter(Adapter):
    """The containers/storage design: rewrite images.json on every mutation."""

    name = "seed"
    rewrites_everything = True

    def __init__(self) -> None:
        super().__init__()
        self.store: seed_mod.SeedStore | None = None

    def _s(self) -> seed_mod.SeedStore:
        assert self.store is not None, "adapter is not open"
        return self.store

    def open(self, path: str, fsync: bool, read_only: bool = False) -> None:
        self.path, self.fsync, self.read_only = path, fsync, read_only
        self.store = seed_mod.SeedStore(path, fsync=fsync, read_only=read_only)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def create(self, image_id: str | None, names: Sequence[str], layer: str, digest: str = "") -> str:
        return self._s().create(image_id, names, layer, digest)

    def add_names(self, ref: str, names: Sequence[str]) -> None:
        self._s().add_names(ref, names)

    def set_big_data(self, ref: str, key: str, data: bytes) -> None:
        self._s().set_big_data(ref, key, data)

    def big_data(self, ref: str, key: str) -> bytes:
        return self._s().big_data(ref, key)

    def get(self, ref: str) -> Found:
        try:
            doc = self._s().get(ref)
        except seed_mod.SeedImageUnknown:
            raise NotFound(ref) from None
        return Found(doc["id"], tuple(doc.get("names", ())))

    def refresh(self) -> bool:
        return self._s().refresh()

    def images_json(self) -> str | None:
        return os.path.join(self.path, seed_mod.IMAGES_JSON)


SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY NOT NULL,
    digest TEXT NOT NULL DEFAULT '',
    layer TEXT NOT NULL DEFAULT '',
    metadata TEXT NOT NULL DEFAULT '',
    created INTEGER NOT NULL,
    names_history TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY NOT NULL,
    image_id TEXT NOT NULL,
    pos INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS names_by_image ON names (image_id, pos);
CREATE TABLE IF NOT EXISTS digests (
    digest TEXT NOT NULL,
    image_id TEXT NOT NULL,
    PRIMARY KEY (digest, image_id)
);
CREATE INDEX IF NOT EXISTS digests_by_image ON digests (image_id);
CREATE TABLE IF NOT EXISTS big_data (
    image_id TEXT NOT NULL,
    key TEXT NOT NULL,
    data BLOB NOT NULL,
    size INTEGER NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (image_id, key)
);
"""


class SqliteAdapter(Adapter):
    """What a Python developer would pick instead: sqlite3, WAL, one transaction per mutation.

    synchronous=FULL with fsync on, OFF with fsync off. Big data lives in a BLOB column (the
    natural SQLite design; journalstore, like containers/storage, keeps a file per item).
    """

    name = "sqlite"
    supports_batch = True
    DB_FILE = "images.db"

    def __init__(self) -> None:
        super().__init__()
        self.db: sqlite3.Connection | None = None
        self._depth = 0
        self._data_version = 0

    def _c(self) -> sqlite3.Connection:
        assert self.db is not None, "adapter is not open"
        return self.db

    def open(self, path: str, fsync: bool, read_only: bool = False) -> None:
        self.path, self.fsync, self.read_only = path, fsync, read_only
        file = os.path.join(path, self.DB_FILE)
        if read_only:
            db = sqlite3.connect(f"file:{file}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        else:
            os.makedirs(path, 0o700, exist_ok=True)
            db = sqlite3.connect(file, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
        db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'OFF'}")
        self.db = db
        self._data_version = self._version()

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def _version(self) -> int:
        row = self._c().execute("PRAGMA data_version").fetchone()
        return int(row[0])

    @contextlib.contextmanager
    def _txn(self) -> Iterator[sqlite3.Connection]:
        db = self._c()
        if self._depth:
            yield db
            return
        db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        else:
            db.execute("COMMIT")
        finally:
            self._depth = 0

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        with self._txn():
            yield

    def _resolve(self, db: sqlite3.Connection, ref: str, by_id: bool = True) -> str:
        """The ID `ref` names: a full ID (unless `by_id` is False: already tried), a name, a prefix."""
        row = db.execute("SELECT id FROM images WHERE id = ?", (ref,)).fetchone() if by_id else None
        if row is None:
            row = db.execute("SELECT image_id FROM names WHERE name = ?", (ref,)).fetchone()
        if row is None and ref:
            rows = db.execute(
                "SELECT id FROM images WHERE id >= ? AND id < ? LIMIT 2", (ref, ref + "\U0010ffff")
            ).fetchall()
            row = rows[0] if len(rows) == 1 else None
        if row is None:
            raise NotFound(ref)
        return str(row[0])

    def create(self, image_id: str | None, names: Sequence[str], layer: str, digest: str = "") -> str:
        image_id = image_id or os.urandom(32).hex()
        unique = list(dict.fromkeys(names))
        with self._txn() as db:
            db.execute(
                "INSERT INTO images (id, digest, layer, created) VALUES (?, ?, ?, strftime('%s', 'now'))",
                (image_id, digest, layer),
            )
            db.executemany(
                "INSERT INTO names (name, image_id, pos) VALUES (?, ?, ?)",
                [(name, image_id, i) for i, name in enumerate(unique)],
            )
            if digest:
                db.execute("INSERT INTO digests (digest, image_id) VALUES (?, ?)", (digest, image_id))
        return image_id

    def add_names(self, ref: str, names: Sequence[str]) -> None:
        with self._txn() as db:
            image_id = self._resolve(db, ref)
            old = [r[0] for r in db.execute("SELECT name FROM names WHERE image_id = ? ORDER BY pos", (image_id,))]
            new = list(dict.fromkeys([*names, *old]))
            db.execute("DELETE FROM names WHERE image_id = ?", (image_id,))
            db.executemany("DELETE FROM names WHERE name = ?", [(n,) for n in new])  # moves from other images
            db.executemany(
                "INSERT INTO names (name, image_id, pos) VALUES (?, ?, ?)",
                [(name, image_id, i) for i, name in enumerate(new)],
            )
            (history_text,) = db.execute("SELECT names_history FROM images WHERE id = ?", (image_id,)).fetchone()
            history: list[str] = json.loads(history_text)
            for name in new:
                history = list(dict.fromkeys([name, *history]))
            db.execute("UPDATE images SET names_history = ? WHERE id = ?", (json.dumps(history), image_id))

    def set_big_data(self, ref: str, key: str, data: bytes) -> None:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with self._txn() as db:
            image_id = self._resolve(db, ref)
            db.execute(
                "INSERT OR REPLACE INTO big_data (image_id, key, data, size, digest) VALUES (?, ?, ?, ?, ?)",
                (image_id, key, data, len(data), digest),
            )

    def big_data(self, ref: str, key: str) -> bytes:
        db = self._c()
        image_id = self._resolve(db, ref)
        row = db.execute("SELECT data FROM big_data WHERE image_id = ? AND key = ?", (image_id, key)).fetchone()
        if row is None:
            raise NotFound(key)
        return bytes(row[0])

    _ROW = "SELECT id, digest, layer, metadata, created, names_history FROM images WHERE id = ?"

    def get(self, ref: str) -> Found:
        db = self._c()
        row = db.execute(self._ROW, (ref,)).fetchone()
        if row is None:
            row = db.execute(self._ROW, (self._resolve(db, ref, by_id=False),)).fetchone()
            if row is None:
                raise NotFound(ref)
        image_id = row[0]
        names = tuple(r[0] for r in db.execute("SELECT name FROM names WHERE image_id = ? ORDER BY pos", (image_id,)))
        return Found(image_id, names)

    def refresh(self) -> bool:
        """Reads always see the database; a refresh is the change check an app cache would do."""
        version = self._version()
        changed = version != self._data_version
        self._data_version = version
        return changed


ADAPTERS: dict[str, type[Adapter]] = {cls.name: cls for cls in (JournalstoreAdapter, SeedAdapter, SqliteAdapter)}
