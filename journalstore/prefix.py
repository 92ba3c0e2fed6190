"""A sorted index of image IDs answering "which single ID starts with this prefix" in O(log n).

A list of sorted chunks (the layout of sortedcontainers' SortedList): inserting or removing
one ID moves at most one chunk of pointers, so writes stay flat as the store grows, and a
lookup is two binary searches.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable

_LOAD = 512


class PrefixIndex:
    """Sorted IDs; `unique(prefix)` finds the one ID with that prefix, if exactly one has it."""

    __slots__ = ("_chunks", "_len", "_maxes")

    def __init__(self, ids: Iterable[str] = ()) -> None:
        ordered = sorted(ids)
        self._chunks: list[list[str]] = [ordered[i : i + _LOAD] for i in range(0, len(ordered), _LOAD)]
        self._maxes: list[str] = [chunk[-1] for chunk in self._chunks]
        self._len = len(ordered)

    def __len__(self) -> int:
        return self._len

    def add(self, image_id: str) -> None:
        """Insert an ID (the caller guarantees it is not present)."""
        maxes = self._maxes
        if not maxes:
            self._chunks.append([image_id])
            maxes.append(image_id)
        else:
            i = bisect_right(maxes, image_id)
            if i == len(maxes):
                i -= 1
                self._chunks[i].append(image_id)
                maxes[i] = image_id
            else:
                insort(self._chunks[i], image_id)
            if len(self._chunks[i]) > 2 * _LOAD:
                chunk = self._chunks[i]
                self._chunks[i : i + 1] = [chunk[:_LOAD], chunk[_LOAD:]]
                maxes[i : i + 1] = [chunk[_LOAD - 1], chunk[-1]]
        self._len += 1

    def remove(self, image_id: str) -> None:
        """Remove an ID if present."""
        maxes = self._maxes
        i = bisect_left(maxes, image_id)
        if i == len(maxes):
            return
        chunk = self._chunks[i]
        j = bisect_left(chunk, image_id)
        if j == len(chunk) or chunk[j] != image_id:
            return
        del chunk[j]
        self._len -= 1
        if not chunk:
            del self._chunks[i]
            del maxes[i]
        elif j == len(chunk):
            maxes[i] = chunk[-1]

    def _at_or_after(self, key: str) -> tuple[int, int]:
        i = bisect_left(self._maxes, key)
        if i == len(self._maxes):
            return i, 0
        return i, bisect_left(self._chunks[i], key)

    def _get(self, i: int, j: int) -> str | None:
        chunks = self._chunks
        while i < len(chunks):
            if j < len(chunks[i]):
                return chunks[i][j]
            i, j = i + 1, 0
        return None

    def matches(self, prefix: str, limit: int = 2) -> list[str]:
        """Up to `limit` IDs that start with `prefix`, in sorted order."""
        if not prefix:
            return []
        i, j = self._at_or_after(prefix)
        out: list[str] = []
        while len(out) < limit:
            candidate = self._get(i, j)
            if candidate is None or not candidate.startswith(prefix):
                break
            out.append(candidate)
            j += 1
        return out

    def unique(self, prefix: str) -> str | None:
        """The only ID starting with `prefix`, or None when none or several do."""
        found = self.matches(prefix, 2)
        return found[0] if len(found) == 1 else None
