"""m-per-class batches (pytorch-metric-learning's sampler, seeded) and the on-device batch augmentation."""
import numpy as np
import pytest
import torch

from neuralcodes.recipes.tuned_codes.augment import RetrievalAugment
from neuralcodes.recipes.tuned_codes.sampling import m_per_class_order


def labelled(n_classes=12, per_class=9, seed=0):
    labels = np.repeat(np.arange(n_classes), per_class)
    return labels, np.random.default_rng(seed).permutation(len(labels))


def test_every_batch_holds_m_images_of_each_of_its_classes():
    labels, _ = labelled()
    allowed = np.flatnonzero(labels < 10)  # two classes are held out: never drawn
    order = m_per_class_order(labels, allowed, m=4, batch_size=20, n_batches=7, seed=3, epoch=1)
    assert order.shape == (7 * 20,)
    assert np.isin(order, allowed).all()
    for batch in order.reshape(7, 20):
        classes, counts = np.unique(labels[batch], return_counts=True)
        assert len(classes) == 5 and (counts == 4).all()
        assert len(np.unique(batch)) == 20  # 9 images per class: no image twice within a class


def test_the_order_is_a_function_of_seed_and_epoch_and_leaves_numpy_alone():
    labels, indices = labelled()
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = m_per_class_order(labels, indices, 3, 12, 5, seed=1, epoch=0)
    assert np.array_equal(np.random.get_state()[1], before)
    assert np.array_equal(a, m_per_class_order(labels, indices, 3, 12, 5, seed=1, epoch=0))
    assert not np.array_equal(a, m_per_class_order(labels, indices, 3, 12, 5, seed=1, epoch=1))
    assert not np.array_equal(a, m_per_class_order(labels, indices, 3, 12, 5, seed=2, epoch=0))


def test_impossible_batches_say_which_option_to_change():
    labels, indices = labelled(n_classes=3)
    with pytest.raises(ValueError, match="--batch-size to at most 12"):
        m_per_class_order(labels, indices, 4, 16, 2, seed=0)
    with pytest.raises(ValueError, match="not a multiple"):
        m_per_class_order(labels, indices, 4, 10, 2, seed=0)


def batch(seed=0, n=6):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g)


NOTHING = {"scale": (1.0, 1.0), "ratio": (1.0, 1.0), "flip": 0.0, "rotation": 0.0, "tilt": 0.0, "brightness": 0.0,
           "contrast": 0.0, "saturation": 0.0}


def test_augmentation_with_no_change_returns_the_images_and_flip_is_a_mirror():
    x = batch()
    same = RetrievalAugment(**NOTHING)(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    mirrored = RetrievalAugment(**{**NOTHING, "flip": 1.0})(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(mirrored, x.flip(3), atol=1e-5, rtol=0)
    brighter = RetrievalAugment(**{**NOTHING, "brightness": 0.5})(x * 0.5, torch.Generator().manual_seed(0))
    factor = (brighter / (x * 0.5)).flatten(1).median(dim=1).values
    torch.testing.assert_close(brighter, x * 0.5 * factor.view(-1, 1, 1, 1), atol=1e-5, rtol=0)  # one factor per image
    assert factor.unique().numel() == len(x) and bool(((factor >= 0.5) & (factor <= 1.5)).all())


def test_augmentation_is_per_image_in_range_and_replayed_by_the_generator():
    x = batch(1, n=8)
    augment = RetrievalAugment()
    a = augment(x, torch.Generator().manual_seed(5))
    b = augment(x, torch.Generator().manual_seed(5))
    assert a.shape == x.shape and a.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    twins = augment(x[:1].expand(8, -1, -1, -1).contiguous(), torch.Generator().manual_seed(5))
    assert len({tuple(t.flatten()[:50].tolist()) for t in twins}) == 8  # the same image, 8 different views
