"""journalstore.fleet: ship every store's journal to NATS JetStream, and ask the fleet questions.

    from journalstore.fleet import Fleet, ship
    ship("/var/lib/mystore", "nats://127.0.0.1:4222")          # everything not yet shipped, once
    fleet = Fleet("nats://127.0.0.1:4222")
    fleet.refresh()                                             # read what the stream added
    for host, store, images in fleet.images(): ...
    fleet.where("quay.io/app/web:1.0")                          # [Where(host, store, image, ...)]

Needs the `[fleet]` extra (nats-py); the rest of journalstore never imports it. docs/fleet.md
describes the subjects, the messages, and why shipping is exactly once.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable

from .connect import FleetError, parse_servers, require_nats
from .messages import DEFAULT_STREAM, host_token, subject
from .ship import ShipGap, Shipper, ShipReport, gap_text
from .storeid import read_store_id, store_id
from .view import Fleet, FleetEvent, FleetWarning, StoreState, Where, default_cache


def ship(
    root: str | os.PathLike[str],
    url: str,
    *,
    stream: str = DEFAULT_STREAM,
    host: str | None = None,
    replicas: int = 1,
    follow: bool = False,
    stop: threading.Event | None = None,
    on_gap: Callable[[int, int], None] | None = None,
    on_batch: Callable[[ShipReport], None] | None = None,
    connect_timeout: float = 5.0,
    retry_for: float = 60.0,
) -> ShipReport:
    """Publish every commit record of the store at `root` that the stream lacks, in order, once.

    With `follow`, keep shipping new records until `stop` is set. Raises ShipGap (after shipping
    the rest) if records were pruned locally before they were shipped. `on_batch` is called with
    the report after each batch the stream acknowledged.
    """
    require_nats()
    shipper = Shipper(
        root,
        url,
        stream=stream,
        host=host,
        replicas=replicas,
        on_gap=on_gap,
        on_batch=on_batch,
        connect_timeout=connect_timeout,
        retry_for=retry_for,
    )
    report = asyncio.run(shipper.run(follow=follow, stop=stop))
    if report.gaps:
        raise ShipGap("; ".join(gap_text(report.store, a, b) for a, b in report.gaps), report)
    return report


__all__ = [
    "DEFAULT_STREAM",
    "Fleet",
    "FleetError",
    "FleetEvent",
    "FleetWarning",
    "ShipGap",
    "ShipReport",
    "Shipper",
    "StoreState",
    "Where",
    "default_cache",
    "gap_text",
    "host_token",
    "parse_servers",
    "read_store_id",
    "require_nats",
    "ship",
    "store_id",
    "subject",
]
