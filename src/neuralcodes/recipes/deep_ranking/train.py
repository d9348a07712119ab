"""Deep-ranking training: a run's life, from its folder and data to the shared loop and the trained network.

Triplets of (query, positive, negative) images, hinge loss on distances (:mod:`.ranking_step`). The feasible
recipe on a CPU: a frozen, ImageNet-pretrained backbone whose pooled features for every image are computed
once and cached in the run folder (:mod:`.inputs`), and a trained embedding head (optionally with the
multi-scale shallow branches, which read the 64x64 images and cost little). With ``freeze_backbone=False``
the whole network is trained end to end from the images.

    RUN/config.json                    RankConfig (+ dataset name and checksum)
    RUN/features/train.npy, val.npy    the frozen backbone's features
    RUN/triplets/epoch_000.npy         each epoch's triplets, from seed (run seed, epoch)
    RUN/history.json / history.csv     per-epoch loss, similarity precision, speed
    RUN/loss_iterations.csv            loss per iteration
    RUN/checkpoints/last.pt            weights + optimiser + RNG + position in the epoch (resume)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from neuralcodes import io
from neuralcodes.data.imageset import Dataset
from neuralcodes.device import pick_device
from neuralcodes.learning.checkpoint import load_checkpoint
from neuralcodes.learning.early_stopping import EarlyStopping
from neuralcodes.learning.loop import Loop, fit
from neuralcodes.learning.optimizers import build_optimizer
from neuralcodes.learning.samplers import TripletSampler, TripletStore
from neuralcodes.models.embedding import RankingEmbedding
from neuralcodes.progress import console
from neuralcodes.recipes.deep_ranking.config import RankConfig
from neuralcodes.recipes.deep_ranking.inputs import RankingInputs, make_inputs
from neuralcodes.recipes.deep_ranking.ranking_step import (
    TEST_EVAL_KEY,
    TRAIN_EVAL_KEY,
    build_network,
    build_objective,
    eval_triplets,
    ranking_step,
    triplet_precision,
)
from neuralcodes.runs import Run


class IterationLosses:
    """Every iteration's loss (the loss curve), checkpointed with the loop so that a resumed run continues it."""

    def __init__(self, per_epoch: int) -> None:
        self.per_epoch, self.rows = per_epoch, []  # every epoch has the same number of batches

    def add(self, loss: float) -> None:
        n = len(self.rows)
        self.rows.append({"epoch": n // self.per_epoch + 1, "iteration": n + 1, "loss": loss})

    def state_dict(self) -> list[dict]:
        return self.rows

    def load_state_dict(self, rows: list[dict]) -> None:
        self.rows = list(rows)


def upgrade_checkpoint(payload: dict) -> dict:
    """A checkpoint of before the shared loop: ``epoch`` counted the epochs done (the loop names the last one
    done, from 0) and there was no early stopping nor position inside an epoch; older ones still name every
    weight "embedding.*" (the network sat in a TripletNetwork wrapper)."""
    payload = {
        **payload,
        "model": {k.removeprefix("embedding."): v for k, v in payload["model"].items()},
    }
    if (
        "epoch" in payload and "early_stopping" not in payload
    ):  # (a file of weights alone has neither)
        payload.update(
            epoch=payload["epoch"] - 1, early_stopping=EarlyStopping().state_dict(), in_epoch=None
        )
    return payload


def prepare_run(config: RankConfig, run: Run, dataset: Dataset, resume: bool) -> None:
    if run.exists() and not resume:
        raise FileExistsError(
            f"{run.root} already holds a run; pass --resume to continue it or choose another --out"
        )
    if dataset.val is None:
        raise ValueError(f"dataset {dataset.name!r} has no separate validation set to test on")
    run.pin_data(dataset.name, dataset.checksum, dataset.location, dataset.skipped)
    run.write_config(config)


def train_ranking(
    config: RankConfig,
    out: str | Path,
    dataset: Dataset | None = None,
    resume: bool = False,
    checkpoint_minutes: float = 5.0,
) -> Run:
    """Train (or resume) a deep-ranking run in ``out``; returns the Run.

    A checkpoint is written at the end of every epoch, every ``checkpoint_minutes`` inside one and on
    SIGINT/SIGTERM (then :class:`TrainingInterrupted` is raised), so a resumed run continues from the batch.
    """
    config.validate()
    run = Run(Path(out))
    if run.exists() and not resume:  # before the data loads
        raise FileExistsError(
            f"{run.root} already holds a run; pass --resume to continue it or choose another --out"
        )
    # The lock refuses a second writer, and a start that fails on its input (an unknown backbone, an unreadable
    # weight file) leaves no folder behind: everything that can fail is built before the run is recorded, so the
    # corrected command is not refused as "already holds a run" / "a different configuration".
    with run.lock():
        if run.exists():
            run.write_config(config)  # a resumed run refuses other options before any work
        device = pick_device(config.device)
        if dataset is None:
            from neuralcodes.data.sources import load_dataset

            dataset = load_dataset(config.data)
        torch.manual_seed(config.seed)  # initial weights of the head (and of an untrained backbone)
        net = build_network(config).to(device)
        if device.type == "cuda" or not config.freeze_backbone:
            net = net.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(
            config.optimizer, net.parameters(), config.lr, config.weight_decay
        )
        prepare_run(config, run, dataset, resume)
        _train(run, config, dataset, net, optimizer, device, resume, checkpoint_minutes)
        run.finish()
    return run


def _train(
    run: Run,
    config: RankConfig,
    dataset: Dataset,
    net: RankingEmbedding,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    resume: bool,
    checkpoint_minutes: float,
) -> None:
    train_in = make_inputs(net, config, run, dataset.train, "train", device)
    test_in = make_inputs(net, config, run, dataset.val, "val", device)
    loss_fn, miner = build_objective(config)
    generator = torch.Generator().manual_seed(config.seed)
    store = TripletStore(
        run.root / "triplets",
        TripletSampler(train_in.labels),
        config.triplets_per_epoch,
        config.seed,
    )
    iterations = IterationLosses(-(-config.triplets_per_epoch // config.batch_size))

    validate = _validation(net, train_in, test_in, config, device)
    if not (resume and run.last_checkpoint.exists()):
        run.update_metrics("ranking_untrained", validate())
    step = ranking_step(
        net, optimizer, loss_fn, miner, train_in, device, config.bf16, record=iterations.add
    )

    # No model selection: the similarity precision is measured on the test set, and the last weights are the result.
    loop = Loop(
        run,
        net,
        optimizer,
        generator,
        lambda epoch, g: store.get(epoch),
        step,
        validate,
        epochs=config.epochs,
        batch_size=config.batch_size,
        monitor=None,
        checkpoint_minutes=checkpoint_minutes,
        unit="triplets",
        summarise=lambda totals: {"loss": totals["loss"] / totals["steps"]},
        stateful={"iterations": iterations},
        upgrade=upgrade_checkpoint,
    )
    result = fit(loop, resume, _epoch_line(run, config, iterations))
    _plot_losses(run, result.history, iterations.rows)


def _validation(
    net: RankingEmbedding,
    train_in: RankingInputs,
    test_in: RankingInputs,
    config: RankConfig,
    device: torch.device,
) -> Callable[[], dict[str, float]]:
    """The figures of every epoch: the similarity precision on fixed train and test triplets."""
    train_eval = eval_triplets(train_in.labels, config.eval_triplets, config.seed, TRAIN_EVAL_KEY)
    test_eval = eval_triplets(test_in.labels, config.eval_triplets, config.seed, TEST_EVAL_KEY)

    def validate() -> dict[str, float]:
        return {
            "train_similarity_precision": triplet_precision(
                net, train_in, train_eval, device, config.bf16
            ),
            "test_similarity_precision": triplet_precision(
                net, test_in, test_eval, device, config.bf16
            ),
        }

    return validate


def _epoch_line(
    run: Run, config: RankConfig, iterations: IterationLosses
) -> Callable[[list[dict]], None]:
    """What the end of an epoch writes: the history files and the epoch's line."""

    def on_epoch(history: list[dict]) -> None:
        write_history(run, history, iterations.rows)
        h = history[-1]
        console.print(
            f"epoch {h['epoch']}/{config.epochs}: loss {h['loss']:.4f}, similarity precision "
            f"train {h['train_similarity_precision']:.4f} test {h['test_similarity_precision']:.4f}"
        )

    return on_epoch


def write_history(run: Run, history: list[dict], iterations: list[dict]) -> None:
    io.write_json(run.history_path, history)
    io.write_csv(run.root / "history.csv", history)
    io.write_csv(run.root / "loss_iterations.csv", iterations)


def _plot_losses(run: Run, history: list[dict], iterations: list[dict]) -> None:
    from neuralcodes.plots.deep_ranking import plot_loss_curves

    plot_loss_curves(history, iterations, run.figures / "ranking_loss.png")


def load_network(
    run: Run, device: torch.device | None = None
) -> tuple[RankConfig, RankingEmbedding, dict]:
    """The config and network of a trained run (weights of its last checkpoint), and that checkpoint, whose
    ``epoch`` counts the epochs completed (as deep-ranking runs always have; the loop counts from 0)."""
    config = RankConfig.from_dict(run.config(expect="neuralcodes rank train"), source=run.root)
    device = device or pick_device(config.device)
    if not run.last_checkpoint.exists():
        raise FileNotFoundError(
            f"{run.last_checkpoint} does not exist: train the run first (`neuralcodes rank train`)"
        )
    net = build_network(config)
    payload = upgrade_checkpoint(load_checkpoint(run.last_checkpoint, map_location="cpu"))
    net.load_state_dict(payload["model"])
    if "epoch" in payload:
        payload["epoch"] += 1
    return config, net.to(device), payload
