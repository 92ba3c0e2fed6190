"""journalstore: the containers/storage image store, rebuilt as an event-sourced journal.

    from journalstore import ImageStore
    with ImageStore("/var/lib/mystore") as store:
        image = store.create(names=["quay.io/a/b:1"], layer="L1")
"""

from .errors import (
    BigDataNotKept,
    BigDataUnknown,
    DigestUnknown,
    DuplicateID,
    DuplicateImageNames,
    DuplicateName,
    HistoryPruned,
    ImageUnknown,
    InvalidBigDataName,
    InvalidDigest,
    InvalidFlagValue,
    InvalidID,
    InvalidName,
    JournalCorrupt,
    LockTimeout,
    RecordTooLarge,
    SizeUnknown,
    SnapshotMismatch,
    StoreError,
    StoreIsReadOnly,
    StoreNotFound,
    StoreWarning,
)
from .journal import Position
from .record import Image
from .store import ImageStore

__version__ = "0.1.0"

__all__ = [
    "BigDataNotKept",
    "BigDataUnknown",
    "DigestUnknown",
    "DuplicateID",
    "DuplicateImageNames",
    "DuplicateName",
    "HistoryPruned",
    "Image",
    "ImageStore",
    "ImageUnknown",
    "InvalidBigDataName",
    "InvalidDigest",
    "InvalidFlagValue",
    "InvalidID",
    "InvalidName",
    "JournalCorrupt",
    "LockTimeout",
    "Position",
    "RecordTooLarge",
    "SizeUnknown",
    "SnapshotMismatch",
    "StoreError",
    "StoreIsReadOnly",
    "StoreNotFound",
    "StoreWarning",
]
