"""The README's library example runs as written (on the embedded sample)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_library_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    monkeypatch.chdir(tmp_path)  # the example writes runs/lib relative to the working directory
    namespace: dict = {}
    exec(compile(blocks[0], "README.md example", "exec"), namespace)
    assert 0 <= namespace["neighbours"].shape[0] == 5
    assert (tmp_path / "runs" / "lib" / "checkpoints" / "best.pt").exists()
