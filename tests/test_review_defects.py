"""Regression tests for the defects a close reading of the package found (issue 15).

Each test failed before its fix; the test's name says which defect it guards.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from journalstore import ImageStore
from journalstore.audit import HistoryPruned


def test_follow_after_seq_crosses_rotations(tmp_path: Path) -> None:
    """15.1: follow(after_seq) starts in the segment holding after_seq + 1, not the newest."""
    with ImageStore(tmp_path / "s", fsync="never") as store:
        for i in range(3):
            store.create(names=[f"a{i}"])
        store.compact()
        store.create(names=["b"])
        store.compact()
        store.create(names=["c"])
        assert [e.seq for e in store.follow(after_seq=0).poll()] == [1, 2, 3, 4, 5]
        assert [e.seq for e in store.follow(after_seq=2).poll()] == [3, 4, 5]
        follower = store.follow(after_seq=4)
        assert [e.seq for e in follower.poll()] == [5]
        store.compact()
        store.create(names=["d"])
        assert [e.seq for e in follower.poll()] == [6]
        follower.close()


def test_follow_from_pruned_history_is_refused(tmp_path: Path) -> None:
    """15.1: following from a record that retention removed is an error, never a silent gap."""
    with ImageStore(tmp_path / "s", fsync="never") as store:
        for i in range(3):
            store.create(names=[f"a{i}"])
        store.compact()
        store.create(names=["b"])
        store.prune_journal(keep_segments=0)
        with pytest.raises(HistoryPruned) as info:
            store.follow(after_seq=1)
        assert info.value.first_seq == 4
        assert [e.seq for e in store.follow(after_seq=3).poll()] == [4]
