"""The README's fleet example runs as written (against a real server and a temporary store)."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import make_store

README = Path(__file__).resolve().parents[2] / "README.md"


def test_fleet_example_runs(url: str, tmp_path: Path) -> None:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "journalstore.fleet" in b]
    assert blocks, "the README has no fleet example"
    with make_store(tmp_path / "store", 8, prefix="quay.io/app/web") as store:
        store.add_names(store.images()[0].id, ["quay.io/app/web:1.0"])
        code = blocks[0].replace("/var/lib/mystore", store.path).replace("nats://127.0.0.1:4222", url)
        namespace: dict[str, object] = {}
        exec(compile(code, "README.md", "exec"), namespace)
        assert namespace["report"].last_seq == store.seq  # type: ignore[attr-defined]
        fleet = namespace["fleet"]
        assert [(h, len(i)) for h, _s, i in fleet.images()] == [("web1", len(store))]  # type: ignore[attr-defined]
        assert [w.host for w in fleet.where("quay.io/app/web:1.0")] == ["web1"]  # type: ignore[attr-defined]
