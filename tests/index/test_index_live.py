"""An open Index while another process adds, removes or switches the backend (issue 23, the live index).

Each change is made by a separate process (`python -m neuralcodes ...`), as from another shell; the
open index must answer its next call from the changed index, one consistent snapshot at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neuralcodes.index import Index, IndexDamagedError, build_index
from neuralcodes.index import snapshot
from neuralcodes.index.backends import Backend, finish_backend
from neuralcodes.index.store import Store


def run_neuralcodes(*args: str | Path) -> subprocess.CompletedProcess:
    """`neuralcodes ARGS` in a process of its own (another shell), which must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "neuralcodes", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    return done


def stored_codes(index: Path) -> np.ndarray:
    """codes.bin as the disk holds it now, read without the library."""
    meta = json.loads((index / "meta.json").read_text())
    return np.fromfile(index / "codes.bin", dtype=meta["dtype"]).reshape(-1, meta["dim"])


def assert_true_distances(index: Path, results, queries: np.ndarray) -> None:
    """Every hit's distance is the one from the code stored in that hit's row: ids and codes of one state."""
    codes = stored_codes(index).astype(np.float32)
    for query, ids, distances in zip(queries, results.ids, results.distances):
        for i, d in zip(ids.tolist(), distances.tolist()):
            if i >= 0:
                assert d == pytest.approx(float(np.linalg.norm(codes[i] - query)), abs=1e-5)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, sample_extractor) -> tuple[Path, Path]:
    """The photos of the index (2 classes) and others to add later (a third class)."""
    root = tmp_path_factory.mktemp("live")
    first = sample_extractor(root / "first", classes=2, per_class=4)
    extra = sample_extractor(root / "all", classes=3, per_class=4)
    for name in sorted(p.name for p in first.iterdir()):
        shutil.rmtree(extra / name)  # the third class only
    return first, extra


@pytest.fixture(scope="module")
def built(folders: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("live-index") / "idx"
    build_index(path, "tiny", images=folders[0], image_size=32)
    return path


@pytest.fixture
def live(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "idx"))


def test_images_added_by_another_process_are_found_by_the_next_search(
    live: Path, folders: tuple[Path, Path]
) -> None:
    extra = folders[1]
    new_files = sorted(extra.rglob("*.JPEG"))
    with Index.open(live) as index:
        assert len(index.search(sorted(folders[0].rglob("*.JPEG"))[:1], k=3).hits[0]) == 3
        run_neuralcodes("index", "add", live, extra)
        assert len(index) == 8 + len(new_files)
        queries = index.embed(new_files)
        results = index.search(new_files, k=3)
        for file, hits in zip(new_files, results.hits):
            assert hits[0].path == file.relative_to(extra).as_posix() and hits[0].distance < 1e-3
        assert_true_distances(live, results, queries)
        new_id = results.hits[0][0].id
        assert new_id >= 8 and index.search_ids([new_id], k=2).hits[0][0].id == new_id


def test_an_image_removed_by_another_process_is_never_returned(
    live: Path, folders: tuple[Path, Path]
) -> None:
    files = sorted(folders[0].rglob("*.JPEG"))
    gone = files[2]
    with Index.open(live) as index:
        gone_id = index.search([gone], k=1).hits[0][0].id
        run_neuralcodes("index", "remove", live, gone)
        assert len(index) == 7
        results = index.search(files, k=7)  # every image left, for every query
        assert all(gone_id not in row for row in results.ids.tolist())
        assert all(len(hits) == 7 for hits in results.hits)
        assert_true_distances(live, results, index.embed(files))
        with pytest.raises(KeyError, match=f"no image with id {gone_id}"):
            index.search_ids([gone_id])
        assert not index.live[gone_id] and gone_id not in index.records([gone_id])


def test_a_backend_switched_by_another_process_is_picked_up(
    live: Path, folders: tuple[Path, Path]
) -> None:
    files = sorted(folders[0].rglob("*.JPEG"))
    with Index.open(live) as index:
        exact = index.search(files, k=4)
        assert index.backend.name == "exact"
        run_neuralcodes("index", "backend", live, "flat")
        flat = index.search(files, k=4)
        assert index.backend.name == "flat" and index.info()["backend"] == "flat"
        assert (flat.ids == exact.ids).all()
        run_neuralcodes("index", "backend", live, "hnsw")
        assert not (live / "faiss-flat.index").exists()  # the file the open index read is gone
        assert (index.search(files, k=4).ids == exact.ids).all()
        assert index.backend.name == "hnsw" and index.backend.index.ntotal == 8
        # An add to a FAISS backend: the open one holds the new codes too (its file was rewritten).
        run_neuralcodes("index", "add", live, folders[1])
        new_files = sorted(folders[1].rglob("*.JPEG"))
        results = index.search(new_files, k=1)
        assert [h[0].path for h in results.hits] == [
            f.relative_to(folders[1]).as_posix() for f in new_files
        ]
        assert index.backend.index.ntotal == 8 + len(new_files)


def test_a_hit_removed_while_a_search_runs_is_not_returned(
    live: Path, folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit falls between the backend's candidates and the metadata read: the search is answered
    from the state after it, never with the removed image (nor a KeyError for its missing record)."""
    query = sorted(folders[0].rglob("*.JPEG"))[5]
    candidates = Backend.candidates
    removed: list[int] = []

    def remove_meanwhile(self, codes, queries, n):
        found = candidates(self, codes, queries, n)
        if not removed:  # what another process does: its own connection, the writer's lock
            store = Store.open(live)
            removed.append(int(found[0, 0]))
            with store.lock():
                store.remove_images(removed)
            store.close()
        return found

    with Index.open(live) as index:
        code = index.embed([query])
        monkeypatch.setattr(Backend, "candidates", remove_meanwhile)
        results = index.search_codes(code, k=3)
        assert removed[0] not in index.records(removed)
    assert removed and removed[0] not in results.ids[0] and len(results.hits[0]) == 3
    assert_true_distances(live, results, code)


def test_searches_while_another_process_commits_never_mix(
    live: Path, folders: tuple[Path, Path]
) -> None:
    """An add (a commit per image) then a remove run in another process while this one searches: every
    answer is one state's, each hit's distance that of the code stored in its row, its path that row's."""
    first, extra = folders
    new_files = sorted(extra.rglob("*.JPEG"))
    gone = sorted(first.rglob("*.JPEG"))[1]
    queries = new_files + [gone]
    script = (
        "import sys; from neuralcodes.index import Index, add_images\n"
        "add_images(sys.argv[1], images=sys.argv[2], chunk=1)\n"
        "with Index.open(sys.argv[1]) as index: index.remove([sys.argv[3]])\n"
    )
    with Index.open(live) as index:
        codes = index.embed(queries)
        paths_before = {h.id: h.path for h in index.browse(0, 100)}
        writer = subprocess.Popen(
            [sys.executable, "-c", script, str(live), str(extra), str(gone)],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stderr=subprocess.PIPE,
        )
        answers = []
        try:
            while writer.poll() is None:
                answers.append(index.search_codes(codes, k=5))
        finally:
            _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err.decode()
        answers.append(index.search_codes(codes, k=5))
        paths = {**paths_before, **{h.id: h.path for h in index.browse(0, 100)}}
    for results in answers:
        assert_true_distances(live, results, codes)
        for hits in results.hits:
            assert all(hit.path == paths[hit.id] for hit in hits)
    final = answers[-1]
    assert [h[0].path for h in final.hits[:-1]] == [
        f.relative_to(extra).as_posix() for f in new_files
    ]
    gone_id = next(i for i, p in paths_before.items() if p == gone.relative_to(first).as_posix())
    assert gone_id not in final.ids


def test_each_change_moves_the_generation_with_it(live: Path, folders: tuple[Path, Path]) -> None:
    """Add batches, removes and backend changes move the generation an open index compares."""
    store = Store.open(live)
    try:
        before = store.generation
        with store.lock():
            store.remove_images([0])
        assert store.generation == before + 1
        with store.lock():
            finish_backend(store, "flat")
        assert store.generation == before + 2
    finally:
        store.close()
    run_neuralcodes("index", "add", live, folders[1], "--chunk", "2")
    store = Store.open(live)
    assert (
        store.generation == before + 2 + 2 + 1
    )  # two batches, then the backend brought up to date
    store.close()


def test_a_backend_switched_while_its_file_is_read_is_read_again(
    live: Path, folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """meta.json named flat, then another process switched to hnsw and deleted faiss-flat.index before
    the open index read it: the open index reads meta.json again and loads hnsw, not a damage error."""
    store = Store.open(live)
    real = snapshot.load_backend

    def switched_meanwhile(name, params, path):
        if name == "flat":
            with store.lock():
                finish_backend(store, "hnsw")
        return real(name, params, path)

    files = sorted(folders[0].rglob("*.JPEG"))
    with Index.open(live) as index:
        before = index.search(files, k=3).ids
        monkeypatch.setattr(snapshot, "load_backend", switched_meanwhile)
        with store.lock():
            finish_backend(store, "flat")
        assert (index.search(files, k=3).ids == before).all() and index.backend.name == "hnsw"
        assert not (live / "faiss-flat.index").exists()
    store.close()


def test_an_index_built_again_in_its_folder_asks_for_a_restart(
    live: Path, folders: tuple[Path, Path]
) -> None:
    with Index.open(live) as index:
        index.search(sorted(folders[0].rglob("*.JPEG"))[:1])
        shutil.rmtree(live)
        build_index(live, "tiny", images=folders[1], image_size=32)
        with pytest.raises(IndexDamagedError, match="built again.*restart"):
            index.search(sorted(folders[1].rglob("*.JPEG"))[:1])
