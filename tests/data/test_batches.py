import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neuralcodes.data.batches import Augment, DeviceImages, iterate_batches


def images(n=10, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


def test_batches_scale_uint8_to_unit_range_in_nchw():
    imgs = images()
    dev = DeviceImages(imgs)
    x = dev.batch([3, 1])
    assert x.dtype == torch.float32 and x.shape == (2, 3, 8, 8)
    assert torch.allclose(x[0], torch.from_numpy(imgs[3]).permute(2, 0, 1).float() / 255)


def test_iterate_batches_covers_indices_once_and_is_seeded():
    imgs, labels = images(), np.arange(10) % 3
    idx = np.array([9, 2, 4, 7, 0])
    seen = [y for _, y in iterate_batches(DeviceImages(imgs), labels, idx, 2)]
    assert torch.cat(seen).tolist() == labels[idx].tolist()

    def order(seed):
        g = torch.Generator().manual_seed(seed)
        return [
            x.sum().item() for x, _ in iterate_batches(DeviceImages(imgs), labels, idx, 1, True, g)
        ]

    assert order(5) == order(5)
    assert sorted(order(5)) == sorted(order(6))


def test_augment_matches_a_naive_per_image_crop_and_flip():
    x = torch.rand(16, 3, 8, 8)
    aug = Augment(pad=2, flip=True)
    out = aug(x, torch.Generator().manual_seed(3))
    # Replay the same draws and build each image by hand.
    g = torch.Generator().manual_seed(3)
    flip = torch.rand(16, generator=g) < 0.5
    dy = torch.randint(0, 5, (16,), generator=g)
    dx = torch.randint(0, 5, (16,), generator=g)
    for i in range(16):
        img = x[i].flip(2) if flip[i] else x[i]
        padded = F.pad(img, (2, 2, 2, 2))
        expected = padded[:, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8]
        assert torch.equal(out[i], expected)
    assert flip.any() and not flip.all()  # both branches exercised with this seed


def test_shards_of_each_batch_are_disjoint_and_cover_it():
    """Multi-process training: the processes' shards of a global batch partition it, in order."""
    images = DeviceImages(np.zeros((23, 4, 4, 3), dtype=np.uint8))
    labels = np.arange(23)
    order = np.random.default_rng(0).permutation(23)
    whole = [y.tolist() for _, y in iterate_batches(images, labels, order, 8)]
    parts = [
        [y.tolist() for _, y in iterate_batches(images, labels, order, 8, shard=(r, 3))]
        for r in range(3)
    ]
    for i, batch in enumerate(whole):
        assert sum((p[i] for p in parts), []) == batch
        assert max(len(p[i]) for p in parts) - min(len(p[i]) for p in parts) <= 1


def test_device_images_refuse_what_would_become_wrong_pixels():
    imgs = images()
    # Each of these used to be accepted (cast or permuted into nonsense) or to fail inside torch.permute.
    with pytest.raises(
        TypeError,
        match=r"images must be uint8 RGB in \[0, 255\], got dtype float64; convert floats",
    ):
        DeviceImages(imgs / 255.0)  # cast to uint8: every pixel 0 or 1, a black image set
    with pytest.raises(TypeError, match="got dtype int64"):
        DeviceImages(imgs.astype(np.int64) * 2)  # values above 255 would wrap
    with pytest.raises(
        ValueError, match=r"look channels-first \(N, 3, H, W\): pass images.transpose\(0, 2, 3, 1\)"
    ):
        DeviceImages(imgs.transpose(0, 3, 1, 2))
    with pytest.raises(
        ValueError,
        match=r"images must have shape \(N, H, W, 3\).*for one image pass images\[None\]",
    ):
        DeviceImages(imgs[..., 0])  # grayscale (N, H, W)
    with pytest.raises(ValueError, match="convert grayscale or RGBA images to RGB"):
        DeviceImages(np.concatenate([imgs, imgs[..., :1]], axis=3))
    with pytest.raises(TypeError, match="got list"):
        DeviceImages([imgs[0]])
    uint8_tensor = DeviceImages(
        torch.from_numpy(imgs)
    )  # a CPU uint8 tensor, channels last, is fine
    assert torch.equal(uint8_tensor.batch([2]), DeviceImages(imgs).batch([2]))
