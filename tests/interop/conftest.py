"""Fixtures of the interop tests: the Go tools, a built jsgo, fresh vfs stores with real images.

Everything that needs Go skips, naming the missing Debian package and `make interop-deps`, when
the tools are not installed; CI installs them first (.ci/run), so there they always run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import GoFailed, GoStore, build_jsgo, cache_dir, missing_tools

MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}'
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'


@pytest.fixture(scope="session")
def go_tools() -> None:
    """Skip unless containers-storage, go and the library's source are installed."""
    reason = missing_tools()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def jsgo(go_tools: None) -> Path:
    """tests/interop/go/jsgo built once (cached by a hash of its source); skip if the build fails."""
    try:
        return build_jsgo(cache_dir())
    except (GoFailed, OSError) as exc:
        pytest.skip(f"building jsgo against /usr/share/gocode failed: {exc}")


@pytest.fixture
def go_store(tmp_path: Path, jsgo: Path) -> GoStore:
    """A fresh containers/storage root (vfs) under tmp_path with no images yet."""
    store = GoStore(root=tmp_path / "cs-root", runroot=tmp_path / "cs-run", jsgo=jsgo)
    store.cs("images")  # GetStore creates the directories and an empty images.lock
    return store


@pytest.fixture
def go_images(go_store: GoStore) -> tuple[GoStore, str, str]:
    """go_store with two images made by the containers-storage CLI: (store, id of A, id of B).

    A: names quay.io/interop/a:1 and a:latest, metadata, a manifest, a config under a key that
    needs base64 in its file name, and a plain-named item. B: one name and a manifest.
    """
    a = go_store.create_image(
        "quay.io/interop/a:1",
        "a:latest",
        metadata='{"origin":"go"}',
        big_data={"manifest": MANIFEST, "sha256:Config/A": CONFIG, "notes.v1": b"plain name"},
    )
    b = go_store.create_image("quay.io/interop/b:1", big_data={"manifest": MANIFEST + b" "})
    return go_store, a, b
