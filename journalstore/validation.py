"""Checks on caller input, run before any event is built: a rejected call changes nothing.

Each check raises the documented exception: TypeError for a wrong type, a StoreError that is
also a ValueError for a bad value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import InvalidBigDataName, InvalidDigest, InvalidFlagValue, InvalidID, InvalidName

# File and directory names the store itself uses at its top level: never an image ID.
RESERVED_NAMES = frozenset({"images.json", "images.lock", "journal"})

MAX_FILE_NAME = 255

# The algorithms go-digest makes available to containers/storage, with their hex lengths.
_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+")

_INT_MIN = -(1 << 63)
_UINT_MAX = (1 << 64) - 1


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_directory_name(image_id: str) -> bool:
    """Whether an image ID read from a record or a file may name a directory of the store
    (cheap: checked on every path built from an ID; `check_id` says what is wrong)."""
    return (
        bool(image_id)
        and "/" not in image_id
        and "\x00" not in image_id
        and image_id not in (".", "..")
        and image_id not in RESERVED_NAMES
    )


def check_id(image_id: object) -> str:
    """An explicit image ID: a string that can name a directory of the store."""
    if not isinstance(image_id, str):
        raise TypeError(f"image ID must be a string, not {type(image_id).__name__}")
    if not image_id:
        raise InvalidID("image ID is empty")
    if "/" in image_id or "\x00" in image_id:
        raise InvalidID(f"image ID {image_id!r} contains '/' or NUL")
    if image_id in (".", ".."):
        raise InvalidID(f"image ID {image_id!r} is not a directory name")
    if not _encodable(image_id):
        raise InvalidID(f"image ID {image_id!r} cannot be encoded as UTF-8")
    if len(image_id.encode("utf-8")) > MAX_FILE_NAME:
        raise InvalidID(f"image ID {image_id[:40]!r}... is longer than {MAX_FILE_NAME} bytes")
    if image_id in RESERVED_NAMES:
        raise InvalidID(f"image ID {image_id!r} is a name the store uses for its own files")
    return image_id


def check_read_key(key: object) -> str:
    """A big-data key given to a read: a non-empty string (any such key may be asked for)."""
    if not isinstance(key, str):
        raise TypeError(f"big-data key must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidBigDataName("big-data key is empty")
    return key


def check_ref(ref: object) -> str:
    """A reference (ID, name or ID prefix) must be a string; any string may be looked up."""
    if not isinstance(ref, str):
        raise TypeError(f"image reference must be a string, not {type(ref).__name__}")
    return ref


def check_names(names: object, what: str = "names") -> tuple[str, ...]:
    """A list of names: each a non-empty, encodable string; a bare string is refused."""
    if type(names) is list or type(names) is tuple:
        out = tuple(names)
    elif isinstance(names, str | bytes):
        raise TypeError(f"{what} must be a list of strings, not a single {type(names).__name__}")
    elif isinstance(names, Iterable):
        out = tuple(names)
    else:
        raise TypeError(f"{what} must be a list of strings, not {type(names).__name__}")
    for name in out:
        if type(name) is str and name and name.isascii():
            continue
        if not isinstance(name, str):
            raise InvalidName(f"name {name!r} is not a string")
        if not name:
            raise InvalidName("a name cannot be empty")
        if not _encodable(name):
            raise InvalidName(f"name {name!r} cannot be encoded as UTF-8")
    return out


def check_str(value: object, what: str) -> str:
    """A plain string argument (layer, metadata, ...) that must be encodable."""
    if type(value) is str and value.isascii():
        return value
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, not {type(value).__name__}")
    if not _encodable(value):
        raise InvalidName(f"{what} {value[:40]!r} cannot be encoded as UTF-8")
    return value


_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


def digest_is_valid(digest: str) -> bool:
    """go-digest's Validate for the algorithms containers/storage supports."""
    if _SHA256.fullmatch(digest):
        return True
    algorithm, sep, encoded = digest.partition(":")
    size = _DIGEST_HEX.get(algorithm)
    return bool(sep) and size is not None and len(encoded) == size and _HEX.fullmatch(encoded) is not None


def check_digest(digest: object, what: str = "digest") -> str:
    """A digest string `algorithm:hex` (sha256, sha384 or sha512, lowercase hex)."""
    if not isinstance(digest, str):
        raise TypeError(f"{what} must be a string, not {type(digest).__name__}")
    if not digest_is_valid(digest):
        raise InvalidDigest(f"{what} {digest[:80]!r} is not a valid digest (algorithm:hex)")
    return digest


def check_flag_key(key: object) -> str:
    """A flag key: an encodable string."""
    if not isinstance(key, str):
        raise InvalidFlagValue(f"flag key {key!r} is not a string")
    if not _encodable(key):
        raise InvalidFlagValue(f"flag key {key!r} cannot be encoded as UTF-8")
    return key


MAX_FLAG_DEPTH = 100  # msgpack packs at most 511 levels; records are copied recursively


def check_flag_value(value: Any, path: str = "value", depth: int = 0) -> None:
    """A value JSON and msgpack can both hold, and read back unchanged."""
    if depth > MAX_FLAG_DEPTH:
        raise InvalidFlagValue(f"flag {path[:60]}... is nested deeper than {MAX_FLAG_DEPTH} levels")
    if value is None or isinstance(value, bool | str):
        if isinstance(value, str) and not _encodable(value):
            raise InvalidFlagValue(f"flag {path} {value!r} cannot be encoded as UTF-8")
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _UINT_MAX:
            raise InvalidFlagValue(f"flag {path} {value} does not fit in 64 bits")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidFlagValue(f"flag {path} {value} is not a finite number")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_flag_value(item, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, Mapping):
        for k, item in value.items():
            if not isinstance(k, str) or not _encodable(k):
                raise InvalidFlagValue(f"flag {path} has a key {k!r} that is not a string")
            check_flag_value(item, f"{path}[{k!r}]", depth + 1)
        return
    raise InvalidFlagValue(f"flag {path} of type {type(value).__name__} is not a JSON value")


def check_flags(flags: object) -> dict[str, Any]:
    """A mapping of flags given to create()."""
    if flags is None:
        return {}
    if not isinstance(flags, Mapping):
        raise TypeError(f"flags must be a mapping, not {type(flags).__name__}")
    for key, value in flags.items():
        check_flag_key(key)
        check_flag_value(value, repr(key))
    return dict(flags)


def check_bytes(data: object, what: str = "data") -> bytes:
    """Big-data bytes: any bytes-like object, copied so later changes by the caller do not leak."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"{what} must be bytes, not {type(data).__name__}")
