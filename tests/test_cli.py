"""The `journalstore` command, driven through the installed console script in a real subprocess.

Each test checks stdout, stderr and the exit status; --json output is parsed as JSON. Stores are
opened with JOURNALSTORE_FSYNC=never to keep the file fast.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from journalstore import ImageStore
from journalstore.cli import main
from journalstore.cli.framework import COMMANDS, IMAGE_KEYS, Progress, default_root, fsync_mode

from .cli_support import FIXTURE, ID_A, ID_B, ROOT, SCRIPT, Run, _env, fails, manifest_digest, ok, run_tool


@pytest.fixture
def two_images(js: Run) -> Run:
    """A store with image A (two names, a manifest) and image B (one name)."""
    ok(js("create-image", "-i", ID_A, "-n", "quay.io/a/app:1", "-n", "app:latest", "L1"))
    ok(js("create-image", "-i", ID_B, "-n", "docker.io/library/b:2", "-m", "meta of b", "L2"))
    ok(js("set-image-data", ID_A, "manifest", stdin=b'{"schemaVersion": 2}'))
    return js


# ============================================================================ images and image


def test_create_image_prints_id_then_names(js: Run) -> None:
    result = ok(js("create-image", "-n", "quay.io/x/y:1", "-n", "y:latest", "LAYER1"))
    image_id, *names = result.out.splitlines()
    assert len(image_id) == 64 and all(c in "0123456789abcdef" for c in image_id)
    assert names == ["\tquay.io/x/y:1", "\ty:latest"]
    shown = ok(js("image", "y:latest")).out
    assert f"ID: {image_id}\n" in shown and "Top Layer: LAYER1\n" in shown


def test_create_image_json_and_options(js: Run, tmp_path: Path) -> None:
    meta = tmp_path / "meta.txt"
    meta.write_text("from a file\n")
    digest = manifest_digest(b"m")
    doc = ok(js("--json", "create-image", "-i", ID_A, "-n", "n:1", "-d", digest, "-f", str(meta), "L")).json()
    assert isinstance(doc, dict)
    assert list(doc) == [key for key, _ in IMAGE_KEYS]
    assert doc["id"] == ID_A and doc["names"] == ["n:1"] and doc["layer"] == "L"
    assert doc["digest"] == digest and doc["digests"] == [digest]
    assert doc["metadata"] == "from a file\n"
    assert doc["created"].endswith("Z")


def test_images_plain_quiet_and_json(two_images: Run) -> None:
    js = two_images
    digest = manifest_digest(b'{"schemaVersion": 2}')
    assert ok(js("images")).out == (
        f"{ID_A}\n\tname: quay.io/a/app:1\n\tname: app:latest\n\tdigest: {digest}\n\tdata: manifest\n"
        f"{ID_B}\n\tname: docker.io/library/b:2\n"
    )
    assert ok(js("images", "-q")).out == f"{ID_A}\n{ID_B}\n"
    docs = ok(js("images", "--json")).json()  # global options also work after the command
    assert isinstance(docs, list)
    assert [d["id"] for d in docs] == [ID_A, ID_B]
    assert docs[0]["big-data-sizes"] == {"manifest": 20}
    assert docs[1]["metadata"] == "meta of b" and docs[1]["digests"] == []
    assert ok(js("-j", "images")).json() == docs


def test_image_details_like_containers_storage(two_images: Run) -> None:
    js = two_images
    ok(js("add-names", "-n", "app:2", ID_A))
    out = ok(js("image", "app:2")).out
    digest = manifest_digest(b'{"schemaVersion": 2}')
    lines = out.splitlines()
    assert lines[:7] == [
        f"ID: {ID_A}",
        "Name: app:2",
        "Name: quay.io/a/app:1",
        "Name: app:latest",
        "Top Layer: L1",
        f"Digest: {digest}",
        "Data: manifest",
    ]
    assert lines[7].startswith("Size unknown: ")
    assert lines[8].startswith("Created: ")
    # SPEC §3: each resulting name is pushed to the front of the history, in order.
    assert lines[9:] == ["Name History: app:latest", "Name History: quay.io/a/app:1", "Name History: app:2"]


def test_image_by_prefix_several_refs_and_an_unknown_one(two_images: Run) -> None:
    js = two_images
    result = fails(js("image", ID_A[:8], "nope", ID_B), 1, "image 'nope' not known")
    assert [line for line in result.out.splitlines() if line.startswith("ID: ")] == [f"ID: {ID_A}", f"ID: {ID_B}"]
    docs = js("--json", "image", "nope", "docker.io/library/b:2")
    assert docs.code == 1
    assert [d["id"] for d in docs.json()] == [ID_B]  # type: ignore[index]


def test_images_by_digest(two_images: Run) -> None:
    js = two_images
    digest = manifest_digest(b'{"schemaVersion": 2}')
    assert ok(js("images-by-digest", "-q", digest)).out == f"{ID_A}\n"
    assert ok(js("images-by-digest", digest)).out.startswith(f"{ID_A}\n\tname: quay.io/a/app:1\n")
    assert ok(js("--json", "images-by-digest", manifest_digest(b"other"))).json() == []
    fails(js("images-by-digest", "sha256:xyz"), 1, "not a valid digest")


def test_exists(two_images: Run) -> None:
    js = two_images
    assert ok(js("exists", "app:latest", ID_B[:6])).out == f"app:latest: true\n{ID_B[:6]}: true\n"
    missing = js("exists", "app:latest", "nope")
    assert (missing.code, missing.out, missing.err) == (1, "app:latest: true\nnope: false\n", "")
    quiet = js("exists", "-q", "nope")
    assert (quiet.code, quiet.out) == (1, "")
    assert js("--json", "exists", "nope", "app:latest").json() == {"nope": False, "app:latest": True}


# ============================================================================ names


def test_names_commands(two_images: Run) -> None:
    js = two_images
    assert ok(js("get-names", ID_A)).out == "quay.io/a/app:1\napp:latest\n"
    assert ok(js("add-names", "-n", "app:2", "-n", "app:3", ID_A)).out == ""
    assert ok(js("get-names", ID_A)).out == "app:2\napp:3\nquay.io/a/app:1\napp:latest\n"
    assert ok(js("--json", "remove-names", "-n", "app:3", "app:2")).json() == ["app:2", "quay.io/a/app:1", "app:latest"]
    assert ok(js("--json", "set-names", "-n", "only:1", ID_A)).json() == ["only:1"]
    assert ok(js("--json", "get-names", "only:1")).json() == ["only:1"]
    assert ok(js("set-names", ID_A)).out == ""  # no -n: every name goes
    assert ok(js("get-names", ID_A)).out == ""


def test_add_names_moves_a_name_but_create_refuses_a_taken_one(two_images: Run) -> None:
    js = two_images
    fails(js("create-image", "-n", "app:latest"), 1, "'app:latest'", "already used", ID_A)
    assert ok(js("images", "-q")).out.count("\n") == 2  # nothing was created
    ok(js("add-names", "-n", "app:latest", ID_B))
    assert ok(js("get-names", ID_B)).out == "app:latest\ndocker.io/library/b:2\n"
    assert ok(js("get-names", ID_A)).out == "quay.io/a/app:1\n"


def test_names_usage_errors(two_images: Run) -> None:
    js = two_images
    result = js("add-names", ID_A)
    assert result.code == 2 and "-n/--name" in result.err and result.out == ""
    assert js("remove-names", ID_A).code == 2
    assert js("get-names").code == 2


# ============================================================================ metadata and big data


def test_metadata_commands(two_images: Run, tmp_path: Path) -> None:
    js = two_images
    assert ok(js("metadata", ID_B)).out == f"{ID_B}: meta of b\n"
    ok(js("set-metadata", "-m", "line\n", ID_A))
    assert ok(js("metadata", "-q", "app:latest")).out == "line\n"  # one trailing newline trimmed, as in Go
    file = tmp_path / "m.json"
    file.write_text('{"k": 1}')
    doc = ok(js("--json", "set-metadata", "-f", str(file), ID_A)).json()
    assert isinstance(doc, dict) and doc["metadata"] == '{"k": 1}'
    assert ok(js("--json", "metadata", ID_A, ID_B)).json() == {ID_A: '{"k": 1}', ID_B: "meta of b"}
    assert js("set-metadata", ID_A).code == 2  # neither -m nor -f
    assert js("set-metadata", "-m", "x", "-f", str(file), ID_A).code == 2
    fails(js("set-metadata", "-f", str(tmp_path / "missing"), ID_A), 1, "No such file", "missing")
    fails(js("metadata", "nope"), 1, "'nope'")


def test_image_data_roundtrip(two_images: Run, tmp_path: Path) -> None:
    js = two_images
    blob = bytes(range(256)) * 3
    src = tmp_path / "blob.bin"
    src.write_bytes(blob)
    ok(js("set-image-data", "-f", str(src), ID_B, "layer-blob"))
    ok(js("set-image-data", ID_B, "manifest-extra", stdin=b"{}"))
    assert ok(js("list-image-data", ID_B)).out == "layer-blob\nmanifest-extra\n"
    assert ok(js("--json", "list-image-data", ID_B)).json() == ["layer-blob", "manifest-extra"]
    assert js("get-image-data", ID_B, "layer-blob").raw == blob  # bytes unchanged on stdout
    dst = tmp_path / "out.bin"
    assert ok(js("get-image-data", "-f", str(dst), ID_B, "layer-blob")).out == ""
    assert dst.read_bytes() == blob
    assert ok(js("get-image-data-size", ID_B, "layer-blob")).out == f"{len(blob)}\n"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    assert ok(js("get-image-data-digest", ID_B, "layer-blob")).out == f"{digest}\n"
    doc = ok(js("--json", "get-image-data", ID_B, "layer-blob")).json()
    assert isinstance(doc, dict)
    assert base64.b64decode(doc["data_base64"]) == blob and doc["size"] == len(blob) and doc["digest"] == digest
    assert ok(js("--json", "get-image-data-size", ID_B, "layer-blob")).json() == {
        "id": ID_B,
        "key": "layer-blob",
        "size": len(blob),
    }
    doc = ok(js("--json", "set-image-data", ID_B, "manifest", stdin=b"[]")).json()
    assert doc == {"id": ID_B, "key": "manifest", "size": 2, "digest": manifest_digest(b"[]")}
    assert ok(js("images-by-digest", "-q", manifest_digest(b"[]"))).out == f"{ID_B}\n"


def test_image_data_errors(two_images: Run) -> None:
    js = two_images
    fails(js("get-image-data", ID_B, "nokey"), 1, "no big-data item", "nokey")
    fails(js("get-image-data-size", ID_B, "nokey"), 1, "nokey")
    fails(js("get-image-data-digest", ID_B, "nokey"), 1, "nokey")
    fails(js("set-image-data", "nope", "k", stdin=b"x"), 1, "'nope'")
    fails(js("set-image-data", ID_B, "", stdin=b"x"), 1, "big-data key is empty")
    assert js("get-image-data", ID_B).code == 2


# ============================================================================ delete, wipe, gc


def test_delete_image(two_images: Run) -> None:
    js = two_images
    ok(js("delete-image", "app:latest"))
    assert ok(js("images", "-q")).out == f"{ID_B}\n"
    result = js("--json", "delete-image", "nope", ID_B)
    assert result.code == 1 and "image 'nope' not known" in result.err
    assert result.json() == {"nope": {"id": "", "error": "image 'nope' not known"}, ID_B: {"id": ID_B, "error": ""}}
    assert ok(js("images")).out == ""


def test_wipe_and_gc(two_images: Run, root: Path) -> None:
    js = two_images
    orphan = root / ("c" * 64)
    orphan.mkdir()
    (orphan / "manifest").write_bytes(b"left by a crash")
    assert ok(js("gc")).out == f"{'c' * 64}\n"
    assert not orphan.exists() and (root / ID_A).is_dir()
    assert ok(js("--json", "gc")).json() == {"removed": []}
    assert ok(js("--json", "wipe")).json() == {"deleted": [ID_A, ID_B]}
    assert ok(js("images")).out == "" and not (root / ID_A).exists()
    assert ok(js("wipe")).out == ""


# ============================================================================ journal commands


def test_stats_and_compact(two_images: Run, root: Path) -> None:
    js = two_images
    before = ok(js("--json", "stats")).json()
    assert isinstance(before, dict)
    assert before["root"] == str(root)
    assert (before["images"], before["names"], before["digests"]) == (2, 3, 1)
    assert (before["big_data_items"], before["big_data_bytes"]) == (1, 20)
    assert (before["segments"], before["records"], before["last_snapshot"]) == (1, 3, None)
    segment = root / "journal" / "segment-00000001"
    assert before["journal_bytes"] == segment.stat().st_size
    assert before["position"] == {"segment": 1, "offset": segment.stat().st_size}
    result = ok(js("compact"))
    assert result.out.startswith(f"compacted {root}: 2 images in images.json (") and "segment 2" in result.out
    after = ok(js("--json", "stats")).json()
    assert isinstance(after, dict)
    assert (after["segments"], after["records"], after["position"]["segment"]) == (2, 3, 2)
    assert after["last_snapshot"]["bytes"] == (root / "images.json").stat().st_size
    assert json.loads((root / "images.json").read_text())[0]["id"] == ID_A  # containers/storage format
    plain = ok(js("stats")).out.splitlines()
    assert plain[:3] == [f"Root: {root}", "Images: 2", "Names: 3"]
    assert "Segments: 2" in plain and "Records: 3" in plain and "Position: segment 2, offset" in plain[-1]
    doc = ok(js("--json", "compact")).json()  # nothing changed since: nothing to write
    assert isinstance(doc, dict) and (doc["images"], doc["segment"], doc["wrote"]) == (2, 2, False)
    assert "nothing to compact" in ok(js("compact")).out
    ok(js("add-names", "-n", "more", ID_A))
    doc = ok(js("--json", "compact")).json()
    assert isinstance(doc, dict) and (doc["segment"], doc["wrote"]) == (3, True)


@pytest.fixture
def cs_dir(tmp_path: Path) -> Path:
    """A writable copy of a directory containers/storage wrote."""
    if not FIXTURE.exists():
        pytest.skip(f"golden fixture not found at {FIXTURE}")
    dst = tmp_path / "cs"
    shutil.copytree(FIXTURE / "store", dst)
    for path in [dst, *dst.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    return dst


def test_read_commands_never_convert_a_containers_storage_directory(cs_dir: Path) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())
    listed = ok(run_tool("--root", str(cs_dir), "images", "-q")).out.split()
    assert sorted(listed) == sorted(image["id"] for image in expected["images"])
    assert not (cs_dir / "journal").exists()
    assert ok(run_tool("--root", str(cs_dir), "stats")).out.splitlines()[5] == "Segments: 0"


def test_import(cs_dir: Path, tmp_path: Path) -> None:
    count = len(json.loads((cs_dir / "images.json").read_text()))
    fails(run_tool("--read-only", "import", str(cs_dir)), 1, "read-only")
    assert not (cs_dir / "journal").exists()
    result = ok(run_tool("import", str(cs_dir)))
    assert result.out.splitlines()[0] == f"imported {count} images from {cs_dir / 'images.json'}"
    assert (cs_dir / "journal" / "segment-00000001").exists()
    assert len(ok(run_tool("--root", str(cs_dir), "images", "-q")).out.split()) == count
    fails(run_tool("--root", str(cs_dir), "import"), 1, "already a journalstore store")
    empty = tmp_path / "empty"
    empty.mkdir()
    fails(run_tool("import", str(empty)), 1, "no images.json")
    fails(run_tool("import", str(tmp_path / "missing")), 1, "no directory")
    other = tmp_path / "cs2"
    shutil.copytree(cs_dir, other, ignore=shutil.ignore_patterns("journal"))
    doc = ok(run_tool("--root", str(other), "--json", "import")).json()
    assert doc == {"root": str(other), "source": str(other / "images.json"), "images": count, "records": 1}


# ============================================================================ errors, options, environment


def test_error_cases(two_images: Run, root: Path, tmp_path: Path) -> None:
    js = two_images
    fails(js("get-names", "nope"), 1, "image 'nope' not known")
    fails(js("delete-image", "nope"), 1, "image 'nope' not known")
    fails(js("--read-only", "create-image", "-n", "new:1"), 1, "read-only")
    fails(js("--read-only", "add-names", "-n", "x", ID_A), 1, "read-only")
    assert ok(js("--read-only", "images", "-q")).out == f"{ID_A}\n{ID_B}\n"
    missing = tmp_path / "missing"
    fails(run_tool("--root", str(missing), "images"), 1, "no store at", str(missing))
    assert not missing.exists()  # a read never creates a store
    fails(js("create-image", "-i", ID_A), 1, "already exists")
    fails(js("create-image", "-i", "bad/id"), 1, "bad/id")
    fails(js("create-image", "-d", "sha256:xyz"), 1, "not a valid digest")
    ok(js("create-image", "-i", "d" * 64))
    ok(js("create-image", "-i", "d" * 63 + "e"))
    fails(js("image", "d" * 10), 1, "ambiguous")


def test_usage_errors_exit_2(js: Run) -> None:
    for args in (("bogus",), (), ("images", "extra"), ("images", "--no-such-flag"), ("image",)):
        result = js(*args)
        assert result.code == 2, args
        assert result.out == "" and "Traceback" not in result.err
        assert result.err.splitlines()[-1].startswith("journalstore"), result.err
    assert "did you mean 'images'" in js("imagess").err


def test_debug_shows_the_traceback(two_images: Run) -> None:
    result = two_images("--debug", "get-names", "nope")
    assert result.code == 1
    assert "Traceback" in result.err and "ImageUnknown" in result.err
    assert result.err.rstrip().splitlines()[-1] == "journalstore: error: image 'nope' not known"


def test_default_root_comes_from_the_environment(tmp_path: Path) -> None:
    env_root = tmp_path / "from-env"
    ok(run_tool("create-image", "-n", "a:1", env=_env(JOURNALSTORE_ROOT=str(env_root))))
    assert (env_root / "journal").is_dir()
    ok(run_tool("create-image", "-n", "b:1", env=_env(XDG_DATA_HOME=str(tmp_path / "xdg"))))
    assert (tmp_path / "xdg" / "journalstore" / "journal").is_dir()
    assert default_root({"JOURNALSTORE_ROOT": "/r", "XDG_DATA_HOME": "/x"}) == "/r"
    assert default_root({"XDG_DATA_HOME": "/x"}) == "/x/journalstore"
    assert default_root({}) == os.path.expanduser("~/.local/share/journalstore")
    assert fsync_mode({"JOURNALSTORE_FSYNC": "never"}) == "never"
    assert fsync_mode({}) == "always"


def test_actor_is_recorded_in_the_journal(js: Run, root: Path) -> None:
    ok(js("--actor", "alice-the-admin", "create-image", "-n", "a:1"))
    ok(js("create-image", "-n", "b:1", "--actor", "bob-the-builder"))
    journal = (root / "journal" / "segment-00000001").read_bytes()
    assert b"alice-the-admin" in journal and b"bob-the-builder" in journal


def test_python_dash_m_runs_the_same_tool(root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "journalstore", "--root", str(root), "--json", "create-image", "-n", "m:1"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["names"] == ["m:1"]
    with ImageStore(root, read_only=True) as store:
        assert store.get("m:1").id == json.loads(proc.stdout)["id"]


def test_every_command_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    for name, cmd in COMMANDS.items():
        assert f"\n  {name} " in top, name
        assert main([name, "--help"]) == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: journalstore {name} ")
        assert f"example:\n  {cmd.example}" in text and cmd.example.startswith("journalstore ")
    result = run_tool("--help")
    assert result.code == 0 and "image commands (as in containers-storage)" in result.out


# ============================================================================ progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_only_on_a_terminal() -> None:
    tty = _Terminal()
    with Progress("pulling", 10, stream=tty, delay=0, interval=0) as bar:
        for _ in range(10):
            bar.advance()
    assert "pulling [" in tty.getvalue() and "10/10" in tty.getvalue()
    assert tty.getvalue().endswith("\r\x1b[K")  # the line is cleared at the end
    pipe = io.StringIO()
    with Progress("pulling", 10, stream=pipe, delay=0, interval=0) as bar:
        bar.advance(10)
    assert pipe.getvalue() == ""


def test_progress_renders_bar_and_spinner() -> None:
    bar = Progress("x", 4, stream=io.StringIO())
    bar.done = 2
    assert bar.render(1.0) == f"x [{'#' * 14}{'-' * 14}] 2/4 1.0s"
    spinner = Progress("compacting", stream=io.StringIO())
    assert spinner.render(0.25).startswith("compacting ") and spinner.render(0.25).endswith(" 0.2s")


# ============================================================================ the demo


def test_demo_quick(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    result = ok(run_tool("--root", str(root), "demo", "--quick"))
    out = result.out
    for expected in (
        "journalstore demo",
        "podman pulls 48 images",
        "in one batch",
        "$ journalstore image docker.io/library/nginx:latest",
        "docker.io/library/nginx:latest moves",
        "admin renames localhost/myapp:dev -> registry.example.com/team/myapp:1.0",
        "A second process picks up a change",
        "calls refresh(): it read only",
        "and now sees ['registry.example.com/team/myapp:prod', 'registry.example.com/team/myapp:1.0']",
        "Compaction",
        "The audit history of registry.example.com/team/myapp:1.0",
        "ten simulated minutes ago",
        "operation",
        "create an image (its own record)",
        f"The store is in {root}",
    ):
        assert expected in out, expected
    stats = ok(run_tool("--root", str(root), "--json", "stats")).json()
    assert isinstance(stats, dict) and stats["segments"] == 2
    assert "registry.example.com/team/myapp:prod" in ok(run_tool("--root", str(root), "images")).out
    fails(run_tool("--root", str(root), "demo", "--quick"), 1, "not empty")


def test_demo_json_summary_in_a_temporary_directory() -> None:
    result = run_tool("--json", "demo", "--quick")
    assert result.code == 0, result.err
    summary = result.json()
    assert isinstance(summary, dict)
    assert summary["root"] is None  # the temporary store was removed
    assert summary["images"] > 50 and summary["records"] > 100
    assert {row["operation"] for row in summary["timings"]} >= {"create an image (its own record)", "delete an image"}
    assert "podman pulls" in result.err  # the narrative goes to stderr


# ============================================================================ the README


def _normalize(text: str, root: str) -> str:
    """What may differ between two runs of the same session: paths, random IDs, times, sizes."""
    text = text.replace(root, "<root>")
    text = re.sub(r"(?<!sha256:)\b[0-9a-f]{64}\b", "<id>", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "<time>", text)
    text = re.sub(r"\(\d+\.\d+ s\)", "(<seconds>)", text)
    text = re.sub(r"\b[0-9a-f]{12}\b", "<short-id>", text)
    text = re.sub(r"(pid|uid)=\d+", r"\1=<n>", text)
    text = re.sub(r"(\(|Journal bytes: |offset |json, |records\), )\d+", r"\1<n>", text)
    return re.sub(r" {2,}", " ", text)  # columns padded to the width of a pid


def test_readme_session_is_a_real_run(tmp_path: Path) -> None:
    """The README's command-line session, replayed: every command, its output and exit status."""
    block = (ROOT / "README.md").read_text().split("```console\n", 1)[1].split("```", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    export, *session = steps
    documented_root = export[0].removeprefix("export JOURNALSTORE_ROOT=")
    root = str(tmp_path / "store")
    env = _env(JOURNALSTORE_ROOT=root, PATH=f"{SCRIPT.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert len(session) >= 8
    for command, expected in session:
        proc = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, env=env, timeout=60, check=False, stdin=None
        )
        got = _normalize(proc.stderr + proc.stdout, root).splitlines()
        assert got == _normalize("\n".join(expected), documented_root).splitlines(), command
