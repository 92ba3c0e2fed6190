"""The read methods a live store and a view of the past share: one implementation over a State.

`ImageStore` reads its state caught up with the journal, under its mutex; a `StoreView` reads a
state rebuilt for one moment, which nothing changes. Both answer a lookup the same way.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from .errors import DigestUnknown
from .record import Image
from .reducer import State
from .validation import check_read_key, check_ref


class StateReads:
    """get, exists, images, by_digest, metadata, ...: over the State `_fresh()` returns."""

    _mutex: AbstractContextManager[object]

    def _fresh(self) -> State:
        """The state to answer from (a live store catches up with the journal first)."""
        raise NotImplementedError

    def _moment(self) -> str:
        """Words naming the moment the answers describe, for error messages ('' for now)."""
        return ""

    def get(self, ref: str) -> Image:
        """The image with this ID, name or unique ID prefix; ImageUnknown otherwise."""
        check_ref(ref)
        with self._mutex:
            return self._fresh().find(ref)

    def exists(self, ref: str) -> bool:
        """Whether an image has this ID, name or unique ID prefix."""
        check_ref(ref)
        with self._mutex:
            return self._fresh().lookup(ref) is not None

    def __contains__(self, ref: object) -> bool:
        return isinstance(ref, str) and self.exists(ref)

    def __len__(self) -> int:
        with self._mutex:
            return len(self._fresh())

    def images(self) -> list[Image]:
        """Every image, in creation order (images.json order for an imported store)."""
        with self._mutex:
            return list(self._fresh())

    def by_digest(self, digest: str) -> list[Image]:
        """Images whose digest or a manifest's digest is `digest` ([] if none or malformed)."""
        if not isinstance(digest, str):
            raise TypeError(f"digest must be a string, not {type(digest).__name__}")
        with self._mutex:
            return self._fresh().images_with_digest(digest)

    def metadata(self, ref: str) -> str:
        """The image's metadata string."""
        return self.get(ref).metadata

    def big_data_names(self, ref: str) -> list[str]:
        """Keys of the image's big-data items, in the order they were first set."""
        return list(self.get(ref).big_data_names)

    def big_data_digest(self, ref: str, key: str) -> str:
        """The recorded digest of a big-data item."""
        check_read_key(key)
        image = self.get(ref)
        digest = image.big_data_digests.get(key)
        if digest is None:
            raise DigestUnknown(f"digest of big-data item {key!r} of image {image.id} is not known{self._moment()}")
        return digest
