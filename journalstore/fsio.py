"""The one door to the disk: every file operation the store makes goes through a `Disk`.

Tests substitute a recording `Disk` to see each write, fsync, rename and unlink in order, to
drop what was not synced (a simulated power cut) or to inject a fault at any step.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat as stat_mod
import weakref


class Disk:
    """Plain POSIX file operations. Subclass and override to record or to inject faults."""

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        return os.open(path, flags | os.O_CLOEXEC, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def write(self, fd: int, data: bytes) -> None:
        """Write all of `data` at the file position (or the end, under O_APPEND)."""
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            if written <= 0:
                raise OSError(errno.EIO, "short write")
            view = view[written:]

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        """Up to `size` bytes at `offset` (fewer only at the end of the file)."""
        chunks: list[bytes] = []
        while size > 0:
            chunk = os.pread(fd, size, offset)
            if not chunk:
                break
            chunks.append(chunk)
            size -= len(chunk)
            offset += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        """Write `data` at `offset` without moving the file position."""
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            if written <= 0:
                raise OSError(errno.EIO, "short write")
            view = view[written:]
            offset += written

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def fstat(self, fd: int) -> os.stat_result:
        return os.fstat(fd)

    def size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def stat(self, path: str) -> os.stat_result:
        return os.stat(path)

    def exists(self, path: str) -> bool:
        """Whether anything (a dangling symlink too) has this name; no exception on the hot path."""
        return os.access(path, os.F_OK, follow_symlinks=False)

    def is_dir(self, path: str) -> bool:
        try:
            return stat_mod.S_ISDIR(os.lstat(path).st_mode)
        except FileNotFoundError:
            return False

    def truncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def link(self, src: str, dst: str) -> None:
        os.link(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def mkdir(self, path: str, mode: int = 0o700) -> None:
        os.mkdir(path, mode)

    def makedirs(self, path: str, mode: int = 0o700) -> None:
        """Create a directory and its missing parents (no error if it exists)."""
        os.makedirs(path, mode, exist_ok=True)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def rmtree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=False)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_file(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def write_file(self, path: str, data: bytes, *, sync: bool, mode: int = 0o600) -> None:
        """Create or truncate `path` and write `data` (fsynced when `sync`)."""
        fd = self.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            self.write(fd, data)
            if sync:
                self.fsync(fd)
        finally:
            self.close(fd)


DEFAULT_DISK = Disk()


class PinnedDisk(Disk):
    """A read-only disk that keeps some files of one directory readable after they are deleted.

    The files are opened when it is made; later, `listdir` of that directory shows only them,
    and opening or reading one reads the open file, whatever was unlinked meanwhile. A view of
    the past holds one, so that journal retention cannot take away what it may still need to
    rebuild. Every other path goes to the disk it wraps; nothing can be written.
    """

    def __init__(self, disk: Disk, directory: str, names: list[str]) -> None:
        self._disk = disk
        self._dir = directory
        self._fds: dict[str, int] = {}
        for name in names:
            try:
                self._fds[os.path.join(directory, name)] = disk.open(os.path.join(directory, name), os.O_RDONLY)
            except OSError:
                continue  # gone already: the rebuild will say what is missing
        self._closer = weakref.finalize(self, _close_all, disk, list(self._fds.values()))

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        pinned = self._fds.get(path)
        if pinned is not None and flags == os.O_RDONLY:
            return os.dup(pinned)
        return self._disk.open(path, flags, mode)

    def close(self, fd: int) -> None:
        self._disk.close(fd)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return self._disk.pread(fd, size, offset)

    def fstat(self, fd: int) -> os.stat_result:
        return self._disk.fstat(fd)

    def size(self, fd: int) -> int:
        return self._disk.size(fd)

    def stat(self, path: str) -> os.stat_result:
        pinned = self._fds.get(path)
        return self._disk.fstat(pinned) if pinned is not None else self._disk.stat(path)

    def exists(self, path: str) -> bool:
        return path in self._fds or self._disk.exists(path)

    def is_dir(self, path: str) -> bool:
        return path not in self._fds and self._disk.is_dir(path)

    def listdir(self, path: str) -> list[str]:
        if os.path.normpath(path) == os.path.normpath(self._dir):
            return [os.path.basename(p) for p in self._fds]
        return self._disk.listdir(path)

    def read_file(self, path: str) -> bytes:
        pinned = self._fds.get(path)
        if pinned is None:
            return self._disk.read_file(path)
        return self._disk.pread(pinned, self._disk.size(pinned), 0)

    def _refuse(self, *_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EROFS, "a pinned disk is read-only")

    write = pwrite = fsync = fdatasync = truncate = rename = link = unlink = _refuse
    mkdir = makedirs = rmdir = rmtree = fsync_dir = write_file = _refuse

    def close_all(self) -> None:
        """Let the pinned files go (also done when the disk is garbage collected)."""
        self._closer()
        self._fds.clear()


def _close_all(disk: Disk, fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            disk.close(fd)
