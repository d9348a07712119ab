"""The neural-codes study without training: the PCA never sees a held-out image; layers are compared paired."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from neuralcodes.data.splits import course_split
from neuralcodes.recipes.neural_codes import study
from neuralcodes.retrieval.codes import Codes
from neuralcodes.retrieval.evaluate import retrieval_metrics
from neuralcodes.retrieval.pca import PCA
from neuralcodes.retrieval.statistics import paired_bootstrap
from neuralcodes.runs import Run

DIM = 12


@pytest.fixture
def spied_study(sample_dataset, monkeypatch, tmp_path):
    """Run the study on the sample with fake codes that identify their image, and record every PCA fit."""
    train = sample_dataset.train
    split = course_split(train.labels, train.num_classes)
    labels = np.asarray(train.labels)
    centres = np.random.default_rng(0).standard_normal((train.num_classes, DIM))
    image_of_code: dict[bytes, int] = {}

    def fake_extract_codes(model, images, indices, layers, autocast=False, **kwargs):
        out = {}
        for layer_number, layer in enumerate(layers):
            noise = np.stack(
                [
                    np.random.default_rng([int(i), layer_number]).standard_normal(DIM)
                    for i in indices
                ]
            )
            codes = (centres[labels[indices]] + (1.0 + layer_number) * noise).astype(np.float32)
            codes /= np.linalg.norm(codes, axis=1, keepdims=True)
            for i, row in zip(indices, codes):
                image_of_code[row.tobytes()] = int(i)
            out[layer] = codes
        return out

    fitted: list[np.ndarray] = []
    real_fit = PCA.fit

    def spy_fit(self, train_codes):
        fitted.append(np.array(train_codes, dtype=np.float32, copy=True))
        return real_fit(self, train_codes)

    prepared = SimpleNamespace(model=None, images=None, split=split, dataset=sample_dataset)
    monkeypatch.setattr(
        study,
        "open_trained",
        lambda run, dataset, device, split=None: (prepared, SimpleNamespace(bf16=False, seed=3)),
    )
    monkeypatch.setattr(study, "extract_codes", fake_extract_codes)
    monkeypatch.setattr(PCA, "fit", spy_fit)
    options = study.StudyOptions(
        layers=("L6", "L7"), pca_dims=(4, 8, None), pca_fit_images=300, whiten=True, n_shown=2
    )
    result = study.retrieval_study(Run(tmp_path / "run"), sample_dataset, options)
    return SimpleNamespace(
        result=result,
        split=split,
        fitted=fitted,
        image_of_code=image_of_code,
        run=Run(tmp_path / "run"),
    )


def test_pca_and_whitening_are_fitted_on_in_domain_training_codes_only(spied_study):
    s = spied_study
    assert len(s.fitted) == 2  # one PCA (with its whitening) per layer
    train, held_out = set(s.split.train.tolist()), set(s.split.ood.tolist())
    for codes in s.fitted:
        images = [s.image_of_code[row.tobytes()] for row in codes]
        assert not set(images) & held_out, "a held-out image reached the PCA fit"
        assert set(images) <= train, (
            "the PCA was fitted on images outside the in-domain training part"
        )
        assert len(images) == 300
    assert s.result["pca"]["whiten"] is True and s.result["pca"]["n_fit"] == 300


def test_paired_layer_comparison_is_stored_from_the_per_query_aps(spied_study):
    retrieval = spied_study.result["retrieval"]
    assert retrieval["ties"] == "index"
    (pair,) = retrieval["paired"]
    assert (pair["a"], pair["b"]) == ("L6", "L7")
    ap = {
        layer: retrieval_metrics(
            Codes.load(spied_study.run.codes_dir / f"ood_{layer}.npz").codes,
            Codes.load(spied_study.run.codes_dir / f"ood_{layer}.npz").labels,
            ks=(),
        )["AP"]
        for layer in ("L6", "L7")
    }
    expected = paired_bootstrap(ap["L6"], ap["L7"])
    assert pair["mean_difference"] == pytest.approx(expected["mean_difference"], abs=1e-9)
    assert (pair["low"], pair["high"]) == pytest.approx(
        (expected["low"], expected["high"]), abs=1e-9
    )
    # L7's fake codes are noisier, and 1,000 paired queries resolve it.
    assert pair["low"] > 0
    assert spied_study.run.metrics()["retrieval"]["paired"] == retrieval["paired"]
