"""Measurements that need a fresh interpreter: cold open and memory. Run by the harness.

    python -m benchmarks.probe open   --impl NAME --path DIR --ref REF --want ID [--json images.json]
    python -m benchmarks.probe memory --impl NAME --path DIR --ref REF --want ID
    python -m benchmarks.probe rss    --impl NAME --path DIR --ref REF --want ID

Prints one JSON line. Exits 1 (with a message on stderr) if the lookup of REF after opening
does not return image ID.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc

from .adapters import ADAPTERS, Adapter, NotFound


def _check(adapter: Adapter, ref: str, want: str) -> None:
    try:
        found = adapter.get(ref)
    except NotFound:
        sys.exit(f"{adapter.name}: get({ref!r}) after a cold open found nothing, expected {want}")
    if found.id != want:
        sys.exit(f"{adapter.name}: get({ref!r}) after a cold open returned {found.id}, expected {want}")


def _rss() -> int:
    """Resident set size in bytes (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import resource

    return pages * resource.getpagesize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probe")
    parser.add_argument("what", choices=("open", "memory", "rss"))
    parser.add_argument("--impl", required=True, choices=sorted(ADAPTERS))
    parser.add_argument("--path", required=True)
    parser.add_argument("--ref", required=True)
    parser.add_argument("--want", required=True)
    parser.add_argument("--json", default=None, help="images.json to time json.loads on")
    args = parser.parse_args(argv)
    adapter = ADAPTERS[args.impl]()
    out: dict[str, float] = {}
    gc.collect()
    if args.what == "open":
        t0 = time.perf_counter()
        adapter.open(args.path, False, read_only=True)
        _check(adapter, args.ref, args.want)
        out["open_s"] = time.perf_counter() - t0
        if args.json:
            with open(args.json, "rb") as f:
                data = f.read()
            t0 = time.perf_counter()
            json.loads(data)
            out["json_loads_s"] = time.perf_counter() - t0
    elif args.what == "memory":
        tracemalloc.start()
        adapter.open(args.path, False, read_only=True)
        gc.collect()
        out["after_open"] = tracemalloc.get_traced_memory()[0]
        _check(adapter, args.ref, args.want)
        gc.collect()
        out["after_lookup"] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    else:
        before = _rss()
        adapter.open(args.path, False, read_only=True)
        _check(adapter, args.ref, args.want)
        gc.collect()
        out["after_lookup"] = _rss() - before
    adapter.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
