"""ship and the fleet view against a real nats-server: resume, follow, gaps, foreign messages, CLI."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from journalstore import ImageStore
from journalstore.cli.framework import image_document
from journalstore.fleet import Fleet, FleetError, FleetWarning, ShipGap, Shipper, read_store_id, ship
from journalstore.fleet import messages as m
from journalstore.fleet.connect import connect

from .conftest import (
    ExactlyOnce,
    add_records,
    journal_payloads,
    last_shipped,
    make_store,
    store_subject,
    subject_messages,
)


def docs(images: list) -> list[dict]:  # type: ignore[type-arg]
    return [image_document(i) for i in images]


def test_ship_then_ship_again_adds_nothing(url: str, tmp_path: Path) -> None:
    with make_store(tmp_path / "s", 120) as store:
        first = ship(store.path, url, host="h1")
        assert (first.resumed_after, first.shipped, first.last_seq) == (0, 120, 120)
        again = ship(store.path, url, host="h1")
        assert (again.resumed_after, again.shipped, again.last_seq) == (120, 0, 120)
        assert ExactlyOnce(url, store.path, "h1").check() == 120
        add_records(store, 7)
        assert ship(store.path, url, host="h1").shipped == 7
        assert ExactlyOnce(url, store.path, "h1").check() == 127


def test_store_id_is_made_once_and_kept(url: str, tmp_path: Path) -> None:
    with make_store(tmp_path / "s", 3) as store:
        assert read_store_id(store.path) is None
        ship(store.path, url, host="h1")
        sid = read_store_id(store.path)
        assert sid is not None and m.valid_store_id(sid)
        assert (Path(store.path) / "journal" / "store-id").read_text() == sid + "\n"
        store.compact()  # a compaction (and its cleanup of temporaries) leaves it alone
        ship(store.path, url, host="h1")
        assert read_store_id(store.path) == sid


def test_follow_picks_up_appends(url: str, tmp_path: Path) -> None:
    with make_store(tmp_path / "s", 10) as store:
        stop = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                ship(store.path, url, host="h1", follow=True, stop=stop)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        try:
            checker = ExactlyOnce(url, store.path, "h1")
            for _round in range(3):
                add_records(store, 25)
                store.compact()  # across a rotation too
                deadline = time.monotonic() + 10
                while checker.check() < store.seq and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert checker.last_seq == store.seq
        finally:
            stop.set()
            thread.join(15)
        assert not thread.is_alive() and not errors


def test_an_idle_follower_backs_off_and_wakes_on_the_next_record(url: str, tmp_path: Path) -> None:
    with make_store(tmp_path / "s", 10) as store:
        shipper = Shipper(store.path, url, host="h1")
        looks: list[float] = []
        changed = shipper._changed

        def counted() -> bool:
            looks.append(time.monotonic())
            return changed()

        shipper._changed = counted  # type: ignore[method-assign]
        stop = threading.Event()
        thread = threading.Thread(target=lambda: asyncio.run(shipper.run(follow=True, stop=stop)))
        thread.start()
        try:
            checker = ExactlyOnce(url, store.path, "h1")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(FleetError):  # until the shipper has made the stream
                    if last_shipped(url, store.path, "h1") == store.seq:
                        break
                time.sleep(0.05)
            assert checker.check() == store.seq
            time.sleep(0.3)  # long enough to reach the longest sleep
            start = len(looks)
            time.sleep(1.0)
            idle = looks[start:]
            assert len(idle) <= 30, f"{len(idle)} looks at an idle journal in 1 s"  # 2 ms each: ~500
            assert max(b - a for a, b in itertools.pairwise(idle)) < 0.2
            add_records(store, 3)
            written = time.monotonic()
            while checker.check() < store.seq and time.monotonic() < written + 10:
                time.sleep(0.005)
            assert checker.last_seq == store.seq
            woke = [t for t in looks if t > written]
            assert woke and woke[0] - written < 0.1  # the next look came within one longest sleep
        finally:
            stop.set()
            thread.join(15)
        assert not thread.is_alive()


def test_three_hosts_fleet_images_equal_their_own(url: str, tmp_path: Path) -> None:
    stores = [make_store(tmp_path / f"s{i}", 40 + 13 * i, prefix=f"h{i}") for i in range(3)]
    try:
        threads = [
            threading.Thread(target=ship, args=(s.path, url), kwargs={"host": f"host-{i}.lan"})
            for i, s in enumerate(stores)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        fleet = Fleet(url)
        fleet.refresh()
        listing = fleet.images()
        assert [(h, len(imgs)) for h, _s, imgs in listing] == [(f"host-{i}.lan", len(s)) for i, s in enumerate(stores)]
        for (_host, sid, images), store in zip(listing, stores, strict=True):
            assert sid == read_store_id(store.path)
            assert docs(images) == docs(store.images())
        assert [h for h, _s, _i in fleet.images("host-1_lan")] == ["host-1.lan"]
    finally:
        for s in stores:
            s.close()


def test_where_by_digest_name_and_id_and_since(url: str, tmp_path: Path) -> None:
    with make_store(tmp_path / "a", 5, prefix="a") as a, make_store(tmp_path / "b", 2, prefix="b") as b:
        shared = "sha256:" + "ab" * 32
        a.create(names=["shared:1"], layer="L", digest=shared)
        before = time.time_ns()
        b.create(names=["shared:2"], layer="L", digest=shared)
        ship(a.path, url, host="alpha")
        ship(b.path, url, host="beta")
        fleet = Fleet(url)
        fleet.refresh()
        found = fleet.where(shared)
        assert [(w.host, w.matched) for w in found] == [("alpha", "digest"), ("beta", "digest")]
        assert found[1].since_ns >= before > found[0].since_ns
        by_name = fleet.where("shared:2")
        assert [(w.host, w.matched, w.image.id) for w in by_name] == [("beta", "name", b.get("shared:2").id)]
        by_id = fleet.where(a.get("shared:1").id[:16])
        assert [(w.host, w.matched) for w in by_id] == [("alpha", "id")]
        assert fleet.where("nowhere:1") == []


def test_view_resumes_from_its_cache(url: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "view.msgpack"
    with make_store(tmp_path / "s", 30) as store:
        ship(store.path, url, host="h1")
        assert Fleet(url, cache=cache).refresh() == 30
        add_records(store, 4)
        store.delete(store.images()[0].id)
        ship(store.path, url, host="h1")
        again = Fleet(url, cache=cache)
        assert again.refresh() == 5  # only the new messages
        assert docs(again.images()[0][2]) == docs(store.images())


def test_foreign_and_malformed_messages_are_reported_and_skipped(url: str, tmp_path: Path) -> None:
    with make_store(tmp_path / "s", 6) as store:
        ship(store.path, url, host="h1")
        subject = store_subject(store.path, "h1")
        sid = read_store_id(store.path)

        async def publish() -> None:
            client = await connect(url)
            js = client.jetstream()
            await js.publish("journalstore.elsewhere", b"hello")  # a subject of another shape
            await js.publish(subject, b"\xc1 not msgpack", headers={m.STORE: str(sid), m.SEQ: "7"})
            await js.publish(subject, b"{}", headers={"X-Other": "1"})
            await client.close()

        asyncio.run(publish())
        add_records(store, 2)
        assert ship(store.path, url, host="h1").shipped == 2  # resumes after its own last record
        fleet = Fleet(url)
        with pytest.warns(FleetWarning) as caught:
            fleet.refresh()
        assert len(caught) >= 3
        assert docs(fleet.images()[0][2]) == docs(store.images())


def test_pruned_before_shipped_reports_the_gap_and_ships_a_snapshot(url: str, tmp_path: Path) -> None:
    with make_store(tmp_path / "s", 20, keep_segments=1) as store:
        store.compact()
        add_records(store, 10)
        store.compact()
        add_records(store, 5)
        first = store.history_start - 1
        assert first > 0
        gaps: list[tuple[int, int]] = []
        with pytest.raises(ShipGap, match=rf"records 1\.\.{first} of store") as raised:
            ship(store.path, url, host="h1", on_gap=lambda a, b: gaps.append((a, b)))
        assert gaps == [(1, first)] == raised.value.report.gaps
        messages = subject_messages(url, store_subject(store.path, "h1"))
        kinds = [(h[m.KIND], int(h[m.SEQ])) for _s, h, _d in messages]
        assert kinds[:2] == [("gap", first), ("snapshot", first)]
        assert kinds[2:] == [("commit", seq) for seq in range(first + 1, store.seq + 1)]
        payloads = journal_payloads(store.path)
        assert [d for _s, h, d in messages[2:]] == [payloads[s] for s in range(first + 1, store.seq + 1)]
        fleet = Fleet(url)
        fleet.refresh()
        (view,) = fleet.stores.values()
        assert view.gaps == [(1, first)]
        assert docs(view.images()) == docs(store.images())
        assert ship(store.path, url, host="h1").shipped == 0  # reported once, not on every run


def test_a_snapshot_bigger_than_max_payload_goes_in_chunks(url: str, tmp_path: Path) -> None:
    with ImageStore(tmp_path / "s", fsync="never", keep_segments=1) as store:
        with store.batch():  # one record of 5,000 creates
            for i in range(5000):
                store.create(
                    names=[f"quay.io/big/app-{i}:v1", f"quay.io/big/app-{i}:latest"],
                    layer=f"L{i}",
                    digest=f"sha256:{i:064x}",
                    metadata=f"image {i} of a store whose snapshot needs several messages",
                )
        store.compact()
        for i in range(3):
            store.create(names=[f"more-{i}:v1"], layer=f"M{i}")
        store.compact()
        store.create(names=["late:v1"], layer="late")
        store.add_names("quay.io/big/app-7:v1", ["late:v1"])
        first = store.history_start - 1
        assert first == 1  # the record of 5,000 creates was pruned before it was shipped
        with pytest.raises(ShipGap, match="record 1 of store"):
            ship(store.path, url, host="h1")
        messages = subject_messages(url, store_subject(store.path, "h1"))
        kinds = [h[m.KIND] for _s, h, _d in messages]
        chunks = [(h, d) for _s, h, d in messages if h[m.KIND] == m.SNAPSHOT_CHUNK]
        assert len(chunks) >= 2
        assert kinds == ["gap"] + ["snapshot-chunk"] * len(chunks) + ["commit"] * (store.seq - first)
        assert [(h[m.CHUNK], h[m.CHUNKS], h[m.SEQ]) for h, _d in chunks] == [
            (str(i), str(len(chunks)), str(first)) for i in range(1, len(chunks) + 1)
        ]
        assert sum(len(d) for _h, d in chunks) > 1024 * 1024  # more than the server's max_payload
        fleet = Fleet(url, cache=tmp_path / "cache")
        fleet.refresh()
        (view,) = fleet.stores.values()
        assert view.seq == store.seq and view.gaps == [(1, first)] and len(view.images()) >= 5000
        assert docs(view.images()) == docs(store.images())
        again = Fleet(url, cache=tmp_path / "cache")
        again.refresh()  # from the cache
        assert docs(again.stores[view.store].images()) == docs(store.images())
        store.delete("quay.io/big/app-9:v1")
        assert ship(store.path, url, host="h1").shipped == 1  # resumes after the chunks and commits
        assert Fleet(url).refresh() == len(messages) + 1


def test_cli_images_json_is_what_images_json_prints(url: str, tmp_path: Path) -> None:
    with make_store(tmp_path / "s", 12) as store:
        root = store.path
    cli = [sys.executable, "-m", "journalstore"]
    shipped = subprocess.run(
        [*cli, "--root", root, "--json", "ship", "--to", url, "--host", "cli"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shipped.returncode == 0, shipped.stderr
    assert json.loads(shipped.stdout)["last_seq"] == 12
    own = subprocess.run(
        [*cli, "--root", root, "images", "--json"], check=False, capture_output=True, text=True, timeout=60
    )
    fleet = subprocess.run(
        [*cli, "fleet", "--from", url, "--no-cache", "images", "--json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fleet.returncode == 0, fleet.stderr
    assert json.loads(fleet.stdout) == [{"host": "cli", "store": read_store_id(root), "images": json.loads(own.stdout)}]
    log = subprocess.run(
        [*cli, "fleet", "--from", url, "log", "--json", "app-0:v1"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    events = [json.loads(line) for line in log.stdout.splitlines()]
    assert events and all(e["host"] == "cli" for e in events) and events[0]["kind"] == "create"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ship", "--to", "http://127.0.0.1:4222"], "bad server URL"),
        (["ship", "--to", "nats://127.0.0.1"], "bad server URL"),
        (["fleet", "--from", "nats://127.0.0.1:1", "--timeout", "1", "images"], "cannot reach a NATS server"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    with make_store(tmp_path / "s", 1) as store:
        root = store.path
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "journalstore", "--root", root, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("journalstore: error: ") and message in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert time.monotonic() - started < 15


def test_ship_without_the_extra_says_how_to_install(tmp_path: Path) -> None:
    with ImageStore(tmp_path / "s", fsync="never") as store:
        root = store.path
    code = (
        "import sys; sys.modules['nats'] = None\n"
        "from journalstore.cli import main\n"
        f"sys.exit(main(['--root', {root!r}, 'ship', '--to', 'nats://127.0.0.1:4222']))"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "pip install journalstore[fleet]" in result.stderr
