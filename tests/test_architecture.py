"""The layering of the package (.importlinter): data flows one way and no package has import cycles."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(lint).exists():
        pytest.fail("lint-imports is missing: install the test extra (pip install -e '.[test]')")
    result = subprocess.run(
        [lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_a_layer_violation_is_caught(tmp_path) -> None:
    """The contract is not vacuous: a module of `data` importing `recipes` breaks it."""
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "src" / "neuralcodes",
        src / "neuralcodes",
        ignore=shutil.ignore_patterns("sample", "__pycache__"),
    )
    (src / "neuralcodes" / "data" / "upward.py").write_text(
        "from neuralcodes.recipes.neural_codes import train\n"
    )
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    env = {"PYTHONPATH": str(src), "PATH": str(Path(sys.executable).parent)}
    result = subprocess.run(
        [lint, "--no-cache"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode != 0
    assert "neuralcodes.data.upward -> neuralcodes.recipes.neural_codes" in result.stdout
