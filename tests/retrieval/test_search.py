import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

import neuralcodes.retrieval.search as retrieval
from neuralcodes.retrieval.search import iter_leave_one_out, leave_one_out, search


def unit_codes(rng, n, dim):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def quantised_codes(rng, n, dim, levels=3):
    """Codes on a grid of quarters: every inner product is exact in float32, whatever the summation
    order, so rankings (ties included) cannot depend on how the products are blocked."""
    return (rng.integers(-levels, levels + 1, size=(n, dim)) / 4).astype(np.float32)


def assert_same_ranking(indices, distances, ref_indices, queries, database, atol=1e-5):
    """Our ranking equals the reference up to swaps of items whose float64 distances tie within atol."""
    q64, db64 = queries.astype(np.float64), database.astype(np.float64)
    rows = np.arange(len(queries))[:, None]
    ours = np.linalg.norm(q64[rows] - db64[indices], axis=2)
    theirs = np.linalg.norm(q64[rows] - db64[ref_indices], axis=2)
    np.testing.assert_allclose(distances, ours, atol=atol)
    np.testing.assert_allclose(ours, theirs, atol=atol)  # same distance at every rank
    differ = indices != ref_indices
    assert differ.mean() < 0.01, "rankings differ beyond near-ties"


def test_search_matches_sklearn_brute_force():
    rng = np.random.default_rng(0)
    database, queries = unit_codes(rng, 300, 24), unit_codes(rng, 40, 24)
    reference = NearestNeighbors(algorithm="brute", metric="euclidean").fit(database)
    for k in (1, 10, None):
        ref_dist, ref_idx = reference.kneighbors(queries, n_neighbors=k or len(database))
        indices, distances = search(queries, database, k=k, block_size=16)
        assert indices.shape == distances.shape == (40, k or 300)
        assert indices.dtype == np.int64 and distances.dtype == np.float32
        np.testing.assert_allclose(distances, ref_dist, atol=1e-5)
        assert_same_ranking(indices, distances, ref_idx, queries, database)


def test_leave_one_out_matches_sklearn_which_skips_each_point_itself():
    rng = np.random.default_rng(1)
    codes = unit_codes(rng, 200, 32)
    ref_dist, ref_idx = NearestNeighbors(algorithm="brute").fit(codes).kneighbors(n_neighbors=199)
    indices, distances = leave_one_out(codes)
    assert indices.shape == (200, 199)
    assert not (indices == np.arange(200)[:, None]).any()
    np.testing.assert_allclose(distances, ref_dist, atol=1e-5)
    assert_same_ranking(indices, distances, ref_idx, codes, codes)


def test_exclusion_removes_the_query_but_keeps_its_duplicate_and_zero_codes():
    rng = np.random.default_rng(2)
    codes = unit_codes(rng, 10, 8)
    codes[7] = codes[3]  # duplicate image
    codes[[5, 8]] = 0.0  # two all-zero codes
    for fallback in (False, True):
        with pytest.MonkeyPatch.context() as patch:
            if fallback:
                patch.setattr(retrieval, "GRAM_MAX_BYTES", 0)
            indices, distances = leave_one_out(codes)
        assert indices.shape == (10, 9)
        assert not (indices == np.arange(10)[:, None]).any()
        assert indices[3, 0] == 7 and distances[3, 0] == pytest.approx(0.0, abs=1e-6)
        assert indices[7, 0] == 3
        assert indices[5, 0] == 8 and distances[5, 0] == 0.0
        # A zero code is at distance exactly 1 from every unit code (not sqrt(2) as 2 - 2 a.b says).
        np.testing.assert_allclose(distances[5, 1:], 1.0, atol=1e-6)


def test_ties_are_broken_by_database_index():
    e1, e2 = np.eye(2, dtype=np.float32)
    database = np.stack([e2, e1, e2, e1, e1, e2])
    indices, distances = search(e1[None, :], database)
    np.testing.assert_array_equal(indices[0], [1, 3, 4, 0, 2, 5])
    np.testing.assert_allclose(
        distances[0], [0, 0, 0, np.sqrt(2), np.sqrt(2), np.sqrt(2)], atol=1e-6
    )
    indices, _ = search(e1[None, :], database, k=2)
    np.testing.assert_array_equal(indices[0], [1, 3])


def test_near_orthogonal_codes_are_ranked_by_true_distance_below_float32_distance_resolution():
    # Inner products 5e-8 apart move the distance near sqrt(2) by 3.5e-8, under float32's spacing
    # there (1.2e-7): sorting float32 distances would tie them all and return index order.
    s = 5e-8 * np.arange(5)
    database = np.stack([s, np.sqrt(1 - s**2), np.zeros(5)], axis=1).astype(np.float32)
    query = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)
    d64 = np.linalg.norm(database.astype(np.float64) - query.astype(np.float64), axis=1)
    expected = np.argsort(d64, kind="stable")
    assert list(expected) == [4, 3, 2, 1, 0]
    indices, distances = search(query, database)
    np.testing.assert_array_equal(indices[0], expected)
    assert np.all(np.diff(distances[0]) >= 0)


@pytest.mark.parametrize("k", [None, 5])
def test_block_size_and_route_do_not_change_results(k):
    rng = np.random.default_rng(3)
    codes = quantised_codes(rng, 57, 6)  # many exact ties
    n = len(codes)
    base = search(codes, codes, k=k, exclude=np.arange(n), block_size=n)
    for block_size in (1, 7, None):
        got = search(codes, codes, k=k, exclude=np.arange(n), block_size=block_size)
        np.testing.assert_array_equal(got[0], base[0])
        np.testing.assert_array_equal(got[1], base[1])
        got = leave_one_out(codes, k=k, block_size=block_size)  # through the Gram matrix
        np.testing.assert_array_equal(got[0], base[0])
        np.testing.assert_array_equal(got[1], base[1])


def test_blocks_cover_all_queries_in_order():
    rng = np.random.default_rng(4)
    codes = unit_codes(rng, 23, 4)
    starts = [
        (block.start, len(block.indices)) for block in iter_leave_one_out(codes, k=3, block_size=10)
    ]
    assert starts == [(0, 10), (10, 10), (20, 3)]


def test_integer_and_tensor_inputs_work():
    import torch

    database = np.array([[0, 0], [3, 4], [1, 0]])
    indices, distances = search(torch.tensor([[0.0, 0.0]]), database)
    np.testing.assert_array_equal(indices[0], [0, 2, 1])
    np.testing.assert_allclose(distances[0], [0, 1, 5])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"queries": np.ones((2, 3)), "database": np.ones((4, 2))}, "same layer"),
        ({"queries": np.ones(3), "database": np.ones((4, 3))}, "2-D"),
        ({"queries": np.full((1, 3), np.nan), "database": np.ones((4, 3))}, "NaN"),
        ({"queries": np.ones((1, 3)), "database": np.ones((4, 3)), "k": 5}, "k=5 exceeds the 4"),
        (
            {"queries": np.ones((1, 3)), "database": np.ones((4, 3)), "k": 4, "exclude": [0]},
            "k=4 exceeds the 3",
        ),
        (
            {"queries": np.ones((2, 3)), "database": np.ones((4, 3)), "exclude": [0]},
            "one integer database index",
        ),
        ({"queries": np.ones((1, 3)), "database": np.ones((4, 3)), "exclude": [4]}, r"\[0, 4\)"),
        ({"queries": np.ones((1, 3)), "database": np.ones((4, 3)), "block_size": 0}, "block_size"),
        ({"queries": np.array([["a", "b"]]), "database": np.ones((4, 2))}, "numeric"),
    ],
)
def test_bad_input_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        search(**kwargs)


def test_leave_one_out_needs_two_codes():
    with pytest.raises(ValueError, match="at least 2 codes"):
        leave_one_out(np.ones((1, 3)))


@pytest.mark.parametrize("gram", [True, False])
def test_tie_keys_are_ascending_and_equal_exactly_where_distances_tie(gram, monkeypatch):
    if not gram:
        monkeypatch.setattr("neuralcodes.retrieval.search.GRAM_MAX_BYTES", 0)
    rng = np.random.default_rng(21)
    codes = rng.integers(0, 3, size=(40, 4)).astype(
        np.float32
    )  # exact squared distances, many ties
    squared = ((codes[:, None, :].astype(np.int64) - codes[None, :, :].astype(np.int64)) ** 2).sum(
        -1
    )
    for start, indices, keys in iter_leave_one_out(codes, block_size=9, tie_keys=True):
        rows = np.arange(start, start + len(indices))
        ranked = squared[rows[:, None], indices]
        assert (np.diff(keys, axis=1) >= 0).all()
        np.testing.assert_array_equal(np.diff(keys, axis=1) == 0, np.diff(ranked, axis=1) == 0)
