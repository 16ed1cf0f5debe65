"""ESRGAN's networks and the reports' baselines: RRDBNet, the VGG128 discriminator, the convolutional
autoencoder and the PixelShuffle generator (shapes, parameter counts at paper size, layouts)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from srkit.archs import (
    DISCRIMINATORS,
    GENERATORS,
    ConvAutoencoder,
    ESRGANDiscriminator,
    PixelShuffleGenerator,
    RRDBNet,
)
from srkit.archs.rrdbnet import RRDB, ResidualDenseBlock
from srkit.models import build_generator, load_model, save_weights
from testkit import n_params, random_batch

pytestmark = pytest.mark.usefixtures("one_thread")


def test_registry() -> None:
    assert GENERATORS["rrdbnet"] is RRDBNet
    assert GENERATORS["autoencoder"] is ConvAutoencoder
    assert GENERATORS["pixelshuffle"] is PixelShuffleGenerator
    assert DISCRIMINATORS["esrgan_vgg128"] is ESRGANDiscriminator


# RRDBNet --------------------------------------------------------------------------------------------------


def test_rrdbnet_paper_size_parameter_count() -> None:
    # conv_first 1,792 + 23 RRDBs x 3 dense blocks x 239,808 + conv_body, conv_up1, conv_up2, conv_hr 4 x 36,928
    # + conv_last 1,731 (ESRGAN's released x4 model has the same count).
    assert n_params(RRDBNet()) == 16_697_987
    assert n_params(ResidualDenseBlock(64, 32)) == 239_808
    assert n_params(RRDBNet(scale=2)) == 16_697_987 - 36_928  # one upsampling conv fewer


@pytest.mark.parametrize("scale", [2, 4])
def test_rrdbnet_tiny_output_shape(scale: int) -> None:
    model = RRDBNet(num_blocks=1, width=8, growth=4, scale=scale).eval()
    assert model.scale == scale
    with torch.no_grad():
        out = model(random_batch(1, 8, 10))
    assert out.shape == (1, 3, 8 * scale, 10 * scale) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_rrdbnet_layout_no_batchnorm_and_released_key_names() -> None:
    model = RRDBNet(num_blocks=2, width=8, growth=4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    keys = set(model.state_dict())
    for key in (
        "conv_first.weight",
        "body.1.rdb3.conv5.bias",
        "conv_body.weight",
        "conv_up1.weight",
        "conv_up2.weight",
    ):
        assert key in keys, key
    assert {"conv_hr.weight", "conv_last.weight"} <= keys
    assert "conv_up2.weight" not in RRDBNet(num_blocks=1, width=8, growth=4, scale=2).state_dict()
    # Dense connections: conv k sees the block input and the k - 1 earlier outputs.
    rdb = model.body[0].rdb1
    assert [rdb.conv1.in_channels, rdb.conv3.in_channels, rdb.conv5.in_channels] == [8, 16, 24]
    assert rdb.conv5.out_channels == 8


def test_rrdbnet_residual_scaling_is_0_2() -> None:
    x = random_batch(1, 5, 6)
    rdb = ResidualDenseBlock(8, 4)
    with torch.no_grad():
        rdb.conv5.weight.zero_()
        rdb.conv5.bias.fill_(1.0)
        torch.testing.assert_close(rdb(torch.cat([x, x, x[:, :2]], 1)), torch.cat([x, x, x[:, :2]], 1) + 0.2)
    block = RRDB(3, 4)
    with torch.no_grad():
        for dense in (block.rdb1, block.rdb2, block.rdb3):
            dense.conv5.weight.zero_()
            dense.conv5.bias.zero_()
        torch.testing.assert_close(block(x), 1.2 * x)  # identity dense blocks: x + 0.2 * x


def test_rrdbnet_output_is_not_clamped() -> None:
    model = RRDBNet(num_blocks=1, width=8, growth=4).eval()
    with torch.no_grad():
        model.conv_last.bias.fill_(5.0)
        assert model(random_batch(1, 4, 4)).min() > 1  # callers clamp, the net does not


@pytest.mark.parametrize("scale", [1, 3, 8])
def test_rrdbnet_rejects_other_scales(scale: int) -> None:
    with pytest.raises(ValueError, match=f"got {scale}"):
        RRDBNet(num_blocks=1, width=8, growth=4, scale=scale)


def test_rrdbnet_save_load_round_trip(tmp_path: Path) -> None:
    kwargs = {"scale": 4, "width": 8, "num_blocks": 1, "growth": 4}
    model = build_generator("rrdbnet", **kwargs).eval()
    path = save_weights(model, tmp_path / "rrdb.safetensors", arch="rrdbnet", arch_kwargs=kwargs)
    loaded = load_model(path)
    x = random_batch(1, 6, 7)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


# ESRGAN discriminator -------------------------------------------------------------------------------------


def test_esrgan_discriminator_parameter_count() -> None:
    # From the spec: conv0_0 (with bias) 1,792; the nine bias-free convs 65,536 + 73,728 + 262,144 + 294,912
    # + 1,048,576 + 1,179,648 + 4,194,304 + 2,359,296 + 4,194,304; nine BNs 2 x 2,880 = 5,760;
    # Linear(8192 -> 100) 819,300 + Linear(100 -> 1) 101. Total 14,499,401.
    model = ESRGANDiscriminator()
    assert n_params(model) == 14_499_401
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512, 512, 512]
    assert [c.kernel_size[0] for c in convs] == [3, 4] * 5 and [c.stride[0] for c in convs] == [1, 2] * 5
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 9
    assert [m.in_features for m in model.modules() if isinstance(m, nn.Linear)] == [512 * 4 * 4, 100]


def test_esrgan_discriminator_output_and_backward() -> None:
    model = ESRGANDiscriminator(width=8).train()
    logits = model(random_batch(3, 128, 128))
    assert logits.shape == (3, 1) and torch.isfinite(logits).all()
    nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(("h", "w"), [(96, 96), (128, 96), (256, 256)])
def test_esrgan_discriminator_rejects_other_sizes(h: int, w: int) -> None:
    model = ESRGANDiscriminator(width=4)
    with pytest.raises(ValueError, match=r"\(N, C, 128, 128\)") as info:
        model(random_batch(1, h, w))
    assert f"{h}, {w}" in str(info.value)
    with pytest.raises(ValueError, match="multiple of 32"):
        ESRGANDiscriminator(input_size=100)
    assert ESRGANDiscriminator(width=4, input_size=64).eval()(random_batch(2, 64, 64)).shape == (2, 1)


# baselines ------------------------------------------------------------------------------------------------


def test_autoencoder_shapes_and_layout() -> None:
    model = ConvAutoencoder(width=8).eval()
    assert model.scale == 4
    with torch.no_grad():
        assert model(random_batch(2, 7, 9)).shape == (2, 3, 28, 36)
    convs = (
        [m for m in model.encoder if isinstance(m, nn.Conv2d)],
        [m for m in model.decoder if isinstance(m, nn.Conv2d)],
    )
    assert [len(c) for c in convs] == [5, 5]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.encoder) == 2
    assert sum(type(m).__name__ == "BicubicUp2" for m in model.decoder) == 2
    # 3x3 convs w, w, 2w, 2w, 4w | 2w, 2w, w, w, 3 at w = 64.
    assert n_params(ConvAutoencoder()) == 1_110_403
    with pytest.raises(ValueError, match="scale 2"):
        ConvAutoencoder(scale=2)


def test_autoencoder_input_is_bicubic_pre_upsampled() -> None:
    # Encoder and decoder see a 4H x 4W image: the pools bring it to H x W, the two x2 upsamplings back.
    model = ConvAutoencoder(width=4).eval()
    seen: list[tuple[int, ...]] = []
    model.encoder.register_forward_hook(lambda _m, inp, out: seen.extend([tuple(inp[0].shape), tuple(out.shape)]))
    with torch.no_grad():
        model(random_batch(1, 6, 5))
    assert seen == [(1, 3, 24, 20), (1, 16, 6, 5)]


def test_pixelshuffle_generator() -> None:
    model = PixelShuffleGenerator(width=8, num_convs=1).eval()
    assert model.scale == 4
    with torch.no_grad():
        out = model(random_batch(2, 7, 9))
    assert out.shape == (2, 3, 28, 36) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert sum(isinstance(m, nn.PixelShuffle) for m in model.modules()) == 2
    assert n_params(PixelShuffleGenerator()) == 474_307  # 9x9 head, 4 convs, 2 x (conv 64 -> 256), 9x9 tail
    with pytest.raises(ValueError, match="scale 2"):
        PixelShuffleGenerator(scale=2)


def test_rrdb_residual_sums_stay_float32_under_autocast() -> None:
    # bf16 convs, float32 residual stream: closer to the fp32 model than summing in bf16
    import math

    from srkit.archs import rrdbnet

    torch.manual_seed(0)
    net = RRDBNet(width=32, num_blocks=4, growth=16).eval()
    x = torch.rand(1, 3, 24, 24)
    with torch.inference_mode():
        ref = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ours = net(x).float()
            block = net.body[0]
            assert block(torch.rand(1, 32, 8, 8).to(torch.bfloat16)).dtype == torch.float32
        original = rrdbnet._residual
        try:  # the same model with bf16 sums, for comparison
            rrdbnet._residual = lambda a, r: a + rrdbnet.RESIDUAL_SCALE * r  # type: ignore[assignment]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16_sums = net(x).float()
        finally:
            rrdbnet._residual = original
    err = float((ours - ref).abs().mean())
    assert err < float((bf16_sums - ref).abs().mean()) and math.isfinite(err)
    assert net.to(torch.bfloat16)(x.to(torch.bfloat16)).dtype == torch.bfloat16  # no autocast: dtype kept


def test_rrdb_dense_concatenations_stay_bf16_under_autocast() -> None:
    # the float32 residual stream is cast once per dense block, not promoted at every torch.cat (2x slower)
    net = RRDBNet(width=16, num_blocks=1, growth=8).eval()
    seen: list[torch.dtype] = []
    conv5 = net.body[0].rdb2.conv5
    conv5.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0].dtype))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.rand(1, 3, 8, 8))
    assert seen == [torch.bfloat16] and out.dtype == torch.bfloat16
    with torch.inference_mode():
        net(torch.rand(1, 3, 8, 8))
    assert seen[-1] == torch.float32  # without autocast nothing is cast
