"""The quality study: every choice made on the class-disjoint validation classes, the held-out ones scored once."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from test_neural_codes_train import synthetic_dataset

import neuralcodes.recipes.neural_codes.train as classify
from neuralcodes.data.imageset import Dataset, ImageSet
from neuralcodes.layers.whitening import pca_whitening, whiten
from neuralcodes.recipes.neural_codes.config import ClassifyConfig
from neuralcodes.recipes.neural_codes.quality import QualityOptions, choose_whitening, quality_study


def naive_map(codes, labels):
    """Leave-one-out mAP by scikit-learn, one query at a time (an independent reference)."""
    sims = codes @ codes.T
    aps = []
    for q in range(len(codes)):
        others = np.arange(len(codes)) != q
        aps.append(average_precision_score(labels[others] == labels[q], sims[q, others]))
    return float(np.mean(aps))


def nuisance_codes(n_per_class=15, classes=4, dim=12, seed=0):
    """Class means in a few directions, swamped by a large noise along other directions: whitening should help."""
    rng = np.random.default_rng(seed)
    means = np.zeros((classes, dim))
    means[:, :classes] = np.eye(classes)
    scale = np.r_[np.full(classes, 0.3), np.full(dim - classes, 3.0)]
    labels = np.repeat(np.arange(classes), n_per_class)
    x = means[labels] + rng.normal(size=(len(labels), dim)) * scale
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def test_the_chosen_whitening_is_the_best_candidate_by_an_independent_map():
    val, val_labels = nuisance_codes(seed=1)
    fit, _ = nuisance_codes(n_per_class=60, seed=2)
    options = QualityOptions(dims=(None, 8, 4), powers=(0.5, 0.25), shrinkages=(0.0, 0.5))
    best, tried = choose_whitening(val, val_labels, fit, options)
    assert tried[0] == {"whitening": None, "val_mAP": pytest.approx(naive_map(val, val_labels))}
    assert len(tried) == 1 + 3 * 2 * 2
    reference = {}
    for t in tried[1:]:
        reference[str(t["whitening"])] = naive_map(
            whiten(pca_whitening(fit, **t["whitening"]), val), val_labels
        )
        assert t["val_mAP"] == pytest.approx(reference[str(t["whitening"])], abs=1e-6)
    assert best is not None and reference[str(best)] == pytest.approx(max(reference.values()))
    assert (
        max(reference.values()) > tried[0]["val_mAP"] + 0.05
    )  # the nuisance directions are whitened away


def test_codes_too_wide_to_whiten_stay_plain():
    val, labels = nuisance_codes()
    best, tried = choose_whitening(val, labels, val, QualityOptions(max_whiten_dim=8))
    assert best is None and len(tried) == 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    cfg = ClassifyConfig(
        n_ood=2,
        n_val_classes=2,
        val_class_images=12,
        batch_size=16,
        epochs=1,
        lr=1e-3,
        eval_batch_size=64,
        device="cpu",
    )
    data = synthetic_dataset(n_classes=8)
    return classify.train_classifier(cfg, root / "run", dataset=data), data


def options():
    return QualityOptions(
        fit_images=30,
        dims=(None, 4),
        powers=(0.5,),
        shrinkages=(0.1,),
        reranking={"aqe": {"k": [0]}, "dba": {"k": [1, 3]}, "k_reciprocal": {"k1": [3], "k2": [2]}},
    )


def test_the_study_scores_the_held_out_classes_for_the_choices_made_on_validation(
    trained, tmp_path
):
    run, data = trained
    result = quality_study(run, data, options())
    assert result["n_queries"] == 24 and result["n_val_queries"] == 24
    dba = result["reranking"]["dba"]
    assert dba["val_mAP"] == max(t["val_mAP"] for t in dba["tried"]) and len(dba["tried"]) == 2
    rows = {(r["representation"], r["reranking"]): r for r in result["rows"]}
    plain = rows[("L7", "none")]
    assert plain["vs_L7"]["mean_difference"] == 0 and not plain["saw_held_out"]
    best = result["best_on_validation"]
    # query expansion with k = 0 is the plain cosine ranking: the re-ranked path scores as the distance path
    assert rows[(best, "aqe")]["mAP"] == pytest.approx(rows[(best, "none")]["mAP"], abs=1e-6)
    assert (
        not rows[(best, "aqe")]["uses_database"] and rows[(best, "k_reciprocal")]["uses_database"]
    )
    assert {"mAP@R", "P@1", "P@10"} <= set(rows[(best, "k_reciprocal")])
    assert all(r["mAP"] == pytest.approx(r["mAP"]) and 0 <= r["mAP"] <= 1 for r in result["rows"])
    assert run.metrics()["quality"]["best_on_validation"] == best
    assert (run.codes_dir / "quality_ap.npz").exists()


def test_no_choice_reads_the_held_out_classes(trained, tmp_path):
    run, data = trained
    a = quality_study(run, data, options())
    labels = np.asarray(data.train.labels).copy()
    held_out = np.isin(labels, [6, 7])
    rng = np.random.default_rng(0)
    images = np.array(data.train.images)
    images[held_out] = rng.integers(0, 256, images[held_out].shape, dtype=np.uint8)
    labels[held_out] = rng.choice([6, 7], size=int(held_out.sum()))
    garbled = Dataset(
        "synthetic",
        ImageSet(images, labels, data.train.class_ids, data.train.class_names),
        None,
        "synthetic",
    )
    b = quality_study(run, garbled, options())
    for key in ("chosen", "validation", "reranking", "best_on_validation"):
        assert a[key] == b[key], key
    assert [r["mAP"] for r in a["rows"]] != [
        r["mAP"] for r in b["rows"]
    ]  # the held-out scores did change


def test_the_report_shows_each_row_and_what_its_step_added(trained):
    from neuralcodes.report.quality import quality_section

    run, data = trained
    result = quality_study(run, data, options())
    rows = {(r["representation"], r["reranking"]): r for r in result["rows"]}
    best = result["best_on_validation"]
    added = rows[(best, "k_reciprocal")]["vs_before_step"]
    assert added["before"] == best
    # The paired difference is the mean of per-query differences: the two rows' mAPs differ by it.
    assert added["mean_difference"] == pytest.approx(
        rows[(best, "k_reciprocal")]["mAP"] - rows[(best, "none")]["mAP"], abs=1e-9
    )
    assert "vs_before_step" not in rows[("L7", "none")]
    text = quality_section({"quality": result})
    assert f"| {best} + k_reciprocal | yes |" in text and f"| {best} + aqe |  |" in text
    assert f"{result['n_queries']:,} images of the held-out classes" in text


def test_a_run_without_class_disjoint_validation_is_refused(tmp_path):
    data = synthetic_dataset()
    cfg = ClassifyConfig(n_ood=2, batch_size=16, epochs=1, eval_batch_size=64, device="cpu")
    run = classify.train_classifier(cfg, tmp_path / "r", dataset=data)
    with pytest.raises(ValueError, match="--n-val-classes"):
        quality_study(run, data, options())


def test_an_unknown_re_ranking_parameter_is_refused_before_any_work():
    with pytest.raises(ValueError, match="'diffusion' has no parameter k1"):
        QualityOptions(reranking={"diffusion": {"k1": [3]}}).validate()
