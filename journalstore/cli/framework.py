"""The command-line framework: the command table, the session a handler works with, output
helpers and the progress bar. Commands live in the sibling modules; `journalstore.cli` builds
the parser from the table and runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from ..record import Image
from ..store import FsyncMode, ImageStore

PROG = "journalstore"
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # what a shell reports for a program killed by SIGPIPE

Access = Literal["read", "write", "none"]
Handler = Callable[["Session", argparse.Namespace], int]
Configure = Callable[[argparse.ArgumentParser], None]

EXIT_HELP = "exit status: 0 success, 1 a store error (unknown image, duplicate name, ...), 2 a usage error"
ENVIRONMENT_HELP = f"""\
environment:
  JOURNALSTORE_ROOT       the store used when --root is not given
  XDG_DATA_HOME           else the store is $XDG_DATA_HOME/journalstore (or ~/.local/share/journalstore)
  JOURNALSTORE_FSYNC      'never' skips fsync (throwaway stores and tests only: a crash may lose changes)

{EXIT_HELP}"""



# ============================================================================ the command table


@dataclass(frozen=True)
class Command:
    """One subcommand: what it is called, what it does, how it opens the store, and its handler."""

    name: str
    summary: str
    example: str
    access: Access
    group: str
    handler: Handler
    configure: Configure | None = None
    aliases: tuple[str, ...] = ()
    description: str = ""


COMMANDS: dict[str, Command] = {}
GROUPS = {
    "image": "image commands (as in containers-storage)",
    "journal": "journal commands",
    "audit": "audit commands (the journal as an audit log)",
}


def command(
    name: str,
    *,
    summary: str,
    example: str,
    access: Access,
    group: str = "image",
    args: Configure | None = None,
    aliases: tuple[str, ...] = (),
    description: str = "",
) -> Callable[[Handler], Handler]:
    """Register a handler as a subcommand (the whole cost of adding one to the tool)."""

    def register(handler: Handler) -> Handler:
        if name in COMMANDS:
            raise ValueError(f"command {name!r} registered twice")
        COMMANDS[name] = Command(name, summary, example, access, group, handler, args, aliases, description)
        return handler

    return register


def default_root(environ: os._Environ[str] | dict[str, str] | None = None) -> str:
    """$JOURNALSTORE_ROOT, else $XDG_DATA_HOME/journalstore, else ~/.local/share/journalstore."""
    env = os.environ if environ is None else environ
    root = env.get("JOURNALSTORE_ROOT")
    if root:
        return root
    data_home = env.get("XDG_DATA_HOME")
    if data_home:
        return os.path.join(data_home, "journalstore")
    return os.path.join(os.path.expanduser("~"), ".local", "share", "journalstore")


def fsync_mode(environ: os._Environ[str] | dict[str, str] | None = None) -> FsyncMode:
    """The fsync mode the tool opens stores with: 'always' unless JOURNALSTORE_FSYNC=never."""
    env = os.environ if environ is None else environ
    return "never" if env.get("JOURNALSTORE_FSYNC", "").strip().lower() == "never" else "always"


# ============================================================================ progress


class Progress:
    """A one-line progress bar (or spinner, without a total) on stderr, drawn only on a terminal.

    Output to a pipe or a file stays clean. Nothing is drawn for work shorter than `delay`
    seconds; a ticker thread keeps a spinner moving while a blocking call runs.
    """

    WIDTH = 28

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        delay: float = 0.3,
        interval: float = 0.1,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = sys.stderr if stream is None else stream
        self.enabled = isatty(self.stream) if enabled is None else enabled
        self.delay = delay
        self.interval = interval
        self.drawn = False
        self._start = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> Progress:
        self._start = time.monotonic()
        if self.enabled:
            self._ticker = threading.Thread(target=self._tick, name="journalstore-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            if self.drawn:
                self.stream.write("\r\x1b[K")
                self.stream.flush()

    def advance(self, n: int = 1) -> None:
        """Count `n` more units of work done; redraws at most every `interval` seconds."""
        self.done += n
        self._maybe_draw(force=False)

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self._maybe_draw(force=True)

    def _maybe_draw(self, *, force: bool) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._start < self.delay or (not force and now - self._last < self.interval):
            return
        with self._lock:
            if self._stop.is_set():
                return
            self._last = now
            self.stream.write("\r" + self.render(now - self._start) + "\x1b[K")
            self.stream.flush()
            self.drawn = True

    def render(self, elapsed: float) -> str:
        """The line to draw after `elapsed` seconds."""
        if self.total:
            fraction = min(1.0, self.done / self.total)
            filled = int(fraction * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            return f"{self.label} [{bar}] {self.done}/{self.total} {elapsed:.1f}s"
        spinner = "|/-\\"[int(elapsed / self.interval) % 4]
        count = f" {self.done}" if self.done else ""
        return f"{self.label} {spinner}{count} {elapsed:.1f}s"


def isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# ============================================================================ a session


class Session:
    """What a handler works with: the parsed options, the store (opened on first use), output."""

    def __init__(self, args: argparse.Namespace, cmd: Command) -> None:
        self.args = args
        self.command = cmd
        self.json: bool = bool(args.json)
        self.debug: bool = bool(args.debug)
        self.read_only_requested: bool = bool(args.read_only)
        self.root = os.path.abspath(os.path.expanduser(args.root or default_root()))
        self.fsync = fsync_mode()
        self._store: ImageStore | None = None

    @property
    def out(self) -> TextIO:
        return sys.stdout

    @property
    def store(self) -> ImageStore:
        """The store at --root: read-only for read commands, so reading never converts or creates."""
        if self._store is None:
            write = self.command.access == "write"
            self._store = self.open(self.root, write=write)
        return self._store

    def open(self, root: str, *, write: bool, accept_images_json: bool = False) -> ImageStore:
        """Open a store with the global options; the session closes it at the end."""
        started = time.perf_counter()
        shared = {"on": True, "off": False}.get(getattr(self.args, "shared", None) or "auto")
        store = ImageStore(
            root,
            read_only=self.read_only_requested or not write,
            fsync=self.fsync,
            actor=self.args.actor or "",
            shared=shared,
            accept_images_json=accept_images_json,
        )
        if self._store is None:
            self._store = store
        self.trace(f"opened {store!r} in {(time.perf_counter() - started) * 1000:.1f} ms (fsync={self.fsync})")
        return store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def line(self, text: str = "") -> None:
        """One line of plain output on stdout."""
        self.out.write(text + "\n")

    def lines(self, texts: Sequence[str]) -> None:
        """Several lines of plain output on stdout."""
        for text in texts:
            self.line(text)

    def list_images(self, images: Sequence[Image], *, quiet: bool) -> None:
        """An image listing as `images` prints it (--json: a list of image documents)."""
        if self.json:
            self.emit([image_document(image) for image in images])
            return
        for image in images:
            self.lines(summary_lines(image, quiet=quiet))

    def emit(self, document: Any) -> None:
        """The command's one JSON document on stdout (compact, one line, like Go's encoder)."""
        self.out.write(json.dumps(document, ensure_ascii=False) + "\n")

    def error(self, message: str) -> None:
        """One `journalstore: error: ...` line on stderr."""
        sys.stdout.flush()
        sys.stderr.write(f"{PROG}: error: {message}\n")
        sys.stderr.flush()

    def trace(self, message: str) -> None:
        """A --debug line on stderr."""
        if self.debug:
            sys.stderr.write(f"{PROG}: debug: {message}\n")

    def progress(self, label: str, total: int | None = None) -> Progress:
        return Progress(label, total)


# ============================================================================ output helpers


# images.json keys in Go's struct order, with the derived `digests` after `digest`.
IMAGE_KEYS: tuple[tuple[str, Any], ...] = (
    ("id", ""),
    ("digest", ""),
    ("digests", []),
    ("names", []),
    ("names-history", []),
    ("layer", ""),
    ("mapped-layers", []),
    ("metadata", ""),
    ("big-data-names", []),
    ("big-data-sizes", {}),
    ("big-data-digests", {}),
    ("created", ""),
    ("flags", {}),
)


def image_document(image: Image) -> dict[str, Any]:
    """An image as --json prints it: its images.json form, every key always present, plus `digests`."""
    stored = image.to_json()
    stored["digests"] = list(image.digests)
    return {key: stored.get(key, type(empty)()) for key, empty in IMAGE_KEYS}


def summary_lines(image: Image, *, quiet: bool = False) -> list[str]:
    """`images` / `images-by-digest` plain form: the ID, then indented names, digests, data keys."""
    lines = [image.id]
    if not quiet:
        lines += [f"\tname: {name}" for name in image.names]
        lines += [f"\tdigest: {digest}" for digest in image.digests]
        lines += [f"\tdata: {key}" for key in image.big_data_names]
    return lines


def detail_lines(image: Image, *, show_read_only: bool = False) -> list[str]:
    """`image` plain form: containers-storage's lines first, then what only journalstore keeps."""
    lines = [f"ID: {image.id}"]
    lines += [f"Name: {name}" for name in image.names]
    lines.append(f"Top Layer: {image.top_layer}")
    lines += [f"Top Layer: {layer}" for layer in image.mapped_top_layers]
    lines += [f"Digest: {digest}" for digest in image.digests]
    lines += [f"Data: {key}" for key in image.big_data_names]
    lines.append("Size unknown: layer sizes are not part of the image store")
    if image.read_only and show_read_only:
        lines.append("Read Only: true")
    lines.append(f"Created: {image.created_text}")
    lines += [f"Name History: {name}" for name in image.names_history]
    lines += [f"Flag: {key}={json.dumps(_plain(value), ensure_ascii=False)}" for key, value in image.flags.items()]
    return lines


def _plain(value: Any) -> Any:
    """A frozen flag value (tuples, read-only mappings) as plain JSON types."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    return value


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_text_file(path: str, what: str) -> str:
    data = read_file(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path} is not UTF-8 text") from None


def plural(n: int, noun: str) -> str:
    """'1 image', '2 images'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def format_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ============================================================================ argument helpers


def ref_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="REF", help="image ID, name, or unique ID prefix")


def refs_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("refs", metavar="REF", nargs="+", help="image ID, name, or unique ID prefix")


def quiet_option(p: argparse.ArgumentParser, what: str = "only print IDs") -> None:
    p.add_argument("-q", "--quiet", action="store_true", help=what)


def names_option(p: argparse.ArgumentParser, *, required: bool, what: str) -> None:
    p.add_argument(
        "-n",
        "--name",
        dest="names",
        metavar="NAME",
        action="append",
        required=required,
        help=f"{what} (repeat for several)",
    )


