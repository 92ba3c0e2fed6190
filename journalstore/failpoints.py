"""Named crash points: `JOURNALSTORE_FAILPOINT=name` makes the process SIGKILL itself there.

The reliability suites use them to stop a writer at an exact step of an append, a big-data
write, a delete or a compaction (etcd's gofail, in one function). With the variable unset the
check is a single comparison against None.
"""

from __future__ import annotations

import os
import signal

_ACTIVE = os.environ.get("JOURNALSTORE_FAILPOINT") or None
_COUNTDOWN = int(os.environ.get("JOURNALSTORE_FAILPOINT_SKIP", "0") or 0)

# Every failpoint the code defines, so tests can enumerate them.
NAMES = (
    "append-before-write",
    "append-torn-write",
    "append-before-sync",
    "append-after-sync",
    "bigdata-after-keep",
    "commit-after-append",
    "bigdata-after-prepare",
    "bigdata-after-stage",
    "bigdata-after-backup",
    "bigdata-after-rename",
    "bigdata-after-commit",
    "delete-after-commit",
    "delete-mid-remove",
    "snapshot-before-rename",
    "snapshot-after-archive",
    "compact-after-end-marker",
    "compact-after-segment",
    "compact-before-publish",
    "compact-after-publish",
    "publish-before-mark",
)


def fires(name: str) -> bool:
    """Whether `name` is the armed failpoint and its skip count is used up (counts this hit)."""
    global _COUNTDOWN
    if _ACTIVE is None or name != _ACTIVE:
        return False
    if _COUNTDOWN > 0:
        _COUNTDOWN -= 1
        return False
    return True


def die() -> None:
    """Kill this process the way a crash would: no cleanup, no flush."""
    os.kill(os.getpid(), signal.SIGKILL)


def hit(name: str) -> None:
    """Die with SIGKILL if `name` is the armed failpoint (after skipping SKIP earlier hits)."""
    if _ACTIVE is not None and fires(name):
        die()
