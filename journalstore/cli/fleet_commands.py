"""The fleet commands: ship (a store's journal to NATS JetStream) and fleet (images, where, log).

nats-py is imported only when one of them runs; without the `[fleet]` extra they exit 1 saying
`pip install journalstore[fleet]`.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from .audit_commands import event_line, parse_when
from .framework import EXIT_ERROR, EXIT_OK, PROG, Session, command, image_document, summary_lines


def _ship_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--to", metavar="URL", required=True, help="the NATS server(s): nats://HOST:PORT[,nats://...]")
    p.add_argument("--stream", metavar="NAME", default="JOURNALSTORE", help="the stream (default JOURNALSTORE)")
    p.add_argument("--host", metavar="NAME", help="the host name to publish under (default: socket.gethostname())")
    p.add_argument("--replicas", metavar="N", type=int, default=1, help="replicas of the stream if it is created")
    p.add_argument("-f", "--follow", action="store_true", help="keep shipping records as they are appended")
    p.add_argument("--timeout", metavar="SECONDS", type=float, default=5.0, help="connect timeout (default 5)")


@command(
    "ship",
    group="journal",
    access="none",
    args=_ship_args,
    summary="Publish the journal's commit records to a NATS JetStream stream, exactly once",
    example="journalstore ship --to nats://127.0.0.1:4222 --follow",
    description="Each record goes to subject journalstore.<host>.<store-id> with its payload byte for byte. "
    "The shipper keeps no cursor: it asks the stream for the last record it holds and ships the rest, in "
    "atomic batches. Records pruned before they were shipped are reported (exit 1) and replaced in the "
    "stream by a gap marker and a snapshot. Prints what it shipped (--json: a report). See docs/fleet.md.",
)
def cmd_ship(s: Session, a: argparse.Namespace) -> int:
    from .. import fleet

    fleet.require_nats()
    fleet.parse_servers(a.to)

    def on_gap(first: int, last: int) -> None:
        s.error(fleet.gap_text(store, first, last))

    shipper = fleet.Shipper(
        s.root, a.to, stream=a.stream, host=a.host, replicas=a.replicas, connect_timeout=a.timeout, on_gap=on_gap
    )
    store = shipper.store
    import asyncio  # here: the other commands start faster without it

    report = asyncio.run(shipper.run(follow=a.follow))
    if s.json:
        s.emit(report.to_json())
    else:
        s.line(
            f"shipped records {report.resumed_after + 1}..{report.last_seq} of store {report.store} "
            f"to {report.subject}" if report.shipped else
            f"nothing to ship: {report.subject} already holds record {report.last_seq} of store {report.store}"
        )
    return EXIT_ERROR if report.gaps else EXIT_OK


def _fleet_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="url", metavar="URL", required=True, help="the NATS server(s): nats://HOST:PORT")
    p.add_argument("--stream", metavar="NAME", default="JOURNALSTORE", help="the stream (default JOURNALSTORE)")
    p.add_argument("--cache", metavar="FILE", help="where the view is kept between runs (default under ~/.cache)")
    p.add_argument("--no-cache", action="store_true", help="replay the whole stream; keep nothing")
    p.add_argument("--timeout", metavar="SECONDS", type=float, default=5.0, help="connect timeout (default 5)")
    sub = p.add_subparsers(dest="question", metavar="QUESTION", required=True)
    images = sub.add_parser("images", help="each store's current images")
    images.add_argument("--host", metavar="H", help="only the stores of this host")
    images.add_argument("-q", "--quiet", action="store_true", help="only print IDs")
    where = sub.add_parser("where", help="which hosts have an image (by name, ID or digest), since when")
    where.add_argument("ref", metavar="REF-OR-DIGEST")
    log = sub.add_parser("log", help="the fleet's merged history, by time")
    log.add_argument("ref", metavar="REF", nargs="?", help="only this image (ID, name or digest)")
    log.add_argument("--host", metavar="H", help="only this host")
    log.add_argument("--since", metavar="WHEN", help="from this time (ISO 8601, or 10m, 2h, 1d)")
    for q in (images, where, log):
        q.add_argument("-j", "--json", action="store_true", default=argparse.SUPPRESS, help="one JSON document")


@command(
    "fleet",
    group="journal",
    access="none",
    args=_fleet_args,
    summary="Ask every store shipped to a NATS stream: images, where an image is, merged history",
    example="journalstore fleet --from nats://127.0.0.1:4222 where quay.io/app/web:1.0",
    description="Rebuilds each store from its subject with the library's reducer, resuming from a local "
    "cache of the view (see --cache). 'images' lists each store's images as 'images' does (--json: "
    "[{host, store, images}]); 'where' the stores holding an image and since when; 'log' the events of "
    "every store by time, one line (--json: one object) per event. Foreign messages are reported on "
    "stderr and skipped.",
)
def cmd_fleet(s: Session, a: argparse.Namespace) -> int:
    from .. import fleet

    fleet.require_nats()
    fleet.parse_servers(a.url)

    def warn(text: str) -> None:
        sys.stdout.flush()
        sys.stderr.write(f"{PROG}: warning: {text}\n")

    json_out = s.json or bool(getattr(a, "json", False))
    if a.question == "log":
        since: datetime | None = None
        if a.since:
            when = parse_when(a.since)
            if not isinstance(when, datetime):
                raise ValueError("fleet log --since takes a time (record numbers differ from store to store)")
            since = when
        view = fleet.Fleet(a.url, stream=a.stream, connect_timeout=a.timeout, warn=warn)
        for item in view.log(a.ref, host=a.host, since=since):
            if json_out:
                s.emit(item.to_json())
            else:
                s.line(f"{item.host:<16} {item.store[:8]} {event_line(item.event)}")
        return EXIT_OK
    cache = None if a.no_cache else (a.cache or fleet.default_cache(a.url, a.stream))
    view = fleet.Fleet(a.url, stream=a.stream, cache=cache, connect_timeout=a.timeout, warn=warn)
    view.refresh()
    if a.question == "images":
        listing = view.images(a.host)
        if json_out:
            s.emit(
                [{"host": h, "store": st, "images": [image_document(i) for i in ims]} for h, st, ims in listing]
            )
        else:
            for host, store, images in listing:
                s.line(f"# {host} {store}")
                for image in images:
                    s.lines(summary_lines(image, quiet=a.quiet))
        return EXIT_OK
    found = view.where(a.ref)
    if json_out:
        s.emit([w.to_json() for w in found])
    else:
        for w in found:
            s.line(f"{w.host}\t{w.store}\t{w.image.id[:12]}\t{w.matched}\tsince {fleet.view.iso(w.since_ns)}")
    return EXIT_OK if found else EXIT_ERROR
