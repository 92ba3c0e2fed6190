"""The workloads: the same operations on the same images, over every adapter, with checks.

Each workload is repeated `Config.repeat` times and keeps every repetition's figure; the report
shows the best and the spread (max/min). Every workload verifies what it did (names resolve to
the image just written, prefixes find the right ID, big data reads back equal) and raises
`BenchmarkError` on any mismatch, so a wrong implementation fails the run instead of giving a
figure.

Budget rule (stated in RESULTS.md): an implementation whose every mutation rewrites the whole
store (`Adapter.rewrites_everything`, the seed) is measured over fewer operations at large sizes
(`Config.seed_work` images rewritten per measurement, at least `Config.seed_min_ops` ops), and
its store of more than `Config.seed_real_build_max` images is laid down directly as images.json
before the measured creates; its "create N" total is then an estimate, flagged as such. Above
`Config.full_build_max` images, every implementation's "create N" total is timed in one
repetition; the other repetitions time the last `ops` creates again on a copy of the state
before them.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import msgpack
import xxhash

from .adapters import ADAPTERS, Adapter, Found, JournalstoreAdapter, NotFound, SeedAdapter
from .seed import go_time_now, image_doc, write_images_json

ROOT = Path(__file__).resolve().parent.parent
perf = time.perf_counter


class BenchmarkError(Exception):
    """An implementation returned wrong data, or the harness could not measure."""


# ---------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Config:
    """What to run. `full()`, `quick()` and `tiny()` are the three standard modes."""

    mode: str
    sizes: tuple[int, ...]
    repeat: int = 3
    fsync_modes: tuple[bool, ...] = (False, True)
    impls: tuple[str, ...] = ("journalstore", "seed", "sqlite")
    ops: int = 500  # mutations per mutation workload (and "the last 500" of create N)
    lookups: int = 20_000  # lookups per kind
    refresh_samples: int = 20  # refreshes per repetition (median reported)
    batch: int = 1000  # creates in one batch()
    cold_records: int = 10_000  # journal records after the snapshot for journalstore's cold open
    big_data_bytes: int = 2048
    raw_ops: int = 500  # writes per raw-write measurement
    pack_ops: int = 20_000  # events per pack+hash measurement
    noise_samples: int = 15
    seed_work: int = 1_000_000  # images rewritten per seed measurement
    seed_min_ops: int = 20
    seed_real_build_max: int = 2000
    full_build_max: int = 10_000  # above: create N's total timed in one repetition only
    shared_work: int = 3_000_000  # images re-published per shared-mode measurement
    shared_min_ops: int = 20
    workdir: str = ""

    @classmethod
    def full(cls, **kw: Any) -> Config:
        return cls(mode="full", sizes=(1000, 10_000, 100_000), **kw)

    @classmethod
    def quick(cls, **kw: Any) -> Config:
        """Size 1,000 only; the seed gets a smaller budget so that the run stays under a minute."""
        base: dict[str, Any] = {"sizes": (1000,), "seed_work": 250_000, "shared_work": 250_000}
        base.update(kw)
        return cls(mode="quick", **base)

    @classmethod
    def shared(cls, **kw: Any) -> Config:
        """Only the shared-mode phase (a write that publishes images.json), at 1k, 10k and 100k."""
        base: dict[str, Any] = {"sizes": (1000, 10_000, 100_000), "impls": ("journalstore", "seed")}
        base.update(kw)
        return cls(mode="shared", **base)

    @classmethod
    def tiny(cls, **kw: Any) -> Config:
        """Smoke mode: checks the adapters, claims nothing about speed."""
        base: dict[str, Any] = {
            "sizes": (50,),
            "repeat": 1,
            "ops": 20,
            "lookups": 200,
            "refresh_samples": 3,
            "batch": 20,
            "cold_records": 100,
            "raw_ops": 20,
            "pack_ops": 200,
            "noise_samples": 3,
            "seed_min_ops": 5,
        }
        base.update(kw)
        return cls(mode="tiny", **base)

    def with_(self, **kw: Any) -> Config:
        return replace(self, **kw)


def fsync_label(fsync: bool | None) -> str:
    return "n/a" if fsync is None else ("on" if fsync else "off")


# ---------------------------------------------------------------------- results


@dataclass
class Measurement:
    """One figure: a value per repetition (lower is better) and how it was obtained."""

    workload: str
    impl: str
    size: int
    fsync: str
    unit: str
    values: list[float]
    ops: int = 1  # operations per repetition
    nominal_ops: int = 1  # what the workload asks for (ops < nominal_ops: budget-reduced)
    estimated: bool = False
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def best(self) -> float:
        return min(self.values)

    @property
    def spread(self) -> float:
        lo = min(self.values)
        return max(self.values) / lo if lo > 0 else 1.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["best"] = self.best
        out["spread"] = self.spread
        return out


@dataclass
class Results:
    """Everything one run measured, plus how and where."""

    config: Config
    meta: dict[str, Any] = field(default_factory=dict)
    noise: dict[str, dict[str, float]] = field(default_factory=dict)
    measurements: list[Measurement] = field(default_factory=list)

    def add(self, m: Measurement) -> Measurement:
        self.measurements.append(m)
        return m

    def find(self, workload: str, impl: str, size: int, fsync: str) -> Measurement | None:
        for m in self.measurements:
            if (m.workload, m.impl, m.size, m.fsync) == (workload, impl, size, fsync):
                return m
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "config": asdict(self.config),
            "noise": self.noise,
            "measurements": [m.to_json() for m in self.measurements],
        }


# ---------------------------------------------------------------------- the images


class Spec(NamedTuple):
    """One workload image: the same for every implementation."""

    id: str
    names: tuple[str, ...]
    layer: str
    digest: str


def make_spec(i: int) -> Spec:
    """A realistic image: a registry name, a 64-hex top layer, a sha256 manifest digest."""
    h = hashlib.sha256(b"journalstore-bench-%d" % i).hexdigest
    image_id = hashlib.sha256(b"id-%d" % i).hexdigest()
    name = f"registry.example/team{i % 97}/app{i}:v{i % 13}"
    return Spec(image_id, (name,), hashlib.sha256(b"layer-%d" % i).hexdigest(), "sha256:" + h())


def make_specs(count: int) -> list[Spec]:
    return [make_spec(i) for i in range(count)]


def expect(condition: bool, message: str) -> None:
    """Fail the run (never a figure from wrong data)."""
    if not condition:
        raise BenchmarkError(message)


def timed_add_names(adapter: Adapter, work: list[tuple[str, str]], workload: str) -> float:
    """Seconds for one add-names per (image, name), timed alone; then each checked by a lookup."""
    add = adapter.add_names
    gc.collect()
    t0 = perf()
    for image_id, name in work:
        add(image_id, [name])
    elapsed = perf() - t0
    for image_id, name in work:
        check_get(adapter, name, image_id, f"{workload}: get by the new name", first_name=name)
    return elapsed


def check_get(adapter: Adapter, ref: str, want_id: str, what: str, first_name: str | None = None) -> Found:
    try:
        found = adapter.get(ref)
    except NotFound:
        raise BenchmarkError(f"{adapter.name}: {what}: get({ref!r}) found nothing, expected {want_id}") from None
    expect(found.id == want_id, f"{adapter.name}: {what}: get({ref!r}) returned {found.id}, expected {want_id}")
    if first_name is not None:
        expect(
            bool(found.names) and found.names[0] == first_name,
            f"{adapter.name}: {what}: image {want_id} has names {found.names}, expected {first_name!r} first",
        )
    return found


def seed_ops(cfg: Config, cls: type[Adapter], size: int, wanted: int, floor: int | None = None) -> int:
    """Operations to measure: all of them, unless every op rewrites the whole store."""
    if not cls.rewrites_everything:
        return wanted
    low = cfg.seed_min_ops if floor is None else floor
    return max(min(low, wanted), min(wanted, cfg.seed_work // max(size, 1)))


def shared_ops(cfg: Config, size: int) -> int:
    """Writes per shared-mode measurement: each re-publishes the whole images.json (O(N) bytes)."""
    return max(min(cfg.shared_min_ops, cfg.ops), min(cfg.ops, cfg.shared_work // max(size, 1)))


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


# ---------------------------------------------------------------------- the machine


def cpu_noise(samples: int) -> dict[str, float]:
    """Time a fixed CPU loop several times: the spread is the machine's noise."""
    times = []
    for _ in range(samples):
        t = perf()
        x = 0
        for i in range(200_000):
            x += i
        times.append(perf() - t)
    return {
        "samples": samples,
        "min_ms": min(times) * 1e3,
        "median_ms": statistics.median(times) * 1e3,
        "max_ms": max(times) * 1e3,
        "spread": max(times) / min(times),
    }


def loadavg() -> list[float]:
    try:
        return list(os.getloadavg())
    except OSError:
        return []


# ---------------------------------------------------------------------- the harness


Progress = Callable[[str], None]


class Harness:
    """Runs the configured workloads over the adapters and collects `Results`.

    For each size and fsync mode every implementation gets its own store, and every workload
    runs its repetitions interleaved across implementations (rep 1 of each, then rep 2 of each,
    the order rotating), so that a burst of noise on this shared machine does not land on one
    implementation only.
    """

    def __init__(
        self,
        cfg: Config,
        adapters: Mapping[str, type[Adapter]] | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.cfg = cfg
        self.adapters = dict(adapters or ADAPTERS)
        for impl in cfg.impls:
            if impl not in self.adapters:
                raise BenchmarkError(f"unknown implementation {impl!r} (have {', '.join(self.adapters)})")
        self.results = Results(cfg)
        self._progress = progress
        self._start = perf()
        self.workdir = Path(cfg.workdir) if cfg.workdir else ROOT / "benchmarks" / "out" / "work"

    def say(self, text: str) -> None:
        if self._progress is not None:
            self._progress(f"[{perf() - self._start:7.1f}s] {text}")

    def interleave(self, impls: Sequence[str], fn: Callable[[str, int], float]) -> dict[str, list[float]]:
        """`fn(impl, rep)` for every repetition and implementation, rotating the order each time.

        Each call starts after `os.sync()`: the previous implementation's dirty pages (the seed's
        rewrites of a large images.json) are written back before the next one is timed, so that
        no implementation pays for another's write-back.
        """
        values: dict[str, list[float]] = {impl: [] for impl in impls}
        for rep in range(self.cfg.repeat):
            k = rep % max(len(impls), 1)
            for impl in [*impls[k:], *impls[:k]]:
                os.sync()
                values[impl].append(fn(impl, rep))
        return values

    # ------------------------------------------------------------------ top level

    def run(self) -> Results:
        cfg = self.cfg
        res = self.results
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        res.meta = {
            "mode": cfg.mode,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "loadavg_start": loadavg(),
            "workdir": str(self.workdir),
        }
        self.say("noise: CPU loop")
        res.noise["start"] = cpu_noise(cfg.noise_samples)
        try:
            if cfg.mode != "shared":
                self.say("physical limits: record sizes, msgpack + xxhash")
                self.pack_hash()
                specs = make_specs(max(cfg.sizes) + cfg.repeat * cfg.batch)
                for size in cfg.sizes:
                    self.say(f"n={size:,}: physical limits: raw writes")
                    self.raw_writes(size)
                    for k, fsync in enumerate(cfg.fsync_modes):
                        self.run_size(size, fsync, specs, reads=k == 0)
                del specs
            # Last, on stores of its own: nothing above is measured after (or next to) it.
            for size in cfg.sizes:
                self.shared_mode(size)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
        res.noise["end"] = cpu_noise(cfg.noise_samples)
        res.meta["loadavg_end"] = loadavg()
        res.meta["duration_s"] = perf() - self._start
        res.meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
        return res

    def run_size(self, size: int, fsync: bool, specs: list[Spec], reads: bool) -> None:
        """Every workload at one size and durability, over every implementation."""
        label = f"n={size:,} fsync={fsync_label(fsync)}"
        self.say(f"{label}: create N")
        stores = self.create_n(size, fsync, specs)
        try:
            self.say(f"{label}: add-names")
            self.add_names(stores, size, specs)
            self.say(f"{label}: set-big-data")
            self.set_big_data(stores, size)
            if reads:
                self.say(f"{label}: lookups")
                self.lookups(stores, size, specs)
                self.say(f"{label}: refresh")
                self.refresh(stores, size, specs)
                self.say(f"{label}: memory")
                self.memory(stores, size, specs)
                self.say(f"{label}: cold open")
                self.cold_open(stores, size, specs)
            self.say(f"{label}: batch")
            self.batch(stores, size, specs)
        finally:
            for adapter in stores.values():
                adapter.close()
                shutil.rmtree(adapter.path, ignore_errors=True)

    def add(self, m: Measurement) -> None:
        self.results.add(m)

    # ------------------------------------------------------------------ create N

    def store_dir(self, impl: str, size: int, fsync: bool, what: str) -> Path:
        path = self.workdir / f"{impl}-{size}-{fsync_label(fsync)}-{what}"
        if path.exists():
            shutil.rmtree(path)
        return path

    def create_n(self, size: int, fsync: bool, specs: list[Spec]) -> dict[str, Adapter]:
        """Create N images one at a time; cost per create over the last `ops`. Keeps the stores.

        Above `Config.full_build_max` images the first N − `ops` creates are timed in the first
        repetition only; later repetitions restore a copy of that state (untimed) and time the
        last `ops` again. The seed above `Config.seed_real_build_max` starts from an images.json
        laid down directly (see the module docstring).
        """
        cfg = self.cfg
        fs = fsync_label(fsync)
        once = size > cfg.full_build_max
        plan: dict[str, tuple[int, bool]] = {}
        for impl in cfg.impls:
            cls = self.adapters[impl]
            last = min(cfg.ops, size)
            direct = cls.rewrites_everything and size > cfg.seed_real_build_max
            plan[impl] = (seed_ops(cfg, cls, size, last) if direct else last, direct)
        totals: dict[str, list[float]] = {impl: [] for impl in cfg.impls}
        lat_best: dict[str, list[float]] = {}
        kept: dict[str, Adapter] = {}
        bases: dict[str, Path] = {}

        def rep_fn(impl: str, rep: int) -> float:
            cls = self.adapters[impl]
            last, direct = plan[impl]
            path = self.store_dir(impl, size, fsync, f"create{rep}")
            if direct:
                created = go_time_now()
                docs = [image_doc(s.id, s.names, s.layer, s.digest, created) for s in specs[: size - last]]
                write_images_json(str(path), docs, fsync)
                del docs
            elif impl in bases:
                shutil.copytree(bases[impl], path)
                os.sync()  # the copy is untimed: so is writing it back
            adapter = cls()
            adapter.open(str(path), fsync)
            try:
                return measure(impl, rep, adapter, path, last, direct)
            except BaseException:
                adapter.close()
                raise

        def measure(impl: str, rep: int, adapter: Adapter, path: Path, last: int, direct: bool) -> float:
            before = 0.0
            if not direct and impl not in bases:
                create = adapter.create
                gc.collect()
                t0 = perf()
                for s in specs[: size - last]:
                    create(s.id, s.names, s.layer, s.digest)
                before = perf() - t0
                if once:
                    adapter.close()
                    bases[impl] = self.store_dir(impl, size, fsync, "base")
                    shutil.copytree(path, bases[impl])
                    adapter.open(str(path), fsync)
                else:
                    bases.pop(impl, None)
            create = adapter.create
            gc.collect()
            lat: list[float] = []
            t0 = perf()
            for s in specs[size - last : size]:
                t = perf()
                create(s.id, s.names, s.layer, s.digest)
                lat.append(perf() - t)
            measured = perf() - t0
            self.verify_created(adapter, specs, size, last)
            mean = sum(lat) / len(lat)
            if direct:
                totals[impl].append(size * mean / 2)  # per-op cost grows linearly: the integral
            elif rep == 0 or not once:
                totals[impl].append(before + measured)
            if impl not in lat_best or mean < sum(lat_best[impl]) / len(lat_best[impl]):
                lat_best[impl] = lat
            old = kept.pop(impl, None)
            if old is not None:
                old.close()
                shutil.rmtree(old.path, ignore_errors=True)
            kept[impl] = adapter
            return mean * 1e6

        try:
            means = self.interleave(cfg.impls, rep_fn)
        except BaseException:
            for adapter in kept.values():
                adapter.close()
            raise
        finally:
            for base in bases.values():
                shutil.rmtree(base, ignore_errors=True)
        for impl in cfg.impls:
            last, direct = plan[impl]
            if direct:
                note = "≈: estimated as N × (µs per create at N) / 2; the seed's base laid down as images.json"
            elif once:
                note = f"above {cfg.full_build_max:,} images the total is measured in one repetition (budget)"
            else:
                note = ""
            self.add(Measurement("create-total", impl, size, fs, "s", totals[impl], size, size, direct, note))
            lat = lat_best[impl]
            self.add(
                Measurement(
                    "create",
                    impl,
                    size,
                    fs,
                    "µs/op",
                    means[impl],
                    last,
                    min(cfg.ops, size),
                    extra={
                        "p50_us": percentile(lat, 0.5) * 1e6,
                        "p99_us": percentile(lat, 0.99) * 1e6,
                        "max_us": max(lat) * 1e6,
                    },
                )
            )
        return kept

    def verify_created(self, adapter: Adapter, specs: list[Spec], size: int, last: int) -> None:
        """The last `last` images and a sample of the others resolve by name and by prefix."""
        rng = random.Random(size)
        sample = list(range(size - last, size)) + [rng.randrange(size) for _ in range(min(200, size))]
        for i in sample:
            s = specs[i]
            check_get(adapter, s.names[0], s.id, "create N: get by name")
            check_get(adapter, s.id[:12], s.id, "create N: get by 12-char prefix")

    # ------------------------------------------------------------------ mutations at size N

    @staticmethod
    def targets(size: int, count: int, salt: str) -> list[int]:
        """Distinct existing images spread over the store; the same for every implementation."""
        return random.Random(f"{size}-{salt}-{count}").sample(range(size), min(count, size))

    def add_names(self, stores: dict[str, Adapter], size: int, specs: list[Spec]) -> None:
        cfg = self.cfg
        counts = {impl: seed_ops(cfg, type(a), size, cfg.ops) for impl, a in stores.items()}

        def rep_fn(impl: str, rep: int) -> float:
            adapter = stores[impl]
            idx = self.targets(size, counts[impl], f"add-names-{rep}")
            work = [(specs[i].id, f"registry.example/extra/rep{rep}/app{i}:latest") for i in idx]
            elapsed = timed_add_names(adapter, work, "add-names")
            return elapsed / len(work) * 1e6

        values = self.interleave(list(stores), rep_fn)
        for impl, adapter in stores.items():
            fs = fsync_label(adapter.fsync)
            self.add(Measurement("add-names", impl, size, fs, "µs/op", values[impl], counts[impl], cfg.ops))

    def set_big_data(self, stores: dict[str, Adapter], size: int) -> None:
        cfg = self.cfg
        counts = {impl: seed_ops(cfg, type(a), size, cfg.ops) for impl, a in stores.items()}

        def rep_fn(impl: str, rep: int) -> float:
            adapter = stores[impl]
            idx = self.targets(size, counts[impl], f"set-big-data-{rep}")
            ids = [make_spec(i).id for i in idx]
            rng = random.Random(f"data-{size}-{rep}")
            work = [(image_id, rng.randbytes(cfg.big_data_bytes)) for image_id in ids]
            put = adapter.set_big_data
            gc.collect()
            t0 = perf()
            for image_id, data in work:
                put(image_id, "config", data)
            elapsed = perf() - t0
            for image_id, data in work:
                expect(
                    adapter.big_data(image_id, "config") == data,
                    f"{impl}: set-big-data: the item of {image_id} reads back different bytes",
                )
            return elapsed / len(work) * 1e6

        values = self.interleave(list(stores), rep_fn)
        for impl, adapter in stores.items():
            fs = fsync_label(adapter.fsync)
            self.add(Measurement("set-big-data", impl, size, fs, "µs/op", values[impl], counts[impl], cfg.ops))

    def batch(self, stores: dict[str, Adapter], size: int, specs: list[Spec]) -> None:
        """One batch() of `cfg.batch` creates on top of the size-N store."""
        cfg = self.cfg
        impls = [impl for impl, a in stores.items() if a.supports_batch]

        def rep_fn(impl: str, rep: int) -> float:
            adapter = stores[impl]
            start = max(cfg.sizes) + rep * cfg.batch
            work = specs[start : start + cfg.batch]
            create = adapter.create
            gc.collect()
            t0 = perf()
            with adapter.batch():
                for s in work:
                    create(s.id, s.names, s.layer, s.digest)
            elapsed = perf() - t0
            for s in work:
                check_get(adapter, s.names[0], s.id, "batch: get by name")
            return elapsed * 1e3

        values = self.interleave(impls, rep_fn)
        for impl in impls:
            fs = fsync_label(stores[impl].fsync)
            note = f"{cfg.batch:,} creates in one batch() (seed: containers/storage has no batch)"
            self.add(Measurement("batch", impl, size, fs, "ms/batch", values[impl], cfg.batch, cfg.batch, note=note))

    # ------------------------------------------------------------------ reads

    def lookups(self, stores: dict[str, Adapter], size: int, specs: list[Spec]) -> None:
        cfg = self.cfg
        rng = random.Random(f"lookups-{size}")
        idx = [rng.randrange(size) for _ in range(cfg.lookups)]
        want = [specs[i].id for i in idx]
        kinds: dict[str, list[str]] = {
            "lookup-id": want,
            "lookup-name": [specs[i].names[0] for i in idx],
            "lookup-prefix": [specs[i].id[:12] for i in idx],
        }
        for workload, refs in kinds.items():

            def rep_fn(impl: str, rep: int, workload: str = workload, refs: list[str] = refs) -> float:
                get = stores[impl].get
                gc.collect()
                t0 = perf()
                found = [get(r) for r in refs]
                elapsed = perf() - t0
                for j, f in enumerate(found):
                    if f.id != want[j]:
                        raise BenchmarkError(
                            f"{impl}: {workload}: get({refs[j]!r}) returned {f.id}, expected {want[j]}"
                        )
                return elapsed / len(refs) * 1e6

            values = self.interleave(list(stores), rep_fn)
            for impl in stores:
                self.add(Measurement(workload, impl, size, "n/a", "µs/op", values[impl], len(refs), cfg.lookups))

    def refresh(self, stores: dict[str, Adapter], size: int, specs: list[Spec]) -> None:
        """A second instance (same process, read-only) refreshes after each single write of the first."""
        cfg = self.cfg
        counts = {
            impl: seed_ops(cfg, type(a), size, cfg.refresh_samples, floor=min(5, cfg.refresh_samples))
            for impl, a in stores.items()
        }
        readers: dict[str, Adapter] = {}
        extremes: dict[str, list[float]] = {impl: [] for impl in stores}

        def rep_fn(impl: str, rep: int) -> float:
            writer, reader = stores[impl], readers[impl]
            samples: list[float] = []
            for k, i in enumerate(self.targets(size, counts[impl], f"refresh-{rep}")):
                name = f"registry.example/refresh/rep{rep}/n{k}:latest"
                writer.add_names(specs[i].id, [name])
                t0 = perf()
                changed = reader.refresh()
                samples.append(perf() - t0)
                expect(changed, f"{impl}: refresh: the second instance saw no change after a write")
                check_get(reader, name, specs[i].id, "refresh: second instance, get by the new name", first_name=name)
            extremes[impl].extend(samples)
            return statistics.median(samples) * 1e6

        try:
            for impl, writer in stores.items():
                reader = readers[impl] = type(writer)()
                reader.open(writer.path, writer.fsync, read_only=True)
            values = self.interleave(list(stores), rep_fn)
        finally:
            for reader in readers.values():
                reader.close()
        for impl in stores:
            self.add(
                Measurement(
                    "refresh",
                    impl,
                    size,
                    "n/a",
                    "µs",
                    values[impl],
                    counts[impl],
                    cfg.refresh_samples,
                    note="median of the samples of each repetition; the second instance is in the same process",
                    extra={"max_us": max(extremes[impl]) * 1e6, "min_us": min(extremes[impl]) * 1e6},
                )
            )

    # ------------------------------------------------------------------ subprocess probes

    def probe(self, args: list[str]) -> dict[str, Any]:
        """Run benchmarks.probe in a fresh interpreter; its last stdout line is JSON."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.probe", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=str(ROOT),
            check=False,
        )
        if proc.returncode != 0:
            raise BenchmarkError(f"probe {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        lines = proc.stdout.strip().splitlines()
        expect(bool(lines), f"probe {' '.join(args)} printed nothing")
        out: dict[str, Any] = json.loads(lines[-1])
        return out

    def memory(self, stores: dict[str, Adapter], size: int, specs: list[Spec]) -> None:
        """Python heap (tracemalloc) and RSS growth of opening the store, per image, fresh process."""
        s = specs[size // 2]
        note = "one sample: the count is deterministic"
        for impl, adapter in stores.items():
            base = ["--impl", impl, "--path", adapter.path, "--ref", s.id[:12], "--want", s.id]
            traced = self.probe(["memory", *base])
            rss = self.probe(["rss", *base])
            self.add(Measurement("memory", impl, size, "n/a", "B/image", [traced["after_open"] / size], note=note))
            after = [traced["after_lookup"] / size]
            self.add(Measurement("memory-indexed", impl, size, "n/a", "B/image", after, note=note))
            self.add(Measurement("memory-rss", impl, size, "n/a", "B/image", [rss["after_lookup"] / size], note=note))

    def cold_open(self, stores: dict[str, Adapter], size: int, specs: list[Spec]) -> None:
        """Open the store in a fresh process (one per repetition) and look one image up.

        journalstore first gets its "snapshot plus records" shape: compact, then `cold_records`
        more mutations. Its figure is compared with json.loads of its images.json.
        """
        cfg = self.cfg
        s = specs[size // 3]
        args: dict[str, list[str]] = {}
        loads: list[float] = []
        for impl, adapter in stores.items():
            if impl == "journalstore":
                adapter.compact()
                for k in range(cfg.cold_records):
                    adapter.add_names(specs[k % size].id, [f"registry.example/cold/{k}:v{k % 5}"])
            adapter.close()
            args[impl] = ["open", "--impl", impl, "--path", adapter.path, "--ref", s.names[0], "--want", s.id]
            images_json = adapter.images_json() if impl == "journalstore" else None
            if images_json:
                args[impl] += ["--json", images_json]

        def rep_fn(impl: str, rep: int) -> float:
            out = self.probe(args[impl])
            if "json_loads_s" in out:
                loads.append(out["json_loads_s"] * 1e3)
            return float(out["open_s"]) * 1e3

        try:
            values = self.interleave(list(stores), rep_fn)
        finally:
            for adapter in stores.values():
                adapter.open(adapter.path, adapter.fsync)
        for impl in stores:
            note = ""
            if impl == "journalstore":
                note = f"journalstore: snapshot of {size:,} images plus {cfg.cold_records:,} journal records"
            self.add(Measurement("cold-open", impl, size, "n/a", "ms", values[impl], note=note))
        if loads:
            note = "json.loads of journalstore's images.json (bytes already read), in the same child"
            self.add(Measurement("cold-open", "json.loads", size, "n/a", "ms", loads, note=note))

    # ------------------------------------------------------------------ shared mode

    def shared_mode(self, size: int) -> None:
        """A write that publishes (a shared store), next to Go's price (seed) and the raw floor.

        journalstore's store of N images is built once, untimed (batch() of `batch` creates,
        unshared, fsync off), in `<root>/overlay-images` with `<root>/storage.lock` (where
        containers/storage keeps it); the seed's is laid down as images.json. Every repetition
        starts from a copy of these (exactly N images), opened with the measured fsync,
        journalstore with shared=True: every commit then also rewrites images.json whole from
        the per-record encoding cache and changes images.lock's last-writer bytes. Its first
        write after opening encodes every record (the cache is empty): untimed, reported apart.
        The floor, `raw-images-json`, writes the bytes of the shared store's images.json (after
        that first write) to a temporary file, fsyncs it, renames it over images.json and
        fsyncs the directory: the steps of the publication, without the store.
        """
        cfg = self.cfg
        js_cls = self.adapters.get("journalstore")
        if "journalstore" not in cfg.impls or js_cls is None or not issubclass(js_cls, JournalstoreAdapter):
            return
        seed_cls = self.adapters.get("seed") if "seed" in cfg.impls else None
        specs = make_specs(size)
        root = self.workdir / f"shared-{size}"
        bases = {"journalstore": root / "base" / "containers-storage" / "overlay-images"}
        self.say(f"n={size:,}: shared mode: building the stores (untimed)")
        builder = js_cls()
        builder.open(str(bases["journalstore"]), False)
        try:
            for k in range(0, size, cfg.batch):
                with builder.batch():
                    for s in specs[k : k + cfg.batch]:
                        builder.create(s.id, s.names, s.layer, s.digest)
        finally:
            builder.close()
        (bases["journalstore"].parent / "storage.lock").touch()  # a containers/storage root
        if seed_cls is not None:
            bases["seed"] = root / "base" / "seed"
            created = go_time_now()
            docs = [image_doc(s.id, s.names, s.layer, s.digest, created) for s in specs]
            write_images_json(str(bases["seed"]), docs, False)
            del docs
        classes: dict[str, type[Adapter]] = {"journalstore": js_cls.shared_variant()}
        if seed_cls is not None:
            classes["seed"] = seed_cls
        try:
            for fsync in cfg.fsync_modes:
                shared = SharedRun(self, size, fsync, specs, classes, bases, root)
                for workload in ("shared-add-names", "shared-create"):
                    self.say(f"n={size:,} fsync={fsync_label(fsync)}: shared mode: {workload.removeprefix('shared-')}")
                    shared.measure(workload)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    @staticmethod
    def lock_head(store_dir: Path) -> bytes:
        """containers/storage's 64 last-writer bytes of images.lock."""
        with open(store_dir / "images.lock", "rb") as f:
            return f.read(64)

    def check_published(self, store_dir: Path, name: str, lock_before: bytes, what: str) -> bytes:
        """The last write is in images.json and the last-writer bytes moved: a Go reader reloads it."""
        data = (store_dir / "images.json").read_bytes()
        expect(json.dumps(name).encode() in data, f"journalstore: {what}: {name!r} is not in the published images.json")
        moved = self.lock_head(store_dir) != lock_before
        expect(moved, f"journalstore: {what}: images.lock's last-writer bytes did not change")
        return data

    @staticmethod
    def raw_images_json(directory: Path, data: bytes, fsync: bool, ops: int) -> float:
        """ms per replacement of images.json by these bytes, as the publication (and Go) does it."""
        d = str(directory)
        tmp, final = d + "/.tmp-images.json", d + "/images.json"
        gc.collect()
        t0 = perf()
        for _ in range(ops):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final)
            if fsync:
                dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        return (perf() - t0) / ops * 1e3

    # ------------------------------------------------------------------ physical limits

    def pack_hash(self) -> None:
        """Bytes of one create record and of one batch record; msgpack + xxhash of one event."""
        cfg = self.cfg
        specs = make_specs(cfg.batch + 1)
        record_bytes, batch_bytes = self.record_sizes(specs)
        self.results.meta["create_record_bytes"] = record_bytes
        self.results.meta["batch_record_bytes"] = batch_bytes
        body = self.record_body(specs[:1], 1)
        values = []
        for _ in range(cfg.repeat):
            t0 = perf()
            for _ in range(cfg.pack_ops):
                payload = msgpack.packb(body, use_bin_type=True)
                xxhash.xxh3_64_intdigest(payload)
            values.append((perf() - t0) / cfg.pack_ops * 1e6)
        note = "msgpack.packb + xxh3_64 of one create record body"
        self.add(Measurement("pack-hash", "raw", 0, "n/a", "µs/op", values, cfg.pack_ops, cfg.pack_ops, note=note))

    def raw_writes(self, size: int) -> None:
        """os.write of one record's bytes (with and without fdatasync), and one batch record.

        Measured again at every size, just before that size's workloads: fdatasync latency on
        this shared disk drifts over minutes, and the targets compare figures taken together.
        """
        cfg = self.cfg
        record_bytes = int(self.results.meta["create_record_bytes"])
        batch_body = self.record_body(make_specs(cfg.batch + 1)[1:], 2)
        path = self.workdir / "raw-write"
        for fsync in cfg.fsync_modes:
            fs = fsync_label(fsync)
            values: list[float] = []
            batch_values: list[float] = []
            for _ in range(cfg.repeat):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
                try:
                    data = b"\x5a" * record_bytes
                    t0 = perf()
                    for _ in range(cfg.raw_ops):
                        os.write(fd, data)
                        if fsync:
                            os.fdatasync(fd)
                    values.append((perf() - t0) / cfg.raw_ops * 1e6)
                    t0 = perf()
                    payload = msgpack.packb(batch_body, use_bin_type=True)
                    frame = struct.pack("<4sIQ", b"\xabJR\x01", len(payload), xxhash.xxh3_64_intdigest(payload))
                    os.write(fd, frame + payload)
                    if fsync:
                        os.fdatasync(fd)
                    batch_values.append((perf() - t0) * 1e3)
                finally:
                    os.close(fd)
            sync = " + os.fdatasync" if fsync else ""
            note = f"os.write of {record_bytes} bytes (one create record){sync}"
            self.add(Measurement("raw-write", "raw", size, fs, "µs/op", values, cfg.raw_ops, cfg.raw_ops, note=note))
            note = f"msgpack + xxh3 + one os.write of {cfg.batch:,} create events{sync}"
            self.add(Measurement("raw-batch", "raw", size, fs, "ms/batch", batch_values, note=note))
        path.unlink(missing_ok=True)
        self.raw_big_data(size)

    def raw_big_data(self, size: int) -> None:
        """The file-system floor of one new big-data item in the containers/storage layout.

        What any store keeping that layout pays (Go's MkdirAll + ioutils.AtomicWriteFile): create
        the image's directory, write the item to a temporary name in it and rename it into place;
        with fsync, the file is fdatasynced before the rename and both directories after it.
        """
        cfg = self.cfg
        data = b"\x5a" * cfg.big_data_bytes
        base = self.workdir / "raw-big-data"
        ops = max(1, cfg.raw_ops // 5)
        for fsync in cfg.fsync_modes:
            fs = fsync_label(fsync)
            values: list[float] = []
            for rep in range(cfg.repeat):
                root = base / f"{fs}-{rep}"
                root.mkdir(parents=True)
                dirs = [str(root / f"{k:064x}") for k in range(ops)]
                t0 = perf()
                for directory in dirs:
                    os.mkdir(directory, 0o700)
                    tmp, final = directory + "/.tmp-config", directory + "/config"
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                    try:
                        os.write(fd, data)
                        if fsync:
                            os.fdatasync(fd)
                    finally:
                        os.close(fd)
                    os.rename(tmp, final)
                    if fsync:
                        for d in (directory, str(root)):
                            dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                            try:
                                os.fsync(dfd)
                            finally:
                                os.close(dfd)
                values.append((perf() - t0) / ops * 1e6)
            sync = "; fdatasync of the file, fsync of both directories" if fsync else ""
            note = (
                f"mkdir + write of {cfg.big_data_bytes:,} bytes to a temporary file + rename into place "
                f"(the containers/storage layout's floor for a new big-data item{sync})"
            )
            self.add(Measurement("raw-big-data", "raw", size, fs, "µs/op", values, ops, ops, note=note))
        shutil.rmtree(base, ignore_errors=True)

    def record_sizes(self, specs: list[Spec]) -> tuple[int, int]:
        """Bytes journalstore appends for one create, and for one batch of `cfg.batch` creates."""
        cls = self.adapters.get("journalstore", ADAPTERS["journalstore"])
        path = self.workdir / "record-size"
        adapter = cls()
        adapter.open(str(path), False)
        try:
            journal = path / "journal"

            def size() -> int:
                return sum(p.stat().st_size for p in journal.iterdir() if p.name.startswith("segment-"))

            before = size()
            s = specs[0]
            adapter.create(s.id, s.names, s.layer, s.digest)
            one = size() - before
            before = size()
            with adapter.batch():
                for s in specs[1 : self.cfg.batch + 1]:
                    adapter.create(s.id, s.names, s.layer, s.digest)
            many = size() - before
        finally:
            adapter.close()
            shutil.rmtree(path, ignore_errors=True)
        expect(one > 0 and many > 0, "journalstore: creating an image appended nothing to the journal")
        return one, many

    @staticmethod
    def record_body(specs: Sequence[Spec], seq: int) -> dict[str, Any]:
        """A commit record body shaped like journalstore's (docs/journal-format.md)."""
        now = time.time_ns()
        return {
            "type": "commit",
            "seq": seq,
            "time": now,
            "pid": os.getpid(),
            "uid": os.getuid(),
            "actor": "",
            "events": [
                {
                    "op": "create",
                    "id": s.id,
                    "created": now,
                    "names": list(s.names),
                    "layer": s.layer,
                    "digest": s.digest,
                }
                for s in specs
            ],
        }


class SharedRun:
    """One size and durability of the shared-mode phase (see `Harness.shared_mode`).

    Each repetition of each implementation works on a fresh copy of the base store of exactly N
    images (copied and opened untimed, then `os.sync()`), so that neither the creates nor the
    other fsync mode make the store bigger than N.
    """

    def __init__(
        self,
        harness: Harness,
        size: int,
        fsync: bool,
        specs: list[Spec],
        classes: dict[str, type[Adapter]],
        bases: dict[str, Path],
        root: Path,
    ) -> None:
        cfg = harness.cfg
        self.h, self.size, self.fsync, self.specs = harness, size, fsync, specs
        self.classes, self.bases, self.root = classes, bases, root
        self.fs = fsync_label(fsync)
        self.ops = {impl: seed_ops(cfg, cls, size, cfg.ops) for impl, cls in classes.items()}
        self.ops["journalstore"] = self.ops["raw"] = shared_ops(cfg, size)
        self.first: list[float] = []  # the first (untimed) write after each opening, seconds
        # The floor's bytes: the shared store's images.json at N images, after its first write.
        adapter, copy = self.fresh("journalstore", "floor")
        adapter.close()
        self.data = (Path(adapter.path) / "images.json").read_bytes()
        shutil.rmtree(copy, ignore_errors=True)
        self.raw_dir = root / f"raw-{self.fs}"
        self.raw_dir.mkdir()
        (self.raw_dir / "images.json").write_bytes(self.data)

    def fresh(self, impl: str, tag: str) -> tuple[Adapter, Path]:
        """A copy of the base store, open; journalstore's after its first (untimed) write."""
        base = self.bases[impl]
        copy = self.root / f"{impl}-{self.fs}-{tag}"
        if impl == "journalstore":  # the containers/storage root, storage.lock included
            shutil.copytree(base.parent, copy)
            path = copy / base.name
        else:
            shutil.copytree(base, copy)
            path = copy
        adapter = self.classes[impl]()
        adapter.open(str(path), self.fsync)
        try:
            if isinstance(adapter, JournalstoreAdapter):
                expect(adapter.is_shared, f"journalstore: {path} did not open as a shared store")
                s = self.specs[0]
                warm = f"registry.example/shared/{self.fs}/{tag}/warm-up:latest"
                before = self.h.lock_head(path)
                gc.collect()
                t0 = perf()
                adapter.add_names(s.id, [warm])
                self.first.append(perf() - t0)
                check_get(adapter, warm, s.id, "shared: first write: get by the new name", first_name=warm)
                self.h.check_published(path, warm, before, "shared: first write")
        except BaseException:
            adapter.close()
            raise
        os.sync()  # the copy and the first write are untimed: so is writing them back
        return adapter, copy

    def measure(self, workload: str) -> None:
        """One mutation per op, ms per op; with add-names, the raw images.json floor interleaved."""
        h, cfg, size, fs, ops, specs = self.h, self.h.cfg, self.size, self.fs, self.ops, self.specs
        creating = workload == "shared-create"

        def rep_fn(impl: str, rep: int) -> float:
            if impl == "raw":
                return h.raw_images_json(self.raw_dir, self.data, self.fsync, ops[impl])
            adapter, copy = self.fresh(impl, f"{workload}-{rep}")
            try:
                path = Path(adapter.path)
                lock_before = h.lock_head(path) if impl == "journalstore" else b""
                if creating:
                    base = 1_000_000_000 + 1_000_000 * rep
                    new = [make_spec(base + k) for k in range(ops[impl])]
                    create = adapter.create
                    gc.collect()
                    t0 = perf()
                    for s in new:
                        create(s.id, s.names, s.layer, s.digest)
                    elapsed = perf() - t0
                    for s in new:
                        check_get(adapter, s.names[0], s.id, f"{workload}: get by name", first_name=s.names[0])
                    last = new[-1].names[0]
                else:
                    idx = h.targets(size, ops[impl], f"{workload}-{fs}-{rep}")
                    work = [(specs[i].id, f"registry.example/shared/{fs}/rep{rep}/app{i}:latest") for i in idx]
                    elapsed = timed_add_names(adapter, work, workload)
                    last = work[-1][1]
                if impl == "journalstore":
                    h.check_published(path, last, lock_before, workload)
            finally:
                adapter.close()
                shutil.rmtree(copy, ignore_errors=True)
            return elapsed / ops[impl] * 1e3

        impls = [*self.classes] if creating else [*self.classes, "raw"]
        values = h.interleave(impls, rep_fn)
        nbytes = float(len(self.data))
        for impl in self.classes:
            note = ""
            extra: dict[str, float] = {"images_json_bytes": nbytes}
            if impl == "journalstore":
                note = (
                    "journalstore: shared=True in a containers/storage root; each repetition on a fresh copy of "
                    "the N-image store, whose first write after opening (every record encoded) is not in the figure"
                )
                extra["first_write_ms"] = min(self.first) * 1e3
            m = Measurement(workload, impl, size, fs, "ms/op", values[impl], ops[impl], cfg.ops, note=note, extra=extra)
            h.add(m)
        if creating:
            return
        sync = (
            ", os.fsync, rename over images.json, fsync of the directory" if self.fsync else ", rename over images.json"
        )
        note = f"os.write of the shared store's images.json bytes to a temporary file{sync}"
        raw = Measurement("raw-images-json", "raw", size, fs, "ms/op", values["raw"], ops["raw"], ops["raw"], note=note)
        raw.extra["images_json_bytes"] = nbytes
        h.add(raw)


def run(
    cfg: Config,
    adapters: Mapping[str, type[Adapter]] | None = None,
    progress: Progress | None = None,
) -> Results:
    """Run the harness; raises `BenchmarkError` if any implementation returned wrong data."""
    return Harness(cfg, adapters, progress).run()


__all__ = ["ADAPTERS", "BenchmarkError", "Config", "Measurement", "Results", "SeedAdapter", "Spec", "run"]
