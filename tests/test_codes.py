import warnings

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SklearnPCA
from torch import nn

from neuralcodes.codes import PCA, Codes, ZeroCodeWarning, extract_codes, l2_normalize, pca_study
from neuralcodes.data.batches import DeviceImages
from neuralcodes.metrics import retrieval_metrics


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
        out = {"map": feature_map, "pooled": pooled, "logits": self.fc(pooled), "dead": -feature_map * 0}
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


# ----------------------------------------------------------------------------- PCA


def low_rank_codes(rng, n, dim, rank):
    basis = rng.standard_normal((rank, dim))
    scales = np.geomspace(3.0, 0.3, rank)[:, None]
    return (rng.standard_normal((n, rank)) @ (scales * basis)).astype(np.float32)


@pytest.mark.parametrize(("n", "dim"), [(40, 100), (300, 20)])  # N < D (Gram route) and N > D (covariance)
def test_projection_equals_sklearn_pca_up_to_sign(n, dim):
    rng = np.random.default_rng(2)
    train = (rng.standard_normal((n, dim)) * np.linspace(2.0, 0.1, dim)).astype(np.float32)
    test = rng.standard_normal((15, dim)).astype(np.float32)
    d = 10
    ours = PCA().fit(train)
    reference = SklearnPCA(n_components=d, svd_solver="full").fit(train.astype(np.float64))
    projected = ours.project(test, d)
    expected = reference.transform(test.astype(np.float64))
    signs = np.sign((projected * expected).sum(axis=0))
    np.testing.assert_allclose(projected, expected * signs, atol=1e-4)
    np.testing.assert_allclose(ours.eigenvalues_[:d], reference.explained_variance_, rtol=1e-5)
    np.testing.assert_allclose(ours.mean_, reference.mean_, atol=1e-6)


def test_whitened_training_codes_have_identity_covariance():
    rng = np.random.default_rng(3)
    train = low_rank_codes(rng, 200, 30, rank=30)
    pca = PCA().fit(train)
    white = pca.project(train, 12, whiten=True).astype(np.float64)
    np.testing.assert_allclose(np.cov(white, rowvar=False), np.eye(12), atol=1e-4)
    plain = pca.project(train, 12).astype(np.float64)
    assert np.cov(plain, rowvar=False)[0, 0] > 2 * np.cov(plain, rowvar=False)[11, 11]


def test_transform_renormalises_and_rank_limits_d():
    rng = np.random.default_rng(4)
    train = low_rank_codes(rng, 50, 40, rank=5)  # rank 5 (centring keeps it at 5 here)
    pca = PCA().fit(train)
    assert pca.n_components_ == 5
    out = pca.transform(rng.standard_normal((8, 40)), d=3, whiten=True)
    assert out.shape == (8, 3)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="d=6 exceeds the 5 components"):
        pca.transform(train, d=6)
    with pytest.raises(ValueError, match="fitted on 40"):
        pca.transform(train[:, :10], d=2)
    with pytest.raises(RuntimeError, match="not fitted"):
        PCA().transform(train)
    assert PCA(n_components=2).fit(train).n_components_ == 2


def test_pca_study_rows_match_retrieval_metrics_on_transformed_codes():
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((4, 24))
    labels = np.repeat(np.arange(4), 15)
    train = normalise_rows(centres[rng.integers(0, 4, 80)] + rng.standard_normal((80, 24))).astype(np.float32)
    evaluation = normalise_rows(centres[labels] + rng.standard_normal((60, 24))).astype(np.float32)

    with pytest.warns(UserWarning, match="skipping d=32"):
        rows = pca_study(train, evaluation, labels, dims=(4, 8, None, 32))
    assert [(row["dim"], row["pca"]) for row in rows] == [(4, True), (8, True), (24, False)]

    pca = PCA().fit(train)  # fitted on the training codes only
    assert rows[0]["mAP"] == pytest.approx(retrieval_metrics(pca.transform(evaluation, 4), labels, ks=())["mAP"])
    assert rows[1]["mAP"] == pytest.approx(retrieval_metrics(pca.transform(evaluation, 8), labels, ks=())["mAP"])
    assert rows[2]["mAP"] == pytest.approx(retrieval_metrics(evaluation, labels, ks=())["mAP"])
