"""ESRGAN and the reports' variants and baselines: RRDBNet, the VGG128 discriminator, the autoencoder and
PixelShuffle baselines, the new recipes (each trains 2 steps at tiny width), optimizer choice, GAN-only
generator loss, and network interpolation (library and CLI)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from srkit import fs
from srkit.archs import (
    DISCRIMINATORS,
    GENERATORS,
    ConvAutoencoder,
    ESRGANDiscriminator,
    PixelShuffleGenerator,
    RRDBNet,
    SRResNet,
    VGGFeatures,
)
from srkit.archs.rrdbnet import RRDB, ResidualDenseBlock
from srkit.cli import main
from srkit.config import Config, load_config
from srkit.interpolate import interpolate_weights
from srkit.models import build_generator, load_model, read_metadata, save_weights
from srkit.train.loop import fit, lr_plan, make_optimizer
from srkit.train.state import load_checkpoint
from testkit import smooth_rgb

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NEW_RECIPES = (
    "rrdb_psnr_x4",
    "esrgan_x4",
    "srgan_lsgan_x4",
    "autoencoder_x4",
    "vanilla_gan_x4",
    "srgan_small_x4",
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _image(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A random (n, 3, h, w) batch in [0, 1]."""
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_registry() -> None:
    assert GENERATORS["rrdbnet"] is RRDBNet
    assert GENERATORS["autoencoder"] is ConvAutoencoder
    assert GENERATORS["pixelshuffle"] is PixelShuffleGenerator
    assert DISCRIMINATORS["esrgan_vgg128"] is ESRGANDiscriminator


# RRDBNet --------------------------------------------------------------------------------------------------


def test_rrdbnet_paper_size_parameter_count() -> None:
    # conv_first 1,792 + 23 RRDBs x 3 dense blocks x 239,808 + conv_body, conv_up1, conv_up2, conv_hr 4 x 36,928
    # + conv_last 1,731 (ESRGAN's released x4 model has the same count).
    assert _n_params(RRDBNet()) == 16_697_987
    assert _n_params(ResidualDenseBlock(64, 32)) == 239_808
    assert _n_params(RRDBNet(scale=2)) == 16_697_987 - 36_928  # one upsampling conv fewer


@pytest.mark.parametrize("scale", [2, 4])
def test_rrdbnet_tiny_output_shape(scale: int) -> None:
    model = RRDBNet(num_blocks=1, width=8, growth=4, scale=scale).eval()
    assert model.scale == scale
    with torch.no_grad():
        out = model(_image(1, 8, 10))
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
    x = _image(1, 5, 6)
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
        assert model(_image(1, 4, 4)).min() > 1  # callers clamp, the net does not


@pytest.mark.parametrize("scale", [1, 3, 8])
def test_rrdbnet_rejects_other_scales(scale: int) -> None:
    with pytest.raises(ValueError, match=f"got {scale}"):
        RRDBNet(num_blocks=1, width=8, growth=4, scale=scale)


def test_rrdbnet_save_load_round_trip(tmp_path: Path) -> None:
    kwargs = {"scale": 4, "width": 8, "num_blocks": 1, "growth": 4}
    model = build_generator("rrdbnet", **kwargs).eval()
    path = save_weights(model, tmp_path / "rrdb.safetensors", arch="rrdbnet", arch_kwargs=kwargs)
    loaded = load_model(path)
    x = _image(1, 6, 7)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


# ESRGAN discriminator -------------------------------------------------------------------------------------


def test_esrgan_discriminator_parameter_count() -> None:
    # From the spec: conv0_0 (with bias) 1,792; the nine bias-free convs 65,536 + 73,728 + 262,144 + 294,912
    # + 1,048,576 + 1,179,648 + 4,194,304 + 2,359,296 + 4,194,304; nine BNs 2 x 2,880 = 5,760;
    # Linear(8192 -> 100) 819,300 + Linear(100 -> 1) 101. Total 14,499,401.
    model = ESRGANDiscriminator()
    assert _n_params(model) == 14_499_401
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512, 512, 512]
    assert [c.kernel_size[0] for c in convs] == [3, 4] * 5 and [c.stride[0] for c in convs] == [1, 2] * 5
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 9
    assert [m.in_features for m in model.modules() if isinstance(m, nn.Linear)] == [512 * 4 * 4, 100]


def test_esrgan_discriminator_output_and_backward() -> None:
    model = ESRGANDiscriminator(width=8).train()
    logits = model(_image(3, 128, 128))
    assert logits.shape == (3, 1) and torch.isfinite(logits).all()
    nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(("h", "w"), [(96, 96), (128, 96), (256, 256)])
def test_esrgan_discriminator_rejects_other_sizes(h: int, w: int) -> None:
    model = ESRGANDiscriminator(width=4)
    with pytest.raises(ValueError, match=r"\(N, C, 128, 128\)") as info:
        model(_image(1, h, w))
    assert f"{h}, {w}" in str(info.value)
    with pytest.raises(ValueError, match="multiple of 32"):
        ESRGANDiscriminator(input_size=100)
    assert ESRGANDiscriminator(width=4, input_size=64).eval()(_image(2, 64, 64)).shape == (2, 1)


# baselines ------------------------------------------------------------------------------------------------


def test_autoencoder_shapes_and_layout() -> None:
    model = ConvAutoencoder(width=8).eval()
    assert model.scale == 4
    with torch.no_grad():
        assert model(_image(2, 7, 9)).shape == (2, 3, 28, 36)
    convs = (
        [m for m in model.encoder if isinstance(m, nn.Conv2d)],
        [m for m in model.decoder if isinstance(m, nn.Conv2d)],
    )
    assert [len(c) for c in convs] == [5, 5]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.encoder) == 2
    assert sum(type(m).__name__ == "BicubicUp2" for m in model.decoder) == 2
    # 3x3 convs w, w, 2w, 2w, 4w | 2w, 2w, w, w, 3 at w = 64.
    assert _n_params(ConvAutoencoder()) == 1_110_403
    with pytest.raises(ValueError, match="scale 2"):
        ConvAutoencoder(scale=2)


def test_autoencoder_input_is_bicubic_pre_upsampled() -> None:
    # Encoder and decoder see a 4H x 4W image: the pools bring it to H x W, the two x2 upsamplings back.
    model = ConvAutoencoder(width=4).eval()
    seen: list[tuple[int, ...]] = []
    model.encoder.register_forward_hook(lambda _m, inp, out: seen.extend([tuple(inp[0].shape), tuple(out.shape)]))
    with torch.no_grad():
        model(_image(1, 6, 5))
    assert seen == [(1, 3, 24, 20), (1, 16, 6, 5)]


def test_pixelshuffle_generator() -> None:
    model = PixelShuffleGenerator(width=8, num_convs=1).eval()
    assert model.scale == 4
    with torch.no_grad():
        out = model(_image(2, 7, 9))
    assert out.shape == (2, 3, 28, 36) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert sum(isinstance(m, nn.PixelShuffle) for m in model.modules()) == 2
    assert _n_params(PixelShuffleGenerator()) == 474_307  # 9x9 head, 4 convs, 2 x (conv 64 -> 256), 9x9 tail
    with pytest.raises(ValueError, match="scale 2"):
        PixelShuffleGenerator(scale=2)


# recipes --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """train/: 3 images large enough for ESRGAN's 128 px crops; val/: 2 of 48x48."""
    root = tmp_path_factory.mktemp("images")
    train, val = root / "train", root / "val"
    train.mkdir()
    val.mkdir()
    for i, (h, w) in enumerate([(136, 136), (144, 160), (128, 140)]):
        Image.fromarray(smooth_rgb(h, w, i)).save(train / f"img{i}.png")
    for i in range(2):
        Image.fromarray(smooth_rgb(48, 48, 10 + i)).save(val / f"val{i}.png")
    return {"train": train, "val": val}


TINY_G = {
    "rrdbnet": {"width": 8, "num_blocks": 1, "growth": 4},
    "srresnet": {"width": 8, "num_blocks": 1},
    "autoencoder": {"width": 4},
    "pixelshuffle": {"width": 8, "num_convs": 1},
}
TINY_D = {"srgan": {"channels": [8, 8, 16, 16], "hidden": 16}, "esrgan_vgg128": {"width": 4}}


def _recipe(name: str, out_dir: Path, images: dict[str, Path], data_dir: Path | None = None, **extra: Any) -> Config:
    """A shipped recipe shrunk by overrides: tiny widths, tiny images, 2 steps; VGG16 at a shallow layer."""
    recipe = load_config(CONFIGS / f"{name}.yaml")
    overrides: dict[str, Any] = {
        "out_dir": str(out_dir),
        "data.train": [str(images["train"])],
        "data.val": str(images["val"]),
        "data.batch_size": 2,
        "model.args": TINY_G[recipe.model.arch],
        "train.device": "cpu",
        "train.lpips_net": "none",
        "train.tensorboard": False,
        "train.steps": 2,
        "train.log_every": 1,
        "train.val_every": 100,
        "train.save_every": 100,
    }
    if recipe.discriminator.arch is not None:
        overrides["discriminator.args"] = TINY_D[recipe.discriminator.arch]
    if recipe.loss.perceptual_weight > 0:
        # VGG19 weights are not offline: VGG16 from the data folder, cut the way the recipe cuts (conv / relu).
        assert data_dir is not None, name
        kind = "conv" if (recipe.loss.perceptual_layer or "relu").startswith("conv") else "relu"
        overrides.update({"data_dir": str(data_dir), "loss.perceptual_arch": "vgg16"})
        overrides["loss.perceptual_layer"] = f"{kind}2_2"
    overrides.update({k.replace("__", "."): v for k, v in extra.items()})
    return load_config(CONFIGS / f"{name}.yaml", [f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def _history(run: Path) -> list[dict[str, str]]:
    import csv

    with (run / "history.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _check_run(run: Path, *, pixel: bool, percep: bool, adv: bool) -> list[dict[str, str]]:
    """Two finite rows whose loss_g is the sum of exactly the expected terms."""
    rows = _history(run)
    assert [int(r["step"]) for r in rows] == [1, 2]
    for r in rows:
        present = {k: r[k] != "" for k in ("l_pix", "l_percep", "l_adv", "loss_d")}
        assert present == {"l_pix": pixel, "l_percep": percep, "l_adv": adv, "loss_d": adv}, r
        parts = [float(r[k]) for k in ("l_pix", "l_percep", "l_adv") if r[k] != ""]
        assert all(math.isfinite(v) for v in parts) and math.isfinite(float(r["loss_g"]))
        assert float(r["loss_g"]) == pytest.approx(sum(parts), rel=1e-5)
    assert (run / "checkpoints" / "best_psnr.safetensors").is_file()
    return rows


@pytest.mark.parametrize("name", NEW_RECIPES)
def test_recipe_loads(name: str) -> None:
    config = load_config(CONFIGS / f"{name}.yaml")
    assert config.name == name and config.model.scale == 4
    build_generator(config.model.arch, scale=4, **TINY_G[config.model.arch])


@pytest.fixture(scope="module")
def rrdb_psnr_run(tmp_path_factory: pytest.TempPathFactory, images: dict[str, Path]) -> Path:
    """rrdb_psnr_x4 shrunk: 2 steps of a 1-block, 8-wide RRDBNet on 128 px crops."""
    return fit(_recipe("rrdb_psnr_x4", tmp_path_factory.mktemp("runs"), images))


@pytest.fixture(scope="module")
def esrgan_run(
    tmp_path_factory: pytest.TempPathFactory, images: dict[str, Path], rrdb_psnr_run: Path, data_dir: Path
) -> Path:
    """esrgan_x4 shrunk, initialised from the shrunk rrdb_psnr run as the recipe says."""
    init = rrdb_psnr_run / "checkpoints" / "best_psnr.safetensors"
    return fit(_recipe("esrgan_x4", tmp_path_factory.mktemp("runs"), images, data_dir, model__init_from=str(init)))


def test_rrdb_psnr_recipe_trains(rrdb_psnr_run: Path) -> None:
    _check_run(rrdb_psnr_run, pixel=True, percep=False, adv=False)
    meta = read_metadata(rrdb_psnr_run / "checkpoints" / "best_psnr.safetensors")
    assert meta["arch"] == "rrdbnet"
    assert json.loads(meta["arch_kwargs"]) == {"scale": 4, **TINY_G["rrdbnet"]}


def test_esrgan_recipe_trains_from_the_psnr_run(esrgan_run: Path, rrdb_psnr_run: Path) -> None:
    rows = _check_run(esrgan_run, pixel=True, percep=True, adv=True)
    assert all(float(r["lr_g"]) == pytest.approx(1e-4) and float(r["lr_d"]) == pytest.approx(1e-4) for r in rows)
    ckpt = load_checkpoint(esrgan_run / "checkpoints" / "latest.pt")
    assert ckpt["config"]["discriminator"]["arch"] == "esrgan_vgg128"
    assert ckpt["config"]["loss"]["perceptual_layer"] == "conv2_2"


@pytest.mark.parametrize("name", ["srgan_lsgan_x4", "autoencoder_x4", "vanilla_gan_x4", "srgan_small_x4"])
def test_recipe_trains_two_steps(tmp_path: Path, images: dict[str, Path], data_dir: Path, name: str) -> None:
    extra: dict[str, Any] = {}
    if name == "srgan_lsgan_x4":  # stage 2: start from (tiny, untrained) stage-1 weights, as the recipe does
        kwargs = {"scale": 4, **TINY_G["srresnet"]}
        init = save_weights(SRResNet(**kwargs), tmp_path / "init.safetensors", arch="srresnet", arch_kwargs=kwargs)
        extra["model__init_from"] = str(init)
    config = _recipe(name, tmp_path, images, data_dir, **extra)
    run = fit(config)
    loss = config.loss
    _check_run(run, pixel=loss.pixel_weight > 0, percep=loss.perceptual_weight > 0, adv=loss.adversarial_weight > 0)


# recipe settings ------------------------------------------------------------------------------------------


def _get(config: Config, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


RECIPE_SETTINGS: dict[str, dict[str, Any]] = {
    "rrdb_psnr_x4": {
        "model.arch": "rrdbnet",
        "model.args": {"width": 64, "num_blocks": 23, "growth": 32},
        "discriminator.arch": None,
        "loss.pixel": "l1",
        "loss.pixel_weight": 1.0,
        "optim.lr_g": 2e-4,
        "optim.scheduler": "multistep",
        "optim.milestones": [200_000, 400_000, 600_000, 800_000],
        "optim.gamma": 0.5,
        "data.batch_size": 16,
        "data.gt_size": 128,
    },
    "esrgan_x4": {
        "model.arch": "rrdbnet",
        "model.init_from": "runs/rrdb_psnr_x4/checkpoints/best_psnr.safetensors",
        "discriminator.arch": "esrgan_vgg128",
        "loss.pixel": "l1",
        "loss.pixel_weight": 0.01,
        "loss.perceptual_weight": 1.0,
        "loss.perceptual_arch": "vgg19",
        "loss.perceptual_layer": "conv5_4",
        "loss.perceptual_criterion": "l1",
        "loss.adversarial": "ragan",
        "loss.adversarial_weight": 0.005,
        "optim.lr_g": 1e-4,
        "optim.lr_d": 1e-4,
        "optim.milestones": [50_000, 100_000, 200_000, 300_000],
        "optim.gamma": 0.5,
        "data.gt_size": 128,
        "data.batch_size": 16,
    },
    "srgan_lsgan_x4": {
        "model.arch": "srresnet",
        "discriminator.arch": "srgan",
        "loss.adversarial": "lsgan",
        "loss.perceptual_arch": "vgg19",
        "loss.perceptual_criterion": "l1",
        "optim.lr_g": 2e-4,
        "optim.lr_d": 2e-4,
        "data.batch_size": 4,
        "train.save_every": 40 * (340 // 4),  # 40 epochs of 340 images at batch 4
    },
    "autoencoder_x4": {
        "model.arch": "autoencoder",
        "loss.pixel": "mse",
        "optim.name": "adamw",
        "optim.lr_g": 1e-4,
    },
    "vanilla_gan_x4": {
        "model.arch": "pixelshuffle",
        "model.init_from": None,
        "discriminator.arch": "srgan",
        "loss.pixel_weight": 0.0,
        "loss.perceptual_weight": 0.0,
        "loss.adversarial": "vanilla",
        "loss.adversarial_weight": 1.0,
    },
    "srgan_small_x4": {
        "model.arch": "srresnet",
        "model.args": {"width": 64, "num_blocks": 6},
        "discriminator.arch": "srgan",
        "loss.pixel_weight": 1.0,
        "loss.perceptual_weight": 0.006,
        "loss.adversarial": "vanilla",
        "loss.adversarial_weight": 0.001,
    },
}


@pytest.mark.parametrize("name", NEW_RECIPES)
def test_recipe_settings(name: str) -> None:
    config = load_config(CONFIGS / f"{name}.yaml")
    for key, expected in RECIPE_SETTINGS[name].items():
        got = _get(config, key)
        assert got == (pytest.approx(expected) if isinstance(expected, float) else expected), key


def test_psnr_schedule_halves_every_200k() -> None:
    config = load_config(CONFIGS / "rrdb_psnr_x4.yaml")
    plan = lr_plan(config.optim, base_lr=2e-4, total=config.train.steps)
    factors = [plan(s) for s in (0, 199_999, 200_000, 400_000, 800_000, 999_999)]
    assert factors == [1.0, 1.0, 0.5, 0.25, 0.0625, 0.0625]


def test_esrgan_perceptual_layer_is_before_activation() -> None:
    config = load_config(CONFIGS / "esrgan_x4.yaml")
    vgg = VGGFeatures(arch=config.loss.perceptual_arch, layer=config.loss.perceptual_layer, weights=None)
    assert isinstance(vgg.features[-1], nn.Conv2d)  # the conv5_4 output, no ReLU after it
    assert sum(isinstance(m, nn.Conv2d) for m in vgg.features) == 16  # all of VGG19's convs


def test_srgan_lsgan_epoch_arithmetic(data_dir: Path) -> None:
    # The recipe's comment: 340 usable training images (>= the 96 px crop) / batch 4 = 85 steps per epoch.
    config = load_config(CONFIGS / "srgan_lsgan_x4.yaml")
    usable = 0
    for path in fs.list_images([data_dir / folder for folder in config.data.train]):
        with Image.open(path) as im:  # the header only: no decoding
            usable += min(im.size) >= config.data.gt_size
    assert usable == 340
    assert config.train.save_every == 40 * usable // config.data.batch_size == 3400


# config and trainer additions -----------------------------------------------------------------------------


def test_make_optimizer_adam_and_adamw() -> None:
    net = nn.Linear(2, 2)
    o = load_config(CONFIGS / "autoencoder_x4.yaml").optim
    adamw = make_optimizer(net.parameters(), name=o.name, lr=1e-4, betas=o.betas, weight_decay=o.weight_decay)
    assert type(adamw) is torch.optim.AdamW
    assert adamw.param_groups[0]["weight_decay"] == pytest.approx(0.01) and adamw.param_groups[0]["lr"] == 1e-4
    o = load_config(None).optim
    adam = make_optimizer(net.parameters(), name=o.name, lr=3e-4, betas=o.betas, weight_decay=o.weight_decay)
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["weight_decay"] == 0.0
    with pytest.raises(ValueError, match=r"optim\.name"):
        load_config(None, ["optim.name=sgd"])


def test_loss_config_errors() -> None:
    no_loss = ["loss.pixel_weight=0"]
    with pytest.raises(ValueError, match="generator loss is empty"):
        load_config(None, no_loss)
    with pytest.raises(ValueError, match=r"loss\.pixel_weight.*>= 0"):
        load_config(None, ["loss.pixel_weight=-1"])
    with pytest.raises(ValueError, match="'relu5_4' is not a vgg16 layer") as info:
        load_config(None, ["loss.perceptual_arch=vgg16", "loss.perceptual_layer=relu5_4"])
    assert "conv5_3" in str(info.value)
    with pytest.raises(ValueError, match=r"data\.gt_size must be 128, got 96"):
        load_config(None, ["discriminator.arch=esrgan_vgg128"])
    ok = load_config(None, ["discriminator.arch=esrgan_vgg128", "data.gt_size=128"])
    assert ok.discriminator.arch == "esrgan_vgg128"


# network interpolation ------------------------------------------------------------------------------------

TINY_SRRESNET = {"scale": 4, "width": 8, "num_blocks": 1}


def _saved(path: Path, seed: int, arch: str = "srresnet", **kwargs: Any) -> Path:
    """A tiny generator with seed-dependent weights and BN counters, saved as srkit safetensors."""
    arch_kwargs = kwargs or TINY_SRRESNET
    torch.manual_seed(seed)
    model = build_generator(arch, **arch_kwargs)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("num_batches_tracked"):
                buf.fill_(10 + seed)
            elif name.endswith("running_mean"):
                buf.normal_()
    return save_weights(model, path, arch=arch, arch_kwargs=arch_kwargs)


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return _saved(tmp_path / "psnr.safetensors", 1), _saved(tmp_path / "gan.safetensors", 2)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_interpolate_ends_are_exact(tmp_path: Path, pair: tuple[Path, Path], alpha: float) -> None:
    a, b = pair
    out = interpolate_weights(a, b, alpha, tmp_path / "out.safetensors")
    got, expected, sb = load_file(str(out)), load_file(str(b if alpha else a)), load_file(str(b))
    assert got.keys() == expected.keys()
    for key in expected:
        # Every float tensor is exactly the chosen end's; integer counters always come from B (by design).
        want = expected[key] if expected[key].is_floating_point() else sb[key]
        assert got[key].dtype == want.dtype and torch.equal(got[key], want), key


def test_interpolate_half_is_the_mean(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    a, b = pair
    out = interpolate_weights(a, b, 0.5, tmp_path / "mid.safetensors")
    got, sa, sb = load_file(str(out)), load_file(str(a)), load_file(str(b))
    for key, value in got.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (sa[key] + sb[key]) / 2)
        else:
            assert key.endswith("num_batches_tracked") and torch.equal(value, sb[key])  # counters from B
    meta = read_metadata(out)
    assert meta["arch"] == "srresnet" and json.loads(meta["arch_kwargs"]) == TINY_SRRESNET
    assert meta["interpolated_a"] == str(a) and meta["interpolated_b"] == str(b) and meta["alpha"] == "0.5"
    with torch.no_grad():
        assert load_model(out)(_image(1, 5, 6)).shape == (1, 3, 20, 24)


def test_interpolate_errors(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    a, b = pair
    rrdb = _saved(tmp_path / "rrdb.safetensors", 3, "rrdbnet", scale=4, **TINY_G["rrdbnet"])
    with pytest.raises(ValueError, match="different architectures") as info:
        interpolate_weights(a, rrdb, 0.5, tmp_path / "x.safetensors")
    assert str(a) in str(info.value) and str(rrdb) in str(info.value)
    wider = _saved(tmp_path / "wide.safetensors", 4, "srresnet", scale=4, width=16, num_blocks=1)
    with pytest.raises(ValueError, match="'width': 16"):
        interpolate_weights(a, wider, 0.5, tmp_path / "x.safetensors")
    for alpha in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="alpha must be in"):
            interpolate_weights(a, b, alpha, tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError, match="nothere"):
        interpolate_weights(a, tmp_path / "nothere.safetensors", 0.5, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_cli_interpolate(tmp_path: Path, pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    a, b = pair
    out = tmp_path / "interp.safetensors"
    assert main(["interpolate", str(a), str(b), "--alpha", "0.8", "-o", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert read_metadata(out)["alpha"] == "0.8"
    sa, sb, got = load_file(str(a)), load_file(str(b)), load_file(str(out))
    torch.testing.assert_close(got["head.0.weight"], 0.2 * sa["head.0.weight"] + 0.8 * sb["head.0.weight"])

    assert main(["interpolate", str(a), str(b), "--alpha", "0.3", "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["interpolate", str(a), str(b), "--alpha", "0.3", "-o", str(out), "--overwrite"]) == 0
    assert read_metadata(out)["alpha"] == "0.3"

    rrdb = _saved(tmp_path / "rrdb.safetensors", 3, "rrdbnet", scale=4, **TINY_G["rrdbnet"])
    capsys.readouterr()
    assert main(["interpolate", str(a), str(rrdb), "-o", str(tmp_path / "bad.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "srkit interpolate: error:" in err and "different architectures" in err and "Traceback" not in err
    assert main(["interpolate", str(a), str(b), "--alpha", "2", "-o", str(tmp_path / "bad.safetensors")]) == 2
    assert "alpha must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "bad.safetensors").exists()


def test_interpolate_esrgan_with_its_psnr_model(tmp_path: Path, rrdb_psnr_run: Path, esrgan_run: Path) -> None:
    # The ESRGAN recipe's last step: blend the PSNR model (A) and its GAN fine-tune (B).
    psnr = rrdb_psnr_run / "checkpoints" / "best_psnr.safetensors"
    gan = esrgan_run / "checkpoints" / "best_psnr.safetensors"
    out = tmp_path / "esrgan_interp.safetensors"
    assert main(["interpolate", str(psnr), str(gan), "--alpha", "0.8", "-o", str(out)]) == 0
    model = load_model(out)
    assert isinstance(model, RRDBNet)
    sa, sb = load_file(str(psnr)), load_file(str(gan))
    for key, value in load_file(str(out)).items():
        torch.testing.assert_close(value, 0.2 * sa[key] + 0.8 * sb[key])
    with torch.no_grad():
        assert model(_image(1, 6, 5)).shape == (1, 3, 24, 20)
