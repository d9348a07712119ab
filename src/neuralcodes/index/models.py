"""The models that turn images into an index's codes: a small registry of model kinds.

A :class:`ModelRef` is plain data kept in the index's meta.json: the kind of model, where it comes
from (a run folder or a backbone name), the layer, the square side every image is stretched to
(bicubic, as the datasets are decoded), and the sha256 of the weight file. Queries are embedded
with exactly that reference, and a model whose weights changed since the build is refused.

Kinds: ``neural_codes`` (a ``neuralcodes train`` run: L5/L6/L7 of the ConvNet), ``deep_ranking``
(a ``neuralcodes rank train`` run: its embedding), ``tuned_codes`` (a ``neuralcodes tuned train`` run:
its GeM code, whitened or not) and ``backbone`` (an ImageNet-pretrained backbone with no training;
``tiny`` is an untrained, seeded network for tests). A new recipe plugs in with
:func:`register_model_kind` and a :class:`ModelKind` whose ``run_kind`` is its config's kind.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from neuralcodes.device import pick_device
from torch.nn.functional import (
    normalize as l2n,
)  # an all-zero code stays zero (divides by max(norm, eps))
from neuralcodes.runs import Run

Features = Callable[[torch.Tensor], torch.Tensor]  # [0, 1] float (N, 3, S, S) -> (N, D)


@dataclass(frozen=True)
class ModelRef:
    kind: str
    source: str  # an absolute run folder, or a backbone name
    layer: str
    image_size: int  # images are stretched to image_size x image_size (bicubic) before the model
    weights_sha256: str = ""  # "" where the weights cannot be pinned to one file

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "input": "RGB in [0, 1], NCHW; the model normalises its own input"}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelRef":
        try:
            return cls(
                str(values["kind"]),
                str(values["source"]),
                str(values["layer"]),
                int(values["image_size"]),
                str(values.get("weights_sha256", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the model reference {values!r} is incomplete ({exc})") from None

    def describe(self) -> str:
        return f"{self.kind} {self.source} (layer {self.layer}, {self.image_size}x{self.image_size} input)"


@dataclass(frozen=True)
class ModelKind:
    """How to load one kind of model: from a run folder of ``run_kind``, or from a name (``run_kind`` None)."""

    name: str
    run_kind: str | None
    layers: tuple[str, ...]
    default_layer: str
    default_image_size: int
    fixed_image_size: bool  # the architecture accepts only default_image_size
    weights_file: Callable[[str], Path | None]
    load: Callable[[ModelRef, torch.device], Features]


MODEL_KINDS: dict[str, ModelKind] = {}


def register_model_kind(kind: ModelKind) -> ModelKind:
    MODEL_KINDS[kind.name] = kind
    return kind


def resolve_model(spec: str, layer: str | None = None, image_size: int | None = None) -> ModelRef:
    """``--model``: a run folder (its config.json names the recipe) or a backbone name (pretrained)."""
    from neuralcodes.models.backbones import BACKBONES

    path = Path(spec).expanduser()
    if path.is_dir():
        run_kind = (
            Run(path).config(expect="neuralcodes train, rank train or tuned train").get("kind")
        )
        matches = [
            k
            for k in MODEL_KINDS.values()
            if k.run_kind is not None and run_kind in _run_kinds(k.run_kind)
        ]
        if not matches:
            known = ", ".join(k.run_kind for k in MODEL_KINDS.values() if k.run_kind)
            raise ValueError(
                f"--model {spec}: runs of kind {run_kind!r} cannot make index codes; use a run of: {known}"
            )
        kind, source = matches[0], str(path.resolve())
    elif spec in BACKBONES or spec == "imagenet":
        kind, source = MODEL_KINDS["backbone"], "efficientnet_lite0" if spec == "imagenet" else spec
    else:
        raise ValueError(
            f"--model {spec!r} is neither a run folder nor a backbone; pass a `neuralcodes train` or `rank train` "
            f"run folder, or one of: imagenet (= efficientnet_lite0, pretrained, offline), {', '.join(BACKBONES)}"
        )
    layer = layer or kind.default_layer
    if layer not in kind.layers:
        raise ValueError(
            f"--layer {layer!r}: a {kind.name} model gives codes from {', '.join(kind.layers)}"
        )
    size = (
        kind.default_image_size if image_size is None else image_size
    )  # 0 is a mistake, not the default
    if kind.fixed_image_size and size != kind.default_image_size:
        raise ValueError(
            f"--image-size {size}: a {kind.name} model takes {kind.default_image_size}x{kind.default_image_size} images only"
        )
    if size < 8:
        raise ValueError(f"--image-size must be at least 8, got {size}")
    weights = kind.weights_file(source)
    return ModelRef(kind.name, source, layer, size, file_sha256(weights) if weights else "")


class Embedder:
    """A loaded model: uint8 (N, H, W, 3) images of the reference's size -> unit float32 codes (N, D)."""

    def __init__(self, ref: ModelRef, device: str | None = None, batch_size: int = 64) -> None:
        if ref.kind not in MODEL_KINDS:
            raise ValueError(
                f"model kind {ref.kind!r} is unknown to this neuralcodes; known: {', '.join(MODEL_KINDS)}"
            )
        kind = MODEL_KINDS[ref.kind]
        weights = kind.weights_file(ref.source)
        if ref.weights_sha256 and (
            weights is None or not weights.exists() or file_sha256(weights) != ref.weights_sha256
        ):
            raise ValueError(
                f"the model {ref.describe()} is not the one the index was built with: its weight file "
                f"{weights} is missing or changed since; rebuild the index with the current model"
            )
        self.ref = ref
        self.device = pick_device(device)
        self.batch_size = batch_size
        self._features = kind.load(ref, self.device)

    @torch.inference_mode()
    def embed(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        size = self.ref.image_size
        if images.ndim != 4 or images.shape[1:] != (size, size, 3) or images.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 (N, {size}, {size}, 3), got {images.dtype} {images.shape}"
            )
        out = []
        for start in range(0, len(images), self.batch_size):
            x = torch.from_numpy(images[start : start + self.batch_size]).to(self.device)
            x = (
                x.permute(0, 3, 1, 2)
                .float()
                .div_(255.0)
                .contiguous(memory_format=torch.channels_last)
            )
            out.append(l2n(self._features(x).flatten(1).float()).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def file_sha256(path: str | os.PathLike) -> str:
    stat = os.stat(path)
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    # Keyed on size and mtime too: a file rewritten in place is hashed again.
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _run_kinds(kind: str) -> tuple[str, ...]:
    from neuralcodes.config import CONFIGS

    return tuple(name for name, cls in CONFIGS.items() if cls.kind == kind) or (kind,)


# --- the kinds this package knows ------------------------------------------------------------------


def _neural_codes(ref: ModelRef, device: torch.device) -> Features:
    from neuralcodes.recipes.neural_codes.train import load_trained

    model, _ = load_trained(Run(ref.source), device=str(device))
    return lambda x: model.forward_features(x, (ref.layer,))[ref.layer]


def _deep_ranking(ref: ModelRef, device: torch.device) -> Features:
    from neuralcodes.recipes.deep_ranking.train import load_network

    _, embedding, _ = load_network(Run(ref.source), device)
    embedding.eval()
    return lambda x: embedding.forward_features(x, (ref.layer,))[ref.layer]


def _tuned_codes(ref: ModelRef, device: torch.device) -> Features:
    from neuralcodes.recipes.tuned_codes.train import load_tuned

    # load_tuned also opens the run's data and split (its API); the index only keeps the network.
    net, _, _ = load_tuned(Run(ref.source), device=str(device))
    return lambda x: net.forward_features(x, (ref.layer,))[ref.layer]


def _backbone(ref: ModelRef, device: torch.device) -> Features:
    from neuralcodes.models.backbones import build_backbone

    # Seeded: an untrained backbone ("tiny") must come out the same at build and at search time.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_backbone(ref.source, pretrained=ref.source != "tiny", image_size=ref.image_size)
    return net.to(device).eval()


def _backbone_weights(name: str) -> Path | None:
    if name == "efficientnet_lite0":
        from neuralcodes.models.efficientnet_lite import lite0_weights_path

        return lite0_weights_path()
    return None  # torchvision's cached download, or no weights at all (tiny)


def _run_file(which: str) -> Callable[[str], Path | None]:
    return lambda source: Run(source).checkpoints / which


def _import_recipe_configs() -> None:
    # Run folders name their recipe by its config's kind; the configs register themselves on import.
    import neuralcodes.recipes.deep_ranking.config
    import neuralcodes.recipes.neural_codes.config  # noqa: F401


_import_recipe_configs()
register_model_kind(
    ModelKind(
        "neural_codes",
        "neural_codes",
        ("L5", "L6", "L7"),
        "L6",
        64,
        True,
        _run_file("best.pt"),
        _neural_codes,
    )
)
register_model_kind(
    ModelKind(
        "deep_ranking",
        "deep_ranking",
        ("embedding", "concat", "backbone"),
        "embedding",
        64,
        True,
        _run_file("last.pt"),
        _deep_ranking,
    )
)
# Fine-tuned GeM (+ whitening) codes of 64x64 images, as the recipe trains them (a pretrained base upsamples itself).
register_model_kind(
    ModelKind(
        "tuned_codes",
        "tuned_codes",
        ("code", "pooled"),
        "code",
        64,
        True,
        _run_file("best.pt"),
        _tuned_codes,
    )
)
register_model_kind(
    ModelKind("backbone", None, ("pool",), "pool", 224, False, _backbone_weights, _backbone)
)
