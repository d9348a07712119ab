import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from sklearn.neighbors import NearestNeighbors

from neuralcodes.retrieval.evaluate import retrieval_metrics
from neuralcodes.retrieval.metrics import (
    average_precision,
    map_at_r,
    mean_average_precision,
    precision_at_k,
    precision_recall_curve,
    recall_at_k,
    similarity_precision,
)

# ----------------------------------------------------------------------------- naive references


def naive_ap(ranked_relevance, n_relevant):
    """AP by a loop over ranks: precision@r summed at each relevant rank, over all relevant items."""
    hits, total = 0, 0.0
    for rank, relevant in enumerate(ranked_relevance, start=1):
        if relevant:
            hits += 1
            total += hits / rank
    return total / n_relevant


def notebook_map(codes, labels):
    """The reference notebook's procedure: scikit-learn NearestNeighbors ranks every image for each
    query, the first neighbour (the query itself) is dropped, then its AP loop over the neighbours'
    labels. Ranking and arithmetic are both independent of neuralcodes."""
    _, neighbours = NearestNeighbors(n_neighbors=len(codes)).fit(codes).kneighbors(codes)
    assert (
        neighbours[:, 0] == np.arange(len(codes))
    ).all()  # continuous codes: no duplicate at distance 0
    aps = []
    for q, row in enumerate(neighbours[:, 1:]):
        hits, precision_sum = 0, 0.0
        for i, label in enumerate(labels[row]):
            if label == labels[q]:
                hits += 1
                precision_sum += hits / (i + 1)
        aps.append(precision_sum / hits)
    return np.array(aps)


def naive_map_at_r(ranked_relevance, n_relevant):
    return naive_ap(ranked_relevance[:n_relevant], n_relevant)


def naive_interpolated_precision(ranked_relevance, n_relevant, levels):
    precisions, recalls, hits = [], [], 0
    for rank, relevant in enumerate(ranked_relevance, start=1):
        hits += bool(relevant)
        precisions.append(hits / rank)
        recalls.append(hits / n_relevant)
    out = []
    for t in levels:
        reachable = [p for p, r in zip(precisions, recalls) if r >= t - 1e-9]
        out.append(max(reachable) if reachable else 0.0)
    return out


def random_ranking(rng, n_queries, n_results, truncated_extra=0):
    relevance = rng.random((n_queries, n_results)) < rng.uniform(0.05, 0.6, size=(n_queries, 1))
    relevance[:, 0] |= relevance.sum(axis=1) == 0  # every query sees at least one relevant item
    n_relevant = relevance.sum(axis=1) + rng.integers(0, truncated_extra + 1, size=n_queries)
    return relevance, n_relevant


# ----------------------------------------------------------------------------- average precision


def test_worked_example_ap():
    # Relevant at ranks 1, 3 and 6 of 8, R = 3: AP = (1/1 + 2/3 + 3/6) / 3 = 0.7222...
    relevance = np.array([[1, 0, 1, 0, 0, 1, 0, 0]], dtype=bool)
    np.testing.assert_allclose(average_precision(relevance, [3]), [(1 + 2 / 3 + 3 / 6) / 3])


def test_relevant_items_missing_from_a_truncated_ranking_count_as_zero_precision():
    # Same ranking, but R = 4: one relevant item never shows up -> (1 + 2/3 + 3/6) / 4.
    relevance = np.array([[1, 0, 1, 0, 0, 1, 0, 0]], dtype=bool)
    np.testing.assert_allclose(average_precision(relevance, [4]), [(1 + 2 / 3 + 3 / 6) / 4])


def test_ap_matches_naive_loop_on_random_rankings():
    rng = np.random.default_rng(0)
    relevance, n_relevant = random_ranking(rng, 60, 40, truncated_extra=3)
    expected = [naive_ap(row, r) for row, r in zip(relevance, n_relevant)]
    np.testing.assert_allclose(average_precision(relevance, n_relevant), expected, rtol=1e-12)
    assert mean_average_precision(relevance, n_relevant) == pytest.approx(
        np.mean(expected), rel=1e-12
    )


def test_ap_matches_sklearn_average_precision_score_without_ties():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(5, 300))
        y_true = rng.random(n) < rng.uniform(0.05, 0.5)
        y_true[rng.integers(n)] = True
        scores = rng.standard_normal(n)  # continuous: no ties, so both tie rules agree
        ranked = y_true[np.argsort(-scores)]
        for ties in ("index", "average"):
            ours = average_precision(
                ranked[None, :], [y_true.sum()], np.sort(-scores)[None, :], ties=ties
            )[0]
            assert ours == pytest.approx(average_precision_score(y_true, scores), abs=1e-9)


def test_tie_averaged_ap_matches_sklearn_on_integer_scores_with_ties():
    rng = np.random.default_rng(11)
    differed = 0
    for _ in range(40):
        n = int(rng.integers(5, 200))
        y_true = rng.random(n) < rng.uniform(0.1, 0.6)
        y_true[rng.integers(n)] = True
        scores = rng.integers(0, int(rng.integers(2, 8)), size=n)  # few values: many ties
        order = np.argsort(-scores, kind="stable")  # ties listed by index, as a search lists them
        ranked, distances = y_true[order][None, :], -scores[order][None, :]
        expected = average_precision_score(y_true, scores)
        assert average_precision(ranked, [y_true.sum()], distances, ties="average")[
            0
        ] == pytest.approx(expected, abs=1e-12)
        by_index = average_precision(ranked, [y_true.sum()])[0]
        assert by_index == pytest.approx(naive_ap(ranked[0], y_true.sum()), abs=1e-12)
        differed += abs(by_index - expected) > 1e-6
    assert differed > 20  # the tied case is really exercised: index order changes most APs


def test_tie_averaged_ap_hand_example():
    # Distances 0.1, then three results tied at 0.5 (relevant, not, relevant), then 0.9 (relevant); R = 3.
    relevance = np.array([[1, 1, 0, 1, 0]], dtype=bool)
    distances = np.array([[0.1, 0.5, 0.5, 0.5, 0.9]])
    # The tied group ends at rank 4 with 3 hits: both of its hits get precision 3/4.
    assert average_precision(relevance, [3], distances, ties="average")[0] == pytest.approx(
        (1 + 3 / 4 + 3 / 4) / 3
    )
    # By index: hits at ranks 1, 2, 4.
    assert average_precision(relevance, [3], distances)[0] == pytest.approx((1 + 2 / 2 + 3 / 4) / 3)
    # Listing the group in another order changes nothing for the tie-averaged AP.
    shuffled = np.array([[1, 0, 1, 1, 0]], dtype=bool)
    assert average_precision(shuffled, [3], distances, ties="average")[0] == pytest.approx(
        (1 + 3 / 4 + 3 / 4) / 3
    )
    assert mean_average_precision(shuffled, [3], distances, ties="average") == pytest.approx(
        (1 + 3 / 4 + 3 / 4) / 3
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ties": "random"}, "ties must be one of"),
        ({"ties": "average"}, "needs ranked_distances"),
        ({"ties": "average", "ranked_distances": np.array([[0.3, 0.2, 0.4]])}, "ascending"),
        ({"ties": "average", "ranked_distances": np.array([[0.1, 0.2]])}, "shape of relevance"),
    ],
)
def test_bad_tie_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        average_precision(np.array([[1, 0, 1]], dtype=bool), [2], **kwargs)


def test_ap_matches_the_notebooks_procedure_with_sklearn_nearest_neighbours():
    rng = np.random.default_rng(2)
    codes, labels = clustered_codes(rng, 4, 25, 12, spread=1.5)
    expected = notebook_map(codes.astype(np.float64), labels)
    np.testing.assert_allclose(retrieval_metrics(codes, labels, ks=())["AP"], expected, atol=1e-6)


def test_ap_accepts_0_1_integers_and_blocks_do_not_change_results(monkeypatch):
    rng = np.random.default_rng(3)
    relevance, n_relevant = random_ranking(rng, 25, 30)
    whole = average_precision(relevance.astype(np.int8), n_relevant)
    monkeypatch.setattr("neuralcodes.retrieval.metrics._BLOCK_ELEMENTS", 31)  # one query per block
    np.testing.assert_array_equal(average_precision(relevance, n_relevant), whole)


def test_query_without_relevant_items_is_a_clear_error():
    relevance = np.zeros((3, 4), dtype=bool)
    relevance[0, 1] = True
    with pytest.raises(ValueError, match="2 of 3 queries have no relevant item"):
        average_precision(relevance, [1, 0, 0])


@pytest.mark.parametrize(
    ("relevance", "n_relevant", "message"),
    [
        (np.ones(4, dtype=bool), [2], "2-D"),
        (np.ones((2, 3), dtype=bool), [3], "one count per query"),
        (np.ones((1, 3), dtype=bool), [2], "more relevant results than their n_relevant"),
        (np.full((1, 3), 2), [3], "booleans"),
        (np.ones((1, 3), dtype=bool), [2.5], "whole numbers"),
    ],
)
def test_bad_relevance_input_is_rejected(relevance, n_relevant, message):
    with pytest.raises(ValueError, match=message):
        average_precision(relevance, n_relevant)


# ----------------------------------------------------------------------------- P@k, R@k, mAP@R, PR curve


def test_precision_and_recall_at_k_match_naive_loop():
    rng = np.random.default_rng(4)
    relevance, n_relevant = random_ranking(rng, 40, 30, truncated_extra=2)
    for k in (1, 5, 30):
        p = np.mean([row[:k].sum() / k for row in relevance])
        r = np.mean([row[:k].sum() / n for row, n in zip(relevance, n_relevant)])
        assert precision_at_k(relevance, k) == pytest.approx(p, rel=1e-12)
        assert recall_at_k(relevance, n_relevant, k) == pytest.approx(r, rel=1e-12)
    with pytest.raises(ValueError, match="exceeds the 30 ranked results"):
        precision_at_k(relevance, 31)
    with pytest.raises(ValueError, match="positive integer"):
        recall_at_k(relevance, n_relevant, 0)


def test_map_at_r_worked_example():
    # R = 4; first 4 results are 1, 0, 1, 1 -> (1/1 + 2/3 + 3/4) / 4. The hit at rank 5 is beyond R.
    relevance = np.array([[1, 0, 1, 1, 1, 0]], dtype=bool)
    assert map_at_r(relevance, [4]) == pytest.approx((1 + 2 / 3 + 3 / 4) / 4)


def test_map_at_r_matches_naive_loop_and_needs_r_results():
    rng = np.random.default_rng(5)
    relevance, n_relevant = random_ranking(rng, 50, 40)
    expected = np.mean([naive_map_at_r(row, r) for row, r in zip(relevance, n_relevant)])
    assert map_at_r(relevance, n_relevant) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="longer ranking"):
        map_at_r(relevance[:, :2], np.full(len(relevance), 3))


def test_precision_recall_curve_worked_example():
    # Hits at ranks 1, 3, 6, R = 3: precision at the hits 1, 2/3, 1/2 at recall 1/3, 2/3, 1.
    relevance = np.array([[1, 0, 1, 0, 0, 1]], dtype=bool)
    levels, precision = precision_recall_curve(
        relevance, [3], recall_levels=[0.0, 0.3, 0.5, 2 / 3, 0.9, 1.0]
    )
    np.testing.assert_allclose(precision, [1.0, 1.0, 2 / 3, 2 / 3, 0.5, 0.5])
    np.testing.assert_allclose(levels, [0.0, 0.3, 0.5, 2 / 3, 0.9, 1.0])


def test_precision_recall_curve_matches_naive_loop():
    rng = np.random.default_rng(6)
    relevance, n_relevant = random_ranking(rng, 30, 25, truncated_extra=2)
    levels, precision = precision_recall_curve(relevance, n_relevant)
    expected = np.mean(
        [naive_interpolated_precision(row, r, levels) for row, r in zip(relevance, n_relevant)],
        axis=0,
    )
    np.testing.assert_allclose(precision, expected, rtol=1e-12)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        precision_recall_curve(relevance, n_relevant, recall_levels=[0.5, 1.5])


# ----------------------------------------------------------------------------------------------- triplets


def test_similarity_precision_counts_ties_as_wrong():
    d_pos = np.array([0.1, 0.5, 0.7, 0.2])
    d_neg = np.array([0.2, 0.5, 0.3, 0.9])  # right, tie (wrong), wrong, right
    assert similarity_precision(d_pos, d_neg) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same length"):
        similarity_precision(d_pos, d_neg[:2])
    with pytest.raises(ValueError, match="NaN"):
        similarity_precision(np.array([np.nan]), np.array([1.0]))


# ----------------------------------------------------------------------------- leave-one-out evaluator


def clustered_codes(rng, n_classes, per_class, dim, spread=1.0):
    centres = rng.standard_normal((n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    codes = centres[labels] + spread * rng.standard_normal((len(labels), dim))
    return (codes / np.linalg.norm(codes, axis=1, keepdims=True)).astype(np.float32), labels


def test_retrieval_metrics_match_a_brute_force_float64_reference():
    rng = np.random.default_rng(8)
    codes, labels = clustered_codes(rng, 5, 30, 16)
    order = rng.permutation(len(labels))
    codes, labels = codes[order], labels[order]

    c64 = codes.astype(np.float64)
    distances = np.sqrt(np.maximum(((c64[:, None, :] - c64[None, :, :]) ** 2).sum(-1), 0))
    aps, ap_rs, p5, r5, curves = [], [], [], [], []
    for q in range(len(codes)):
        others = np.delete(np.arange(len(codes)), q)
        ranked = others[np.argsort(distances[q, others], kind="stable")]
        rel = labels[ranked] == labels[q]
        n_rel = int(np.sum(labels == labels[q]) - 1)
        aps.append(naive_ap(rel, n_rel))
        ap_rs.append(naive_map_at_r(rel, n_rel))
        p5.append(rel[:5].sum() / 5)
        r5.append(rel[:5].sum() / n_rel)
        curves.append(naive_interpolated_precision(rel, n_rel, np.linspace(0, 1, 11)))

    result = retrieval_metrics(codes, labels, ks=(1, 5), block_size=7)
    np.testing.assert_allclose(result["AP"], aps, atol=1e-6)
    assert result["mAP"] == pytest.approx(np.mean(aps), abs=1e-6)
    assert result["mAP@R"] == pytest.approx(np.mean(ap_rs), abs=1e-6)
    assert result["P@5"] == pytest.approx(np.mean(p5), abs=1e-6)
    assert result["R@5"] == pytest.approx(np.mean(r5), abs=1e-6)
    np.testing.assert_allclose(result["precision_at_recall"], np.mean(curves, axis=0), atol=1e-6)
    assert result["n_queries"] == len(codes)
    assert 0.2 < result["mAP"] < 1.0  # clustered codes: clearly better than chance (0.2)


def test_retrieval_metrics_accept_string_labels():
    rng = np.random.default_rng(9)
    codes, labels = clustered_codes(rng, 3, 10, 8)
    named = np.array(["cat", "dog", "eel"])[labels]
    assert retrieval_metrics(codes, named, ks=(1,))["mAP"] == pytest.approx(
        retrieval_metrics(codes, labels, ks=(1,))["mAP"]
    )


def test_retrieval_metrics_reject_classes_with_a_single_image_and_large_k():
    codes = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="1 queries are the only image of their class"):
        retrieval_metrics(codes, np.array([0, 0, 0, 1]), ks=(1,))
    with pytest.raises(ValueError, match="exceeds the 3 ranked results"):
        retrieval_metrics(codes, np.array([0, 0, 1, 1]), ks=(4,))


def integer_codes_with_ties(rng, n, dim, n_classes):
    """Small-integer codes: inner products and squared distances are exact in float32, and many tie."""
    codes = rng.integers(0, 2, size=(n, dim)).astype(np.float32)
    labels = rng.permutation(np.arange(n) % n_classes)
    return codes, labels


@pytest.mark.parametrize(
    "gram", [True, False]
)  # the symmetric-product path and the blocked search path
def test_retrieval_metrics_with_tied_distances_match_sklearn_and_a_stable_sort(gram, monkeypatch):
    if not gram:
        monkeypatch.setattr("neuralcodes.retrieval.search.GRAM_MAX_BYTES", 0)
    rng = np.random.default_rng(12)
    codes, labels = integer_codes_with_ties(
        rng, 90, 5, 4
    )  # at most 32 distinct codes for 90 images
    c = codes.astype(np.int64)
    squared = ((c[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    tie_averaged, by_index = [], []
    for q in range(len(codes)):
        others = np.delete(np.arange(len(codes)), q)
        relevant = labels[others] == labels[q]
        tie_averaged.append(average_precision_score(relevant, -squared[q, others]))
        by_index.append(
            naive_ap(relevant[np.argsort(squared[q, others], kind="stable")], relevant.sum())
        )

    average = retrieval_metrics(codes, labels, ks=(5,), block_size=7, ties="average")
    index = retrieval_metrics(codes, labels, ks=(5,), block_size=7)
    np.testing.assert_allclose(average["AP"], tie_averaged, atol=1e-12)
    np.testing.assert_allclose(index["AP"], by_index, atol=1e-12)
    assert np.abs(np.array(tie_averaged) - by_index).max() > 0.01  # the ties matter here
    assert average["P@5"] == index["P@5"]  # only AP takes the tie option


def test_retrieval_metrics_against_a_separate_database_match_sklearn():
    rng = np.random.default_rng(13)
    database, database_labels = clustered_codes(rng, 5, 20, 8)
    queries, query_labels = clustered_codes(rng, 5, 6, 8)
    queries, query_labels = queries[:25], query_labels[:25]
    distances = np.linalg.norm(
        queries[:, None, :].astype(np.float64) - database[None, :, :], axis=-1
    )
    expected_ap = [
        average_precision_score(database_labels == y, -d) for y, d in zip(query_labels, distances)
    ]
    nearest = np.argsort(distances, axis=1, kind="stable")[:, :10]
    expected_p10 = np.mean(database_labels[nearest] == query_labels[:, None])

    result = retrieval_metrics(
        queries,
        query_labels,
        ks=(10,),
        block_size=4,
        database=database,
        database_labels=database_labels,
    )
    np.testing.assert_allclose(result["AP"], expected_ap, atol=1e-6)
    assert result["P@10"] == pytest.approx(expected_p10)
    assert result["n_queries"] == 25
    with pytest.raises(ValueError, match=r"query classes \[7\] have no image in the database"):
        retrieval_metrics(
            queries[:2], np.array([0, 7]), ks=(), database=database, database_labels=database_labels
        )
    with pytest.raises(ValueError, match="together"):
        retrieval_metrics(queries, query_labels, ks=(), database=database)


# ----------------------------------------------------------------------------- a library user's mistakes


def test_retrieval_metrics_need_one_label_per_code():
    rng = np.random.default_rng(14)
    codes, labels = clustered_codes(rng, 4, 5, 8)
    # Shorter labels used to fail deep in the blocks (IndexError); longer ones scored a wrong mAP silently.
    for wrong in (labels[:-2], np.concatenate([labels, [0, 1, 2, 3, 0]])):
        with pytest.raises(
            ValueError,
            match=f"labels must hold one label per row of codes: codes has 20 rows, labels has {len(wrong)}",
        ):
            retrieval_metrics(codes, wrong, ks=(1,))
        with pytest.raises(ValueError, match="labels must hold one label per row of codes"):
            retrieval_metrics(codes, wrong, ks=(1,), database=codes, database_labels=labels)
    with pytest.raises(ValueError, match="database_labels must hold one label per row of database"):
        retrieval_metrics(codes, labels, ks=(1,), database=codes, database_labels=labels[:-1])
    with pytest.raises(
        ValueError, match=r"codes must be a 2-D \(items, dimensions\) array, got shape \(20,\)"
    ):
        retrieval_metrics(codes[:, 0], labels, ks=(1,))


def test_retrieval_metrics_default_cutoffs_fit_a_small_set_and_named_ones_are_checked():
    rng = np.random.default_rng(15)
    codes, labels = clustered_codes(
        rng, 4, 5, 8
    )  # 19 results per query: the default P@50, P@100 cannot exist
    result = retrieval_metrics(codes, labels)
    assert {k for k in result if k.startswith("P@")} == {"P@1", "P@5", "P@10"}
    assert result["P@5"] == retrieval_metrics(codes, labels, ks=(5,))["P@5"]
    with pytest.raises(ValueError, match="k=50 exceeds the 19 ranked results"):
        retrieval_metrics(codes, labels, ks=(50,))
    with pytest.raises(TypeError, match=r"ks must be a sequence of cut-offs, e.g. ks=\(5,\)"):
        retrieval_metrics(codes, labels, ks=5)
