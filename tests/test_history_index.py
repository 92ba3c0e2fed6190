"""History by image through back-pointers (journal format 2), the format-1 fallback, and the
past big-data bytes kept as blobs (issue 13)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from journalstore import ImageStore, ImageUnknown, history_index, history_links, replay
from journalstore import journal as jn
from journalstore.audit import BigDataNotKept, Journal
from journalstore.fsio import DEFAULT_DISK
from journalstore.stats import store_stats

from .helpers import history_problems


def kinds(store: ImageStore, ref: str, **kw: Any) -> list[tuple[int, str, str | None]]:
    return [(e.seq, e.kind, e.image_id) for e in store.history(ref, **kw)]


def scanned(store: ImageStore, ref: str) -> list[tuple[int, str, str | None]]:
    """The history a full replay finds (the format-1 way), to compare the linked walk with."""
    return [(e.seq, e.kind, e.image_id) for e in Journal(DEFAULT_DISK, str(store.path)).history(ref)]


def busy_life(s: ImageStore, rounds: int = 3, compact: bool = True) -> list[str]:
    """Creates, renames, names taken by others, big data, batches, deletes, across compactions."""
    ids = []
    for r in range(rounds):
        a = s.create(names=[f"a{r}:1"], big_data=[("manifest", f"m{r}".encode())])
        b = s.create(names=[f"b{r}"])
        s.set_names(a.id, [f"a{r}:2", "shared"])  # "shared" taken from the previous round's a
        s.add_names(b.id, [f"a{r}:2"])  # b takes a name from a
        with s.batch():
            s.set_metadata(a.id, f"meta {r}")
            s.set_big_data(a.id, "manifest", f"m{r} again".encode())
            s.add_mapped_top_layer(b.id, "L")
        if compact:
            s.compact()
        ids += [a.id, b.id]
    s.delete(ids[0])
    return ids


def test_linked_history_equals_the_full_replay_across_segments(store_dir: Path) -> None:
    with ImageStore(store_dir, fsync="never") as s:
        ids = busy_life(s)
        for image_id in ids:
            assert kinds(s, image_id) == scanned(s, image_id), image_id
        for name in ("a0:1", "a0:2", "a1:1", "shared", "b0"):
            assert kinds(s, name) == scanned(s, name), name
        first = ids[0]
        assert [k for _, k, _ in kinds(s, first)][-1] == "delete"
        assert ("set-names", ids[2]) in [(k, i) for _, k, i in kinds(s, first)]  # took "shared"
        assert kinds(s, "a0:1", since=3, until=8, kinds=["set-names", "add-names"]) == [
            e for e in scanned(s, "a0:1") if 3 <= e[0] <= 8 and e[1] in ("set-names", "add-names")
        ]
        with pytest.raises(ImageUnknown):
            list(s.history("never-was"))
    # A fresh reader: the index comes from the newest snapshot's sidecar plus the segment after it.
    with ImageStore(store_dir, read_only=True) as r:
        assert history_problems(r, limit=100) == []


def test_one_image_history_reads_only_its_own_records(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with ImageStore(store_dir, fsync="never") as s:
        ids = busy_life(s, rounds=4)
        for i in range(50):
            s.create(names=[f"noise{i}"])
    with ImageStore(store_dir, read_only=True) as r:
        expected = scanned(r, ids[2])

        def no_scan(*_a: Any, **_k: Any) -> Any:
            raise AssertionError("history(ref) replayed the journal")

        monkeypatch.setattr(replay, "records", no_scan)
        assert kinds(r, ids[2]) == expected
        assert kinds(r, "a1:1") == expected


def test_history_without_the_sidecar_or_after_pruning(store_dir: Path) -> None:
    with ImageStore(store_dir, fsync="never") as s:
        ids = busy_life(s)
    journal = store_dir / "journal"
    for name in os.listdir(journal):
        if name.startswith("history-"):
            os.unlink(journal / name)  # lost sidecars: the links in the records still hold
    with ImageStore(store_dir, fsync="never") as s:
        assert history_problems(s, limit=100) == []
        s.create(names=["after"])
        s.prune_journal(keep_segments=1)
        first = s.history_start
        for image_id in ids:
            got = kinds(s, image_id)
            assert all(seq >= first for seq, _, _ in got)
            assert got == [e for e in scanned(s, image_id) if e[0] >= first] or got == scanned(s, image_id)


def write_v1(monkeypatch: pytest.MonkeyPatch, fn: Any) -> None:
    """Run `fn` as journalstore wrote before history links: format-1 segments, no link fields."""
    with monkeypatch.context() as m:
        m.setattr(jn, "FORMAT_VERSION", 1)
        m.setattr(history_links, "record_fields", lambda live, txn, seq: ({}, None))
        m.setattr(history_index, "stage", lambda *a: "")  # no sidecars either
        fn()


def test_a_version_1_journal_is_read_and_its_history_found_by_a_scan(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids: list[str] = []

    def old_writer() -> None:
        with ImageStore(store_dir, fsync="never") as s:
            ids.extend(busy_life(s, rounds=2))

    write_v1(monkeypatch, old_writer)
    with open(store_dir / "journal" / jn.segment_name(1), "rb") as f:
        assert jn.SEGMENT_HEADER.unpack_from(f.read(jn.SEGMENT_HEADER.size))[1] == 1
    for name in os.listdir(store_dir / "journal"):
        assert not name.startswith("history-") and name != "blobs"
    with ImageStore(store_dir, fsync="never") as s:
        # Records of format 1: found by a scan, exactly as before.
        for image_id in ids:
            assert kinds(s, image_id) == scanned(s, image_id)
        # New records link to each other and the history spans both formats.
        s.add_names(ids[1], ["taken-in-v2"])
        s.set_names(ids[3], ["taken-in-v2"])
        s.compact()
        s.set_metadata(ids[1], "v2")
        for image_id in ids:
            assert kinds(s, image_id) == scanned(s, image_id), image_id
        assert kinds(s, "a0:1") == scanned(s, "a0:1")
        assert kinds(s, "taken-in-v2") == scanned(s, "taken-in-v2")
    with ImageStore(store_dir, read_only=True) as r:
        assert history_problems(r, limit=100) == []


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_past_big_data_is_kept_until_retention_drops_it(store_dir: Path) -> None:
    with ImageStore(store_dir, fsync="never") as s:
        a = s.create(names=["a"], big_data=[("manifest", b"v0"), ("config", b"c0")])
        seqs = {s.seq: b"v0"}
        for i in range(1, 6):
            s.set_big_data("a", "manifest", f"v{i}".encode())
            seqs[s.seq] = f"v{i}".encode()
        for seq, data in seqs.items():
            assert s.at(seq).big_data("a", "manifest") == data
        blobs = store_dir / "journal" / "blobs" / "sha256"
        assert sorted(os.listdir(blobs)) == sorted(sha(d)[7:] for d in list(seqs.values())[:-1])
        assert os.stat(blobs / sha(b"v0")[7:]).st_nlink >= 1
        before_delete = s.seq
        s.delete("a")  # the bytes a delete replaces are kept too
        assert s.at(before_delete).big_data(a.id, "config") == b"c0"
        assert s.at(before_delete).big_data(a.id, "manifest") == b"v5"
        stats = store_stats(s)
        assert stats["kept_blobs"] == 7 and stats["kept_blob_bytes"] == 14
        report = s.verify()
        assert report.ok and report.blobs == 7
        old = s.at(1)
        s.compact()
        s.create(names=["later"])
        s.compact()
        s.prune_journal(keep_segments=0)  # every record that replaced them is gone
        assert not os.listdir(blobs)
        with pytest.raises(BigDataNotKept, match=r"retention has dropped them .* history now starts at record"):
            old.big_data(a.id, "manifest")


def test_a_damaged_blob_is_reported_by_verify_and_never_returned(store_dir: Path) -> None:
    with ImageStore(store_dir, fsync="never") as s:
        s.create(names=["a"], big_data=[("manifest", b"one")])
        s.set_big_data("a", "manifest", b"two")
        path = store_dir / "journal" / "blobs" / "sha256" / sha(b"one")[7:]
        os.chmod(path, 0o600)
        path.write_bytes(b"ONE")  # the blob shares the old file's inode: both are damaged now
        report = s.verify()
        assert not report.ok and any("do not match" in p for p in report.problems)
        with pytest.raises(BigDataNotKept, match=r"kept them as .* that blob is missing or damaged"):
            s.at(1).big_data("a", "manifest")


def test_a_missing_blob_is_reported_by_verify_and_by_the_reader(store_dir: Path) -> None:
    with ImageStore(store_dir, fsync="never") as s:
        s.create(names=["a"], big_data=[("manifest", b"one")])
        s.set_big_data("a", "manifest", b"two")
        path = store_dir / "journal" / "blobs" / "sha256" / sha(b"one")[7:]
        path.unlink()
        report = s.verify()
        assert not report.ok and any(f"{path}: missing, but record 2 kept it" in p for p in report.problems)
        with pytest.raises(BigDataNotKept, match=r"by record 2 .*that blob is missing or damaged"):
            s.at(1).big_data("a", "manifest")


# ---------------------------------------------------------------- one image at a past moment


def test_one_image_at_a_past_record_is_rebuilt_exactly_or_not_at_all(store_dir: Path) -> None:
    from journalstore.views import ImagesAt

    with ImageStore(store_dir, fsync="never") as s:
        ids = busy_life(s, rounds=3)
        s.create(id=ids[0], names=["reborn"])  # the deleted image's ID again
        s.add_names(ids[0], ["b1"])  # and a name another image holds
        s.set_big_data(ids[2], "manifest", b"later")
        journal = Journal(DEFAULT_DISK, str(s.path))
        index = s._caught_up_index()
        names = sorted({n for e in journal.history() for n in e.data.get("names", ())})
        refs = [*ids, *names, ids[1][:12], "never-a-name"]
        answered = 0
        for seq in range(s.seq + 1):
            whole = journal.state_at(seq)
            quick = ImagesAt(journal, index, seq)
            for ref in refs:
                found = quick.find(ref)
                if found is not None:
                    answered += 1
                    assert found == whole.lookup(ref), (seq, ref)
            for image in whole:  # every image of a store linked from its start is rebuilt
                assert quick.find(image.id) == image, (seq, image.id)
            view = s.at(seq)
            for ref in refs:
                expected = whole.lookup(ref)
                if expected is None:
                    assert not s.at(seq).exists(ref)
                else:
                    assert s.at(seq).get(ref) == expected
            assert len(view) == len(whole)
        assert answered > 100


def test_a_view_reads_one_image_without_rebuilding_the_store(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with ImageStore(store_dir, fsync="never", compact_every=50) as s:
        image = s.create(names=["target"], big_data=[("config", b"first")])
        created = s.seq
        for i in range(300):
            s.set_big_data("target", "config", f"overwrite {i}".encode())
            s.create(names=[f"other-{i}"])
    with ImageStore(store_dir, read_only=True) as r:  # marks and heads come from the sidecar
        reads: list[int] = []
        real = history_index.ChainReader.read

        def counted(self: Any, pointer: Any) -> Any:
            reads.append(pointer[0])
            return real(self, pointer)

        monkeypatch.setattr(history_index.ChainReader, "read", counted)
        monkeypatch.setattr(Journal, "state_at", lambda *_a, **_k: pytest.fail("rebuilt the whole store"))
        view = r.at(created)
        assert view.big_data("target", "config") == b"first"
        assert view.get(image.id).names == ("target",)
        assert len(reads) <= 65, reads  # not the 301 records of its whole chain
        assert r.at(created + 100).big_data("target", "config") == b"overwrite 49"


def test_history_marks_survive_a_snapshot_and_stay_on_the_chain(store_dir: Path) -> None:
    with ImageStore(store_dir, fsync="never") as s:
        a = s.create(names=["a"])
        for i in range(200):
            s.set_metadata(a.id, str(i))
        live = s._caught_up_index()
        assert live is not None
        marks = live.marks[a.id]
        assert [m[0] for m in marks] == sorted(m[0] for m in marks) and len(marks) == 201 // history_index.MARK_EVERY
        s.compact()
    with ImageStore(store_dir, read_only=True) as r:
        loaded = r._caught_up_index()
        assert loaded is not None and loaded.marks[a.id] == marks and loaded.counts[a.id] == 201
        reader = history_index.ChainReader(DEFAULT_DISK, str(store_dir / "journal"))
        try:
            assert all(reader.read(m) is not None for m in marks)  # each one is a record of a
        finally:
            reader.close()
