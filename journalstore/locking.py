"""The writers' lock: flock(2) and containers/storage's record lock on images.lock.

filelock.FileLock takes exactly the flock (on the same file), so any tool that locks images.lock
with filelock excludes our writers and is excluded by them. containers/storage takes a POSIX
record lock over the whole file instead (`fcntl(F_SETLKW)`, a write lock to write, a read lock
to read), which never conflicts with flock on Linux; so a writer also takes an exclusive
open-file-description record lock (`F_OFD_SETLK`) over the whole file. OFD locks conflict with
Go's classic POSIX locks, and unlike classic ones they are not dropped when another descriptor
of the file in this process is closed. Within a process a thread lock comes first, since
neither kernel lock excludes two threads sharing one descriptor.

The lock is only ever tried, never waited on inside the kernel: `try_acquire` says who holds
it, and the caller decides how to wait (an open store waits on a condition of its instance
mutex, so that readers of the same instance are never stuck behind a writer's wait). The file
is opened without O_TRUNC: its first 64 bytes are containers/storage's "last writer" bytes.

Lock order, outermost first (docs/architecture.md): the instance mutex (released while
waiting), the thread lock, the flock, containers/storage's record lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
import time
from collections.abc import Callable
from typing import Literal

from .errors import LockTimeout
from .fsio import Disk

_BUSY = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
POLL_INTERVAL = 0.0005  # between tries while another process holds the lock (filelock's default)

Holder = Literal["thread", "process"]


def _flock_struct(kind: int) -> bytes:
    """A `struct flock` over the whole file (start 0, length 0 = to the end), l_pid 0 as OFD
    locks require: short type, short whence, off_t start, off_t len, pid_t pid (native layout)."""
    return struct.pack("@hhqqi4x", kind, os.SEEK_SET, 0, 0, 0)


_WHOLE_FILE_WRITE = _flock_struct(fcntl.F_WRLCK)
_WHOLE_FILE_READ = _flock_struct(fcntl.F_RDLCK)
_WHOLE_FILE_UNLOCK = _flock_struct(fcntl.F_UNLCK)


def hold_read_lock(fd: int, timeout: float, path: str) -> None:
    """Take containers/storage's read lock (an OFD read lock over the whole file) on `fd`,
    polling up to `timeout` seconds; closing `fd` releases it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _WHOLE_FILE_READ)
            return
        except OSError as exc:
            if exc.errno not in _BUSY:
                raise
        if time.monotonic() >= deadline:
            raise LockTimeout(f"timed out after {timeout}s waiting for a read lock on {path}")
        time.sleep(POLL_INTERVAL)


class WriterLock:
    """Exclusive across processes (flock) and threads (a thread lock); not re-entrant."""

    def __init__(self, disk: Disk, path: str, timeout: float | None) -> None:
        self.path = path
        self.timeout = timeout
        self._disk = disk
        self._fd = disk.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._thread_lock = threading.Lock()

    def try_acquire(self) -> Holder | None:
        """Take the lock if it is free: None when taken, else who holds it (another thread of
        this process, or another process)."""
        if not self._thread_lock.acquire(blocking=False):
            return "thread"
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._thread_lock.release()
            if exc.errno in _BUSY:
                return "process"
            raise
        try:
            fcntl.fcntl(self._fd, fcntl.F_OFD_SETLK, _WHOLE_FILE_WRITE)
        except OSError as exc:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._thread_lock.release()
            if exc.errno in _BUSY:
                return "process"  # a containers/storage process reads or writes
            raise
        return None

    def acquire(self, wait: Callable[[Holder, float | None], object] | None = None) -> None:
        """Take the lock, waiting at most `timeout` seconds (LockTimeout after that).

        `wait(holder, seconds)` pauses between tries (None: until woken); by default the thread
        sleeps, polling every POLL_INTERVAL.
        """
        timeout = self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            holder = self.try_acquire()
            if holder is None:
                return
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise LockTimeout(f"timed out after {timeout}s waiting for the lock on {self.path}")
            pause = POLL_INTERVAL if remaining is None else min(POLL_INTERVAL, remaining)
            if wait is None:
                time.sleep(pause)
            else:
                wait(holder, pause if holder == "process" else remaining)

    def release(self) -> None:
        try:
            try:
                fcntl.fcntl(self._fd, fcntl.F_OFD_SETLK, _WHOLE_FILE_UNLOCK)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def read_head(self, size: int) -> bytes:
        """The first `size` bytes of the lock file (containers/storage's last-writer bytes and
        our publication mark after them); readers may call this without holding the lock."""
        return self._disk.pread(self._fd, size, 0)

    def write_head(self, data: bytes) -> None:
        """Overwrite the start of the lock file in one write (caller holds the lock)."""
        self._disk.pwrite(self._fd, data, 0)

    def close(self) -> None:
        if self._fd >= 0:
            self._disk.close(self._fd)
            self._fd = -1
