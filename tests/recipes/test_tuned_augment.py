"""The on-device batch augmentation of fine-tuning (its m-per-class batches: tests/learning/test_samplers.py)."""

import torch

from neuralcodes.recipes.tuned_codes.augment import RetrievalAugment


def batch(seed=0, n=6):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g)


NOTHING = {
    "scale": (1.0, 1.0),
    "ratio": (1.0, 1.0),
    "flip": 0.0,
    "rotation": 0.0,
    "tilt": 0.0,
    "brightness": 0.0,
    "contrast": 0.0,
    "saturation": 0.0,
}


def test_augmentation_with_no_change_returns_the_images_and_flip_is_a_mirror():
    x = batch()
    same = RetrievalAugment(**NOTHING)(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    mirrored = RetrievalAugment(**{**NOTHING, "flip": 1.0})(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(mirrored, x.flip(3), atol=1e-5, rtol=0)
    brighter = RetrievalAugment(**{**NOTHING, "brightness": 0.5})(
        x * 0.5, torch.Generator().manual_seed(0)
    )
    factor = (brighter / (x * 0.5)).flatten(1).median(dim=1).values
    torch.testing.assert_close(
        brighter, x * 0.5 * factor.view(-1, 1, 1, 1), atol=1e-5, rtol=0
    )  # one factor per image
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
    assert (
        len({tuple(t.flatten()[:50].tolist()) for t in twins}) == 8
    )  # the same image, 8 different views
