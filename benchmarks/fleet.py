"""Fleet shipping figures, against a loopback nats-server this script starts (and stops) itself.

    python -m benchmarks.fleet [--records 100000] [--stores 10] [--per-store 10000] [--rate 1000]

1. catch-up: ship a store of RECORDS records to an empty stream, in records/s;
2. live lag: a shipper follows a store while this process commits RATE records/s for a few
   seconds; lag = the stream's receive time of each record minus the time in the record
   (commit to the stream's ack), p50 and p99;
3. fleet view: STORES stores of PER_STORE records each shipped, then a fresh `Fleet.refresh()`.
Stores are written with fsync="never": the figures measure shipping, not the local write.
Prints one line per figure and a JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from journalstore import ImageStore
from journalstore.fleet import Fleet, ship
from journalstore.fleet import messages as m
from journalstore.fleet.connect import api, connect
from journalstore.fleet.storeid import read_store_id
from journalstore.fleet.testing import NatsServer, wait_for_jetstream


def build(path: str, records: int, prefix: str = "app") -> None:
    with ImageStore(path, fsync="never", actor="bench") as store:
        for i in range(records):
            if i % 4 == 3:
                j = (i * 7) % i
                j -= j % 4 == 3
                store.add_names(f"{prefix}-{j}:v1", [f"{prefix}-moving:{i % 5}"])
            else:
                store.create(names=[f"{prefix}-{i}:v1"], layer=f"L{i}", digest=f"sha256:{i:064x}")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def lags(url: str, subject: str) -> list[float]:
    """Seconds from each record's commit (its `time`) to its arrival in the stream."""

    async def run() -> list[float]:
        from nats.js.api import DeliverPolicy

        client = await connect(url)
        js = client.jetstream()
        sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        out = []
        while True:
            msg = await sub.next_msg(timeout=10)
            body = m.parse(msg.subject, msg.headers, msg.data, 0, 0).body
            out.append(msg.metadata.timestamp.timestamp() - body["time"] / 1e9)
            if msg.metadata.num_pending == 0:
                break
        await client.close()
        return out

    return asyncio.run(run())


async def delete_stream(url: str) -> None:
    client = await connect(url)
    await api(client, f"STREAM.DELETE.{m.DEFAULT_STREAM}")
    await client.close()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--stores", type=int, default=10)
    parser.add_argument("--per-store", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=1000, help="commits per second for the lag figure")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the lag figure commits")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        server = NatsServer(os.path.join(tmp, "nats"))
        server.start()
        try:
            wait_for_jetstream(server.url)
            url = server.url
            # 1. catch-up
            root = os.path.join(tmp, "big")
            build(root, args.records)
            started = time.perf_counter()
            report = ship(root, url, host="bench")
            seconds = time.perf_counter() - started
            results["catch_up"] = {
                "records": report.shipped,
                "seconds": round(seconds, 3),
                "records_per_s": round(report.shipped / seconds),
            }
            print(f"catch-up: {report.shipped} records in {seconds:.2f} s = {report.shipped / seconds:,.0f} records/s")
            # 2. live lag
            live = os.path.join(tmp, "live")
            build(live, 10, prefix="live")
            ship(live, url, host="live")
            shipper = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "journalstore",
                    "--root",
                    live,
                    "ship",
                    "--to",
                    url,
                    "--host",
                    "live",
                    "--follow",
                ],
                stderr=subprocess.DEVNULL,
            )
            try:
                time.sleep(1.0)
                with ImageStore(live, fsync="never") as store:
                    interval = 1.0 / args.rate
                    begin = time.perf_counter()
                    n = 0
                    while time.perf_counter() - begin < args.seconds:
                        store.create(names=[f"live-x{n}:v1"], layer="L")
                        n += 1
                        pause = begin + n * interval - time.perf_counter()
                        if pause > 0:
                            time.sleep(pause)
                    rate = n / (time.perf_counter() - begin)
                    target = store.seq
                sid = read_store_id(live)
                assert sid is not None
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    values = lags(url, m.subject("live", sid))
                    if len(values) >= target:
                        break
                    time.sleep(0.2)
            finally:
                shipper.send_signal(signal.SIGINT)
                try:
                    shipper.wait(10)
                except subprocess.TimeoutExpired:
                    shipper.kill()
            measured = values[10:]  # the records written before the shipper followed
            p50, p99 = percentile(measured, 50) * 1000, percentile(measured, 99) * 1000
            results["live_lag"] = {
                "commits": len(measured),
                "rate_per_s": round(rate),
                "p50_ms": round(p50, 2),
                "p99_ms": round(p99, 2),
                "max_ms": round(max(measured) * 1000, 2),
            }
            print(f"live lag at {rate:,.0f} commits/s: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({len(measured)} commits)")
            # 3. fleet view, on a stream of its own
            asyncio.run(delete_stream(url))
            for i in range(args.stores):
                path = os.path.join(tmp, f"fleet{i}")
                build(path, args.per_store, prefix=f"s{i}")
                ship(path, url, host=f"host{i}")
            fleet = Fleet(url)
            started = time.perf_counter()
            count = fleet.refresh()
            seconds = time.perf_counter() - started
            results["fleet_view"] = {
                "stores": args.stores,
                "records_per_store": args.per_store,
                "messages": count,
                "seconds": round(seconds, 3),
            }
            print(
                f"fleet view: {args.stores} stores x {args.per_store} records ({count} messages) "
                f"rebuilt in {seconds:.2f} s"
            )
        finally:
            server.stop()
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
