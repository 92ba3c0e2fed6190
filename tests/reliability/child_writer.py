"""The child of the kill -9 suite: a random stream of mutations on one store until it is killed.

    python -m tests.reliability.child_writer STORE LOG SEED TAG [COMPACT_EVERY]

Opens `ImageStore(STORE, fsync="always")` and runs random operations (tests/reliability/ops.py)
forever. Each one is logged to LOG as a JSON line *before* it runs ({"t": "op", ...}) and its
outcome *after* it returns ({"t": "done", ...}), so after a SIGKILL the log tells exactly which
mutations were acknowledged and which one, at most, was in flight. The log is written with
unbuffered `os.write` calls on an O_APPEND descriptor: once a call returns, the line is in the
kernel and survives the death of the process (a SIGKILL loses no page cache, so fsyncing the
log would only slow the stream down). A torn last line is ignored by the parent.

The process dies by SIGKILL from the parent, or at the failpoint armed by
JOURNALSTORE_FAILPOINT / JOURNALSTORE_FAILPOINT_SKIP; it never exits on its own except on an
unexpected error (exit status 3, traceback on stderr).
"""

from __future__ import annotations

import json
import os
import random
import sys
import traceback

from journalstore import ImageStore

from .ops import Drawer, run


def main(argv: list[str]) -> int:
    store_path, log_path, seed, tag = argv[:4]
    compact_every = int(argv[4]) if len(argv) > 4 and argv[4] != "none" else None
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def log(entry: dict[str, object]) -> None:
        os.write(fd, (json.dumps(entry, separators=(",", ":")) + "\n").encode())

    try:
        store = ImageStore(store_path, fsync="always", compact_every=compact_every, actor=f"kill9-{tag}")
        drawer = Drawer(random.Random(int(seed)), tag)
        log({"t": "ready", "seq": store.seq, "pid": os.getpid()})
        n = 0
        while True:
            op = drawer.draw(store.images())
            log({"t": "op", "n": n, "op": op})
            outcome = run(store, op)
            log({"t": "done", "n": n, "out": outcome})
            n += 1
    except BaseException:
        sys.stderr.write(traceback.format_exc())
        log({"t": "error", "trace": traceback.format_exc()})
        return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
