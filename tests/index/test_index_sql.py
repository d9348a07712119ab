"""The store owns the SQL: no other module of the index or the server speaks it, and its named
methods keep the batching and the atomicity the callers used to write out by hand."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import neuralcodes
from neuralcodes.index import Index, build_index
from neuralcodes.index.store import Store

SRC = Path(neuralcodes.__file__).parent
# A statement, a script, or a connection of its own: each is speaking SQL.
SQL = re.compile(r"\.(execute|executemany|executescript)\(|\bimport sqlite3\b|\bsqlite3\.connect\(")


def test_only_the_store_package_speaks_sql() -> None:
    modules = sorted([*(SRC / "index").rglob("*.py"), *(SRC / "serve").rglob("*.py")])
    assert any(
        p.parent.name == "store" for p in modules
    )  # the walk does see the store (and would see a hit)
    speaking = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in modules
        if path.parent != SRC / "index" / "store"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if SQL.search(line)
    ]
    assert not speaking, "SQL outside neuralcodes/index/store/:\n" + "\n".join(speaking)


@pytest.fixture(scope="module")
def built(photo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sql") / "idx"
    build_index(path, "tiny", images=photo_folder, image_size=32)
    return path


def test_records_of_many_ids_are_read_in_parts_and_unknown_ids_left_out(built: Path) -> None:
    store = Store.open(built)
    try:
        rows = store.records(list(range(-3, 1203)))  # more ids than SQLite takes in one statement
        assert sorted(r.id for r in rows) == list(range(24))
        assert store.records([]) == []
        first = store.browse(0, 1)[0]
        assert store.find_sha256(first.sha256) == first and store.find_sha256("0" * 64) is None
        assert store.image_file(first.id).path == first.path and store.image_file(999) is None
        assert store.image_id(store.image_file(first.id).source, first.path) == first.id
        assert store.ids_with_path(first.path) == [first.id]
    finally:
        store.close()


def test_a_removal_cut_short_removes_nothing(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The images and the live count leave together: a failure between them rolls the deletion back."""
    import shutil

    copy = Path(shutil.copytree(built, tmp_path / "idx"))
    with Index.open(copy) as index:
        path = index.record(3).path

        def fail(self: Store, key: str, value: object) -> None:
            raise OSError("disk gone")

        monkeypatch.setattr(Store, "set_state", fail)
        with pytest.raises(OSError, match="disk gone"):
            index.remove([path])
        monkeypatch.undo()
    with Index.open(copy) as index:  # opens: the counts agree
        assert len(index) == 24 and index.record(3).path == path
        assert index.remove([path]) == [3]
    with Index.open(copy) as index:
        assert len(index) == 23
