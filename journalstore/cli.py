"""The `journalstore` command: containers-storage's image commands, plus the journal's own.

Every command is one entry of `COMMANDS`, made by the `@command` decorator: its name, summary,
example, arguments, handler and how it opens the store. Adding a command (log, replay, verify,
repair) is one decorated function. Exit codes: 0 success, 1 a store error (one line on stderr),
2 a usage error. `--debug` adds the Python traceback to an error.

Environment: JOURNALSTORE_ROOT (default store), JOURNALSTORE_FSYNC=never (no fsync: for
throwaway stores and tests only; a crash may then lose acknowledged changes).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import re
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn, TextIO

from . import __version__
from .errors import StoreError, StoreIsReadOnly, StoreNotFound
from .journal import parse_segment_name
from .record import Image
from .snapshot import IMAGES_JSON
from .store import JOURNAL_DIR, FsyncMode, ImageStore
from .validation import check_digest

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
        self.enabled = _isatty(self.stream) if enabled is None else enabled
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


def _isatty(stream: TextIO) -> bool:
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

    def open(self, root: str, *, write: bool) -> ImageStore:
        """Open a store with the global options; the session closes it at the end."""
        started = time.perf_counter()
        store = ImageStore(
            root,
            read_only=self.read_only_requested or not write,
            fsync=self.fsync,
            actor=self.args.actor or "",
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


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _read_text_file(path: str, what: str) -> str:
    data = _read_file(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path} is not UTF-8 text") from None


def _count(n: int, noun: str) -> str:
    """'1 image', '2 images'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _format_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ============================================================================ argument helpers


def _ref(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="REF", help="image ID, name, or unique ID prefix")


def _refs(p: argparse.ArgumentParser) -> None:
    p.add_argument("refs", metavar="REF", nargs="+", help="image ID, name, or unique ID prefix")


def _quiet(p: argparse.ArgumentParser, what: str = "only print IDs") -> None:
    p.add_argument("-q", "--quiet", action="store_true", help=what)


def _names_option(p: argparse.ArgumentParser, *, required: bool, what: str) -> None:
    p.add_argument(
        "-n",
        "--name",
        dest="names",
        metavar="NAME",
        action="append",
        required=required,
        help=f"{what} (repeat for several)",
    )


# ============================================================================ image commands


def _create_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--id", metavar="ID", default=None, help="image ID (default: a random one)")
    _names_option(p, required=False, what="image name")
    p.add_argument("-d", "--digest", metavar="DIGEST", default="", help="image digest (algorithm:hex)")
    meta = p.add_mutually_exclusive_group()
    meta.add_argument("-m", "--metadata", metavar="METADATA", default=None, help="metadata text")
    meta.add_argument("-f", "--metadata-file", metavar="FILE", default=None, help="read the metadata from FILE")
    p.add_argument("layer", metavar="LAYER", nargs="?", default="", help="top layer ID (free-form)")


@command(
    "create-image",
    aliases=("createimage",),
    access="write",
    args=_create_args,
    summary="Create a new image",
    example='journalstore create-image -n quay.io/podman/hello:latest -m \'{"source": "pull"}\' L1',
    description="Prints the new image's ID, then its names, one per line, indented.",
)
def cmd_create_image(s: Session, a: argparse.Namespace) -> int:
    metadata = a.metadata or ""
    if a.metadata_file is not None:
        metadata = _read_text_file(a.metadata_file, "metadata file")
    image = s.store.create(id=a.id, names=a.names or (), layer=a.layer, digest=a.digest, metadata=metadata)
    if s.json:
        s.emit(image_document(image))
    else:
        s.line(image.id)
        for name in image.names:
            s.line(f"\t{name}")
    return EXIT_OK


@command(
    "images",
    access="read",
    args=_quiet,
    summary="List images",
    example="journalstore images -q",
    description="Prints each image's ID, then its names, digests and data keys, indented.",
)
def cmd_images(s: Session, a: argparse.Namespace) -> int:
    images = s.store.images()
    if s.json:
        s.emit([image_document(image) for image in images])
        return EXIT_OK
    for image in images:
        s.lines(summary_lines(image, quiet=a.quiet))
    return EXIT_OK


def _by_digest_args(p: argparse.ArgumentParser) -> None:
    _quiet(p)
    p.add_argument("digest", metavar="DIGEST", help="a digest, algorithm:hex")


@command(
    "images-by-digest",
    access="read",
    args=_by_digest_args,
    summary="List images by digest",
    example="journalstore images-by-digest sha256:0123...cdef",
    description="Images whose digest, or the digest of one of their manifests, is DIGEST; same output as images.",
)
def cmd_images_by_digest(s: Session, a: argparse.Namespace) -> int:
    digest = check_digest(a.digest)
    images = s.store.by_digest(digest)
    if s.json:
        s.emit([image_document(image) for image in images])
        return EXIT_OK
    for image in images:
        s.lines(summary_lines(image, quiet=a.quiet))
    return EXIT_OK


@command(
    "image",
    access="read",
    args=_refs,
    summary="Examine an image",
    example="journalstore image quay.io/podman/hello:latest",
    description="Prints ID, Name, Top Layer, Digest and Data lines (as containers-storage does), then Created, "
    "Name History and Flag lines. An unknown REF is reported on stderr and makes the exit status 1.",
)
def cmd_image(s: Session, a: argparse.Namespace) -> int:
    found: list[Image] = []
    missing: list[str] = []
    for ref in a.refs:
        try:
            found.append(s.store.get(ref))
        except KeyError as exc:
            missing.append(str(exc))
    if s.json:
        s.emit([image_document(image) for image in found])
    else:
        for image in found:
            s.lines(detail_lines(image, show_read_only=s.read_only_requested))
    for message in missing:
        s.error(message)
    return EXIT_ERROR if missing else EXIT_OK


def _exists_args(p: argparse.ArgumentParser) -> None:
    _quiet(p, "print nothing; only set the exit status")
    _refs(p)


@command(
    "exists",
    access="read",
    args=_exists_args,
    summary="Check if an image exists",
    example="journalstore exists -q quay.io/podman/hello:latest && echo present",
    description="Prints 'REF: true' or 'REF: false' for each REF; exit status 1 if any is missing "
    "(not an error: nothing is printed on stderr).",
)
def cmd_exists(s: Session, a: argparse.Namespace) -> int:
    result = {ref: s.store.exists(ref) for ref in a.refs}
    if s.json:
        s.emit(result)
    elif not a.quiet:
        for ref, present in result.items():
            s.line(f"{ref}: {'true' if present else 'false'}")
    return EXIT_OK if all(result.values()) else EXIT_ERROR


def _delete_args(p: argparse.ArgumentParser) -> None:
    _refs(p)


@command(
    "delete-image",
    aliases=("deleteimage",),
    access="write",
    args=_delete_args,
    summary="Delete images",
    example="journalstore delete-image quay.io/podman/hello:latest",
    description="Deletes each REF (its record and its data directory). Prints nothing on success; each "
    "failure is one line on stderr, and makes the exit status 1. --json prints {REF: {id, error}}.",
)
def cmd_delete_image(s: Session, a: argparse.Namespace) -> int:
    result: dict[str, dict[str, str]] = {}
    failed = False
    for ref in a.refs:
        try:
            image = s.store.get(ref)
            s.store.delete(image.id)
            result[ref] = {"id": image.id, "error": ""}
        except StoreError as exc:
            if isinstance(exc, StoreIsReadOnly):
                raise
            failed = True
            result[ref] = {"id": "", "error": str(exc)}
            s.error(str(exc))
    if s.json:
        s.emit(result)
    return EXIT_ERROR if failed else EXIT_OK


def _emit_names(s: Session, ref: str) -> None:
    if s.json:
        s.emit(list(s.store.get(ref).names))


@command(
    "get-names",
    aliases=("getnames",),
    access="read",
    args=_ref,
    summary="Get an image's names",
    example="journalstore get-names 3a57aedd",
    description="Prints the image's names, one per line.",
)
def cmd_get_names(s: Session, a: argparse.Namespace) -> int:
    names = s.store.get(a.ref).names
    if s.json:
        s.emit(list(names))
    else:
        for name in names:
            s.line(name)
    return EXIT_OK


def _add_names_args(p: argparse.ArgumentParser) -> None:
    _names_option(p, required=True, what="name to add")
    _ref(p)


@command(
    "add-names",
    aliases=("addnames",),
    access="write",
    args=_add_names_args,
    summary="Add names to an image",
    example="journalstore add-names -n quay.io/podman/hello:v1 -n hello:latest 3a57aedd",
    description="New names go first; a name another image holds moves to this one. "
    "Prints nothing (--json: the image's names).",
)
def cmd_add_names(s: Session, a: argparse.Namespace) -> int:
    image = s.store.get(a.ref)
    s.store.add_names(image.id, a.names)
    _emit_names(s, image.id)
    return EXIT_OK


def _remove_names_args(p: argparse.ArgumentParser) -> None:
    _names_option(p, required=True, what="name to remove")
    _ref(p)


@command(
    "remove-names",
    aliases=("removenames",),
    access="write",
    args=_remove_names_args,
    summary="Remove names from an image",
    example="journalstore remove-names -n hello:latest 3a57aedd",
    description="Prints nothing (--json: the image's names).",
)
def cmd_remove_names(s: Session, a: argparse.Namespace) -> int:
    image = s.store.get(a.ref)
    s.store.remove_names(image.id, a.names)
    _emit_names(s, image.id)
    return EXIT_OK


def _set_names_args(p: argparse.ArgumentParser) -> None:
    _names_option(p, required=False, what="new name; none at all removes every name")
    _ref(p)


@command(
    "set-names",
    aliases=("setnames",),
    access="write",
    args=_set_names_args,
    summary="Set an image's names",
    example="journalstore set-names -n registry.example/team/app:1.0 3a57aedd",
    description="The given names replace the old ones; a name another image holds moves to this one. "
    "Prints nothing (--json: the image's names).",
)
def cmd_set_names(s: Session, a: argparse.Namespace) -> int:
    image = s.store.get(a.ref)
    s.store.set_names(image.id, a.names or ())
    _emit_names(s, image.id)
    return EXIT_OK


def _metadata_args(p: argparse.ArgumentParser) -> None:
    _quiet(p, "print only the metadata, without 'REF: '")
    _refs(p)


@command(
    "metadata",
    access="read",
    args=_metadata_args,
    summary="Retrieve an image's metadata",
    example="journalstore metadata -q 3a57aedd",
    description="Prints 'REF: METADATA' (a trailing newline of the metadata trimmed). --json prints {REF: METADATA}.",
)
def cmd_metadata(s: Session, a: argparse.Namespace) -> int:
    found: dict[str, str] = {}
    missing: list[str] = []
    for ref in a.refs:
        try:
            found[ref] = s.store.metadata(ref).removesuffix("\n")
        except KeyError as exc:
            missing.append(str(exc))
    if s.json:
        s.emit(found)
    else:
        for ref, text in found.items():
            s.line(text if a.quiet else f"{ref}: {text}")
    for message in missing:
        s.error(message)
    return EXIT_ERROR if missing else EXIT_OK


def _set_metadata_args(p: argparse.ArgumentParser) -> None:
    meta = p.add_mutually_exclusive_group(required=True)
    meta.add_argument("-m", "--metadata", metavar="TEXT", default=None, help="the new metadata")
    meta.add_argument("-f", "--metadata-file", metavar="FILE", default=None, help="read the new metadata from FILE")
    _ref(p)


@command(
    "set-metadata",
    aliases=("setmetadata",),
    access="write",
    args=_set_metadata_args,
    summary="Set an image's metadata",
    example='journalstore set-metadata -m \'{"note": "pinned"}\' 3a57aedd',
    description="Prints nothing (--json: the image).",
)
def cmd_set_metadata(s: Session, a: argparse.Namespace) -> int:
    text = a.metadata if a.metadata is not None else _read_text_file(a.metadata_file, "metadata file")
    image = s.store.get(a.ref)
    s.store.set_metadata(image.id, text)
    if s.json:
        s.emit(image_document(s.store.get(image.id)))
    return EXIT_OK


@command(
    "list-image-data",
    aliases=("listimagedata",),
    access="read",
    args=_ref,
    summary="List the data items attached to an image",
    example="journalstore list-image-data 3a57aedd",
    description="Prints the keys of the image's big-data items, one per line, in the order they were set.",
)
def cmd_list_image_data(s: Session, a: argparse.Namespace) -> int:
    keys = s.store.big_data_names(a.ref)
    if s.json:
        s.emit(keys)
    else:
        for key in keys:
            s.line(key)
    return EXIT_OK


def _key_args(p: argparse.ArgumentParser) -> None:
    _ref(p)
    p.add_argument("key", metavar="KEY", help="big-data key, such as manifest")


def _get_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", metavar="FILE", default=None, help="write the data to FILE instead of stdout")
    _key_args(p)


@command(
    "get-image-data",
    aliases=("getimagedata",),
    access="read",
    args=_get_data_args,
    summary="Get data that is attached to an image",
    example="journalstore get-image-data -f manifest.json 3a57aedd manifest",
    description="Writes the item's bytes, unchanged, to stdout or FILE. --json prints "
    "{id, key, size, digest, file, data_base64} instead (data_base64 is null when -f is given).",
)
def cmd_get_image_data(s: Session, a: argparse.Namespace) -> int:
    image = s.store.get(a.ref)
    data = s.store.big_data(image.id, a.key)
    if a.file is not None:
        with open(a.file, "wb") as f:
            f.write(data)
    if s.json:
        import base64

        s.emit(
            {
                "id": image.id,
                "key": a.key,
                "size": len(data),
                "digest": image.big_data_digests.get(a.key, ""),
                "file": a.file,
                "data_base64": None if a.file is not None else base64.b64encode(data).decode("ascii"),
            }
        )
    elif a.file is None:
        s.out.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return EXIT_OK


def _set_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", metavar="FILE", default=None, help="read the data from FILE (default: stdin)")
    _key_args(p)


@command(
    "set-image-data",
    aliases=("setimagedata",),
    access="write",
    args=_set_data_args,
    summary="Set data that is attached to an image",
    example="journalstore set-image-data -f manifest.json 3a57aedd manifest",
    description="Stores FILE's bytes (or stdin's) under KEY, atomically. A key starting with 'manifest' adds "
    "the data's sha256 digest to the image's digests. Prints nothing (--json: {id, key, size, digest}).",
)
def cmd_set_image_data(s: Session, a: argparse.Namespace) -> int:
    image = s.store.get(a.ref)
    if a.file is not None:
        data = _read_file(a.file)
    else:
        if _isatty(sys.stdin):
            sys.stderr.write(f"{PROG}: reading the data from standard input (end it with Ctrl-D)\n")
        data = sys.stdin.buffer.read()
    s.store.set_big_data(image.id, a.key, data)
    if s.json:
        after = s.store.get(image.id)
        s.emit({"id": image.id, "key": a.key, "size": len(data), "digest": after.big_data_digests.get(a.key, "")})
    return EXIT_OK


@command(
    "get-image-data-size",
    aliases=("getimagedatasize",),
    access="read",
    args=_key_args,
    summary="Get the size of data that is attached to an image",
    example="journalstore get-image-data-size 3a57aedd manifest",
    description="Prints the size in bytes (--json: {id, key, size}).",
)
def cmd_get_image_data_size(s: Session, a: argparse.Namespace) -> int:
    image = s.store.get(a.ref)
    size = s.store.big_data_size(image.id, a.key)
    if s.json:
        s.emit({"id": image.id, "key": a.key, "size": size})
    else:
        s.line(str(size))
    return EXIT_OK


@command(
    "get-image-data-digest",
    aliases=("getimagedatadigest",),
    access="read",
    args=_key_args,
    summary="Get the digest of data that is attached to an image",
    example="journalstore get-image-data-digest 3a57aedd manifest",
    description="Prints the digest (--json: {id, key, digest}).",
)
def cmd_get_image_data_digest(s: Session, a: argparse.Namespace) -> int:
    image = s.store.get(a.ref)
    digest = check_digest(s.store.big_data_digest(image.id, a.key), f"recorded digest of {a.key!r}")
    if s.json:
        s.emit({"id": image.id, "key": a.key, "digest": digest})
    else:
        s.line(digest)
    return EXIT_OK


@command(
    "wipe",
    access="write",
    summary="Delete every image",
    example="journalstore wipe",
    description="One journal record deletes them all. Prints nothing (--json: {deleted: [IDs]}).",
)
def cmd_wipe(s: Session, a: argparse.Namespace) -> int:
    ids = [image.id for image in s.store.images()]
    s.store.wipe()
    if s.json:
        s.emit({"deleted": ids})
    return EXIT_OK


@command(
    "gc",
    access="write",
    summary="Remove image directories no image owns",
    example="journalstore gc",
    description="Removes sub-directories named by a 64-hex ID that no image has (left by a crash). "
    "Prints the names of the directories removed, one per line (--json: {removed: [...]}).",
)
def cmd_gc(s: Session, a: argparse.Namespace) -> int:
    removed = s.store.garbage_collect()
    if s.json:
        s.emit({"removed": removed})
    else:
        for name in removed:
            s.line(name)
    return EXIT_OK


# ============================================================================ journal commands


def _journal_segments(root: str) -> list[tuple[str, int]]:
    """(file name, size) of each journal segment, oldest first."""
    directory = os.path.join(root, JOURNAL_DIR)
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found: list[tuple[int, str, int]] = []
    for name in names:
        number = parse_segment_name(name)
        if number is None:
            continue
        with contextlib.suppress(FileNotFoundError):
            found.append((number, name, os.stat(os.path.join(directory, name)).st_size))
    return [(name, size) for _, name, size in sorted(found)]


def store_stats(store: ImageStore) -> dict[str, Any]:
    """Counts and sizes of a store: from its public API, its journal files and images.json."""
    images = store.images()
    digests = {d for image in images for d in image.digests}
    segments = _journal_segments(store.path)
    snapshot: dict[str, Any] | None = None
    with contextlib.suppress(FileNotFoundError):
        st = os.stat(os.path.join(store.path, IMAGES_JSON))
        snapshot = {"file": IMAGES_JSON, "bytes": st.st_size, "modified": _format_time(st.st_mtime)}
    position = store.position
    return {
        "root": store.path,
        "images": len(images),
        "names": sum(len(image.names) for image in images),
        "digests": len(digests),
        "big_data_items": sum(len(image.big_data_names) for image in images),
        "big_data_bytes": sum(sum(image.big_data_sizes.values()) for image in images),
        "segments": len(segments),
        "records": store.seq,
        "journal_bytes": sum(size for _, size in segments),
        "last_snapshot": snapshot,
        "position": {"segment": position.segment, "offset": position.offset},
    }


def _stats_lines(s: Session, stats: dict[str, Any]) -> None:
    s.line(f"Root: {stats['root']}")
    s.line(f"Images: {stats['images']}")
    s.line(f"Names: {stats['names']}")
    s.line(f"Digests: {stats['digests']}")
    s.line(f"Big data: {_count(stats['big_data_items'], 'item')}, {stats['big_data_bytes']} bytes")
    s.line(f"Segments: {stats['segments']}")
    s.line(f"Records: {stats['records']}")
    s.line(f"Journal bytes: {stats['journal_bytes']}")
    snapshot = stats["last_snapshot"]
    if snapshot is None:
        s.line("Last snapshot: none")
    else:
        s.line(f"Last snapshot: {snapshot['file']}, {snapshot['bytes']} bytes, {snapshot['modified']}")
    position = stats["position"]
    s.line(f"Position: segment {position['segment']}, offset {position['offset']}")


@command(
    "stats",
    group="journal",
    access="read",
    summary="Show counts and sizes of the store and its journal",
    example="journalstore --json stats",
    description="Images, names, digests, big data, journal segments and their bytes, records (the last "
    "sequence number), the last snapshot (images.json) and the journal position read up to.",
)
def cmd_stats(s: Session, a: argparse.Namespace) -> int:
    stats = store_stats(s.store)
    if s.json:
        s.emit(stats)
    else:
        _stats_lines(s, stats)
    return EXIT_OK


@command(
    "compact",
    group="journal",
    access="write",
    summary="Write the images.json snapshot now and start a new journal segment",
    example="journalstore compact",
    description="Older segments are kept for the audit history. Prints one line saying what was written "
    "(--json: {images, snapshot_bytes, segment, seconds}).",
)
def cmd_compact(s: Session, a: argparse.Namespace) -> int:
    store = s.store
    started = time.perf_counter()
    with s.progress("compacting"):
        store.compact()
    seconds = time.perf_counter() - started
    size = os.stat(os.path.join(store.path, IMAGES_JSON)).st_size
    segment = store.position.segment
    if s.json:
        s.emit({"images": len(store), "snapshot_bytes": size, "segment": segment, "seconds": round(seconds, 6)})
    else:
        s.line(
            f"compacted {store.path}: {_count(len(store), 'image')} in {IMAGES_JSON} ({size} bytes), "
            f"journal now at segment {segment} ({seconds:.3f} s)"
        )
    return EXIT_OK


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "dir", metavar="DIR", nargs="?", default=None, help="the containers/storage images directory (default: --root)"
    )


@command(
    "import",
    group="journal",
    access="none",
    args=_import_args,
    summary="Turn a containers/storage images directory into a journalstore store, in place",
    example="journalstore import /var/lib/containers/storage/overlay-images",
    description="DIR (default: --root) must hold a containers/storage images.json and no journal yet. The "
    "images stay where they are: DIR gains a journal whose history starts with an import record, and "
    "images.json keeps the format containers/storage reads. Prints how many images were imported "
    "(--json: {root, source, images, records}). Read-only commands never convert a directory.",
)
def cmd_import(s: Session, a: argparse.Namespace) -> int:
    directory = os.path.abspath(os.path.expanduser(a.dir)) if a.dir else s.root
    source = os.path.join(directory, IMAGES_JSON)
    if s.read_only_requested:
        raise StoreIsReadOnly(f"import converts {directory} in place: it cannot run with --read-only")
    if not os.path.isdir(directory):
        raise StoreNotFound(f"no directory {directory}")
    if _journal_segments(directory):
        raise StoreError(f"{directory} is already a journalstore store: nothing to import")
    if not os.path.exists(source):
        raise StoreNotFound(f"{directory} holds no {IMAGES_JSON} to import")
    with s.progress(f"importing {source}"):
        store = s.open(directory, write=True)
    if store.read_only or not _journal_segments(directory):
        raise StoreIsReadOnly(f"cannot import {directory}: it is not writable by this user")
    count = len(store)
    if s.json:
        s.emit({"root": directory, "source": source, "images": count, "records": store.seq})
    else:
        s.line(f"imported {_count(count, 'image')} from {source}")
        s.line(f"{directory} is now a journalstore store; its history starts with the import (record {store.seq})")
    return EXIT_OK


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a smaller store, for tests (a few seconds)")
    p.add_argument("--images", type=int, default=None, metavar="N", help="how many images to pull (default 300)")
    p.add_argument("--keep", action="store_true", help="keep the temporary store instead of removing it")


@command(
    "demo",
    group="journal",
    access="none",
    args=_demo_args,
    summary="A guided walk through journalstore on a throwaway store",
    example="journalstore demo --quick",
    description="Builds a store of realistic images in a temporary directory (or in --root, which must be "
    "empty or new), renames, re-tags and deletes some, shows a second process picking up a change, "
    "compacts, shows one image's history and the store as it was ten simulated minutes earlier, and "
    "ends with a table of timings. --json prints the narrative on stderr and a summary on stdout.",
)
def cmd_demo(s: Session, a: argparse.Namespace) -> int:
    from . import demo

    if a.images is not None and a.images < 20:
        raise ValueError(f"--images must be at least 20, not {a.images}")
    root = os.path.abspath(os.path.expanduser(a.root)) if a.root else None
    summary = demo.run(
        root=root,
        quick=a.quick,
        images=a.images,
        keep=a.keep,
        fsync=s.fsync,
        out=sys.stderr if s.json else sys.stdout,
    )
    if s.json:
        s.emit(summary)
    return EXIT_OK


# ============================================================================ the parser


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The global options, accepted before the command and (as Go's -j/--json is) after it."""
    group = parser.add_argument_group("global options")

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    group.add_argument(
        "--root",
        metavar="DIR",
        default=default(None),
        help="the store directory (default: $JOURNALSTORE_ROOT, else $XDG_DATA_HOME/journalstore, "
        "else ~/.local/share/journalstore)",
    )
    group.add_argument(
        "--read-only", action="store_true", default=default(False), help="never write, lock or repair anything"
    )
    group.add_argument("--actor", metavar="NAME", default=default(""), help="who makes the changes (in the journal)")
    group.add_argument(
        "-j", "--json", action="store_true", default=default(False), help="machine-readable output: one JSON document"
    )
    group.add_argument(
        "-D", "--debug", action="store_true", default=default(False), help="show tracebacks and debugging lines"
    )


def _command_list() -> str:
    lines: list[str] = []
    for group, title in GROUPS.items():
        lines.append(f"{title}:")
        for cmd in COMMANDS.values():
            if cmd.group == group:
                lines.append(f"  {cmd.name:<24}{cmd.summary}")
        lines.append("")
    return "\n".join(lines) + "\n"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps our hand-made epilogs (examples, command lists) as written."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a short 'unknown command' message instead of the list of every choice."""

    def error(self, message: str) -> NoReturn:
        match = re.match(r"argument COMMAND: invalid choice: '(.*?)' \(choose from", message)
        if match:
            close = difflib.get_close_matches(match.group(1), [*COMMANDS], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; see '{PROG} --help'"
            message = f"unknown command {match.group(1)!r}{hint}"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    """The parser for the whole tool, built from COMMANDS."""
    parser = _Parser(
        prog=PROG,
        usage=f"{PROG} [global options] COMMAND [options] [args]",
        description="journalstore: the containers/storage image store, kept as an append-only journal.",
        epilog=_command_list()
        + "example:\n  journalstore --root /tmp/store create-image -n quay.io/podman/hello:latest\n\n"
        + f"Run '{PROG} COMMAND --help' for a command's options and an example.\n\n"
        + ENVIRONMENT_HELP,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", prog=PROG, help=argparse.SUPPRESS)
    for cmd in COMMANDS.values():
        description = cmd.summary + "." + (f"\n\n{cmd.description}" if cmd.description else "")
        p = sub.add_parser(
            cmd.name,
            aliases=list(cmd.aliases),
            description=description,
            epilog=f"example:\n  {cmd.example}\n\n{EXIT_HELP}",
            formatter_class=_Formatter,
        )
        if cmd.configure is not None:
            cmd.configure(p)
        _global_options(p, top=False)
        p.set_defaults(_command=cmd.name)
    return parser


# ============================================================================ main


@contextlib.contextmanager
def _warnings_to_stderr(debug: bool) -> Iterator[None]:
    """Library warnings as `journalstore: warning: ...` lines (with their origin under --debug)."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        where = f" ({category.__name__} at {filename}:{lineno})" if debug else ""
        sys.stderr.write(f"{PROG}: warning: {message}{where}\n")

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def _describe_os_error(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc) or exc.__class__.__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tool; returns the exit status (0 success, 1 store error, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    name = getattr(args, "_command", None)
    if name is None:
        parser.print_usage(sys.stderr)
        sys.stderr.write(f"{PROG}: error: a command is required (see '{PROG} --help')\n")
        return EXIT_USAGE
    session = Session(args, COMMANDS[name])
    with _warnings_to_stderr(session.debug):
        try:
            code = session.command.handler(session, args)
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            _silence_stdout()
            return EXIT_BROKEN_PIPE
        except KeyboardInterrupt:
            sys.stderr.write(f"{PROG}: interrupted\n")
            return 130
        except (StoreError, ValueError, TypeError, OSError) as exc:
            if session.debug:
                traceback.print_exc()
            message = _describe_os_error(exc) if isinstance(exc, OSError) and not isinstance(exc, StoreError) else exc
            session.error(str(message))
            return EXIT_ERROR
        except Exception as exc:
            if session.debug:
                traceback.print_exc()
            session.error(
                f"internal error: {exc.__class__.__name__}: {exc} (run with --debug for the traceback, and report it)"
            )
            return EXIT_ERROR
        finally:
            session.close()


def _silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


__all__ = ["COMMANDS", "Command", "Progress", "build_parser", "command", "default_root", "main"]
