"""The image record, `Image`, and its images.json form (the containers/storage JSON format).

An `Image` is an immutable NamedTuple: cheap to build on replay, safe to hand to callers.
Its creation time is kept exactly as Go keeps it: nanoseconds since the epoch plus the
UTC offset it was written with, so `created` round-trips through images.json byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any, NamedTuple

from .validation import is_directory_name

# The JSON keys of containers/storage's Image struct, in struct order (images.go).
JSON_KEYS = (
    "id",
    "digest",
    "names",
    "names-history",
    "layer",
    "mapped-layers",
    "metadata",
    "big-data-names",
    "big-data-sizes",
    "big-data-digests",
    "created",
    "flags",
)

MANIFEST_PREFIX = "manifest"

EMPTY_MAP: Mapping[str, Any] = MappingProxyType({})

_NS = 1_000_000_000
_EPOCH_NAIVE = datetime(1970, 1, 1)
_ZONES: dict[int, timezone] = {0: UTC}

# Go's zero time.Time, written when a record carries no creation date.
ZERO_TIME_NS = -62_135_596_800 * _NS


def zone(offset: int) -> timezone:
    """A shared tzinfo for a UTC offset in seconds (one object per distinct offset)."""
    tz = _ZONES.get(offset)
    if tz is None:
        tz = _ZONES[offset] = timezone(timedelta(seconds=offset))
    return tz


def is_manifest_key(key: str) -> bool:
    """Whether a big-data item's digest also identifies the image (its key starts "manifest")."""
    return key.startswith(MANIFEST_PREFIX)


# --------------------------------------------------------------------------- time


def time_from_datetime(value: datetime) -> tuple[int, int]:
    """(nanoseconds since the epoch, UTC offset in seconds) of a datetime; naive means UTC."""
    utcoff = value.utcoffset()
    offset = 0 if utcoff is None else int(utcoff.total_seconds())
    # RFC 3339 offsets carry minutes only; Go drops seconds of an offset the same way.
    offset = int(offset / 60) * 60
    local = value.replace(tzinfo=None)
    delta = local - _EPOCH_NAIVE
    seconds = delta.days * 86400 + delta.seconds - (0 if utcoff is None else int(utcoff.total_seconds()))
    return seconds * _NS + delta.microseconds * 1000, offset


def datetime_from_time(ns: int, offset: int) -> datetime:
    """The aware datetime (microsecond precision) of an exact (ns, offset) time."""
    seconds, frac = divmod(ns + offset * _NS, _NS)
    local = _EPOCH_NAIVE + timedelta(seconds=seconds, microseconds=frac // 1000)
    return local.replace(tzinfo=zone(offset))


_HOUR_TEXT: dict[int, str] = {}  # hours since the epoch (local) -> "YYYY-MM-DDTHH:"
_ZONE_TEXT: dict[int, str] = {0: "Z"}


def format_go_time(ns: int, offset: int) -> str:
    """Go's time.Time MarshalJSON text (RFC 3339 with nanoseconds, trailing zeros trimmed)."""
    seconds, frac = divmod(ns + offset * _NS, _NS)
    hour, rest = divmod(seconds, 3600)
    head = _HOUR_TEXT.get(hour)
    if head is None:
        if len(_HOUR_TEXT) > 65536:
            _HOUR_TEXT.clear()
        local = _EPOCH_NAIVE + timedelta(hours=hour)
        head = _HOUR_TEXT[hour] = f"{local.year:04d}-{local.month:02d}-{local.day:02d}T{local.hour:02d}:"
    minute, second = divmod(rest, 60)
    zone = _ZONE_TEXT.get(offset)
    if zone is None:
        sign = "-" if offset < 0 else "+"
        minutes = abs(offset) // 60
        zone = _ZONE_TEXT[offset] = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    if frac:
        return f"{head}{minute:02d}:{second:02d}.{f'{frac:09d}'.rstrip('0')}{zone}"
    return f"{head}{minute:02d}:{second:02d}{zone}"


_HOURS: dict[str, int] = {}  # "YYYY-MM-DDTHH" -> seconds since the epoch (local to the offset)


def _hour_seconds(prefix: str) -> int:
    seconds = _HOURS.get(prefix)
    if seconds is None:
        if len(_HOURS) > 65536:
            _HOURS.clear()
        delta = datetime(int(prefix[0:4]), int(prefix[5:7]), int(prefix[8:10]), int(prefix[11:13])) - _EPOCH_NAIVE
        seconds = _HOURS[prefix] = delta.days * 86400 + delta.seconds
    return seconds


def _zone_ok(hours: str, minutes: str) -> bool:
    return hours.isdigit() and minutes.isdigit() and hours < "24" and minutes < "60"


def parse_go_time(text: str) -> tuple[int, int]:
    """Parse RFC 3339 text as Go writes it into (ns since the epoch, UTC offset in seconds)."""
    if not isinstance(text, str) or not text.isascii():  # other digits pass isdigit() and int()
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    # Fast path for the exact shape Go writes: YYYY-MM-DDTHH:MM:SS[.digits](Z|+HH:MM|-HH:MM)
    n = len(text)
    if n >= 20 and text[4] == "-" and text[7] == "-" and text[10] == "T" and text[13] == ":" and text[16] == ":":
        last = text[-1]
        if last == "Z":
            offset = 0
            zone_start = n - 1
        elif n >= 25 and text[-3] == ":" and text[-6] in "+-" and _zone_ok(text[-5:-3], text[-2:]):
            zone_start = n - 6
            offset = int(text[-5:-3]) * 3600 + int(text[-2:]) * 60
            if text[-6] == "-":
                offset = -offset
        else:
            zone_start = -1
        if zone_start >= 19:
            frac_ns = 0
            if zone_start > 19:
                frac = text[20:zone_start]
                if text[19] != "." or not frac.isdigit() or len(frac) > 9:
                    zone_start = -1
                else:
                    frac_ns = int(frac) * 10 ** (9 - len(frac))
            clock = text[14:16] + text[17:19]
            prefix = text[:13]
            if zone_start >= 19 and clock.isdigit() and prefix[:4].isdigit():
                try:
                    local = _hour_seconds(prefix) + int(clock[:2]) * 60 + int(clock[2:])
                except ValueError:
                    pass
                else:
                    if int(clock[:2]) < 60 and int(clock[2:]) < 60:
                        return (local - offset) * _NS + frac_ns, offset
    return _parse_go_time_slow(text)


def _parse_go_time_slow(text: str) -> tuple[int, int]:
    if len(text) < 20 or text[10] not in "Tt":
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    try:
        value = datetime.fromisoformat(text.replace("t", "T").replace("z", "Z"))
    except ValueError:
        raise ValueError(f"not an RFC 3339 time: {text!r}") from None
    utcoff = value.utcoffset()
    if utcoff is None:
        raise ValueError(f"RFC 3339 time without a UTC offset: {text!r}")
    if text[-1] not in "Zz" and (len(text) < 6 or not text[-2:].isdigit() or int(text[-2:]) > 59):
        raise ValueError(f"not an RFC 3339 UTC offset in {text!r}")
    frac_ns = 0
    if text[19] == ".":
        end = 20
        while end < len(text) and text[end].isdigit():
            end += 1
        frac_ns = int(text[20:end][:9].ljust(9, "0"))
    offset = int(utcoff.total_seconds())
    delta = value.replace(tzinfo=None, microsecond=0) - _EPOCH_NAIVE
    return (delta.days * 86400 + delta.seconds - offset) * _NS + frac_ns, offset


# --------------------------------------------------------------------------- values


def freeze(value: Any) -> Any:
    """A read-only deep copy of a JSON value: lists become tuples, objects read-only mappings."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The plain JSON form (dicts and lists) of a frozen value."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


def derive_digests(
    digest: str, big_data_names: Sequence[str], big_data_digests: Mapping[str, str]
) -> tuple[str, tuple[str, ...]]:
    """Go's recomputeDigests: the explicit digest first, then manifest digests, deduplicated.

    Returns (digest, digests); an empty digest becomes the first manifest digest.
    """
    digests: list[str] = [digest] if digest else []
    for key in big_data_names:
        if is_manifest_key(key):
            d = big_data_digests.get(key)
            if d and d not in digests:
                digests.append(d)
    if not digest and digests:
        digest = digests[0]
    return digest, tuple(digests)


# --------------------------------------------------------------------------- the record


class Image(NamedTuple):
    """One image record, as containers/storage's `Image` struct holds it.

    (Fields are ordered for cheap construction, mappings last; images.json uses Go's order.)

    Immutable: the tuple, its tuples and its read-only mappings cannot change, so a record
    handed out can never alter the store. `created` is derived from the exact `created_ns`
    and `created_offset`; `digests` is derived from `digest` and the manifest digests.
    """

    id: str
    digest: str
    digests: tuple[str, ...]
    names: tuple[str, ...]
    names_history: tuple[str, ...]
    top_layer: str
    mapped_top_layers: tuple[str, ...]
    metadata: str
    big_data_names: tuple[str, ...]
    created_ns: int
    created_offset: int
    big_data_sizes: Mapping[str, int]
    big_data_digests: Mapping[str, str]
    flags: Mapping[str, Any]
    read_only: bool

    @property
    def created(self) -> datetime:
        """The creation time as an aware datetime with its original UTC offset."""
        return datetime_from_time(self.created_ns, self.created_offset)

    @property
    def created_text(self) -> str:
        """The creation time exactly as Go writes it into images.json."""
        return format_go_time(self.created_ns, self.created_offset)

    def to_json(self) -> dict[str, Any]:
        """The images.json form: Go's keys in struct order, empty values left out."""
        out: dict[str, Any] = {"id": self.id}
        if self.digest:
            out["digest"] = self.digest
        if self.names:
            out["names"] = list(self.names)
        if self.names_history:
            out["names-history"] = list(self.names_history)
        if self.top_layer:
            out["layer"] = self.top_layer
        if self.mapped_top_layers:
            out["mapped-layers"] = list(self.mapped_top_layers)
        if self.metadata:
            out["metadata"] = self.metadata
        if self.big_data_names:
            out["big-data-names"] = list(self.big_data_names)
        if self.big_data_sizes:
            out["big-data-sizes"] = dict(self.big_data_sizes)
        if self.big_data_digests:
            out["big-data-digests"] = dict(self.big_data_digests)
        out["created"] = format_go_time(self.created_ns, self.created_offset)
        if self.flags:
            out["flags"] = thaw(self.flags)
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], *, read_only: bool = False) -> Image:
        """Build a record from its images.json form; raises ValueError on a malformed one."""
        return image_from_json(doc, read_only)



def _field(name: str) -> int:
    return Image._fields.index(name)


# Positions of the fields in an Image tuple, derived from the field list: the reducer and the
# twin build changed copies with tuple.__new__ (no _replace) and must never count by hand.
F_ID = _field("id")
F_DIGEST = _field("digest")
F_DIGESTS = _field("digests")
F_NAMES = _field("names")
F_HISTORY = _field("names_history")
F_MAPPED = _field("mapped_top_layers")
F_METADATA = _field("metadata")
F_BD_NAMES = _field("big_data_names")
F_CREATED_NS = _field("created_ns")
F_BD_SIZES = _field("big_data_sizes")
F_BD_DIGESTS = _field("big_data_digests")
F_FLAGS = _field("flags")
F_READ_ONLY = _field("read_only")
# The mappings come last, then read_only: a twin row is the fields before F_BD_SIZES.
assert Image._fields[F_BD_SIZES:] == ("big_data_sizes", "big_data_digests", "flags", "read_only")

_new = tuple.__new__


def _bad(doc: Mapping[str, Any], key: str) -> ValueError:
    return ValueError(f"images.json: {key!r} of image {doc.get('id')!r} is malformed")


def _strs(doc: Mapping[str, Any], key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise _bad(doc, key)
    try:
        "".join(value)  # C-speed check that every item is a string
    except TypeError:
        raise _bad(doc, key) from None
    return tuple(value)


def _str(doc: Mapping[str, Any], key: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad(doc, key)
    return value


def _sizes(doc: Mapping[str, Any], value: Any) -> Mapping[str, int]:
    if not isinstance(value, Mapping):
        raise _bad(doc, "big-data-sizes")
    value = dict(value)
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, int) or isinstance(v, bool):
            raise _bad(doc, "big-data-sizes")
    return MappingProxyType(value)


def _digest_map(doc: Mapping[str, Any], value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise _bad(doc, "big-data-digests")
    value = dict(value)
    try:
        "".join(value)
        "".join(value.values())
    except TypeError:
        raise _bad(doc, "big-data-digests") from None
    return MappingProxyType(value)


def image_from_json(doc: Mapping[str, Any], read_only: bool) -> Image:
    """`Image.from_json`, as a plain function for the snapshot loader's hot loop.

    Takes ownership of the document's lists and maps (callers pass freshly decoded JSON).
    """
    if not isinstance(doc, dict):
        if not isinstance(doc, Mapping):
            raise ValueError("images.json: an image record is not a JSON object")
        doc = dict(doc)
    get = doc.get
    image_id = get("id")
    if not isinstance(image_id, str) or not image_id:
        raise ValueError(f"images.json: image record without an id: {doc!r:.200}")
    if not is_directory_name(image_id):
        raise ValueError(f"images.json: image ID {image_id!r:.80} cannot name a directory of the store")
    created = get("created")
    if created is None:
        ns, offset = ZERO_TIME_NS, 0
    else:
        ns, offset = parse_go_time(created)
    value = get("big-data-names")
    big_data_names = _strs(doc, "big-data-names", value) if value else ()
    value = get("big-data-digests")
    big_data_digests = _digest_map(doc, value) if value else EMPTY_MAP
    value = get("big-data-sizes")
    big_data_sizes = _sizes(doc, value) if value else EMPTY_MAP
    digest = _str(doc, "digest", get("digest"))
    if big_data_names:
        digest, digests = derive_digests(digest, big_data_names, big_data_digests)
    else:
        digests = (digest,) if digest else ()
    value = get("names")
    names = _strs(doc, "names", value) if value else ()
    value = get("names-history")
    history = _strs(doc, "names-history", value) if value else ()
    value = get("mapped-layers")
    mapped = _strs(doc, "mapped-layers", value) if value else ()
    flags = get("flags")
    if flags:
        if not isinstance(flags, Mapping):
            raise _bad(doc, "flags")
        frozen_flags: Mapping[str, Any] = freeze(flags)
    else:
        frozen_flags = EMPTY_MAP
    return _new(
        Image,
        (
            image_id,
            digest,
            digests,
            names,
            history,
            _str(doc, "layer", get("layer")),
            mapped,
            _str(doc, "metadata", get("metadata")),
            big_data_names,
            ns,
            offset,
            big_data_sizes,
            big_data_digests,
            frozen_flags,
            read_only,
        ),
    )
