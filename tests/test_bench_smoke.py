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
    assert wanted | {"shared-add-names", "shared-create"} <= workloads
    rows = data["measurements"]
    shared = {(m["workload"], m["impl"], m["fsync"]) for m in rows if m["workload"].startswith("shared")}
    for fs in ("on", "off"):
        assert {("shared-add-names", "seed", fs), ("shared-create", "journalstore", fs)} <= shared
    assert {(m["impl"], m["fsync"]) for m in data["measurements"] if m["workload"] == "raw-images-json"} == {
        ("raw", "on"),
        ("raw", "off"),
    }
    assert not (out / "work").exists()
    assert "| size | fsync | journalstore | seed | sqlite |" in proc.stdout
    assert "**Shared mode: one write that publishes images.json" in proc.stdout
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


def test_shared_run_merges_into_results_md(tmp_path: Path) -> None:
    """--shared measures only the shared mode and replaces only its own parts of RESULTS.md."""
    results_md = tmp_path / "RESULTS.md"
    before = (
        "# journalstore benchmark results\n\n## Targets\n\n| target | goal | status | measured |\n|---|---|---|---|\n"
        "| Flat writes | g | ✅ met | d |\n\n## Figures\n\nfull-run tables\n\n## Method\n\n- notes\n"
    )
    results_md.write_text(before)
    argv = ["--shared", "--sizes", "30", "--repeat", "1", "--out", str(tmp_path / "out"), "--quiet"]
    argv += ["--results", str(results_md)]
    for _ in range(2):  # twice: the second run replaces the first one's section and rows
        assert main(argv) == 0
        text = results_md.read_text()
        assert text.count("<!-- shared-mode: begin") == 1 and text.count("<!-- shared-mode: end -->") == 1
        assert text.count("| Shared write vs Go's price |") == 2  # the main table's row and the section's
        assert text.count("| Shared write vs raw images.json |") == 2
        assert "| Flat writes | g | ✅ met | d |" in text and "full-run tables" in text
        assert text.index("## Figures") < text.index("## Shared mode") < text.index("## Method")
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {m["workload"] for m in data["measurements"]} == {"shared-add-names", "shared-create", "raw-images-json"}
    assert not (tmp_path / "results.png").exists()
