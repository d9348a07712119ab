"""The model registry: deep-ranking and fine-tuned GeM runs make index codes as their recipes compute them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from neuralcodes.index import Index, build_index
from neuralcodes.index.models import MODEL_KINDS, resolve_model
from neuralcodes.learning.checkpoint import save_checkpoint
from neuralcodes.models.resnet import MapClassifier
from neuralcodes.recipes.deep_ranking.config import RankConfig
from neuralcodes.recipes.deep_ranking.ranking_step import build_network
from neuralcodes.recipes.deep_ranking.train import load_network
from neuralcodes.recipes.neural_codes.train import make_split
from neuralcodes.recipes.run_data import check_split
from neuralcodes.recipes.tuned_codes.config import ClassifierConfig, TunedConfig
from neuralcodes.recipes.tuned_codes.train import load_tuned, train_tuned
from neuralcodes.runs import Run


@pytest.fixture(scope="module")
def tuned_run(sample_dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short fine-tuning of an untrained tiny classifier on the embedded sample (whitened GeM codes)."""
    root = tmp_path_factory.mktemp("tuned")
    cfg = ClassifierConfig(arch="tiny", device="cpu").validate()
    base = Run(root / "base")
    base.write_config(cfg)
    base.pin_data(sample_dataset.name, sample_dataset.checksum, sample_dataset.location)
    split = make_split(cfg, sample_dataset)
    check_split(base, split)
    torch.manual_seed(0)
    save_checkpoint(base.best_checkpoint, MapClassifier(split.n_in_domain, "tiny"))
    tuned = TunedConfig(
        base=str(base.root),
        whitening="learned",
        batch_size=16,
        m_per_class=4,
        batches_per_epoch=2,
        epochs=1,
        val_images=40,
        whiten_images=80,
        eval_batch_size=128,
        device="cpu",
    )
    return train_tuned(tuned, root / "tuned", dataset=sample_dataset).root


def test_a_tuned_codes_run_makes_the_index_codes(
    tuned_run: Path, photo_folder: Path, sample_dataset, tmp_path: Path
) -> None:
    ref = resolve_model(str(tuned_run))
    assert (ref.kind, ref.layer, ref.image_size) == ("tuned_codes", "code", 64)
    build_index(tmp_path / "idx", str(tuned_run), images=photo_folder)
    with Index.open(tmp_path / "idx") as index:
        records = index.browse(limit=5)
        codes = np.asarray(index.codes)
        query = photo_folder / records[3].path
        assert index.search([query], k=1).hits[0][0].id == records[3].id
    net, _, _ = load_tuned(
        tuned_run, dataset=sample_dataset, device="cpu"
    )  # the recipe's own loader, apart
    for hit in records:
        with torch.no_grad():
            code = net(_photo_tensor(photo_folder / hit.path))[0].numpy()
        np.testing.assert_allclose(codes[hit.id], code, atol=1e-5)


def _photo_tensor(path: Path) -> torch.Tensor:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1)[None]


def test_a_deep_ranking_run_makes_the_index_codes(photo_folder: Path, tmp_path: Path) -> None:
    run = Run(tmp_path / "rank")
    config = RankConfig(backbone="tiny", pretrained=False, embedding_dim=16, device="cpu")
    run.write_config(config)
    torch.manual_seed(0)
    save_checkpoint(
        run.last_checkpoint, build_network(config)
    )  # untrained weights load as trained ones do
    build_index(tmp_path / "idx", str(run.root), images=photo_folder)
    with Index.open(tmp_path / "idx") as index:
        assert (index.model.kind, index.model.layer, index.info()["dim"]) == (
            "deep_ranking",
            "embedding",
            16,
        )
        records, codes = index.browse(limit=4), np.asarray(index.codes)
    _, net, _ = load_network(run, torch.device("cpu"))
    for hit in records:
        with torch.no_grad():
            code = net.eval()(_photo_tensor(photo_folder / hit.path))[0].numpy()
        np.testing.assert_allclose(codes[hit.id], code, atol=1e-5)


def test_every_run_kind_names_its_layers() -> None:
    assert {k.run_kind for k in MODEL_KINDS.values()} >= {
        "neural_codes",
        "deep_ranking",
        "tuned_codes",
        None,
    }
    for kind in MODEL_KINDS.values():
        assert kind.default_layer in kind.layers
