"""Turning `Results` into Markdown tables, the JSON file, the PNG plot and RESULTS.md.

Also where the issue's targets are checked: `targets(results)` compares the measured ratios with
the thresholds and says, for each, met, missed or not measured in this run.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .workloads import Config, Measurement, Results

JS = "journalstore"

# (workload key, title) in report order; titles are formatted with the run's Config.
WORKLOADS: tuple[tuple[str, str], ...] = (
    ("create-total", "create N, total (s)"),
    ("create", "create N: mean µs per create over the last {ops:,}"),
    ("add-names", "{ops:,} add-names at size N: µs per op"),
    ("set-big-data", "{ops:,} set-big-data ({big_data_bytes:,} bytes) at size N: µs per op"),
    ("batch", "batch() of {batch:,} creates at size N: ms per batch"),
    ("lookup-id", "{lookups:,} lookups by ID: µs per lookup"),
    ("lookup-name", "{lookups:,} lookups by name: µs per lookup"),
    ("lookup-prefix", "{lookups:,} lookups by 12-char ID prefix: µs per lookup"),
    ("refresh", "second instance's refresh after one write: µs (median of {refresh_samples})"),
    ("cold-open", "cold open (fresh process) + one lookup: ms"),
    ("memory", "Python heap per image after opening N images (tracemalloc): bytes"),
    ("memory-indexed", "Python heap per image after open + one prefix lookup (tracemalloc): bytes"),
    ("memory-rss", "RSS growth per image after open + one lookup: bytes"),
)

MUTATIONS = ("create-total", "create", "add-names", "set-big-data", "batch")
LOOKUPS = ("lookup-id", "lookup-name", "lookup-prefix")

# Shared mode (a write that publishes images.json): its own tables, targets and RESULTS.md section.
SHARED_WORKLOADS: tuple[tuple[str, str], ...] = (
    ("shared-add-names", "add-names of one name"),
    ("shared-create", "create of one image"),
)
SHARED = frozenset({w for w, _ in SHARED_WORKLOADS} | {"raw-images-json"})
SHARED_TARGET_SIZES = (10_000, 100_000)
SHARED_BEGIN = "<!-- shared-mode: begin (`python -m benchmarks --shared` replaces this section) -->"
SHARED_END = "<!-- shared-mode: end -->"


def fmt(value: float) -> str:
    """A figure with as many digits as it deserves."""
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def cell(m: Measurement | None) -> str:
    if m is None:
        return "—"
    text = ("≈" if m.estimated else "") + fmt(m.best)
    if len(m.values) > 1:
        text += f" ±{(m.spread - 1) * 100:.0f}%"
    if m.ops < m.nominal_ops:
        text += f" (n={m.ops})"
    return text


def ratio(num: Measurement | None, den: Measurement | None) -> float | None:
    if num is None or den is None or den.best <= 0:
        return None
    return num.best / den.best


def ratio_text(r: float | None) -> str:
    if r is None:
        return "—"
    return f"{r:,.0f}×" if r >= 100 else f"{r:.2f}×"


def impls_of(results: Results) -> list[str]:
    seen = [i for i in results.config.impls]
    extra = sorted({m.impl for m in results.measurements} - set(seen) - {"raw", "json.loads"})
    return seen + extra


def table(results: Results, workload: str, title: str) -> str | None:
    """One Markdown table: a row per (size, fsync), a column per implementation, then ratios."""
    rows = [m for m in results.measurements if m.workload == workload]
    if not rows:
        return None
    impls = [i for i in impls_of(results) if any(m.impl == i for m in rows)]
    if any(m.impl == "json.loads" for m in rows):
        impls.append("json.loads")
    others = [i for i in impls if i != JS]
    keys = sorted({(m.size, m.fsync) for m in rows}, key=lambda k: (k[0], k[1]))
    head = ["size", "fsync", *impls] + ([f"{o} ÷ {JS}" for o in others] if JS in impls else [])
    lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for size, fs in keys:
        found = {i: results.find(workload, i, size, fs) for i in impls}
        row = [f"{size:,}", fs, *(cell(found[i]) for i in impls)]
        if JS in impls:
            row += [ratio_text(ratio(found[o], found[JS])) for o in others]
        lines.append("| " + " | ".join(row) + " |")
    notes = sorted({m.note for m in rows if m.note})
    lines += [""] + [f"_{n}_  " for n in notes] if notes else []
    return "\n".join(lines)


def physical_table(results: Results) -> str | None:
    rows = [m for m in results.measurements if m.impl == "raw" and m.workload not in SHARED]
    if not rows:
        return None
    lines = [
        "**Physical limits (same run; raw writes measured again just before each size's workloads)**",
        "",
        "| measurement | before size | fsync | figure | what |",
        "|---|---|---|---|---|",
    ]
    for m in rows:
        size = f"{m.size:,}" if m.size else "—"
        lines.append(f"| {m.workload} | {size} | {m.fsync} | {cell(m)} {m.unit} | {m.note} |")
    return "\n".join(lines)


def shared_table(results: Results) -> str | None:
    """A write that publishes, ms per op: journalstore (shared) against seed and the raw floor."""
    rows = [m for m in results.measurements if m.workload in SHARED]
    if not rows:
        return None
    f = results.find
    head = [
        "size",
        "fsync",
        "images.json",
        "write",
        "journalstore shared",
        "seed",
        "raw images.json write",
        "journalstore ÷ seed",
        "journalstore ÷ raw",
        "first write after open",
    ]
    lines = [
        "**Shared mode: one write that publishes images.json, at size N: ms per write**",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    keys = sorted({(m.size, m.fsync) for m in rows})
    for size, fs in keys:
        raw = f("raw-images-json", "raw", size, fs)
        for workload, what in SHARED_WORKLOADS:
            js, seed = f(workload, JS, size, fs), f(workload, "seed", size, fs)
            if js is None and seed is None:
                continue
            nbytes = (js or raw or seed or rows[0]).extra.get("images_json_bytes")
            first = js.extra.get("first_write_ms") if js is not None else None
            lines.append(
                "| "
                + " | ".join(
                    [
                        f"{size:,}",
                        fs,
                        f"{fmt(nbytes / 1e6)} MB" if nbytes else "—",
                        what,
                        cell(js),
                        cell(seed),
                        cell(raw),
                        ratio_text(ratio(js, seed)),
                        ratio_text(ratio(js, raw)),
                        f"{fmt(first)} ms" if first is not None and workload == "shared-add-names" else "",
                    ]
                )
                + " |"
            )
    return "\n".join(lines)


def markdown(results: Results, shared: bool = True) -> str:
    """All tables, for the terminal and for RESULTS.md (`shared`: with the shared-mode table)."""
    fields = asdict(results.config)
    parts = [t for key, title in WORKLOADS if (t := table(results, key, title.format(**fields)))]
    if shared and (st := shared_table(results)):
        parts.append(st)
    phys = physical_table(results)
    if phys:
        parts.append(phys)
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------- targets


@dataclass
class Target:
    """One of the issue's targets, as this run measured it."""

    name: str
    goal: str
    status: str  # "met", "missed", "not measured", "met (partial run)"
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "goal": self.goal, "status": self.status, "detail": self.detail}


def _status(checks: Sequence[bool], complete: bool) -> str:
    if not checks:
        return "not measured"
    if not all(checks):
        return "missed"
    return "met" if complete else "met (partial run)"


def shared_targets(results: Results) -> list[Target]:
    """Issue 12.6: a write that publishes, at 10,000 and 100,000, against Go's price and the disk."""
    f = results.find
    modes = [fsync_label(fs) for fs in results.config.fsync_modes]
    out: list[Target] = []
    for name, goal, other, limit in (
        (
            "Shared write vs Go's price",
            "a shared write (add-names, create; fsync on and off) ≤ 1/4 of seed's at 10,000 and 100,000",
            "seed",
            0.25,
        ),
        (
            "Shared write vs raw images.json",
            "a shared write (add-names, create; fsync on and off) ≤ 2 × a raw write (+ fsync) + rename of "
            "the same images.json bytes, at 10,000 and 100,000",
            "raw",
            2.0,
        ),
    ):
        checks: list[bool] = []
        parts: list[str] = []
        for size in SHARED_TARGET_SIZES:
            for fs in modes:
                for workload, _ in SHARED_WORKLOADS:
                    js = f(workload, JS, size, fs)
                    den = f(workload, "seed", size, fs) if other == "seed" else f("raw-images-json", "raw", size, fs)
                    r = ratio(js, den)
                    if r is None or js is None or den is None:
                        continue
                    checks.append(r <= limit)
                    short = workload.removeprefix("shared-")
                    parts.append(
                        f"{short} n={size:,} fsync {fs}: {fmt(js.best)} vs {fmt(den.best)} ms = {r:.2f}×"
                        + ("" if r <= limit else " ✗")
                    )
        complete = len(checks) == len(SHARED_TARGET_SIZES) * len(modes) * len(SHARED_WORKLOADS) and len(modes) == 2
        out.append(
            Target(name, goal, _status(checks, complete), "; ".join(parts) or "not measured (needs 10,000, 100,000)")
        )
    return out


def fsync_label(fsync: bool) -> str:
    return "on" if fsync else "off"


def targets(results: Results) -> list[Target]:
    """Evaluate the issue's targets on this run's best figures."""
    if results.config.mode == "tiny":
        return []
    if results.config.mode == "shared":
        return shared_targets(results)
    return main_targets(results) + shared_targets(results)


def main_targets(results: Results) -> list[Target]:
    """The targets of the unshared store (everything but the shared mode)."""
    f = results.find
    sizes = sorted({m.size for m in results.measurements if m.impl == JS})
    out: list[Target] = []

    # Flat writes.
    a, b = f("create", JS, 1000, "off"), f("create", JS, 100_000, "off")
    r = ratio(b, a)
    out.append(
        Target(
            "Flat writes",
            "µs/create at 100,000 ≤ 1.5 × at 1,000 (fsync off)",
            _status([r <= 1.5] if r is not None else [], True),
            "not measured (needs sizes 1,000 and 100,000)"
            if r is None or a is None or b is None
            else f"{fmt(b.best)} µs vs {fmt(a.best)} µs = {r:.2f}× (median per op: "
            f"{fmt(b.extra.get('p50_us', 0))} vs {fmt(a.extra.get('p50_us', 0))} µs; "
            f"slowest op at 100,000: {fmt(b.extra.get('max_us', 0))} µs)",
        )
    )

    # Against the original design at 10,000.
    for fs, need in (("off", 200.0), ("on", 20.0)):
        checks, parts = [], []
        for w in ("create", "add-names", "set-big-data"):
            r = ratio(f(w, "seed", 10_000, fs), f(w, JS, 10_000, fs))
            if r is not None:
                checks.append(r >= need)
                parts.append(f"{w} {ratio_text(r)}")
        out.append(
            Target(
                f"vs original design, fsync {fs}",
                f"every mutation ≥ {need:.0f}× faster than seed at 10,000",
                _status(checks, len(checks) == 3),
                ", ".join(parts) or "not measured (needs size 10,000)",
            )
        )

    # Against SQLite.
    checks, misses = [], []
    found: list[float] = []
    aim = 0
    for js in results.measurements:
        if js.impl != JS or js.workload not in MUTATIONS + LOOKUPS:
            continue
        r = ratio(f(js.workload, "sqlite", js.size, js.fsync), js)
        if r is None:
            continue
        checks.append(r >= 1.0)
        aim += r >= 2.0
        found.append(r)
        if r < 1.0:
            misses.append(f"{js.workload} n={js.size:,} fsync={js.fsync}: {r:.2f}×")
    detail = (
        f"{len(found)} comparisons, worst {min(found):.2f}×, {aim} of {len(found)} at ≥ 2×"
        + ("; slower in: " + "; ".join(misses) if misses else "")
        if found
        else "not measured"
    )
    out.append(
        Target(
            "vs SQLite",
            "every mutation workload and every lookup at least as fast as SQLite, every size (aim 2×)",
            _status(checks, set(sizes) >= {1000, 10_000, 100_000}),
            detail,
        )
    )

    # Durable writes near the disk's limit (each size against the raw figures taken just before it).
    checks, parts = [], []
    for size in sizes:
        mc, raw = f("create", JS, size, "on"), f("raw-write", "raw", size, "on")
        r = ratio(mc, raw)
        if r is not None and mc is not None and raw is not None:
            checks.append(r <= 1.5)
            parts.append(f"n={size:,}: {fmt(mc.best)} µs vs raw {fmt(raw.best)} µs = {r:.2f}×")
    out.append(
        Target(
            "Durable create",
            "µs/create (fsync on) ≤ 1.5 × raw write + fdatasync of the same bytes",
            _status(checks, True),
            "; ".join(parts) or "not measured",
        )
    )
    checks, parts = [], []
    for size in sizes:
        mb, raw = f("batch", JS, size, "on"), f("raw-batch", "raw", size, "on")
        r = ratio(mb, raw)
        if r is not None and mb is not None and raw is not None:
            checks.append(r <= 3.0)
            parts.append(f"n={size:,}: {fmt(mb.best)} ms vs raw {fmt(raw.best)} ms = {r:.2f}×")
    out.append(
        Target(
            "Durable batch",
            "batch() of 1,000 creates (fsync on) ≤ 3 × raw pack + write + fdatasync of those events",
            _status(checks, True),
            "; ".join(parts) or "not measured",
        )
    )

    # Refresh.
    a, b = f("refresh", JS, 1000, "n/a"), f("refresh", JS, 100_000, "n/a")
    r1 = ratio(b, a)
    r2 = ratio(f("refresh", "seed", 100_000, "n/a"), b)
    checks = ([r1 <= 2.0] if r1 is not None else []) + ([r2 >= 100.0] if r2 is not None else [])
    out.append(
        Target(
            "Refresh",
            "refresh at 100,000 ≤ 2 × at 1,000, and ≥ 100× faster than seed's reload at 100,000",
            _status(checks, len(checks) == 2),
            "not measured (needs sizes 1,000 and 100,000)"
            if r1 is None or a is None or b is None
            else f"{fmt(b.best)} µs vs {fmt(a.best)} µs = {r1:.2f}×; seed ÷ journalstore at 100,000 = "
            + ratio_text(r2),
        )
    )

    # Cold open.
    co, j = f("cold-open", JS, 100_000, "n/a"), f("cold-open", "json.loads", 100_000, "n/a")
    r = ratio(co, j)
    out.append(
        Target(
            "Cold open",
            "open of 100,000 images (snapshot + 10,000 records) ≤ 2 × json.loads of its images.json",
            _status([r <= 2.0] if r is not None else [], True),
            "not measured (needs size 100,000)"
            if r is None or co is None or j is None
            else f"{fmt(co.best)} ms vs {fmt(j.best)} ms = {r:.2f}×",
        )
    )

    # Memory.
    mem = f("memory", JS, 100_000, "n/a")
    out.append(
        Target(
            "Memory",
            "≤ 1,500 bytes of Python heap per image at 100,000 images",
            _status([mem.best <= 1500] if mem else [], True),
            "not measured (needs size 100,000)"
            if mem is None
            else f"{fmt(mem.best)} B/image after open"
            + (
                f"; {fmt(mi.best)} B/image once the prefix index is built"
                if (mi := f("memory-indexed", JS, 100_000, "n/a"))
                else ""
            ),
        )
    )
    return out


def big_data_floor(results: Results) -> str | None:
    """set-big-data next to what the containers/storage layout alone costs on this disk."""
    parts = []
    for m in results.measurements:
        if m.impl != JS or m.workload != "set-big-data":
            continue
        floor = results.find("raw-big-data", "raw", m.size, m.fsync)
        sqlite = results.find("set-big-data", "sqlite", m.size, m.fsync)
        if floor is None or not floor.best or not m.best:
            continue
        text = f"n={m.size:,} fsync {m.fsync}: {fmt(m.best)} µs vs floor {fmt(floor.best)} µs"
        if sqlite is not None and sqlite.best:
            text += f" (sqlite {fmt(sqlite.best)} µs)"
        parts.append(text)
    if not parts:
        return None
    return (
        "set-big-data against the floor of the containers/storage layout (a directory per image, a "
        "file per item, written to a temporary name and renamed; `raw-big-data` below), which "
        "SQLite's BLOB column does not pay: " + "; ".join(parts) + "."
    )


def targets_table(items: Iterable[Target]) -> str:
    lines = ["| target | goal | status | measured |", "|---|---|---|---|"]
    for t in items:
        status = {"met": "✅ met", "missed": "❌ missed"}.get(t.status, t.status)
        lines.append(f"| {t.name} | {t.goal} | {status} | {t.detail} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------- files


def to_json(results: Results) -> dict[str, Any]:
    out = results.to_json()
    out["targets"] = [t.to_json() for t in targets(results)]
    return out


def from_json(data: dict[str, Any]) -> Results:
    """Rebuild `Results` from a results.json (to re-render the report without re-measuring)."""
    config = data["config"]
    for key in ("sizes", "fsync_modes", "impls"):
        config[key] = tuple(config[key])
    fields = set(Measurement.__dataclass_fields__)
    return Results(
        Config(**config),
        meta=data.get("meta", {}),
        noise=data.get("noise", {}),
        measurements=[Measurement(**{k: v for k, v in m.items() if k in fields}) for m in data["measurements"]],
    )


def write_json(results: Results, path: Path) -> None:
    path.write_text(json.dumps(to_json(results), indent=1, ensure_ascii=False) + "\n")


PLOTTED = (
    ("create", "create (last 500)", "µs/op"),
    ("add-names", "add-names", "µs/op"),
    ("set-big-data", "set-big-data 2 KB", "µs/op"),
    ("lookup-name", "lookup by name", "µs/op"),
    ("refresh", "refresh after one write", "µs"),
    ("cold-open", "cold open", "ms"),
)
COLORS = {"journalstore": "tab:blue", "seed": "tab:red", "sqlite": "tab:green", "json.loads": "tab:gray"}


def plot(results: Results, path: Path) -> bool:
    """Per-operation cost against store size, log-log. False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, (workload, title, unit) in zip(axes.flat, PLOTTED, strict=True):
        rows = [m for m in results.measurements if m.workload == workload]
        for impl in sorted({m.impl for m in rows}):
            for fs in sorted({m.fsync for m in rows if m.impl == impl}):
                pts = sorted((m.size, m.best) for m in rows if m.impl == impl and m.fsync == fs)
                if not pts:
                    continue
                off = fs == "off"
                label = impl if fs == "n/a" else f"{impl} fsync {fs}"
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    "--" if off else "-",
                    marker="s" if off else "o",
                    fillstyle="none" if off else "full",
                    color=COLORS.get(impl),
                    label=label,
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("images in the store")
        ax.set_ylabel(unit)
        ax.grid(True, which="both", alpha=0.3)
        if rows:
            ax.legend(fontsize=7)
    fig.suptitle(f"journalstore vs containers/storage's design (seed) vs SQLite — {results.config.mode} run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def method_notes(results: Results) -> str:
    cfg = results.config
    seed_rows = [
        m for m in results.measurements if m.impl == "seed" and m.ops < m.nominal_ops and m.workload not in SHARED
    ]
    reduced = sorted({(m.workload, m.size, m.ops) for m in seed_rows})
    lines = [
        "- Every figure is the best of the repetitions; `±x%` is the spread (slowest ÷ fastest − 1).",
        "- `seed` is a Python port of containers/storage's images.go persistence: each mutation takes the "
        "fcntl lock, re-serializes every record with `json.dumps` (Go: `json.Marshal`), writes a new "
        "last-write token into images.lock, and replaces images.json atomically (temp file, fdatasync when "
        "fsync is on, rename); a reader compares the token and reloads and re-indexes the whole file. "
        "Python's json encoder is slower than Go's, so the real Go store would be a few times faster than "
        "this port on large stores; the ratios against it are therefore optimistic for journalstore.",
        f"- Budget: seed is measured over at most {cfg.seed_work:,} rewritten images per measurement "
        f"(at least {cfg.seed_min_ops} operations); figures marked `(n=…)` are per-op costs over that many "
        "operations instead of 500. Above "
        f"{cfg.seed_real_build_max:,} images its store is laid down directly as images.json before the "
        "measured creates, and its `create N` total (marked ≈) is estimated as N × (µs per create at N) / 2.",
    ]
    if reduced:
        lines.append(
            "  Reduced seed measurements in this run: "
            + ", ".join(f"{w} at {s:,} ({o} ops)" for w, s, o in reduced)
            + "."
        )
    lines += [
        "- `sqlite`: sqlite3 in WAL mode, synchronous FULL with fsync on and OFF with fsync off, one "
        "`BEGIN IMMEDIATE … COMMIT` per mutation, indexed tables for IDs, names and digests; big data in "
        "a BLOB column (journalstore and containers/storage keep one file per item, written atomically).",
        "- `journalstore`: library defaults (automatic compaction included) except fsync (`always`/`never`).",
        "- Reads (lookups, refresh, cold open, memory) do not depend on the writer's fsync setting and "
        "are measured once per size, on the store built with the first fsync mode of the run.",
        "- Refresh: a second adapter instance in the same process opens the store read-only; after each "
        "single add-names by the first instance its `refresh()` is timed, then checked with a lookup of "
        "the new name. For sqlite, reads always see the database; its refresh is a `PRAGMA data_version` "
        "check.",
        "- Cold open: one fresh interpreter per repetition (page cache warm), timing open plus one lookup "
        "by name. journalstore's store is first compacted and then given "
        f"{cfg.cold_records:,} more add-names records; `json.loads` is timed on that store's images.json "
        "(bytes already in memory) in the same child.",
        "- Memory: a fresh interpreter, `tracemalloc` started after imports, current traced bytes after "
        "opening ÷ N. SQLite's own page cache is C memory that tracemalloc does not see; the RSS row "
        "shows it.",
        "- Isolation: the implementations' repetitions alternate (the order rotating each time), and "
        "each starts after `os.sync()`, so that none is timed while the disk writes back another's "
        "files.",
        "- Physical limits: `os.write` of one create record's bytes "
        f"({results.meta.get('create_record_bytes', '?')} bytes, measured from journalstore's journal) "
        "with and without `os.fdatasync`; msgpack + xxh3 of a record body; and one batch record of "
        f"{cfg.batch:,} create events ({results.meta.get('batch_record_bytes', '?')} bytes) packed, "
        "hashed and written.",
    ]
    return "\n".join(lines)


def _load(values: Any) -> str:
    return " ".join(f"{v:.2f}" for v in values) if values else "?"


AUDIT_MARKER = "<!-- audit-scale: written by hand from benchmarks/audit_scale.py; kept by the harness -->"


def run_header(results: Results) -> list[str]:
    """When, where and how noisy: the lines under a RESULTS.md title."""
    meta = results.meta
    noise = results.noise
    lines = [
        f"- Run: {meta.get('started')} → {meta.get('finished')}, {meta.get('duration_s', 0):.0f} s; "
        f"sizes {', '.join(f'{s:,}' for s in results.config.sizes)}; best of {results.config.repeat}.",
        f"- Machine: {meta.get('cpu_count')} CPUs, Python {meta.get('python')}, {meta.get('platform')}; "
        f"load average at start {_load(meta.get('loadavg_start'))}, at end {_load(meta.get('loadavg_end'))}.",
    ]
    for when in ("start", "end"):
        n = noise.get(when)
        if n:
            lines.append(
                f"- Machine noise at {when}: a fixed CPU loop took {fmt(n['min_ms'])}–{fmt(n['max_ms'])} ms "
                f"over {n['samples']:.0f} runs (spread {n['spread']:.2f}×)."
            )
    return lines


def shared_method(results: Results) -> str:
    cfg = results.config
    return "\n".join(
        [
            "- `journalstore shared`: an `ImageStore(path, shared=True)` (library defaults otherwise, fsync "
            "`always`/`never`) in `<root>/overlay-images` with `<root>/storage.lock`, i.e. where "
            "containers/storage keeps its image store. Each commit appends its journal record, then "
            "rewrites images.json whole (temporary file, fsync, rename, directory fsync when fsync is on) "
            "from the per-record encoding cache and writes new last-writer bytes into images.lock. Every "
            "measured write is checked: the new name (or image) is in the images.json on disk and the "
            "last-writer bytes changed.",
            "- The store of N images is built untimed (batch() of "
            f"{cfg.batch:,} creates, unshared) and then opened shared; its first write re-encodes every "
            "record (the encoding cache starts empty) and is reported apart (`first write after open`), "
            "not in the figures.",
            "- `seed`: the port of containers/storage's persistence (see below), its store of N images laid "
            "down as images.json; each write re-encodes every record and replaces images.json, which is "
            "what Go pays.",
            "- `raw images.json write`: the same bytes as the shared store's images.json at that size, "
            "written to a temporary file (os.fsync with fsync on), renamed over images.json, directory "
            "fsynced with fsync on: the publication's file-system steps with no encoding and no journal.",
            f"- Writes per measurement: journalstore and raw at most {cfg.ops:,} and at most "
            f"{cfg.shared_work:,} images re-published per measurement (at least {cfg.shared_min_ops}); "
            f"seed by its budget ({cfg.seed_work:,} images, at least {cfg.seed_min_ops}); `(n=…)` gives the "
            "count. The three alternate repetition by repetition (os.sync() before each), as elsewhere.",
            "- This phase runs after every other workload of a run, on stores of its own; the unshared "
            "figures are not affected by it.",
        ]
    )


def shared_section(results: Results, standalone: bool) -> str | None:
    """The shared-mode section of RESULTS.md, between markers (`standalone`: with its run header)."""
    st = shared_table(results)
    if st is None:
        return None
    parts = [SHARED_BEGIN, "## Shared mode: a write that publishes images.json"]
    if standalone:
        parts.append(
            "Generated by `python -m benchmarks --shared` (**shared-mode run**, a run of its own: it "
            "replaces only this section and the shared rows of the targets table).\n\n" + "\n".join(run_header(results))
        )
        parts.append(targets_table(shared_targets(results)))
    parts += [st, shared_method(results), SHARED_END]
    return "\n\n".join(parts)


def results_markdown(results: Results, png_name: str | None) -> str:
    """The whole RESULTS.md."""
    meta = results.meta
    mode = results.config.mode
    if mode == "shared":
        section = shared_section(results, standalone=True) or ""
        return "# journalstore benchmark results\n\n" + section + "\n"
    head = [
        "# journalstore benchmark results",
        "",
        f"Generated by `python -m benchmarks{'' if mode == 'full' else ' --' + mode}` "
        f"(**{mode} run**) — do not edit by hand; re-run the harness to regenerate.",
        "",
        *run_header(results),
    ]
    raw = [m for m in results.measurements if m.workload == "raw-write" and m.fsync == "on"]
    if raw:
        samples = [v for m in raw for v in m.values]
        head.append(
            f"- Disk noise: one {meta.get('create_record_bytes', '?')}-byte write + fdatasync took "
            f"{fmt(min(samples))}–{fmt(max(samples))} µs "
            f"on average over the {len(samples)} raw-write repetitions of the run "
            f"(spread {max(samples) / min(samples):.2f}×); fsync-on figures carry that noise."
        )
    parts = ["\n".join(head), "## Targets", targets_table(targets(results))]
    if floor := big_data_floor(results):
        parts.append(floor)
    if png_name:
        parts.append(f"![per-operation cost against store size]({png_name})")
    parts += ["## Figures", markdown(results, shared=False).rstrip()]
    if section := shared_section(results, standalone=False):
        parts.append(section)
    parts += ["## Method", method_notes(results)]
    return "\n\n".join(parts) + "\n"


def merge_shared(existing: str, results: Results) -> str:
    """RESULTS.md with a shared-mode run's section and target rows put in (replacing older ones).

    Everything else in the file (the full run's tables, targets, plot and method) stays as it was.
    """
    section = shared_section(results, standalone=True)
    if section is None:
        return existing
    begin, end = existing.find(SHARED_BEGIN), existing.find(SHARED_END)
    if begin >= 0 and end > begin:
        text = existing[:begin] + section + existing[end + len(SHARED_END) :]
    elif (at := existing.find("\n## Method")) >= 0:
        text = existing[: at + 1] + section + "\n\n" + existing[at + 1 :]
    else:
        text = existing.rstrip("\n") + "\n\n" + section + "\n"
    # The rows of the shared targets in the file's main targets table, marked as from this run.
    found = shared_targets(results)
    names = {t.name for t in found}
    lines = text.split("\n")
    try:
        start = lines.index("| target | goal | status | measured |")
    except ValueError:
        return text
    stop = start + 2
    while stop < len(lines) and lines[stop].startswith("| "):
        stop += 1
    kept = [ln for ln in lines[start + 2 : stop] if ln.split(" | ")[0].removeprefix("| ") not in names]
    when = results.meta.get("started", "?")
    rows = targets_table(
        Target(t.name, t.goal, t.status, f"(shared-mode run of {when}, section below) {t.detail}") for t in found
    ).split("\n")[2:]
    return "\n".join(lines[: start + 2] + kept + rows + lines[stop:])


def write_all(results: Results, out: Path, results_md: Path | None) -> dict[str, Path]:
    """Write results.json, results.md and results.png into `out`; RESULTS.md (+ PNG) if asked."""
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    write_json(results, out / "results.json")
    written["json"] = out / "results.json"
    png = out / "results.png"
    has_png = plot(results, png)
    if has_png:
        written["png"] = png
    (out / "results.md").write_text(results_markdown(results, "results.png" if has_png else None))
    written["md"] = out / "results.md"
    if results_md is not None:
        png_name = None
        if has_png and results.config.mode != "shared":  # its plot has none of the plotted workloads
            png_name = "results.png"
            shutil.copyfile(png, results_md.parent / png_name)
            written["results_png"] = results_md.parent / png_name
        if results.config.mode == "shared" and results_md.exists():
            results_md.write_text(merge_shared(results_md.read_text(), results))
        else:
            # A section measured by another script (benchmarks/audit_scale.py) is kept as it is.
            kept = ""
            if results_md.exists():
                previous = results_md.read_text()
                if AUDIT_MARKER in previous:
                    kept = "\n" + AUDIT_MARKER + previous.split(AUDIT_MARKER, 1)[1]
            results_md.write_text(results_markdown(results, png_name) + kept)
        written["results_md"] = results_md
    return written
