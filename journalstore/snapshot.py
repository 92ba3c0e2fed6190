"""Snapshots: images.json exactly as containers/storage reads and writes it.

The encoder reproduces Go's encoding/json output for the Image struct: keys in struct order,
empty values left out (omitempty), map keys sorted, `<`, `>`, `&`, U+2028 and U+2029 escaped,
other non-ASCII text raw, numbers formatted as Go formats float64, no trailing newline.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

import msgpack
import xxhash

from .errors import SnapshotCorrupt
from .record import EMPTY_MAP, F_BD_SIZES, F_CREATED_NS, JSON_KEYS, Image, format_go_time, image_from_json

IMAGES_JSON = "images.json"

GO_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def snapshot_digest(data: bytes) -> str:
    """The checksum a segment header records for the snapshot it starts from."""
    return xxhash.xxh3_64_hexdigest(data)


def archive_name(segment: int) -> str:
    """The journal-directory name of the snapshot segment `segment` starts from."""
    return f"snapshot-{segment:08d}.json"


def parse_archive_name(name: str) -> int | None:
    if name.startswith("snapshot-") and name.endswith(".json") and name[9:-5].isdigit():
        return int(name[9:-5])
    return None


# --------------------------------------------------------------------------- encoding


def go_float(value: float) -> str:
    """Go's encoding/json text for a float64: shortest digits, 'e' form below 1e-6 or from 1e21."""
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0"
    text = repr(abs(value))
    mantissa, _, exp_text = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    number = int(whole + frac)
    exponent = int(exp_text or 0) - len(frac)
    while number % 10 == 0:
        number //= 10
        exponent += 1
    digits = str(number)
    magnitude = abs(value)
    if magnitude < 1e-6 or magnitude >= 1e21:
        sci = len(digits) - 1 + exponent
        head = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        tail = f"e-{-sci}" if sci < 0 else f"e+{sci:02d}"
        if sci < 0 and -sci >= 10:
            tail = f"e-{-sci:02d}"
        return sign + head + tail
    if exponent >= 0:
        return sign + digits + "0" * exponent
    point = len(digits) + exponent
    if point > 0:
        return sign + digits[:point] + "." + digits[point:]
    return sign + "0." + "0" * -point + digits


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, Mapping):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_float(v) for v in value)
    return False


def _go_value(value: Any) -> str:
    """Encode a JSON value the way Go does, for values holding floats (rare: flags only)."""
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, Mapping):
        items = ",".join(f"{_encode(k)}:{_go_value(value[k])}" for k in sorted(value))
        return "{" + items + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_go_value(v) for v in value) + "]"
    return _encode(value)


def _sorted_json(value: Any) -> Any:
    """A frozen value as plain JSON with object keys sorted (Go sorts map keys)."""
    if isinstance(value, Mapping):
        return {k: _sorted_json(value[k]) for k in sorted(value)}
    if isinstance(value, tuple | list):
        return [_sorted_json(v) for v in value]
    return value


def image_json_text(image: Image) -> str:
    """One record as Go writes it (before the HTML escaping of the whole document)."""
    out: dict[str, Any] = {"id": image.id}
    if image.digest:
        out["digest"] = image.digest
    if image.names:
        out["names"] = image.names
    if image.names_history:
        out["names-history"] = image.names_history
    if image.top_layer:
        out["layer"] = image.top_layer
    if image.mapped_top_layers:
        out["mapped-layers"] = image.mapped_top_layers
    if image.metadata:
        out["metadata"] = image.metadata
    if image.big_data_names:
        out["big-data-names"] = image.big_data_names
    if image.big_data_sizes:
        out["big-data-sizes"] = {k: image.big_data_sizes[k] for k in sorted(image.big_data_sizes)}
    if image.big_data_digests:
        out["big-data-digests"] = {k: image.big_data_digests[k] for k in sorted(image.big_data_digests)}
    out["created"] = format_go_time(image.created_ns, image.created_offset)
    flags = image.flags
    if flags:
        if _has_float(flags):
            return _encode(out)[:-1] + ',"flags":' + _go_value(flags) + "}"
        out["flags"] = _sorted_json(flags)
    return _encode(out)


def encode(images: Iterable[Image]) -> bytes:
    """The images.json bytes for these records, in order."""
    text = "[" + ",".join(map(image_json_text, images)) + "]"
    return text.translate(GO_ESCAPES).encode("utf-8")


# --------------------------------------------------------------------------- decoding


def decode(data: bytes, source: str) -> list[dict[str, Any]]:
    """The image documents of an images.json (an empty file or `null` holds none)."""
    if not data.strip():
        return []
    try:
        docs = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise SnapshotCorrupt(f"{source}: not valid JSON ({exc})") from None
    if docs is None:
        return []
    if not isinstance(docs, list):
        raise SnapshotCorrupt(f"{source}: not a JSON array of images")
    return docs


def images_from_docs(docs: list[dict[str, Any]], source: str, read_only: bool) -> list[Image]:
    """Records from images.json documents; raises SnapshotCorrupt naming the bad record."""
    try:
        return [image_from_json(doc, read_only) for doc in docs]
    except ValueError as exc:
        raise SnapshotCorrupt(f"{source}: {exc}") from None
    except RecursionError:  # flags nested deeper than a record can be copied
        raise SnapshotCorrupt(f"{source}: a record's flags are nested too deep") from None


# --------------------------------------------------------------------------- the index twin
#
# images.json is the interoperable snapshot, but parsing JSON and RFC 3339 times is most of a
# cold open. Each snapshot we write also gets a binary twin (ZODB's .index next to Data.fs):
# the same records as msgpack rows in `Image` field order, with times as integers, naming the
# xxh3 of the images.json bytes it mirrors. A twin that is missing, damaged or names other
# bytes is ignored and images.json is parsed instead.

TWIN_MAGIC = b"JSTORIDX"
TWIN_VERSION = 4
# The Image fields this version's rows hold, in order (the mappings and read_only travel apart).
# A change to Image's fields changes this list and must bump TWIN_VERSION: a test ties the two.
TWIN_FIELDS = Image._fields[:F_BD_SIZES]
_TWIN_HEADER = struct.Struct("<8sHHIQ")  # magic, version, reserved, json size, payload xxh3


def twin_name(segment: int) -> str:
    """The journal-directory name of the binary twin of snapshot `segment`."""
    return f"snapshot-{segment:08d}.msgpack"


_MAPS = F_BD_SIZES  # Image fields from here on are the mappings (then read_only)


_INT64 = range(-(1 << 63), 1 << 63)
_CREATED = F_CREATED_NS


class Twin(NamedTuple):
    """What a binary twin holds: the records, and the order of images that share a digest."""

    images: list[Image]
    digest_orders: Mapping[str, Sequence[str]]


def encode_twin(
    images: Iterable[Image], digest_orders: Mapping[str, Sequence[str]], json_digest: str, json_size: int
) -> bytes:
    """The twin of a snapshot. Rows are Images up to their mappings; images with mappings (or a
    creation time outside msgpack's 64-bit integers) get their extra fields in `maps`."""
    rows: list[tuple[Any, ...]] = []
    maps: dict[int, tuple[Any, ...]] = {}
    for index, image in enumerate(images):
        row = image[:_MAPS]
        created: tuple[int, int] | None = None
        if image.created_ns not in _INT64:
            created = divmod(image.created_ns, 1_000_000_000)
            row = (*row[:_CREATED], 0, *row[_CREATED + 1 :])
        rows.append(row)
        if image.big_data_sizes or image.big_data_digests or image.flags or created is not None:
            maps[index] = (image.big_data_sizes or None, image.big_data_digests or None, image.flags or None, created)
    payload = msgpack.packb(
        {"json_xxh3": json_digest, "images": rows, "maps": maps, "digest_orders": dict(digest_orders)},
        use_bin_type=True,
        default=_plain,
    )
    head = _TWIN_HEADER.pack(TWIN_MAGIC, TWIN_VERSION, 0, json_size, xxhash.xxh3_64_intdigest(payload))
    return head + payload


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def decode_twin(data: bytes, json_digest: str, read_only: bool) -> Twin | None:
    """The records of a twin, or None if it does not mirror the images.json with that digest."""
    if len(data) < _TWIN_HEADER.size:
        return None
    magic, version, _reserved, _size, digest = _TWIN_HEADER.unpack_from(data)
    payload = memoryview(data)[_TWIN_HEADER.size :]
    if magic != TWIN_MAGIC or version != TWIN_VERSION or xxhash.xxh3_64_intdigest(payload) != digest:
        return None
    try:
        body = msgpack.unpackb(payload, raw=False, use_list=False, object_hook=MappingProxyType, strict_map_key=False)
    except Exception:  # a damaged twin is only a missed shortcut
        return None
    if not isinstance(body, Mapping) or body.get("json_xxh3") != json_digest:
        return None
    rows = body.get("images")
    maps = body.get("maps")
    orders = body.get("digest_orders")
    if not isinstance(rows, tuple) or not isinstance(maps, Mapping) or not isinstance(orders, Mapping):
        return None
    new = tuple.__new__
    plain = (EMPTY_MAP, EMPTY_MAP, EMPTY_MAP, read_only)
    try:
        out = [new(Image, row + plain) for row in rows]
        for index, (sizes, digests, flags, created) in maps.items():
            row = rows[index]
            if created is not None:
                row = (*row[:_CREATED], created[0] * 1_000_000_000 + created[1], *row[_CREATED + 1 :])
            out[index] = new(Image, (*row, sizes or EMPTY_MAP, digests or EMPTY_MAP, flags or EMPTY_MAP, read_only))
    except (TypeError, ValueError, IndexError):
        return None
    if out and len(out[0]) != len(Image._fields):
        return None
    return Twin(out, orders)


# --------------------------------------------------------------------------- foreign rewrites


def merge_events(
    base: Iterable[Image], theirs: Iterable[Image], ours: Mapping[str, Image], source: str
) -> list[dict[str, Any]]:
    """Events that bring `ours` up to another program's rewrite of images.json (three-way).

    `base` is the snapshot both started from, `theirs` what the other program wrote, `ours` the
    journal's current records by ID. A field the other program changed takes its value; fields
    it left alone keep ours. An image it added is added (or replaces ours of the same ID); an
    image it removed is deleted; an image it changed that we deleted stays deleted.
    """
    base_docs = {image.id: image.to_json() for image in base}
    their_docs = {image.id: image.to_json() for image in theirs}
    added = [i for i in their_docs if i not in base_docs]
    removed = [i for i in base_docs if i not in their_docs]
    changed = [i for i, doc in their_docs.items() if i in base_docs and doc != base_docs[i]]
    events: list[dict[str, Any]] = [
        {"op": "external-rewrite", "source": source, "added": added, "changed": changed, "removed": removed}
    ]
    for image_id in added:
        events.append({"op": "put-image", "id": image_id, "image": their_docs[image_id]})
    for image_id in changed:
        mine = ours.get(image_id)
        if mine is None:
            continue  # we deleted it since the snapshot: our delete stands
        merged = mine.to_json()
        before, after = base_docs[image_id], their_docs[image_id]
        for key in JSON_KEYS:
            if before.get(key) != after.get(key):
                if key in after:
                    merged[key] = after[key]
                else:
                    merged.pop(key, None)
        ordered = {key: merged[key] for key in JSON_KEYS if key in merged}
        if ordered != mine.to_json():
            events.append({"op": "put-image", "id": image_id, "image": ordered})
    for image_id in removed:
        if image_id in ours:
            events.append({"op": "delete", "id": image_id})
    return events
