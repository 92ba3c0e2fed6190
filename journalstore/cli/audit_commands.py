"""The audit commands: log (history, optionally followed live), replay, verify, repair."""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ..audit import Event
from ..checking import repair, verify
from ..errors import StoreError
from .framework import (
    EXIT_ERROR,
    EXIT_OK,
    Session,
    command,
    plural,
    quiet_option,
)

_RELATIVE = re.compile(r"^-?\s*(\d+(?:\.\d+)?)\s*([smhd])(?:\s+ago)?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(text: str) -> int | datetime:
    """A sequence number (`42`), an ISO 8601 time (`2026-11-30T10:00:00Z`; no offset means UTC),
    or a time relative to now (`10m`, `2h ago`, `-1d`)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    match = _RELATIVE.match(text)
    if match:
        return datetime.now(UTC) - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a record number, an ISO 8601 time nor a relative time like '10m'"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _short(image_id: str | None) -> str:
    return "-" if image_id is None else image_id[:12]


def describe(event: Event) -> str:
    """What an event changed, in a few words."""
    d: Mapping[str, Any] = event.data
    kind = event.kind
    if kind == "create":
        parts = [f"names={','.join(d.get('names', ())) or '-'}"]
        for key in ("layer", "digest"):
            if d.get(key):
                parts.append(f"{key}={d[key]}")
        if d.get("metadata"):
            parts.append(f"metadata={len(d['metadata'])} chars")
        return " ".join(parts)
    if kind in ("set-names", "add-names", "remove-names"):
        sign = {"set-names": "=", "add-names": "+", "remove-names": "-"}[kind]
        return sign + ",".join(d.get("names", ()))
    if kind == "set-metadata":
        text = str(d.get("metadata", ""))
        return f"metadata={json.dumps(text[:40])}{'...' if len(text) > 40 else ''}"
    if kind == "set-flag":
        return f"{d.get('key')}={json.dumps(_jsonable(d.get('value')))}"
    if kind == "clear-flag":
        return str(d.get("key"))
    if kind == "set-big-data":
        return f"{d.get('key')} ({d.get('size')} bytes, {d.get('digest')})"
    if kind in ("add-mapped-layer", "remove-mapped-layer"):
        return str(d.get("layer"))
    if kind == "put-image":
        names = d.get("image", {}).get("names", ())
        return f"record replaced (names={','.join(names) or '-'})"
    if kind == "import":
        return f"{plural(int(d.get('count', 0)), 'image')} from {d.get('source')}"
    if kind == "external-rewrite":
        return (
            f"images.json rewritten by another program: {len(d.get('added', ()))} added, "
            f"{len(d.get('changed', ()))} changed, {len(d.get('removed', ()))} removed"
        )
    return ""


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def event_line(event: Event) -> str:
    """One line of `log`: time, record, actor, kind, image, what changed."""
    when = event.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{when} #{event.seq:<6} {event.actor!s:<28} {event.kind:<19} {_short(event.image_id):<12} {describe(event)}"


def _log_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="REF", nargs="?", help="only this image (ID, name, or a name it once had)")
    p.add_argument("--since", metavar="WHEN", help="from this record number or time (inclusive)")
    p.add_argument("--until", metavar="WHEN", help="up to this record number or time (inclusive)")
    p.add_argument("--kind", dest="kinds", metavar="KIND", action="append", help="only events of this kind (repeat)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new events as they are written")
    p.add_argument("--interval", type=float, default=0.2, metavar="SECONDS", help="how often --follow looks")


@command(
    "log",
    group="audit",
    access="read",
    args=_log_args,
    summary="Show the history of the store or of one image",
    example="journalstore log --since 1h localhost/app:latest",
    description="One line per event: time (UTC), record number, who wrote it (actor, pid, uid), the kind of "
    "event, the image, and what changed. WHEN is a record number, an ISO 8601 time or a relative "
    "time such as 10m or 2h. --json prints one JSON object per line. --follow keeps printing events "
    "other processes append, like tail -f, until interrupted.",
)
def cmd_log(s: Session, a: argparse.Namespace) -> int:
    store = s.store
    since = parse_when(a.since) if a.since else None
    until = parse_when(a.until) if a.until else None
    last = 0
    for event in store.history(a.ref, since=since, until=until, kinds=a.kinds):
        _print_event(s, event)
        last = max(last, event.seq)
    if not a.follow:
        return EXIT_OK
    target = None if a.ref is None else store.image_id_of(a.ref)
    follower = store.follow(max(last, store.seq))
    try:
        while True:
            events = follower.poll()
            if events:
                store.refresh()
                names = set(store.get(target).names) if target is not None and store.exists(target) else set()
                for event in events:
                    mine = target is None or event.image_id == target or names & set(event.data.get("names", ()))
                    if mine and (not a.kinds or event.kind in a.kinds):
                        _print_event(s, event)
                s.out.flush()
            time.sleep(a.interval)
    finally:
        follower.close()


def _print_event(s: Session, event: Event) -> None:
    if s.json:
        s.emit(event.to_json())
    else:
        s.line(event_line(event))


def _replay_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--at", metavar="WHEN", required=True, help="a record number or a time (see log)")
    quiet_option(p)


@command(
    "replay",
    group="audit",
    access="read",
    args=_replay_args,
    summary="List the images as they were right after a record, or at a time",
    example="journalstore replay --at 2h",
    description="Rebuilds the store's state from the nearest snapshot and the journal, and prints it as "
    "'images' does. With a time, the state after the last record at or before it.",
)
def cmd_replay(s: Session, a: argparse.Namespace) -> int:
    with s.progress("replaying"):
        view = s.store.at(parse_when(a.at))
    images = view.images()
    if not s.json:
        s.trace(f"state after record {view.seq}: {plural(len(images), 'image')}")
    s.list_images(images, quiet=a.quiet)
    return EXIT_OK


@command(
    "verify",
    group="audit",
    access="none",
    summary="Check every journal segment, every checksum, and that replay reproduces every snapshot",
    example="journalstore verify",
    description="Reads the whole journal without changing anything. Prints what it checked; exits 1 "
    "on any damage, naming the segment and offset (see 'repair').",
)
def cmd_verify(s: Session, a: argparse.Namespace) -> int:
    from ..fsio import DEFAULT_DISK

    with s.progress("verifying") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.advance(done - bar.done)

        report = verify(s.root, DEFAULT_DISK, progress)
    if s.json:
        s.emit(report.to_json())
    else:
        s.line(
            f"checked {plural(report.segments, 'segment')}, {plural(report.records, 'record')} "
            f"(records {report.first_seq + 1}..{report.last_seq}), {report.bytes} bytes, "
            f"{plural(report.snapshots, 'snapshot')} reproduced by replay"
        )
        for problem in report.problems:
            s.line(f"DAMAGE: {problem}")
        s.line("ok" if report.ok else "the journal is damaged")
    return EXIT_OK if report.ok else EXIT_ERROR


def _repair_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--truncate-at", metavar="OFFSET", type=int, required=True, help="cut the segment at this offset")
    p.add_argument("--segment", metavar="N", type=int, help="the segment to cut (default: the newest)")
    p.add_argument("--force", action="store_true", help="cut even mid-record, or a closed segment")


@command(
    "repair",
    group="audit",
    access="none",
    args=_repair_args,
    summary="Cut a damaged journal at an offset (the only way to), keeping a copy of what is cut",
    example="journalstore repair --truncate-at 81234",
    description="Everything from OFFSET to the end of the segment is removed and saved next to it as "
    "segment-N.cut-OFFSET. Records after the damage are lost from the store (they stay in the copy). "
    "Use the offset 'verify' or the error message names.",
)
def cmd_repair(s: Session, a: argparse.Namespace) -> int:
    from ..fsio import DEFAULT_DISK

    if s.read_only_requested:
        raise StoreError("repair changes the journal: it cannot run with --read-only")
    copy, cut = repair(s.root, DEFAULT_DISK, a.truncate_at, a.segment, a.force)
    if s.json:
        s.emit({"cut_bytes": cut, "copy": copy, "offset": a.truncate_at})
    else:
        s.line(f"cut {cut} bytes at offset {a.truncate_at}; a copy is in {copy}")
    return EXIT_OK


def _prune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep", metavar="N", type=int, help="keep the N newest closed segments")
    p.add_argument("--older-than", metavar="AGE", help="drop closed segments not written for AGE (e.g. 30d, 12h)")


@command(
    "prune",
    group="audit",
    access="write",
    args=_prune_args,
    summary="Delete old closed journal segments (history before them is then gone)",
    example="journalstore prune --older-than 90d",
    description="Never touches the current segment or the snapshot it starts from; removes only the oldest "
    "segments, so the history that remains is contiguous. Prints the files removed.",
)
def cmd_prune(s: Session, a: argparse.Namespace) -> int:
    if a.keep is None and a.older_than is None:
        raise ValueError("say what to prune: --keep N and/or --older-than AGE")
    older: float | None = None
    if a.older_than is not None:
        match = _RELATIVE.match(a.older_than.strip())
        if not match:
            raise ValueError(f"--older-than {a.older_than!r}: give an age such as 30d, 12h or 90m")
        older = float(match.group(1)) * _UNITS[match.group(2)]
    removed = s.store.prune_journal(keep_segments=a.keep, older_than=older)
    if s.json:
        s.emit({"removed": removed, "history_start": s.store.history_start})
    else:
        for name in removed:
            s.line(f"removed {name}")
        s.line(f"history now starts at record {s.store.history_start}")
    return EXIT_OK
