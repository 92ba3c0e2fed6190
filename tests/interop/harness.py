"""Running the real containers/storage (Debian's 1.43) next to journalstore, for the interop tests.

Three ways to reach the Go side:
- `cs(root, runroot, *args)`: the `containers-storage` command (one GetStore per call, like podman);
- `gojs(binary, root, runroot, *args)`: our `jsgo` program (tests/interop/go/jsgo), which drives the
  library's API directly (AddNames, RemoveNames, flags, dumps of every field);
- `GoWatcher`: `jsgo watch`, a long-lived client (like CRI-O) that asks its one store for the
  images every 50 ms and prints a JSON line when they change.
Every subprocess is bounded by a timeout; nothing here touches /var/lib/containers.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
JSGO_DIR = HERE / "go" / "jsgo"
GOCODE = Path("/usr/share/gocode")
CS_SOURCE = GOCODE / "src" / "github.com" / "containers" / "storage"
# The Debian bookworm packages the interop tests need (`make interop-deps` installs them).
PACKAGES = (
    "containers-storage",
    "golang-go",
    "golang-github-containers-storage-dev",
    "golang-github-ulikunitz-xz-dev",
    "podman",
)
TIMEOUT = 60.0  # seconds, for any one Go command
DRIVER = "vfs"


class GoFailed(AssertionError):
    """A Go command exited non-zero (its stderr is in the message)."""


def missing_tools() -> str | None:
    """Why the interop tests cannot run here, or None when everything is installed."""
    hint = "install it with `make interop-deps` (as root)"
    if shutil.which("containers-storage") is None:
        return f"the containers-storage command is missing (Debian package containers-storage); {hint}"
    if shutil.which("go") is None:
        return f"the go compiler is missing (Debian package golang-go); {hint}"
    if not (CS_SOURCE / "store.go").is_file():
        return f"{CS_SOURCE} is missing (Debian package golang-github-containers-storage-dev); {hint}"
    return None


def _run(argv: list[str], *, stdin: bytes | None = None, check: bool = True, timeout: float = TIMEOUT) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)
    out = proc.stdout.decode("utf-8", "replace")
    if check and proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise GoFailed(f"{' '.join(argv)} exited {proc.returncode}: {err}")
    return out


def cs(root: Path, runroot: Path, *args: str, stdin: bytes | None = None, check: bool = True) -> str:
    """Run `containers-storage -g root -R runroot -s vfs ARGS...` and return its stdout."""
    argv = ["containers-storage", "-g", str(root), "-R", str(runroot), "-s", DRIVER, *args]
    return _run(argv, stdin=stdin, check=check)


def gojs(binary: Path, root: Path, runroot: Path, *args: str, check: bool = True, timeout: float = TIMEOUT) -> str:
    """Run `jsgo --root root --runroot runroot ARGS...` and return its stdout."""
    return _run([str(binary), "--root", str(root), "--runroot", str(runroot), *args], check=check, timeout=timeout)


def go_env(gopath: Path, cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(GO111MODULE="off", GOPATH=f"{gopath}{os.pathsep}{GOCODE}", GOCACHE=str(cache), GOFLAGS="")
    return env


def source_key() -> str:
    """A hash of jsgo's source and of the library it builds against: a change of either rebuilds."""
    h = hashlib.sha256()
    for path in sorted(JSGO_DIR.glob("*.go")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    with contextlib.suppress(OSError):
        h.update(str((CS_SOURCE / "store.go").stat().st_mtime_ns).encode())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "journalstore-interop"


def build_jsgo(cache: Path) -> Path:
    """Build jsgo into cache/jsgo-<key> once (GOPATH mode against /usr/share/gocode); raise GoFailed."""
    binary = cache / f"jsgo-{source_key()}"
    if binary.is_file():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    gopath = cache / f"gopath-{os.getpid()}"
    package = gopath / "src" / "jsgo"
    shutil.rmtree(gopath, ignore_errors=True)
    shutil.copytree(JSGO_DIR, package)
    tmp = cache / f".jsgo-{os.getpid()}"
    try:
        proc = subprocess.run(
            ["go", "build", "-o", str(tmp), "."],
            cwd=package,
            env=go_env(gopath, cache / "gocache"),
            capture_output=True,
            timeout=600,
            check=False,
        )
        if proc.returncode != 0:
            raise GoFailed(proc.stderr.decode("utf-8", "replace").strip() or f"go build exited {proc.returncode}")
        os.replace(tmp, binary)  # atomic: a concurrent session sees no half-written binary
    finally:
        shutil.rmtree(gopath, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return binary


@dataclass
class GoStore:
    """A containers/storage root with the vfs driver: Go's image store is `images_dir`."""

    root: Path
    runroot: Path
    jsgo: Path

    @property
    def images_dir(self) -> Path:
        return self.root / f"{DRIVER}-images"

    @property
    def lock_path(self) -> Path:
        return self.images_dir / "images.lock"

    def cs(self, *args: str, stdin: bytes | None = None, check: bool = True) -> str:
        return cs(self.root, self.runroot, *args, stdin=stdin, check=check)

    def gojs(self, *args: str, check: bool = True, timeout: float = TIMEOUT) -> str:
        return gojs(self.jsgo, self.root, self.runroot, *args, check=check, timeout=timeout)

    def create_image(self, *names: str, big_data: Mapping[str, bytes] | None = None, metadata: str = "") -> str:
        """Create an image with the containers-storage CLI (and its big data); return its ID."""
        args = ["create-image"]
        for name in names:
            args += ["-n", name]
        if metadata:
            args += ["-m", metadata]
        image_id = self.cs(*args).split()[0]
        for key, data in (big_data or {}).items():
            self.cs("set-image-data", image_id, key, stdin=data)
        return image_id

    def get_names(self, ref: str) -> list[str]:
        """A fresh process's view of an image's names."""
        return self.cs("get-names", ref).splitlines()

    def dump(self) -> dict[str, dict[str, Any]]:
        """Every image as the library reports it (`jsgo dump`), by ID, big data decoded to bytes."""
        images = json.loads(self.gojs("dump"))["images"]
        for image in images:
            image["big_data"] = {k: base64.b64decode(v) for k, v in image["big_data"].items()}
        return {image["id"]: image for image in images}

    def last_writer(self) -> bytes:
        """The 64 "last writer" bytes at the start of images.lock (b"" before Go's first save)."""
        with open(self.lock_path, "rb") as f:
            return f.read(64)

    def watcher(self, interval: str = "50ms") -> GoWatcher:
        return GoWatcher(self.jsgo, self.root, self.runroot, interval=interval)


def parse_last_writer(raw: bytes) -> tuple[int, int, int, bytes]:
    """(nanoseconds, counter, pid, random) of Go's last-writer ID (pkg/lockfile newLastWriterID)."""
    assert len(raw) == 64, f"a last-writer ID has 64 bytes, not {len(raw)}"
    return (
        int.from_bytes(raw[0:8], "little"),
        int.from_bytes(raw[8:16], "little"),
        int.from_bytes(raw[16:20], "little"),
        raw[20:],
    )


@dataclass
class GoWatcher:
    """`jsgo watch`: a long-lived Go client; `wait_for` blocks until one of its lines matches."""

    binary: Path
    root: Path
    runroot: Path
    interval: str = "50ms"
    lines: list[dict[str, Any]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _proc: subprocess.Popen[bytes] | None = None
    _stderr: list[bytes] = field(default_factory=list)

    def start(self, timeout: float = 30.0) -> GoWatcher:
        """Start the watcher and wait for its first line (the images as it first sees them)."""
        argv = [str(self.binary), "--root", str(self.root), "--runroot", str(self.runroot)]
        argv += ["watch", "--interval", self.interval, "--max", "10m"]
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.wait_for(lambda line: True, timeout)
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            line = json.loads(raw)
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:  # EOF: wake waiters so they notice the exit
            self._cond.notify_all()

    def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        self._stderr.extend(self._proc.stderr)

    @property
    def latest(self) -> dict[str, Any]:
        with self._cond:
            assert self.lines, "the watcher printed nothing yet"
            return self.lines[-1]

    def names(self, image_id: str, line: Mapping[str, Any] | None = None) -> list[str] | None:
        """The names of an image in a line (the latest by default); None if it is not there."""
        for image in (line or self.latest).get("images", []):
            if image["id"] == image_id:
                return list(image["names"])
        return None

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The first line (already seen or new) that satisfies predicate; AssertionError after timeout."""
        deadline = time.monotonic() + timeout
        checked = 0
        with self._cond:
            while True:
                for line in self.lines[checked:]:
                    if "error" not in line and predicate(line):
                        return line
                checked = len(self.lines)
                remaining = deadline - time.monotonic()
                assert self._proc is not None
                if self._proc.poll() is not None and checked == len(self.lines):
                    err = b"".join(self._stderr).decode("utf-8", "replace")
                    raise AssertionError(f"jsgo watch exited {self._proc.returncode}: {err}")
                if remaining <= 0:
                    last = self.lines[-1] if self.lines else None
                    raise AssertionError(f"jsgo watch printed no matching line within {timeout} s; last: {last}")
                self._cond.wait(min(remaining, 0.2))

    def stop(self) -> None:
        """Stop the watcher in bounded time (SIGTERM, then SIGKILL)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> GoWatcher:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def journalstore_cli(root: Path, *args: str, check: bool = True) -> str:
    """Run the journalstore command (this interpreter's `python -m journalstore`) on a store."""
    return _run([sys.executable, "-m", "journalstore", "--root", str(root), *args], check=check)


def journalstore_import(images_dir: Path) -> str:
    """Convert a containers/storage images directory into a journalstore store, in place."""
    return journalstore_cli(images_dir, "import", str(images_dir))


@contextlib.contextmanager
def running(argv: list[str], timeout: float) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess that is waited for (and killed after timeout) when the block ends."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
