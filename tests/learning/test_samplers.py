import numpy as np
import pytest
from pytorch_metric_learning.utils import common_functions as pml_common

from neuralcodes.learning.samplers import (
    MPerClassSampler,
    TripletSampler,
    TripletStore,
    derive_seed,
    m_per_class_order,
)


@pytest.fixture
def labels():
    # Uneven class sizes, shuffled, with a non-contiguous label value.
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2, 7], [5, 2, 9, 4])
    return rng.permutation(labels)


def test_triplets_respect_classes(labels):
    t = TripletSampler(labels).sample(5000, seed=1)
    assert t.shape == (5000, 3) and t.dtype == np.int64
    q, p, n = t.T
    assert (labels[q] == labels[p]).all()
    assert (q != p).all()
    assert (labels[q] != labels[n]).all()


def test_choices_cover_the_allowed_sets_uniformly(labels):
    # Positive of query 0 spreads over the other images of its class; the negative over all others.
    sampler = TripletSampler(labels)
    t = sampler.sample(200_000, seed=3)
    q0 = t[t[:, 0] == t[0, 0]]
    same = set(np.flatnonzero(labels == labels[t[0, 0]])) - {t[0, 0]}
    assert set(q0[:, 1]) == same
    neg = t[:, 2][labels[t[:, 0]] == 0]
    counts = np.bincount(neg, minlength=len(labels))[labels != 0]
    assert counts.min() > 0.8 * counts.mean()
    # Queries are uniform over images.
    qc = np.bincount(t[:, 0], minlength=len(labels))
    assert qc.min() > 0.9 * qc.mean()


def test_deterministic_from_seed(labels):
    s = TripletSampler(labels)
    assert np.array_equal(s.sample(100, 5), s.sample(100, 5))
    assert not np.array_equal(s.sample(100, 5), s.sample(100, 6))
    assert derive_seed(0, 1) != derive_seed(0, 2) and derive_seed(0, 1) == derive_seed(0, 1)


def test_store_saves_and_reloads(tmp_path, labels):
    store = TripletStore(tmp_path, TripletSampler(labels), per_epoch=50, seed=3)
    first = store.get(2)
    assert store.path(2).name == "epoch_002.npy" and store.path(2).exists()
    assert np.array_equal(np.load(store.path(2)), first)
    again = TripletStore(tmp_path, TripletSampler(labels), per_epoch=50, seed=3).get(2)
    assert np.array_equal(first, again)
    # The saved file is what is read: a fresh store with another seed still reads epoch 2 as saved.
    assert np.array_equal(TripletStore(tmp_path, TripletSampler(labels), 50, seed=99).get(2), first)
    assert not np.array_equal(store.get(3), first)
    with pytest.raises(ValueError, match="another configuration"):
        TripletStore(tmp_path, TripletSampler(labels), per_epoch=60, seed=3).get(2)


def test_bad_labels_are_rejected():
    with pytest.raises(ValueError, match="single image"):
        TripletSampler(np.array([0, 0, 1, 2, 2]))
    with pytest.raises(ValueError, match="two classes"):
        TripletSampler(np.array([3, 3, 3]))
    with pytest.raises(ValueError, match="integers"):
        TripletSampler(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="positive"):
        TripletSampler(np.array([0, 0, 1, 1])).sample(0, 1)


def _m_per_class_labels():
    # 12 classes of 3 to 9 images, shuffled, with label values that are not 0..11.
    rng = np.random.default_rng(1)
    return rng.permutation(np.repeat(np.arange(12) * 5 + 2, rng.integers(3, 10, size=12)))


def test_m_per_class_batches():
    labels = _m_per_class_labels()
    sampler = MPerClassSampler(labels, m=3, batch_size=12, length_before_new_iter=240, seed=4)
    indices = np.array(list(sampler))
    assert len(sampler) == len(indices) == 240
    for batch in indices.reshape(-1, 12):
        classes, counts = np.unique(labels[batch], return_counts=True)
        assert len(classes) == 4 and (counts == 3).all()  # 12 / 3 classes, 3 images each
        assert len(set(batch.tolist())) == 12  # every class has >= 3 images: no image twice
    # Over the epoch every class is drawn, not a fixed subset.
    assert set(labels[indices]) == set(labels)


def test_m_per_class_is_a_pure_function_of_seed_and_epoch():
    labels = _m_per_class_labels()
    state = np.random.get_state()
    make = lambda seed: MPerClassSampler(
        labels, m=2, batch_size=8, length_before_new_iter=80, seed=seed
    )
    a, b = make(0), make(0)
    first = list(a)
    assert list(a) == first == list(b)  # re-iterating repeats the epoch: no state carried over
    a.set_epoch(1)
    second = list(a)
    assert second != first
    resumed = make(0)
    resumed.set_epoch(1)
    assert list(resumed) == second  # a resumed run sees the batches of the uninterrupted one
    assert list(make(1)) != first
    # numpy's global generator is neither used nor advanced, and pml's is restored.
    assert all(np.array_equal(x, y) for x, y in zip(np.random.get_state(), state))
    assert pml_common.NUMPY_RANDOM is np.random


def test_m_per_class_rejects_impossible_batches():
    labels = _m_per_class_labels()
    with pytest.raises(ValueError, match="multiple of m"):
        MPerClassSampler(labels, m=3, batch_size=10)
    with pytest.raises(ValueError, match="12 classes"):
        MPerClassSampler(labels, m=2, batch_size=26)
    with pytest.raises(ValueError, match="length_before_new_iter"):
        MPerClassSampler(labels, m=2, batch_size=8, length_before_new_iter=4)
    with pytest.raises(ValueError, match="integer"):
        MPerClassSampler(labels.astype(float), m=2, batch_size=8)


def test_an_epoch_of_m_per_class_batches_draws_only_the_given_images():
    labels = np.repeat(np.arange(12), 9)
    allowed = np.flatnonzero(labels < 10)  # two classes are held out: never drawn
    order = m_per_class_order(labels, allowed, m=4, batch_size=20, n_batches=7, seed=3, epoch=1)
    assert order.shape == (7 * 20,)
    assert np.isin(order, allowed).all()
    for batch in order.reshape(7, 20):
        classes, counts = np.unique(labels[batch], return_counts=True)
        assert len(classes) == 5 and (counts == 4).all()
        assert len(np.unique(batch)) == 20  # 9 images per class: no image twice within a class


def test_the_epoch_order_is_a_function_of_seed_and_epoch_and_leaves_numpy_alone():
    labels = np.repeat(np.arange(12), 9)
    indices = np.random.default_rng(0).permutation(len(labels))
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = m_per_class_order(labels, indices, 3, 12, 5, seed=1, epoch=0)
    assert np.array_equal(np.random.get_state()[1], before)
    assert np.array_equal(a, m_per_class_order(labels, indices, 3, 12, 5, seed=1, epoch=0))
    assert not np.array_equal(a, m_per_class_order(labels, indices, 3, 12, 5, seed=1, epoch=1))
    assert not np.array_equal(a, m_per_class_order(labels, indices, 3, 12, 5, seed=2, epoch=0))
    # The sampler and the epoch order are one draw: the order is the sampler's epoch, mapped to the images.
    sampler = MPerClassSampler(labels[indices], 3, 12, 60, seed=1)
    assert np.array_equal(a, indices[list(sampler)])


def test_the_epoch_order_is_the_one_the_tuned_recipe_always_drew():
    # Pinned from the tuned recipe's own sampler before there was one sampler (recipes/tuned_codes/sampling.py,
    # commit 3b33bee): fine-tuning runs draw the batches they drew then, a resumed old run included.
    labels = _m_per_class_labels()
    indices = np.flatnonzero(labels != 7)
    order = m_per_class_order(labels, indices, 3, 12, 2, seed=5, epoch=2)
    assert order.tolist() == [
        70,
        13,
        34,
        4,
        36,
        6,
        71,
        69,
        24,
        32,
        57,
        43,
        35,
        31,
        15,
        25,
        58,
        72,
        57,
        32,
        43,
        71,
        69,
        50,
    ]


def test_impossible_epoch_orders_say_what_to_change():
    labels = np.repeat(np.arange(3), 9)
    indices = np.arange(len(labels))
    with pytest.raises(ValueError, match="batch_size to at most 12"):
        m_per_class_order(labels, indices, 4, 16, 2, seed=0)
    with pytest.raises(ValueError, match="multiple of m"):
        m_per_class_order(labels, indices, 4, 10, 2, seed=0)
