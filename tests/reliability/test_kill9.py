"""Kill -9: a writer killed at any moment loses no acknowledged mutation (issue 7, suite 1).

A child process (tests/reliability/child_writer.py) runs a random stream of every kind of
mutation (creates with names, flags and big data, name moves, deletes, metadata, flags, big-data
writes and overwrites with manifest digests, mapped layers, batches, aborted batches,
compactions, background compactions, garbage collection, the odd wipe) on a store opened with
fsync on, logging each operation before it runs and its outcome after it returns. The parent
kills it with SIGKILL after a random delay, or lets it kill itself at a named failpoint (every
one in `journalstore.failpoints.NAMES`, armed with a random skip count so it fires mid-stream).

After each kill:
- a read-only open shows exactly the acknowledged mutations (the model replaying the log, each
  outcome, refusals included, reproduced), plus at most the one in flight, and changes no file;
- a read-write open shows the same, and after garbage_collect() (which also makes it repair
  what the dead writer left) too; names are unique, no 64-hex directory without an image is
  left, no temporary file in journal/, nothing in staging, every big-data item has its
  recorded bytes, size and digest;
- a few long-lived stores go on from trial to trial, accumulating history across many kills
  (verify()'d every 25 trials and at the end: checksums, and every snapshot equal to the replay
  of the journal up to it); the other trials each start a fresh store.

Short (make test): two trials per failpoint (36), two at a time, about 10 s. Stress: 1,020 trials, about 5 min.
A failing lane's store and the child logs are copied to $TMPDIR/journalstore-kill9-failures.
A trial on a fresh store is replayed with the seed (and failpoint) its message prints:
JOURNALSTORE_KILL9_SEED=<seed> JOURNALSTORE_KILL9_FAILPOINT=<name> pytest tests/reliability/test_kill9.py
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from journalstore import ImageStore, StoreWarning, failpoints

from ..helpers import history_problems, tree_bytes
from ..model import ImageModel, diff_snapshots, sha256_of, snapshot_of_store
from .conftest import STRESS, scale
from .ops import FIXED_DIGESTS, Op, run

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 60.0
FAILPOINT_TIMEOUT = 8.0  # a failpoint that has not fired by then: the parent kills instead

# How many hits of each failpoint to skip at most: frequent steps get a larger range so the
# kill lands anywhere in the stream, rare ones (compaction) fire at one of their first hits.
MAX_SKIP = {"append": 40, "commit": 40, "bigdata": 12, "delete": 3, "snapshot": 2, "compact": 2, "publish": 2}


def _max_skip(name: str) -> int:
    return MAX_SKIP[name.split("-", 1)[0]]


Job = tuple[int, str | None]  # (seed, failpoint or None for a random kill)


@dataclass
class Lane:
    """One store and the model of what it holds, carried from trial to trial."""

    path: Path
    trials: int
    model: ImageModel = field(default_factory=ImageModel)


@dataclass
class Totals:
    trials: int = 0
    failpoint_kills: int = 0
    random_kills: int = 0
    failpoint_missed: int = 0  # armed, not reached in time: killed by the parent instead
    acknowledged: int = 0
    refused: int = 0
    in_flight: int = 0
    in_flight_applied: int = 0
    lost: int = 0
    records: int = 0
    failpoints_fired: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Killed:
    how: str  # "failpoint" or "random"
    entries: list[dict[str, Any]]
    stderr: str


def _read_log(path: Path) -> list[dict[str, Any]]:
    """The whole lines of a child's log (a torn last line, cut by the kill, is left out)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for line in raw.split(b"\n")[:-1]:
        out.append(json.loads(line))
    return out


def _kill_child(
    workdir: Path, store: Path, seed: int, tag: str, failpoint: str | None, skip: int, compact_every: int | None
) -> Killed:
    rng = random.Random(seed)
    log = workdir / f"{tag}.log"
    errors = workdir / f"{tag}.stderr"
    env = dict(os.environ)
    env.pop("JOURNALSTORE_FAILPOINT", None)
    env.pop("JOURNALSTORE_FAILPOINT_SKIP", None)
    if failpoint is not None:
        env["JOURNALSTORE_FAILPOINT"] = failpoint
        env["JOURNALSTORE_FAILPOINT_SKIP"] = str(skip)
    args = [sys.executable, "-m", "tests.reliability.child_writer", str(store), str(log), str(seed), tag]
    args.append("none" if compact_every is None else str(compact_every))
    with open(errors, "wb") as err:
        child = subprocess.Popen(
            args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while child.poll() is None and not any(e["t"] == "ready" for e in _read_log(log)):
            if time.monotonic() > deadline:
                raise AssertionError(f"child {tag} did not start within {READY_TIMEOUT}s")
            time.sleep(0.005)
        if failpoint is None:
            delay = rng.uniform(0, 0.02) if rng.random() < 0.1 else rng.uniform(0.02, 0.5)
        else:
            delay = FAILPOINT_TIMEOUT
        try:
            child.wait(delay)
            how = "failpoint"
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            child.wait()
            how = "random"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    stderr = errors.read_text(errors="replace")
    if child.returncode != -signal.SIGKILL:
        raise AssertionError(f"child {tag} exited with {child.returncode}, not by SIGKILL:\n{stderr}")
    if how == "failpoint" and failpoint is None:
        raise AssertionError(f"child {tag} died by SIGKILL without a failpoint:\n{stderr}")
    return Killed(how, _read_log(log), stderr)


def _split(entries: list[dict[str, Any]]) -> tuple[list[tuple[Op, Any]], Op | None]:
    """(acknowledged operations with their outcomes, the operation in flight or None)."""
    if any(e["t"] == "error" for e in entries):
        raise AssertionError("the child failed: " + next(e["trace"] for e in entries if e["t"] == "error"))
    ops: dict[int, Op] = {}
    done: dict[int, Any] = {}
    for e in entries:
        if e["t"] == "op":
            ops[e["n"]] = e["op"]
        elif e["t"] == "done":
            done[e["n"]] = e["out"]
    acked = [(ops[n], done[n]) for n in sorted(ops) if n in done]
    pending = [n for n in ops if n not in done]
    assert len(pending) <= 1 and (not pending or pending[0] == max(ops)), f"unfinished operations {pending}"
    return acked, (ops[pending[0]] if pending else None)


def _observe(store: ImageStore, digests: list[str]) -> dict[str, Any]:
    return snapshot_of_store(store, digests)


def _match(label: str, got: dict[str, Any], without: dict[str, Any], with_: dict[str, Any] | None) -> bool:
    """Whether the store shows the in-flight operation (True) or not (False); AssertionError if neither."""
    if got == without:
        return False
    if with_ is not None and got == with_:
        return True
    message = f"{label}: the store holds neither the acknowledged state nor it plus the in-flight operation\n"
    message += "versus acknowledged:\n" + diff_snapshots(without, got)
    if with_ is not None:
        message += "\nversus acknowledged + in flight:\n" + diff_snapshots(with_, got)
    raise AssertionError(message)


def _check_files(store: ImageStore, model: ImageModel) -> None:
    """Names unique; every big-data item has the model's bytes, its size and digest; no
    directory without an image; no temporary file left in journal/, nothing in staging."""
    images = store.images()
    names = [n for image in images for n in image.names]
    assert len(names) == len(set(names)), f"a name on two images: {names}"
    for image in images:
        for key in image.big_data_names:
            data = store.big_data(image.id, key)
            assert data == model.data[(image.id, key)], f"bytes of {image.id}/{key!r}"
            assert len(data) == image.big_data_sizes[key] == store.big_data_size(image.id, key)
            recorded = image.big_data_digests[key]
            if recorded == sha256_of(model.data[(image.id, key)]):  # not a caller-given digest
                assert recorded == sha256_of(data)
    ids = {image.id for image in images}
    leftovers = [p.name for p in Path(store.path).iterdir() if p.is_dir() and len(p.name) == 64 and p.name not in ids]
    assert leftovers == [], f"directories without an image after garbage_collect(): {leftovers}"
    temporaries = [p.name for p in Path(store.path, "journal").iterdir() if ".tmp" in p.name]
    assert temporaries == [], f"temporary files of the killed writer left in journal/: {temporaries}"
    staging = Path(store.path, "journal", "staging")
    assert not staging.exists() or list(staging.iterdir()) == [], f"staging not empty: {list(staging.iterdir())}"


def _check_after_kill(lane: Lane, killed: Killed, label: str) -> tuple[int, int, bool | None]:
    """Everything the issue asks after a kill; moves the lane's model to the state found.
    Returns (acknowledged, refused, in-flight applied or None when nothing was in flight)."""
    acked, in_flight = _split(killed.entries)
    model = lane.model
    refused = 0
    for op, outcome in acked:
        got = run(model, op)
        assert got == outcome, f"{label}: replaying {op} on the model gives {got}, the store said {outcome}"
        refused += outcome != "ok" and not isinstance(outcome, dict)
    with_in_flight: ImageModel | None = None
    if in_flight is not None:
        with_in_flight = model.copy()
        run(with_in_flight, in_flight)
    digests = sorted({*FIXED_DIGESTS, *model.by_digest_lists, *(with_in_flight or model).by_digest_lists})
    without = model.snapshot()
    with_ = None if with_in_flight is None else with_in_flight.snapshot()

    # A reader first: it repairs nothing and changes no file.
    before = tree_bytes(lane.path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        with ImageStore(lane.path, read_only=True) as reader:
            applied = _match(f"{label} read-only open", _observe(reader, digests), without, with_)
    assert tree_bytes(lane.path) == before, f"{label}: a read-only open changed files"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        with ImageStore(lane.path, fsync="never") as store:
            again = _match(f"{label} read-write open", _observe(store, digests), without, with_)
            assert again == applied, f"{label}: read-only and read-write opens disagree on the in-flight operation"
            store.garbage_collect()  # takes the writers' lock: repairs what the dead writer left
            again = _match(f"{label} after repair", _observe(store, digests), without, with_)
            assert again == applied, f"{label}: the repair changed whether the in-flight operation happened"
            if applied:
                assert with_in_flight is not None
                lane.model = with_in_flight
            _check_files(store, lane.model)
    return len(acked), refused, (None if in_flight is None else applied)


def _run_lane(lane: Lane, plan: list[Job], workdir: Path, totals: Totals, keep: bool) -> None:
    try:
        _run_trials(lane, plan, workdir, totals, keep)
    except BaseException as exc:
        # pytest keeps only its last few temporary directories: save the evidence elsewhere.
        saved = Path(tempfile.gettempdir(), "journalstore-kill9-failures", f"{lane.path.name}-{time.time_ns()}")
        shutil.copytree(lane.path, saved / "store", dirs_exist_ok=True)
        shutil.copytree(workdir, saved / "logs", dirs_exist_ok=True)
        raise AssertionError(f"{exc}\n(store and child logs saved in {saved})") from exc


def _verify(lane: Lane) -> int:
    """The whole journal checks out (checksums, seqs, every snapshot equals its replay)."""
    with ImageStore(lane.path, read_only=True) as store:
        report = store.verify()
        assert report.ok, f"{lane.path.name}: verify() found {report.problems}"
        # history complete (each image's linked history equals a full replay), blobs matching
        problems = history_problems(store)
        assert not problems, f"{lane.path.name}: {problems}"
        seqs = [e.seq for e in store.history()]
        assert seqs == sorted(seqs) and (not seqs or set(seqs) == set(range(seqs[0], seqs[-1] + 1)))
        return store.seq


def _run_trials(lane: Lane, plan: list[Job], workdir: Path, totals: Totals, keep: bool) -> None:
    for trial, (seed, failpoint) in enumerate(plan):
        rng = random.Random(seed)
        skip = rng.randint(0, _max_skip(failpoint)) if failpoint else 0
        compact_every = rng.choice([None, None, 15, 40])
        tag = f"{lane.path.name}-t{trial}"
        label = f"{tag} (seed {seed}, failpoint {failpoint or '-'}, skip {skip}, compact_every {compact_every})"
        killed = _kill_child(workdir, lane.path, seed, tag, failpoint, skip, compact_every)
        try:
            acked, refused, applied = _check_after_kill(lane, killed, label)
        except BaseException:
            with totals.lock:
                totals.lost += 1
            raise
        with totals.lock:
            totals.trials += 1
            totals.acknowledged += acked
            totals.refused += refused
            if killed.how == "failpoint":
                totals.failpoint_kills += 1
                assert failpoint is not None
                totals.failpoints_fired[failpoint] += 1
            else:
                totals.random_kills += 1
                totals.failpoint_missed += failpoint is not None
            if applied is not None:
                totals.in_flight += 1
                totals.in_flight_applied += applied
        if trial % 25 == 24:
            _verify(lane)
    records = _verify(lane)
    with totals.lock:
        totals.records += records
    if not keep:
        shutil.rmtree(lane.path, ignore_errors=True)


def _plan(base_seed: int, trials: int, long_lived: int, per_long: int) -> list[list[Job]]:
    """Assign seeds and failpoints: half the trials die at a failpoint (each name in turn), half by
    a random kill. `long_lived` lanes of `per_long` trials; the rest one trial on a fresh store."""
    names = failpoints.NAMES
    rng = random.Random(base_seed)
    kinds: list[str | None] = [names[(i // 2) % len(names)] if i % 2 == 0 else None for i in range(trials)]
    rng.shuffle(kinds)
    seeds = [rng.getrandbits(40) for _ in range(trials)]
    jobs = list(zip(seeds, kinds, strict=True))
    lanes = [jobs[i * per_long : (i + 1) * per_long] for i in range(long_lived)]
    lanes.extend([job] for job in jobs[long_lived * per_long :])
    return lanes


def test_kill9_loses_no_acknowledged_mutation(tmp_path: Path, summary: Callable[..., None]) -> None:
    fixed_seed = os.environ.get("JOURNALSTORE_KILL9_SEED")
    if fixed_seed:  # replay one trial
        trials, long_lived, per_long = 1, 0, 0
        plan = [[(int(fixed_seed), os.environ.get("JOURNALSTORE_KILL9_FAILPOINT") or None)]]
    else:
        trials = scale(2 * len(failpoints.NAMES), 1020)  # each failpoint fires at least once
        long_lived = scale(3, 4)
        per_long = scale(8, 180)
        plan = _plan(scale(7, int(time.time())), trials, long_lived, per_long)
    workdir = tmp_path / "logs"
    workdir.mkdir()
    lanes: list[tuple[Lane, list[Job]]] = []
    for index, jobs in enumerate(plan):
        name = f"long{index}" if index < long_lived else f"fresh{index}"
        lanes.append((Lane(tmp_path / name, len(jobs)), jobs))
    totals = Totals()
    started = time.monotonic()
    # Two lanes at a time: a child spends most of its life in fsync, so two overlap well.
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(_run_lane, lane, jobs, workdir, totals, lane.trials > 1) for lane, jobs in lanes]
        errors = []
        for future in futures:
            try:
                future.result()
            except BaseException as exc:
                errors.append(exc)
                for other in futures:
                    other.cancel()
    elapsed = time.monotonic() - started
    fired = len(totals.failpoints_fired)
    summary(
        "kill-9",
        trials=totals.trials,
        failpoint_kills=totals.failpoint_kills,
        failpoints_fired=f"{fired}/{len(failpoints.NAMES)}",
        random_kills=totals.random_kills,
        long_lived_stores=long_lived,
        acknowledged=totals.acknowledged,
        refused=totals.refused,
        in_flight_applied=f"{totals.in_flight_applied}/{totals.in_flight}",
        records=totals.records,
        lost=totals.lost,
        seconds=round(elapsed, 1),
    )
    if errors:
        raise errors[0]
    assert totals.lost == 0
    assert totals.trials == trials
    if not fixed_seed:
        assert totals.trials >= scale(30, 1000)
        # Every failpoint killed a writer at least once (in the short run too).
        missing = set(failpoints.NAMES) - set(totals.failpoints_fired)
        assert not missing, f"failpoints never reached: {missing}"
    if STRESS:
        assert totals.acknowledged > 10 * totals.trials
