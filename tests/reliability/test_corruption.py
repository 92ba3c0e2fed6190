"""Corruption: copies of a store with one injected fault each, opened read-only and read-write.

Fault classes (issue 7): truncation at every offset of the last record, a flipped bit in the
last record, a flipped bit in a middle record, garbage appended, a zeroed 4 KB block, a missing
newest segment, a damaged or older images.json. Each trial is classified:

* detected: `JournalCorrupt` whose segment and offset point at the damaged record, a documented
  exception (a `SnapshotMismatch` for images.json), or a `StoreWarning` from the recovery;
* recovered: it opens (read-only, then read-write and written to, then again) with exactly the
  expected state: every record for damage outside the records, every record but the damaged
  last one for a torn or damaged last record;
* silently lost: it opens with a record missing that the fault did not excuse, raises another
  exception type, or hangs (a per-trial alarm).

A read-only open of any damaged copy must modify no file (contents, sizes, inodes, mtimes), and
a read-write open that reports `JournalCorrupt` must not have cut anything either.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import stat
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import xxhash

from journalstore import ImageStore, JournalCorrupt, StoreWarning
from journalstore import journal as jn
from journalstore import snapshot as snap
from journalstore.audit import Journal
from journalstore.blobs import blob_digest
from journalstore.errors import BigDataNotKept, SnapshotMismatch, StoreError
from journalstore.fsio import DEFAULT_DISK
from journalstore.layout import Layout
from journalstore.record import Image

from ..helpers import history_problems
from ..model import snapshot_of_store
from .conftest import STRESS, scale

TRIAL_TIMEOUT = 20.0  # seconds; a trial that takes longer is a hang
PROBE = "d" * 64
T0 = 1_700_000_000_000_000_000


class Hang(Exception):
    """A trial ran past its alarm."""


@contextlib.contextmanager
def alarm(seconds: float) -> Iterator[None]:
    def ring(_signum: int, _frame: Any) -> None:
        raise Hang(f"no answer after {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def tree_stat(root: Path) -> dict[str, tuple[int, ...]]:
    """Every entry under root (and root): type, mode, size, inode, links, mtime, ctime and a
    hash of the bytes. Equal values: nothing was changed (atime left out: reads may change it)."""
    out: dict[str, tuple[int, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in ["", *dirnames, *filenames]:
            path = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(path)
            digest = 0
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    digest = xxhash.xxh3_64_intdigest(f.read())
            out[path] = (st.st_mode, st.st_size, st.st_ino, st.st_nlink, st.st_mtime_ns, st.st_ctime_ns, digest)
    return out


def copy_tree(src: Path, dst: Path) -> None:
    """A copy that keeps hard links (images.json is a link to its archive in journal/)."""
    first: dict[tuple[int, int], Path] = {}
    dst.mkdir(mode=0o700)
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        for name in sorted(dirnames):
            (dst / rel / name).mkdir(mode=0o700)
        for name in sorted(filenames):
            source = Path(dirpath) / name
            st = os.lstat(source)
            target = dst / rel / name
            key = (st.st_dev, st.st_ino)
            if key in first:
                os.link(first[key], target)
            else:
                shutil.copyfile(source, target)
                os.chmod(target, stat.S_IMODE(st.st_mode))
                first[key] = target


# ---------------------------------------------------------------------- the stores


def segment_records(path: Path, number: int) -> tuple[int, list[jn.Record]]:
    data = path.read_bytes()
    _, start = jn.decode_segment_header(data, number)
    records, stop, damage = jn.scan(data[start:], start, number)
    assert damage is None and stop == len(data)
    return start, records


@dataclass
class Base:
    """A pristine store and what is known about it."""

    root: Path
    segment: int  # the newest segment's number
    start: int  # offset of its first frame
    records: list[jn.Record]  # its records (prepare records included)
    full: dict[str, Any]  # the state of the whole store
    without_last: dict[str, Any]  # the state without its last record

    @property
    def seg_path(self) -> Path:
        return self.root / "journal" / jn.segment_name(self.segment)


def build(root: Path, last_metadata: int | None) -> None:
    """Three segments: two compactions, then records of every kind, big data, a 10 KB record in
    the middle; the last record is a set_metadata of `last_metadata` bytes (None: add_names)."""
    with ImageStore(root, fsync="never", compact_every=None) as s:
        ids = [f"{n:02d}" * 32 for n in range(10, 16)]
        for n, image_id in enumerate(ids):
            if n == 3:
                s.compact()  # an older snapshot, to put back in place of images.json
            items = [("manifest", f"manifest {n}".encode()), ("config", os.urandom(3000))] if n % 2 else []
            s.create(
                image_id, [f"quay.io/img/{n}:latest"], f"layer{n}", created=T0 + n, metadata=f"m{n}", big_data=items
            )
        s.compact()
        for n in range(20):
            image_id = ids[n % len(ids)]
            kind = n % 5
            if kind == 0:
                s.add_names(image_id, [f"extra/{n}:v{n}"])
            elif kind == 1:
                s.set_flag(image_id, f"flag{n}", {"n": n, "list": [1, "two"]})
            elif kind == 2:
                s.set_metadata(image_id, f"metadata {n} " * (n + 1))
            elif kind == 3:
                s.set_big_data(image_id, f"item-{n}", os.urandom(500 + n))
            else:
                s.add_mapped_top_layer(image_id, f"mapped{n}")
            if n == 9:
                s.set_metadata(ids[0], "big " * 2500)  # a 10 KB record in the middle
        s.delete(ids[5])
        s.create("c" * 64, ["created/after:compaction"], created=T0 + 99)
        if last_metadata is None:
            s.add_names(ids[1], ["last:1"])
        else:
            s.set_metadata(ids[1], "z" * last_metadata)


def make_base(root: Path, last_metadata: int | None) -> Base:
    build(root, last_metadata)
    segment = max(n for n in (jn.parse_segment_name(p.name) for p in (root / "journal").iterdir()) if n)
    seg_path = root / "journal" / jn.segment_name(segment)
    start, records = segment_records(seg_path, segment)
    with ImageStore(root, read_only=True) as r:
        full = snapshot_of_store(r)
    cut = root.parent / f"{root.name}-without-last"
    copy_tree(root, cut)
    with open(cut / "journal" / jn.segment_name(segment), "r+b") as f:
        f.truncate(records[-1].offset)
    with ImageStore(cut, read_only=True) as r:
        without_last = snapshot_of_store(r)
    shutil.rmtree(cut)
    assert full != without_last
    return Base(root, segment, start, records, full, without_last)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    """The last record is small (an add_names): truncation at every offset is affordable."""
    return make_base(tmp_path_factory.mktemp("corruption") / "store", None)


@pytest.fixture(scope="module")
def base_big_last(tmp_path_factory: pytest.TempPathFactory) -> Base:
    """The last record is 9 KB: the last 4 KB blocks of the segment lie inside it."""
    return make_base(tmp_path_factory.mktemp("corruption-big") / "store", 9000)


# ---------------------------------------------------------------------- observing a copy


@dataclass
class Opened:
    """What one open did: a state, or an exception; and the warnings it gave."""

    state: dict[str, Any] | None = None
    error: BaseException | None = None
    warnings: list[str] = field(default_factory=list)
    after_write: dict[str, Any] | None = None  # read-write: the state after a write and a reopen
    files_changed: bool = False


def _with_probe(state: dict[str, Any], probe_state: dict[str, Any]) -> bool:
    """Whether `probe_state` is `state` plus the probe image (and only that)."""
    images = [img for img in probe_state["images"] if dict(img)["id"] != PROBE]
    return images == state["images"] and len(images) == len(probe_state["images"]) - 1


def open_read_only(path: Path) -> Opened:
    """Open read-only: the state, and every big-data item read (no other exception allowed)."""
    return open_checked(path, True, _no_check, Findings())


def open_read_write(path: Path) -> Opened:
    """Open read-write: the state, then a write and a read-only reopen (the state after it)."""
    return open_checked(path, False, _no_check, Findings())


def _no_check(_store: ImageStore, _what: str, _found: Findings) -> None:
    return None


# ---------------------------------------------------------------------- expectations


@dataclass(frozen=True)
class Expect:
    """What a fault may lead to. `states`: the states an open may show (with or without a
    warning); `corrupt`: the (segment, offset) a JournalCorrupt may name; `errors`: other
    exception types that are documented detection for this fault; `lookalike`: the fault is
    exactly what a torn append leaves, so losing the records from `lookalike_state` is allowed."""

    states: tuple[dict[str, Any], ...] = ()
    corrupt: frozenset[tuple[int, int]] = frozenset()
    errors: tuple[type[BaseException], ...] = ()
    lookalike: dict[str, Any] | None = None
    merge_ok: bool = False  # a read-write open may merge it as another program's rewrite (warned)


@dataclass
class Outcome:
    detected: bool = False
    recovered: bool = False
    lost: list[str] = field(default_factory=list)  # silent losses, other exceptions, hangs
    ro_modified: bool = False
    lookalike: bool = False


def judge(ro: Opened, rw: Opened, expect: Expect) -> Outcome:
    out = Outcome(ro_modified=ro.files_changed)
    recovered = []
    for what, opened in (("read-only", ro), ("read-write", rw)):
        error = opened.error
        if error is not None:
            if isinstance(error, JournalCorrupt) and (error.segment, error.offset) in expect.corrupt:
                out.detected = True
                if opened is rw and rw.files_changed:
                    out.lost.append("a read-write open that reported JournalCorrupt changed files")
            elif isinstance(error, expect.errors) and not isinstance(error, JournalCorrupt):
                out.detected = True
            else:
                out.lost.append(f"{what}: {error.__class__.__name__}: {error}")
            recovered.append(False)
            continue
        state = opened.state
        assert state is not None
        if opened.warnings:
            out.detected = True
        if state in expect.states:
            good = opened.after_write is None or _with_probe(state, opened.after_write)
            if not good:
                out.lost.append(f"{what}: after a write and reopen, not the state plus the write")
            recovered.append(good)
        elif expect.lookalike is not None and state == expect.lookalike:
            out.lookalike = True
            recovered.append(False)
        elif opened.warnings and expect.merge_ok:
            recovered.append(False)  # merged as another program's rewrite, and said so
        else:
            said = f"warning {opened.warnings[0]!r}" if opened.warnings else "no warning"
            out.lost.append(
                f"{what}: opened with {len(state['images'])} images and {said}, not an expected state "
                f"(expected {[len(s['images']) for s in expect.states] or 'JournalCorrupt'})"
            )
            recovered.append(False)
    out.recovered = all(recovered)
    return out


@dataclass
class ClassTally:
    injected: int = 0
    detected: int = 0
    recovered: int = 0
    silently_lost: int = 0
    ro_modified: int = 0
    lookalikes: int = 0
    details: list[str] = field(default_factory=list)

    def add(self, label: str, outcome: Outcome) -> None:
        self.injected += 1
        self.detected += outcome.detected
        self.recovered += outcome.recovered
        self.lookalikes += outcome.lookalike
        if outcome.lost:
            self.silently_lost += 1
            self.details.append(f"{label}: " + "; ".join(outcome.lost))
        if outcome.ro_modified:
            self.ro_modified += 1
            self.details.append(f"{label}: a read-only open modified files")
        if not (outcome.detected or outcome.recovered or outcome.lookalike or outcome.lost):
            self.silently_lost += 1
            self.details.append(f"{label}: neither detected nor recovered")

    def report(self, summary: Callable[..., None], name: str, **extra: Any) -> None:
        figures: dict[str, Any] = {
            "injected": self.injected,
            "detected": self.detected,
            "recovered": self.recovered,
            "silently_lost": self.silently_lost,
        }
        if self.lookalikes:
            figures["torn_append_lookalikes"] = self.lookalikes
        figures["ro_modified"] = self.ro_modified
        figures.update(extra)
        summary(f"corruption:{name}", **figures)
        assert self.injected > 0
        assert not self.details, f"{len(self.details)} bad outcomes; the first ones:\n" + "\n".join(self.details[:8])


class Trials:
    """Makes damaged copies of a base store and judges how each opens."""

    def __init__(self, base: Base, scratch: Path) -> None:
        self.base = base
        self.scratch = scratch
        scratch.mkdir(exist_ok=True)
        self.count = 0

    def run(self, label: str, damage: Callable[[Path], None], expect: Expect, tally: ClassTally) -> Outcome:
        self.count += 1
        copy = self.scratch / f"t{self.count}"
        copy_tree(self.base.root, copy)
        damage(copy)
        ro = open_read_only(copy)
        if ro.files_changed:  # reported; the read-write open gets a freshly damaged copy
            shutil.rmtree(copy)
            copy_tree(self.base.root, copy)
            damage(copy)
        outcome = judge(ro, open_read_write(copy), expect)
        tally.add(label, outcome)
        shutil.rmtree(copy)
        return outcome


def patch(relative: str, offset: int, data: bytes) -> Callable[[Path], None]:
    """Overwrite bytes in place (the file keeps its inode: hard links see the damage too)."""

    def damage(root: Path) -> None:
        with open(root / relative, "r+b") as f:
            f.seek(offset)
            f.write(data)

    return damage


def flip(relative: str, offset: int, bit: int) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        with open(root / relative, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ (1 << bit)]))

    return damage


def seg_rel(base: Base, number: int | None = None) -> str:
    return f"journal/{jn.segment_name(base.segment if number is None else number)}"


def positions(rng: random.Random, start: int, end: int, sample: int) -> list[int]:
    """Every offset in [start, end) in long mode, else a sample that always includes the frame
    header's bytes and the last byte."""
    every = list(range(start, end))
    if STRESS:
        return every
    head = every[: jn.FRAME_OVERHEAD]
    rest = every[jn.FRAME_OVERHEAD :]
    return sorted(set(head[::3] + rng.sample(rest, min(sample, len(rest))) + every[-1:]))


# ---------------------------------------------------------------------- the fault classes


def test_truncation_at_every_offset_of_the_last_record(
    base: Base, tmp_path: Path, summary: Callable[..., None]
) -> None:
    last = base.records[-1]
    tally = ClassTally()
    trials = Trials(base, tmp_path)
    expect = Expect(states=(base.without_last,))
    for cut in range(last.offset, last.end):

        def damage(root: Path, cut: int = cut) -> None:
            with open(root / seg_rel(base), "r+b") as f:
                f.truncate(cut)

        trials.run(f"truncate at {cut}", damage, expect, tally)
    tally.report(summary, "truncate-last", record_bytes=last.end - last.offset)


def test_flipped_bit_in_the_last_record(base: Base, tmp_path: Path, summary: Callable[..., None]) -> None:
    last = base.records[-1]
    tally = ClassTally()
    trials = Trials(base, tmp_path)
    rng = random.Random(1)
    expect = Expect(states=(base.without_last,))
    for offset in positions(rng, last.offset, last.end, 40):
        for bit in [0, 3, 7] if STRESS else [rng.randrange(8)]:
            trials.run(f"flip bit {bit} at {offset}", flip(seg_rel(base), offset, bit), expect, tally)
    tally.report(summary, "flip-last")


def test_flipped_bit_in_a_middle_record(base: Base, tmp_path: Path, summary: Callable[..., None]) -> None:
    tally = ClassTally()
    trials = Trials(base, tmp_path)
    rng = random.Random(2)
    middle = base.records[1:-1]
    targets = middle if STRESS else rng.sample(middle, 4)
    for record in targets:
        expect = Expect(corrupt=frozenset({(base.segment, record.offset)}))
        size = record.end - record.offset
        for offset in positions(rng, record.offset, record.end, 8 if size < 4000 else 12):
            if STRESS and size > 4000 and (offset - record.offset) % 7:
                continue  # the 10 KB record: every seventh byte
            for bit in [0, 3, 7] if STRESS else [rng.randrange(8)]:
                trials.run(
                    f"flip bit {bit} at {offset} (record at {record.offset})",
                    flip(seg_rel(base), offset, bit),
                    expect,
                    tally,
                )
    tally.report(summary, "flip-middle")


def test_garbage_appended(base: Base, tmp_path: Path, summary: Callable[..., None]) -> None:
    tally = ClassTally()
    trials = Trials(base, tmp_path)
    rng = random.Random(3)
    last = base.records[-1]
    frame = base.seg_path.read_bytes()[last.offset : last.end]
    eof = last.end
    shapes: list[tuple[str, bytes]] = [
        ("one zero byte", b"\0"),
        ("15 zeros", bytes(15)),
        ("4 KB of zeros", bytes(4096)),
        ("0xff * 100", b"\xff" * 100),
        ("a frame magic and a huge length", jn.FRAME_MAGIC + b"\xff\xff\xff\x7f" + bytes(8)),
        ("a frame magic and nothing else", jn.FRAME_MAGIC),
        ("a prefix of a valid frame", frame[: len(frame) // 2]),
        ("text", b"hello, this is not a journal record\n" * 3),
    ]
    shapes += [(f"{n} random bytes", rng.randbytes(n)) for n in (1, 16, 17, 100, 1000, 70_000)]
    shapes += [(f"random bytes #{i}", rng.randbytes(rng.randrange(1, 5000))) for i in range(scale(4, 60))]
    for label, garbage in shapes:

        def damage(root: Path, garbage: bytes = garbage) -> None:
            with open(root / seg_rel(base), "ab") as f:
                f.write(garbage)

        trials.run(label, damage, Expect(states=(base.full,)), tally)

    # A whole valid frame appended (a copy of the last record) is not garbage: it is a record
    # out of sequence, and must be reported where it lies.
    def append_copy(root: Path) -> None:
        with open(root / seg_rel(base), "ab") as f:
            f.write(frame)

    trials.run("a copy of the last frame", append_copy, Expect(corrupt=frozenset({(base.segment, eof)})), tally)
    tally.report(summary, "garbage-appended")


def zero_block_expectation(base: Base, data: bytes, start: int) -> Expect:
    """What zeroing [start, start + 4096) of the newest segment must lead to."""
    end = min(start + 4096, len(data))
    if start < base.start:
        return Expect(corrupt=frozenset({(base.segment, 0)}))  # the segment header
    hit = [r for r in base.records if r.offset < end and r.end > start]
    first = hit[0]
    if first is base.records[-1]:
        return Expect(states=(base.without_last,))  # only the last record: it is lost, nothing else
    corrupt = frozenset({(base.segment, first.offset)})
    if end < len(data) or start > first.offset + 8:
        return Expect(corrupt=corrupt)
    # Zeros from a record's length field to the end of the file: exactly what a power cut leaves
    # when the data of the last append never reached the disk (its length zeroed too, the file
    # size kept). No reader can tell these apart.
    prefix = base.root.parent / "lookalike"
    shutil.rmtree(prefix, ignore_errors=True)
    copy_tree(base.root, prefix)
    with open(prefix / seg_rel(base), "r+b") as f:
        f.truncate(first.offset)
    with ImageStore(prefix, read_only=True) as r:
        state = snapshot_of_store(r)
    shutil.rmtree(prefix)
    return Expect(corrupt=corrupt, lookalike=state)


@pytest.mark.parametrize("which", ["small-last", "big-last"])
def test_zeroed_4k_block(
    base: Base, base_big_last: Base, tmp_path: Path, summary: Callable[..., None], which: str
) -> None:
    chosen = base if which == "small-last" else base_big_last
    data = chosen.seg_path.read_bytes()
    tally = ClassTally()
    trials = Trials(chosen, tmp_path)
    step = 512 if STRESS else 4096  # 4 KB blocks at every 4 KB offset; in long mode every sector
    for start in range(0, len(data), step):
        expect = zero_block_expectation(chosen, data, start)
        length = min(4096, len(data) - start)
        trials.run(f"zero [{start}, {start + length})", patch(seg_rel(chosen), start, bytes(length)), expect, tally)
    tally.report(summary, f"zeroed-4k-block:{which}", segment_bytes=len(data))


def test_missing_newest_segment(base: Base, tmp_path: Path, summary: Callable[..., None]) -> None:
    tally = ClassTally()
    trials = Trials(base, tmp_path)
    newest = seg_rel(base)
    # With records after the compaction: they are gone, which must be reported.
    trials.run(
        "newest segment deleted",
        lambda root: (root / newest).unlink(),
        Expect(corrupt=frozenset({(base.segment, 0)})),
        tally,
    )
    # Just after a compaction (no record yet in the newest segment): nothing is lost.
    fresh = tmp_path / "fresh"
    copy_tree(base.root, fresh)
    with ImageStore(fresh, fsync="never", compact_every=None) as s:
        s.compact()
        number = s.position.segment
        state = snapshot_of_store(s)
    empty_base = Base(fresh, number, 0, [], state, state)
    trials2 = Trials(empty_base, tmp_path / "empty")
    trials2.run(
        "empty newest segment deleted",
        lambda root: (root / seg_rel(empty_base)).unlink(),
        Expect(states=(state,), corrupt=frozenset({(number, 0)})),
        tally,
    )
    tally.report(summary, "missing-newest-segment")


def test_damaged_or_older_images_json(base: Base, tmp_path: Path, summary: Callable[..., None]) -> None:
    tally = ClassTally()
    trials = Trials(base, tmp_path)
    rng = random.Random(5)
    images_json = base.root / snap.IMAGES_JSON
    size = images_json.stat().st_size
    everything = Expect(states=(base.full,), errors=(SnapshotMismatch,), merge_ok=True)
    # Damaged in place: images.json is a hard link to journal/snapshot-N.json, so both are hit;
    # the state is rebuilt from the older snapshot and the journal.
    for offset in sorted(rng.sample(range(size), scale(6, 60))):
        trials.run(
            f"images.json: flip at {offset} in place",
            flip(snap.IMAGES_JSON, offset, rng.randrange(8)),
            everything,
            tally,
        )
    trials.run("images.json: zeroed in place", patch(snap.IMAGES_JSON, 0, bytes(size)), everything, tally)

    def replace(data: Callable[[bytes], bytes]) -> Callable[[Path], None]:
        def damage(root: Path) -> None:
            old = (root / snap.IMAGES_JSON).read_bytes()
            (root / snap.IMAGES_JSON).unlink()
            (root / snap.IMAGES_JSON).write_bytes(data(old))

        return damage

    # Replaced by a damaged copy (the archive in journal/ stays intact).
    for offset in sorted(rng.sample(range(size), scale(4, 40))):
        trials.run(
            f"images.json: replaced, flip at {offset}",
            replace(lambda b, o=offset: b[:o] + bytes([b[o] ^ 0x20]) + b[o + 1 :]),
            everything,
            tally,
        )
    trials.run("images.json: replaced, truncated", replace(lambda b: b[: len(b) // 2]), everything, tally)
    trials.run("images.json: replaced, empty", replace(lambda b: b""), everything, tally)
    trials.run("images.json: missing", lambda root: (root / snap.IMAGES_JSON).unlink(), everything, tally)
    # Older: an earlier snapshot of this store, as a hard link or as a copy.
    older = base.root / "journal" / snap.archive_name(base.segment - 1)
    assert older.exists()

    def link_older(root: Path) -> None:
        (root / snap.IMAGES_JSON).unlink()
        os.link(root / "journal" / older.name, root / snap.IMAGES_JSON)

    trials.run("images.json: an older snapshot (link)", link_older, everything, tally)
    trials.run("images.json: an older snapshot (copy)", replace(lambda _b: older.read_bytes()), everything, tally)
    tally.report(summary, "images-json")


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="zeros from a record's length field to the end of the file are exactly what a power cut "
    "leaves of an append whose data never reached the disk; no reader can tell that several records "
    "were lost (docs/journal-format.md, Reading)",
)
def test_zeros_to_the_end_over_two_records_look_like_a_torn_append(base: Base, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy_tree(base.root, copy)
    second_last = base.records[-2]
    size = base.seg_path.stat().st_size
    patch(seg_rel(base), second_last.offset, bytes(size - second_last.offset))(copy)
    try:
        with ImageStore(copy, read_only=True) as r:
            state = snapshot_of_store(r)
    except JournalCorrupt:
        return  # what we would want: the loss of two records reported
    assert state == base.full, "the last two records were lost without a word"


def test_a_compaction_finishing_during_an_open_is_not_a_missing_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open lists the segments, then a compaction in another process creates the next one and
    publishes images.json from it: the open finds images.json ahead of the newest segment it
    listed, which is a race, not a lost segment. (Found by the state machine: a background
    compaction while a reader opened.)"""
    root = tmp_path / "store"
    with ImageStore(root, fsync="never", compact_every=None) as s:
        s.create(names=["a"])
        s.compact()
        s.create(names=["b"])
        s.compact()
        s.create(names=["c"])
        expected = snapshot_of_store(s)
    listing = Layout.segments
    calls = []

    def listed_before_the_compaction(self: Layout) -> list[int]:
        calls.append(1)
        segments = listing(self)
        return segments[:-1] if len(calls) <= 2 else segments  # _open, then _load_journal

    monkeypatch.setattr(Layout, "segments", listed_before_the_compaction)
    with ImageStore(root, read_only=True) as r:
        assert snapshot_of_store(r) == expected


def test_an_open_that_reports_damage_leaves_no_descriptor_open(base: Base, tmp_path: Path) -> None:
    """A program that retries opening a damaged store must not run out of file descriptors."""
    copy = tmp_path / "copy"
    copy_tree(base.root, copy)
    middle = base.records[len(base.records) // 2]
    flip(seg_rel(base), middle.offset + jn.FRAME_OVERHEAD + 1, 0)(copy)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        for read_only in (True, False):
            with pytest.raises(JournalCorrupt):
                ImageStore(copy, read_only=read_only, fsync="never")
    assert len(os.listdir("/proc/self/fd")) == before


# ---------------------------------------------------------------------- derived and kept files
#
# Two kinds of files in journal/ that no replay needs: the history-index sidecar saved with each
# snapshot (`history-N.msgpack`, an optional shortcut: damaged, missing or not matching, it must
# be ignored and every answer stay complete and correct), and the past big-data bytes an
# overwrite or a delete replaced (`blobs/sha256/HEX`: a damaged one must be reported by verify,
# and `at(seq).big_data` must give the exact bytes of that moment or raise, never other bytes).
# Each damaged copy is opened read-only, then read-write (written to, and reopened), and checked
# with each store, like `Trials.run` does; `judge` tells the state part.


@dataclass
class Findings:
    """What the checks of one trial found, over all its opens."""

    wrong: list[str] = field(default_factory=list)  # wrong answers, undocumented exceptions: silent loss
    noticed: bool = False  # the damage was reported (verify, a documented exception)
    exact: bool = True  # every answer was the whole right answer (no documented exception either)


CheckStore = Callable[[ImageStore, str, Findings], None]


def open_checked(path: Path, read_only: bool, check: CheckStore, found: Findings) -> Opened:
    """Open a copy read-only (state, every big-data item read) or read-write (state, a write, a
    read-only reopen), running `check` with each store opened, and note what the opens did."""
    out = Opened()
    before = tree_stat(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with alarm(TRIAL_TIMEOUT):
                if read_only:
                    with ImageStore(path, read_only=True) as ro:
                        out.state = snapshot_of_store(ro)
                        for image in ro.images():
                            for key in image.big_data_names:
                                with contextlib.suppress(KeyError):
                                    ro.big_data(image.id, key)
                        check(ro, "read-only", found)
                else:
                    with ImageStore(path, fsync="never", compact_every=None) as rw:
                        out.state = snapshot_of_store(rw)
                        check(rw, "read-write", found)
                        rw.create(PROBE, ["probe/after:damage"], created=T0 - 1)
                    with ImageStore(path, read_only=True) as again:
                        out.after_write = snapshot_of_store(again)
                        check(again, "reopened after a write", found)
        except Exception as exc:
            out.error = exc
    out.warnings = [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]
    out.files_changed = tree_stat(path) != before
    return out


def run_checked(
    trials: Trials, label: str, damage: Callable[[Path], None], check: CheckStore, tally: ClassTally
) -> Outcome:
    """One trial: the full state expected from both opens, and `check` finding nothing wrong.
    Recovered: the state and every checked answer exact; detected: a warning, or the checks saw
    the damage reported."""
    trials.count += 1
    copy = trials.scratch / f"t{trials.count}"
    copy_tree(trials.base.root, copy)
    damage(copy)
    found = Findings()
    ro = open_checked(copy, True, check, found)
    if ro.files_changed:  # reported; the read-write open gets a freshly damaged copy
        shutil.rmtree(copy)
        copy_tree(trials.base.root, copy)
        damage(copy)
    rw = open_checked(copy, False, check, found)
    outcome = judge(ro, rw, Expect(states=(trials.base.full,)))
    outcome.lost += found.wrong
    outcome.detected = outcome.detected or found.noticed
    outcome.recovered = outcome.recovered and found.exact and not found.wrong
    tally.add(label, outcome)
    shutil.rmtree(copy)
    return outcome


def replace_with(relative: str, data: bytes | None) -> Callable[[Path], None]:
    """The file replaced by a new one holding `data` (None: removed)."""

    def damage(root: Path) -> None:
        (root / relative).unlink()
        if data is not None:
            (root / relative).write_bytes(data)

    return damage


def truncate_to(relative: str, size: int) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        with open(root / relative, "r+b") as f:
            f.truncate(size)

    return damage


@dataclass(frozen=True)
class Moment:
    """What a full rebuild (snapshot plus replay, no history index) shows right after a record."""

    seq: int
    images: dict[str, Image | None]  # every image ID the journal ever had -> the image then (None: absent)
    names: dict[str, str]  # every name held then -> the image that held it


def past_moments(root: Path) -> list[Moment]:
    """The truth at a few records of a pristine store: the first and the last, each side of each
    segment's start, each segment's middle record, each side of each delete."""
    with ImageStore(root, read_only=True) as r:
        events = list(r.history())
    ids = sorted({e.image_id for e in events if e.image_id})
    seqs = {events[0].seq, events[-1].seq}
    for segment in {e.segment for e in events}:
        held = sorted({e.seq for e in events if e.segment == segment})
        seqs |= {held[0] - 1, held[0], held[len(held) // 2]}
    for event in events:
        if event.kind == "delete":
            seqs |= {event.seq - 1, event.seq}
    journal = Journal(DEFAULT_DISK, str(root))
    out = []
    for seq in sorted(s for s in seqs if s >= 1):
        state = journal.state_at(seq)
        out.append(Moment(seq, {i: state.get(i) for i in ids}, dict(state.by_name)))
    return out


def check_history(moments: list[Moment]) -> CheckStore:
    """Histories by back-pointers equal to full scans (and verify clean), and each image, by ID
    and by every name held then, at each moment as a full rebuild shows it (a fresh view per
    question, so that each one tries the history index's one-image rebuild)."""

    def check(store: ImageStore, what: str, found: Findings) -> None:
        found.wrong += [f"{what}: {p[:300]}" for p in history_problems(store, limit=1000)]
        for moment in moments:
            at = f"{what}: at({moment.seq})"
            for image_id, image in moment.images.items():
                try:
                    if image is None:
                        if store.at(moment.seq).exists(image_id):
                            found.wrong.append(f"{at}: image {image_id[:12]} exists, a full rebuild has none")
                    elif (got := store.at(moment.seq).get(image_id)) != image:
                        found.wrong.append(f"{at}.get({image_id[:12]}): {got} != a full rebuild's {image}")
                except Exception as exc:
                    found.wrong.append(f"{at}, image {image_id[:12]}: {exc.__class__.__name__}: {exc}")
            for name, holder in moment.names.items():
                try:
                    if (got_id := store.at(moment.seq).get(name).id) != holder:
                        found.wrong.append(f"{at}.get({name!r}): image {got_id[:12]}, held by {holder[:12]}")
                except Exception as exc:
                    found.wrong.append(f"{at}, name {name!r}: {exc.__class__.__name__}: {exc}")

    return check


def build_quiet_tail(root: Path) -> None:
    """Like `build`, but the last compaction is followed by one record only, about a new image:
    the chain heads of the older images, the name holders and the marks (an image with more than
    64 records) come from the newest sidecar alone, not from the records an open replays after it
    (in `base` every image has a record after the last compaction, which heals a bad sidecar)."""
    with ImageStore(root, fsync="never", compact_every=None) as s:
        busy = s.create("a1" * 32, ["quiet/busy:1"], created=T0, big_data=[("config", b"busy 0")])
        for n in range(70):
            s.set_metadata(busy.id, f"busy {n}")
        s.set_big_data(busy.id, "config", b"busy 1")  # an overwrite: the old bytes are kept
        s.create("b2" * 32, ["quiet/named:1", "quiet/moved:1"], created=T0 + 1, big_data=[("manifest", b"b2 0")])
        s.compact()
        s.create("c3" * 32, ["quiet/taker:1"], created=T0 + 2)
        s.add_names("c3" * 32, ["quiet/moved:1"])  # taken from b2
        s.create("d4" * 32, ["quiet/gone:1"], created=T0 + 3, big_data=[("manifest", b"d4 0")])
        s.set_flag("d4" * 32, "flag", True)
        s.delete("d4" * 32)
        s.set_names("b2" * 32, ["quiet/renamed:1"])
        s.compact()
        s.create("e5" * 32, ["quiet/after:compaction"], created=T0 + 4)


@pytest.fixture(scope="module")
def base_quiet_tail(tmp_path_factory: pytest.TempPathFactory) -> Base:
    root = tmp_path_factory.mktemp("corruption-quiet") / "store"
    build_quiet_tail(root)
    segment = max(n for n in (jn.parse_segment_name(p.name) for p in (root / "journal").iterdir()) if n)
    start, records = segment_records(root / "journal" / jn.segment_name(segment), segment)
    with ImageStore(root, read_only=True) as r:
        full = snapshot_of_store(r)
    return Base(root, segment, start, records, full, full)  # without_last: not used by these trials


_SIDECAR_HEADER_SIZE = 24  # magic 8, version 2, reserved 2, unused 4, xxh3 8 (journal-format.md)


def sidecar_offsets(rng: random.Random, data: bytes, ids: list[str]) -> list[int]:
    """`positions` over the whole sidecar, plus the first byte of each header field and a byte of
    the first copy of each image ID in it (a key of the chain heads: without the checksum, a
    changed key would lose that image's chain)."""
    fields = [0, 8, 10, 12, 16, _SIDECAR_HEADER_SIZE - 1]
    in_ids = [at + 7 for at in (data.find(image_id.encode()) for image_id in ids) if at >= 0]
    return sorted(set(positions(rng, 0, len(data), 20) + fields + in_ids))


@pytest.mark.parametrize("which", ["base", "quiet-tail"])
def test_damaged_history_sidecar(
    base: Base, base_quiet_tail: Base, tmp_path: Path, summary: Callable[..., None], which: str
) -> None:
    chosen = base if which == "base" else base_quiet_tail
    journal = chosen.root / "journal"
    sidecars = sorted(p.name for p in journal.glob("history-*.msgpack"))
    assert len(sidecars) >= 2, f"the base should have a sidecar per compaction: {sidecars}"
    moments = past_moments(chosen.root)
    ids = sorted(moments[-1].images)
    check = check_history(moments)
    # The pristine store passes the same checks, and its newest sidecar is the one an open loads.
    pristine = Findings()
    with ImageStore(chosen.root, read_only=True) as r:
        check(r, "pristine", pristine)
        index = r._caught_up_index()
        assert index is not None and index.chain_from == 1, "the newest sidecar was not loaded"
    assert not pristine.wrong, pristine.wrong
    tally = ClassTally()
    trials = Trials(chosen, tmp_path)
    rng = random.Random(11)
    for name in sidecars:
        rel = f"journal/{name}"
        data = (journal / name).read_bytes()
        for offset in sidecar_offsets(rng, data, ids):
            bit = rng.randrange(8)
            run_checked(trials, f"{name}: flip bit {bit} at {offset}", flip(rel, offset, bit), check, tally)
        run_checked(trials, f"{name}: truncated to half", truncate_to(rel, len(data) // 2), check, tally)
        run_checked(trials, f"{name}: header only", truncate_to(rel, _SIDECAR_HEADER_SIZE), check, tally)
        run_checked(trials, f"{name}: zeroed", patch(rel, 0, bytes(len(data))), check, tally)
        run_checked(trials, f"{name}: empty", truncate_to(rel, 0), check, tally)
        run_checked(trials, f"{name}: missing", replace_with(rel, None), check, tally)
        for other in sidecars:
            if other != name:
                older = "an older" if other < name else "a newer"
                what = f"{name}: replaced by {older} segment's sidecar {other}"
                run_checked(trials, what, replace_with(rel, (journal / other).read_bytes()), check, tally)

    def remove_all(root: Path) -> None:
        for name in sidecars:
            (root / "journal" / name).unlink()

    run_checked(trials, "every sidecar missing", remove_all, check, tally)
    tally.report(summary, f"history-sidecar:{which}", sidecars=len(sidecars), moments=len(moments))


@dataclass(frozen=True)
class KeptUse:
    """A past big-data item whose bytes a blob holds: `at(seq).big_data(image_id, key)`."""

    seq: int  # the record before the one that overwrote the item or deleted its image
    image_id: str
    key: str
    data: bytes  # what the pristine store answers


def kept_uses(root: Path) -> dict[str, list[KeptUse]]:
    """Blob path (relative to the store) -> the past items it holds, from the records' `kept`."""
    uses: dict[str, list[KeptUse]] = {}
    with ImageStore(root, read_only=True) as r:
        for rec in Journal(DEFAULT_DISK, str(root)).records():
            for image_id, key, digest in rec.body.get("kept", ()):
                algorithm, _, hexpart = str(digest).partition(":")
                seq = int(rec.body["seq"]) - 1
                data = r.at(seq).big_data(image_id, key)
                assert blob_digest(data) == digest
                use = KeptUse(seq, image_id, key, data)
                uses.setdefault(f"journal/blobs/{algorithm}/{hexpart}", []).append(use)
    return uses


def check_kept(rel: str, uses: list[KeptUse], missing: bool) -> CheckStore:
    """verify names the damaged blob (and nothing else), and every past item it held is read as
    its exact bytes or raises a documented error.

    A missing blob: verify names it too (a retained record's `kept` lists it), and the reader
    raises BigDataNotKept (`views.PastBytes.bytes_of` finds no blob by the item's digest nor by
    its replacer's `kept` entry), which this check requires for a missing blob.
    """
    name = rel.rsplit("/", 1)[-1]

    def check(store: ImageStore, what: str, found: Findings) -> None:
        report = store.verify()
        named = [p for p in report.problems if name in p]
        others = [p for p in report.problems if name not in p]
        if others:
            found.wrong.append(f"{what}: verify reported what is not the blob: {others}")
        if named:
            found.noticed = True
        else:
            found.wrong.append(f"{what}: verify did not report the damaged blob ({report.problems or 'ok'})")
        for use in uses:
            item = f"{what}: at({use.seq}).big_data({use.image_id[:12]}, {use.key!r})"
            try:
                data = store.at(use.seq).big_data(use.image_id, use.key)
            except BigDataNotKept:
                found.noticed = True
                found.exact = False
                continue
            except StoreError as exc:
                if missing:
                    found.wrong.append(f"{item}: {exc.__class__.__name__} for a missing blob, not BigDataNotKept")
                found.noticed = True
                found.exact = False
                continue
            except Exception as exc:
                found.wrong.append(f"{item}: {exc.__class__.__name__}: {exc}")
                continue
            if data != use.data:
                found.wrong.append(f"{item}: returned {len(data)} bytes that are not the item's {len(use.data)}")

    return check


@pytest.mark.parametrize("which", ["base", "quiet-tail"])
def test_damaged_kept_blob(
    base: Base, base_quiet_tail: Base, tmp_path: Path, summary: Callable[..., None], which: str
) -> None:
    """`base` keeps the items of a deleted image; `quiet-tail` also an overwritten item of an
    image that still exists (its current bytes differ from the kept ones)."""
    chosen = base if which == "base" else base_quiet_tail
    uses = kept_uses(chosen.root)
    found = (chosen.root / "journal" / "blobs").rglob("*")
    blobs = sorted(str(p.relative_to(chosen.root)) for p in found if p.is_file())
    assert blobs and sorted(uses) == blobs, f"every blob file should be one a record kept: {blobs} {sorted(uses)}"
    with ImageStore(chosen.root, read_only=True) as r:
        assert r.verify().ok
    tally = ClassTally()
    trials = Trials(chosen, tmp_path)
    rng = random.Random(12)
    for rel in blobs:
        data = (chosen.root / rel).read_bytes()
        check = check_kept(rel, uses[rel], missing=False)
        offsets = positions(rng, 0, len(data), 12)
        if STRESS and len(data) > 1000:
            offsets = [o for o in offsets if o < jn.FRAME_OVERHEAD or o % 7 == 0 or o == len(data) - 1]
        for offset in offsets:
            bit = rng.randrange(8)
            run_checked(trials, f"{rel}: flip bit {bit} at {offset}", flip(rel, offset, bit), check, tally)
        run_checked(trials, f"{rel}: truncated to half", truncate_to(rel, len(data) // 2), check, tally)
        run_checked(trials, f"{rel}: last byte cut", truncate_to(rel, len(data) - 1), check, tally)
        run_checked(trials, f"{rel}: a byte appended", replace_with(rel, data + b"\n"), check, tally)
        run_checked(trials, f"{rel}: zeroed", patch(rel, 0, bytes(len(data))), check, tally)
        run_checked(trials, f"{rel}: empty", truncate_to(rel, 0), check, tally)
        for other in blobs:
            if other != rel:
                what = f"{rel}: replaced by the bytes of {other}"
                run_checked(trials, what, replace_with(rel, (chosen.root / other).read_bytes()), check, tally)
        run_checked(trials, f"{rel}: missing", replace_with(rel, None), check_kept(rel, uses[rel], True), tally)
    tally.report(summary, f"kept-blobs:{which}", blobs=len(blobs), past_items=sum(len(u) for u in uses.values()))
