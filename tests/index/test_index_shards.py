"""A build split into shards (separate processes) merges into exactly the index one process builds,
resumes a killed shard, and refuses shards that do not belong together, naming the shard and the fix."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neuralcodes.cli import main
from neuralcodes.index import Index, IndexDamagedError, build_index, build_shard, merge_shards
from neuralcodes.index.models import Embedder
from neuralcodes.index.shards import ShardsIncomplete, parse_shard, shard_slice

# 24 photos + a copy + an empty file = 26 images in 7 batches of 4: shard 1/2 holds files 0-11, shard 2/2
# files 12-25. The copy (of a shard-1 photo) sorts first in the third class folder, position 16: a duplicate
# only the merge can see, in a batch with three other images.
OPTIONS = {"image_size": 32, "chunk": 4, "backend": "flat"}
CLI_OPTIONS = ["--model", "tiny", "--image-size", "32", "--chunk", "4", "--backend", "flat"]
ENV = {**os.environ, "NEURALCODES_NO_PROGRESS": "1"}
CLI = "import sys; from neuralcodes.cli import main; sys.exit(main(sys.argv[1:]))"

# Shard 1/2 killed after the codes of its second batch are written and flushed, before that batch's
# SQLite commit (its records are being made): the worst moment.
KILLED_SHARD = """
import os, signal, sys
from neuralcodes.index import shard_build
record = shard_build._record
def record_then_die(position, item, now):
    if position == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return record(position, item, now)
shard_build._record = record_then_die
from neuralcodes.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def collection(photo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    photos = Path(shutil.copytree(photo_folder, tmp_path_factory.mktemp("shards") / "photos"))
    classes = sorted(p for p in photos.iterdir() if p.is_dir())
    shutil.copy(sorted(classes[0].iterdir())[5], classes[2] / "a-copy.JPEG")
    (photos / "zz-empty.jpg").write_bytes(b"")
    (photos / "notes.txt").write_text("not an image")
    return photos


@pytest.fixture(scope="module")
def single(collection: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the same images and model built by one process."""
    path = tmp_path_factory.mktemp("single") / "idx"
    build_index(path, "tiny", images=collection, **OPTIONS)
    return path


def _tables(index: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(index / "metadata.sqlite") as db:
        return {
            "images": db.execute(
                "SELECT id, source, path, label, width, height, sha256 FROM images ORDER BY id"
            ).fetchall(),
            "skipped": db.execute("SELECT * FROM skipped ORDER BY rowid").fetchall(),
            "sources": db.execute("SELECT * FROM sources").fetchall(),
            "state": db.execute("SELECT * FROM state ORDER BY key").fetchall(),
        }


def assert_same_index(sharded: Path, single: Path, queries: list[Path]) -> None:
    assert not (sharded / "shards").exists()  # merged and cleaned up
    assert (sharded / "codes.bin").read_bytes() == (single / "codes.bin").read_bytes()
    assert _tables(sharded) == _tables(single)
    assert (sharded / "report.csv").read_text() == (single / "report.csv").read_text()
    assert (sharded / "faiss-flat.index").read_bytes() == (single / "faiss-flat.index").read_bytes()
    meta = [json.loads((folder / "meta.json").read_text()) for folder in (sharded, single)]
    assert [{k: v for k, v in m.items() if k != "created"} for m in meta] == [
        {k: v for k, v in meta[1].items() if k != "created"}
    ] * 2
    with Index.open(sharded) as a, Index.open(single) as b:
        found, expected = a.search(queries, k=len(b)), b.search(queries, k=len(b))
        assert len(a) == len(b) == 24
    np.testing.assert_array_equal(found.ids, expected.ids)
    np.testing.assert_array_equal(found.distances, expected.distances)
    assert [[h.path for h in hits] for hits in found.hits] == [
        [h.path for h in hits] for hits in expected.hits
    ]


def test_two_shard_processes_merge_into_the_single_process_index(
    collection: Path, single: Path, tmp_path: Path
) -> None:
    index = tmp_path / "idx"
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CLI,
                "index",
                "build",
                str(index),
                *CLI_OPTIONS,
                "--images",
                str(collection),
                "--shard",
                shard,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for shard in ("2/2", "1/2")
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    # Whichever finished last merged; the other said so or that it waits.
    assert (
        sum(
            "all 2 shards merged: index build: 24 images added, 3 files skipped" in err
            for _, err in outputs
        )
        == 1
    )
    assert_same_index(index, single, sorted(collection.rglob("*.JPEG"))[::6])


def test_a_killed_shard_resumes_and_the_merge_waits_for_every_shard(
    collection: Path, single: Path, tmp_path: Path
) -> None:
    index = tmp_path / "idx"
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLED_SHARD,
            "index",
            "build",
            str(index),
            *CLI_OPTIONS,
            "--images",
            str(collection),
            "--shard",
            "1/2",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    with sqlite3.connect(
        index / "shards" / "1-of-2" / "files.sqlite"
    ) as db:  # one batch of 4 committed
        assert db.execute("SELECT value FROM state WHERE key = 'done'").fetchone() == ("4",)
        assert db.execute("SELECT count(*) FROM files").fetchone() == (4,)

    with pytest.raises(FileNotFoundError, match="sharded build whose shards are not merged"):
        Index.open(index)
    with pytest.raises(ShardsIncomplete, match=r"shard 2/2 not started.*--shard K/2"):
        merge_shards(index)
    second = build_shard(index, "tiny", "2/2", images=collection, **OPTIONS)
    assert second.merged is None and "shard 1/2 (4 of 12 files done) unfinished" in second.waiting
    with pytest.raises(
        ShardsIncomplete, match=r"shard 1/2 \(4 of 12 files done\) unfinished.*again"
    ):
        merge_shards(index)

    resumed = build_shard(index, "tiny", "1/2", images=collection, **OPTIONS)
    assert resumed.resumed_at == 4 and resumed.merged is not None and resumed.merged.added == 24
    assert_same_index(index, single, sorted(collection.rglob("*.JPEG"))[::6])


def test_codes_match_even_where_the_model_depends_on_the_batch(
    collection: Path, tmp_path: Path, monkeypatch
) -> None:
    # GPU kernels may give an image slightly different codes in a batch of another size. The shard that
    # holds the copy embeds it with its batch (only the merge finds it a duplicate), so the single build
    # must embed that batch whole too; this embedder makes any difference in batch size visible.
    embed = Embedder.embed
    monkeypatch.setattr(
        Embedder, "embed", lambda self, images: embed(self, images) + np.float32(len(images) / 1024)
    )
    build_index(tmp_path / "single", "tiny", images=collection, **OPTIONS)
    for shard in ("1/2", "2/2"):
        build_shard(tmp_path / "sharded", "tiny", shard, images=collection, **OPTIONS)
    assert (tmp_path / "sharded" / "codes.bin").read_bytes() == (
        tmp_path / "single" / "codes.bin"
    ).read_bytes()


def test_a_shard_with_no_files_and_the_merge_command(
    collection: Path, tmp_path: Path, capsys
) -> None:
    options = {**OPTIONS, "chunk": 64}  # one batch: shard 1/2 is empty
    build_index(tmp_path / "single", "tiny", images=collection, **options)
    assert (
        build_shard(
            tmp_path / "idx", "tiny", "1/2", images=collection, merge=False, **options
        ).files
        == 0
    )
    assert (
        build_shard(
            tmp_path / "idx", "tiny", "2/2", images=collection, merge=False, **options
        ).merged
        is None
    )
    assert main(["index", "merge", str(tmp_path / "idx")]) == 0
    assert "24 images added" in capsys.readouterr().err
    assert (tmp_path / "idx" / "codes.bin").read_bytes() == (
        tmp_path / "single" / "codes.bin"
    ).read_bytes()
    assert main(["index", "merge", str(tmp_path / "idx")]) == 2
    assert "already an index" in capsys.readouterr().err
    with pytest.raises(FileExistsError, match="already an index"):
        build_shard(tmp_path / "idx", "tiny", "2/2", images=collection, **options)


def test_shards_that_do_not_belong_together_are_refused(
    collection: Path, tmp_path: Path, capsys
) -> None:
    index, photos = tmp_path / "idx", Path(shutil.copytree(collection, tmp_path / "photos"))
    build_shard(index, "tiny", "1/2", images=photos, **OPTIONS)
    # At the start of a shard: another model, another N, its own earlier options, another file list.
    with pytest.raises(
        ValueError, match=r"shard 2/2 cannot join.*shard 1/2 .*--model/--layer/--image-size"
    ):
        build_shard(index, "tiny", "2/2", images=photos, **{**OPTIONS, "image_size": 48})
    with pytest.raises(ValueError, match=r"split 2 ways \(1-of-2\), not 3: use --shard K/2"):
        build_shard(index, "tiny", "2/3", images=photos, **OPTIONS)
    with pytest.raises(
        ValueError,
        match=r"shard 1/2 in .*1-of-2 was started with other options: --chunk \(5 against 4\)",
    ):
        build_shard(index, "tiny", "1/2", images=photos, **{**OPTIONS, "chunk": 5})
    (photos / "new.jpg").write_bytes(b"")
    with pytest.raises(
        ValueError, match=r"shard 2/2 cannot join.*the file list \(27 against 26 images"
    ):
        build_shard(index, "tiny", "2/2", images=photos, **OPTIONS)
    assert not (index / "shards" / "2-of-2").exists()

    # At the merge, for a shard that started apart (the same check, made on what is on disk).
    build_shard(tmp_path / "other", "tiny", "2/2", images=photos, **OPTIONS)
    shutil.move(tmp_path / "other" / "shards" / "2-of-2", index / "shards" / "2-of-2")
    with pytest.raises(
        ValueError,
        match=r"shard 2/2 \(.*2-of-2\) was built with other options than shard 1/2: the "
        r"file list \(27 against 26 images.*Delete .*2-of-2",
    ):
        merge_shards(index)
    assert main(["index", "merge", str(index)]) == 2
    err = capsys.readouterr().err
    assert "shard 2/2" in err and "Traceback" not in err
    assert not (index / "meta.json").exists()
    (index / "shards" / "2-of-2" / "manifest.json").write_text(
        '{"format": "neuralcodes-index-shard"}'
    )
    with pytest.raises(
        IndexDamagedError,
        match=r"2-of-2/manifest\.json is not the manifest of a neuralcodes index "
        r"shard: delete .*2-of-2 and run .*--shard 2/2",
    ):
        merge_shards(index)


def test_a_moved_in_shard_of_another_model_is_refused_at_the_merge(
    collection: Path, tmp_path: Path
) -> None:
    index = tmp_path / "idx"
    build_shard(index, "tiny", "1/2", images=collection, **OPTIONS)
    build_shard(
        tmp_path / "other", "tiny", "2/2", images=collection, **{**OPTIONS, "image_size": 48}
    )
    shutil.move(tmp_path / "other" / "shards" / "2-of-2", index / "shards" / "2-of-2")
    with pytest.raises(
        ValueError,
        match=r"shard 2/2 .* other options than shard 1/2: --model/--layer/--image-size "
        r"\(backbone tiny \(layer pool, 48x48 input\) against .*32x32",
    ):
        merge_shards(index)


def test_shard_numbers_and_slices() -> None:
    assert parse_shard("2/4") == (2, 4) and parse_shard(" 1 / 1 ") == (1, 1)
    for bad in ("0/2", "3/2", "2", "a/b", "1/0", "-1/2"):
        with pytest.raises(ValueError, match=r"--shard must be K/N with 1 <= K <= N"):
            parse_shard(bad)
    # By hand: 26 files in 7 batches of 4.
    assert [shard_slice(26, 4, k, 2) for k in (1, 2)] == [(0, 12), (12, 26)]
    assert [shard_slice(26, 4, k, 3) for k in (1, 2, 3)] == [(0, 8), (8, 16), (16, 26)]
    assert [shard_slice(3, 4, k, 2) for k in (1, 2)] == [(0, 0), (0, 3)]
    # Every file in exactly one shard, every shard starting on a batch of a single-process build.
    for files, chunk, shards in [(0, 4, 3), (1, 1, 5), (100, 7, 3), (1000, 64, 16), (64, 64, 2)]:
        slices = [shard_slice(files, chunk, k, shards) for k in range(1, shards + 1)]
        assert [p for start, stop in slices for p in range(start, stop)] == list(range(files))
        assert all(start % chunk == 0 for start, _ in slices)
