"""The evaluator ranked by a score matrix (re-ranked results): against scikit-learn's AP and a loop,
and the same figures as the codes' own ranking when the scores are the codes' cosine similarities."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from neuralcodes.retrieval.evaluate import retrieval_metrics
from neuralcodes.retrieval.rerank import rerank


def _clustered(seed: int, n_classes: int = 5, per_class: int = 12, dim: int = 8):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    codes = rng.standard_normal((n_classes, dim))[labels] + rng.standard_normal((len(labels), dim))
    return (codes / np.linalg.norm(codes, axis=1, keepdims=True)).astype(np.float64), labels


def test_cosine_scores_give_the_codes_own_figures():
    codes, labels = _clustered(0)
    by_codes = retrieval_metrics(codes, labels, ks=(1, 5), block_size=7)
    by_scores = retrieval_metrics(None, labels, ks=(1, 5), block_size=7, scores=codes @ codes.T)
    for key in ("mAP", "mAP@R", "P@1", "P@5", "R@5"):
        assert by_scores[key] == pytest.approx(by_codes[key], abs=1e-12)
    np.testing.assert_allclose(by_scores["AP"], by_codes["AP"], atol=1e-12)


def test_leave_one_out_scores_match_sklearn_whatever_the_diagonal_holds():
    codes, labels = _clustered(1)
    scores = rerank("k_reciprocal", codes, codes, loo=True, k1=5, k2=2)
    np.fill_diagonal(
        scores, 1e9
    )  # the query's own column is left out by position, not by its score
    expected = []
    for i in range(len(labels)):
        others = np.delete(np.arange(len(labels)), i)
        expected.append(average_precision_score(labels[others] == labels[i], scores[i, others]))
    got = retrieval_metrics(None, labels, ks=(10,), scores=scores, block_size=5)
    np.testing.assert_allclose(got["AP"], expected, atol=1e-12)
    p10 = [
        np.mean(
            labels[np.delete(np.arange(len(labels)), i)][
                np.argsort(-np.delete(scores[i], i), kind="stable")[:10]
            ]
            == labels[i]
        )
        for i in range(len(labels))
    ]
    assert got["P@10"] == pytest.approx(np.mean(p10))


def test_database_scores_match_sklearn_and_tied_scores_average_as_sklearn_does():
    database, database_labels = _clustered(2)
    queries, query_labels = _clustered(3, per_class=2)
    scores = np.round(rerank("aqe", queries, database, k=3), 1)  # rounded: many ties
    expected = [
        average_precision_score(database_labels == y, s) for y, s in zip(query_labels, scores)
    ]
    got = retrieval_metrics(
        None, query_labels, ties="average", scores=scores, database_labels=database_labels
    )
    np.testing.assert_allclose(got["AP"], expected, atol=1e-12)


def test_scores_of_the_wrong_shape_or_with_codes_are_clear_errors():
    codes, labels = _clustered(4)
    with pytest.raises(ValueError, match="exactly one"):
        retrieval_metrics(codes, labels, scores=codes @ codes.T)
    with pytest.raises(ValueError, match=r"scores must be \(queries, database\) = \(60, 60\)"):
        retrieval_metrics(None, labels, scores=codes[:50] @ codes.T)
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(None, labels, scores=np.full((60, 60), np.nan))
