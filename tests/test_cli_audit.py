"""The audit commands through the installed console script: log, replay, verify, repair, prune."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from journalstore import ImageStore
from journalstore import journal as jn

from .cli_support import ID_A, ID_B, SCRIPT, Run, _env, fails, ok, run_tool


def session(js: Run) -> None:
    ok(js("create-image", "-i", ID_A, "-n", "app:1", "L1"))
    ok(js("--actor", "ci", "add-names", "-n", "app:latest", "app:1"))
    ok(js("create-image", "-i", ID_B, "-n", "other", "L2"))
    ok(js("add-names", "-n", "app:latest", "other"))  # takes the tag from A
    ok(js("compact"))
    ok(js("set-metadata", "-m", "hello", ID_A))
    ok(js("delete-image", ID_A))


def test_log_plain_and_json(js: Run) -> None:
    session(js)
    lines = ok(js("log")).out.splitlines()
    assert [line.split()[3] for line in lines] == [
        "create", "add-names", "create", "add-names", "set-metadata", "delete"]
    assert "ci(pid=" in lines[1] and "+app:latest" in lines[1] and lines[1].split()[1] == "#2"
    objects = [json.loads(line) for line in ok(js("--json", "log")).out.splitlines()]
    assert [o["seq"] for o in objects] == [1, 2, 3, 4, 5, 6]
    assert objects[1]["actor"]["name"] == "ci" and objects[1]["data"] == {"names": ["app:latest"]}
    # A deleted image, asked for by a name it once had; the tag taken by B shows in its history.
    kinds = [json.loads(line)["kind"] for line in ok(js("--json", "log", "app:1")).out.splitlines()]
    assert kinds == ["create", "add-names", "add-names", "set-metadata", "delete"]
    assert [line.split()[1] for line in ok(js("log", "--since", "3", "--until", "4")).out.splitlines()] == ["#3", "#4"]
    assert len(ok(js("log", "--kind", "create")).out.splitlines()) == 2
    fails(js("log", "never-existed"), 1, "never-existed")
    fails(js("log", "--kind", "nonsense"), 1, "unknown event kind")
    fails(js("log", "--since", "yesterday-ish"), 1, "record number")


def test_replay_shows_the_images_listing_of_the_past(js: Run) -> None:
    session(js)
    then = ok(js("replay", "--at", "3")).out
    assert then.splitlines()[0] == ID_A and "\tname: app:latest" in then and ID_B in then
    assert ok(js("replay", "--at", "6")).out == ok(js("images")).out
    docs = ok(js("--json", "replay", "--at", "1")).json()
    assert isinstance(docs, list) and [d["id"] for d in docs] == [ID_A]
    assert ok(js("replay", "--at", "2000-01-01T00:00:00Z")).out == ""
    fails(js("replay", "--at", "99"), 1, "does not exist yet")


def test_verify_and_repair(js: Run, root: Path) -> None:
    session(js)
    report = ok(js("verify")).out
    assert "checked 2 segments, 6 records" in report and report.splitlines()[-1] == "ok"
    seg = root / "journal" / jn.segment_name(2)
    data = bytearray(seg.read_bytes())
    _, start = jn.decode_segment_header(bytes(data), 2)
    first = jn.scan(bytes(data[start:]), start)[0][0]
    data[first.offset + 20] ^= 0x40
    seg.write_bytes(bytes(data))
    bad = js("verify")
    assert bad.code == 1 and f"offset {first.offset}" in bad.out and "DAMAGE" in bad.out
    as_json = json.loads(js("--json", "verify").out)
    assert as_json["ok"] is False and as_json["damage"] == [{"segment": 2, "offset": first.offset}]
    fails(js("images"), 1, f"offset {first.offset}")
    fails(js("repair", "--truncate-at", str(first.offset + 1)), 1, "not the end of a whole record")
    out = ok(js("repair", "--truncate-at", str(first.offset))).out
    assert "a copy is in" in out and (root / "journal" / f"{jn.segment_name(2)}.cut-{first.offset}").exists()
    assert ok(js("verify")).out.splitlines()[-1] == "ok"
    assert ID_A in ok(js("images", "-q")).out  # the cut records (metadata, delete) are gone


def test_prune(js: Run) -> None:
    for i in range(3):
        ok(js("create-image", "-n", f"n{i}", "L"))
        ok(js("compact"))
    out = ok(js("prune", "--keep", "1")).out
    assert "removed segment-00000001" in out and "history now starts at record 3" in out
    fails(js("prune"), 1, "--keep")
    fails(js("prune", "--older-than", "soon"), 1, "age")
    assert len(ok(js("images", "-q")).out.splitlines()) == 3


def test_log_follow_prints_records_another_process_writes(root: Path) -> None:
    with ImageStore(root, fsync="never") as s:
        s.create(names=["first"])
    follower = subprocess.Popen(
        [str(SCRIPT), "--root", str(root), "--json", "log", "--follow", "--interval", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    try:
        assert follower.stdout is not None
        assert json.loads(follower.stdout.readline())["data"]["names"] == ["first"]
        time.sleep(0.2)
        ok(run_tool("--root", str(root), "create-image", "-n", "second", "L"))
        line = follower.stdout.readline()
        assert json.loads(line)["data"]["names"] == ["second"]
        assert follower.poll() is None  # still following
    finally:
        follower.terminate()
        follower.wait(timeout=10)
