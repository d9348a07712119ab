import pytest
import torch

from neuralcodes.models.convnet import LAYERS, NeuralCodesConvNet, count_parameters


def test_parameter_count_matches_the_course_network():
    # conv: 3*96*16+96, 96*192*25+192, 192*288*9+288, 288*288*9+288, 288*256*9+256;
    # fc: 16384*2048+2048, 2048*2048+2048, 2048*190+190
    expected = (
        (3 * 96 * 16 + 96)
        + (96 * 192 * 25 + 192)
        + (192 * 288 * 9 + 288)
        + (288 * 288 * 9 + 288)
        + (288 * 256 * 9 + 256)
        + (16384 * 2048 + 2048)
        + (2048 * 2048 + 2048)
        + (2048 * 190 + 190)
    )
    assert expected == 40_516_382
    assert count_parameters(NeuralCodesConvNet(190)) == expected


def test_layer_shapes_and_one_pass_features():
    torch.manual_seed(0)
    model = NeuralCodesConvNet(12).eval()
    x = torch.rand(3, 3, 64, 64)
    feats = model.forward_features(x, LAYERS)
    assert feats["L5"].shape == (3, 16384)
    assert feats["L6"].shape == (3, 2048)
    assert feats["L7"].shape == (3, 2048)
    assert feats["logits"].shape == (3, 12)
    # forward() is the logits of the same pass; ReLU layers are non-negative.
    assert torch.allclose(model(x), feats["logits"])
    assert (feats["L6"] >= 0).all() and (feats["L7"] >= 0).all()


def test_spatial_sizes_halve_at_each_pool():
    model = NeuralCodesConvNet(5)
    sizes = []
    x = torch.rand(1, 3, 64, 64)
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, torch.nn.MaxPool2d):
            sizes.append(x.shape[-1])
    assert sizes == [32, 16, 8]


def test_features_follow_the_fc_layers_by_hand():
    torch.manual_seed(1)
    model = NeuralCodesConvNet(4).eval()
    x = torch.rand(2, 3, 64, 64)
    feats = model.forward_features(x, ("L5", "L6", "L7", "logits"))
    l6 = torch.relu(feats["L5"] @ model.fc6.weight.T + model.fc6.bias)
    l7 = torch.relu(l6 @ model.fc7.weight.T + model.fc7.bias)
    assert torch.allclose(feats["L6"], l6, atol=1e-5)
    assert torch.allclose(feats["L7"], l7, atol=1e-5)
    assert torch.allclose(feats["logits"], l7 @ model.fc8.weight.T + model.fc8.bias, atol=1e-5)


def test_batch_norm_variant_and_bad_input():
    model = NeuralCodesConvNet(3, batch_norm=True)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with pytest.raises(ValueError, match="unknown layer"):
        model.forward_features(torch.rand(1, 3, 64, 64), ("L9",))
    with pytest.raises(ValueError, match="64x64"):
        model(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="num_classes"):
        NeuralCodesConvNet(1)
