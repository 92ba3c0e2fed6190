"""Smoke test of the benchmark harness: the adapters are correct; no claims about speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.__main__ import main  # noqa: E402
from benchmarks.adapters import ADAPTERS, Found, JournalstoreAdapter  # noqa: E402
from benchmarks.workloads import BenchmarkError, Config, run  # noqa: E402


def test_tiny_run_writes_all_three(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--tiny", "--out", str(out), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "results.json").read_text())
    impls = {m["impl"] for m in data["measurements"]}
    assert {"journalstore", "seed", "sqlite"} <= impls
    workloads = {m["workload"] for m in data["measurements"] if m["impl"] == "journalstore"}
    wanted = {"create", "add-names", "set-big-data", "batch", "lookup-prefix", "refresh", "cold-open", "memory"}
    assert wanted <= workloads
    assert not (out / "work").exists()
    assert "| size | fsync | journalstore | seed | sqlite |" in proc.stdout
    # The report can be rebuilt from the raw figures alone.
    again = tmp_path / "again"
    assert main(["--render", str(out / "results.json"), "--out", str(again), "--quiet"]) == 0
    assert (again / "results.md").read_text() == (out / "results.md").read_text()


class WrongIdAdapter(JournalstoreAdapter):
    """Returns the wrong image for every lookup by name."""

    name = "journalstore"

    def get(self, ref: str) -> Found:
        found = super().get(ref)
        if ref.startswith("registry.example/"):
            return Found(found.id[::-1], found.names)
        return found


class LosesBigDataAdapter(JournalstoreAdapter):
    name = "journalstore"

    def big_data(self, ref: str, key: str) -> bytes:
        return super().big_data(ref, key)[:-1]


@pytest.mark.parametrize("broken", [WrongIdAdapter, LosesBigDataAdapter])
def test_wrong_data_fails_the_run(tmp_path: Path, broken: type[JournalstoreAdapter]) -> None:
    adapters = dict(ADAPTERS, journalstore=broken)
    cfg = Config.tiny(impls=("journalstore",), workdir=str(tmp_path / "work"))
    with pytest.raises(BenchmarkError):
        run(cfg, adapters)


def test_main_exits_nonzero_and_prints_no_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    adapters = dict(ADAPTERS, journalstore=WrongIdAdapter)
    out = tmp_path / "out"
    code = main(["--tiny", "--impl", "journalstore", "--out", str(out), "--quiet"], adapters=adapters)
    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "FAILED" in captured.err
    assert not (out / "results.json").exists()
