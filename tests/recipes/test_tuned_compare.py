"""The comparison table: rows scored like an independent computation, the best variant, its interval, the report."""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.decomposition import PCA as SklearnPCA
from sklearn.metrics import average_precision_score
from tuned_support import colour_dataset, tuned_config, untrained_base

from neuralcodes import io
from neuralcodes.cli import main
from neuralcodes.recipes.tuned_codes.base import open_base, pretrained_base
from neuralcodes.recipes.tuned_codes.compare import CompareOptions, compare
from neuralcodes.recipes.tuned_codes.train import train_tuned
from neuralcodes.recipes.tuned_codes.variants import Variant, compressed_variants
from neuralcodes.report.publish import publish_comparison
from neuralcodes.report.tuned_codes import verdict, write_comparison_report


def reference_map(codes: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out mAP with scikit-learn: each code ranks all the others by (negative) distance."""
    aps = []
    for q in range(len(codes)):
        others = np.arange(len(codes)) != q
        distance = np.linalg.norm(codes[others] - codes[q], axis=1)
        aps.append(average_precision_score(labels[others] == labels[q], -distance))
    return float(np.mean(aps))


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    data = colour_dataset(n_classes=10, per_class=16, noise=90.0)
    base = untrained_base(root / "base", data, n_ood=4)
    other = untrained_base(root / "other", data, seed=1, n_ood=4)
    tuned = train_tuned(
        tuned_config(base, batches_per_epoch=2, val_images=40, whiten_images=60),
        root / "tuned",
        dataset=data,
    )
    options = CompareOptions(
        tuned=[str(tuned.root)],
        classifiers=[str(other)],
        efficientnet=False,
        fit_images=80,
        p_images=60,
        p_steps=3,
        compress_dim=8,
        distractors=20,
        tsne_images=40,
        tsne_variants=["tiny conv GeM p=3"],
        n_resamples=200,
        bf16=False,
        device="cpu",
    )
    result = compare(base, root / "out", options, dataset=data)
    return root, data, result


def test_rows_are_scored_as_scikit_learn_scores_them(measured):
    root, data, result = measured
    rows = {r["name"]: r for r in result["rows"]}
    base = open_base(str(root / "base"), data, "cpu")
    images = (
        torch.as_tensor(np.asarray(data.train.images)[base.split.ood]).permute(0, 3, 1, 2).float()
        / 255
    )
    with torch.no_grad():
        spoc = F.normalize(base.feature_map.eval()(images).mean(dim=(2, 3)), dim=1).numpy()
    labels = np.asarray(data.train.labels)[base.split.ood]
    assert rows["tiny conv SPoC"]["mAP"] == pytest.approx(reference_map(spoc, labels), abs=1e-6)
    ap = np.load(root / "out" / "per_query_ap.npz")
    assert list(ap["names"]) == list(rows)
    np.testing.assert_allclose(ap["ap"].mean(axis=1), [r["mAP"] for r in result["rows"]])


def test_every_variant_is_there_and_the_best_one_is_named_with_its_interval(measured):
    _, _, result = measured
    rows = result["rows"]
    names = [r["name"] for r in rows]
    for pooling in ("MAC", "SPoC", "GeM p=3"):
        for suffix in ("", " + PCA-whitened", " + learned whitening"):
            assert f"tiny conv {pooling}{suffix}" in names
    assert sum(r["family"] == "fine-tuned" for r in rows) == 2
    assert [r["name"] for r in rows if r["family"] == "classification"] == [
        "tiny pool (classification)",
        "tiny pool (classification, other)",
    ]
    assert [r["reference"] for r in rows].count(True) == 1
    compressed = [r for r in rows if r["family"] == "compressed"]
    assert compressed and all(r["dim"] == 8 for r in compressed)
    assert all(not r["saw_held_out"] for r in rows)
    reference = rows[0]
    assert result["best_classification"] == reference["name"] == "tiny pool (classification)"
    # Contenders: every variant but the reference codes and their compressed forms ("<reference> -> PCA 8").
    of_reference = [r for r in rows if r["name"].startswith(reference["name"] + " -> ")]
    assert of_reference and all(r["of_reference"] for r in of_reference)
    best = max((r for r in rows[1:] if r not in of_reference), key=lambda r: r["mAP"])
    assert result["best_unseen"] == best["name"]
    assert result["best_overall"] == max(rows, key=lambda r: r["mAP"])["name"]
    gain = result["gain_over_classification"]
    assert gain["mean_difference"] == pytest.approx(best["mAP"] - reference["mAP"])
    assert gain["low"] <= gain["mean_difference"] <= gain["high"]


def test_the_report_holds_the_table_the_verdict_and_the_figures(measured):
    root, _, result = measured
    md, html = write_comparison_report(root / "out", (str(root / "tuned"),))
    text = md.read_text()
    assert text.count("\n| tiny ") == len(result["rows"])
    assert (
        f"Best retrieval variant trained only on the in-domain classes: {result['best_unseen']}"
        in text
    )
    assert "paired bootstrap interval" in text and "The goal (at least +0.15 mAP" in text
    for entry in result["figures"]:
        assert (root / "out" / entry["path"]).stat().st_size > 1000
        assert entry["path"] in text
    assert (
        "figures/tuning_tuned.png" in text
        and (root / "out" / "figures" / "tuning_tuned.png").exists()
    )
    assert html.exists()


def test_compression_is_scikit_learns_pca_plain_and_whitened():
    rng = np.random.default_rng(0)
    fit, ood = rng.normal(size=(200, 24)) * np.linspace(3, 0.1, 24), rng.normal(size=(50, 24))
    variant = Variant("v", "pooled", ood, fit, ood[:5], 1.0, False)
    plain, whitened = compressed_variants(variant, 6)
    assert (plain.name, whitened.name) == ("v -> PCA 6", "v -> PCA-w 6")
    for ours, whiten in ((plain, False), (whitened, True)):
        theirs = SklearnPCA(6, whiten=whiten).fit(fit).transform(ood)
        theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
        # Components are defined up to sign: compare the codes' Gram matrices.
        np.testing.assert_allclose(
            ours.ood @ ours.ood.T, theirs @ theirs.T, atol=1e-5
        )  # float32 codes
        assert ours.family == "compressed" and ours.dim == 6 and not ours.reference
    assert compressed_variants(variant, 24) == [] and compressed_variants(variant, 30) == []


def test_a_comparison_publishes_into_a_folder_under_its_budget(measured, tmp_path):
    root, _, result = measured
    out = root / "out"
    sides = {png.name: Image.open(png).size for png in (out / "figures").rglob("*.png")}
    assert max(max(s) for s in sides.values()) > 400
    assert (
        main(
            [
                "tuned",
                "report",
                str(out),
                "--tuned",
                str(root / "tuned"),
                "--publish",
                str(tmp_path / "pub"),
                "--max-figure-side",
                "400",
            ]
        )
        == 0
    )
    pub = tmp_path / "pub"
    assert io.read_json(pub / "comparison.json") == io.read_json(out / "comparison.json")
    assert (pub / "per_query_ap.npz").read_bytes() == (out / "per_query_ap.npz").read_bytes()
    assert io.read_json(pub / "runs" / "tuned" / "config.json")["kind"] == "tuned_codes"
    assert (pub / "runs" / "tuned" / "history.csv").exists() and (pub / "report.html").exists()
    linked = re.findall(r"\]\((figures/[^)]+\.png)\)", (pub / "report.md").read_text())
    assert len(linked) >= 3 and all(
        (pub / link).exists() for link in linked
    )  # the published report is whole
    for png in (out / "figures").rglob("*.png"):
        assert max(Image.open(pub / png.relative_to(out)).size) <= 400
    assert io.read_json(pub / "published.json")["from"] == str(out)
    with pytest.raises(ValueError, match="outside the comparison folder"):
        publish_comparison(out, out / "pub")


@pytest.mark.parametrize(
    ("low", "high", "says"),
    [
        (0.01, 0.03, "it beats the classification codes"),
        (-0.03, -0.01, "the classification codes stay the best"),
        (-0.01, 0.01, "no difference these queries can resolve"),
    ],
)
def test_the_verdict_says_which_way_the_interval_points(low, high, says):
    rows = [
        {"name": "L7", "dim": 2048, "mAP": 0.33},
        {"name": "GeM", "dim": 256, "mAP": 0.33 + (low + high) / 2},
        {"name": "other", "dim": 1280, "mAP": 0.5, "saw_held_out": True},
    ]
    gain = {
        "mean_difference": (low + high) / 2,
        "low": low,
        "high": high,
        "confidence": 0.95,
        "n": 5000,
    }
    text = verdict(
        {
            "rows": rows,
            "best_classification": "L7",
            "best_unseen": "GeM",
            "best_overall": "other",
            "gain_over_classification": gain,
        }
    )
    assert says in text and "Best of all: other" in text
    assert f"not reached ({0.15 - (low + high) / 2:.3f} short)" in text


def test_variants_on_another_split_are_refused(measured, tmp_path):
    root, data, _ = measured
    elsewhere = untrained_base(tmp_path / "elsewhere", data, n_ood=3)
    with pytest.raises(ValueError, match="same held-out images"):
        compare(
            root / "base",
            tmp_path / "out",
            CompareOptions(
                classifiers=[str(elsewhere)],
                efficientnet=False,
                tsne=False,
                p_steps=1,
                device="cpu",
            ),
            dataset=data,
        )


def test_efficientnet_off_the_shelf_exposes_its_last_map(measured):
    root, data, _ = measured
    effnet = pretrained_base(
        "efficientnet_lite0", open_base(str(root / "base"), data, "cpu"), image_size=64
    )
    assert effnet.saw_held_out and effnet.classifier is None
    with torch.no_grad():
        fmap = effnet.feature_map(torch.rand(2, 3, 64, 64))
    assert fmap.shape == (2, 1280, 2, 2) and float(fmap.min()) >= 0
