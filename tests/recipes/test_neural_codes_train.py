import contextlib
import json

import numpy as np
import pytest
import torch

import neuralcodes.recipes.neural_codes.classification_step as loop
import neuralcodes.recipes.neural_codes.train as classify
from neuralcodes.data.imageset import Dataset, ImageSet
from neuralcodes.learning.checkpoint import load_checkpoint
from neuralcodes.recipes.neural_codes.config import ClassifyConfig
from neuralcodes.runs import Run


def synthetic_dataset(n_classes: int = 6, per_class: int = 12, seed: int = 0) -> Dataset:
    """Classes differ in mean colour, so a few steps of training can tell them apart."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(40, 215, (n_classes, 3))
    images = np.concatenate(
        [
            np.clip(rng.normal(c, 30, (per_class, 64, 64, 3)), 0, 255).astype(np.uint8)
            for c in centres
        ]
    )
    labels = np.repeat(np.arange(n_classes), per_class)
    ids = [f"c{i}" for i in range(n_classes)]
    return Dataset("synthetic", ImageSet(images, labels, ids, ids), None, "synthetic")


def config(**overrides) -> ClassifyConfig:
    base = dict(
        n_ood=2, batch_size=16, epochs=3, patience=5, lr=1e-4, eval_batch_size=64, device="cpu"
    )
    return ClassifyConfig(**{**base, **overrides})


@contextlib.contextmanager
def dies_in_second_validation(monkeypatch):
    """Training dies in the validation of epoch 2: its training is lost, epoch 1's checkpoint kept."""
    real, calls = loop.evaluate_classifier, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate_classifier", interrupted)
    try:
        yield
    finally:
        monkeypatch.setattr(loop, "evaluate_classifier", real)


def weights(path):
    return load_checkpoint(path)["model"]


# The course recipe, and the better-trained one: its cosine schedule's position must survive the resume too.
@pytest.mark.parametrize(
    "options",
    [
        {},
        dict(
            optimizer="sgd",
            lr=0.01,
            schedule="cosine",
            warmup_epochs=0.5,
            label_smoothing=0.1,
            weight_decay=5e-4,
        ),
    ],
)
def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path, monkeypatch, options):
    data = synthetic_dataset()
    classify.train_classifier(config(**options), tmp_path / "straight", dataset=data)

    with pytest.raises(KeyboardInterrupt), dies_in_second_validation(monkeypatch):
        classify.train_classifier(config(**options), tmp_path / "resumed", dataset=data)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["epoch"] == 0
    with pytest.raises(FileExistsError, match="--resume"):
        classify.train_classifier(config(**options), tmp_path / "resumed", dataset=data)
    classify.train_classifier(config(**options), tmp_path / "resumed", resume=True, dataset=data)

    a = weights(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = weights(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ha, hb = Run(tmp_path / "straight").history(), Run(tmp_path / "resumed").history()
    assert [h["val_loss"] for h in ha] == [h["val_loss"] for h in hb]


def test_resume_refuses_a_changed_configuration(tmp_path):
    data = synthetic_dataset()
    classify.train_classifier(config(epochs=1), tmp_path / "r", dataset=data)
    with pytest.raises(ValueError, match="lr"):
        classify.train_classifier(
            config(epochs=1, lr=1e-3), tmp_path / "r", resume=True, dataset=data
        )


def test_early_stopping_keeps_the_best_epoch_weights(tmp_path, monkeypatch):
    data = synthetic_dataset()
    scripted = iter([2.0, 1.0, 1.5, 0.5])  # rises at epoch 3: stop, keep epoch 2
    real_eval = loop.evaluate_classifier

    def fake_eval(*args, **kwargs):
        out = real_eval(*args, **kwargs)
        return {**out, "loss": next(scripted)}

    monkeypatch.setattr(loop, "evaluate_classifier", fake_eval)
    run = classify.train_classifier(config(epochs=4, patience=0), tmp_path / "r", dataset=data)
    metrics = run.metrics()["training"]
    machine = metrics.pop("machine")  # what the epoch times were measured on
    assert machine["cpu_cores"] >= 1 and machine["torch"] == torch.__version__
    assert metrics == {
        "best_epoch": 2,
        "best_val_loss": 1.0,
        "selected_by": "val_loss",
        "epochs_run": 3,
        "stopped_early": True,
        "processes": 1,
    }
    assert load_checkpoint(run.best_checkpoint)["epoch"] == 1  # zero-based epoch 1 is epoch 2
    assert not torch.equal(
        weights(run.best_checkpoint)["fc8.weight"], weights(run.last_checkpoint)["fc8.weight"]
    )
    assert (run.figures / "training_curves.png").stat().st_size > 0
    assert (run.root / "history.csv").read_text().count("\n") == 4


def test_training_lowers_the_loss_and_evaluation_matches_a_manual_pass(tmp_path):
    data = synthetic_dataset()
    run = classify.train_classifier(
        config(epochs=3, lr=3e-4, bf16=False), tmp_path / "r", dataset=data
    )
    history = run.history()
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    model, cfg = classify.load_trained(run, "cpu")
    p = classify.prepare(run, cfg, data)
    idx = p.split.test
    got = loop.evaluate_classifier(
        model, p.images, data.train.labels, idx, batch_size=5, bf16=False
    )
    with torch.no_grad():
        logits = model(p.images.batch(idx))
    y = torch.as_tensor(data.train.labels[idx])
    assert got["loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5
    )
    assert got["accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    top5 = logits.topk(4, 1).indices  # 4 in-domain classes: top-5 is every class
    assert got["top5"] == pytest.approx((top5 == y[:, None]).any(1).float().mean().item())


def test_convnet_backbone_loads_a_real_training_run(tmp_path):
    """Deep ranking on the course ConvNet reads the run folder `train_classifier` writes (review defect 1)."""
    from neuralcodes.models.backbones import build_backbone

    run = classify.train_classifier(config(epochs=1), tmp_path / "run", dataset=synthetic_dataset())
    backbone = build_backbone("convnet", weights=str(run.root)).eval()
    net, _ = classify.load_trained(run, "cpu")
    x = torch.rand(2, 3, 64, 64)
    expected = net.forward_features(x, ("L7",))["L7"].flatten(1)
    torch.testing.assert_close(backbone(x), expected)
    assert backbone.out_features == expected.shape[1] == net.fc7.out_features
    with pytest.raises(ValueError, match="--weights RUN"):
        build_backbone("convnet")


def test_held_out_classes_chosen_by_name(tmp_path):
    """--ood-classes: any classes can be held out; the classifier learns the others as 0..n-1."""
    from neuralcodes.recipes.neural_codes.evaluate import evaluate_run

    data = synthetic_dataset()
    cfg = config(epochs=1, ood_classes=["c0", "c3"])
    run = classify.train_classifier(cfg, tmp_path / "r", dataset=data)
    split = json.loads((run.root / "split.json").read_text())
    assert split["ood_classes"] == [0, 3] and split["ood_chosen"]
    model, _ = classify.load_trained(run, "cpu")
    assert model.fc8.out_features == 4
    results = evaluate_run(run, dataset=data)
    assert 0 <= results["test"]["accuracy"] <= 1
    with pytest.raises(ValueError, match="c9"):
        classify.train_classifier(config(ood_classes=["c0", "c9"]), tmp_path / "bad", dataset=data)
    assert not (tmp_path / "bad" / "config.json").exists()
    with pytest.raises(ValueError, match="--ood-classes"):
        config(ood_classes=["c0"]).validate()  # n_ood=2 in config(): they must agree


def test_load_trained_takes_a_path_and_names_a_missing_checkpoint_or_a_bad_which(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(ClassifyConfig(epochs=1).to_dict()))
    # A plain path used to fail with "'str' object has no attribute 'config'".
    with pytest.raises(FileNotFoundError, match="has no trained weights yet"):
        classify.load_trained(str(tmp_path), "cpu")
    with pytest.raises(FileNotFoundError, match="has no trained weights yet"):
        classify.load_trained(tmp_path, "cpu", which="last")
    with pytest.raises(ValueError, match=r'which must be "best" or "last".*got \'latest\''):
        classify.load_trained(Run(tmp_path), "cpu", which="latest")  # used to load last.pt silently
    with pytest.raises(FileNotFoundError, match="not a neuralcodes run folder"):
        classify.load_trained(tmp_path / "elsewhere", "cpu")


def test_class_disjoint_validation_picks_the_epoch_by_its_retrieval_map(tmp_path):
    data = synthetic_dataset(n_classes=8)
    cfg = config(n_ood=2, n_val_classes=2, val_class_images=12, epochs=3, patience=5, lr=1e-3)
    run = classify.train_classifier(cfg, tmp_path / "r", dataset=data)
    history, training = run.history(), run.metrics()["training"]
    maps = [h["val_mAP_L7"] for h in history]
    assert {"val_mAP_L5", "val_mAP_L6", "val_loss"} <= history[0].keys() and all(
        0 < m <= 1 for m in maps
    )
    assert training["selected_by"] == "val_mAP_L7"
    assert training["best_epoch"] == 1 + int(np.argmax(maps)) and training[
        "best_val_mAP_L7"
    ] == max(maps)
    assert load_checkpoint(run.best_checkpoint)["epoch"] == training["best_epoch"] - 1
    split = json.loads((run.root / "split.json").read_text())
    assert len(split["val_classes"]) == 2 and split["sizes"]["val_retrieval"] == 24
    assert not set(split["val_classes"]) & set(split["ood_classes"])


def test_held_out_classes_are_never_read_by_the_better_recipe(tmp_path):
    """Noise for every held-out image and shuffled held-out labels: the same weights and history, bit for bit."""
    data = synthetic_dataset(n_classes=8)
    labels = np.asarray(data.train.labels).copy()
    held_out = np.isin(labels, [6, 7])  # the last n_ood classes
    rng = np.random.default_rng(3)
    images = np.array(data.train.images)
    images[held_out] = rng.integers(0, 256, images[held_out].shape, dtype=np.uint8)
    labels[held_out] = rng.choice([6, 7], size=int(held_out.sum()))
    garbled = Dataset(
        "synthetic",
        ImageSet(images, labels, data.train.class_ids, data.train.class_names),
        None,
        "synthetic",
    )
    cfg = config(
        n_ood=2,
        n_val_classes=2,
        val_class_images=12,
        epochs=2,
        optimizer="sgd",
        lr=0.01,
        schedule="cosine",
        warmup_epochs=0.5,
        label_smoothing=0.1,
        augment=True,
    )
    a = classify.train_classifier(cfg, tmp_path / "real", dataset=data)
    b = classify.train_classifier(cfg, tmp_path / "garbled", dataset=garbled)
    for name in ("best.pt", "last.pt"):
        wa, wb = weights(a.checkpoints / name), weights(b.checkpoints / name)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
    times = ("seconds", "images_per_s")
    assert [{k: v for k, v in h.items() if k not in times} for h in a.history()] == [
        {k: v for k, v in h.items() if k not in times} for h in b.history()
    ]
    # Not vacuous: the same noise over the class-disjoint validation images changes what is selected on.
    split = classify.make_split(cfg, data)
    touched = np.array(data.train.images)
    touched[split.val_retrieval] = rng.integers(
        0, 256, touched[split.val_retrieval].shape, dtype=np.uint8
    )
    c = classify.train_classifier(
        cfg,
        tmp_path / "control",
        dataset=Dataset(
            "synthetic",
            ImageSet(touched, data.train.labels, data.train.class_ids, data.train.class_names),
            None,
            "synthetic",
        ),
    )
    assert [h["val_mAP_L7"] for h in c.history()] != [h["val_mAP_L7"] for h in a.history()]


def test_a_cosine_run_refuses_more_epochs_on_resume(tmp_path):
    data = synthetic_dataset()
    cfg = config(epochs=1, optimizer="sgd", lr=0.01, schedule="cosine")
    classify.train_classifier(cfg, tmp_path / "r", dataset=data)
    with pytest.raises(ValueError, match="cosine schedule laid out over 1 epochs"):
        classify.train_classifier(
            config(epochs=2, optimizer="sgd", lr=0.01, schedule="cosine"),
            tmp_path / "r",
            resume=True,
            dataset=data,
        )
