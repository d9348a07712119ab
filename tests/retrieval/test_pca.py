import numpy as np
import pytest
from sklearn.decomposition import PCA as SklearnPCA

from neuralcodes.retrieval.evaluate import retrieval_metrics
from neuralcodes.retrieval.pca import PCA, pca_study


def normalise_rows(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def low_rank_codes(rng, n, dim, rank):
    basis = rng.standard_normal((rank, dim))
    scales = np.geomspace(3.0, 0.3, rank)[:, None]
    return (rng.standard_normal((n, rank)) @ (scales * basis)).astype(np.float32)


@pytest.mark.parametrize(
    ("n", "dim"), [(40, 100), (300, 20)]
)  # N < D (Gram route) and N > D (covariance)
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
    train = normalise_rows(centres[rng.integers(0, 4, 80)] + rng.standard_normal((80, 24))).astype(
        np.float32
    )
    evaluation = normalise_rows(centres[labels] + rng.standard_normal((60, 24))).astype(np.float32)

    with pytest.warns(UserWarning, match="skipping d=32"):
        rows = pca_study(train, evaluation, labels, dims=(4, 8, None, 32))
    assert [(row["dim"], row["pca"]) for row in rows] == [(4, True), (8, True), (24, False)]

    pca = PCA().fit(train)  # fitted on the training codes only
    assert rows[0]["mAP"] == pytest.approx(
        retrieval_metrics(pca.transform(evaluation, 4), labels, ks=())["mAP"]
    )
    assert rows[1]["mAP"] == pytest.approx(
        retrieval_metrics(pca.transform(evaluation, 8), labels, ks=())["mAP"]
    )
    assert rows[2]["mAP"] == pytest.approx(retrieval_metrics(evaluation, labels, ks=())["mAP"])


def test_pca_takes_tensors_that_require_grad_and_names_a_bad_n_components():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    train = rng.standard_normal((30, 6)).astype(np.float32)
    tracked = torch.from_numpy(
        train
    ).requires_grad_()  # e.g. straight out of a model: used to raise in numpy()
    expected = PCA().fit(train).transform(train, d=3)
    np.testing.assert_array_equal(PCA().fit(tracked).transform(tracked, d=3), expected)
    for bad in (2.5, "all", True):  # were TypeErrors about slices or '<' between str and int
        with pytest.raises(
            ValueError, match=f"n_components must be a positive integer or None.*got {bad!r}"
        ):
            PCA(n_components=bad)


@pytest.mark.parametrize(
    ("n", "dim"), [(300, 20), (40, 100)]
)  # the same matrix, and the Gram route beside the covariance
def test_pca_and_pca_whitening_share_one_decomposition(n, dim):
    pytest.importorskip("torch")
    from neuralcodes.layers.whitening import pca_whitening

    rng = np.random.default_rng(7)
    train = (rng.standard_normal((n, dim)) * np.linspace(2.0, 0.1, dim) + 1.0).astype(np.float32)
    pca = PCA(n_components=8).fit(train)
    rotation = (
        pca_whitening(train, dim=8, power=0.0).weight.detach().numpy()
    )  # power 0: the components themselves
    whitening = pca_whitening(train, dim=8).weight.detach().double().numpy()
    if n > dim:  # one covariance, one eigh: the very same numbers
        np.testing.assert_array_equal(pca.components_, rotation)
    else:  # N <= D: PCA goes through the Gram matrix; the same components, signs included, up to rounding
        np.testing.assert_allclose(pca.components_, rotation, atol=1e-6)
    expected = pca.components_.astype(np.float64) / np.sqrt(pca.eigenvalues_)[:, None]
    np.testing.assert_allclose(whitening, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    bias = (
        pca_whitening(train, dim=8, power=0.0).bias.detach().numpy()
    )  # -(U^T mean): the same mean
    np.testing.assert_allclose(
        bias, -(pca.components_ @ pca.mean_.astype(np.float32)), rtol=1e-5, atol=1e-5
    )
