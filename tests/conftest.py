"""Shared fixtures: temporary stores and the containers/storage golden fixture."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from journalstore import ImageStore

from .cli_support import js, root  # noqa: F401  (fixtures of the CLI tests)

ROOT = Path(__file__).resolve().parent.parent
# A copy of ../shared/fixtures/containers-storage (written by the real Go library), kept in the
# repository so that a clean clone tests against it wherever it is checked out.
FIXTURE = Path(os.environ.get("JOURNALSTORE_FIXTURE", ROOT / "tests" / "fixtures" / "containers-storage"))


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_dir: Path) -> Iterator[ImageStore]:
    s = ImageStore(store_dir, fsync="never")
    yield s
    s.close()


@pytest.fixture
def fixture_copy(tmp_path: Path) -> Path:
    """A writable copy of the directory containers/storage wrote."""
    if not FIXTURE.exists():
        pytest.skip(f"golden fixture not found at {FIXTURE}")
    dst = tmp_path / "cs-store"
    shutil.copytree(FIXTURE / "store", dst)
    return dst
