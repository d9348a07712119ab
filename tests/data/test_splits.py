"""course_split(): the notebook's draws, exactly; sizes; determinism; the caller's RNG untouched."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neuralcodes.data.sources import ZipSource
from neuralcodes.data.splits import Split, class_indices, course_split

FULL_LABELS = np.repeat(np.arange(200), 500)  # Tiny ImageNet: class-major, 500 images per class

# Computed once from the real archive (neuralcodes.data.sources.load_dataset, then course_split with
# seed 42) and pasted here: the first indices of each part, and the files they name.
GOLDEN_FIRST = {
    "train": [77756, 90555, 34919, 30594, 8188, 83389, 76482, 5345],
    "val": [43450, 14791, 28617, 60875, 50419, 79901, 91111, 34188],
    "test": [13695, 26243, 65504, 33621, 86022, 65897, 14107, 93312],
    "ood": [98289, 96333, 96805, 96752, 96609, 96951, 99745, 98914],
}
GOLDEN_FILES = {
    "train": ["n04328186_329.JPEG", "n07695742_148.JPEG", "n02808440_476.JPEG"],
    "val": ["n02977058_54.JPEG", "n02113799_360.JPEG", "n02504458_203.JPEG"],
    "test": ["n02099712_274.JPEG", "n02423022_317.JPEG", "n03970156_101.JPEG"],
    "ood": ["n09256479_359.JPEG", "n07875152_399.JPEG", "n07920052_373.JPEG"],
}
GOLDEN_SHA256 = "77d65a6f6b9b74009bb8364c133dafb08493d088bf78b3b3870bd390a65dafe1"


def notebook_split(labels: np.ndarray, num_classes: int, n_ood: int = 10, seed: int = 42):
    """The reference notebook, written out independently (global RNG, two permutations)."""
    n_in = num_classes - n_ood
    in_idx = np.array([i for i, y in enumerate(labels) if y < n_in])
    ood_idx = np.array([i for i, y in enumerate(labels) if y >= n_in])
    np.random.seed(seed)
    p = np.random.permutation(len(in_idx))
    n_val = int(0.1 * len(in_idx))
    n_test = int(0.1 * len(in_idx))
    val, test, train = (
        in_idx[p[:n_val]],
        in_idx[p[n_val : n_val + n_test]],
        in_idx[p[n_val + n_test :]],
    )
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
    for got, want in zip(
        (split.train, split.val, split.test, split.ood), notebook_split(labels, 30, 7, 5)
    ):
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
    a, b, c = (
        course_split(FULL_LABELS, 200),
        course_split(FULL_LABELS, 200),
        course_split(FULL_LABELS, 200, seed=43),
    )
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
    assert (
        record["seed"] == 42
        and record["n_in_domain"] == 190
        and record["ood_classes"] == list(range(190, 200))
    )
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
        (
            np.array([0, 1]),
            3,
            {"n_ood": 1, "val_fraction": 0.6, "test_fraction": 0.5},
            "sum to less than 1",
        ),
    ],
)
def test_bad_arguments_are_explained(labels, num_classes, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        course_split(labels, num_classes, **kwargs)


def test_golden_indices_on_the_real_tiny_imagenet(tiny_imagenet_zip) -> None:
    """The split of the real archive, in its real order, is the one recorded when the project started."""
    listing = ZipSource(tiny_imagenet_zip).listing(
        64
    )  # the dataset order, without decoding a pixel
    split = course_split(listing.train.labels, len(listing.class_ids))
    for part, first in GOLDEN_FIRST.items():
        np.testing.assert_array_equal(getattr(split, part)[: len(first)], first, err_msg=part)
        names = [listing.train.files[i].rsplit("/", 1)[-1] for i in getattr(split, part)[:3]]
        assert names == GOLDEN_FILES[part], part
    assert split.fingerprint() == GOLDEN_SHA256


def test_golden_indices_follow_from_class_major_order() -> None:
    # Without the archive: the indices depend only on the labels' order, class-major with 500 a class.
    split = course_split(FULL_LABELS, 200)
    for part, first in GOLDEN_FIRST.items():
        np.testing.assert_array_equal(getattr(split, part)[: len(first)], first, err_msg=part)


# ----------------------------------------------------------------------------- explicit held-out classes


def test_explicit_ood_classes_hold_out_exactly_those() -> None:
    labels = np.repeat(np.arange(12), 15)
    split = course_split(labels, 12, ood_classes=[7, 2, 0])
    assert split.ood_classes == (0, 2, 7) and split.n_in_domain == 9 and split.ood_chosen
    assert set(labels[split.ood]) == {0, 2, 7}
    everything = np.concatenate([split.train, split.val, split.test, split.ood])
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(labels)))
    for part in (split.train, split.val, split.test):
        assert not set(labels[part]) & {0, 2, 7}
    # A classifier sees the in-domain classes numbered 0 .. 8 in class order; held-out ones are -1.
    renumbered = split.in_domain_labels(labels)
    assert split.in_domain_classes == (1, 3, 4, 5, 6, 8, 9, 10, 11)
    np.testing.assert_array_equal(renumbered[labels == 3], 1)
    np.testing.assert_array_equal(renumbered[labels == 11], 8)
    np.testing.assert_array_equal(renumbered[split.ood], -1)
    record = json.loads(json.dumps(split.to_json()))
    assert record["ood_classes"] == [0, 2, 7] and record["ood_chosen"] is True


def test_naming_the_default_classes_gives_the_default_split() -> None:
    default = course_split(FULL_LABELS, 200)
    named = course_split(FULL_LABELS, 200, ood_classes=list(range(199, 189, -1)))
    assert named.fingerprint() == default.fingerprint()
    assert not default.ood_chosen and default.to_json()["ood_chosen"] is False
    np.testing.assert_array_equal(
        default.in_domain_labels(FULL_LABELS[default.train]), FULL_LABELS[default.train]
    )


def test_explicit_ood_classes_follow_the_notebook_draws_over_the_other_classes() -> None:
    # Moving the held-out classes to the end by relabelling gives the notebook's split of that relabelling.
    labels = np.repeat(np.arange(8), 10)
    split = course_split(labels, 8, ood_classes=[1, 4], seed=3)
    in_domain, ood = (
        np.flatnonzero(~np.isin(labels, [1, 4])),
        np.flatnonzero(np.isin(labels, [1, 4])),
    )
    np.random.seed(3)
    order, ood_order = np.random.permutation(len(in_domain)), np.random.permutation(len(ood))
    np.testing.assert_array_equal(split.val, in_domain[order[:6]])
    np.testing.assert_array_equal(split.test, in_domain[order[6:12]])
    np.testing.assert_array_equal(split.train, in_domain[order[12:]])
    np.testing.assert_array_equal(split.ood, ood[ood_order])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ood_classes": [3, 3]}, "twice"),
        ({"ood_classes": [9]}, r"\[9\] lie outside \[0, 5\)"),
        ({"ood_classes": []}, "1 to 4 classes"),
        ({"ood_classes": [0, 1, 2, 3, 4]}, "1 to 4 classes"),
        ({"ood_classes": ["pizza"]}, "class_indices"),
        ({"ood_classes": "pizza"}, "class_indices"),
        ({"ood_classes": [1, 2], "n_ood": 3}, "n_ood=3 disagrees with the 2 ood_classes"),
    ],
)
def test_bad_ood_classes_are_explained(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        course_split(np.repeat(np.arange(5), 4), 5, **kwargs)


def test_class_indices_by_id_or_name_with_clear_errors() -> None:
    ids = ["n01", "n02", "n03", "n04"]
    names = ["meat loaf", "pizza", "acorn", "pizza"]
    assert class_indices(["n03", "Meat Loaf ", "n02"], ids, names) == [2, 0, 1]
    assert class_indices("n04,acorn", ids, names) == [3, 2]
    with pytest.raises(ValueError, match=r"unknown class 'piza'.*did you mean 'pizza'"):
        class_indices(["piza"], ids, names)
    with pytest.raises(
        ValueError,
        match=r"'pizza' is shared by classes \['n02', 'n04'\]; name one of them by its id",
    ):
        class_indices(["pizza"], ids, names)
    with pytest.raises(ValueError, match="more than once"):
        class_indices(["n01", "meat loaf"], ids, names)
    assert class_indices(["cats"], ["cats", "dogs"]) == [
        0
    ]  # a folder collection: ids are folder names


def test_class_indices_on_the_real_tiny_imagenet_names(tiny_imagenet_zip) -> None:
    listing = ZipSource(tiny_imagenet_zip).listing(64)
    picked = class_indices(["n07871810", "pizza", "acorn"], listing.class_ids, listing.class_names)
    assert picked == [190, 191, 199]


def test_class_disjoint_validation_classes_are_left_out_of_every_other_part():
    labels = np.repeat(np.arange(30), 40)
    split = course_split(labels, 30, n_ood=5, seed=7, n_val_classes=4, val_class_images=25)
    assert len(split.val_classes) == 4 and not set(split.val_classes) & set(split.ood_classes)
    assert split.n_in_domain == 21 and split.num_classes == 30
    assert set(labels[split.val_retrieval]) == set(split.val_classes)
    assert (
        np.bincount(labels[split.val_retrieval], minlength=30)[list(split.val_classes)].tolist()
        == [25] * 4
    )
    for part in (split.train, split.val, split.test, split.ood):
        assert not np.isin(labels[part], split.val_classes).any()
    trained = np.concatenate([split.train, split.val, split.test])
    assert sorted(set(labels[trained])) == sorted(split.in_domain_classes)
    assert len(trained) == 21 * 40  # every image of the other in-domain classes, none lost
    mapped = split.in_domain_labels(labels)
    assert (mapped[split.val_retrieval] == -1).all() and sorted(set(mapped[trained])) == list(
        range(21)
    )
    assert split.to_json()["val_classes"] == list(split.val_classes)


def test_class_disjoint_validation_is_seeded_and_leaves_the_course_split_alone():
    labels = np.repeat(np.arange(30), 40)
    a, b = (course_split(labels, 30, n_ood=5, seed=7, n_val_classes=4) for _ in range(2))
    assert a.val_classes == b.val_classes and a.fingerprint() == b.fingerprint()
    assert course_split(labels, 30, n_ood=5, seed=8, n_val_classes=4).val_classes != a.val_classes
    plain = course_split(labels, 30, n_ood=5, seed=7)
    assert (
        course_split(labels, 30, n_ood=5, seed=7, n_val_classes=0).fingerprint()
        == plain.fingerprint()
    )
    assert a.fingerprint() != plain.fingerprint() and not plain.ood_chosen and not a.ood_chosen
    assert len(a.val_retrieval) == 4 * 40  # val_class_images None: every image of the class


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_val_classes=-1), "n_val_classes"),
        (dict(n_val_classes=25), "no class to train on"),
        (dict(n_val_classes=2, val_class_images=1), "val_class_images"),
    ],
)
def test_bad_class_disjoint_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        course_split(np.repeat(np.arange(30), 40), 30, n_ood=5, **kwargs)
