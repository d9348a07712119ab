"""`neuralcodes index ...` and `neuralcodes search`: tables, JSON for scripts, a figure, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from neuralcodes.cli import main


def _json(capsys, argv: list[str]) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_build_search_remove_and_info_from_the_shell(photos: Path, tmp_path: Path, capsys) -> None:
    index = str(tmp_path / "idx")
    assert (
        main(
            [
                "index",
                "build",
                index,
                "--model",
                "tiny",
                "--image-size",
                "32",
                "--images",
                str(photos),
            ]
        )
        == 0
    )
    assert "24 images added, 0 files skipped" in capsys.readouterr().err

    queries = sorted(photos.rglob("*.JPEG"))[::8]
    found = _json(capsys, ["search", index, *map(str, queries), "-k", "3", "--json"])
    assert [q["query"] for q in found["queries"]] == [str(q) for q in queries]
    for query, result in zip(queries, found["queries"]):
        assert [r["rank"] for r in result["results"]] == [1, 2, 3]
        first = result["results"][0]
        assert (
            first["path"] == query.relative_to(photos).as_posix()
            and first["label"] == query.parent.name
        )
        assert first["distance"] < 1e-3

    figure = tmp_path / "results.png"
    assert main(["search", index, str(queries[0]), "-k", "4", "--figure", str(figure)]) == 0
    table = capsys.readouterr().out
    assert "rank" in table and queries[0].name in table
    assert (
        Image.open(figure).size[0] > Image.open(figure).size[1] > 50
    )  # one row: the query and 4 results

    assert main(["index", "remove", index, str(queries[0])]) == 0
    assert main(["index", "backend", index, "hnsw"]) == 0
    info = _json(capsys, ["index", "info", index, "--json"])
    assert (info["images"], info["removed"], info["backend"], info["dim"]) == (23, 1, "hnsw", 32)
    assert info["size_bytes"] > 23 * 32 * 4
    assert main(["index", "info", index]) == 0
    assert "backend" in capsys.readouterr().out


def test_errors_name_the_problem_without_a_traceback(photos: Path, tmp_path: Path, capsys) -> None:
    index = str(tmp_path / "idx")
    assert main(["search", index, "x.jpg"]) == 2
    assert "is not a neuralcodes index" in capsys.readouterr().err
    main(
        ["index", "build", index, "--model", "tiny", "--image-size", "32", "--images", str(photos)]
    )
    capsys.readouterr()
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    assert main(["search", index, str(text)]) == 2
    err = capsys.readouterr().err
    assert "notes.jpg cannot be used" in err and "Traceback" not in err
    assert main(["search", index, str(tmp_path / "missing.jpg")]) == 2
    assert "missing.jpg" in capsys.readouterr().err
    assert main(["index", "remove", index, "nope.jpg"]) == 2
    assert "not in the index" in capsys.readouterr().err


def test_a_figure_after_the_image_folder_moved_shows_grey_squares(
    photos: Path, tmp_path: Path, capsys
) -> None:
    """Searching needs only the codes: a moved collection folder must not stop the table or the figure."""
    index = str(tmp_path / "idx")
    assert (
        main(
            [
                "index",
                "build",
                index,
                "--model",
                "tiny",
                "--image-size",
                "32",
                "--images",
                str(photos),
            ]
        )
        == 0
    )
    query = tmp_path / "query.jpg"
    query.write_bytes(sorted(photos.rglob("*.JPEG"))[0].read_bytes())
    photos.rename(tmp_path / "elsewhere")
    figure = tmp_path / "results.png"
    capsys.readouterr()
    assert main(["search", index, str(query), "-k", "3", "--figure", str(figure)]) == 0
    assert "rank" in capsys.readouterr().out and figure.is_file()


def test_index_add_without_a_folder_says_how_to_give_one(
    photos: Path, tmp_path: Path, capsys
) -> None:
    index = str(tmp_path / "idx")
    assert (
        main(
            [
                "index",
                "build",
                index,
                "--model",
                "tiny",
                "--image-size",
                "32",
                "--images",
                str(photos),
            ]
        )
        == 0
    )
    capsys.readouterr()
    for extra in ([], [str(photos), "--data", "sample"]):
        assert main(["index", "add", index, *extra]) == 2
        err = capsys.readouterr().err
        assert "index add" in err and "DIR" in err and "--images" not in err, err


def test_search_reranks_from_the_shell_and_records_it(photos: Path, tmp_path: Path, capsys) -> None:
    from neuralcodes.cli.index import RERANK_CHOICES
    from neuralcodes.index import Index
    from neuralcodes.retrieval.rerank import RERANKERS

    assert RERANK_CHOICES == tuple(RERANKERS)  # the shell's choices are the library's steps
    index = str(tmp_path / "idx")
    assert (
        main(
            [
                "index",
                "build",
                index,
                "--model",
                "tiny",
                "--image-size",
                "32",
                "--images",
                str(photos),
            ]
        )
        == 0
    )
    queries = sorted(photos.rglob("*.JPEG"))[1::6]
    plain = _json(capsys, ["search", index, *map(str, queries), "-k", "4", "--json"])
    assert (plain["rerank"], plain["shortlist"]) == (None, None)
    found = _json(
        capsys,
        [
            "search",
            index,
            *map(str, queries),
            "-k",
            "4",
            "--rerank",
            "dba+qe",
            "--shortlist",
            "7",
            "--json",
        ],
    )
    assert (found["rerank"], found["shortlist"]) == ("dba+qe", 7)
    with Index.open(index) as opened:
        want = opened.search(queries, k=4, rerank="dba+qe", shortlist=7)
    got = [[r["id"] for r in q["results"]] for q in found["queries"]]
    assert got == want.ids.tolist() != [[r["id"] for r in q["results"]] for q in plain["queries"]]
    assert [r["rank"] for r in found["queries"][0]["results"]] == [1, 2, 3, 4]
    assert main(["search", index, str(queries[0]), "--rerank", "aqe"]) == 0
    captured = capsys.readouterr()
    assert "re-ranked with aqe among the 24 nearest" in captured.err and "rank" in captured.out


def test_bad_reranking_options_from_the_shell(photos: Path, tmp_path: Path, capsys) -> None:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["search", str(tmp_path / "idx"), "q.jpg", "--rerank", "nope"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "'k_reciprocal'" in err and "Traceback" not in err
    # Refused before the index opens (there is none here) or the image is read (it does not exist).
    assert (
        main(["search", str(tmp_path / "idx"), "q.jpg", "--rerank", "aqe", "--shortlist", "0"]) == 2
    )
    err = capsys.readouterr().err
    assert (
        "shortlist must be a positive integer" in err
        and "Traceback" not in err
        and len(err.strip().splitlines()) == 1
    )
