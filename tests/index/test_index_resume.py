"""A build killed mid-way (SIGKILL, in a subprocess) and run again ends identical to an uninterrupted one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from neuralcodes.index import Index, IndexDamagedError, add_images, build_index

# Kills the build right after the codes of its 3rd batch are written, before that batch's SQLite
# commit: the worst moment, leaving uncommitted bytes at the end of codes.bin.
DRIVER = """
import os, signal, sys
from neuralcodes.index import store
append = store.Store.append_codes
calls = []
def append_then_die(self, codes):
    append(self, codes)
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
store.Store.append_codes = append_then_die
from neuralcodes.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _rows(index: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(index / "metadata.sqlite") as db:
        return {
            "images": db.execute(
                "SELECT id, source, path, label, width, height, sha256 FROM images ORDER BY id"
            ).fetchall(),
            "skipped": db.execute(
                "SELECT job, source, path, kind, reason FROM skipped ORDER BY rowid"
            ).fetchall(),
            "sources": db.execute("SELECT * FROM sources").fetchall(),
            "state": db.execute(
                "SELECT * FROM state WHERE key IN ('rows', 'live') ORDER BY key"
            ).fetchall(),
        }


def test_a_killed_build_resumes_to_the_same_index(photos: Path, tmp_path: Path) -> None:
    jpeg = sorted(photos.rglob("*.JPEG"))[5]
    shutil.copy(jpeg, photos / "zz-duplicate.jpg")
    (photos / "zz-empty.jpg").write_bytes(b"")
    options = [
        "--model",
        "tiny",
        "--image-size",
        "32",
        "--images",
        str(photos),
        "--chunk",
        "4",
        "--backend",
        "flat",
    ]
    killed = tmp_path / "killed"
    env = {**os.environ, "NEURALCODES_NO_PROGRESS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, "index", "build", str(killed), *options],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]

    # Two batches were committed; the third's codes lie past them, uncommitted.
    assert _rows(killed)["state"] == [("live", "8"), ("rows", "8")]
    assert (killed / "codes.bin").stat().st_size == 12 * 32 * 4
    with pytest.raises(
        IndexDamagedError, match="unfinished `index build`.*8 of 26 files done.*again"
    ):
        Index.open(killed)
    with pytest.raises(
        ValueError, match="unfinished build.*same --model"
    ):  # resuming needs the same options
        build_index(killed, "tiny", images=photos, image_size=48, chunk=4, backend="flat")
    with pytest.raises(ValueError, match="unfinished `index build`"):
        add_images(killed, images=photos)

    resumed = build_index(killed, "tiny", images=photos, image_size=32, chunk=4, backend="flat")
    assert resumed.resumed_at == 8 and resumed.added == 24  # the whole job's, both runs
    whole = build_index(
        tmp_path / "whole", "tiny", images=photos, image_size=32, chunk=4, backend="flat"
    )
    assert whole.resumed_at == 0 and whole.added == 24

    assert (killed / "codes.bin").read_bytes() == (tmp_path / "whole" / "codes.bin").read_bytes()
    assert _rows(killed) == _rows(tmp_path / "whole")
    assert (killed / "report.csv").read_text() == (tmp_path / "whole" / "report.csv").read_text()
    assert (killed / "faiss-flat.index").read_bytes() == (
        tmp_path / "whole" / "faiss-flat.index"
    ).read_bytes()
    meta = [
        json.loads((folder / "meta.json").read_text()) for folder in (killed, tmp_path / "whole")
    ]
    assert [{k: v for k, v in m.items() if k != "created"} for m in meta] == [
        {k: v for k, v in meta[1].items() if k != "created"}
    ] * 2
    with Index.open(killed) as index:
        assert (
            len(index) == 24
            and index.search([jpeg], k=1).hits[0][0].path == jpeg.relative_to(photos).as_posix()
        )
