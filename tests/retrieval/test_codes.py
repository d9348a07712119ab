import warnings

import numpy as np
import pytest
import torch
from torch import nn

from neuralcodes.data.batches import DeviceImages
from neuralcodes.retrieval.codes import (
    Codes,
    ZeroCodeWarning,
    extract_codes,
    l2_normalize,
)


class TinyNet(nn.Module):
    """A model with the forward_features(x, layers) interface of NeuralCodesConvNet."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.dropout = nn.Dropout(0.5)  # makes train-mode outputs differ from eval-mode ones
        self.fc = nn.Linear(4, 5)

    def forward_features(self, x, layers):
        feature_map = torch.relu(self.conv(x))
        pooled = self.dropout(feature_map.mean(dim=(2, 3)))
        out = {
            "map": feature_map,
            "pooled": pooled,
            "logits": self.fc(pooled),
            "dead": -feature_map * 0,
        }
        return {name: out[name] for name in layers}


def normalise_rows(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ----------------------------------------------------------------------------- l2_normalize


def test_l2_normalize_unit_rows_and_counted_zero_codes():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0], [0.0, 0.0]])
    with pytest.warns(ZeroCodeWarning, match="2 of 4 codes are all zero"):
        y = l2_normalize(x)
    np.testing.assert_allclose(y, [[0.6, 0.8], [0, 0], [0, -1], [0, 0]], rtol=1e-7)
    assert y.dtype == np.float32


def test_l2_normalize_is_silent_without_zero_codes_and_rejects_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        l2_normalize(np.ones((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        l2_normalize(np.array([[np.nan, 1.0]]))


# ----------------------------------------------------------------------------- extract_codes


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return DeviceImages(rng.integers(0, 256, size=(23, 8, 8, 3), dtype=np.uint8))


def test_extract_codes_equals_forward_features_then_normalising(images):
    torch.manual_seed(0)
    model = TinyNet().train()
    indices = np.array([5, 0, 22, 7, 7, 13, 1, 2, 3, 4])
    codes = extract_codes(model, images, indices, ["map", "pooled", "logits"], batch_size=3)

    assert model.training, "the model's train mode must be restored"
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(images.images.numpy()[indices]).float() / 255
        direct = model.forward_features(x, ["map", "pooled", "logits"])
    for name in ("map", "pooled", "logits"):
        expected = normalise_rows(direct[name].flatten(1).numpy().astype(np.float64))
        assert codes[name].dtype == np.float32
        assert codes[name].shape == expected.shape
        np.testing.assert_allclose(codes[name], expected, atol=1e-6)
    assert codes["map"].shape[1] == 4 * 8 * 8


def test_extract_codes_with_autocast_stays_close(images):
    torch.manual_seed(0)
    model = TinyNet()
    exact = extract_codes(model, images, np.arange(10), "pooled")["pooled"]
    low = extract_codes(model, images, np.arange(10), "pooled", autocast=True)["pooled"]
    np.testing.assert_allclose(low, exact, atol=0.05)


def test_bf16_codes_give_the_fp32_map_on_the_sample(sample_dataset):
    """The study extracts codes under bf16 autocast by default: retrieval must not notice."""
    from neuralcodes.data.splits import course_split
    from neuralcodes.models.convnet import NeuralCodesConvNet
    from neuralcodes.retrieval.evaluate import retrieval_metrics

    train = sample_dataset.train
    split = course_split(train.labels, train.num_classes)
    labels = np.asarray(train.labels)
    # 12 images of each of the 10 held-out classes keep the two passes of the ConvNet to a few seconds.
    subset = np.concatenate([split.ood[labels[split.ood] == c][:12] for c in split.ood_classes])
    torch.manual_seed(0)
    model = NeuralCodesConvNet(
        split.n_in_domain
    )  # random init: the rounding, not the training, is tested
    images = DeviceImages(train.images[subset])
    layers = ("L5", "L6", "L7")
    exact = extract_codes(model, images, np.arange(len(subset)), layers, batch_size=60)
    low = extract_codes(model, images, np.arange(len(subset)), layers, batch_size=60, autocast=True)
    for layer in layers:
        assert np.abs(low[layer] - exact[layer]).max() > 1e-4, "autocast did not run in bf16"
        map_exact = retrieval_metrics(exact[layer], labels[subset], ks=())["mAP"]
        map_low = retrieval_metrics(low[layer], labels[subset], ks=())["mAP"]
        assert map_low == pytest.approx(map_exact, abs=0.01), layer


def test_extract_codes_warns_about_zero_codes(images):
    with pytest.warns(ZeroCodeWarning, match="6 of 6 dead codes"):
        codes = extract_codes(TinyNet(), images, np.arange(6), ["dead"])
    assert not np.isnan(codes["dead"]).any() and not codes["dead"].any()


@pytest.mark.parametrize(
    ("layers", "indices", "message"),
    [
        (["nope"], np.arange(3), "does not know layer 'nope'"),
        ([], np.arange(3), "non-empty list of layer names"),
        (["pooled"], np.array([0, 23]), r"\[0, 23\)"),
        (["pooled"], np.array([0.5]), "image indices"),
    ],
)
def test_extract_codes_bad_input(images, layers, indices, message):
    model = TinyNet()

    class Plain(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match=message):
        extract_codes(model, images, indices, layers)
    with pytest.raises(TypeError, match="forward_features"):
        extract_codes(Plain(), images, np.arange(3), ["pooled"])


def test_extract_codes_wants_device_images_and_an_integer_batch_size(images):
    raw = images.images.permute(0, 2, 3, 1).numpy()
    # A raw array used to fail with "'numpy.ndarray' object has no attribute 'batch'".
    with pytest.raises(
        TypeError,
        match=r"images must be DeviceImages, got ndarray: wrap .* DeviceImages\(images, device\)",
    ):
        extract_codes(TinyNet(), raw, np.arange(3), ["pooled"])
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 2.5"):
        extract_codes(TinyNet(), images, np.arange(3), ["pooled"], batch_size=2.5)


def test_extract_codes_catches_a_layer_the_model_silently_skips(images):
    class Forgetful(TinyNet):
        def forward_features(self, x, layers):
            return super().forward_features(x, ["pooled"])

    with pytest.raises(ValueError, match=r"returned no layer 'logits'; it returned \['pooled'\]"):
        extract_codes(Forgetful(), images, np.arange(3), ["pooled", "logits"])


# ----------------------------------------------------------------------------- storage


@pytest.fixture
def sample_codes():
    rng = np.random.default_rng(1)
    return Codes(
        codes=normalise_rows(rng.standard_normal((12, 6))),
        labels=rng.integers(0, 3, 12),
        indices=rng.permutation(100)[:12],
        layer="L6",
    )


def test_save_load_round_trip_float32(tmp_path, sample_codes):
    path = sample_codes.save(tmp_path / "codes.npz")
    loaded = Codes.load(path)
    np.testing.assert_array_equal(loaded.codes, sample_codes.codes)
    np.testing.assert_array_equal(loaded.labels, sample_codes.labels)
    np.testing.assert_array_equal(loaded.indices, sample_codes.indices)
    assert loaded.layer == "L6" and loaded.codes.dtype == np.float32
    assert [p.name for p in tmp_path.iterdir()] == ["codes.npz"]  # no temporary file left behind


def test_save_load_round_trip_float16(tmp_path, sample_codes):
    sample_codes.save(tmp_path / "half.npz", dtype=np.float16)
    sample_codes.save(tmp_path / "full.npz")
    loaded = Codes.load(tmp_path / "half.npz")
    assert loaded.codes.dtype == np.float32
    np.testing.assert_allclose(loaded.codes, sample_codes.codes, atol=1e-3)
    assert (tmp_path / "half.npz").stat().st_size < (tmp_path / "full.npz").stat().st_size


def test_storage_errors(tmp_path, sample_codes):
    with pytest.raises(ValueError, match="float32 or float16"):
        sample_codes.save(tmp_path / "x.npz", dtype=np.int8)
    big = Codes(np.full((2, 2), 1e6), np.zeros(2, int), np.arange(2), "L5")
    with pytest.raises(ValueError, match="do not fit in float16"):
        big.save(tmp_path / "big.npz", dtype="float16")
    np.savez(tmp_path / "other.npz", something=np.ones(3))
    with pytest.raises(ValueError, match="not a neuralcodes codes file"):
        Codes.load(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="one per code"):
        Codes(np.ones((3, 2)), np.zeros(2), np.arange(3), "L5")
