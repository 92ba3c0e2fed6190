"""The README's library example runs as written (against a temporary directory)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_library_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no Python example"
    code = blocks[0].replace("/var/lib/mystore", str(tmp_path / "store"))
    namespace = {"manifest_bytes": b'{"schemaVersion": 2}', "config_bytes": b"{}", "tags": ["a:1", "b:1"]}
    exec(compile(code, "README.md", "exec"), namespace)
    store = namespace["reader"]
    assert store.get("quay.io/app/web:latest").big_data_names == ("manifest", "config")
    assert len(store.images()) == 3
