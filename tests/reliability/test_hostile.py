"""Hostile input: every public method and CLI command gets wrong types, empty and huge values,
NUL bytes, `/` and `..`, invalid digests, unicode oddities and ambiguous prefixes; then thousands
of random calls.

Each call is either accepted as SPEC allows or rejected with the documented exception (a
`TypeError` for a wrong type, a `ValueError` or a `StoreError` for a bad value or a failed
lookup). A rejected call changes neither the state nor any file of the store. Nothing is ever
written outside the store directory: the store works through `FenceDisk`, which refuses any
file operation that resolves outside it, and everything around the store is fingerprinted
before and after each call.
"""

from __future__ import annotations

import os
import reprlib
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journalstore import Image, ImageStore
from journalstore import events as ev
from journalstore import journal as jn
from journalstore.errors import (
    BigDataUnknown,
    DigestUnknown,
    DuplicateID,
    DuplicateName,
    ImageUnknown,
    InvalidBigDataName,
    InvalidDigest,
    InvalidFlagValue,
    InvalidID,
    InvalidName,
    RecordTooLarge,
    SizeUnknown,
    StoreError,
    StoreIsReadOnly,
)
from journalstore.fsio import Disk
from journalstore.journal import MAX_FRAME

from ..model import ImageModel, diff_snapshots, snapshot_of_store
from .conftest import STRESS, scale

SCRIPT = Path(sys.executable).parent / "journalstore"

ID_A = "a" * 64
ID_B = "ab" + "c" * 62  # "a" is a prefix of both: ambiguous; "ab" is B's alone
ID_C = "0123456789ab" + "f" * 52
T0 = 1_700_000_000_000_000_000

# ---------------------------------------------------------------------- the values

WEIRD_STRINGS = [
    "",
    "\0",
    "a\0b",
    "/",
    "a/b",
    "/etc/passwd",
    "../escape",
    "../../escape",
    "..",
    ".",
    "\ud800",
    "x\udfffy",
    "\u202eevil.exe",
    "zero\u200bwidth",
    "e\u0301",
    "\ufeffbom",
    "名前",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    " ",
    "\n",
    "\t\r",
    "images.json",
    "images.lock",
    "journal",
    "x" * 300,
    "é" * 200,
    "%s%n%x",
    "$(touch /tmp/pwned)",
    "C:\\windows",
    "~root",
    "a" * 100_000,
]
WRONG_TYPES: list[Any] = [None, 0, 1.5, True, b"bytes", bytearray(b"x"), ["list"], ("tuple",), {"k": "v"}, object()]
BAD_DIGESTS = [
    "sha256:xyz",
    "sha256:",
    "sha256",
    ":",
    "",
    "sha256:" + "A" * 64,
    "sha256:" + "a" * 63,
    "sha256:" + "a" * 65,
    "md5:" + "a" * 32,
    "sha1:" + "a" * 40,
    "SHA256:" + "a" * 64,
    " sha256:" + "a" * 64,
    "sha256:" + "a" * 64 + "\n",
    "sha256:" + "g" * 64,
    "sha256:" + "\u0663" * 64,  # Arabic-Indic digits: str.isdigit() says yes
    "sha256:" + "\uff41" * 64,  # fullwidth a
    "sha256:" + "a" * 64 + "\0",
    "sha256::" + "a" * 63,
    "sha512:" + "a" * 64,
    "sha256/" + "a" * 64,
    "sha256:" + " " * 64,
    "sha256:\ud800" + "a" * 63,
]
GOOD_DIGESTS = ["sha256:" + "a" * 64, "sha384:" + "b" * 96, "sha512:" + "c" * 128]


_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = 40
_REPR.maxother = 40


def short(value: Any, width: int = 40) -> str:
    """A short repr, safe for values nested too deep for repr()."""
    return _REPR.repr(value)[:width]


def nested(depth: int) -> Any:
    value: Any = None
    for _ in range(depth):
        value = [value]
    return value


BAD_FLAG_VALUES: list[Any] = [
    object(),
    {1: 2},
    float("nan"),
    float("inf"),
    -float("inf"),
    2**64,
    -(2**63) - 1,
    b"bytes",
    {"a": {1, 2}},
    {"a": b"x"},
    [float("nan")],
    {"\ud800": 1},
    "\ud800",
    {"k": object()},
    nested(1000),
    nested(100_000),
]
GOOD_FLAG_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2**63 - 1,
    2**64 - 1,
    -(2**63),
    1.5,
    "",
    "s",
    [],
    {},
    nested(50),
    {"a": [1, {"b": None}]},
    "\u202e",
    "\0",
]

# ---------------------------------------------------------------------- the fence


class FenceDisk(Disk):
    """Refuses every file operation that would touch anything outside `root` (symlinks resolved)."""

    def __init__(self, root: Path) -> None:
        self.root = os.path.realpath(root)

    def _inside(self, path: str) -> None:
        real = os.path.realpath(path)
        if real != self.root and not real.startswith(self.root + os.sep):
            raise AssertionError(f"the store touched {short(path)} ({real}), outside {self.root}")

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        self._inside(path)
        return super().open(path, flags, mode)

    def write_file(self, path: str, data: bytes, *, sync: bool, mode: int = 0o600) -> None:
        self._inside(path)
        super().write_file(path, data, sync=sync, mode=mode)

    def rename(self, src: str, dst: str) -> None:
        self._inside(src)
        self._inside(dst)
        super().rename(src, dst)

    def link(self, src: str, dst: str) -> None:
        self._inside(src)
        self._inside(dst)
        super().link(src, dst)

    def unlink(self, path: str) -> None:
        self._inside(path)
        super().unlink(path)

    def mkdir(self, path: str, mode: int = 0o700) -> None:
        self._inside(path)
        super().mkdir(path, mode)

    def makedirs(self, path: str, mode: int = 0o700) -> None:
        self._inside(path)
        super().makedirs(path, mode)

    def rmdir(self, path: str) -> None:
        self._inside(path)
        super().rmdir(path)

    def rmtree(self, path: str) -> None:
        self._inside(path)
        super().rmtree(path)


# ---------------------------------------------------------------------- the arena


def fingerprint(root: Path, skip: Path | None = None) -> dict[str, tuple[int, ...]]:
    """Every entry under root: type, mode, size, inode, mtime and a hash of the bytes."""
    out: dict[str, tuple[int, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if skip is not None and Path(dirpath) == skip.parent and skip.name in dirnames:
            dirnames.remove(skip.name)
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st_ = os.lstat(path)
            digest = 0
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    digest = xxhash.xxh3_64_intdigest(f.read())
            out[path] = (st_.st_mode, st_.st_size, st_.st_ino, st_.st_mtime_ns, digest)
    return out


def documented(exc: BaseException) -> bool:
    """TypeError for a wrong type; ValueError or a StoreError for a bad value or a lookup."""
    return isinstance(exc, StoreError) or type(exc) in (TypeError, ValueError)


class Arena:
    """A store inside two directories of its own, with everything around it watched."""

    def __init__(self, tmp: Path) -> None:
        self.top = tmp
        self.path = tmp / "outer" / "inner" / "store"
        self.path.parent.mkdir(parents=True)
        (tmp / "outer" / "bystander").write_bytes(b"must stay as it is")
        self.store = self.open()
        self.model = ImageModel()
        self.seed()
        self.violations: list[str] = []
        self.cases = 0

    def open(self) -> ImageStore:
        return ImageStore(self.path, fsync="never", compact_every=None, disk=FenceDisk(self.path))

    def seed(self) -> None:
        for args, kwargs in (
            ((ID_A, ["quay.io/a:1", "shared/prefix:x"], "L1"), {"created": T0, "big_data": [("manifest", b"{}")]}),
            ((ID_B, ["b:1"]), {"created": T0 + 1, "metadata": "meta b", "flags": {"f": [1, 2]}}),
            ((ID_C, ["名前:latest", "\u202ertl"]), {"created": T0 + 2, "digest": GOOD_DIGESTS[0]}),
        ):
            self.store.create(*args, **kwargs)
            self.model.create(*args, **kwargs)
        self.store.compact()
        self.store.set_metadata(ID_A, "after the snapshot")
        self.model.set_metadata(ID_A, "after the snapshot")

    def outside(self) -> dict[str, tuple[int, ...]]:
        return fingerprint(self.top, skip=self.path)

    def inside(self) -> dict[str, tuple[int, ...]]:
        return fingerprint(self.path)

    def state(self) -> dict[str, Any]:
        return snapshot_of_store(self.store, GOOD_DIGESTS)

    def attempt(self, label: str, call: Callable[[ImageStore], Any], expect: Expect) -> None:
        """Run one call; check it against `expect` and the rules every call obeys."""
        self.cases += 1
        out_before = self.outside()
        in_before = self.inside()
        state_before = self.state()
        error: BaseException | None = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                call(self.store)
            except BaseException as exc:  # everything is judged below
                error = exc
        problems: list[str] = []
        if self.outside() != out_before:
            problems.append("something outside the store directory changed")
        if error is not None:
            if not documented(error) and not isinstance(error, expect.also):
                problems.append(f"undocumented {error.__class__.__name__}: {str(error)[:200]}")
            elif expect.raises is not None and not isinstance(error, (*expect.raises, *expect.also)):
                problems.append(
                    f"raised {error.__class__.__name__} ({str(error)[:120]}), "
                    f"expected {[t.__name__ for t in expect.raises]}"
                )
            elif not expect.may_fail:
                problems.append(f"rejected with {error.__class__.__name__}: {str(error)[:200]}")
            if self.state() != state_before:
                problems.append("a rejected call changed the state")
            if self.inside() != in_before:
                problems.append("a rejected call changed files of the store")
        elif not expect.may_pass:
            problems.append("accepted")
        if problems:
            self.violations.append(f"{label}: " + "; ".join(problems))


@dataclass(frozen=True)
class Expect:
    """`raises`: the exception types a rejection must have (None: any documented one);
    `may_pass`/`may_fail`: whether acceptance/rejection is allowed; `also`: other exception types
    that are fine here (the caller's own exception, raised by its callback)."""

    raises: tuple[type[BaseException], ...] | None = None
    may_pass: bool = False
    may_fail: bool = True
    also: tuple[type[BaseException], ...] = ()


OK = Expect(may_pass=True, may_fail=False)
EITHER = Expect(may_pass=True)


def rejects(*types: type[BaseException]) -> Expect:
    return Expect(raises=types)


TYPE = rejects(TypeError)


# ---------------------------------------------------------------------- the table


def api_cases() -> Iterator[tuple[str, Callable[[ImageStore], Any], Expect]]:
    """(label, call, expectation) for every public method of ImageStore."""
    counter = iter(range(1_000_000))

    def fresh_id() -> str:
        return f"{next(counter):064x}"

    reads_by_ref = ["get", "metadata", "big_data_names", "image_id_of"]
    for name in reads_by_ref:
        for ref in WEIRD_STRINGS:
            yield f"{name}({ref[:20]!r})", lambda s, n=name, r=ref: getattr(s, n)(r), rejects(ImageUnknown)
        for bad in WRONG_TYPES:
            yield f"{name}({short(bad, 20)})", lambda s, n=name, b=bad: getattr(s, n)(b), TYPE
        yield f"{name}(ambiguous prefix)", lambda s, n=name: getattr(s, n)("a"), rejects(ImageUnknown)
        yield f"{name}(unique prefix)", lambda s, n=name: getattr(s, n)("ab"), OK
    for ref in WEIRD_STRINGS:
        yield f"exists({ref[:20]!r})", lambda s, r=ref: s.exists(r), OK
        yield f"{ref[:20]!r} in store", lambda s, r=ref: r in s, OK
    for bad in WRONG_TYPES:
        yield f"exists({short(bad, 20)})", lambda s, b=bad: s.exists(b), TYPE
        yield f"{short(bad, 20)} in store", lambda s, b=bad: b in s, OK
    for digest in BAD_DIGESTS + GOOD_DIGESTS + WEIRD_STRINGS:
        yield f"by_digest({digest[:24]!r})", lambda s, d=digest: s.by_digest(d), OK
    for bad in WRONG_TYPES:
        yield f"by_digest({short(bad, 20)})", lambda s, b=bad: s.by_digest(b), TYPE
    for reader in ("big_data", "big_data_size", "big_data_digest"):
        for key in WEIRD_STRINGS:
            expect = rejects(InvalidBigDataName) if key == "" else rejects(BigDataUnknown, SizeUnknown, DigestUnknown)
            yield f"{reader}(A, {key[:20]!r})", lambda s, r=reader, k=key: getattr(s, r)(ID_A, k), expect
        for bad in WRONG_TYPES:
            yield f"{reader}(A, {short(bad, 20)})", lambda s, r=reader, b=bad: getattr(s, r)(ID_A, b), TYPE
            yield f"{reader}({short(bad, 20)}, key)", lambda s, r=reader, b=bad: getattr(s, r)(b, "manifest"), TYPE
        yield f"{reader}(ambiguous, key)", lambda s, r=reader: getattr(s, r)("a", "manifest"), rejects(ImageUnknown)

    # create: every argument, bad and odd
    for bad_id in [
        "",
        "/",
        "a/b",
        "..",
        ".",
        "\0",
        "a\0",
        "x" * 256,
        "é" * 128,
        "\ud800",
        "images.json",
        "images.lock",
        "journal",
        "../../escape",
    ]:
        yield f"create(id={bad_id[:20]!r})", lambda s, i=bad_id: s.create(i), rejects(InvalidID)
    for odd_id in [
        "\u202eevil",
        "zero\u200bwidth",
        "e\u0301",
        "名前",
        " ",
        "x" * 255,
        "é" * 127 + "x",
        "-rf",
        "~",
        "%s",
        "UPPER",
        "a" * 12,
    ]:
        yield (
            f"create(id={odd_id[:20]!r}) with big data",
            lambda s, i=odd_id: s.create(i, [f"odd/{i[:30]}"], big_data=[("k", b"v"), ("../../escape", b"w")]),
            OK,
        )
    for bad in [0, 1.5, b"id", ["id"], object()]:
        yield f"create(id={short(bad, 20)})", lambda s, b=bad: s.create(b), TYPE
    yield "create(ID_A) again", lambda s: s.create(ID_A), rejects(DuplicateID)
    yield "create(names taken)", lambda s: s.create(fresh_id(), ["b:1"]), rejects(DuplicateName)
    yield "create(names='str')", lambda s: s.create(fresh_id(), "quay.io/x"), TYPE
    yield "create(names=b'str')", lambda s: s.create(fresh_id(), b"quay.io/x"), TYPE
    yield "create(names=5)", lambda s: s.create(fresh_id(), 5), TYPE
    for bad_name in ["", "\ud800", 5, None, b"x"]:
        yield (
            f"create(names=[{short(bad_name, 20)}])",
            lambda s, n=bad_name: s.create(fresh_id(), [n]),
            rejects(InvalidName, TypeError),
        )
    for odd in ["a/b", "..", ".", "\0", "a\0b", "\u202e", "e\u0301", "x" * 1_000_000, "images.json", "   "]:
        yield f"create(names=[{odd[:20]!r}])", lambda s, n=odd: s.create(fresh_id(), [n + fresh_id()[-6:]]), OK
    for bad in [5, b"L", ["L"]]:
        yield f"create(layer={short(bad)})", lambda s, b=bad: s.create(fresh_id(), [], b), TYPE
    yield "create(layer=surrogate)", lambda s: s.create(fresh_id(), [], "\ud800"), rejects(InvalidName)
    for digest in BAD_DIGESTS:
        if digest:
            yield (
                f"create(digest={digest[:24]!r})",
                lambda s, d=digest: s.create(fresh_id(), digest=d),
                rejects(InvalidDigest),
            )
            yield (
                f"create(digests=[{digest[:24]!r}])",
                lambda s, d=digest: s.create(fresh_id(), digests=[d]),
                rejects(InvalidDigest, InvalidName),
            )
            yield (
                f"create(big_data digest {digest[:24]!r})",
                lambda s, d=digest: s.create(fresh_id(), big_data=[("k", b"v", d)]),
                rejects(InvalidDigest),
            )
    yield "create(digest='')", lambda s: s.create(fresh_id(), digest=""), OK
    yield "create(digest=5)", lambda s: s.create(fresh_id(), digest=5), TYPE
    yield "create(digests='sha256:..')", lambda s: s.create(fresh_id(), digests=GOOD_DIGESTS[0]), TYPE
    for digest in GOOD_DIGESTS:
        yield f"create(digest={digest[:10]}..)", lambda s, d=digest: s.create(fresh_id(), digest=d), OK
    for bad in [5, b"m", ["m"]]:
        yield f"create(metadata={short(bad)})", lambda s, b=bad: s.create(fresh_id(), metadata=b), TYPE
    yield "create(metadata=surrogate)", lambda s: s.create(fresh_id(), metadata="\ud800"), rejects(InvalidName)
    for bad in ["2024-01-01", 1.5, True, b"0", [0], 10**30, -(10**30), 2**63 * 10**9]:
        yield (
            f"create(created={short(bad, 20)})",
            lambda s, b=bad: s.create(fresh_id(), created=b),
            rejects(TypeError, ValueError),
        )
    for good in [
        0,
        -1,
        -62_135_596_800 * 10**9,
        253_402_300_800 * 10**9 - 1,
        datetime(1, 1, 1),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-12))),
        datetime(2024, 2, 29, tzinfo=timezone(timedelta(hours=5, minutes=45))),
    ]:
        yield f"create(created={short(good, 40)})", lambda s, g=good: s.create(fresh_id(), created=g), OK
    yield "create(names_history='x')", lambda s: s.create(fresh_id(), names_history="x"), TYPE
    yield "create(names_history=[''])", lambda s: s.create(fresh_id(), names_history=[""]), rejects(InvalidName)
    for bad in [5, "flags", [("a", 1)]]:
        yield f"create(flags={short(bad)})", lambda s, b=bad: s.create(fresh_id(), flags=b), rejects(TypeError)
    for value in BAD_FLAG_VALUES:
        yield (
            f"create(flags={{'k': {short(value, 20)}}})",
            lambda s, v=value: s.create(fresh_id(), flags={"k": v}),
            rejects(InvalidFlagValue),
        )
    for key in [1, None, b"k", ("t",), "\ud800"]:
        yield (
            f"create(flags={{{short(key)}: 1}})",
            lambda s, k=key: s.create(fresh_id(), flags={k: 1}),
            rejects(InvalidFlagValue),
        )
    bad_items: list[Any] = [
        "str",
        b"bytes",
        5,
        [("k",)],
        [("k", b"v", GOOD_DIGESTS[0], "extra")],
        [b"kv"],
        ["kv"],
        [("k", "str data")],
        [("k", 5)],
        [(5, b"v")],
        [("", b"v")],
        [("k" * 300, b"v")],
        [("\ud800", b"v")],
        [None],
        {"k": b"v"},
    ]
    for items in bad_items:
        yield (
            f"create(big_data={short(items, 30)})",
            lambda s, i=items: s.create(fresh_id(), big_data=i),
            rejects(TypeError, InvalidBigDataName),
        )
    for key in [
        ".",
        "..",
        "/",
        "a/b",
        "../../../../escape",
        "\0",
        "k\0",
        "=",
        "=Li4=",
        "CON",
        "x" * 180,
        "\u202e",
        "manifest-\U0001f600",
        "staging",
        "images.json",
    ]:
        yield (
            f"create(big_data key {key[:20]!r})",
            lambda s, k=key: s.create(fresh_id(), big_data=[(k, k.encode())]),
            OK,
        )

    # the writes on an existing image
    for method in ("set_names", "add_names", "remove_names"):
        for ref in ["", "nope", "a", "\0never", "../x", "\ud800"]:
            yield f"{method}({short(ref)})", lambda s, m=method, r=ref: getattr(s, m)(r, ["n"]), rejects(ImageUnknown)
        for bad in WRONG_TYPES:
            yield f"{method}({short(bad, 20)})", lambda s, m=method, b=bad: getattr(s, m)(b, ["n"]), TYPE
        yield f"{method}(A, 'str')", lambda s, m=method: getattr(s, m)(ID_A, "str"), TYPE
        yield f"{method}(A, [5])", lambda s, m=method: getattr(s, m)(ID_A, [5]), rejects(InvalidName)
        yield f"{method}(A, [''])", lambda s, m=method: getattr(s, m)(ID_A, [""]), rejects(InvalidName)
        yield f"{method}(A, [surrogate])", lambda s, m=method: getattr(s, m)(ID_A, ["\ud800"]), rejects(InvalidName)
        yield f"{method}(A, odd names)", lambda s, m=method: getattr(s, m)(ID_A, ["a/b", "..", "\0", "\u202e"]), OK
        yield f"{method}(prefix 'ab', [])", lambda s, m=method: getattr(s, m)("ab", []), OK
    yield "set_names(A, 64 MiB name)", lambda s: s.set_names(ID_A, ["n" * MAX_FRAME]), rejects(RecordTooLarge)
    for bad in WRONG_TYPES:
        yield f"set_metadata(A, {short(bad, 20)})", lambda s, b=bad: s.set_metadata(ID_A, b), TYPE
        yield f"add_mapped_top_layer(A, {short(bad, 20)})", lambda s, b=bad: s.add_mapped_top_layer(ID_A, b), TYPE
        yield f"remove_mapped_top_layer(A, {short(bad, 20)})", lambda s, b=bad: s.remove_mapped_top_layer(ID_A, b), TYPE
        yield f"delete({short(bad, 20)})", lambda s, b=bad: s.delete(b), TYPE
    for text in WEIRD_STRINGS:
        expect = rejects(InvalidName) if text in ("\ud800", "x\udfffy") else OK
        yield f"set_metadata(A, {text[:20]!r})", lambda s, t=text: s.set_metadata(ID_A, t), expect
        yield f"add_mapped_top_layer(A, {text[:20]!r})", lambda s, t=text: s.add_mapped_top_layer(ID_A, t), expect
        yield f"remove_mapped_top_layer(A, {text[:20]!r})", lambda s, t=text: s.remove_mapped_top_layer(ID_A, t), expect
    for ref in ["", "a", "nope", "../" + ID_A, ID_A + "\0"]:
        yield f"delete({ref[:20]!r})", lambda s, r=ref: s.delete(r), rejects(ImageUnknown)
    for key in [1, None, b"k", "\ud800"]:
        yield (
            f"set_flag(A, {short(key)}, 1)",
            lambda s, k=key: s.set_flag(ID_A, k, 1),
            rejects(InvalidFlagValue, TypeError),
        )
        yield (
            f"clear_flag(A, {short(key)})",
            lambda s, k=key: s.clear_flag(ID_A, k),
            rejects(InvalidFlagValue, TypeError),
        )
    for value in BAD_FLAG_VALUES:
        yield (
            f"set_flag(A, 'k', {short(value, 20)})",
            lambda s, v=value: s.set_flag(ID_A, "k", v),
            rejects(InvalidFlagValue),
        )
    for value in GOOD_FLAG_VALUES:
        yield f"set_flag(A, 'k', {short(value, 20)})", lambda s, v=value: s.set_flag(ID_A, "k", v), OK
    for key in ["", "\0", "a/b", "..", "\u202e", "x" * 10_000]:
        yield f"set_flag(A, {key[:20]!r}, 1)", lambda s, k=key: s.set_flag(ID_A, k, 1), OK
        yield f"clear_flag(A, {key[:20]!r})", lambda s, k=key: s.clear_flag(ID_A, k), OK
    for key in ["", "k" * 256, "K" * 200, "\ud800"]:
        yield (
            f"set_big_data(A, {key[:20]!r})",
            lambda s, k=key: s.set_big_data(ID_A, k, b"v"),
            rejects(InvalidBigDataName),
        )
    for key in [5, None, b"k"]:
        yield f"set_big_data(A, {short(key)})", lambda s, k=key: s.set_big_data(ID_A, k, b"v"), TYPE
    for data in ["str", 5, None, [1, 2], object()]:
        yield f"set_big_data(A, 'k', {short(data, 20)})", lambda s, d=data: s.set_big_data(ID_A, "k", d), TYPE
    for data in [b"", bytearray(b"ba"), memoryview(b"mv"), b"\0" * 100]:
        yield f"set_big_data(A, 'k', {type(data).__name__})", lambda s, d=data: s.set_big_data(ID_A, "k", d), OK
    for key in [".", "..", "../../../escape", "/abs", "\0", "staging"]:
        yield f"set_big_data(A, {short(key)})", lambda s, k=key: s.set_big_data(ID_A, k, b"inside"), OK
    for result in BAD_DIGESTS:
        yield (
            f"set_big_data(manifest, digest -> {result[:20]!r})",
            lambda s, r=result: s.set_big_data(ID_A, "manifest", b"m", lambda _d: r),
            rejects(InvalidDigest),
        )
    yield "set_big_data(digest -> 5)", lambda s: s.set_big_data(ID_A, "manifest", b"m", lambda _d: 5), TYPE
    yield "set_big_data(digest_manifest='x')", lambda s: s.set_big_data(ID_A, "manifest", b"m", "x"), TYPE

    def boom(_data: bytes) -> str:
        raise RuntimeError("the caller's own digest function failed")

    yield (
        "set_big_data(digest raises)",
        lambda s: s.set_big_data(ID_A, "manifest", b"m", boom),
        Expect(raises=(RuntimeError,), also=(RuntimeError,)),
    )

    # huge values: 64 MiB of metadata cannot fit a journal record (at most 64 MiB with its envelope)
    huge = "m" * MAX_FRAME
    yield "create(metadata=64 MiB)", lambda s: s.create(fresh_id(), metadata=huge), rejects(RecordTooLarge)
    yield "set_metadata(A, 64 MiB)", lambda s: s.set_metadata(ID_A, huge), rejects(RecordTooLarge)

    def huge_in_batch(s: ImageStore) -> None:
        with s.batch():
            s.create(fresh_id(), ["in-batch"])
            s.set_metadata(ID_B, huge)

    yield "batch(create, set_metadata 64 MiB)", huge_in_batch, rejects(RecordTooLarge)
    if STRESS:
        near = "m" * (MAX_FRAME - 4096)

        def near_limit(s: ImageStore) -> None:
            s.set_metadata(ID_B, near)
            s.compact()

        yield "set_metadata(B, 64 MiB - 4 KB)", near_limit, OK

    # batches
    def fails_inside(s: ImageStore) -> None:
        with s.batch():
            s.create(fresh_id(), ["batched"], big_data=[("k", b"v")])
            s.set_big_data(ID_A, "manifest", b"changed in a batch")
            s.delete(ID_B)
            s.create(ID_C)  # DuplicateID: the whole batch goes

    yield "batch(..., duplicate ID)", fails_inside, rejects(DuplicateID)

    def compact_inside(s: ImageStore) -> None:
        with s.batch():
            s.compact()

    yield "compact() inside batch()", compact_inside, rejects(StoreError)

    def gc_inside(s: ImageStore) -> None:
        with s.batch():
            s.garbage_collect()

    yield "garbage_collect() inside batch()", gc_inside, rejects(StoreError)

    # audit
    for bad in ["yesterday", 1.5, b"1", object()]:
        yield f"history(since={short(bad, 20)})", lambda s, b=bad: list(s.history(since=b)), TYPE
        yield f"history(until={short(bad, 20)})", lambda s, b=bad: list(s.history(until=b)), TYPE
        yield f"at({short(bad, 20)})", lambda s, b=bad: s.at(b), TYPE
    for when in [-1, 0, 10**9, 2**70, datetime(1900, 1, 1), datetime(9999, 1, 1, tzinfo=UTC)]:
        yield f"at({short(when, 30)})", lambda s, w=when: s.at(w).images(), EITHER
        yield f"history(since={short(when, 30)})", lambda s, w=when: list(s.history(since=w)), EITHER
    for ref in ["", "\0never", "a/never", "../never", "nope", "a"]:
        yield f"history({ref[:20]!r})", lambda s, r=ref: list(s.history(r)), rejects(ImageUnknown)
    yield "history(5)", lambda s: list(s.history(5)), TYPE
    yield "history(kinds=['nope'])", lambda s: list(s.history(kinds=["nope"])), rejects(ValueError)
    yield "history(kinds=5)", lambda s: list(s.history(kinds=5)), TYPE
    yield "follow('x')", lambda s: s.follow("x").poll(), TYPE
    for bad in [-1, "3", -0.5]:
        yield (
            f"prune_journal(keep_segments={short(bad)})",
            lambda s, b=bad: s.prune_journal(keep_segments=b),
            rejects(ValueError),
        )
        yield (
            f"prune_journal(older_than={short(bad)})",
            lambda s, b=bad: s.prune_journal(older_than=b),
            rejects(ValueError),
        )
    yield "verify()", lambda s: s.verify(), OK

    # a view of the past answers like the store, and refuses every write
    for name in ("get", "metadata", "big_data_names"):
        for ref in [*WEIRD_STRINGS[:12], "a"]:
            yield (
                f"at(2).{name}({short(ref, 20)})",
                lambda s, n=name, r=ref: getattr(s.at(2), n)(r),
                rejects(ImageUnknown),
            )
        for bad in WRONG_TYPES[:5]:
            yield f"at(2).{name}({short(bad, 20)})", lambda s, n=name, b=bad: getattr(s.at(2), n)(b), TYPE
    for reader in ("big_data", "big_data_size", "big_data_digest"):
        for key in ["", "nope", "../x", "\0"]:
            yield (
                f"at(2).{reader}(A, {key!r})",
                lambda s, r=reader, k=key: getattr(s.at(2), r)(ID_A, k),
                rejects(InvalidBigDataName, BigDataUnknown, SizeUnknown, DigestUnknown),
            )
        yield f"at(2).{reader}(A, 5)", lambda s, r=reader: getattr(s.at(2), r)(ID_A, 5), TYPE
    for digest in BAD_DIGESTS[:6]:
        yield f"at(2).by_digest({digest[:20]!r})", lambda s, d=digest: s.at(2).by_digest(d), OK
    for write in ("create", "set_names", "delete", "set_metadata", "set_big_data", "wipe", "compact"):
        yield f"at(2).{write}()", lambda s, w=write: getattr(s.at(2), w)(ID_A), rejects(StoreIsReadOnly)


def constructor_cases(tmp: Path) -> Iterator[tuple[str, Callable[[], Any], Expect]]:
    """(label, call, expectation) for ImageStore(...) itself."""
    fresh = iter(range(1000))

    def path() -> Path:
        return tmp / f"ctor-{next(fresh)}"

    a_file = tmp / "a-file"
    a_file.write_bytes(b"not a directory")
    for bad in [None, 5, 1.5, b"/tmp/x", ["/tmp"], object()]:
        yield f"ImageStore({short(bad, 20)})", lambda b=bad: ImageStore(b), TYPE
    yield "ImageStore('')", lambda: ImageStore(""), rejects(ValueError)
    yield "ImageStore('', read_only=True)", lambda: ImageStore("", read_only=True), rejects(ValueError)
    yield "ImageStore(path with NUL)", lambda: ImageStore(str(tmp / "a\0b")), rejects(ValueError)
    environment = Expect(raises=(OSError,), also=(OSError,))  # what the file system says, as it says it
    yield "ImageStore(a file)", lambda: ImageStore(a_file), environment
    yield "ImageStore(a file, read_only)", lambda: ImageStore(a_file, read_only=True), environment
    yield "ImageStore(missing, read_only)", lambda: ImageStore(path(), read_only=True), environment
    for key, value in [
        ("fsync", "sometimes"),
        ("fsync", None),
        ("compact_every", 0),
        ("compact_every", -5),
        ("compact_every", "5"),
        ("compact_bytes", 1.5),
        ("keep_segments", -1),
        ("keep_age", "1d"),
    ]:
        yield (
            f"ImageStore({key}={short(value)})",
            lambda k=key, v=value: ImageStore(path(), **{k: v}),
            rejects(ValueError, TypeError),
        )
    yield "ImageStore(actor=5)", lambda: ImageStore(path(), actor=5), TYPE

    def actor_surrogate() -> None:
        with ImageStore(path(), actor="\ud800", fsync="never") as s:
            s.create(names=["x"])

    yield "ImageStore(actor=surrogate).create()", actor_surrogate, rejects(ValueError)

    def odd_actor() -> None:
        with ImageStore(path(), actor="\0\u202e" + "a" * 10_000, fsync="never") as s:
            s.create(names=["x"])

    yield "ImageStore(actor=odd).create()", odd_actor, OK

    def timeout_text() -> None:
        with ImageStore(path(), lock_timeout="soon", fsync="never") as s:  # type: ignore[arg-type]
            s.create(names=["x"])

    yield "ImageStore(lock_timeout='soon')", timeout_text, rejects(TypeError, ValueError)


FROM_JSON_BAD: list[Any] = [
    {"id": ".."},  # an ID that names no directory of the store (issue 15.2)
    {"id": "journal"},
    {"id": "a/b"},
    None,
    5,
    "str",
    [],
    {},
    {"id": ""},
    {"id": 5},
    {"id": "x", "created": "yesterday"},
    {"id": "x", "created": 5},
    {"id": "x", "created": "2024-13-45T99:99:99Z"},
    {"id": "x", "created": "2024-01-01T00:00:00.\u0663Z"},
    {"id": "x", "created": "\u0662024-01-01T00:00:00Z"},
    {"id": "x", "created": "2024-01-01T00:00:00+99:99"},
    {"id": "x", "names": "str"},
    {"id": "x", "names": [5]},
    {"id": "x", "names-history": {"a": 1}},
    {"id": "x", "big-data-sizes": {"a": "1"}},
    {"id": "x", "big-data-sizes": [1]},
    {"id": "x", "big-data-digests": {"a": 5}},
    {"id": "x", "flags": [1]},
    {"id": "x", "layer": 5},
    {"id": "x", "metadata": ["m"]},
    {"id": "x", "digest": 5},
    {"id": "x", "mapped-layers": "L"},
    {"id": "x", "big-data-names": [None]},
]
FROM_JSON_GOOD: list[Any] = [
    {"id": "x"},
    {"id": "x", "created": "0001-01-01T00:00:00Z"},
    {"id": "x", "created": "9999-12-31T23:59:59.999999999-12:00"},
    {"id": "x", "names": ["a/b", "\0"], "flags": {"k": {"n": [1, None]}}},
    {"id": "\u202e", "digest": "not validated here", "unknown-key": 1},
]


def test_hostile_api_table(tmp_path: Path, summary: Callable[..., None], monkeypatch: pytest.MonkeyPatch) -> None:
    arena = Arena(tmp_path / "api")
    for label, call, expect in api_cases():
        arena.attempt(label, call, expect)
    # After every accepted odd call, the store still opens, verifies, and lost nothing.
    arena.store.close()
    with ImageStore(arena.path, read_only=True) as r:
        report = r.verify()
        assert report.ok, report.problems
        images = r.images()
    arena.store = arena.open()
    assert [i.to_json() for i in arena.store.images()] == [i.to_json() for i in images]
    ctor = tmp_path / "ctor"
    ctor.mkdir()
    monkeypatch.chdir(ctor)  # ImageStore("") must not make a store of the working directory
    for label, make, expect in constructor_cases(ctor):
        arena.attempt(label, lambda _s, m=make: _close(m()), expect)
    leaked = {"images.lock", "journal", "images.json"} & set(os.listdir(ctor))
    if leaked:
        arena.violations.append(f"ImageStore('') made a store of the working directory: {sorted(leaked)}")
    for doc in FROM_JSON_BAD:
        arena.attempt(f"Image.from_json({short(doc, 40)})", lambda _s, d=doc: Image.from_json(d), rejects(ValueError))
    for doc in FROM_JSON_GOOD:
        arena.attempt(f"Image.from_json({short(doc, 40)})", lambda _s, d=doc: Image.from_json(d).to_json(), OK)
    summary("hostile:api", cases=arena.cases, violations=len(arena.violations))
    assert not arena.violations, f"{len(arena.violations)} violations:\n" + "\n".join(arena.violations[:30])


def _close(store: Any) -> None:
    if isinstance(store, ImageStore):
        store.close()


# ---------------------------------------------------------------------- hostile records

HOSTILE_RECORDS: list[dict[str, Any]] = [
    {"type": "prepare", "seq": 2, "files": [["..", "victim.txt", False, False]]},
    {"type": "prepare", "seq": 2, "files": [["..", "victim.txt", True, True]]},
    {"type": "prepare", "seq": 2, "files": [["journal", "segment-00000001", False, False]]},
    {"type": "prepare", "seq": 2, "files": [[".", "images.lock", False, True]]},
    {"type": "prepare", "seq": 2, "files": [["a" * 64, "../../victim.txt", False, True]]},
    {"type": "prepare", "seq": 2, "files": [["a" * 64, "..", False, True]]},
    {"type": "commit", "seq": 2, "events": [ev.create("..", 0, 0, (), (), "", "", "", {})]},
    {"type": "commit", "seq": 2, "events": [ev.create("journal", 0, 0, (), (), "", "", "", {})]},
    {"type": "commit", "seq": 2, "events": [{"op": "put-image", "image": {"id": ".."}}]},
]


@pytest.mark.parametrize("body", HOSTILE_RECORDS, ids=lambda b: short(b, 60))
def test_hostile_records_never_reach_outside_the_store(tmp_path: Path, body: dict[str, Any]) -> None:
    """Checksum-valid records that name paths outside the store: recovery and writes stay inside
    (issue 15.2). The fence disk fails the test on any file operation outside the store."""
    root = tmp_path / "outer" / "store"
    with ImageStore(root, fsync="never") as store:
        store.create(id="a" * 64, names=["a"], big_data=[("manifest", b"{}")])
    (tmp_path / "outer" / "victim.txt").write_text("keep me")
    segment = root / "journal" / jn.segment_name(1)
    with open(segment, "ab") as f:
        f.write(jn.encode_frame(jn.pack(body)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with ImageStore(root, fsync="never", disk=FenceDisk(root)) as store:
                store.create(names=["b"])
                store.wipe()
                store.garbage_collect()
        except StoreError as exc:
            assert "cannot name a directory" in str(exc), exc
    assert (tmp_path / "outer" / "victim.txt").read_text() == "keep me"


# ---------------------------------------------------------------------- the command line


@dataclass
class CliCase:
    args: list[str]
    codes: tuple[int, ...]  # allowed exit codes (0: accepted)
    stdin: bytes | None = None
    changes: bool = False  # whether it may change the store
    silent: bool = False  # a non-zero exit that is an answer, not an error (exists: 1 = no)


def cli_cases(tmp: Path) -> list[CliCase]:
    big = tmp / "64MiB"
    big.write_bytes(b"m" * MAX_FRAME)
    data = tmp / "data"
    data.write_bytes(b"some data")
    fail = (1, 2)
    cases = [
        CliCase(["create-image", "-i", ""], fail),
        CliCase(["create-image", "-i", "../escape"], fail),
        CliCase(["create-image", "-i", "a/b"], fail),
        CliCase(["create-image", "-i", ".."], fail),
        CliCase(["create-image", "-i", "images.json"], fail),
        CliCase(["create-image", "-i", "x" * 300], fail),
        CliCase(["create-image", "-i", "\udcff\udcfe"], fail),  # bytes that are not UTF-8
        CliCase(["create-image", "-n", ""], fail),
        CliCase(["create-image", "-n", "b:1"], fail),  # taken
        CliCase(["create-image", "-d", "sha256:xyz"], fail),
        CliCase(["create-image", "-d", "md5:" + "a" * 32], fail),
        CliCase(["create-image", "-d", "sha256:" + "A" * 64], fail),
        CliCase(["create-image", "-m", "\udcff"], fail),
        CliCase(["create-image", "-f", str(big)], fail),  # 64 MiB of metadata: RecordTooLarge
        CliCase(["create-image", "-f", str(tmp / "missing")], fail),
        CliCase(["create-image", "-f", str(tmp)], fail),  # a directory
        CliCase(["create-image", "-n", "\u202eevil", "-n", "a/../b", "-i", "\u200b" * 3], (0,), changes=True),
        CliCase(["create-image", "--bogus-option"], (2,)),
        CliCase(["delete-image", "a"], fail),  # ambiguous prefix
        CliCase(["delete-image", "nope"], fail),
        CliCase(["delete-image", "../" + ID_A], fail),
        CliCase(["image", "a"], fail),
        CliCase(["image", ""], fail),
        CliCase(["exists", "\udcff"], (0, 1), silent=True),
        CliCase(["images-by-digest", "sha256:xyz"], (0, 1)),
        CliCase(["add-names", "-n", "", ID_A], fail),
        CliCase(["add-names", "-n", "x", "nope"], fail),
        CliCase(["set-names", "-n", "\udcff", ID_A], fail),
        CliCase(["remove-names", ID_A], fail),  # no -n
        CliCase(["set-metadata", "-f", str(big), ID_A], fail),
        CliCase(["set-metadata", "-m", "x", "a"], fail),
        CliCase(["metadata", "a"], fail),
        CliCase(["set-image-data", "-f", str(data), ID_A, ""], fail),
        CliCase(["set-image-data", "-f", str(data), ID_A, "k" * 300], fail),
        CliCase(["set-image-data", "-f", str(tmp / "missing"), ID_A, "k"], fail),
        CliCase(["set-image-data", "-f", str(data), ID_A, "../../escape"], (0,), changes=True),
        CliCase(["set-image-data", ID_A, "from-stdin"], (0,), stdin=b"\0\xff bytes", changes=True),
        CliCase(["get-image-data", ID_A, "nope"], fail),
        CliCase(["get-image-data", ID_A, ""], fail),
        CliCase(["get-image-data", "-f", str(tmp / "no-such-dir" / "out"), ID_A, "manifest"], fail),
        CliCase(["get-image-data-size", ID_A, "nope"], fail),
        CliCase(["get-image-data-digest", ID_A, "nope"], fail),
        CliCase(["log", "--since", "yesterday"], fail),
        CliCase(["log", "--kind", "nope"], fail),
        CliCase(["log", "\udcff"], fail),
        CliCase(["replay", "--at", "garbage"], fail),
        CliCase(["replay", "--at", "-5"], fail),
        CliCase(["replay", "--at", "99999999999999999999999"], fail),
        CliCase(["repair", "--truncate-at", "-5"], fail),
        CliCase(["repair", "--truncate-at", "x"], fail),
        CliCase(["repair", "--truncate-at", "99999999999"], fail),
        CliCase(["repair", "--truncate-at", "10", "--segment", "99"], fail),
        CliCase(["prune", "--keep", "-1"], fail),
        CliCase(["prune", "--older-than", "3x"], fail),
        CliCase(["--read-only", "create-image"], fail),
        CliCase(["--read-only", "compact"], fail),
        CliCase(["no-such-command"], (2,)),
        CliCase([], (2,)),
        CliCase(["--actor", "\udcff", "create-image"], fail),
        CliCase(["verify"], (0,)),
        CliCase(["stats", "--json"], (0,)),
    ]
    return cases


def run_cli(root: Path, case: CliCase) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNALSTORE_ROOT", "XDG_DATA_HOME")}
    env["JOURNALSTORE_FSYNC"] = "never"
    argv = [os.fsencode(a) for a in [str(SCRIPT), "--root", str(root), *case.args]]
    proc = subprocess.run(argv, input=case.stdin or b"", capture_output=True, env=env, timeout=120, check=False)
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")


def test_hostile_cli(tmp_path: Path, summary: Callable[..., None]) -> None:
    if not SCRIPT.exists():
        pytest.skip(f"no console script at {SCRIPT}")
    arena = Arena(tmp_path / "cli")
    arena.store.close()
    cases = cli_cases(tmp_path)
    if not STRESS:
        keep = {0, 1, 2, 6, 9, 13, 16, 18, 22, 29, 32, 35, 36, 42, 46, 48, 55, 57, 58}
        cases = [c for i, c in enumerate(cases) if i in keep]
    violations: list[str] = []
    # The cases that must change nothing run two at a time; then those that may change the store.
    quiet = [c for c in cases if not c.changes]
    before_in = arena.inside()
    before_out = arena.outside()
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda c: (c, run_cli(arena.path, c)), quiet))
    if arena.inside() != before_in:  # find which, one at a time
        for case in quiet:
            before = arena.inside()
            run_cli(arena.path, case)
            if arena.inside() != before:
                violations.append(f"{' '.join(case.args)[:80]}: changed files of the store")
    for case in [c for c in cases if c.changes]:
        results.append((case, run_cli(arena.path, case)))
    for case, (code, _out, err) in results:
        label = " ".join(case.args)[:80]
        if code not in case.codes:
            violations.append(f"{label}: exit {code}, expected {case.codes}: {err.strip()[:300]}")
        if "Traceback" in err:
            violations.append(f"{label}: a traceback on stderr")
        if code != 0 and not case.silent:
            lines = [line for line in err.splitlines() if line.startswith("journalstore")]
            if len(lines) != 1:
                violations.append(f"{label}: {len(lines)} error lines, not one: {err.strip()[:300]}")
            if "internal error" in err:
                violations.append(f"{label}: {err.strip()[:300]}")
    if arena.outside() != before_out:
        violations.append("something outside the store directory changed")
    with ImageStore(arena.path, read_only=True) as r:
        assert r.verify().ok
    summary("hostile:cli", commands=len(results), violations=len(violations))
    assert not violations, "\n".join(violations)


# ---------------------------------------------------------------------- random calls


REF_POOL = ["@0", "@1", "@2", "@p", "@name", "a", "ab", "", "nope", "..", "a/b", "\0", "\ud800", "\u202e", 5, None]
NAME_POOL = ["n1", "n2", "shared", "quay.io/x:1", "", "\ud800", "a/b", "..", "\0", "\u202e", "e\u0301", 5, None]
STRING_POOL = ["", "text", "\0", "\ud800", "\u202e", "x" * 2000, 5, None, b"b"]
KEY_POOL = ["manifest", "config", "", ".", "..", "../../x", "a/b", "\0", "\ud800", "k" * 300, 5, None, "manifest-2"]
DATA_POOL = [b"", b"data", b"\0" * 10, bytearray(b"ba"), "str", 5, None]
ID_POOL = [None, None, "", "/", "..", ".", "\0", "\ud800", "journal", "x" * 256, "\u202eid", 5, "@fresh", "@0"]


def _names(draw: Any) -> Any:
    return draw(st.one_of(st.lists(st.sampled_from(NAME_POOL), max_size=3), st.sampled_from(["str", 5, None])))


@st.composite
def random_call(draw: Any) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    kind = draw(
        st.sampled_from(
            [
                "create",
                "create",
                "set_names",
                "add_names",
                "remove_names",
                "delete",
                "set_metadata",
                "set_flag",
                "clear_flag",
                "set_big_data",
                "add_mapped_top_layer",
                "remove_mapped_top_layer",
                "get",
                "exists",
                "by_digest",
                "big_data",
                "big_data_size",
                "big_data_digest",
                "metadata",
                "big_data_names",
                "wipe",
                "compact",
                "garbage_collect",
                "history",
                "at",
            ]
        )
    )
    ref = draw(st.sampled_from(REF_POOL))
    if kind == "create":
        kwargs: dict[str, Any] = {}
        if draw(st.booleans()):
            kwargs["digest"] = draw(st.sampled_from(BAD_DIGESTS[:6] + GOOD_DIGESTS + [5]))
        if draw(st.booleans()):
            kwargs["metadata"] = draw(st.sampled_from(STRING_POOL))
        if draw(st.booleans()):
            kwargs["flags"] = {
                draw(st.sampled_from(["k", "", 5])): draw(st.sampled_from(GOOD_FLAG_VALUES[:8] + BAD_FLAG_VALUES[:8]))
            }
        if draw(st.booleans()):
            kwargs["big_data"] = [(draw(st.sampled_from(KEY_POOL)), draw(st.sampled_from(DATA_POOL)))]
        kwargs["created"] = draw(st.sampled_from([T0, 0, "x", 10**30]))
        return "create", (draw(st.sampled_from(ID_POOL)), _names(draw)), kwargs
    if kind in ("set_names", "add_names", "remove_names"):
        return kind, (ref, _names(draw)), {}
    if kind in ("set_metadata", "add_mapped_top_layer", "remove_mapped_top_layer"):
        return kind, (ref, draw(st.sampled_from(STRING_POOL))), {}
    if kind == "set_flag":
        return (
            kind,
            (
                ref,
                draw(st.sampled_from(["k", "", 5, "\ud800"])),
                draw(st.sampled_from(GOOD_FLAG_VALUES + BAD_FLAG_VALUES[:-2])),
            ),
            {},
        )
    if kind == "clear_flag":
        return kind, (ref, draw(st.sampled_from(["k", "", 5]))), {}
    if kind == "set_big_data":
        return kind, (ref, draw(st.sampled_from(KEY_POOL)), draw(st.sampled_from(DATA_POOL))), {}
    if kind in ("big_data", "big_data_size", "big_data_digest"):
        return kind, (ref, draw(st.sampled_from(KEY_POOL))), {}
    if kind == "by_digest":
        return kind, (draw(st.sampled_from(BAD_DIGESTS[:8] + GOOD_DIGESTS + [5, None])),), {}
    if kind == "history":
        return kind, (), {"since": draw(st.sampled_from([None, 0, 3, "x", datetime(2000, 1, 1)]))}
    if kind == "at":
        return kind, (draw(st.sampled_from([0, 1, 5, -1, "x", datetime(2100, 1, 1)])),), {}
    if kind in ("wipe", "compact", "garbage_collect"):
        return kind, (), {}
    return kind, (ref,), {}


MODEL_CALLS = {
    "create",
    "set_names",
    "add_names",
    "remove_names",
    "delete",
    "set_metadata",
    "set_flag",
    "clear_flag",
    "set_big_data",
    "add_mapped_top_layer",
    "remove_mapped_top_layer",
    "wipe",
}


@dataclass
class RandomRun:
    calls: int = 0
    rejected: int = 0
    violations: list[str] = field(default_factory=list)


RANDOM = RandomRun()


def _resolve(value: Any, arena: Arena, fresh: Iterator[int]) -> Any:
    if isinstance(value, str) and value.startswith("@"):
        ids = [image.id for image in arena.model.images]
        if value == "@fresh":
            return f"{next(fresh):064x}"
        if value == "@p":
            return ids[0][:4] if ids else "zz"
        if value == "@name":
            names = [n for image in arena.model.images for n in image.names]
            return names[0] if names else "nothing"
        index = int(value[1:])
        return ids[index] if index < len(ids) else "zz"
    if isinstance(value, list):
        return [_resolve(v, arena, fresh) for v in value]
    return value


@settings(
    max_examples=scale(25, 400),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(calls=st.lists(random_call(), min_size=10, max_size=40))
def test_hostile_random_calls(tmp_path: Path, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> None:
    global _EXAMPLE
    _EXAMPLE += 1
    arena = Arena(tmp_path / f"random-{_EXAMPLE}")
    fresh = iter(range(10**6))
    try:
        for name, raw_args, raw_kwargs in calls:
            args = tuple(_resolve(a, arena, fresh) for a in raw_args)
            kwargs = {k: _resolve(v, arena, fresh) for k, v in raw_kwargs.items()}
            RANDOM.calls += 1
            label = f"{name}{short(args, 80)} {short(kwargs, 60)}"
            outcome: dict[str, Any] = {}

            def call(
                s: ImageStore,
                name: str = name,
                args: tuple[Any, ...] = args,
                kwargs: dict[str, Any] = kwargs,
                outcome: dict[str, Any] = outcome,
            ) -> None:
                result = getattr(s, name)(*args, **kwargs)
                if name in ("history",):
                    list(result)
                if name == "at":
                    result.images()
                outcome["result"] = result

            before = len(arena.violations)
            arena.attempt(label, call, EITHER)
            accepted = "result" in outcome
            RANDOM.rejected += not accepted
            if name in MODEL_CALLS and len(arena.violations) == before:
                model_args = args
                if name == "create" and accepted:
                    model_args = (outcome["result"].id, *args[1:])
                try:
                    getattr(arena.model, name)(*model_args, **kwargs)
                    model_accepted = True
                except Exception:
                    model_accepted = False
                if model_accepted != accepted:
                    arena.violations.append(
                        f"{label}: the store {'accepted' if accepted else 'rejected'} it, the model did not"
                    )
                elif accepted:
                    expected = arena.model.snapshot()
                    got = snapshot_of_store(arena.store, [*GOOD_DIGESTS, *arena.model.by_digest_lists])
                    if got != expected:
                        arena.violations.append(
                            f"{label}: state differs from the model: {diff_snapshots(expected, got)[:300]}"
                        )
            if len(arena.violations) > before:
                break
    finally:
        arena.store.close()
        RANDOM.violations += arena.violations
    assert not arena.violations, "\n".join(arena.violations)


_EXAMPLE = 0


def test_hostile_random_calls_summary(summary: Callable[..., None]) -> None:
    """Reports the figures of test_hostile_random_calls (which runs first)."""
    summary("hostile:random", calls=RANDOM.calls, rejected=RANDOM.rejected, violations=len(RANDOM.violations))
    assert RANDOM.calls > 0 and not RANDOM.violations
