import math

import numpy as np
import pytest
import torch

from neuralcodes.recipes.deep_ranking.config import RankConfig
from neuralcodes.recipes.deep_ranking.evaluate import (
    compare_mining,
    evaluate_ranking,
    retrieval_scores,
)
from neuralcodes.recipes.deep_ranking.train import train_ranking
from neuralcodes.recipes.neural_codes.config import ClassifyConfig


def _naive_scores(q, ql, db, dbl, k):
    aps, pk = [], []
    for v, label in zip(q, ql):
        d = [math.dist(v, w) for w in db]
        order = sorted(range(len(db)), key=lambda i: (d[i], i))
        rel = [dbl[i] == label for i in order]
        hits, precisions = 0, []
        for rank, r in enumerate(rel, 1):
            if r:
                hits += 1
                precisions.append(hits / rank)
        aps.append(sum(precisions) / sum(rel))
        pk.append(sum(rel[:k]) / k)
    return float(np.mean(aps)), float(np.mean(pk))


def test_retrieval_scores_against_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    db = torch.nn.functional.normalize(torch.randn(60, 4, generator=g), dim=1)
    q = torch.nn.functional.normalize(torch.randn(9, 4, generator=g), dim=1)
    dbl, ql = np.arange(60) % 3, np.arange(9) % 3
    scores = retrieval_scores(q, ql, db, dbl, ks=(10, 30))
    m, p10 = _naive_scores(q.tolist(), ql, db.tolist(), dbl, 10)
    _, p30 = _naive_scores(q.tolist(), ql, db.tolist(), dbl, 30)
    assert scores["mAP"] == pytest.approx(m, abs=1e-6)
    assert scores["P@10"] == pytest.approx(p10) and scores["P@30"] == pytest.approx(p30)
    with pytest.raises(ValueError, match="no image in the database"):
        retrieval_scores(q, np.full(9, 5), db, dbl)


@pytest.fixture(scope="module")
def trained_run(sample_dataset, tmp_path_factory):
    config = RankConfig(
        backbone="tiny",
        pretrained=False,
        freeze_backbone=True,
        embedding_dim=16,
        batch_size=64,
        epochs=2,
        triplets_per_epoch=512,
        eval_triplets=500,
        lr=0.003,
        seed=1,
        bf16=False,
        device="cpu",
    )
    return train_ranking(config, tmp_path_factory.mktemp("rank") / "run", dataset=sample_dataset)


def test_evaluate_writes_metrics_and_figures(trained_run, sample_dataset):
    result = evaluate_ranking(trained_run.root, dataset=sample_dataset, max_queries=120)
    stored = trained_run.metrics()["ranking"]
    assert stored["similarity_precision"]["test"] == result["similarity_precision"]["test"]
    assert 0.5 < stored["similarity_precision"]["train"] <= 1
    r = stored["retrieval"]
    assert r["n_queries"] == 120 and r["n_database"] == len(sample_dataset.train)
    assert 0 < r["mAP"] <= 1 and 0 <= r["P@30"] <= 1
    # Better than chance (1 / 30 classes) by a margin.
    assert r["P@10"] > 2 / 30
    for path in stored["figures"]:
        assert (trained_run.root / path).stat().st_size > 10_000


def test_report_section_reads_the_json(trained_run, sample_dataset):
    from neuralcodes.report.deep_ranking import ranking_section

    evaluate_ranking(trained_run.root, dataset=sample_dataset, max_queries=60)
    compare_mining(
        trained_run.root,
        miners=("random", "semihard", "batch_hard"),
        epochs=1,
        triplets_per_epoch=128,
        max_queries=60,
        dataset=sample_dataset,
    )
    text = ranking_section(trained_run)
    m = trained_run.metrics()
    assert f"{m['ranking']['retrieval']['mAP']:.4f}" in text
    assert f"{m['ranking']['similarity_precision']['test']:.4f}" in text
    assert f"{m['ranking_mining']['results']['semihard']['mAP']:.4f}" in text
    assert "](figures/ranking_results.png)" in text and "frozen" in text


def test_build_report_on_a_ranking_run_and_inside_another_report(
    trained_run, sample_dataset, tmp_path
):
    from neuralcodes.report import build_report
    from neuralcodes.runs import Run

    if "ranking" not in trained_run.metrics():
        evaluate_ranking(trained_run.root, dataset=sample_dataset, max_queries=60)
    md, html = build_report(trained_run)
    text = md.read_text()
    assert (
        "## Deep ranking" in text
        and f"{trained_run.metrics()['ranking']['retrieval']['mAP']:.4f}" in text
    )
    assert "<table>" in html.read_text()

    host = Run(tmp_path / "host")
    host.write_config(ClassifyConfig())
    host.update_metrics(
        "training", {"epochs_run": 1, "best_epoch": 1}
    )  # a report needs finished training
    md, _ = build_report(host, [trained_run])
    text = md.read_text()
    copied = f"figures/ranking-{trained_run.root.name}/ranking_results.png"
    assert f"]({copied})" in text and (host.root / copied).exists()
