"""Simulated power loss: a `Disk` that works on a real directory and models what is durable.

`CrashDisk` performs every file operation of the store on a real scratch directory (so the store
works normally) and logs it, with the inode it touched, in a log of operations. `Simulator`
replays that log and, after any operation k, builds the on-disk states a power cut at that moment
could leave, the way SQLite's crash VFS, LevelDB's fault-injection Env and the ALICE and
CrashMonkey studies do.

The model is the strict POSIX view:

* File data (write, pwrite, ftruncate, O_TRUNC) is volatile until fsync/fdatasync of that file.
* A directory entry change (creating a file, mkdir, link, unlink, rmdir, rename) is volatile
  until fsync of the directory that holds the entry; a rename touches two directories and is
  durable only once both have been fsynced after it. A rename is atomic: it survives whole or
  not at all. fsync of a file does not make its own directory entry durable.
* A power cut after operation k leaves the durable state plus, optionally, some of the volatile
  operations: for each file, any prefix of its un-synced data operations, the last one possibly
  torn (a prefix of its bytes, or zeros where its bytes should be); for directory operations,
  any prefix, in order, of the volatile ones.

Paths in the log are relative to the recording root. Everything the store writes must lie under
that root: a mutating operation elsewhere is an AssertionError.
"""

from __future__ import annotations

import errno
import os
import random
import stat as stat_mod
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import xxhash

from journalstore.fsio import Disk

CREATE, MKDIR, LINK, UNLINK, RMDIR, RENAME = "create", "mkdir", "link", "unlink", "rmdir", "rename"
WRITE, TRUNCATE, FSYNC, FSYNC_DIR = "write", "truncate", "fsync", "fsync-dir"
META = frozenset({CREATE, MKDIR, LINK, UNLINK, RMDIR, RENAME})

Change = tuple[int, str, int | None]  # (directory inode, entry name, inode or None to remove it)


@dataclass(frozen=True, slots=True)
class Op:
    """One logged file operation."""

    kind: str
    what: str  # for people: the operation and its paths
    changes: tuple[Change, ...] = ()  # directory operations: the entries they set or remove
    ino: int = -1  # data operations and fsyncs: the inode
    offset: int = 0  # write: where
    data: bytes = b""  # write: what
    length: int = 0  # truncate: the new size

    @property
    def dirs(self) -> frozenset[int]:
        return frozenset(change[0] for change in self.changes)


def _apply_write(buf: bytearray, offset: int, data: bytes) -> None:
    if offset > len(buf):
        buf.extend(bytes(offset - len(buf)))
    buf[offset : offset + len(data)] = data


def _apply_data(buf: bytearray, op: Op) -> None:
    if op.kind == WRITE:
        _apply_write(buf, op.offset, op.data)
    else:
        del buf[op.length :]
        if op.length > len(buf):
            buf.extend(bytes(op.length - len(buf)))


def _apply_changes(entries: dict[int, dict[str, int]], op: Op) -> None:
    for directory, name, ino in op.changes:
        table = entries.setdefault(directory, {})
        if ino is None:
            table.pop(name, None)
        else:
            table[name] = ino


class CrashDisk(Disk):
    """Does every operation for real under `root` and logs it with the inodes it touched."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.log: list[Op] = []
        self.lock = threading.RLock()
        self._inodes = 0
        self.dirs: set[int] = set()
        self.entries: dict[int, dict[str, int]] = {}  # live directory tables
        self.data: dict[int, bytearray] = {}  # live file contents
        self._fds: dict[int, list[int]] = {}  # fd -> [inode, append?, position]
        self.root_ino = self._scan()
        self.base_entries = {d: dict(t) for d, t in self.entries.items()}
        self.base_data = {i: bytes(b) for i, b in self.data.items()}

    # ------------------------------------------------------------------ bookkeeping

    @property
    def count(self) -> int:
        """Operations logged so far (a cut point is a count)."""
        return len(self.log)

    def _new_ino(self, directory: bool) -> int:
        self._inodes += 1
        if directory:
            self.dirs.add(self._inodes)
            self.entries[self._inodes] = {}
        else:
            self.data[self._inodes] = bytearray()
        return self._inodes

    def _scan(self) -> int:
        """Take what is under root as it is (and durable): the state before recording."""
        real: dict[tuple[int, int], int] = {}
        root = self._new_ino(True)

        def walk(path: str, ino: int) -> None:
            for name in sorted(os.listdir(path)):
                p = os.path.join(path, name)
                st = os.lstat(p)
                if stat_mod.S_ISDIR(st.st_mode):
                    child = self._new_ino(True)
                    self.entries[ino][name] = child
                    walk(p, child)
                elif stat_mod.S_ISREG(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if key not in real:
                        real[key] = self._new_ino(False)
                        with open(p, "rb") as f:
                            self.data[real[key]] += f.read()
                    self.entries[ino][name] = real[key]

        walk(self.root, root)
        return root

    def _rel(self, path: str) -> list[str]:
        rel = os.path.relpath(os.path.abspath(path), self.root)
        if rel == ".":
            return []
        if rel == ".." or rel.startswith("../") or os.path.isabs(rel):
            raise AssertionError(f"the store touched {path}, outside its directory {self.root}")
        return rel.split(os.sep)

    def _under(self, path: str) -> bool:
        rel = os.path.relpath(os.path.abspath(path), self.root)
        return not (rel == ".." or rel.startswith("../"))

    def _parent(self, path: str) -> tuple[int, str]:
        parts = self._rel(path)
        if not parts:
            raise AssertionError("the recording root itself cannot be changed")
        ino = self.root_ino
        for part in parts[:-1]:
            child = self.entries.get(ino, {}).get(part)
            if child is None or child not in self.dirs:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
            ino = child
        return ino, parts[-1]

    def _lookup(self, path: str) -> int | None:
        ino = self.root_ino
        for part in self._rel(path):
            table = self.entries.get(ino)
            if table is None or part not in table:
                return None
            ino = table[part]
        return ino

    def _name(self, path: str) -> str:
        return os.path.relpath(os.path.abspath(path), self.root)

    def _record(self, op: Op) -> None:
        self.log.append(op)

    # ------------------------------------------------------------------ operations

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        if not self._under(path):
            if flags & (os.O_CREAT | os.O_TRUNC | os.O_WRONLY | os.O_RDWR):
                raise AssertionError(f"the store opened {path} for writing, outside {self.root}")
            return super().open(path, flags, mode)
        with self.lock:
            parent, name = self._parent(path)
            existed = name in self.entries[parent]
            fd = super().open(path, flags, mode)
            if not existed:
                ino = self._new_ino(False)
                self.entries[parent][name] = ino
                self._record(Op(CREATE, f"create {self._name(path)}", ((parent, name, ino),)))
            else:
                ino = self.entries[parent][name]
            if flags & os.O_TRUNC and flags & (os.O_WRONLY | os.O_RDWR) and ino not in self.dirs:
                del self.data[ino][:]
                self._record(Op(TRUNCATE, f"truncate {self._name(path)} to 0 (O_TRUNC)", ino=ino, length=0))
            self._fds[fd] = [ino, 1 if flags & os.O_APPEND else 0, 0]
            return fd

    def close(self, fd: int) -> None:
        with self.lock:
            super().close(fd)
            self._fds.pop(fd, None)

    def _fd(self, fd: int) -> list[int]:
        entry = self._fds.get(fd)
        if entry is None:
            raise AssertionError(f"a write through descriptor {fd}, not opened under {self.root}")
        return entry

    def _ino_name(self, ino: int) -> str:
        def walk(d: int, prefix: str) -> str | None:
            for name, child in self.entries.get(d, {}).items():
                path = f"{prefix}{name}"
                if child == ino:
                    return path
                if child in self.dirs:
                    found = walk(child, path + "/")
                    if found:
                        return found
            return None

        return walk(self.root_ino, "") or f"<inode {ino}>"

    def write(self, fd: int, data: bytes) -> None:
        with self.lock:
            entry = self._fd(fd)
            super().write(fd, data)
            ino, append, pos = entry
            buf = self.data[ino]
            offset = len(buf) if append else pos
            data = bytes(data)
            _apply_write(buf, offset, data)
            entry[2] = offset + len(data)
            self._record(
                Op(
                    WRITE,
                    f"write {len(data)} bytes at {offset} of {self._ino_name(ino)}",
                    ino=ino,
                    offset=offset,
                    data=data,
                )
            )

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        with self.lock:
            ino = self._fd(fd)[0]
            super().pwrite(fd, data, offset)
            data = bytes(data)
            _apply_write(self.data[ino], offset, data)
            self._record(
                Op(
                    WRITE,
                    f"pwrite {len(data)} bytes at {offset} of {self._ino_name(ino)}",
                    ino=ino,
                    offset=offset,
                    data=data,
                )
            )

    def truncate(self, fd: int, length: int) -> None:
        with self.lock:
            ino = self._fd(fd)[0]
            super().truncate(fd, length)
            op = Op(TRUNCATE, f"truncate {self._ino_name(ino)} to {length}", ino=ino, length=length)
            _apply_data(self.data[ino], op)
            self._record(op)

    def _sync(self, fd: int, call: str) -> None:
        ino = self._fd(fd)[0]
        if ino in self.dirs:
            self._record(Op(FSYNC_DIR, f"{call} directory {self._ino_name(ino)}", ino=ino))
        else:
            self._record(Op(FSYNC, f"{call} {self._ino_name(ino)}", ino=ino))

    def fsync(self, fd: int) -> None:
        with self.lock:
            super().fsync(fd)
            self._sync(fd, "fsync")

    def fdatasync(self, fd: int) -> None:
        with self.lock:
            super().fdatasync(fd)
            self._sync(fd, "fdatasync")

    def fsync_dir(self, path: str) -> None:
        with self.lock:
            super().fsync_dir(path)
            ino = self._lookup(path)
            assert ino is not None and ino in self.dirs, path
            self._record(Op(FSYNC_DIR, f"fsync directory {self._name(path)}", ino=ino))

    def rename(self, src: str, dst: str) -> None:
        with self.lock:
            sp, sn = self._parent(src)
            dp, dn = self._parent(dst)
            ino = self.entries[sp][sn]
            super().rename(src, dst)
            if (sp, sn) == (dp, dn):
                return
            del self.entries[sp][sn]
            self.entries[dp][dn] = ino
            self._record(Op(RENAME, f"rename {self._name(src)} -> {self._name(dst)}", ((sp, sn, None), (dp, dn, ino))))

    def link(self, src: str, dst: str) -> None:
        with self.lock:
            sp, sn = self._parent(src)
            dp, dn = self._parent(dst)
            ino = self.entries[sp][sn]
            super().link(src, dst)
            self.entries[dp][dn] = ino
            self._record(Op(LINK, f"link {self._name(src)} -> {self._name(dst)}", ((dp, dn, ino),)))

    def unlink(self, path: str) -> None:
        with self.lock:
            parent, name = self._parent(path)
            super().unlink(path)
            self.entries[parent].pop(name, None)
            self._record(Op(UNLINK, f"unlink {self._name(path)}", ((parent, name, None),)))

    def mkdir(self, path: str, mode: int = 0o700) -> None:
        with self.lock:
            parent, name = self._parent(path)
            super().mkdir(path, mode)
            ino = self._new_ino(True)
            self.entries[parent][name] = ino
            self._record(Op(MKDIR, f"mkdir {self._name(path)}", ((parent, name, ino),)))

    def makedirs(self, path: str, mode: int = 0o700) -> None:
        with self.lock:
            parts = self._rel(path)
            current = self.root
            for part in parts:
                current = os.path.join(current, part)
                if not os.path.isdir(current):
                    self.mkdir(current, mode)

    def rmdir(self, path: str) -> None:
        with self.lock:
            parent, name = self._parent(path)
            super().rmdir(path)
            self.entries[parent].pop(name, None)
            self._record(Op(RMDIR, f"rmdir {self._name(path)}", ((parent, name, None),)))

    def rmtree(self, path: str) -> None:
        with self.lock:
            for name in sorted(os.listdir(path)):
                child = os.path.join(path, name)
                if stat_mod.S_ISDIR(os.lstat(child).st_mode):
                    self.rmtree(child)
                else:
                    self.unlink(child)
            self.rmdir(path)


# ---------------------------------------------------------------------- crash states


class CrashState(NamedTuple):
    """A directory tree a power cut could leave: directory tables and file contents by inode."""

    label: str
    entries: dict[int, dict[str, int]]
    data: dict[int, bytes]


class Simulator:
    """Replays a CrashDisk's log one operation at a time, tracking what is durable.

    After `advance(k)`, the states describe a power cut right after the k-th operation.
    """

    def __init__(self, disk: CrashDisk) -> None:
        self.log = disk.log
        self.root = disk.root_ino
        self.dirs = disk.dirs
        self.k = 0
        self.live_entries = {d: dict(t) for d, t in disk.base_entries.items()}
        self.live_data = {i: bytearray(b) for i, b in disk.base_data.items()}
        self.durable_data = {i: bytearray(b) for i, b in disk.base_data.items()}
        self.pending_data: dict[int, list[Op]] = {}
        # Directory operations: those before `meta` are durable and folded into `folded`.
        self.folded = {d: dict(t) for d, t in disk.base_entries.items()}
        self.meta: list[Op] = []
        self.unsynced: list[set[int]] = []  # per entry of `meta`: directories still to fsync

    # ------------------------------------------------------------------ replay

    def advance(self, k: int) -> None:
        while self.k < k:
            self._step(self.log[self.k])
            self.k += 1

    def _step(self, op: Op) -> None:
        if op.kind in META:
            _apply_changes(self.live_entries, op)
            for _d, _n, ino in op.changes:
                if ino is not None and ino not in self.dirs:
                    self.live_data.setdefault(ino, bytearray())
                    self.durable_data.setdefault(ino, bytearray())
            self.meta.append(op)
            self.unsynced.append(set(op.dirs))
        elif op.kind in (WRITE, TRUNCATE):
            _apply_data(self.live_data.setdefault(op.ino, bytearray()), op)
            self.durable_data.setdefault(op.ino, bytearray())
            self.pending_data.setdefault(op.ino, []).append(op)
        elif op.kind == FSYNC:
            buf = self.durable_data.setdefault(op.ino, bytearray())
            for pending in self.pending_data.pop(op.ino, ()):
                _apply_data(buf, pending)
        elif op.kind == FSYNC_DIR:
            for waiting in self.unsynced:
                waiting.discard(op.ino)
            while self.meta and not self.unsynced[0]:
                _apply_changes(self.folded, self.meta.pop(0))
                self.unsynced.pop(0)

    # ------------------------------------------------------------------ states

    def _entries(self, pending_kept: int | None) -> dict[int, dict[str, int]]:
        """The folded tables plus every durable operation after them and the first
        `pending_kept` volatile ones (None: all of them), in log order."""
        entries = {d: dict(t) for d, t in self.folded.items()}
        seen = 0
        for op, waiting in zip(self.meta, self.unsynced, strict=True):
            if waiting:
                if pending_kept is not None and seen >= pending_kept:
                    continue
                seen += 1
            _apply_changes(entries, op)
        return entries

    def pending_meta(self) -> int:
        return sum(1 for waiting in self.unsynced if waiting)

    def reachable(self, entries: dict[int, dict[str, int]]) -> Iterator[int]:
        stack = [self.root]
        while stack:
            d = stack.pop()
            for ino in entries.get(d, {}).values():
                if ino in self.dirs:
                    stack.append(ino)
                else:
                    yield ino

    def _data(
        self, entries: dict[int, dict[str, int]], choose: dict[int, tuple[int, str, int]] | None
    ) -> dict[int, bytes]:
        """File contents: durable bytes plus, per inode, `choose[ino] = (kept, tear, cut)`: the
        first `kept` volatile operations, then the next one torn ("prefix": its first `cut`
        bytes; "zeros": zeros in its place; "": not at all). choose=None keeps everything."""
        out: dict[int, bytes] = {}
        for ino in set(self.reachable(entries)):
            if choose is None:
                out[ino] = bytes(self.live_data.get(ino, b""))
                continue
            pending = self.pending_data.get(ino, [])
            kept, tear, cut = choose.get(ino, (0, "", 0))
            if not pending or (kept == 0 and not tear):
                out[ino] = bytes(self.durable_data.get(ino, b""))
                continue
            buf = bytearray(self.durable_data.get(ino, b""))
            for op in pending[:kept]:
                _apply_data(buf, op)
            if tear and kept < len(pending) and pending[kept].kind == WRITE:
                op = pending[kept]
                part = op.data[:cut] if tear == "prefix" else bytes(len(op.data))
                _apply_write(buf, op.offset, part)
            out[ino] = bytes(buf)
        return out

    def durable(self) -> CrashState:
        """Nothing volatile survives."""
        entries = self._entries(0)
        return CrashState("durable only", entries, self._data(entries, {}))

    def everything(self) -> CrashState:
        """Everything survives: the state a kill -9 leaves."""
        entries = self._entries(None)
        return CrashState("everything (kill -9)", entries, self._data(entries, None))

    def names_not_data(self) -> CrashState:
        """Every directory operation survives, no volatile data (a rename before its data)."""
        entries = self._entries(None)
        return CrashState("all directory ops, durable data only", entries, self._data(entries, {}))

    def data_not_names(self) -> CrashState:
        """Every data write survives, no volatile directory operation."""
        entries = self._entries(0)
        return CrashState("durable directory ops, all data", entries, self._data(entries, None))

    def random(self, rng: random.Random) -> CrashState:
        """A random mix: a prefix of the volatile directory operations, and per file a prefix of
        its volatile writes, the last one possibly torn."""
        total = self.pending_meta()
        kept_meta = rng.randint(0, total)
        entries = self._entries(kept_meta)
        choose: dict[int, tuple[int, str, int]] = {}
        torn = []
        for ino in sorted(set(self.reachable(entries))):
            pending = self.pending_data.get(ino)
            if not pending:
                continue
            kept = rng.randint(0, len(pending))
            tear, cut = "", 0
            if kept < len(pending) and pending[kept].kind == WRITE and rng.random() < 0.6:
                size = len(pending[kept].data)
                if rng.random() < 0.7 and size > 1:
                    tear, cut = "prefix", rng.randrange(1, size)
                else:
                    tear = "zeros"
                torn.append(f"{tear} {cut}")
            choose[ino] = (kept, tear, cut)
        label = f"random: {kept_meta}/{total} directory ops" + (f", torn writes ({', '.join(torn)})" if torn else "")
        return CrashState(label, entries, self._data(entries, choose))

    # ------------------------------------------------------------------ materializing

    def _paths(self, state: CrashState) -> Iterator[tuple[str, int]]:
        def walk(d: int, prefix: str) -> Iterator[tuple[str, int]]:
            for name in sorted(state.entries.get(d, {})):
                ino = state.entries[d][name]
                path = prefix + name
                yield path, ino
                if ino in self.dirs:
                    yield from walk(ino, path + "/")

        return walk(self.root, "")

    def fingerprint(self, state: CrashState) -> int:
        """Equal for states that materialize to the same tree (hard links included)."""
        h = xxhash.xxh3_64()
        first: dict[int, str] = {}
        for path, ino in self._paths(state):
            h.update(path.encode("utf-8", "surrogateescape") + b"\0")
            if ino in self.dirs:
                h.update(b"d\0")
            elif ino in first:
                h.update(b"l" + first[ino].encode("utf-8", "surrogateescape") + b"\0")
            else:
                first[ino] = path
                h.update(b"f" + xxhash.xxh3_64_digest(state.data.get(ino, b"")))
        return h.intdigest()

    def materialize(self, state: CrashState, dest: str) -> None:
        """Write the state as a real tree at `dest` (hard links kept as hard links)."""
        os.makedirs(dest, 0o700)
        first: dict[int, str] = {}
        for path, ino in self._paths(state):
            full = os.path.join(dest, path)
            if ino in self.dirs:
                os.mkdir(full, 0o700)
            elif ino in first:
                os.link(first[ino], full)
            else:
                first[ino] = full
                with open(full, "xb") as f:
                    f.write(state.data.get(ino, b""))
