"""End to end: `neuralcodes run` on the embedded sample, and the report against its JSON."""

import re

import numpy as np
import pytest

from neuralcodes.cli import main
from neuralcodes.runs import Run


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory, sample_dataset):
    out = tmp_path_factory.mktemp("runs") / "main"
    assert main(["run", "--out", str(out), "--epochs", "2", "--pca-fit-images", "600"]) == 0
    return Run(out)


def table_rows(markdown: str, first_header: str) -> dict[str, list[str]]:
    """Rows of the Markdown table whose first header cell is ``first_header``, keyed by first cell."""
    lines = markdown.splitlines()
    start = next(
        i for i, line in enumerate(lines) if re.match(rf"\|\s*{re.escape(first_header)}\s*\|", line)
    )
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def test_run_writes_every_artefact(sample_run):
    root = sample_run.root
    for name in (
        "config.json",
        "history.json",
        "history.csv",
        "metrics.json",
        "split.json",
        "report.md",
        "report.html",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "codes/ood_L5.npz",
        "codes/ood_L7.npz",
        "figures/training_curves.png",
        "figures/results_L5.png",
        "figures/results_L6.png",
        "figures/results_L7.png",
        "figures/precision_recall.png",
        "figures/map_per_layer.png",
        "figures/pca_map.png",
    ):
        assert (root / name).stat().st_size > 0, name
    history = sample_run.history()
    assert (
        history[-1]["val_loss"] < history[0]["val_loss"] + 1e-9
        or sample_run.metrics()["training"]["stopped_early"]
    )
    split = sample_run.metrics()
    assert split["retrieval"]["n_queries"] == 1000  # 10 held-out classes x 100 images


def test_report_numbers_match_the_json(sample_run):
    metrics = sample_run.metrics()
    report = (sample_run.root / "report.md").read_text()

    cls = table_rows(report, "split")
    names = {"train": "train", "val": "validation", "test": "test"}
    for split, row in metrics["classification"].items():
        got = cls[names[split]]
        assert float(got["cross-entropy"]) == pytest.approx(row["loss"], abs=5e-5)
        assert float(got["accuracy"]) == pytest.approx(row["accuracy"], abs=5e-5)
        assert float(got["top-5 accuracy"]) == pytest.approx(row["top5"], abs=5e-5)

    ret = table_rows(report, "layer")
    for layer, values in metrics["retrieval"]["layers"].items():
        assert float(ret[layer]["mAP"]) == pytest.approx(values["mAP"], abs=5e-5)
        assert float(ret[layer]["P@10"]) == pytest.approx(values["P@10"], abs=5e-5)
        assert int(ret[layer]["dimension"]) == values["dim"]

    lines = report[report.index("## PCA") :]
    pca = table_rows(lines, "layer")
    for layer, rows in metrics["pca"]["layers"].items():
        for row in rows:
            if row["pca"]:
                assert float(pca[layer][str(row["dim"])]) == pytest.approx(row["mAP"], abs=5e-5)
    analysis = report[report.index("## Analysis") :]
    best = max(
        metrics["retrieval"]["layers"], key=lambda k: metrics["retrieval"]["layers"][k]["mAP"]
    )
    assert f"the best layer here is {best}" in analysis
    assert f"{metrics['classification']['test']['accuracy']:.3f}" in analysis
    html = (sample_run.root / "report.html").read_text()
    assert "<table>" in html and 'src="figures/results_L6.png"' in html


def test_stored_codes_reproduce_the_reported_map(sample_run):
    from neuralcodes.retrieval.codes import Codes
    from neuralcodes.retrieval.evaluate import retrieval_metrics

    codes = Codes.load(sample_run.root / "codes" / "ood_L6.npz")
    assert np.allclose(
        np.linalg.norm(codes.codes, axis=1)[np.abs(codes.codes).sum(1) > 0], 1, atol=1e-5
    )
    again = retrieval_metrics(codes.codes, codes.labels, ks=(10,))
    assert again["mAP"] == pytest.approx(
        sample_run.metrics()["retrieval"]["layers"]["L6"]["mAP"], abs=1e-6
    )


def test_evaluate_and_report_commands_on_the_run(sample_run, capsys):
    assert main(["evaluate", str(sample_run.root)]) == 0
    assert "cross-entropy" in capsys.readouterr().err
    assert main(["report", str(sample_run.root)]) == 0


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a neuralcodes run folder" in capsys.readouterr().err
    assert main(["run", "--out", str(tmp_path / "x"), "--data", str(tmp_path / "missing.zip")]) == 2
    assert "missing.zip" in capsys.readouterr().err


def test_variants_are_trained_compared_and_analysed(synthetic_tiny_imagenet, tmp_path, monkeypatch):
    import neuralcodes.recipes.neural_codes.pipeline as pipeline

    data = synthetic_tiny_imagenet(
        wnids=[f"n0{i}" for i in range(6)], train_per_class=12, val_per_class=1
    )
    out = tmp_path / "run"
    args = [
        "run",
        "--out",
        str(out),
        "--data",
        str(data),
        "--n-ood",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--pca-fit-images",
        "30",
        "--variants",
        "augment,batch_norm",
    ]
    # The run stops in the second variant (hours of training on the full data): the first is already in
    # metrics.json and in the report, which names the variant still to train.
    real_train = pipeline.train_classifier

    def stop_in_batch_norm(cfg, *a, **kw):
        if cfg.batch_norm:
            raise KeyboardInterrupt
        return real_train(cfg, *a, **kw)

    monkeypatch.setattr(pipeline, "train_classifier", stop_in_batch_norm)
    assert main(args) == 130
    run = Run(out)
    assert list(run.metrics()["variants"]) == ["baseline", "augment"]
    assert run.metrics()["variants_pending"] == ["batch_norm"]
    # A finished variant says so; the interrupted one and the run itself are where they stopped.
    assert Run(out / "variants" / "augment").progress()["stage"] == "done"
    assert Run(out / "variants" / "batch_norm").progress().get("stage") != "done"
    assert run.progress()["stage"] == "variant batch_norm"
    assert main(["report", str(out)]) == 0
    partial = (out / "report.md").read_text()
    assert (
        "Still to train: batch_norm" in partial
        and "Still training when this report was written: batch_norm" in partial
    )
    augment_map = run.metrics()["variants"]["augment"]["mAP"]["L7"]
    assert "augment L5 " in partial and f"L7 {augment_map:.3f}" in partial

    monkeypatch.setattr(pipeline, "train_classifier", real_train)
    assert main(args + ["--resume"]) == 0
    variants = run.metrics()["variants"]
    assert list(variants) == ["baseline", "augment", "batch_norm"]
    assert run.metrics()["variants_pending"] == []
    assert [
        Run(r).progress()["stage"]
        for r in (out, out / "variants" / "augment", out / "variants" / "batch_norm")
    ] == ["done"] * 3
    assert "Still to train" not in (out / "report.md").read_text()
    assert Run(out / "variants" / "augment").config()["augment"] is True
    assert Run(out / "variants" / "batch_norm").config()["batch_norm"] is True
    report = (out / "report.md").read_text()
    rows = table_rows(report, "variant")
    for name, v in variants.items():
        assert float(rows[name]["test accuracy"]) == pytest.approx(v["test_accuracy"], abs=5e-5)
    base = variants["baseline"]["test_accuracy"]
    assert f"from {base:.3f} to {variants['augment']['test_accuracy']:.3f}" in report
    assert main(args[:-2] + ["--variants", "dropout"]) == 2  # unknown variant: a clear error


def test_resume_keeps_finished_stages(sample_run, monkeypatch):
    import neuralcodes.recipes.neural_codes.pipeline as pipeline

    before = sample_run.metrics()
    mtime = sample_run.best_checkpoint.stat().st_mtime

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished stage was run again")

    for stage in ("train_classifier", "evaluate_run", "retrieval_study"):
        monkeypatch.setattr(pipeline, stage, must_not_run)
    args = ["run", "--out", str(sample_run.root), "--epochs", "2", "--pca-fit-images", "600"]
    assert main(args) == 2  # an existing run is never overwritten silently
    assert main(args + ["--resume"]) == 0
    assert sample_run.metrics() == before
    assert sample_run.best_checkpoint.stat().st_mtime == mtime
    assert (sample_run.root / "report.md").exists()


def test_publish_copies_the_results_not_the_checkpoints(sample_run, tmp_path):
    import json

    from PIL import Image

    dest = tmp_path / "published"
    assert (
        main(["report", str(sample_run.root), "--publish", str(dest), "--max-figure-side", "400"])
        == 0
    )
    names = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert {
        "report.md",
        "report.html",
        "metrics.json",
        "history.csv",
        "config.json",
        "split.json",
    } <= names
    assert not [n for n in names if n.endswith((".pt", ".npz", ".tmp"))]
    report = (dest / "report.md").read_text()
    linked = re.findall(r"\]\((figures/[^)]+\.png)\)", report)
    assert "figures/results_L6.png" in linked
    for (
        rel
    ) in linked:  # every figure the report shows is there, downscaled with its aspect ratio kept
        with Image.open(dest / rel) as small, Image.open(sample_run.root / rel) as original:
            assert max(small.size) == min(400, max(original.size))
            assert small.size[0] / small.size[1] == pytest.approx(
                original.size[0] / original.size[1], rel=0.02
            )
    metrics = json.loads((dest / "metrics.json").read_text())
    assert metrics["retrieval"] == json.loads(json.dumps(sample_run.metrics()["retrieval"]))
    history = sample_run.history()
    timing = metrics["timing"]
    assert [e["epoch"] for e in timing["epochs"]] == [h["epoch"] for h in history]
    assert timing["total_hours"] == pytest.approx(sum(h["seconds"] for h in history) / 3600)
    assert timing["machine_recorded"] == "by the training" and timing["machine"]["cpu_cores"] >= 1


def test_publish_shrinks_figures_to_the_budget_or_says_why(sample_run, tmp_path):
    from neuralcodes.report.publish import publish

    def size(folder):
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    full = size(publish(sample_run, tmp_path / "full"))
    budget = 0.8 * full / 2**20
    assert size(publish(sample_run, tmp_path / "fit", budget_mb=budget)) <= budget * 2**20
    with pytest.raises(ValueError, match="over the 0.01 MB budget"):
        publish(sample_run, tmp_path / "tiny", budget_mb=0.01)
    with pytest.raises(ValueError, match="outside the run folder"):
        publish(sample_run, sample_run.root / "published")
