"""Exactly once through failures: kill -9 of the shipper at random points, a server restart
mid-shipping, and one node of a 3-node JetStream cluster killed mid-stream."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from journalstore.fleet import ship
from journalstore.fleet.testing import NatsServer, cluster, wait_for_jetstream

from .conftest import ExactlyOnce, add_records, last_shipped, make_store

TRIALS = int(os.environ.get("JOURNALSTORE_FLEET_TRIALS", "0")) or (100 if os.environ.get("JOURNALSTORE_STRESS") else 50)


def shipper(root: str, url: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "journalstore", "--root", root, "ship", "--to", url, "--host", "h1", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finish(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    try:
        _out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
        raise
    assert process.returncode == 0, err.decode()


# A shipper that says on stdout which record the stream holds once its k-th batch is acknowledged,
# then stops there (batch k+1 read and encoded, not sent) until it is killed.
HOLDING_SHIPPER = """
import sys, time
from journalstore.fleet import ship
root, url, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
def on_batch(report):
    if report.batches == k:
        print(report.last_seq, flush=True)
        time.sleep(3600)
ship(root, url, host="h1", on_batch=on_batch)
"""


def holding_shipper(root: str, url: str, batches: int) -> tuple[subprocess.Popen[bytes], int]:
    """A shipper process held after `batches` acknowledged batches, and the record it reached."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDING_SHIPPER, root, url, str(batches)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # the shipper's signal: batch k is in the stream
    if not line:
        process.wait(10)
        raise AssertionError(f"the shipper ended before its batch {batches}: {process.stderr.read().decode()}")
    return process, int(line)


def test_kill_9_of_the_shipper_at_random_points(url: str, tmp_path: Path) -> None:
    rng = random.Random(os.environ.get("JOURNALSTORE_SEED", str(time.time_ns())))
    with make_store(tmp_path / "s", 2000) as store:
        checker = ExactlyOnce(url, store.path, "h1")
        killed_mid_way = 0
        for trial in range(TRIALS):
            held = trial % 5 == 4  # killed on the shipper's signal, in the middle for certain
            add_records(store, rng.randrange(2500, 4000) if held else rng.randrange(500, 4000))
            if trial % 7 == 3:
                store.compact()
            reached = 0
            if held:
                process, reached = holding_shipper(store.path, url, rng.randrange(1, 3))
            else:
                process = shipper(store.path, url, *(["--follow"] if trial % 2 else []))
                time.sleep(rng.uniform(0.05, 0.45))  # it starts in ~0.2 s, then ships 1,000 records in ~40 ms
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            before = checker.last_seq
            after = checker.check()  # 1..after exactly once, in order, byte for byte
            if held:  # exactly the acknowledged batches, not the next one (prepared, unsent)
                assert before < after == reached < store.seq, (before, after, reached, store.seq)
            killed_mid_way += before < after < store.seq
        finish(shipper(store.path, url))
        assert checker.check() == store.seq
        assert killed_mid_way >= TRIALS // 5, "no kill landed while records were being shipped"


def test_server_restart_in_the_middle_of_shipping(tmp_path: Path) -> None:
    server = NatsServer(str(tmp_path / "nats"))
    server.start()
    try:
        wait_for_jetstream(server.url)
        with make_store(tmp_path / "s", 10_000) as store:
            ship(store.path, server.url, host="h1")  # the stream exists; now ship more, and restart meanwhile
            add_records(store, 30_000)
            process = shipper(store.path, server.url)
            checker = ExactlyOnce(server.url, store.path, "h1")
            deadline = time.monotonic() + 30
            while last_shipped(server.url, store.path, "h1") <= 10_000 and time.monotonic() < deadline:
                time.sleep(0.01)
            server.stop()
            assert process.poll() is None, "the server restarted after shipping ended"
            time.sleep(0.5)
            server.start()
            finish(process, 90)
            assert checker.check() == store.seq
    finally:
        server.stop()


def test_one_node_of_three_killed_mid_stream(tmp_path: Path) -> None:
    nodes = cluster(str(tmp_path))
    try:
        for node in nodes:
            node.start()
        urls = ",".join(node.url for node in nodes)
        wait_for_jetstream(nodes[0].url, timeout=30)
        with make_store(tmp_path / "s", 20) as store:
            ship(store.path, urls, host="h1", replicas=3)
            add_records(store, 30_000)
            process = shipper(store.path, urls)
            deadline = time.monotonic() + 30
            while (shipped := last_shipped(nodes[1].url, store.path, "h1")) <= 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            nodes[0].kill()  # the node the shipper connected to first
            assert shipped < store.seq, "the node was killed after shipping ended"
            finish(process, 90)
            for survivor in nodes[1:]:  # each surviving replica holds every record exactly once
                assert retrying(ExactlyOnce(survivor.url, store.path, "h1").check) == store.seq

    finally:
        for node in nodes:
            node.stop()


def retrying(check: Callable[[], int], seconds: float = 30) -> int:
    """A check run again while the cluster elects new leaders (its API may time out meanwhile)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return check()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
