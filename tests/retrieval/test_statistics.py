"""Paired bootstrap intervals: against scipy.stats.bootstrap and the normal approximation; pairing matters."""

import numpy as np
import pytest
from scipy.stats import bootstrap

from neuralcodes.retrieval.statistics import paired_bootstrap, paired_comparisons


def test_interval_matches_scipy_bootstrap_on_the_paired_differences():
    rng = np.random.default_rng(0)
    a = rng.beta(2, 3, size=400)
    b = np.clip(a - 0.02 + 0.1 * rng.standard_normal(400), 0, 1)
    ours = paired_bootstrap(a, b, n_resamples=20_000, seed=1)
    reference = bootstrap(
        (a, b),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=20_000,
        method="percentile",
        confidence_level=0.95,
        random_state=np.random.default_rng(2),
    ).confidence_interval
    width = reference.high - reference.low
    # Two independent Monte Carlo runs of the same interval: endpoints agree to a few percent of its width.
    assert ours["low"] == pytest.approx(reference.low, abs=0.05 * width)
    assert ours["high"] == pytest.approx(reference.high, abs=0.05 * width)
    assert ours["mean_difference"] == pytest.approx(np.mean(a - b), abs=1e-12)
    # And the normal approximation (mean +- 1.96 standard errors) agrees for a mean of 400 values.
    se = np.std(a - b, ddof=1) / np.sqrt(400)
    assert ours["low"] == pytest.approx(np.mean(a - b) - 1.96 * se, abs=0.1 * width)
    assert ours["high"] == pytest.approx(np.mean(a - b) + 1.96 * se, abs=0.1 * width)
    assert (ours["n"], ours["n_resamples"], ours["confidence"]) == (400, 20_000, 0.95)


def test_pairing_resolves_what_separate_standard_errors_do_not():
    # Queries differ a lot in difficulty, and b is consistently a little better on every query.
    rng = np.random.default_rng(3)
    difficulty = rng.uniform(0.05, 0.95, size=300)
    a = difficulty
    b = np.clip(difficulty + 0.01 + 0.005 * rng.standard_normal(300), 0, 1)
    se = max(np.std(a, ddof=1), np.std(b, ddof=1)) / np.sqrt(300)
    assert abs(np.mean(b) - np.mean(a)) < 2 * se  # unpaired: not resolved
    result = paired_bootstrap(b, a)
    assert result["low"] > 0  # paired: resolved


def test_seeded_results_are_reproducible():
    rng = np.random.default_rng(4)
    a, b = rng.random(50), rng.random(50)
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    assert paired_bootstrap(a, b, seed=7)["low"] != paired_bootstrap(a, b, seed=8)["low"]
    constant = paired_bootstrap(a + 0.1, a)
    assert constant["low"] == pytest.approx(0.1) and constant["high"] == pytest.approx(0.1)


def test_comparisons_cover_every_pair_in_order():
    rng = np.random.default_rng(5)
    per_query = {"L5": rng.random(30), "L6": rng.random(30), "L7": rng.random(30)}
    rows = paired_comparisons(per_query, n_resamples=200)
    assert [(r["a"], r["b"]) for r in rows] == [("L5", "L6"), ("L5", "L7"), ("L6", "L7")]
    assert rows[2]["mean_difference"] == pytest.approx(np.mean(per_query["L6"] - per_query["L7"]))


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "message"),
    [
        (np.ones(3), np.ones(4), {}, "paired"),
        (np.ones(1), np.ones(1), {}, "at least 2 pairs"),
        (np.array([0.5, np.nan]), np.ones(2), {}, "finite"),
        (np.ones(3), np.ones(3), {"confidence": 1.0}, "confidence"),
        (np.ones(3), np.ones(3), {"n_resamples": 10}, "n_resamples"),
    ],
)
def test_bad_input_is_explained(a, b, kwargs, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(a, b, **kwargs)
