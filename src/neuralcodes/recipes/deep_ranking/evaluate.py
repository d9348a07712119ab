"""Evaluation of a deep-ranking run: similarity precision, retrieval, figures, mining comparison.

- Similarity precision (share of triplets with D(q, p) < D(q, n)) on a fixed, seeded set of
  training triplets and on test triplets drawn from the official validation set.
- Retrieval: the whole training set embedded as the database; every validation image a query;
  mAP, precision@10 and precision@30 over the full ranking.
- Figures: loss curves, and 5 validation queries of different classes with their top and bottom
  10 training results.
Results go to ``RUN/metrics.json`` under "ranking" (and "ranking_mining" for the comparison).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from neuralcodes.data.imageset import Dataset
from neuralcodes.learning.miners import MINERS
from neuralcodes.learning.optimizers import build_optimizer
from neuralcodes.learning.samplers import TripletSampler, derive_seed
from neuralcodes.progress import console
from neuralcodes.recipes.deep_ranking.config import RankConfig
from neuralcodes.recipes.deep_ranking.inputs import RankingInputs, make_inputs
from neuralcodes.recipes.deep_ranking.ranking_step import (
    TEST_EVAL_KEY,
    TRAIN_EVAL_KEY,
    build_network,
    build_objective,
    embed,
    eval_triplets,
    train_epoch,
    triplet_precision,
)
from neuralcodes.recipes.deep_ranking.train import load_network
from neuralcodes.recipes.run_data import data_spec, load_run_data
from neuralcodes.retrieval.evaluate import retrieval_metrics
from neuralcodes.retrieval.search import search
from neuralcodes.runs import Run

FIGURE_KEY = 1_000_003
QUERY_SUBSET_KEY = 1_000_004


def retrieval_scores(
    queries: torch.Tensor,
    query_labels: np.ndarray,
    database: torch.Tensor,
    database_labels: np.ndarray,
    ks: Sequence[int] = (10, 30),
) -> dict[str, float]:
    """mAP and P@k of every query against the whole database (full ranking, blocked)."""
    m = retrieval_metrics(
        queries.numpy(),
        np.asarray(query_labels),
        ks=ks,
        database=database.numpy(),
        database_labels=np.asarray(database_labels),
    )
    return {"mAP": m["mAP"], **{f"P@{k}": m[f"P@{k}"] for k in ks}, "n_queries": m["n_queries"]}


def evaluate_ranking(
    run_dir: str | Path,
    dataset: Dataset | None = None,
    max_queries: int | None = None,
    figure_queries: int = 5,
) -> dict:
    """Evaluate the run's last checkpoint; writes metrics["ranking"] and the figures. Returns the metrics."""
    run = Run(Path(run_dir))
    config, net, payload = load_network(run)
    dataset = dataset if dataset is not None else _load(run, config)
    device = next(net.parameters()).device
    t0 = time.perf_counter()
    train_in = make_inputs(net, config, run, dataset.train, "train", device)
    test_in = make_inputs(net, config, run, dataset.val, "val", device)
    sp = {
        "train": triplet_precision(
            net,
            train_in,
            eval_triplets(train_in.labels, config.eval_triplets, config.seed, TRAIN_EVAL_KEY),
            device,
            config.bf16,
        ),
        "test": triplet_precision(
            net,
            test_in,
            eval_triplets(test_in.labels, config.eval_triplets, config.seed, TEST_EVAL_KEY),
            device,
            config.bf16,
        ),
    }
    db = embed(net, train_in, np.arange(len(train_in)), device, config.bf16)
    queries = _query_subset(len(test_in), max_queries, config.seed)
    q = embed(net, test_in, queries, device, config.bf16)
    scores = retrieval_scores(q, test_in.labels[queries], db, train_in.labels)
    figure = _figure(run, dataset, net, test_in, train_in, db, config, figure_queries)
    from neuralcodes.plots.deep_ranking import plot_loss_curves

    # Redrawn from the evaluated checkpoint, so the curves always match the weights evaluated.
    plot_loss_curves(payload["history"], payload["iterations"], run.figures / "ranking_loss.png")
    result = {
        "similarity_precision": {**sp, "n_triplets": config.eval_triplets},
        "retrieval": {**scores, "database": "train", "n_database": len(train_in), "queries": "val"},
        "epochs_trained": payload.get("epoch"),
        "figures": [figure, "figures/ranking_loss.png"],
        "seconds": time.perf_counter() - t0,
    }
    run.update_metrics("ranking", result)
    console.print(
        f"similarity precision train {sp['train']:.4f} test {sp['test']:.4f}; "
        f"mAP {scores['mAP']:.4f} P@10 {scores['P@10']:.4f} P@30 {scores['P@30']:.4f} ({scores['n_queries']} queries)"
    )
    return result


def _load(run: Run, config: RankConfig) -> Dataset:
    """The run's own data, verified against the checksum it recorded."""
    return load_run_data(run, data_spec(run, config.data, None))


def _query_subset(n: int, max_queries: int | None, seed: int) -> np.ndarray:
    if max_queries is None or max_queries >= n:
        return np.arange(n)
    rng = np.random.default_rng(derive_seed(seed, QUERY_SUBSET_KEY))
    return np.sort(rng.choice(n, size=max_queries, replace=False))


def _figure(
    run: Run,
    dataset: Dataset,
    net,
    test_in: RankingInputs,
    train_in: RankingInputs,
    db: torch.Tensor,
    config: RankConfig,
    n: int,
) -> str:
    from neuralcodes.plots.retrieval import plot_ranked_results

    rng = np.random.default_rng(derive_seed(config.seed, FIGURE_KEY))
    classes = rng.choice(
        np.unique(test_in.labels), size=min(n, len(np.unique(test_in.labels))), replace=False
    )
    picks = np.array([rng.choice(np.flatnonzero(test_in.labels == c)) for c in classes])
    z = embed(net, test_in, picks, next(net.parameters()).device, config.bf16)
    indices, distances = search(z.numpy(), db.numpy())
    show = min(10, db.shape[0])
    near, far = (
        np.s_[:, :show],
        np.s_[:, -show:],
    )  # the nearest and the farthest results of each query

    def results(part: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return dataset.train.images[indices[part]], train_in.labels[indices[part]], distances[part]

    name = "ranking_results.png"
    images, labels, dists = results(near)
    plot_ranked_results(
        dataset.val.images[picks],
        test_in.labels[picks],
        images,
        labels,
        dataset.train.class_names,
        run.figures / name,
        distances=dists,
        bottom=results(far),
    )
    return f"figures/{name}"


def compare_mining(
    run_dir: str | Path,
    miners: Sequence[str] = MINERS,
    epochs: int | None = None,
    triplets_per_epoch: int | None = None,
    max_queries: int | None = 2000,
    dataset: Dataset | None = None,
) -> dict:
    """Train a fresh head per negative-mining strategy on the run's data (same seed, same triplets).

    Nothing of the run itself changes except metrics["ranking_mining"]: these heads live in memory.
    With a frozen backbone the run's cached features are reused, so each head costs little.
    """
    run = Run(Path(run_dir))
    base = RankConfig.from_dict(run.config(expect="neuralcodes rank train"), source=run.root)
    base = replace(
        base,
        epochs=epochs or base.epochs,
        triplets_per_epoch=triplets_per_epoch or base.triplets_per_epoch,
    )
    dataset = dataset if dataset is not None else _load(run, base)
    results = {}
    for name in miners:
        config = replace(base, mining=name).validate()
        results[name] = _fit_and_score(run, config, dataset, max_queries)
        console.print(f"mining {name}: {results[name]}")
    out = {"epochs": base.epochs, "triplets_per_epoch": base.triplets_per_epoch, "results": results}
    run.update_metrics("ranking_mining", out)
    return out


def _fit_and_score(run: Run, config: RankConfig, dataset: Dataset, max_queries: int | None) -> dict:
    from neuralcodes.device import pick_device

    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    net = build_network(config).to(device)
    train_in = make_inputs(net, config, run, dataset.train, "train", device)
    test_in = make_inputs(net, config, run, dataset.val, "val", device)
    optimizer = build_optimizer(config.optimizer, net.parameters(), config.lr, config.weight_decay)
    sampler, (loss_fn, miner) = TripletSampler(train_in.labels), build_objective(config)
    t0 = time.perf_counter()
    losses: list[float] = []
    for epoch in range(config.epochs):
        triplets = sampler.sample(config.triplets_per_epoch, derive_seed(config.seed, epoch))
        losses += train_epoch(
            net,
            optimizer,
            loss_fn,
            miner,
            train_in,
            triplets,
            config.batch_size,
            device,
            config.bf16,
            epoch,
        )
    seconds = time.perf_counter() - t0
    queries = _query_subset(len(test_in), max_queries, config.seed)
    scores = retrieval_scores(
        embed(net, test_in, queries, device, config.bf16),
        test_in.labels[queries],
        embed(net, train_in, np.arange(len(train_in)), device, config.bf16),
        train_in.labels,
    )
    return {
        "train_similarity_precision": triplet_precision(
            net,
            train_in,
            eval_triplets(train_in.labels, config.eval_triplets, config.seed, TRAIN_EVAL_KEY),
            device,
            config.bf16,
        ),
        "test_similarity_precision": triplet_precision(
            net,
            test_in,
            eval_triplets(test_in.labels, config.eval_triplets, config.seed, TEST_EVAL_KEY),
            device,
            config.bf16,
        ),
        **scores,
        "final_loss": float(np.mean(losses[-max(1, len(losses) // 10) :])),
        "train_seconds": seconds,
    }
