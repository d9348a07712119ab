"""Deep-ranking training: triplets of (query, positive, negative) images, hinge loss on distances.

The feasible recipe on a CPU: a frozen, ImageNet-pretrained backbone whose pooled features for
every image are computed once and cached in the run folder (``RUN/features/``, in atomic chunks,
so an interrupted extraction resumes), and a trained embedding head (optionally with the
multi-scale shallow branches, which read the 64x64 images and cost little). With
``freeze_backbone=False`` the whole network is trained end to end from the images.

    RUN/config.json                    RankConfig (+ dataset name and checksum)
    RUN/triplets/epoch_000.npy         each epoch's triplets, from seed (run seed, epoch)
    RUN/history.json / history.csv     per-epoch loss, similarity precision, speed
    RUN/loss_iterations.csv            loss per iteration
    RUN/checkpoints/last.pt            weights + optimiser + RNG + position in the epoch (resume)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from pytorch_metric_learning.losses import TripletMarginLoss
from pytorch_metric_learning.miners import BaseMiner

from neuralcodes import io
from neuralcodes.data.batches import DeviceImages
from neuralcodes.data.imageset import Dataset, ImageSet
from neuralcodes.device import autocast, pick_device
from neuralcodes.learning.checkpoint import load_checkpoint
from neuralcodes.learning.early_stopping import EarlyStopping
from neuralcodes.learning.loop import InEpoch, Loop, fit, run_epoch
from neuralcodes.learning.losses import triplet_distance, triplet_loss
from neuralcodes.learning.miners import get_miner
from neuralcodes.learning.optimizers import build_optimizer
from neuralcodes.learning.samplers import TripletSampler, TripletStore, derive_seed
from neuralcodes.models.backbones import build_backbone
from neuralcodes.models.embedding import RankingEmbedding, downsample
from neuralcodes.progress import ProgressBar, console
from neuralcodes.recipes.deep_ranking.config import RankConfig
from neuralcodes.recipes.neural_codes import train as _neural_codes  # noqa: F401  registers the "convnet" backbone
from neuralcodes.runs import Run

# Seed keys of the fixed evaluation triplets (epochs use keys 0, 1, 2, ... of the run seed).
TRAIN_EVAL_KEY, TEST_EVAL_KEY = 1_000_001, 1_000_002


def build_network(config: RankConfig) -> RankingEmbedding:
    backbone = build_backbone(config.backbone, config.pretrained, config.weights, config.image_size)
    return RankingEmbedding(
        backbone,
        config.embedding_dim,
        multiscale=config.multiscale,
        freeze_backbone=config.freeze_backbone,
        head_hidden=config.head_hidden,
    )


def build_objective(config: RankConfig) -> tuple[TripletMarginLoss, BaseMiner | None]:
    """The triplet loss (gap g, plain or squared D) and the in-batch miner of ``config`` (None: random)."""
    return (
        triplet_loss(config.gap, config.squared_distance),
        get_miner(config.mining, config.gap, config.squared_distance),
    )


class FeatureCache:
    """Frozen-backbone features of one image set, computed once in chunks (atomic, resumable)."""

    def __init__(self, folder: Path, name: str, chunk: int = 4096) -> None:
        self.folder, self.name, self.chunk = Path(folder), name, chunk

    @property
    def path(self) -> Path:
        return self.folder / f"{self.name}.npy"

    def get(
        self,
        backbone: nn.Module,
        images: np.ndarray,
        device: torch.device,
        batch_size: int,
        bf16: bool,
    ) -> np.ndarray:
        if self.path.exists():
            feats = np.load(self.path)  # read whole: torch wants writable memory, and it is reused
            if len(feats) == len(images):
                return feats
            raise ValueError(
                f"{self.path} holds {len(feats)} features for {len(images)} images; delete it to recompute"
            )
        parts = self.folder / f"{self.name}_parts"
        n_chunks = (len(images) + self.chunk - 1) // self.chunk
        # channels-last + bf16: about 2x the conv throughput on AVX-512-BF16 CPUs and on GPUs.
        backbone = backbone.to(device, memory_format=torch.channels_last).eval()
        with ProgressBar(len(images), f"backbone features ({self.name})", unit="img") as bar:
            for c in range(n_chunks):
                part = parts / f"{c:05d}.npy"
                lo, hi = c * self.chunk, min((c + 1) * self.chunk, len(images))
                if not part.exists():
                    io.save_npy(
                        part,
                        _backbone_features(backbone, images[lo:hi], device, batch_size, bf16, bar),
                    )
                else:
                    bar.advance(hi - lo)
        feats = np.concatenate([np.load(parts / f"{c:05d}.npy") for c in range(n_chunks)])
        io.save_npy(self.path, feats)
        for c in range(n_chunks):
            (parts / f"{c:05d}.npy").unlink()
        parts.rmdir()
        return feats


@torch.no_grad()
def _backbone_features(
    backbone: nn.Module,
    images: np.ndarray,
    device: torch.device,
    batch_size: int,
    bf16: bool,
    bar: ProgressBar,
) -> np.ndarray:
    source = DeviceImages(images, device)
    out = []
    for lo in range(0, len(source), batch_size):
        idx = np.arange(lo, min(lo + batch_size, len(source)))
        with autocast(device, bf16):
            out.append(backbone(source.batch(idx)).float().cpu().numpy().astype(np.float16))
        bar.advance(len(idx))
    return np.concatenate(out)


def head_autocast(device: torch.device, bf16: bool, inputs: "RankingInputs") -> bool:
    """bf16 for the head only where it pays: on CPU, a head over cached features is so small that
    autocast's casts cost more than they save (measured: ~2x slower), so it runs in fp32 there."""
    return bf16 and (device.type == "cuda" or inputs.images is not None)


class RankingInputs:
    """What the network reads for image indices: images, or cached deep features and the cached
    4x down-sampled images of the shallow branches (both fixed when the backbone is frozen)."""

    def __init__(
        self, images: ImageSet, device: torch.device, features: np.ndarray | None, need: str
    ) -> None:
        self.labels = np.asarray(images.labels, dtype=np.int64)
        self.images = DeviceImages(images.images, device) if need == "images" else None
        self.low = _downsampled(images.images, device) if need == "low" else None
        self.features = (
            None if features is None else torch.from_numpy(np.asarray(features)).to(device)
        )

    def __len__(self) -> int:
        return len(self.labels)

    def get(
        self, idx: np.ndarray
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """(images, deep features, 4x down-sampled images) of ``idx``; None where not used."""
        t = torch.as_tensor(idx, dtype=torch.long)
        x = None if self.images is None else self.images.batch(idx)
        deep = (
            None
            if self.features is None
            else self.features.index_select(0, t.to(self.features.device)).float()
        )
        low = None if self.low is None else self.low.index_select(0, t.to(self.low.device))
        return x, deep, low


def _downsampled(images: np.ndarray, device: torch.device, chunk: int = 8192) -> torch.Tensor:
    source = DeviceImages(images, device)
    return torch.cat(
        [
            downsample(source.batch(np.arange(lo, min(lo + chunk, len(source)))))
            for lo in range(0, len(source), chunk)
        ]
    ).contiguous()


def make_inputs(
    net: RankingEmbedding,
    config: RankConfig,
    run: Run,
    images: ImageSet,
    name: str,
    device: torch.device,
) -> RankingInputs:
    """Cached backbone features when the backbone is frozen; images when anything reads them."""
    features = None
    if config.freeze_backbone:
        cache = FeatureCache(run.root / "features", name)
        features = cache.get(
            net.backbone, images.images, device, config.feature_batch_size, config.bf16
        )
    need = "images" if not config.freeze_backbone else ("low" if len(net.shallow) else "none")
    return RankingInputs(images, device, features, need)


@torch.no_grad()
def embed(
    net: RankingEmbedding,
    inputs: RankingInputs,
    indices: np.ndarray,
    device: torch.device,
    bf16: bool,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Unit embeddings (float32, on CPU) of ``indices``."""
    net.eval()
    out = []
    for lo in range(0, len(indices), batch_size):
        x, deep, low = inputs.get(indices[lo : lo + batch_size])
        with autocast(device, head_autocast(device, bf16, inputs)):
            out.append(net(x, deep=deep, low=low).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, net.embedding_dim)


def triplet_precision(
    net: RankingEmbedding,
    inputs: RankingInputs,
    triplets: np.ndarray,
    device: torch.device,
    bf16: bool,
) -> float:
    """Similarity precision: share of triplets with D(q, p) < D(q, n)."""
    from neuralcodes.retrieval.metrics import similarity_precision

    used, inverse = np.unique(triplets, return_inverse=True)
    z = embed(net, inputs, used, device, bf16)[torch.from_numpy(inverse.reshape(triplets.shape))]
    d = triplet_distance().pairwise_distance  # the order of D and of D squared is the same
    return similarity_precision(d(z[:, 0], z[:, 1]).numpy(), d(z[:, 0], z[:, 2]).numpy())


def eval_triplets(labels: np.ndarray, n: int, seed: int, key: int) -> np.ndarray:
    return TripletSampler(labels).sample(n, derive_seed(seed, key))


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


def ranking_step(
    net: RankingEmbedding,
    optimizer: torch.optim.Optimizer,
    loss_fn: TripletMarginLoss,
    miner: BaseMiner | None,
    inputs: RankingInputs,
    device: torch.device,
    bf16: bool,
    record: Callable[[float], None] = lambda loss: None,
) -> Callable[[np.ndarray], dict[str, float]]:
    """One optimiser step on a batch of triplets (rows of image indices); ``record`` gets its loss.

    A batch embeds each of its distinct images once (the weight-sharing query, positive and negative
    networks are one module); the loss trains on the sampled triplets, or on those ``miner`` picks among
    all the batch's images (no image twice, so no image is mined as its own positive).
    """

    def step(t: np.ndarray) -> dict[str, float]:
        images, rows = np.unique(t.reshape(-1), return_inverse=True)
        x, deep, low = inputs.get(images)
        with autocast(device, head_autocast(device, bf16, inputs)):
            z = net(x, deep=deep, low=low)  # float32: the embedding ends in a float32 normalisation
        labels = torch.from_numpy(inputs.labels[images]).to(device)
        if miner is None:
            sampled = torch.from_numpy(rows.reshape(t.shape)).to(device)
            chosen = (sampled[:, 0], sampled[:, 1], sampled[:, 2])
        else:
            chosen = miner(z, labels)
        loss = loss_fn(z, labels, chosen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        record(float(loss.detach()))
        return {"loss": float(loss.detach())}

    return step


def train_epoch(
    net: RankingEmbedding,
    optimizer: torch.optim.Optimizer,
    loss_fn: TripletMarginLoss,
    miner: BaseMiner | None,
    inputs: RankingInputs,
    triplets: np.ndarray,
    batch_size: int,
    device: torch.device,
    bf16: bool,
    epoch: int,
) -> list[float]:
    """One pass over ``triplets`` outside a run (the mining comparison); returns the loss of every iteration."""
    losses: list[float] = []
    step = ranking_step(net, optimizer, loss_fn, miner, inputs, device, bf16, record=losses.append)
    net.train()
    run_epoch(InEpoch(epoch, triplets), step, batch_size, f"epoch {epoch + 1}", unit="triplets")
    return losses


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
    train_eval = eval_triplets(train_in.labels, config.eval_triplets, config.seed, TRAIN_EVAL_KEY)
    test_eval = eval_triplets(test_in.labels, config.eval_triplets, config.seed, TEST_EVAL_KEY)
    iterations = IterationLosses(-(-config.triplets_per_epoch // config.batch_size))

    def validate() -> dict[str, float]:
        return {
            "train_similarity_precision": triplet_precision(
                net, train_in, train_eval, device, config.bf16
            ),
            "test_similarity_precision": triplet_precision(
                net, test_in, test_eval, device, config.bf16
            ),
        }

    if not (resume and run.last_checkpoint.exists()):
        run.update_metrics("ranking_untrained", validate())
    step = ranking_step(
        net, optimizer, loss_fn, miner, train_in, device, config.bf16, record=iterations.add
    )

    def on_epoch(history: list[dict]) -> None:
        write_history(run, history, iterations.rows)
        h = history[-1]
        console.print(
            f"epoch {h['epoch']}/{config.epochs}: loss {h['loss']:.4f}, similarity precision "
            f"train {h['train_similarity_precision']:.4f} test {h['test_similarity_precision']:.4f}"
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
    result = fit(loop, resume, on_epoch)
    _plot_losses(run, result.history, iterations.rows)


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
