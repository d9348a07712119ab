"""Re-ranked search of an index: the step's order on the plain shortlist, true distances, no removed image, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from neuralcodes.index import Index, build_index
from neuralcodes.index.backends import finish_backend
from neuralcodes.index.reranked import rerank_results
from neuralcodes.index.store import Store
from neuralcodes.retrieval.rerank import RERANKERS, rerank


@pytest.fixture(scope="module")
def index_path(photo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 photos with the seeded tiny model (shared: tests that change it work on a copy)."""
    path = tmp_path_factory.mktemp("rerank") / "idx"
    build_index(path, "tiny", images=photo_folder, image_size=32)
    return path


@pytest.fixture(scope="module")
def index(index_path: Path):
    with Index.open(index_path) as opened:
        yield opened


def _queries(index: Index) -> np.ndarray:
    """Collection codes, as they are and pulled off the collection (a query that is not an image of it)."""
    codes = np.asarray(index.codes, dtype=np.float32)
    rng = np.random.default_rng(0)
    moved = codes[1::3] + 0.3 * rng.normal(size=codes[1::3].shape).astype(np.float32)
    return np.concatenate([codes[::5], moved / np.linalg.norm(moved, axis=1, keepdims=True)])


def _expected(
    index: Index, name: str, q: np.ndarray, k: int, shortlist: int, **params
) -> tuple[np.ndarray, np.ndarray]:
    """Independently: the plain top-``shortlist`` ids, ordered by the step's scores on them alone; and the plain top k."""
    plain = index.search_codes(q, k=shortlist)
    codes = np.asarray(index.codes, dtype=np.float32)
    rows = []
    for i, ids in enumerate(plain.ids):
        scores = rerank(name, q[i : i + 1], codes[ids], **params)[0]
        rows.append(ids[np.argsort(-scores, kind="stable")][:k])
    return np.stack(rows), plain.ids[:, :k]


@pytest.mark.parametrize("name", list(RERANKERS))
def test_reranked_results_are_the_steps_order_of_the_plain_shortlist(
    index: Index, name: str
) -> None:
    q = _queries(index)
    expected, plain = _expected(index, name, q, k=5, shortlist=9)
    assert (expected != plain).any(), (
        "the step must change some order here, or the test could not see it run"
    )
    results = index.search_codes(q, k=5, rerank=name, shortlist=9)
    np.testing.assert_array_equal(results.ids, expected)
    assert (results.rerank, results.shortlist) == (name, 9)
    # Distances are the true Euclidean code distances of the re-ranked ids, not the step's scores.
    codes = np.asarray(index.codes, dtype=np.float32)
    true = np.linalg.norm(codes[results.ids] - q[:, None, :], axis=2)
    np.testing.assert_allclose(results.distances, true, rtol=1e-5, atol=1e-6)
    assert [[h.id for h in hits] for hits in results.hits] == results.ids.tolist()
    assert [[h.distance for h in hits] for hits in results.hits] == results.distances.tolist()


def test_the_shortlist_bounds_what_the_step_sees(index: Index) -> None:
    """k-reciprocal on 6 candidates is not k-reciprocal on the whole collection: the shortlist must be the plain 6."""
    q = _queries(index)
    expected, _ = _expected(index, "k_reciprocal", q, k=4, shortlist=6)
    everything, _ = _expected(index, "k_reciprocal", q, k=4, shortlist=len(index))
    assert (expected != everything).any()
    np.testing.assert_array_equal(
        index.search_codes(q, k=4, rerank="k_reciprocal", shortlist=6).ids, expected
    )
    # The shortlist is never shorter than k, and never longer than the collection.
    short = index.search_codes(q, k=6, rerank="k_reciprocal", shortlist=2)
    np.testing.assert_array_equal(
        short.ids, _expected(index, "k_reciprocal", q, k=6, shortlist=6)[0]
    )
    assert short.shortlist == 6
    long = index.search_codes(q, k=4, rerank="k_reciprocal", shortlist=1000)
    assert long.shortlist == len(index) == 24
    np.testing.assert_array_equal(long.ids, everything)


def test_search_and_search_ids_rerank_as_search_codes_does(
    index: Index, photo_folder: Path
) -> None:
    files = sorted(photo_folder.rglob("*.JPEG"))[::7]
    by_file = index.search(files, k=4, rerank="dba", shortlist=8)
    np.testing.assert_array_equal(
        by_file.ids, index.search_codes(index.embed(files), k=4, rerank="dba", shortlist=8).ids
    )
    ids = [0, 9, 17]
    by_id = index.search_ids(ids, k=4, rerank="dba", shortlist=8)
    codes = np.asarray(index.codes, dtype=np.float32)[ids]
    np.testing.assert_array_equal(
        by_id.ids, index.search_codes(codes, k=4, rerank="dba", shortlist=8).ids
    )
    assert by_file.rerank == by_id.rerank == "dba"


def test_query_expansion_over_no_neighbours_is_the_plain_order(index: Index) -> None:
    q = _queries(index)
    plain = index.search_codes(q, k=8)
    assert (plain.rerank, plain.shortlist) == (None, None)
    unexpanded = index.search_codes(q, k=8, rerank="aqe", rerank_params={"k": 0}, shortlist=12)
    np.testing.assert_array_equal(unexpanded.ids, plain.ids)
    np.testing.assert_allclose(unexpanded.distances, plain.distances, rtol=1e-6)
    # The parameters reach the step: its default k = 10 does re-order.
    assert (index.search_codes(q, k=8, rerank="aqe", shortlist=12).ids != plain.ids).any()


@pytest.mark.parametrize(
    "backend", ["exact", "flat"]
)  # flat proposes no slack past the removed rows asked for
@pytest.mark.parametrize("name", list(RERANKERS))
def test_removed_images_never_come_back_reranked(
    index_path: Path, photo_folder: Path, tmp_path: Path, name: str, backend: str
) -> None:
    copy = Path(shutil.copytree(index_path, tmp_path / "idx"))
    store = Store.open(copy)
    try:
        with store.lock():
            finish_backend(store, backend)
    finally:
        store.close()
    with Index.open(copy) as index:
        files = sorted(photo_folder.rglob("*.JPEG"))
        gone_files = files[::8]
        gone_codes = np.asarray(index.embed(gone_files))
        removed = index.remove(gone_files)
        assert len(removed) == 3 and len(index) == 21
        # The removed images' own codes: each would be its query's nearest, were it still searched.
        for shortlist, k in ((3, 3), (5, 2), (1000, 30)):
            results = index.search_codes(gone_codes, k=k, rerank=name, shortlist=shortlist)
            want = min(k, 21)
            for hits in results.hits:
                assert len(hits) == want and not {h.id for h in hits} & set(removed)
            assert (results.ids >= 0).all() and not np.isin(results.ids, removed).any()
        everything = index.search_codes(gone_codes, k=21, rerank=name, shortlist=1000)
        live = set(range(24)) - set(removed)
        assert all(set(row) == live for row in everything.ids.tolist())


def test_a_short_shortlist_keeps_its_padding(index: Index) -> None:
    """An approximate backend can find fewer live images than asked: -1 is padding, not the last image's id."""
    codes = np.asarray(index.codes, dtype=np.float32)
    q = codes[[4, 4]]
    shortlist = np.array([[4, 2, 7, -1, -1], [-1, -1, -1, -1, -1]])
    distances = np.linalg.norm(
        codes[np.where(shortlist >= 0, shortlist, 0)] - q[:, None], axis=2
    ).astype(np.float32)
    distances[shortlist < 0] = np.inf
    ids, dist = rerank_results("aqe", q, shortlist, distances, index.codes, k=4)
    scores = rerank("aqe", q[:1], codes[[4, 2, 7]])[0]
    np.testing.assert_array_equal(
        ids[0], [*np.array([4, 2, 7])[np.argsort(-scores, kind="stable")], -1]
    )
    np.testing.assert_allclose(
        dist[0, :3], np.linalg.norm(codes[ids[0, :3]] - q[0], axis=1), rtol=1e-5, atol=1e-6
    )
    assert dist[0, 3] == np.inf and (ids[1] == -1).all() and np.isinf(dist[1]).all()


def test_bad_reranking_options_are_refused_before_any_work(index: Index, tmp_path: Path) -> None:
    missing = tmp_path / "missing.jpg"  # read only if the options were accepted
    with pytest.raises(
        ValueError,
        match=r"unknown re-ranking 'nope'; choose one of aqe, alpha_qe, dba, dba\+qe, "
        r"diffusion, k_reciprocal",
    ):
        index.search([missing], rerank="nope")
    with pytest.raises(ValueError, match="unknown re-ranking 'nope'"):
        index.search_ids([10**9], rerank="nope")  # not the KeyError of the unknown id
    for shortlist in (0, -3, True, 2.5):
        with pytest.raises(ValueError, match="shortlist must be a positive integer"):
            index.search([missing], rerank="aqe", shortlist=shortlist)
    with pytest.raises(ValueError, match="has no parameter nope; its parameters: alpha, k"):
        index.search([missing], rerank="aqe", rerank_params={"nope": 1})
    with pytest.raises(ValueError, match="rerank_params given without rerank"):
        index.search([missing], rerank_params={"k": 3})
    with pytest.raises(ValueError, match="shortlist must be a positive integer"):
        index.search_codes(np.asarray(index.codes[:1], dtype=np.float32), rerank="dba", shortlist=0)
