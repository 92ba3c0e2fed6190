"""Concurrency: many writer and reader processes, and many threads, on one store (issue 7, suite 4).

Processes: 4 (stress: 6) writer processes race for the same ten names (add/set-names stealing,
creates refused with DuplicateName, deletes refused with ImageUnknown), create and delete, write
and overwrite big data, run batches (some aborted) and garbage collection, with automatic
compaction every 50 events (it runs in a background thread of whichever writer crosses the
line). 2 (stress: 3) reader processes poll `refresh()` meanwhile. Each writer logs every
operation with its outcome and `store.seq` right after it (read under the instance's mutex, so a
background compaction catching up cannot move it in between). Afterwards:
- the journal's records (`history()`) are numbered 1..N and each was written by exactly one
  acknowledged operation, whose events it holds exactly; every refused or empty operation saw a
  state under which the model refuses it too (or journals nothing);
- replaying every logged operation in journal order on the model reproduces every outcome and
  gives the final state: every acknowledged write is there or was legitimately superseded by a
  later record;
- names are unique; a fresh open equals every writer's live state after `refresh()`;
- readers only ever saw positions and sequence numbers move forward, never a name on two
  images, and every big-data item they read had the size (and sha256) its record gives;
- at least one automatic compaction happened.
Stress mode runs several rounds on the same store, each with new processes.

Threads: 10 threads on one `ImageStore` (6 writers with batches, 2 readers, one compacting and
collecting garbage, one reading history and the past with `at()`), compact_every small. The
writers log into one list under the instance's mutex, which is the order the operations took
effect; the same checks follow.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from journalstore import BigDataUnknown, ImageStore, ImageUnknown

from ..model import ImageModel, diff_snapshots, sha256_of, snapshot_of_store
from .conftest import scale
from .ops import FIXED_DIGESTS, Drawer, Op, expected_events, is_noop, plain, run

TIMEOUT = 600
COMPACT_EVERY = 50
# Writers race: more name moves and creates with names, no explicit compaction (the automatic
# one must happen by itself).
WRITER_WEIGHTS: Mapping[str, float] = {"add_names": 12, "set_names": 6, "compact": 0, "wipe": 0.1}

Entry = tuple[Op, Any, int]  # (operation, outcome, store.seq right after it)


# ----------------------------------------------------------------------------- checking


def _records(store: ImageStore) -> dict[int, tuple[str, list[dict[str, Any]]]]:
    """seq -> (actor, events in plain form) for every record of the journal."""
    out: dict[int, tuple[str, list[dict[str, Any]]]] = {}
    for event in store.history():
        actor, events = out.setdefault(event.seq, (event.actor.name, []))
        assert actor == event.actor.name
        events.append(plain(event.data))
    return out


def _order(logs: Mapping[str, list[Entry]], records: Mapping[int, tuple[str, Any]]) -> list[tuple[bool, Entry]]:
    """Every logged operation in the order it took effect, each with whether it wrote the record
    its seq names. A writer's first operation that reports record s, s being its own record, wrote
    it; any other operation reporting s ran on the state right after record s (the writers' lock
    was held from catching up to s until the call returned) and so comes after that record."""
    keyed = []
    for actor, entries in logs.items():
        claimed: set[int] = set()
        for index, entry in enumerate(entries):
            op, _, seq = entry
            maker = not is_noop(op) and seq not in claimed and seq in records and records[seq][0] == actor
            if maker:
                claimed.add(seq)
            keyed.append(((seq, not maker, actor, index), maker, entry))
    keyed.sort(key=lambda item: item[0])
    return [(maker, entry) for _, maker, entry in keyed]


def _replay_and_compare(
    ordered: list[tuple[bool, Entry]], records: Mapping[int, tuple[str, Any]], final_seq: int
) -> tuple[ImageModel, int]:
    """Replay the operations on the model, checking outcomes and events; returns (model, makers)."""
    assert sorted(records) == list(range(1, final_seq + 1)), "the journal's records are not numbered 1..N"
    model = ImageModel()
    makers = 0
    made: set[int] = set()
    for position, (maker, (op, outcome, seq)) in enumerate(ordered):
        where = f"operation {position} ({op['m']}, reported record {seq})"
        expected = expected_events(model, op)
        got = run(model, op)
        assert got == outcome, f"{where}: the model gives {got}, the store said {outcome}"
        if maker:
            assert seq not in made
            made.add(seq)
            makers += 1
            actual = records[seq][1]
            assert actual == plain(expected), f"{where}: record {seq} holds {actual}, expected {plain(expected)}"
        else:
            assert expected == [], f"{where}: changed the state but no record of its writer is at {seq}: {expected}"
    missing = set(records) - made
    assert not missing, f"records no acknowledged operation wrote: {sorted(missing)[:10]}"
    return model, makers


def _extra_digests(model: ImageModel) -> list[str]:
    return sorted({*FIXED_DIGESTS, *model.by_digest_lists})


def _check_big_data_read(store: ImageStore, rng: random.Random, problems: list[str]) -> bool:
    """Read one big-data item; its bytes must match the record it was read under."""
    images = [image for image in store.images() if image.big_data_names]
    if not images:
        return False
    image = rng.choice(images)
    key = rng.choice(image.big_data_names)
    try:
        image = store.get(image.id)
        seq = store.seq
        data = store.big_data(image.id, key)
    except (ImageUnknown, BigDataUnknown):
        return False  # deleted or replaced meanwhile
    if store.seq != seq or key not in image.big_data_sizes:
        return False  # the journal moved during the read: nothing to compare with
    if len(data) != image.big_data_sizes[key]:
        problems.append(f"{image.id}/{key!r}: read {len(data)} bytes, the record says {image.big_data_sizes[key]}")
    digest = image.big_data_digests.get(key, "")
    if digest == sha256_of(data):
        return True
    if key.startswith("manifest") or digest in FIXED_DIGESTS:
        return True  # a caller-given digest: only the size can be checked
    problems.append(f"{image.id}/{key!r}: bytes do not match the recorded digest {digest}")
    return True


# ----------------------------------------------------------------------------- processes


def _writer(path: str, worker: int, tag: str, seed: int, ops: int, start: Any, done: Any, results: Any) -> None:
    log: list[Entry] = []
    try:
        rng = random.Random(seed)
        store = ImageStore(
            path,
            fsync="always" if worker == 0 else "never",
            compact_every=COMPACT_EVERY,
            lock_timeout=TIMEOUT / 2,
            actor=f"writer-{worker}",
        )
        drawer = Drawer(rng, f"{tag}-w{worker}", WRITER_WEIGHTS)
        start.wait(TIMEOUT)
        for _ in range(ops):
            time.sleep(rng.random() * 0.002)  # let the writers interleave finely
            op = drawer.draw(store.images())
            with store._mutex:  # no background compaction may catch up between the call and seq
                outcome = run(store, op)
                seq = store.seq
            log.append((op, outcome, seq))
        done.wait(TIMEOUT)  # every writer has finished
        store.refresh()
        results.put(("writer", worker, log, snapshot_of_store(store, FIXED_DIGESTS), None))
        store.close()
    except BaseException:
        results.put(("writer", worker, log, None, traceback.format_exc()))


def _reader(path: str, reader: int, start: Any, stop: Any, results: Any) -> None:
    problems: list[str] = []
    polls = reads = regressions = 0
    try:
        rng = random.Random(reader)
        store = ImageStore(path, read_only=True)
        start.wait(TIMEOUT)
        last = (store.position, store.seq)
        while not stop.is_set():
            store.refresh()
            polls += 1
            now = (store.position, store.seq)
            if now[0] < last[0] or now[1] < last[1]:
                regressions += 1
                problems.append(f"went back: {last} -> {now}")
            last = now
            images = store.images()
            names = [n for image in images for n in image.names]
            if len(names) != len(set(names)):
                problems.append(f"a name on two images: {sorted(n for n, c in Counter(names).items() if c > 1)}")
            if len({image.id for image in images}) != len(images):
                problems.append("an image listed twice")
            reads += _check_big_data_read(store, rng, problems)
            now = (store.position, store.seq)
            if now[0] < last[0] or now[1] < last[1]:
                regressions += 1
                problems.append(f"went back: {last} -> {now}")
            last = now
            time.sleep(0.001)
        store.close()
        results.put(("reader", reader, polls, reads, regressions, problems[:20], None))
    except BaseException:
        results.put(("reader", reader, polls, reads, regressions, problems[:20], traceback.format_exc()))


def _round(path: Path, tag: str, seed: int, writers: int, readers: int, ops: int) -> dict[str, Any]:
    """One round of writer and reader processes; returns what they reported."""
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(writers + readers + 1)
    done = ctx.Barrier(writers)
    stop = ctx.Event()
    results = ctx.Queue()
    rng = random.Random(seed)
    procs = [
        ctx.Process(target=_writer, args=(str(path), w, tag, rng.getrandbits(32), ops, start, done, results))
        for w in range(writers)
    ]
    procs += [ctx.Process(target=_reader, args=(str(path), r, start, stop, results)) for r in range(readers)]
    for p in procs:
        p.start()
    writer_items: dict[int, tuple[Any, ...]] = {}
    reader_items: dict[int, tuple[Any, ...]] = {}
    deadline = time.monotonic() + TIMEOUT
    try:
        start.wait(TIMEOUT)
        while len(writer_items) < writers:
            item = results.get(timeout=max(0.1, deadline - time.monotonic()))
            if item[0] == "writer":
                assert item[4] is None, f"writer {item[1]} failed:\n{item[4]}"
                writer_items[item[1]] = item
            else:
                reader_items[item[1]] = item
        stop.set()
        while len(reader_items) < readers:
            item = results.get(timeout=max(0.1, deadline - time.monotonic()))
            reader_items[item[1]] = item
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
    finally:
        stop.set()
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
    for item in reader_items.values():
        assert item[6] is None, f"reader {item[1]} failed:\n{item[6]}"
        assert item[5] == [], f"reader {item[1]} saw: {item[5]}"
        assert item[2] > 0
    return {"writers": writer_items, "readers": reader_items}


def test_writer_and_reader_processes(tmp_path: Path, summary: Callable[..., None]) -> None:
    writers, readers = scale(4, 6), scale(2, 3)
    ops = scale(80, 600)
    rounds = scale(1, 6)
    path = tmp_path / "store"
    ImageStore(path, fsync="never").close()
    logs: dict[str, list[Entry]] = {}
    polls = reads = regressions = 0
    started = time.monotonic()
    for round_number in range(rounds):
        got = _round(path, f"r{round_number}", 1000 + round_number, writers, readers, ops)
        for worker, item in got["writers"].items():
            logs.setdefault(f"writer-{worker}", []).extend(item[2])
        for item in got["readers"].values():
            polls += item[2]
            reads += item[3]
            regressions += item[4]
        with ImageStore(path, read_only=True) as fresh:
            records = _records(fresh)
            ordered = _order(logs, records)
            model, makers = _replay_and_compare(ordered, records, fresh.seq)
            final = snapshot_of_store(fresh, _extra_digests(model))
            expected = model.snapshot()
            assert expected == final, diff_snapshots(expected, final)
            names = [n for image in fresh.images() for n in image.names]
            assert len(names) == len(set(names))
            for worker, item in sorted(got["writers"].items()):
                assert item[3] == snapshot_of_store(fresh, FIXED_DIGESTS), f"writer {worker} after refresh()"
            report = fresh.verify()
            assert report.ok, report.problems
            segments = report.segments
    entries = [entry for log in logs.values() for entry in log]
    outcomes = Counter("refused" if isinstance(o, str) and o != "ok" else "ok" for _, o, _ in entries)
    batches = sum(1 for op, _, _ in entries if op["m"] == "batch")
    summary(
        "concurrency",
        writers=writers,
        readers=readers,
        rounds=rounds,
        operations=len(entries),
        acknowledged=outcomes["ok"],
        refused=outcomes["refused"],
        batches=batches,
        records=makers,
        compactions=segments - 1,
        reader_polls=polls,
        big_data_reads=reads,
        regressions=regressions,
        lost=0,
        seconds=round(time.monotonic() - started, 1),
    )
    assert regressions == 0
    assert segments >= 2, "no automatic compaction happened"
    assert outcomes["refused"] > 0 and any(op["m"] == "add_names" for op, o, _ in entries if o == "ok")


# ----------------------------------------------------------------------------- threads


def test_threads_on_one_instance(tmp_path: Path, summary: Callable[..., None]) -> None:
    writer_threads = 6
    ops = scale(60, 1500)
    store = ImageStore(tmp_path / "store", fsync="never", compact_every=25)
    mutex = store._mutex  # held around each call and its log entry: the log is then in effect order
    log: list[tuple[str, Entry]] = []
    errors: list[str] = []
    problems: list[str] = []
    stop = threading.Event()
    counts: Counter[str] = Counter()

    def writer(t: int) -> None:
        try:
            drawer = Drawer(random.Random(t), f"thread{t}", {"compact": 2 if t == 0 else 0})
            for _ in range(ops):
                op = drawer.draw(store.images())
                if is_noop(op):  # compact() waits for a background compaction, which needs the mutex
                    outcome = run(store, op)
                    with mutex:
                        log.append((f"t{t}", (op, outcome, store.seq)))
                    continue
                with mutex:
                    outcome = run(store, op)
                    log.append((f"t{t}", (op, outcome, store.seq)))
        except BaseException:
            errors.append(traceback.format_exc())

    def reader(r: int) -> None:
        rng = random.Random(100 + r)
        last = (store.position, store.seq)
        try:
            while not stop.is_set():
                now = (store.position, store.seq)
                if now[0] < last[0] or now[1] < last[1]:
                    problems.append(f"went back: {last} -> {now}")
                last = now
                images = store.images()
                names = [n for image in images for n in image.names]
                if len(names) != len(set(names)):
                    problems.append("a name on two images")
                for image in images[:5]:
                    for name in image.names:
                        with contextlib.suppress(ImageUnknown):
                            store.get(name)
                counts["big data reads"] += _check_big_data_read(store, rng, problems)
                counts["reader polls"] += 1
        except BaseException:
            errors.append(traceback.format_exc())

    def compactor() -> None:
        try:
            while not stop.is_set():
                counts["compactions"] += store.compact()
                store.garbage_collect()
                time.sleep(0.01)
        except BaseException:
            errors.append(traceback.format_exc())

    def historian() -> None:
        try:
            while not stop.is_set():
                seq = store.seq
                if seq:
                    view = store.at(seq)
                    assert len(view.images()) >= 0
                    assert sum(1 for _ in store.history(since=max(1, seq - 20))) >= 1
                    counts["past views"] += 1
                time.sleep(0.01)
        except BaseException:
            errors.append(traceback.format_exc())

    started = time.monotonic()
    workers = [threading.Thread(target=writer, args=(t,)) for t in range(writer_threads)]
    others = [threading.Thread(target=reader, args=(r,)) for r in range(2)]
    others += [threading.Thread(target=compactor), threading.Thread(target=historian)]
    for thread in workers + others:
        thread.start()
    for thread in workers:
        thread.join(TIMEOUT)
    stop.set()
    for thread in others:
        thread.join(TIMEOUT)
    assert errors == [], errors[0]
    assert problems == [], problems[:10]

    # The log is in effect order: an operation that wrote a record is the first to report it.
    with ImageStore(store.path, read_only=True) as fresh:
        records = _records(fresh)
        model = ImageModel()
        seen: set[int] = set()
        for position, (_, (op, outcome, seq)) in enumerate(log):
            expected = expected_events(model, op)
            assert run(model, op) == outcome, f"operation {position}: outcome differs"
            if expected:
                assert seq not in seen and records[seq][1] == plain(expected), f"operation {position}: record {seq}"
                seen.add(seq)
        assert seen == set(records) == set(range(1, fresh.seq + 1))
        final = snapshot_of_store(fresh, _extra_digests(model))
        assert model.snapshot() == final, diff_snapshots(model.snapshot(), final)
        assert snapshot_of_store(store, _extra_digests(model)) == final
        names = [n for image in fresh.images() for n in image.names]
        assert len(names) == len(set(names))
    store.close()
    summary(
        "concurrency-threads",
        threads=writer_threads + len(others),
        operations=len(log),
        records=len(seen),
        reader_polls=counts["reader polls"],
        big_data_reads=counts["big data reads"],
        compactions=counts["compactions"],
        past_views=counts["past views"],
        regressions=0,
        seconds=round(time.monotonic() - started, 1),
    )
