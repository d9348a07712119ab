import pytest
import torch

from neuralcodes.models.backbones import BACKBONES, build_backbone


def test_registry_and_unknown_name():
    assert {"resnet18", "resnet50", "resnet101", "efficientnet_lite0", "convnet", "tiny"} <= set(
        BACKBONES
    )
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg16")


@pytest.mark.parametrize("name,width", [("resnet18", 512), ("resnet50", 2048)])
def test_resnet_adapted_to_64px(name, width):
    net = build_backbone(name, pretrained=False)
    assert net.out_features == width
    assert net.net.conv1.stride == (1, 1) and net.net.conv1.kernel_size == (3, 3)
    assert isinstance(net.net.maxpool, torch.nn.Identity)
    feats = {}
    net.net.layer4.register_forward_hook(lambda m, i, o: feats.setdefault("map", o))
    out = net.eval()(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, width)
    assert feats["map"].shape[-2:] == (8, 8)  # 64 / 8, not the 2x2 of the ImageNet stem


def test_pretrained_resnet_from_a_local_file_keeps_the_7x7_kernel(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    net = build_backbone("resnet18", weights=path)
    assert net.net.conv1.kernel_size == (7, 7) and net.net.conv1.stride == (1, 1)
    assert torch.equal(net.net.conv1.weight, reference.conv1.weight)
    assert torch.equal(net.net.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)


def test_missing_weights_file_and_offline_download_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_backbone("resnet18", weights=tmp_path / "nope.pth")
    import torchvision

    def offline(self, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(FileNotFoundError, match="--weights PATH"):
        build_backbone("resnet18", pretrained=True)
