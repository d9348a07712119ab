"""Multi-scale and flipped codes: the views an image is seen in, and the averaged code, against hand-made references."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_codes import TinyNet, normalise_rows

from neuralcodes.data.batches import DeviceImages
from neuralcodes.models.convnet import NeuralCodesConvNet
from neuralcodes.retrieval.codes import extract_codes, multi_views


def images(n=6, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_views_are_each_scale_and_its_mirror():
    x = torch.rand(2, 3, 8, 8)
    views = multi_views(x, (1.0, 0.5), flip=True)
    assert [tuple(v.shape[-2:]) for v in views] == [(8, 8), (8, 8), (4, 4), (4, 4)]
    assert torch.equal(views[0], x) and torch.equal(views[1], x[..., ::1].flip(-1))
    assert torch.equal(views[3], views[2].flip(-1))
    assert multi_views(x)[0] is x or torch.equal(multi_views(x)[0], x)


def test_a_fixed_input_size_zooms_back_by_centre_crop_or_zero_padding():
    x = torch.rand(1, 3, 8, 8)
    big, small = multi_views(x, (2.0, 0.5), input_size=8)
    full = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    assert big.shape[-2:] == (8, 8) and torch.allclose(big, full[..., 4:12, 4:12])
    assert small.shape[-2:] == (8, 8)
    assert (
        (small[..., :2, :] == 0).all()
        and (small[..., 6:, :] == 0).all()
        and (small[..., :, :2] == 0).all()
    )
    reduced = F.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(small[..., 2:6, 2:6], reduced)


def test_a_multi_scale_code_is_the_normalised_mean_of_the_views_codes():
    torch.manual_seed(0)
    model, imgs = TinyNet().eval(), images()
    got = extract_codes(
        model,
        DeviceImages(imgs, "cpu"),
        np.arange(6),
        ["pooled"],
        batch_size=4,
        scales=(1.0, 0.75),
        flip=True,
    )["pooled"]
    x = torch.as_tensor(imgs).permute(0, 3, 1, 2).float() / 255
    views = [x, x.flip(-1)]
    small = F.interpolate(x, size=(12, 12), mode="bilinear", align_corners=False, antialias=True)
    views += [small, small.flip(-1)]
    with torch.no_grad():
        per_view = [
            normalise_rows(model.forward_features(v, ["pooled"])["pooled"].numpy()) for v in views
        ]
    np.testing.assert_allclose(got, normalise_rows(sum(per_view)), atol=1e-5)
    plain = extract_codes(model, DeviceImages(imgs, "cpu"), np.arange(6), ["pooled"])["pooled"]
    assert not np.allclose(got, plain, atol=1e-3)  # the views changed something


def test_flipped_codes_do_not_tell_an_image_from_its_mirror():
    torch.manual_seed(0)
    model = NeuralCodesConvNet(5).eval()
    imgs = images(3, 64)
    both = DeviceImages(np.concatenate([imgs, imgs[:, :, ::-1]]), "cpu")
    codes = extract_codes(model, both, np.arange(6), ["L5", "L7"], scales=(1.0, 1.4142), flip=True)
    for layer, c in codes.items():
        np.testing.assert_allclose(c[:3], c[3:], atol=1e-5, err_msg=layer)
    plain = extract_codes(model, both, np.arange(6), ["L7"])["L7"]
    assert not np.allclose(plain[:3], plain[3:], atol=1e-4)


@pytest.mark.parametrize("scales", [(), (0,), (-1.0,), (True,)])
def test_bad_scales_are_named(scales):
    with pytest.raises(ValueError, match="scales"):
        multi_views(torch.rand(1, 3, 4, 4), scales)
