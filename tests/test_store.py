"""The store facade: threads, processes, locking, file modes."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from journalstore import ImageStore, LockTimeout, StoreError, StoreIsReadOnly
from journalstore.fsio import DEFAULT_DISK
from journalstore.locking import WriterLock


def test_many_threads_share_one_store(store: ImageStore) -> None:
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(50):
                image = store.create(names=[f"t{k}-{i}"])
                store.add_names(image.id, [f"shared-{i % 5}"])  # names race between threads
                assert store.get(image.id).id == image.id
                with store.batch():
                    store.set_metadata(image.id, f"{k}")
                    assert store.metadata(image.id) == f"{k}"
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    images = store.images()
    assert len(images) == 300
    names = [n for i in images for n in i.names]
    assert len(names) == len(set(names))
    assert {f"shared-{i}" for i in range(5)} <= set(names)
    with ImageStore(store.path, read_only=True) as r:
        assert [i.to_json() for i in r.images()] == [i.to_json() for i in images]


def test_lock_timeout(store_dir: Path) -> None:
    with ImageStore(store_dir, fsync="never", lock_timeout=0.2) as s:
        holder = subprocess.Popen(
            [sys.executable, "-c", (
                "import sys, time; from journalstore.locking import WriterLock; from journalstore.fsio import Disk\n"
                f"l = WriterLock(Disk(), {str(store_dir / 'images.lock')!r}, None); l.acquire()\n"
                "print('held', flush=True); time.sleep(5)"
            )],
            stdout=subprocess.PIPE,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
            with pytest.raises(LockTimeout, match=r"images\.lock"):
                s.create(names=["x"])
            assert not s.exists("x")
        finally:
            holder.kill()
            holder.wait()
        s.create(names=["x"])  # the lock is free again


def test_writer_lock_excludes_threads_and_times_out(tmp_path: Path) -> None:
    lock = WriterLock(DEFAULT_DISK, str(tmp_path / "l"), 0.1)
    lock.acquire()
    other: list[BaseException] = []

    def contend() -> None:
        try:
            lock.acquire()
        except BaseException as exc:
            other.append(exc)

    t = threading.Thread(target=contend)
    t.start()
    t.join()
    assert len(other) == 1 and isinstance(other[0], LockTimeout)
    lock.release()
    lock.close()


def test_files_are_created_with_containers_storage_modes(store_dir: Path) -> None:
    old = os.umask(0)
    try:
        with ImageStore(store_dir, fsync="never") as s:
            s.create(names=["a"], big_data=[("manifest", b"m")])
            s.compact()
    finally:
        os.umask(old)

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    assert mode(store_dir) == 0o700
    assert mode(store_dir / "journal") == 0o700
    assert mode(store_dir / "images.json") == 0o600
    assert mode(store_dir / "images.lock") == 0o644
    for p in (store_dir / "journal").iterdir():
        assert mode(p) in (0o600, 0o700), p
    image_dir = next(p for p in store_dir.iterdir() if len(p.name) == 64)
    assert mode(image_dir) == 0o700 and mode(next(image_dir.iterdir())) == 0o600


def test_read_only_fallback_for_a_user_who_cannot_write(tmp_path_factory: pytest.TempPathFactory) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    base = Path(tempfile.mkdtemp(prefix="js-perm-"))  # pytest's own tmp is private to root
    base.chmod(0o755)
    store_dir = base / "store"
    with ImageStore(store_dir, fsync="never") as s:
        s.create(names=["a"])
    os.chmod(store_dir, 0o755)
    (store_dir / "images.lock").chmod(0o644)
    for p in store_dir.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    code = (
        "import os, warnings\n"
        "from journalstore import ImageStore, StoreIsReadOnly\n"  # the interpreter lives in root's home
        "os.setgid(65534); os.setuid(65534)\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        f"    s = ImageStore({str(store_dir)!r})\n"
        "print(s.read_only, s.get('a').names, [str(x.message) for x in w])\n"
        "try:\n"
        "    s.create(names=['b'])\n"
        "except StoreIsReadOnly as exc:\n"
        "    print('refused:', exc)\n"
    )
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("True ('a',)")
    assert "read-only" in out and "refused:" in out and "not writable" in out


def test_fork_gets_its_own_descriptors(store_dir: Path) -> None:
    with ImageStore(store_dir, fsync="never") as s:
        s.create(names=["parent"])
        pid = os.fork()
        if pid == 0:  # the child writes through the inherited instance
            try:
                s.create(names=["child"])
                os._exit(0)
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert s.refresh() is True and s.exists("child")
        s.create(names=["parent-again"])
    with ImageStore(store_dir, read_only=True) as r:
        assert [i.names for i in r.images()] == [("parent",), ("child",), ("parent-again",)]


def test_closed_store_refuses_writes(store_dir: Path) -> None:
    s = ImageStore(store_dir, fsync="never")
    s.close()
    with pytest.raises(StoreIsReadOnly, match="closed"):
        s.create(names=["x"])


def test_close_inside_a_batch_is_refused_not_deadlocked(store_dir: Path) -> None:
    s = ImageStore(store_dir, fsync="never")
    with s.batch():
        s.create(names=["a"])
        with pytest.raises(StoreError, match="inside batch"):
            s.close()
    s.close()
    with ImageStore(store_dir, read_only=True) as r:
        assert r.exists("a")
