"""Several processes writing and reading one store at once.

Each writer logs every mutation the store acknowledged, with the sequence number of its journal
record (`store.seq` right after the call). Afterwards:
- the acknowledged records are exactly the records of the journal (none lost, none extra);
- replaying the acknowledged operations, in journal order, on the model gives the final state
  (so every acknowledged create, name move and delete is there, in effect, in that order);
- names are unique across images, and every acknowledged create that no acknowledged delete
  removed exists;
- a fresh open equals the live state of every process after refresh();
- a reader running meanwhile never saw a name on two images or its position go back.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing as mp
import os
import random
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

from journalstore import ImageStore
from journalstore.errors import DuplicateName, ImageUnknown

from .model import ImageModel, diff_snapshots, snapshot_of_store

WRITERS = 4
OPS_PER_WRITER = 60
SHARED_NAMES = [f"race/{i}:latest" for i in range(8)]
TIMEOUT = 60


def _hexid(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


class _Abort(Exception):
    pass


def _draw(rng: random.Random, store: ImageStore, worker: int, i: int) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    others = [image.id for image in store.images()]
    kind = rng.choice(["create", "create", "create", "add_names", "set_names", "delete", "set_big_data"])
    if kind != "create" and not others:
        kind = "create"
    if kind == "create":
        kwargs: dict[str, Any] = {"created": worker * 1_000_000 + i}
        if rng.random() < 0.3:
            kwargs["big_data"] = [("manifest", f"m{rng.randint(0, 3)}".encode())]
        return kind, (_hexid(f"w{worker}-{i}"), rng.sample(SHARED_NAMES, rng.randint(0, 2))), kwargs
    if kind in ("add_names", "set_names"):
        return kind, (rng.choice(others), rng.sample(SHARED_NAMES, rng.randint(1, 2))), {}
    if kind == "delete":
        return kind, (rng.choice(others),), {}
    return kind, (rng.choice(others), rng.choice(["manifest", "config"]), f"d{rng.randint(0, 3)}".encode()), {}


def _writer(path: str, worker: int, start: Any, done: Any, results: Any) -> None:
    """One writer process: random operations (worker 3 also in batches, some aborted), logging
    (record seq, place in the record, operation) for every acknowledged one."""
    log: list[tuple[int, int, str, tuple[Any, ...], dict[str, Any]]] = []
    refused: Counter[str] = Counter()
    try:
        rng = random.Random(1000 + worker)
        store = ImageStore(
            path,
            fsync="always" if worker == 0 else "never",
            compact_every=12 if worker == 1 else None,
            lock_timeout=TIMEOUT / 2,
            actor=f"writer-{worker}",
        )
        start.wait(TIMEOUT)
        i = 0
        while i < OPS_PER_WRITER:
            time.sleep(rng.random() * 0.003)  # let the writers interleave finely
            if worker == 3 and rng.random() < 0.25:
                abort = rng.random() < 0.3
                pending: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
                try:
                    with store.batch():
                        for _ in range(3):
                            kind, args, kwargs = _draw(rng, store, worker, i)
                            i += 1
                            try:
                                getattr(store, kind)(*args, **kwargs)
                            except (DuplicateName, ImageUnknown) as exc:
                                refused[type(exc).__name__] += 1
                                continue
                            pending.append((kind, args, kwargs))
                        if abort:
                            raise _Abort
                except _Abort:
                    refused["aborted batch"] += 1
                    continue
                log.extend((store.seq, n, kind, args, kwargs) for n, (kind, args, kwargs) in enumerate(pending))
                continue
            kind, args, kwargs = _draw(rng, store, worker, i)
            i += 1
            try:
                getattr(store, kind)(*args, **kwargs)
            except (DuplicateName, ImageUnknown) as exc:  # lost a race: nothing was written
                refused[type(exc).__name__] += 1
                continue
            log.append((store.seq, 0, kind, args, kwargs))
            if worker == 2 and i % 15 == 14:
                store.compact()
        done.wait(TIMEOUT)  # everyone has finished writing
        store.refresh()
        results.put(("writer", worker, log, dict(refused), snapshot_of_store(store), None))
        store.close()
    except BaseException:
        results.put(("writer", worker, log, dict(refused), None, traceback.format_exc()))


def _reader(path: str, start: Any, stop: Any, results: Any) -> None:
    """A reader following the store while the writers run, checking what it sees."""
    problems: list[str] = []
    polls = 0
    try:
        while not os.path.exists(os.path.join(path, "journal")):
            time.sleep(0.01)
        store = ImageStore(path, read_only=True)
        start.wait(TIMEOUT)
        last_position = store.position
        last_seq = store.seq
        while not stop.is_set():
            store.refresh()
            polls += 1
            images = store.images()
            names = [n for image in images for n in image.names]
            if len(names) != len(set(names)):
                problems.append(f"a name on two images: {sorted(n for n in names if names.count(n) > 1)}")
            if len({image.id for image in images}) != len(images):
                problems.append("an image listed twice")
            if store.position < last_position or store.seq < last_seq:
                problems.append(f"went back: {last_position}/{last_seq} -> {store.position}/{store.seq}")
            last_position, last_seq = store.position, store.seq
            time.sleep(0.002)
        store.close()
        results.put(("reader", polls, problems, None))
    except BaseException:
        results.put(("reader", polls, problems, traceback.format_exc()))


def test_concurrent_writers_lose_no_acknowledged_write(tmp_path: Path) -> None:
    path = tmp_path / "store"
    ImageStore(path, fsync="never").close()
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(WRITERS + 2)
    done = ctx.Barrier(WRITERS)
    stop = ctx.Event()
    results = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(path), w, start, done, results)) for w in range(WRITERS)]
    procs.append(ctx.Process(target=_reader, args=(str(path), start, stop, results)))
    for p in procs:
        p.start()
    start.wait(TIMEOUT)
    writers: dict[int, tuple[Any, ...]] = {}
    reader: tuple[Any, ...] | None = None
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(writers) < WRITERS:
            item = results.get(timeout=max(0.1, deadline - time.monotonic()))
            if item[0] == "writer":
                writers[item[1]] = item
                assert item[5] is None, f"writer {item[1]} failed:\n{item[5]}"
            else:
                reader = item
        stop.set()
        while reader is None:
            reader = results.get(timeout=max(0.1, deadline - time.monotonic()))
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
    finally:
        stop.set()
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
    assert reader[3] is None, f"reader failed:\n{reader[3]}"
    assert reader[2] == [], reader[2]
    assert reader[1] > 0

    acked = sorted((entry for item in writers.values() for entry in item[2]), key=lambda e: (e[0], e[1]))
    seqs = sorted({entry[0] for entry in acked})
    with ImageStore(path, read_only=True) as fresh:
        final = snapshot_of_store(fresh)
        final_seq = fresh.seq
        images = fresh.images()
    # Every acknowledged write has its own record, and every record was acknowledged.
    assert seqs == list(range(1, final_seq + 1)), "acknowledged writes and journal records differ"

    # Replaying them in journal order on the model gives the final state.
    model = ImageModel()
    try:
        model.replay((kind, args, kwargs) for _, _, kind, args, kwargs in acked)
    except Exception as exc:
        raise AssertionError(f"an acknowledged write cannot apply in journal order: {exc!r}") from exc
    expected = model.snapshot()
    assert expected == final, diff_snapshots(expected, final)

    # The plain statements of the same.
    names = [n for image in images for n in image.names]
    assert len(names) == len(set(names))
    created = {args[0] for _, _, kind, args, _ in acked if kind == "create"}
    deleted = {args[0] for _, _, kind, args, _ in acked if kind == "delete"}
    assert created - deleted <= {image.id for image in images}
    assert {image.id for image in images} <= created
    assert len(created) >= WRITERS * 5
    assert any(kind == "add_names" for _, _, kind, _, _ in acked)
    assert len(acked) > len(seqs)  # some records hold a batch

    # Every process, after refresh(), sees what a fresh open sees.
    for worker, item in sorted(writers.items()):
        assert item[4] == final, f"writer {worker} after refresh()"


def test_threads_share_one_instance(tmp_path: Path) -> None:
    """Many threads on one ImageStore: the same guarantees inside one process."""
    import threading

    threads = 4
    path = tmp_path / "store"
    store = ImageStore(path, fsync="never", compact_every=20)
    created_by: list[list[str]] = [[] for _ in range(threads)]
    errors: list[str] = []

    def work(t: int) -> None:
        rng = random.Random(t)
        try:
            for i in range(40):
                image_id = _hexid(f"t{t}-{i}")
                names = rng.sample(SHARED_NAMES, rng.randint(0, 2))
                try:
                    store.create(image_id, names, created=i)
                    created_by[t].append(image_id)
                except DuplicateName:
                    continue
                victim = rng.choice(store.images()).id
                with contextlib.suppress(ImageUnknown):
                    store.add_names(victim, [rng.choice(SHARED_NAMES)])
        except BaseException:
            errors.append(traceback.format_exc())

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(TIMEOUT)
    assert errors == []
    names = [n for image in store.images() for n in image.names]
    assert len(names) == len(set(names))
    created = {image_id for ids in created_by for image_id in ids}
    assert created == {image.id for image in store.images()}
    with ImageStore(path, read_only=True) as fresh:
        assert snapshot_of_store(fresh) == snapshot_of_store(store)
    store.close()
