"""The writers' lock: an exclusive flock(2) on images.lock, shared with filelock users.

filelock.FileLock takes exactly this lock (flock on the same file), so any tool that locks
images.lock with filelock excludes our writers and is excluded by them. The uncontended path
flocks a descriptor kept open (about 1 µs; filelock's own acquire costs about 90 µs here, which
would dominate every write); only when the lock is busy do we wait in filelock, which
handles the timeout.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
import time
from typing import TYPE_CHECKING

from .errors import LockTimeout

if TYPE_CHECKING:
    import filelock
from .fsio import Disk

_BUSY = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)


class WriterLock:
    """Exclusive across processes (flock) and threads (a mutex); not re-entrant."""

    def __init__(self, disk: Disk, path: str, timeout: float | None) -> None:
        self.path = path
        self.timeout = timeout
        self._disk = disk
        self._fd = disk.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._mutex = threading.Lock()
        self._waiter: filelock.FileLock | None = None

    def acquire(self) -> None:
        start = time.monotonic()
        timeout = self.timeout
        if not self._mutex.acquire(timeout=-1 if timeout is None else timeout):
            raise LockTimeout(f"timed out after {timeout}s waiting for the lock on {self.path}")
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in _BUSY:
                self._mutex.release()
                raise
        # Busy: another process writes. Wait for it through filelock (poll with timeout).
        import filelock  # only here: importing it costs more than an uncontended write

        remaining = -1.0 if timeout is None else max(0.0, timeout - (time.monotonic() - start))
        waiter = filelock.FileLock(self.path, timeout=remaining, poll_interval=0.0005, thread_local=False)
        try:
            waiter.acquire()
        except filelock.Timeout:
            self._mutex.release()
            raise LockTimeout(f"timed out after {timeout}s waiting for the lock on {self.path}") from None
        except BaseException:
            self._mutex.release()
            raise
        self._waiter = waiter

    def release(self) -> None:
        waiter = self._waiter
        try:
            if waiter is not None:
                self._waiter = None
                waiter.release()
            else:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._mutex.release()

    def record_write(self) -> None:
        """Change the lock file's "last writer" bytes, as containers/storage's RecordWrite does.

        Go readers notice a new images.json only when these 64 bytes change; call this (holding
        the lock) before publishing a snapshot. Layout as Go's lockfile: time, counter, pid, random.
        """
        old = self._disk.pread(self._fd, 64, 0)
        counter = int.from_bytes(old[8:16], "little") + 1 if len(old) >= 16 else 1
        data = struct.pack("<QQI", time.time_ns(), counter & 0xFFFFFFFFFFFFFFFF, os.getpid() & 0xFFFFFFFF)
        self._disk.pwrite(self._fd, data + os.urandom(64 - len(data)), 0)

    def close(self) -> None:
        if self._fd >= 0:
            self._disk.close(self._fd)
            self._fd = -1
