"""The journal's own commands: stats, compact, import, accept-images-json, prune and the demo."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import warnings
from typing import Any

from ..errors import StoreError, StoreIsReadOnly, StoreNotFound
from ..snapshot import IMAGES_JSON
from ..stats import journal_segments, store_stats
from ..store import ImageStore
from .framework import (
    EXIT_OK,
    Session,
    command,
    plural,
)

# ============================================================================ journal commands


def _stats_lines(s: Session, stats: dict[str, Any]) -> None:
    s.line(f"Root: {stats['root']}")
    s.line(f"Images: {stats['images']}")
    s.line(f"Names: {stats['names']}")
    s.line(f"Digests: {stats['digests']}")
    s.line(f"Big data: {plural(stats['big_data_items'], 'item')}, {stats['big_data_bytes']} bytes")
    s.line(f"Segments: {stats['segments']}")
    s.line(f"Records: {stats['records']}")
    s.line(f"Journal bytes: {stats['journal_bytes']}")
    s.line(f"Kept past bytes: {plural(stats['kept_blobs'], 'blob')}, {stats['kept_blob_bytes']} bytes")
    snapshot = stats["last_snapshot"]
    if snapshot is None:
        s.line("Last snapshot: none")
    else:
        s.line(f"Last snapshot: {snapshot['file']}, {snapshot['bytes']} bytes, {snapshot['modified']}")
    position = stats["position"]
    s.line(f"Position: segment {position['segment']}, offset {position['offset']}")


@command(
    "stats",
    group="journal",
    access="read",
    summary="Show counts and sizes of the store and its journal",
    example="journalstore --json stats",
    description="Images, names, digests, big data, journal segments and their bytes, records (the last "
    "sequence number), the last snapshot (images.json) and the journal position read up to.",
)
def cmd_stats(s: Session, a: argparse.Namespace) -> int:
    stats = store_stats(s.store)
    if s.json:
        s.emit(stats)
    else:
        _stats_lines(s, stats)
    return EXIT_OK


@command(
    "compact",
    group="journal",
    access="write",
    summary="Write the images.json snapshot now and start a new journal segment",
    example="journalstore compact",
    description="Older segments are kept for the audit history. Prints one line saying what was written "
    "(--json: {images, snapshot_bytes, segment, seconds}).",
)
def cmd_compact(s: Session, a: argparse.Namespace) -> int:
    store = s.store
    started = time.perf_counter()
    with s.progress("compacting"):
        wrote = store.compact()
    seconds = time.perf_counter() - started
    size = os.stat(os.path.join(store.path, IMAGES_JSON)).st_size
    segment = store.position.segment
    if s.json:
        document = {"images": len(store), "snapshot_bytes": size, "segment": segment, "seconds": round(seconds, 6)}
        s.emit({**document, "wrote": wrote})
    elif not wrote:
        s.line(f"nothing to compact: {IMAGES_JSON} already holds the current state (journal at segment {segment})")
    else:
        s.line(
            f"compacted {store.path}: {plural(len(store), 'image')} in {IMAGES_JSON} ({size} bytes), "
            f"journal now at segment {segment} ({seconds:.3f} s)"
        )
    return EXIT_OK


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "dir", metavar="DIR", nargs="?", default=None, help="the containers/storage images directory (default: --root)"
    )


@command(
    "import",
    group="journal",
    access="none",
    args=_import_args,
    summary="Turn a containers/storage images directory into a journalstore store, in place",
    example="journalstore import /var/lib/containers/storage/overlay-images",
    description="DIR (default: --root) must hold a containers/storage images.json and no journal yet. The "
    "images stay where they are: DIR gains a journal whose history starts with an import record, and "
    "images.json keeps the format containers/storage reads. Prints how many images were imported "
    "(--json: {root, source, images, records}). Read-only commands never convert a directory.",
)
def cmd_import(s: Session, a: argparse.Namespace) -> int:
    directory = os.path.abspath(os.path.expanduser(a.dir)) if a.dir else s.root
    source = os.path.join(directory, IMAGES_JSON)
    if s.read_only_requested:
        raise StoreIsReadOnly(f"import converts {directory} in place: it cannot run with --read-only")
    if not os.path.isdir(directory):
        raise StoreNotFound(f"no directory {directory}")
    if journal_segments(directory):
        raise StoreError(f"{directory} is already a journalstore store: nothing to import")
    if not os.path.exists(source):
        raise StoreNotFound(f"{directory} holds no {IMAGES_JSON} to import")
    with s.progress(f"importing {source}"):
        store = s.open(directory, write=True)
    if store.read_only or not journal_segments(directory):
        raise StoreIsReadOnly(f"cannot import {directory}: it is not writable by this user")
    count = len(store)
    if s.json:
        s.emit({"root": directory, "source": source, "images": count, "records": store.seq})
    else:
        s.line(f"imported {plural(count, 'image')} from {source}")
        s.line(f"{directory} is now a journalstore store; its history starts with the import (record {store.seq})")
    return EXIT_OK


@command(
    "accept-images-json",
    group="journal",
    access="none",
    summary="Merge a hand-edited images.json into the journal, as a recorded change",
    example="journalstore --root /var/lib/containers/storage/overlay-images accept-images-json",
    description="A store refuses to open read-write when images.json changed without containers/storage's "
    "last-writer bytes changing (damage, or a hand edit). After checking the file, this merges it "
    "the way a containers/storage save is merged: three-way, event by event, recorded under --actor. "
    "The file must still be a list of images containers/storage could read. Prints the record "
    "(--json: {root, record, events}).",
)
def cmd_accept_images_json(s: Session, a: argparse.Namespace) -> int:
    if s.read_only_requested:
        raise StoreIsReadOnly("accept-images-json records a change: it cannot run with --read-only")
    before = None
    with warnings.catch_warnings(), contextlib.suppress(StoreError):
        warnings.simplefilter("ignore")  # the reader warns of the very damage being accepted
        with ImageStore(s.root, read_only=True) as reader:
            before = reader.seq
    store = s.open(s.root, write=True, accept_images_json=True)
    merged = [] if before is None else [e for e in store.history(since=before + 1) if e.kind != "import"]
    if s.json:
        s.emit({"root": s.root, "record": store.seq, "events": [e.to_json() for e in merged]})
    elif merged:
        s.line(f"merged images.json as record {store.seq} ({plural(len(merged), 'event')})")
    else:
        s.line("images.json holds nothing the journal does not: nothing to merge")
    return EXIT_OK


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a smaller store, for tests (a few seconds)")
    p.add_argument("--images", type=int, default=None, metavar="N", help="how many images to pull (default 300)")
    p.add_argument("--keep", action="store_true", help="keep the temporary store instead of removing it")


@command(
    "demo",
    group="journal",
    access="none",
    args=_demo_args,
    summary="A guided walk through journalstore on a throwaway store",
    example="journalstore demo --quick",
    description="Builds a store of realistic images in a temporary directory (or in --root, which must be "
    "empty or new), renames, re-tags and deletes some, shows a second process picking up a change, "
    "compacts, shows one image's history and the store as it was ten simulated minutes earlier, and "
    "ends with a table of timings. --json prints the narrative on stderr and a summary on stdout.",
)
def cmd_demo(s: Session, a: argparse.Namespace) -> int:
    from . import demo

    if a.images is not None and a.images < 20:
        raise ValueError(f"--images must be at least 20, not {a.images}")
    root = os.path.abspath(os.path.expanduser(a.root)) if a.root else None
    summary = demo.run(
        root=root,
        quick=a.quick,
        images=a.images,
        keep=a.keep,
        fsync=s.fsync,
        out=sys.stderr if s.json else sys.stdout,
    )
    if s.json:
        s.emit(summary)
    return EXIT_OK


