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
import threading
import time

import filelock

from .errors import LockTimeout
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

    def close(self) -> None:
        if self._fd >= 0:
            self._disk.close(self._fd)
            self._fd = -1
