"""Running the installed `journalstore` script in tests: results, checks and fixtures."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# A copy of ../shared/fixtures/containers-storage (written by the real Go library), kept in the
# repository so that a clean clone tests against it wherever it is checked out.
FIXTURE = Path(os.environ.get("JOURNALSTORE_FIXTURE", ROOT / "tests" / "fixtures" / "containers-storage"))
SCRIPT = Path(sys.executable).parent / "journalstore"
ID_A = "a" * 64
ID_B = "b" * 64


@dataclass
class Result:
    code: int
    out: str
    err: str
    raw: bytes

    def json(self) -> object:
        assert self.out.endswith("\n") and self.out.count("\n") == 1, f"not one JSON document: {self.out!r}"
        return json.loads(self.out)


Run = Callable[..., Result]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNALSTORE_ROOT", "XDG_DATA_HOME")}
    env["JOURNALSTORE_FSYNC"] = "never"
    env.update(extra)
    return env


def run_tool(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> Result:
    proc = subprocess.run(
        [str(SCRIPT), *args], input=stdin, capture_output=True, env=env or _env(), timeout=60, check=False
    )
    return Result(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(), proc.stdout)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def js(root: Path) -> Run:
    """Run the tool on the test's store: js("images", "-q")."""

    def call(*args: str, stdin: bytes | None = None) -> Result:
        return run_tool("--root", str(root), *args, stdin=stdin)

    return call


def ok(result: Result) -> Result:
    assert result.code == 0, f"exit {result.code}: {result.err}"
    assert result.err == ""
    return result


def fails(result: Result, code: int, *fragments: str) -> Result:
    """The run failed with `code`, one clean line on stderr (no traceback) mentioning each fragment."""
    assert result.code == code, f"exit {result.code}, stdout {result.out!r}, stderr {result.err!r}"
    assert "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.startswith("journalstore")]
    assert len(lines) == 1, result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return result


def manifest_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


