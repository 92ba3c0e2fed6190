"""How history() and at() scale: a journal of RECORDS records, timed and measured in fresh processes.

    python -m benchmarks.audit_scale [--records 1000000] [--images 20000] [--dir DIR]

Builds (once, kept in DIR) a store of IMAGES images and RECORDS records in all (creates, then
name moves, metadata and flag changes; automatic compaction as by default), then in a fresh
interpreter each: iterates the whole `history()`, one image's `history(ref)`, `at(t).big_data()`
end to end, `at()` of the middle record and of the last record, reporting wall time and the peak resident memory the
process reached during it (VmHWM, reset after the open). Prints one line per measurement and a JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PROBE = r"""
import json, sys, time
from journalstore import ImageStore

def status(key):
    # /proc/self/status, not ru_maxrss: ru_maxrss survives exec and would report the parent's peak.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0

path, what = sys.argv[1], sys.argv[2]
before = status("VmRSS")
store = ImageStore(path, read_only=True)
opened = status("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM: the peak below is the operation's own
except OSError:
    pass
start = time.perf_counter()
count = 0
if what == "history":
    for _event in store.history():
        count += 1
elif what == "history-one":
    count = sum(1 for _event in store.history("app-7:latest"))
elif what == "history-one-id":
    image_id = store.get("app-11:v1").id
    start = time.perf_counter()
    count = sum(1 for _event in store.history(image_id))
elif what == "history-one-past-name":
    count = sum(1 for _event in store.history("app-5:v1"))
elif what == "at-big-data":
    since = next(iter(store.history("bigdata-target"))).seq  # created; overwritten 1,000 times since
    view = store.at(since)  # rebuilding the state at `since` is timed by at-middle/at-last
    start = time.perf_counter()
    count = len(view.big_data("bigdata-target", "config"))
elif what == "at-big-data-e2e":
    since = next(iter(store.history("bigdata-target"))).seq
    start = time.perf_counter()  # at(t) and the read, end to end
    count = len(store.at(since).big_data("bigdata-target", "config"))
elif what == "at-middle":
    count = len(store.at(store.seq // 2))
elif what == "at-last":
    count = len(store.at(store.seq))
seconds = time.perf_counter() - start
peak = status("VmHWM")
print(json.dumps({"what": what, "seconds": seconds, "count": count, "records": store.seq,
                  "rss_before_kib": before, "rss_open_kib": opened, "rss_peak_kib": peak}))
"""


OVERWRITES = 1_000


def build(path: Path, records: int, images: int) -> None:
    """Write the store (fsync off: the journal's content is what matters here).

    Then one image whose big-data item is overwritten OVERWRITES times, and one image renamed,
    so that its first name (app-5:v1) is a past name."""
    _build_records(path, records, images)
    from journalstore import ImageStore

    with ImageStore(path, fsync="never", actor="audit-scale") as store:
        if not store.exists("bigdata-target"):
            store.create(names=["bigdata-target"], big_data=[("config", b"config 0" * 64)])
            for i in range(1, OVERWRITES + 1):
                store.set_big_data("bigdata-target", "config", f"config {i}".encode() * 64)
        if store.exists("app-5:v1"):
            store.set_names("app-5:v1", ["app-5:renamed"])


def _build_records(path: Path, records: int, images: int) -> None:
    from journalstore import ImageStore

    with ImageStore(path, fsync="never", actor="audit-scale") as store:
        done = store.seq
        if done >= records:
            return
        started = time.perf_counter()
        while store.seq < images:
            i = store.seq
            store.create(names=[f"app-{i}:v1"], layer=f"{i:064x}", digest=f"sha256:{i:064x}")
        i = store.seq
        while i < records:
            k = i % images
            kind = i % 3
            if kind == 0:
                store.add_names(f"app-{k}:v1", [f"app-{(i * 7) % images}:latest"])  # names move around
            elif kind == 1:
                store.set_metadata(f"app-{k}:v1", f'{{"build": {i}}}')
            else:
                store.set_flag(f"app-{k}:v1", "seen", i)
            i = store.seq
            if i % 100_000 == 0:
                print(f"  built {i:,} records ({time.perf_counter() - started:.0f} s)", file=sys.stderr)


def log_ref(path: Path, ref: str) -> dict[str, Any]:
    """`journalstore log REF` as a whole process: interpreter start, open, walk, print."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "journalstore", "--root", str(path), "log", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {
        "what": "log-ref",
        "seconds": time.perf_counter() - start,
        "count": len(out.splitlines()),
        "records": 0,
        "rss_before_kib": 0,
        "rss_open_kib": 0,
        "rss_peak_kib": 0,
    }


def probe(path: Path, what: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), what], capture_output=True, text=True, check=True
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.audit_scale", description=__doc__)
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--dir", type=Path, default=Path("benchmarks/out/audit-scale"))
    args = p.parse_args(argv)
    path = args.dir / f"store-{args.records}-{args.images}"
    os.makedirs(args.dir, exist_ok=True)
    build(path, args.records, args.images)
    results = []
    whats = (
        "history",
        "history-one",
        "history-one-id",
        "history-one-past-name",
        "at-big-data",
        "at-big-data-e2e",
        "log-ref",
        "at-middle",
        "at-last",
    )
    for what in whats:
        r = log_ref(path, "app-11:v1") if what == "log-ref" else probe(path, what)
        results.append(r)
        print(
            f"{what:<22} {r['seconds'] * 1000:10.1f} ms  over {r['records']:,} records ({r['count']:,} items)  "
            f"peak RSS {r['rss_peak_kib'] / 1024:.0f} MiB (after open {r['rss_open_kib'] / 1024:.0f} MiB)"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
