"""`journalstore demo`: a guided walk through the store, on a throwaway directory.

The story spans one simulated hour and runs in a few seconds: podman pulls a few hundred
realistic images (registry names, OCI manifests and configs as big data, layers), loads a batch,
buildah builds one, tags move, images are renamed and deleted, a second process picks up a
change, the journal is compacted, one image's audit history is shown, the store is rebuilt as it
was ten simulated minutes earlier, and a table says how long each operation took.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any, TextIO

from ..errors import StoreError
from ..stats import store_stats
from ..store import FsyncMode, ImageStore
from .audit_commands import describe
from .framework import Progress, detail_lines, summary_lines

FULL_IMAGES = 300
QUICK_IMAGES = 60
STORY_MINUTES = 60
LOOK_BACK = timedelta(minutes=10)

# Repositories and the version each one's tags start from (the patch number counts up).
REPOSITORIES: tuple[tuple[str, str], ...] = (
    ("docker.io/library/nginx", "1.25."),
    ("docker.io/library/redis", "7.2."),
    ("docker.io/library/postgres", "16."),
    ("docker.io/library/alpine", "3.19."),
    ("docker.io/library/python", "3.12."),
    ("docker.io/library/node", "20.11."),
    ("docker.io/library/golang", "1.22."),
    ("docker.io/library/httpd", "2.4."),
    ("docker.io/library/mariadb", "11.2."),
    ("docker.io/library/rabbitmq", "3.13."),
    ("docker.io/library/traefik", "v2.11."),
    ("docker.io/library/busybox", "1.36."),
    ("quay.io/prometheus/prometheus", "v2.50."),
    ("quay.io/prometheus/node-exporter", "v1.7."),
    ("quay.io/prometheus/alertmanager", "v0.27."),
    ("quay.io/coreos/etcd", "v3.5."),
    ("quay.io/jetstack/cert-manager-controller", "v1.14."),
    ("quay.io/argoproj/argocd", "v2.10."),
    ("ghcr.io/fluxcd/source-controller", "v1.2."),
    ("ghcr.io/fluxcd/kustomize-controller", "v1.2."),
    ("registry.k8s.io/kube-apiserver", "v1.29."),
    ("registry.k8s.io/kube-proxy", "v1.29."),
    ("registry.k8s.io/coredns/coredns", "v1.11."),
    ("registry.access.redhat.com/ubi9/ubi", "9.3-"),
)

BUILD_STEPS = (
    "#(nop) ADD file:{h} in / ",
    '#(nop)  CMD ["/bin/sh"]',
    "apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*",
    "set -eux; groupadd --system --gid 101 app; useradd --system --gid app --uid 101 app",
    "#(nop)  ENV APP_VERSION={tag}",
    "#(nop) COPY dir:{h} in /usr/local/bin ",
    "#(nop)  EXPOSE 8080/tcp",
    '#(nop)  ENTRYPOINT ["/docker-entrypoint.sh"]',
    "#(nop)  STOPSIGNAL SIGQUIT",
    "make install PREFIX=/usr/local && strip /usr/local/bin/*",
)


# ============================================================================ realistic images


@dataclass(frozen=True)
class PulledImage:
    """What a registry serves for one tag: the ID, digest, top layer and big data podman stores."""

    repo: str
    tag: str
    id: str
    digest: str
    top_layer: str
    big_data: tuple[tuple[str, bytes], ...]

    @property
    def name(self) -> str:
        return f"{self.repo}:{self.tag}"


def _hex(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def make_image(rng: random.Random, repo: str, tag: str, created: datetime) -> PulledImage:
    """An OCI config and manifest as a registry would serve them, stored the way podman stores them.

    The image ID is the config's digest, the big data holds the manifest (under `manifest` and
    `manifest-<digest>`) and the config (under its digest), as containers/image writes them.
    """
    layers = rng.randint(2, 8)
    diff_ids = [f"sha256:{_hex(rng)}" for _ in range(layers)]
    stamp = created.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    steps = [rng.choice(BUILD_STEPS).format(h=_hex(rng), tag=tag) for _ in range(layers + rng.randint(1, 5))]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": stamp,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", f"APP_VERSION={tag}"],
            "Cmd": ["/docker-entrypoint.sh"],
            "WorkingDir": "/",
            "Labels": {
                "org.opencontainers.image.source": f"https://{repo}",
                "org.opencontainers.image.version": tag,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": stamp, "created_by": f"/bin/sh -c {step}"} for step in steps],
    }
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": f"sha256:{_hex(rng)}",
                "size": rng.randint(100_000, 80_000_000),
            }
            for _ in diff_ids
        ],
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    manifest_bytes = json.dumps(manifest, indent=3).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    return PulledImage(
        repo=repo,
        tag=tag,
        id=config_digest.removeprefix("sha256:"),
        digest=manifest_digest,
        top_layer=_hex(rng),
        big_data=(
            (f"manifest-{manifest_digest}", manifest_bytes),
            ("manifest", manifest_bytes),
            (config_digest, config_bytes),
        ),
    )


# ============================================================================ measuring


@dataclass
class Timing:
    """How long one kind of operation took, in total, over `count` operations."""

    operation: str
    count: int = 0
    seconds: float = 0.0

    @property
    def per_op(self) -> float:
        return self.seconds / self.count if self.count else 0.0


@dataclass
class Timings:
    """The table the demo ends with: operations in the order first measured."""

    rows: dict[str, Timing] = field(default_factory=dict)

    def add(self, operation: str, seconds: float, count: int = 1) -> None:
        row = self.rows.setdefault(operation, Timing(operation))
        row.count += count
        row.seconds += seconds

    @contextlib.contextmanager
    def measure(self, operation: str, count: int = 1) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.add(operation, time.perf_counter() - started, count)

    def table(self) -> list[str]:
        width = max([len("operation")] + [len(row.operation) for row in self.rows.values()])
        lines = [f"{'operation':<{width}}  {'count':>6}  {'total':>9}  {'per op':>9}"]
        for row in self.rows.values():
            lines.append(f"{row.operation:<{width}}  {row.count:>6}  {row.seconds:>7.3f} s  {_duration(row.per_op):>9}")
        return lines

    def documents(self) -> list[dict[str, Any]]:
        return [
            {"operation": r.operation, "count": r.count, "seconds": round(r.seconds, 6), "per_op": r.per_op}
            for r in self.rows.values()
        ]


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.001:
        return f"{seconds * 1000:.2f} ms"
    return f"{seconds * 1_000_000:.1f} µs"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} bytes"


# ============================================================================ the second process


def watch(root: str, ref: str, conn: Connection) -> None:
    """Run in a second process: open the store read-only, report, wait for a change, refresh, report."""
    try:
        with ImageStore(root, read_only=True) as store:
            conn.send(("ready", os.getpid(), list(store.get(ref).names), tuple(store.position)))
            if not conn.poll(30):
                return
            conn.recv()
            started = time.perf_counter()
            changed = store.refresh()
            seconds = time.perf_counter() - started
            conn.send(("seen", changed, list(store.get(ref).names), tuple(store.position), seconds))
    except Exception as exc:  # reported to the parent, which says so and goes on
        conn.send(("failed", f"{exc.__class__.__name__}: {exc}"))
    finally:
        conn.close()


# ============================================================================ the walk


class Demo:
    """One run of the walk: the store, the simulated clock, the output and the timings."""

    def __init__(self, root: str, *, images: int, fsync: FsyncMode, out: TextIO) -> None:
        self.root = root
        self.count = images
        self.fsync = fsync
        self.out = out
        self.timings = Timings()
        self.rng = random.Random(20240229)
        self.start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=STORY_MINUTES)
        self.now = self.start
        self.checkpoints: list[tuple[datetime, int]] = []  # (simulated time, last record) after each step
        self.pulled: dict[str, list[PulledImage]] = {}
        self.deleted: list[str] = []
        self.step = 0
        # One store instance per program that writes, as on a real host (each records its actor).
        self.podman = ImageStore(root, fsync=fsync, actor="podman")
        self.buildah = ImageStore(root, fsync=fsync, actor="buildah")
        self.admin = ImageStore(root, fsync=fsync, actor="admin")

    # ------------------------------------------------------------------ output

    def say(self, text: str = "") -> None:
        self.out.write(f"  {text}\n" if text else "\n")
        self.out.flush()

    def section(self, title: str) -> None:
        self.step += 1
        self.out.write(f"\n==> {self.step}. {title}\n")
        self.out.flush()

    def clock(self, at: datetime | None = None) -> str:
        """A simulated time as minutes into the story: 00:42."""
        minutes = int(((at or self.now) - self.start).total_seconds() // 60)
        return f"{minutes // 60:02d}:{minutes % 60:02d}"

    def advance_to(self, minute: float) -> None:
        self.now = max(self.now, self.start + timedelta(minutes=minute))

    def checkpoint(self, store: ImageStore) -> None:
        self.checkpoints.append((self.now, store.seq))

    # ------------------------------------------------------------------ the steps

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        single = self.count * 4 // 5
        self.intro()
        self.pull(single, end_minute=35)
        self.load(self.count - single, minute=37)
        app = self.build(minute=42)
        self.look()
        self.retag(app, minute=52)
        self.remove(minute=55)
        self.second_process(app, minute=57)
        self.compact(minute=58)
        self.advance_to(STORY_MINUTES)
        audit = self.history(app)
        self.past()
        self.section(f"How long it took (fsync {'on' if self.fsync == 'always' else 'off'})")
        for line in self.timings.table():
            self.say(line)
        stats = store_stats(self.admin)
        total = time.perf_counter() - started
        self.say()
        self.say(
            f"{stats['images']} images, {stats['records']} records, {_size(stats['journal_bytes'])} of journal in "
            f"{stats['segments']} segments; the whole walk took {total:.1f} s."
        )
        return {
            "root": self.root,
            "images": stats["images"],
            "records": stats["records"],
            "segments": stats["segments"],
            "audit_api": audit,
            "seconds": round(total, 3),
            "timings": self.timings.documents(),
        }

    def close(self) -> None:
        for store in (self.podman, self.buildah, self.admin):
            store.close()

    def intro(self) -> None:
        self.out.write("journalstore demo: the containers/storage image store, kept as an append-only journal\n")
        self.say(f"store: {self.root}")
        self.say("Every change is one checksummed record appended to journal/; images.json is a snapshot")
        self.say("in the format podman reads. The story below spans one simulated hour (times are hh:mm).")

    def _pull_one(self, index: int) -> PulledImage:
        repo, prefix = REPOSITORIES[index % len(REPOSITORIES)]
        versions = self.pulled.setdefault(repo, [])
        image = make_image(self.rng, repo, f"{prefix}{len(versions) + 1}", self.now)
        versions.append(image)
        return image

    def pull(self, count: int, *, end_minute: float) -> None:
        self.section(f"podman pulls {count} images, one at a time (00:00-00:{end_minute:02.0f})")
        self.say("Each pull creates the image with its manifest and config as big data, atomically, in one")
        self.say("record (fsynced before the call returns), then moves the repository's :latest tag to it.")
        step = timedelta(minutes=end_minute) / count
        store = self.podman
        started = time.perf_counter()
        with Progress("pulling", count) as progress:
            for index in range(count):
                self.now += step
                image = self._pull_one(index)
                with self.timings.measure("create an image (its own record)"):
                    self._create_pulled(store, image)
                self.checkpoint(store)
                with self.timings.measure("move a tag (add-names)"):
                    store.add_names(image.id, [f"{image.repo}:latest"])
                self.checkpoint(store)
                progress.advance()
        seconds = time.perf_counter() - started
        stats = store_stats(store)
        self.say(
            f"pulled {count} images in {seconds:.2f} s; the journal holds {stats['records']} records "
            f"({_size(stats['journal_bytes'])}), the big data {_size(stats['big_data_bytes'])}"
        )

    def _create_pulled(self, store: ImageStore, image: PulledImage) -> None:
        """Create a pulled image (its manifest and config as big data) at the demo's clock."""
        store.create(
            id=image.id,
            names=[image.name],
            layer=image.top_layer,
            digest=image.digest,
            created=self.now,
            big_data=image.big_data,
        )

    def load(self, count: int, *, minute: float) -> None:
        self.advance_to(minute)
        self.section(f"podman load: {count} images from an archive, in one batch ({self.clock()})")
        self.say("One lock hold, one record, one fsync for all of them: all or nothing.")
        store = self.podman
        images = [self._pull_one(self.count + index) for index in range(count)]
        started = time.perf_counter()
        with store.batch():
            for image in images:
                self._create_pulled(store, image)
        seconds = time.perf_counter() - started
        self.timings.add("create an image (in a batch)", seconds, count)
        self.checkpoint(store)
        self.say(f"loaded {count} images in {seconds:.3f} s, as record #{store.seq}")

    def build(self, *, minute: float) -> str:
        self.advance_to(minute)
        self.section(f"buildah builds localhost/myapp:dev ({self.clock()}) and records its metadata")
        store = self.buildah
        built = make_image(self.rng, "localhost/myapp", "dev", self.now)
        image = store.create(
            id=built.id, names=[built.name], layer=built.top_layer, created=self.now, big_data=built.big_data[1:]
        )
        self.checkpoint(store)
        self.advance_to(minute + 2)
        with self.timings.measure("set metadata"):
            store.set_metadata(image.id, json.dumps({"build": "ci-4711", "commit": "9fceb02"}))
        self.checkpoint(store)
        self.say(f"built {image.id[:12]}: {', '.join(store.get(image.id).names)}, metadata {store.metadata(image.id)}")
        return image.id

    def look(self) -> None:
        self.advance_to(45)
        self.section(f"Looking around ({self.clock()}): the same output as the containers-storage tool")
        store = self.admin
        images = store.images()
        self.say(f"$ journalstore images    # first 2 of {len(images)}")
        for image in images[:2]:
            for line in summary_lines(image):
                self.say(line.replace("\t", "    "))
        self.say("$ journalstore image docker.io/library/nginx:latest")
        for line in detail_lines(store.get("docker.io/library/nginx:latest")):
            self.say(line)
        names = [name for image in images for name in image.names]
        digests = [digest for image in images for digest in image.digests]
        ids = [image.id for image in images]
        with self.timings.measure("get an image by name", len(names)):
            for name in names:
                store.get(name)
        with self.timings.measure("get an image by ID prefix (12 chars)", len(ids)):
            for image_id in ids:
                store.get(image_id[:12])
        with self.timings.measure("find images by digest", len(digests)):
            for digest in digests:
                store.by_digest(digest)
        with self.timings.measure("list all images", 1):
            store.images()
        self.say(f"looked up {len(names)} names, {len(ids)} ID prefixes and {len(digests)} digests: see the table")

    def retag(self, app: str, *, minute: float) -> None:
        self.advance_to(minute)
        self.section(f"Tags move and images are renamed ({self.clock()})")
        podman, admin = self.podman, self.admin
        old = podman.get("docker.io/library/nginx:latest")
        newer = self._pull_one(0)
        self._create_pulled(podman, newer)
        self.checkpoint(podman)
        podman.add_names(newer.id, ["docker.io/library/nginx:latest"])
        self.checkpoint(podman)
        self.say(f"podman pulls {newer.name}: docker.io/library/nginx:latest moves {old.id[:12]} -> {newer.id[:12]}")
        self.say(f"  the old image keeps its names {list(podman.get(old.id).names)}")
        self.say(f"  and its names history remembers the tag: {list(podman.get(old.id).names_history)}")
        self.now += timedelta(minutes=1)
        with self.timings.measure("rename an image (set-names)"):
            admin.set_names(app, ["registry.example.com/team/myapp:1.0"])
        self.checkpoint(admin)
        self.say("admin renames localhost/myapp:dev -> registry.example.com/team/myapp:1.0")
        latest = "docker.io/library/redis:latest"
        holder = admin.get(latest)
        with self.timings.measure("untag (remove-names)"):
            admin.remove_names(holder.id, [latest])
        self.checkpoint(admin)
        left = admin.get(holder.id)
        self.say(f"admin untags {latest}; the image {left.id[:12]} stays, named {list(left.names)}")

    def remove(self, *, minute: float) -> None:
        self.advance_to(minute)
        victims = [
            versions[1]
            for versions in self.pulled.values()
            if len(versions) > 2 and versions[1].repo != "docker.io/library/nginx"
        ][: max(3, self.count // 60)]
        self.section(f"podman rmi: {len(victims)} old images are deleted ({self.clock()})")
        store = self.podman
        for victim in victims:
            with self.timings.measure("delete an image"):
                store.delete(victim.id)
            self.deleted.append(victim.id)
            self.checkpoint(store)
        for line in textwrap.wrap("deleted " + ", ".join(v.name for v in victims), 96, subsequent_indent="  "):
            self.say(line)
        self.say("each delete is one record; the image's directory and big data go with it")

    def second_process(self, app: str, *, minute: float) -> None:
        self.advance_to(minute)
        self.section(f"A second process picks up a change ({self.clock()})")
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(target=watch, args=(self.root, app, child), daemon=True)
        process.start()
        child.close()
        try:
            if not parent.poll(60):
                self.say("(the second process did not start in time; skipping this step)")
                return
            message = parent.recv()
            if message[0] != "ready":
                self.say(f"(the second process failed: {message[1]})")
                return
            _, pid, names, position = message
            self.say(f"process {pid} opens the store read-only and sees {names}")
            with self.timings.measure("add a name"):
                self.admin.add_names(app, ["registry.example.com/team/myapp:prod"])
            self.checkpoint(self.admin)
            self.say(
                f"this process (pid {os.getpid()}) adds registry.example.com/team/myapp:prod: record #{self.admin.seq}"
            )
            parent.send("go")
            if not parent.poll(60):
                self.say("(the second process did not answer in time)")
                return
            reply = parent.recv()
            if reply[0] != "seen":
                self.say(f"(the second process failed: {reply[1]})")
                return
            _, changed, names, after, seconds = reply
            self.timings.add("second process: refresh() to see a change", seconds)
            read = after[1] - position[1] if after[0] == position[0] else None
            span = f"{read} bytes" if read is not None else "the new records"
            self.say(
                f"process {pid} calls refresh(): {'it read only ' + span if changed else 'nothing new'} "
                f"(position {position[0]}:{position[1]} -> {after[0]}:{after[1]}) in {_duration(seconds)}, "
                "took no lock,"
            )
            self.say(f"and now sees {names}")
        finally:
            parent.close()
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join()

    def compact(self, *, minute: float) -> None:
        self.advance_to(minute)
        self.section(f"Compaction ({self.clock()})")
        before = store_stats(self.admin)
        started = time.perf_counter()
        with ImageStore(self.root, read_only=True) as cold:
            seconds = time.perf_counter() - started
            self.timings.add(f"open the store: replay {before['records']} records", seconds)
        self.say(
            f"before: {_plural(before['segments'], 'segment')}, {before['records']} records, "
            f"{_size(before['journal_bytes'])} of journal; opening the store replays them all in {_duration(seconds)}"
        )
        with self.timings.measure(f"compact ({before['images']} images)"):
            self.admin.compact()
        self.checkpoint(self.admin)
        after = store_stats(self.admin)
        started = time.perf_counter()
        with ImageStore(self.root, read_only=True) as cold:
            seconds = time.perf_counter() - started
            count = len(cold)
        self.timings.add("open the store: load the snapshot", seconds)
        snapshot = after["last_snapshot"] or {"bytes": 0}
        self.say(
            f"after: images.json ({_size(snapshot['bytes'])}, {count} images) and a new, empty segment "
            f"{after['position']['segment']}; opening takes {_duration(seconds)}"
        )
        with open(os.path.join(self.root, "images.json"), encoding="utf-8") as f:
            head = f.read(64)
        self.say("images.json is in the format containers/storage reads and writes:")
        self.say(f"  {head}...")
        self.say("the older segment stays, so the audit history still reaches back to the first pull")

    def history(self, app: str) -> bool:
        self.section("The audit history of registry.example.com/team/myapp:1.0")
        store = self.admin
        started = time.perf_counter()
        events = list(store.history(app))
        self.timings.add("history of one image", time.perf_counter() - started)
        for event in events:
            who = event.actor.name or f"uid {event.actor.uid}"
            self.say(f"#{event.seq:<5} {event.time:%H:%M:%S.%f} {who:<8} {event.kind:<14} {describe(event)[:70]}")
        return True

    def past(self) -> None:
        target = self.now - LOOK_BACK
        earlier = [seq for when, seq in self.checkpoints if when <= target]
        seq = earlier[-1] if earlier else 0
        self.section(f"The store as it was ten simulated minutes ago ({self.clock(target)}, record #{seq})")
        store = self.admin
        started = time.perf_counter()
        view = store.at(seq)
        self.timings.add(f"rebuild the store as of record #{seq}", time.perf_counter() - started)
        then = view.images()
        now = store.images()
        self.say(f"then: {len(then)} images; now: {len(now)}")
        for name in ("docker.io/library/nginx:latest",):
            was, is_ = view.get(name), store.get(name)
            self.say(f"{name} was {was.id[:12]} then, and is {is_.id[:12]} now")
        existed = sum(1 for image_id in self.deleted if view.exists(image_id))
        self.say(f"{existed} of the {len(self.deleted)} images deleted since were still there")
        app = [image for image in then if "localhost/myapp:dev" in image.names]
        if app:
            self.say(f"the app image was named {list(app[0].names)}, now {list(store.get(app[0].id).names)}")


def run(
    *,
    root: str | None = None,
    quick: bool = False,
    images: int | None = None,
    keep: bool = False,
    fsync: FsyncMode = "always",
    out: TextIO,
) -> dict[str, Any]:
    """Run the walk in `root` (new or empty) or a temporary directory; returns a summary."""
    count = images if images is not None else (QUICK_IMAGES if quick else FULL_IMAGES)
    temporary = root is None
    if root is None:
        root = tempfile.mkdtemp(prefix="journalstore-demo-")
    elif os.path.exists(root) and (not os.path.isdir(root) or os.listdir(root)):
        raise StoreError(f"the demo needs a new or empty directory, and {root} is not empty")
    demo = Demo(root, images=count, fsync=fsync, out=out)
    try:
        summary = demo.run()
    finally:
        demo.close()
        if temporary and not keep:
            shutil.rmtree(root, ignore_errors=True)
    if temporary and not keep:
        out.write("\nThe temporary store was removed; run 'journalstore demo --keep' to look at it afterwards.\n")
        summary["root"] = None
    else:
        out.write(f"\nThe store is in {root}; try: journalstore --root {root} images\n")
    return summary


__all__ = ["Demo", "PulledImage", "Timings", "make_image", "run", "watch"]
