"""The exceptions of journalstore: one base class, lookups also KeyError, bad values also ValueError.

Every message names the image, key, name or offset involved, so one line on stderr is enough
to act on.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""

    def __str__(self) -> str:
        # KeyError would otherwise print the repr of its message, quotes and all.
        return str(self.args[0]) if self.args else self.__class__.__name__


class ImageUnknown(StoreError, KeyError):
    """No image has this ID, name or unique ID prefix."""


class DuplicateID(StoreError):
    """An image with this ID already exists."""


class DuplicateName(StoreError):
    """A name given to a new image is already used by another image."""


class DuplicateImageNames(StoreError):
    """An images.json read without the right to fix it gives one name to several images."""


class StoreIsReadOnly(StoreError):
    """A write was asked of a store opened read-only (or that this user cannot write)."""


class InvalidID(StoreError, ValueError):
    """An image ID that cannot name a directory of the store."""


class InvalidName(StoreError, ValueError):
    """A name that is not a non-empty, encodable string."""


class InvalidDigest(StoreError, ValueError):
    """A digest that is not `algorithm:hex` of a supported algorithm."""


class InvalidBigDataName(StoreError, ValueError):
    """A big-data key that is empty or whose file name would be too long."""


class InvalidFlagValue(StoreError, ValueError):
    """A flag key or value that JSON and msgpack cannot both represent."""


class RecordTooLarge(StoreError, ValueError):
    """A mutation whose journal record would exceed the maximum frame size."""


class BigDataUnknown(StoreError, KeyError):
    """The image has no big-data item with this key."""


class DigestUnknown(StoreError, KeyError):
    """No digest is recorded for this big-data key."""


class SizeUnknown(StoreError, KeyError):
    """No size is recorded for this big-data key and no data can be read."""


class LockTimeout(StoreError, TimeoutError):
    """The writers' lock could not be taken within `lock_timeout` seconds."""


class StoreNotFound(StoreError, FileNotFoundError):
    """A read-only open of a directory that holds no store."""


class SnapshotMismatch(StoreError):
    """images.json does not match the snapshot the journal starts from, and cannot be reconciled."""


class JournalCorrupt(StoreError):
    """A damaged record with valid records after it (or in a closed segment): never cut silently.

    `segment` is the segment number and `offset` the byte offset of the damaged record
    within that segment file.
    """

    def __init__(self, message: str, *, segment: int, offset: int) -> None:
        super().__init__(message)
        self.segment = segment
        self.offset = offset


__all__ = [
    "BigDataNotKept",
    "BigDataUnknown",
    "DigestUnknown",
    "DuplicateID",
    "DuplicateImageNames",
    "DuplicateName",
    "EventError",
    "ForeignDamage",
    "HistoryPruned",
    "ImageUnknown",
    "InvalidBigDataName",
    "InvalidDigest",
    "InvalidFlagValue",
    "InvalidID",
    "InvalidName",
    "JournalCorrupt",
    "LockTimeout",
    "RecordTooLarge",
    "SizeUnknown",
    "SnapshotCorrupt",
    "SnapshotMismatch",
    "StoreError",
    "StoreIsReadOnly",
    "StoreNotFound",
    "StoreWarning",
]


class HistoryPruned(StoreError):
    """The asked-for past lies before the oldest journal segment kept (see retention)."""

    def __init__(self, message: str, *, first_seq: int) -> None:
        super().__init__(message)
        self.first_seq = first_seq


class BigDataNotKept(BigDataUnknown):
    """The bytes a past big-data item had were overwritten or deleted since: the journal keeps
    only their size and digest."""


class SnapshotCorrupt(SnapshotMismatch):
    """images.json cannot be read as a containers/storage image list."""


class EventError(StoreError):
    """An event that cannot apply to the state (its image is unknown, its name is taken, ...).

    Never raised for events the store wrote itself; on replay it means the journal was altered.
    """


class ForeignDamage(SnapshotMismatch):
    """images.json changed in a way containers/storage could not have made (not a list of
    images, or rewritten while the last-writer bytes of images.lock did not change): it is
    never merged automatically (docs/coexistence.md)."""


class StoreWarning(UserWarning):
    """Something about the store a caller should know, that does not stop it from working."""
