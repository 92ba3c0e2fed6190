"""A plain, obviously-correct in-memory model of the image store (SPEC §1–§3, images.go).

Written from SPEC.md and the Go file, independently of journalstore's reducer: lists and dicts,
linear scans, no indexes, no undo logs. Every write validates everything first and only then
changes anything, so a call that raises leaves the model exactly as it was.

It serves as the oracle of the stateful test and as the "replay of acknowledged operations"
of the multi-process (and later crash) tests: one method per store operation, with the same
names and arguments as `journalstore.ImageStore`, plus `snapshot()`, a plain comparable value.
`snapshot_of_store(store)` builds the same value from a real store through its public API.

Decisions where SPEC and images.go leave room (each also noted where it applies):
- `names_history` never holds duplicates (SPEC §1): a history given to `create` is
  de-duplicated, first (newest) occurrence kept; Go keeps duplicates there until the next
  names operation, whose `dedupeStrings` then removes them all.
- `digests` is derived with manifest digests in big-data *insertion* order (SPEC: "a stable
  order"; Go iterates a map).
- A manifest key without `digest_manifest` gets sha256 of the data (SPEC §3), where Go fails.
- Entries of `create(digests=...)` are validated like `digest` (SPEC §3: "a digest that does not
  validate" raises `InvalidDigest`), though they are then dropped as in Go.
- Empty names are refused as bad values (Go would store ""; SPEC is silent).
- Prefix lookup: any non-empty prefix of exactly one ID (Go's truncindex also ignores IDs with
  spaces; the tests use none).
- A `created` given as nanoseconds must lie in the years 1 to 9999 UTC, the times images.json
  can hold (Go's MarshalJSON refuses others): a ValueError otherwise.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

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
    SizeUnknown,
)

# Top-level names the store uses for its own files (SPEC §7; "journal" is where the library
# keeps its segment files). An image ID equal to one of them is refused.
RESERVED_IDS = frozenset({"images.json", "images.lock", "journal"})
MAX_FILE_NAME = 255
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ------------------------------------------------------------------------- helpers


def dedupe(values: Iterable[str]) -> list[str]:
    """Go's dedupeStrings: first occurrence kept, order kept."""
    out: list[str] = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_is_valid(value: object) -> bool:
    """go-digest's Validate for sha256/sha384/sha512: `algorithm:` + lowercase hex of the right length."""
    if not isinstance(value, str) or ":" not in value:
        return False
    algorithm, encoded = value.split(":", 1)
    length = DIGEST_HEX_LENGTHS.get(algorithm)
    return length is not None and len(encoded) == length and all(c in "0123456789abcdef" for c in encoded)


def encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def big_data_file_name(key: str) -> str:
    """The key itself when it has only [.0-9a-z] (and is not `.`/`..`), else `=` + base64."""
    if key not in (".", "..") and re.fullmatch(r"[.0-9a-z]+", key):
        return key
    return "=" + base64.b64encode(key.encode("utf-8")).decode("ascii")


def go_equal_fold(a: str, b: str) -> bool:
    """Go's strings.EqualFold (rune by rune, simple case folding) for the cases tests use."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x == y:
            continue
        if len(x.lower()) == 1 and x.lower() == y.lower():
            continue
        if len(x.upper()) == 1 and x.upper() == y.upper():
            continue
        return False
    return True


def go_time_text(ns: int, offset: int) -> str:
    """Go's time.Time MarshalJSON: RFC 3339, fraction with trailing zeros trimmed, Z for UTC."""
    seconds, frac = divmod(ns, 1_000_000_000)
    local = datetime(1970, 1, 1) + timedelta(seconds=seconds + offset)
    text = f"{local.year:04d}-{local.month:02d}-{local.day:02d}T{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    if offset == 0:
        return text + "Z"
    sign = "+" if offset > 0 else "-"
    minutes = abs(offset) // 60
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def created_of(created: object) -> tuple[int, int] | None:
    """(ns since the epoch, UTC offset in seconds) of a `created` argument; None means now."""
    if created is None:
        return None
    if isinstance(created, bool) or not isinstance(created, int | datetime):
        raise TypeError(f"created must be a datetime or nanoseconds, not {type(created).__name__}")
    if isinstance(created, int):
        if not -62_135_596_800 * 10**9 <= created < 253_402_300_800 * 10**9:
            raise ValueError(f"created {created} is outside the years 1 to 9999")
        return created, 0
    if created.tzinfo is None or created.utcoffset() is None:
        created = created.replace(tzinfo=UTC)
    delta = created - EPOCH
    ns = (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    utcoff = created.utcoffset()
    assert utcoff is not None
    offset = int(utcoff.total_seconds())
    return ns, int(offset / 60) * 60  # RFC 3339 offsets have no seconds


def check_flag_value(value: object) -> None:
    """A value JSON and msgpack can both hold: None, bool, str, 64-bit int, finite float, lists,
    string-keyed objects."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        if not encodable(value):
            raise InvalidFlagValue(f"flag string {value!r} cannot be encoded")
        return
    if isinstance(value, int):
        if not -(2**63) <= value <= 2**64 - 1:
            raise InvalidFlagValue(f"flag integer {value} does not fit in 64 bits")
        return
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise InvalidFlagValue(f"flag number {value} is not finite")
        return
    if isinstance(value, list | tuple):
        for item in value:
            check_flag_value(item)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or not encodable(key):
                raise InvalidFlagValue(f"flag object key {key!r} is not a string")
            check_flag_value(item)
        return
    raise InvalidFlagValue(f"flag value of type {type(value).__name__} is not JSON")


def plain_json(value: Any) -> Any:
    """A deep copy of a JSON value as dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(v) for v in value]
    return value


def canonical(value: Any) -> Any:
    """A comparable form of a JSON value that tells True from 1 and None from missing, but takes
    1 and 1.0 as the same number (JSON text does not keep the difference)."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("num", value)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, Mapping):
        return ("obj", tuple(sorted((str(k), canonical(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("list", tuple(canonical(v) for v in value))
    return ("other", repr(value))


def check_names_arg(names: object, what: str = "names") -> list[str]:
    if isinstance(names, str | bytes) or not isinstance(names, Iterable):
        raise TypeError(f"{what} must be a list of strings")
    out = list(names)
    for name in out:
        if not isinstance(name, str) or not name or not encodable(name):
            raise InvalidName(f"bad name {name!r}")
    return out


def check_id_arg(image_id: object) -> str:
    if not isinstance(image_id, str):
        raise TypeError("an image ID must be a string")
    if (
        image_id == ""
        or "/" in image_id
        or "\x00" in image_id
        or image_id in (".", "..")
        or not encodable(image_id)
        or len(image_id.encode("utf-8")) > MAX_FILE_NAME
        or image_id in RESERVED_IDS
    ):
        raise InvalidID(f"invalid image ID {image_id!r}")
    return image_id


def check_key_arg(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError("a big-data key must be a string")
    if key == "" or not encodable(key) or len(big_data_file_name(key).encode("utf-8")) > MAX_FILE_NAME:
        raise InvalidBigDataName(f"invalid big-data key {key!r}")
    return key


def check_bytes_arg(data: object) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise TypeError("big-data must be bytes")


def check_str_arg(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string")
    if not encodable(value):
        raise InvalidName(f"{what} cannot be encoded")
    return value


def check_ref_arg(ref: object) -> str:
    if not isinstance(ref, str):
        raise TypeError("an image reference must be a string")
    return ref


# ------------------------------------------------------------------------- the record


@dataclass
class ModelImage:
    id: str
    digest: str = ""
    names: list[str] = field(default_factory=list)
    names_history: list[str] = field(default_factory=list)
    top_layer: str = ""
    mapped_top_layers: list[str] = field(default_factory=list)
    metadata: str = ""
    big_data_names: list[str] = field(default_factory=list)
    big_data_sizes: dict[str, int] = field(default_factory=dict)
    big_data_digests: dict[str, str] = field(default_factory=dict)
    created_ns: int = 0
    created_offset: int = 0
    flags: dict[str, Any] = field(default_factory=dict)

    @property
    def digests(self) -> list[str]:
        """Derived: digest first, then manifest digests in big-data insertion order, no repeats."""
        out = [self.digest] if self.digest else []
        for key in self.big_data_names:
            if key.startswith("manifest") and key in self.big_data_digests:
                d = self.big_data_digests[key]
                if d not in out:
                    out.append(d)
        return out

    def recompute_digest(self) -> None:
        """Go's recomputeDigests: an empty digest becomes the first manifest digest; a set one
        stays (it is "sticky", even when its manifest is overwritten later)."""
        if not self.digest:
            derived = self.digests
            if derived:
                self.digest = derived[0]

    def to_json(self) -> dict[str, Any]:
        """The images.json form: Go's keys, empty values left out."""
        doc: dict[str, Any] = {"id": self.id}
        if self.digest:
            doc["digest"] = self.digest
        if self.names:
            doc["names"] = list(self.names)
        if self.names_history:
            doc["names-history"] = list(self.names_history)
        if self.top_layer:
            doc["layer"] = self.top_layer
        if self.mapped_top_layers:
            doc["mapped-layers"] = list(self.mapped_top_layers)
        if self.metadata:
            doc["metadata"] = self.metadata
        if self.big_data_names:
            doc["big-data-names"] = list(self.big_data_names)
        if self.big_data_sizes:
            doc["big-data-sizes"] = dict(self.big_data_sizes)
        if self.big_data_digests:
            doc["big-data-digests"] = dict(self.big_data_digests)
        doc["created"] = go_time_text(self.created_ns, self.created_offset)
        if self.flags:
            doc["flags"] = plain_json(self.flags)
        return doc


def canonical_image(doc: Mapping[str, Any], digests: Sequence[str]) -> tuple[Any, ...]:
    """A comparable form of one image: its images.json form plus its derived digests."""
    items = []
    for key, value in doc.items():
        if key == "flags":
            items.append((key, canonical(value)))
        elif isinstance(value, Mapping):
            items.append((key, tuple(sorted(value.items()))))
        elif isinstance(value, list | tuple):
            items.append((key, tuple(value)))
        else:
            items.append((key, value))
    items.append(("digests", tuple(digests)))
    return tuple(sorted(items))


# ------------------------------------------------------------------------- the model


class ImageModel:
    """The store's state as a list of records in creation order, a by-digest map of ID lists
    in Go's slice order, and the bytes of every big-data item."""

    def __init__(self) -> None:
        self.images: list[ModelImage] = []
        self.by_digest_lists: dict[str, list[str]] = {}
        self.data: dict[tuple[str, str], bytes] = {}

    def copy(self) -> ImageModel:
        return copy.deepcopy(self)

    def replay(self, operations: Iterable[tuple[str, Sequence[Any], Mapping[str, Any]]]) -> None:
        """Apply logged operations `(method name, args, kwargs)` in order (crash and multi-process
        tests replay what the store acknowledged). Raises what the first impossible one raises."""
        for name, args, kwargs in operations:
            getattr(self, name)(*args, **kwargs)

    # ----------------------------------------------------------------- loading

    @classmethod
    def from_images_json(cls, docs: Sequence[Mapping[str, Any]]) -> ImageModel:
        """Go's load() of an images.json: records in file order, digests derived, a name that
        several records hold stays with the later one."""
        model = cls()
        for doc in docs:
            created = doc.get("created")
            ns, offset = (0, 0) if created is None else parse_go_time(created)
            image = ModelImage(
                id=doc["id"],
                digest=doc.get("digest", "") or "",
                names=dedupe(doc.get("names") or []),
                names_history=list(doc.get("names-history") or []),
                top_layer=doc.get("layer", "") or "",
                mapped_top_layers=list(doc.get("mapped-layers") or []),
                metadata=doc.get("metadata", "") or "",
                big_data_names=list(doc.get("big-data-names") or []),
                big_data_sizes=dict(doc.get("big-data-sizes") or {}),
                big_data_digests=dict(doc.get("big-data-digests") or {}),
                created_ns=ns,
                created_offset=offset,
                flags=plain_json(doc.get("flags") or {}),
            )
            for name in image.names:
                for other in model.images:
                    if name in other.names:
                        other.names.remove(name)
            image.recompute_digest()
            model.images.append(image)
            for d in image.digests:
                model.by_digest_lists.setdefault(d, []).append(image.id)
        return model

    # ----------------------------------------------------------------- lookups

    def lookup(self, ref: str) -> ModelImage | None:
        """A full ID, else a name, else the prefix of exactly one ID."""
        for image in self.images:
            if image.id == ref:
                return image
        for image in self.images:
            if ref in image.names:
                return image
        if ref == "":
            return None
        found = [image for image in self.images if image.id.startswith(ref)]
        return found[0] if len(found) == 1 else None

    def _find(self, ref: object) -> ModelImage:
        ref = check_ref_arg(ref)
        image = self.lookup(ref)
        if image is None:
            raise ImageUnknown(f"image {ref!r} not known")
        return image

    def _by_id(self, image_id: str) -> ModelImage | None:
        for image in self.images:
            if image.id == image_id:
                return image
        return None

    def _holder(self, name: str) -> ModelImage | None:
        for image in self.images:
            if name in image.names:
                return image
        return None

    # ----------------------------------------------------------------- reads

    def get(self, ref: str) -> ModelImage:
        return self._find(ref)

    def exists(self, ref: str) -> bool:
        return self.lookup(check_ref_arg(ref)) is not None

    def ids(self) -> list[str]:
        return [image.id for image in self.images]

    def by_digest(self, digest: str) -> list[str]:
        """IDs of the images listed under this digest, in Go's order ([] if none or malformed)."""
        if not isinstance(digest, str):
            raise TypeError("a digest must be a string")
        return list(self.by_digest_lists.get(digest, []))

    def metadata(self, ref: str) -> str:
        return self._find(ref).metadata

    def big_data_names(self, ref: str) -> list[str]:
        return list(self._find(ref).big_data_names)

    def _check_read_key(self, key: object) -> str:
        if not isinstance(key, str):
            raise TypeError("a big-data key must be a string")
        if key == "":
            raise InvalidBigDataName("empty big-data key")
        return key

    def big_data(self, ref: str, key: str) -> bytes:
        key = self._check_read_key(key)
        image = self._find(ref)
        if key not in image.big_data_names:
            raise BigDataUnknown(f"image {image.id} has no big-data item {key!r}")
        return self.data[(image.id, key)]

    def big_data_size(self, ref: str, key: str) -> int:
        key = self._check_read_key(key)
        image = self._find(ref)
        if key in image.big_data_sizes:
            return image.big_data_sizes[key]
        if (image.id, key) in self.data:
            return len(self.data[(image.id, key)])
        raise SizeUnknown(f"size of {key!r} not known")

    def big_data_digest(self, ref: str, key: str) -> str:
        key = self._check_read_key(key)
        image = self._find(ref)
        if key in image.big_data_digests:
            return image.big_data_digests[key]
        raise DigestUnknown(f"digest of {key!r} not known")

    # ----------------------------------------------------------------- writes

    def create(
        self,
        id: str | None = None,
        names: Iterable[str] = (),
        layer: str = "",
        *,
        digest: str = "",
        digests: Iterable[str] = (),
        metadata: str = "",
        created: datetime | int | None = None,
        names_history: Iterable[str] = (),
        flags: Mapping[str, Any] | None = None,
        big_data: Iterable[Sequence[Any]] = (),
    ) -> str:
        """Create an image; returns its ID. With `id=None` a random ID is made (tests that
        compare with a store pass the store's ID instead)."""
        # Every argument is checked first.
        image_id = None if id is None else check_id_arg(id)
        name_list = dedupe(check_names_arg(names))
        layer = check_str_arg(layer, "layer")
        if not isinstance(digest, str):
            raise TypeError("digest must be a string")
        if digest and not digest_is_valid(digest):
            raise InvalidDigest(f"invalid digest {digest!r}")
        for d in check_names_arg(digests, "digests"):
            if not digest_is_valid(d):
                raise InvalidDigest(f"invalid digest {d!r}")
        metadata = check_str_arg(metadata, "metadata")
        when = created_of(created)
        history = dedupe(check_names_arg(names_history, "names_history"))
        if flags is None:
            flags = {}
        if not isinstance(flags, Mapping):
            raise TypeError("flags must be a mapping")
        for key, value in flags.items():
            if not isinstance(key, str) or not encodable(key):
                raise InvalidFlagValue(f"flag key {key!r}")
            check_flag_value(value)
        if isinstance(big_data, str | bytes) or not isinstance(big_data, Iterable):
            raise TypeError("big_data must be a list of items")
        items: list[tuple[str, bytes, str]] = []
        for item in big_data:
            if isinstance(item, str | bytes) or not isinstance(item, Sequence) or len(item) not in (2, 3):
                raise TypeError("a big_data item is (key, data) or (key, data, digest)")
            key = check_key_arg(item[0])
            data = check_bytes_arg(item[1])
            item_digest = item[2] if len(item) == 3 and item[2] else sha256_of(data)
            if not digest_is_valid(item_digest):
                raise InvalidDigest(f"invalid digest {item_digest!r}")
            items.append((key, data, item_digest))
        # Then the state.
        if image_id is None:
            while True:
                image_id = os.urandom(32).hex()
                if not image_id[:12].isdigit() and self._by_id(image_id) is None:
                    break
        elif self._by_id(image_id) is not None:
            raise DuplicateID(f"image {image_id} exists")
        for name in name_list:
            if self._holder(name) is not None:
                raise DuplicateName(f"name {name!r} is taken")
        # Nothing can fail from here on.
        if when is None:
            when = created_of(datetime.now(UTC))
            assert when is not None
        image = ModelImage(
            id=image_id,
            digest=digest,
            names=name_list,
            names_history=history,
            top_layer=layer,
            metadata=metadata,
            created_ns=when[0],
            created_offset=when[1],
            flags=plain_json(flags),
        )
        self.images.append(image)
        for d in image.digests:
            self.by_digest_lists.setdefault(d, []).append(image_id)
        for key, data, item_digest in items:
            self._set_big_data(image, key, data, item_digest)
        return image_id

    def _names_op(self, op: str, ref: str, names: Iterable[str]) -> None:
        given = check_names_arg(names)
        image = self._find(ref)
        if op == "set":
            result = dedupe(given)
        elif op == "add":
            result = dedupe(given + image.names)
        else:
            result = [n for n in image.names if n not in given]
        for name in result:
            holder = self._holder(name)
            if holder is not None and holder is not image:
                holder.names.remove(name)  # the loser keeps it in its history
            image.names_history = dedupe([name, *image.names_history])
        image.names = result

    def set_names(self, ref: str, names: Iterable[str]) -> None:
        self._names_op("set", ref, names)

    def add_names(self, ref: str, names: Iterable[str]) -> None:
        self._names_op("add", ref, names)

    def remove_names(self, ref: str, names: Iterable[str]) -> None:
        self._names_op("remove", ref, names)

    def _remove_image(self, image: ModelImage) -> None:
        for d in image.digests:
            lst = self.by_digest_lists.get(d, [])
            if image.id in lst:
                lst.remove(image.id)
            if not lst:
                self.by_digest_lists.pop(d, None)
        self.images.remove(image)
        for key in image.big_data_names:
            self.data.pop((image.id, key), None)

    def delete(self, ref: str) -> None:
        self._remove_image(self._find(ref))

    def wipe(self) -> None:
        for image in list(self.images):
            self._remove_image(image)

    def set_metadata(self, ref: str, metadata: str) -> None:
        metadata = check_str_arg(metadata, "metadata")
        self._find(ref).metadata = metadata

    def set_flag(self, ref: str, key: str, value: Any) -> None:
        if not isinstance(key, str) or not encodable(key):
            raise InvalidFlagValue(f"flag key {key!r}")
        check_flag_value(value)
        image = self._find(ref)
        image.flags[key] = plain_json(value)

    def clear_flag(self, ref: str, key: str) -> None:
        if not isinstance(key, str) or not encodable(key):
            raise InvalidFlagValue(f"flag key {key!r}")
        self._find(ref).flags.pop(key, None)

    def add_mapped_top_layer(self, ref: str, layer: str) -> None:
        layer = check_str_arg(layer, "layer")
        self._find(ref).mapped_top_layers.append(layer)

    def remove_mapped_top_layer(self, ref: str, layer: str) -> None:
        layer = check_str_arg(layer, "layer")
        image = self._find(ref)
        image.mapped_top_layers = [x for x in image.mapped_top_layers if not go_equal_fold(x, layer)]

    def set_big_data(
        self, ref: str, key: str, data: bytes, digest_manifest: Callable[[bytes], str] | None = None
    ) -> None:
        check_ref_arg(ref)
        key = check_key_arg(key)
        data = check_bytes_arg(data)
        if key.startswith("manifest") and digest_manifest is not None:
            new_digest = digest_manifest(data)
            if not digest_is_valid(new_digest):
                raise InvalidDigest(f"invalid manifest digest {new_digest!r}")
        else:
            new_digest = sha256_of(data)
        self._set_big_data(self._find(ref), key, data, new_digest)

    def _set_big_data(self, image: ModelImage, key: str, data: bytes, new_digest: str) -> None:
        """Go's setBigData: record size and digest, then take the image out of every old digest's
        list and append it to every new digest's list."""
        if key not in image.big_data_names:
            image.big_data_names.append(key)
        image.big_data_sizes[key] = len(data)
        image.big_data_digests[key] = new_digest
        self.data[(image.id, key)] = data
        for d in list(self.by_digest_lists):
            lst = self.by_digest_lists[d]
            if image.id in lst:
                lst.remove(image.id)
                if not lst:
                    del self.by_digest_lists[d]
        image.recompute_digest()
        for d in image.digests:
            lst = self.by_digest_lists.setdefault(d, [])
            if image.id not in lst:
                lst.append(image.id)

    def garbage_collect(self) -> list[str]:
        """The model has no directories: nothing to collect."""
        return []

    def compact(self) -> None:
        """Compaction changes no state."""

    # ----------------------------------------------------------------- comparing

    def snapshot(self) -> dict[str, Any]:
        """Everything a reader can observe, as plain comparable values."""
        return {
            "images": [canonical_image(image.to_json(), image.digests) for image in self.images],
            "by_digest": {d: tuple(ids) for d, ids in self.by_digest_lists.items() if ids},
        }


def parse_go_time(text: str) -> tuple[int, int]:
    """(ns, offset) of RFC 3339 text (for loading images.json into the model)."""
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", text)
    if m is None:
        raise ValueError(f"not RFC 3339: {text!r}")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    frac = int((m.group(7) or "").ljust(9, "0"))
    zone = m.group(8)
    offset = 0 if zone == "Z" else (1 if zone[0] == "+" else -1) * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    local = datetime(year, month, day, hour, minute, second)
    delta = local - datetime(1970, 1, 1)
    return (delta.days * 86400 + delta.seconds - offset) * 1_000_000_000 + frac, offset


def snapshot_of_store(store: Any, extra_digests: Iterable[str] = ()) -> dict[str, Any]:
    """The model's `snapshot()` value, built from a real store through its public API.

    `by_digest` is asked for every digest any image lists, plus `extra_digests`; digests with
    no image are left out, as the model leaves them out.
    """
    images = store.images()
    wanted = dict.fromkeys(d for image in images for d in image.digests)
    wanted.update(dict.fromkeys(extra_digests))
    by_digest = {}
    for d in wanted:
        ids = tuple(image.id for image in store.by_digest(d))
        if ids:
            by_digest[d] = ids
    return {
        "images": [canonical_image(image.to_json(), image.digests) for image in images],
        "by_digest": by_digest,
    }


def diff_snapshots(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> str:
    """A short human-readable difference between two snapshots (for assertion messages)."""
    lines: list[str] = []
    exp_images = {dict(img)["id"]: dict(img) for img in expected["images"]}
    act_images = {dict(img)["id"]: dict(img) for img in actual["images"]}
    exp_order = [dict(img)["id"] for img in expected["images"]]
    act_order = [dict(img)["id"] for img in actual["images"]]
    if exp_order != act_order:
        lines.append(f"order: expected {exp_order} got {act_order}")
    for image_id in dict.fromkeys([*exp_order, *act_order]):
        e, a = exp_images.get(image_id), act_images.get(image_id)
        if e != a:
            if e is None or a is None:
                lines.append(f"{image_id}: expected {e} got {a}")
                continue
            for key in sorted(set(e) | set(a)):
                if e.get(key) != a.get(key):
                    lines.append(f"{image_id}.{key}: expected {e.get(key)!r} got {a.get(key)!r}")
    if expected["by_digest"] != actual["by_digest"]:
        lines.append(f"by_digest: expected {expected['by_digest']} got {actual['by_digest']}")
    return "\n".join(lines)
