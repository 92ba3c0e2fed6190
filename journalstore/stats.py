"""Counts and sizes of a store, from its public API, its journal files and images.json.

Shared by `journalstore stats` and the demo; reads only, takes no lock.
"""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime
from typing import Any

from .blobs import Blobs
from .fsio import DEFAULT_DISK
from .journal import parse_segment_name
from .layout import JOURNAL_DIR
from .snapshot import IMAGES_JSON
from .store import ImageStore


def _utc_text(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def journal_segments(root: str) -> list[tuple[str, int]]:
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
    segments = journal_segments(store.path)
    snapshot: dict[str, Any] | None = None
    with contextlib.suppress(FileNotFoundError):
        st = os.stat(os.path.join(store.path, IMAGES_JSON))
        snapshot = {"file": IMAGES_JSON, "bytes": st.st_size, "modified": _utc_text(st.st_mtime)}
    position = store.position
    blob_count = blob_bytes = 0
    for _digest, path in Blobs(DEFAULT_DISK, os.path.join(store.path, JOURNAL_DIR), False).listing():
        with contextlib.suppress(FileNotFoundError):
            blob_bytes += os.stat(path).st_size
            blob_count += 1
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
        "kept_blobs": blob_count,  # past big-data bytes kept for history (journal/blobs)
        "kept_blob_bytes": blob_bytes,
        "position": {"segment": position.segment, "offset": position.offset},
    }
