"""course_split(): the notebook's draws, exactly; sizes; determinism; the caller's RNG untouched."""
from __future__ import annotations

import json

import numpy as np
import pytest

from neuralcodes.data.splits import Split, course_split

FULL_LABELS = np.repeat(np.arange(200), 500)  # Tiny ImageNet: class-major, 500 images per class


def notebook_split(labels: np.ndarray, num_classes: int, n_ood: int = 10, seed: int = 42):
    """The reference notebook, written out independently (global RNG, two permutations)."""
    n_in = num_classes - n_ood
    in_idx = np.array([i for i, y in enumerate(labels) if y < n_in])
    ood_idx = np.array([i for i, y in enumerate(labels) if y >= n_in])
    np.random.seed(seed)
    p = np.random.permutation(len(in_idx))
    n_val = int(0.1 * len(in_idx))
    n_test = int(0.1 * len(in_idx))
    val, test, train = in_idx[p[:n_val]], in_idx[p[n_val:n_val + n_test]], in_idx[p[n_val + n_test:]]
    ood = ood_idx[np.random.permutation(len(ood_idx))]
    return train, val, test, ood


def test_full_tiny_imagenet_sizes() -> None:
    split = course_split(FULL_LABELS, 200)
    assert split.sizes == {"train": 76_000, "val": 9_500, "test": 9_500, "ood": 5_000}
    assert split.n_in_domain == 190
    assert split.ood_classes == tuple(range(190, 200))


def test_equals_the_notebook_draws() -> None:
    state = np.random.get_state()
    expected = notebook_split(FULL_LABELS, 200)
    np.random.set_state(state)
    split = course_split(FULL_LABELS, 200)
    for got, want in zip((split.train, split.val, split.test, split.ood), expected):
        np.testing.assert_array_equal(got, want)


def test_equals_the_notebook_on_uneven_classes_and_other_seed() -> None:
    rng = np.random.default_rng(3)
    labels = np.sort(rng.integers(0, 30, size=1237))  # class-major, uneven class sizes
    split = course_split(labels, 30, n_ood=7, seed=5)
    for got, want in zip((split.train, split.val, split.test, split.ood), notebook_split(labels, 30, 7, 5)):
        np.testing.assert_array_equal(got, want)


def test_partition_and_ood_classes() -> None:
    split = course_split(FULL_LABELS, 200)
    everything = np.concatenate([split.train, split.val, split.test, split.ood])
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(FULL_LABELS)))
    assert set(np.unique(FULL_LABELS[split.ood])) == set(range(190, 200))
    for part in (split.train, split.val, split.test):
        assert FULL_LABELS[part].max() < 190
    # The OOD images are shuffled, not left in class order.
    assert not np.array_equal(split.ood, np.sort(split.ood))


def test_same_seed_same_split_other_seed_other_split() -> None:
    a, b, c = course_split(FULL_LABELS, 200), course_split(FULL_LABELS, 200), course_split(FULL_LABELS, 200, seed=43)
    assert a.fingerprint() == b.fingerprint()
    np.testing.assert_array_equal(a.val, b.val)
    assert a.fingerprint() != c.fingerprint()
    assert not np.array_equal(a.val, c.val)
    assert a.sizes == c.sizes


def test_callers_global_rng_is_untouched() -> None:
    np.random.seed(123)
    expected = np.random.rand(5)
    np.random.seed(123)
    course_split(FULL_LABELS, 200)
    np.testing.assert_array_equal(np.random.rand(5), expected)


def test_n_ood_and_fractions_are_parameters() -> None:
    labels = np.repeat(np.arange(10), 20)
    split = course_split(labels, 10, n_ood=3, val_fraction=0.2, test_fraction=0.05)
    assert split.sizes == {"train": 105, "val": 28, "test": 7, "ood": 60}
    assert split.ood_classes == (7, 8, 9)
    assert course_split(labels, 10, n_ood=0).sizes["ood"] == 0


def test_to_json_and_summary() -> None:
    split = course_split(FULL_LABELS, 200)
    record = json.loads(json.dumps(split.to_json()))
    assert record["sizes"] == {"train": 76_000, "val": 9_500, "test": 9_500, "ood": 5_000}
    assert record["seed"] == 42 and record["n_in_domain"] == 190 and record["ood_classes"] == list(range(190, 200))
    assert record["sha256"] == split.fingerprint()
    assert "76,000" in split.summary() and "5,000 OOD" in split.summary()
    assert isinstance(split, Split)
    with pytest.raises(AttributeError):
        split.seed = 1  # frozen


@pytest.mark.parametrize(
    "labels, num_classes, kwargs, message",
    [
        (np.zeros((2, 2), dtype=int), 3, {}, "1-D integer"),
        (np.array([0.0, 1.0]), 3, {}, "1-D integer"),
        (np.array([0, 5]), 3, {"n_ood": 1}, r"\[0, 3\)"),
        (np.array([0, 1]), 3, {"n_ood": 3}, "n_ood"),
        (np.array([0, 1]), 3, {"n_ood": 1, "val_fraction": 0.6, "test_fraction": 0.5}, "sum to less than 1"),
    ],
)
def test_bad_arguments_are_explained(labels, num_classes, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        course_split(labels, num_classes, **kwargs)
