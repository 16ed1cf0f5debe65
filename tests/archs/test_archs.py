"""Tests for srkit.archs: SRResNet, the SRGAN discriminator, the VGG feature extractor and bicubic."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from srkit.archs import DISCRIMINATORS, GENERATORS, Bicubic, SRGANDiscriminator, SRResNet, VGGFeatures
from srkit.archs.vgg import layer_names
from srkit.paths import MissingDataError


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _image(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A random (n, 3, h, w) batch in [0, 1]."""
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_registry_names_each_arch() -> None:
    # RRDBNet / VGG128 and the baselines: test_esrgan_archs.py; the U-Net: test_unet_discriminator.py;
    # the frequency fusion: tests/test_fusion.py.
    expected = ["autoencoder", "bicubic", "compact", "freqfusion", "pixelshuffle", "rrdbnet", "srresnet"]
    assert sorted(GENERATORS) == expected
    assert GENERATORS["bicubic"] is Bicubic and GENERATORS["srresnet"] is SRResNet
    assert sorted(DISCRIMINATORS) == ["esrgan_vgg128", "srgan", "unet_sn"]
    assert DISCRIMINATORS["srgan"] is SRGANDiscriminator


# SRResNet -----------------------------------------------------------------------------------------------


def test_srresnet_paper_size_parameter_count() -> None:
    assert _n_params(SRResNet()) == 1_549_462


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_srresnet_output_shape(scale: int) -> None:
    model = SRResNet(width=8, num_blocks=2, scale=scale).eval()
    assert model.scale == scale
    with torch.no_grad():
        out = model(_image(2, 12, 17))
    assert out.shape == (2, 3, 12 * scale, 17 * scale)
    assert out.dtype == torch.float32


def test_srresnet_output_in_unit_range() -> None:
    model = SRResNet(width=8, num_blocks=2).eval()
    with torch.no_grad():
        out = model(_image(2, 12, 17))
        assert out.min() >= 0 and out.max() <= 1
        assert out.std() > 0  # not a constant image
        # Saturate the tanh both ways: the [-1, 1] -> [0, 1] mapping must land exactly on the ends.
        bias = model.tail.bias
        assert bias is not None
        bias.fill_(50.0)
        assert torch.equal(model(_image(1, 8, 8)), torch.ones(1, 3, 32, 32))
        bias.fill_(-50.0)
        assert torch.equal(model(_image(1, 8, 8)), torch.zeros(1, 3, 32, 32))


def test_srresnet_in_channels() -> None:
    model = SRResNet(in_channels=1, width=8, num_blocks=1, scale=2).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 5, 6)).shape == (1, 1, 10, 12)


@pytest.mark.parametrize("scale", [1, 3, 6])
def test_srresnet_rejects_non_power_of_two_scale(scale: int) -> None:
    with pytest.raises(ValueError, match=f"got {scale}"):
        SRResNet(width=8, num_blocks=2, scale=scale)


# SRGAN discriminator ------------------------------------------------------------------------------------


def test_discriminator_parameter_count() -> None:
    # From the spec, conv biases included: 8 convs 4,685,376 + 7 BNs 3,712 + dense 18,875,392 + 1,025.
    assert _n_params(SRGANDiscriminator()) == 23_565_505


@pytest.mark.parametrize(("h", "w"), [(96, 96), (128, 128), (97, 150)])
def test_discriminator_output_shape(h: int, w: int) -> None:
    model = SRGANDiscriminator().eval()
    with torch.no_grad():
        out = model(_image(3, h, w))
    assert out.shape == (3, 1)
    assert torch.isfinite(out).all()


def test_discriminator_train_mode_backward() -> None:
    model = SRGANDiscriminator().train()
    img = _image(2, 96, 96)
    logits = model(img)
    assert logits.shape == (2, 1)
    nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([[1.0], [0.0]])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in model.parameters() if p.grad is not None)
    # BatchNorm really ran in training mode: its running statistics moved.
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert bn.num_batches_tracked is not None and bn.running_mean is not None
    assert bn.num_batches_tracked.item() == 1
    assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))


# VGG features -------------------------------------------------------------------------------------------


def test_vgg_layer_names() -> None:
    vgg19 = layer_names("vgg19")
    assert len(vgg19) == 37
    assert vgg19[:3] == ["conv1_1", "relu1_1", "conv1_2"]
    assert vgg19[-3:] == ["conv5_4", "relu5_4", "pool5"]
    assert len(set(vgg19)) == 37
    vgg16 = layer_names("vgg16")
    assert len(vgg16) == 31
    assert vgg16[0] == "conv1_1" and vgg16[-1] == "pool5" and "conv5_4" not in vgg16
    # The names index torchvision's own `features` modules (built from its configs: no 100M-param head).
    from torchvision.models.vgg import cfgs, make_layers

    assert len(make_layers(cfgs["E"])) == 37  # VGG19
    assert len(make_layers(cfgs["D"])) == 31  # VGG16
    for name, module in zip(vgg19, make_layers(cfgs["E"]), strict=True):
        kind = {"conv": nn.Conv2d, "relu": nn.ReLU, "pool": nn.MaxPool2d}[name[:4]]
        assert isinstance(module, kind), name


def test_vgg_conv_cut_is_before_relu() -> None:
    img = _image(1, 32, 32)
    torch.manual_seed(0)
    conv = VGGFeatures(arch="vgg19", layer="conv5_4", weights=None)
    torch.manual_seed(0)
    relu = VGGFeatures(arch="vgg19", layer="relu5_4", weights=None)
    assert isinstance(conv.features[-1], nn.Conv2d) and isinstance(relu.features[-1], nn.ReLU)
    with torch.no_grad():
        before, after = conv(img), relu(img)
    assert before.shape == after.shape == (1, 512, 2, 2)
    assert before.min() < 0
    assert after.min() >= 0
    # Same seed, same weights: the ReLU cut is exactly the conv cut clamped at zero.
    torch.testing.assert_close(after, before.clamp(min=0))


def test_vgg_relu2_2_shape() -> None:
    model = VGGFeatures(arch="vgg19", layer="relu2_2", weights=None)
    with torch.no_grad():
        out = model(_image(2, 24, 20))
    assert out.shape == (2, 128, 12, 10)


def test_vgg_unknown_layer() -> None:
    with pytest.raises(ValueError, match="relu9_9") as info:
        VGGFeatures(arch="vgg19", layer="relu9_9", weights=None)
    message = str(info.value)
    assert all(name in message for name in ("conv1_1", "relu5_4", "pool5"))


def test_vgg_unknown_arch() -> None:
    with pytest.raises(ValueError, match="vgg11"):
        VGGFeatures(arch="vgg11", weights=None)
    with pytest.raises(ValueError, match="vgg16"):
        layer_names("resnet50")


def test_vgg_is_frozen_but_passes_gradients_to_input() -> None:
    model = VGGFeatures(arch="vgg16", layer="relu2_2", weights=None)
    assert all(not p.requires_grad for p in model.parameters())
    returned = model.train()
    assert returned is model
    assert not model.training and not any(m.training for m in model.modules())
    img = _image(1, 16, 16).requires_grad_(True)
    model(img).square().mean().backward()
    assert img.grad is not None
    assert img.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_vgg16_imagenet_weights_from_data_folder(data_dir: Path) -> None:
    file = data_dir / "weights/imagenet_backbones/vgg16_features_imagenet.safetensors"
    state = load_file(str(file))
    pretrained = VGGFeatures(arch="vgg16", layer="relu1_1", weights="imagenet")
    torch.manual_seed(0)
    random = VGGFeatures(arch="vgg16", layer="relu1_1", weights=None)
    assert len(pretrained.features) == 2
    torch.testing.assert_close(pretrained.features[0].weight, state["features.0.weight"], rtol=0, atol=0)
    torch.testing.assert_close(pretrained.features[0].bias, state["features.0.bias"], rtol=0, atol=0)
    img = _image(1, 16, 16)
    with torch.no_grad():
        a, b = pretrained(img), random(img)
    assert a.shape == b.shape == (1, 64, 16, 16)
    assert (a - b).abs().max() > 1e-2
    # A known property of ImageNet conv1_1: the output is the ImageNet-normalised input convolved.
    x = (img - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    expected = nn.functional.conv2d(x, state["features.0.weight"], state["features.0.bias"], padding=1)
    torch.testing.assert_close(a, expected.clamp(min=0))


def test_vgg16_default_layer_exists() -> None:
    # The default cut is the arch's last ReLU: relu5_3 for VGG16 (relu5_4 exists only in VGG19).
    model = VGGFeatures(arch="vgg16", weights=None)
    assert model.layer == "relu5_3"
    assert isinstance(model.features[-1], nn.ReLU)
    assert VGGFeatures(arch="vgg19", weights=None).layer == "relu5_4"


def test_vgg_imagenet_missing_offline_and_online(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.models._api

    def no_download(self: object, *args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable (blocked by the test)")

    monkeypatch.setenv("SRKIT_DATA", str(tmp_path))
    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", no_download)
    with pytest.raises(MissingDataError) as info:
        # layer given: the default "relu5_4" is not a VGG16 layer (see test_vgg16_default_layer_exists)
        VGGFeatures(arch="vgg16", layer="relu5_3")
    message = str(info.value)
    expected = tmp_path / "weights/imagenet_backbones/vgg16_features_imagenet.safetensors"
    assert str(expected) in message
    assert "safetensors" in message and "online" in message  # how to get it
    assert "network is unreachable" in message  # and why the download route failed too
    assert isinstance(info.value, FileNotFoundError)


# Bicubic ------------------------------------------------------------------------------------------------


def test_bicubic_shape_and_range() -> None:
    model = Bicubic()
    assert model.scale == 4 and _n_params(model) == 0
    out = model(_image(2, 12, 17))
    assert out.shape == (2, 3, 48, 68)
    assert out.min() >= 0 and out.max() <= 1
    # A hard 0/1 edge makes bicubic overshoot; the model clamps it back into [0, 1] and reaches both ends.
    edge = torch.zeros(1, 3, 8, 8)
    edge[..., 4:] = 1
    out = model(edge)
    assert out.min() == 0 and out.max() == 1
    # Flat images stay flat.
    torch.testing.assert_close(model(torch.full((1, 3, 5, 7), 0.25)), torch.full((1, 3, 20, 28), 0.25))


def test_bicubic_other_scale() -> None:
    assert Bicubic(scale=2)(_image(1, 6, 9)).shape == (1, 3, 12, 18)


# Compact ------------------------------------------------------------------------------------------------------


def test_compact_is_a_residual_over_nearest_upscaling() -> None:
    from srkit.archs import Compact

    torch.manual_seed(0)
    net = Compact(width=8, num_convs=2, scale=4).eval()
    x = torch.rand(2, 3, 7, 9)
    assert net(x).shape == (2, 3, 28, 36)
    assert [k for k in net.state_dict() if k.endswith("weight")][:3] == [
        "body.0.weight",
        "body.1.weight",
        "body.2.weight",
    ]
    with torch.no_grad():
        last = net.body[-1]
        last.weight.zero_()
        last.bias.zero_()
        # no residual: exactly the nearest-neighbour upscale of the input
        assert torch.equal(net(x), x.repeat_interleave(4, -2).repeat_interleave(4, -1))
    with pytest.raises(ValueError, match="Compact needs width >= 1"):
        Compact(width=0)
