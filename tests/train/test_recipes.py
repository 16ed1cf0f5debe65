"""The reports' recipes: each loads, trains two steps at tiny width, holds the settings its report gives; the
ESRGAN ladder end to end (PSNR model, GAN fine-tune, interpolation); optimizer choice and loss checks."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from srkit.archs import (
    RRDBNet,
    SRResNet,
    VGGFeatures,
)
from srkit.cli import main
from srkit.config import Config, load_config
from srkit.models import build_generator, load_model, read_metadata, save_weights
from srkit.train.loop import fit, lr_plan, make_optimizer
from srkit.train.state import load_checkpoint
from testkit import random_batch, smooth_rgb

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
NEW_RECIPES = (
    "rrdb_psnr_x4",
    "esrgan_x4",
    "srgan_lsgan_x4",
    "autoencoder_x4",
    "vanilla_gan_x4",
    "srgan_small_x4",
    "srgan_ra_x4",
    "srgan_unet_ldl_x4",
    "compact_x4",
    "srgan_percep_x4",
    "srgan_normfeat_x4",
    "srresnet_blur_x4",
    "srgan_freqsep_x4",
    "esrgan_small_x4",
)


pytestmark = pytest.mark.usefixtures("one_thread")


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
    "compact": {"width": 8, "num_convs": 2},
}
TINY_D = {"srgan": {"channels": [8, 8, 16, 16], "hidden": 16}, "esrgan_vgg128": {"width": 4}, "unet_sn": {"width": 4}}


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
        if recipe.loss.perceptual_layers:  # several weighted taps: two shallow ones, the recipe's first weight
            first = next(iter(recipe.loss.perceptual_layers.values()))
            overrides["loss.perceptual_layers"] = {"conv1_2": first, "conv2_2": 1.0}
        else:
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
        parts = [float(r[k]) for k in ("l_pix", "l_low", "l_percep", "l_adv", "l_artif") if r[k] != ""]
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


def test_esrgan_small_recipe_trains_from_the_psnr_run(
    tmp_path: Path, images: dict[str, Path], data_dir: Path, rrdb_psnr_run: Path
) -> None:
    init = rrdb_psnr_run / "checkpoints" / "best_psnr.safetensors"
    config = _recipe("esrgan_small_x4", tmp_path, images, data_dir, model__init_from=str(init), optim__d_warmup_steps=0)
    rows = _check_run(fit(config), pixel=True, percep=True, adv=True)
    assert all(r["l_low"] == "" for r in rows)
    ckpt = load_checkpoint(tmp_path / "esrgan_small_x4" / "checkpoints" / "latest.pt")
    assert ckpt["config"]["discriminator"]["arch"] == "srgan"
    assert ckpt["config"]["model"]["init_from"] == str(init)


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


# RRDBNet's two stages have their own module-scoped runs above
@pytest.mark.parametrize("name", [r for r in NEW_RECIPES if not r.startswith(("rrdb_psnr", "esrgan"))])
def test_recipe_trains_two_steps(tmp_path: Path, images: dict[str, Path], data_dir: Path, name: str) -> None:
    extra: dict[str, Any] = {}
    if name in (
        "srgan_lsgan_x4",
        "srgan_ra_x4",
        "srgan_unet_ldl_x4",
        "srgan_percep_x4",
        "srgan_normfeat_x4",
        "srresnet_blur_x4",
        "srgan_freqsep_x4",
    ):
        # stage 2: start from (tiny, untrained) stage-1 weights, as the recipe does
        kwargs = {"scale": 4, **TINY_G["srresnet"]}
        init = save_weights(SRResNet(**kwargs), tmp_path / "init.safetensors", arch="srresnet", arch_kwargs=kwargs)
        extra["model__init_from"] = str(init)
    if name == "srgan_freqsep_x4":
        extra["optim__d_warmup_steps"] = 0  # the recipe's D-only start would take both steps
    if name == "srgan_unet_ldl_x4":
        extra["train__accumulate"] = 2  # the batch of 2 as two micro-batches: the loop passes it through
    config = _recipe(name, tmp_path, images, data_dir, **extra)
    run = fit(config)
    loss = config.loss
    rows = _check_run(
        run, pixel=loss.pixel_weight > 0, percep=loss.perceptual_weight > 0, adv=loss.adversarial_weight > 0
    )
    assert all((r["l_artif"] != "") == (loss.artifact_weight > 0) for r in rows)
    assert all((r["l_low"] != "") == (loss.lowpass_weight > 0) for r in rows)


# recipe settings ------------------------------------------------------------------------------------------


def _get(config: Config, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


@dataclass(frozen=True)
class Published:
    """What a source says a recipe must be: the citation, and only the settings it states (a rule such as
    "halved every 2e5 updates" is written as the rule, not as the YAML's list)."""

    source: str
    settings: dict[str, Any]


# ESRGAN's generator loss (eq. 3: L_percep + lambda L_Ra + eta L_1, lambda 5e-3, eta 1e-2; sec. 3.3: VGG19 conv5_4
# before activation, L1) and both learning rates (sec. 4.1): shared by esrgan_x4 and srgan_ra_x4.
ESRGAN_LOSS: dict[str, Any] = {
    "loss.pixel": "l1",
    "loss.pixel_weight": 1e-2,
    "loss.perceptual_weight": 1.0,
    "loss.perceptual_arch": "vgg19",
    "loss.perceptual_layer": "conv5_4",
    "loss.perceptual_criterion": "l1",
    "loss.adversarial": "ragan",
    "loss.adversarial_weight": 5e-3,
    "optim.lr_g": 1e-4,
    "optim.lr_d": 1e-4,
}


# Real-ESRGAN's generator loss (sec. 4.1: L1 1.0; perceptual 1.0 as L1 on VGG19 conv1_2/2_2/3_4/4_4/5_4 before
# activation, weighted 0.1/0.1/1/1/1) with ESRGAN's RaGAN at 5e-3: shared by srgan_percep, srgan_freqsep, esrgan_small.
PERCEP_LOSS: dict[str, Any] = {
    "loss.pixel": "l1",
    "loss.pixel_weight": 1.0,
    "loss.perceptual_weight": 1.0,
    "loss.perceptual_criterion": "l1",
    "loss.perceptual_layers": {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0},
    "loss.adversarial": "ragan",
    "loss.adversarial_weight": 0.005,
}

# Each recipe checked against its source, not against a copy of its YAML: a value here is one the paper or
# report states. Settings the sources leave open (init paths, validation, step counts) are not listed.
PUBLISHED: dict[str, Published] = {
    "rrdb_psnr_x4": Published(
        "ESRGAN (Wang et al. 2018) sec. 4.1: RRDBNet, 23 blocks of 64 channels, growth 32; L1; batch 16 of 128x128 "
        "HR crops; Adam lr 2e-4 decayed by 2 every 2e5 mini-batch updates; no discriminator in stage 1",
        {
            "model.arch": "rrdbnet",
            "model.args": {"width": 64, "num_blocks": 23, "growth": 32},
            "discriminator.arch": None,
            "loss.pixel": "l1",
            "optim.lr_g": 2e-4,
            "optim.scheduler": "multistep",
            "optim.milestones": [k * 200_000 for k in range(1, 5)],
            "optim.gamma": 0.5,
            "data.batch_size": 16,
            "data.gt_size": 128,
        },
    ),
    "esrgan_x4": Published(
        "ESRGAN sec. 3.4 eq. 3 (L_G = L_percep + lambda L_Ra + eta L_1, lambda 5e-3, eta 1e-2), sec. 3.3 "
        "(VGG19 conv5_4 before activation, L1), sec. 4.1 (lr 1e-4 halved at 50k, 100k, 200k, 300k; the "
        "VGG-style discriminator on 128x128 crops, batch 16)",
        {
            "model.arch": "rrdbnet",
            "discriminator.arch": "esrgan_vgg128",
            **ESRGAN_LOSS,
            "optim.milestones": [k * 1_000 for k in (50, 100, 200, 300)],
            "optim.gamma": 0.5,
            "data.gt_size": 128,
            "data.batch_size": 16,
        },
    ),
    "srgan_lsgan_x4": Published(
        "the replication report: SRResNet + the SRGAN discriminator, LSGAN loss, L1 on VGG19 features, lr 2e-4, "
        "batch 4, HR resized to 256x256 and used whole, a checkpoint every 40 epochs (an epoch: the 314 training "
        "images of the 92% split at batch 4)",
        {
            "model.arch": "srresnet",
            "discriminator.arch": "srgan",
            "loss.adversarial": "lsgan",
            "loss.perceptual_arch": "vgg19",
            "loss.perceptual_criterion": "l1",
            "optim.lr_g": 2e-4,
            "optim.lr_d": 2e-4,
            "data.batch_size": 4,
            "data.hr_size": (256, 256),
            "data.gt_size": 256,
            "train.save_every": 40 * 314 // 4,
        },
    ),
    "autoencoder_x4": Published(
        "the image-refinement report's baseline: a convolutional autoencoder, MSE loss, AdamW lr 1e-4",
        {"model.arch": "autoencoder", "loss.pixel": "mse", "optim.name": "adamw", "optim.lr_g": 1e-4},
    ),
    "vanilla_gan_x4": Published(
        "the image-refinement report's vanilla GAN: the adversarial (BCE) loss alone, from scratch",
        {
            "model.init_from": None,
            "discriminator.arch": "srgan",
            "loss.pixel_weight": 0.0,
            "loss.perceptual_weight": 0.0,
            "loss.adversarial": "vanilla",
        },
    ),
    "srgan_small_x4": Published(
        "the image-refinement report's SRGAN with 6 residual blocks; SRGAN's losses (Ledig et al. 2017 sec. 2.2, "
        "with the brief's 1.0 L1 + 0.006 VGG-MSE + 0.001 adversarial)",
        {
            "model.arch": "srresnet",
            "model.args": {"width": 64, "num_blocks": 6},
            "discriminator.arch": "srgan",
            "loss.pixel_weight": 1.0,
            "loss.perceptual_weight": 6e-3,
            "loss.perceptual_criterion": "mse",
            "loss.adversarial": "vanilla",
            "loss.adversarial_weight": 1e-3,
        },
    ),
    "compact_x4": Published(
        "Real-ESRGAN's SRVGGNetCompact (Wang et al. 2021, the realesr-general models): plain 3x3 convs with PReLU "
        "at LR size, a pixel shuffle and the nearest-upsampled input added; trained with L1 only",
        {"model.arch": "compact", "discriminator.arch": None, "loss.pixel": "l1", "loss.perceptual_weight": 0.0},
    ),
    "srgan_ra_x4": Published(
        "ESRGAN's generator loss (eq. 3: 1.0 L1 on VGG19 conv5_4 before activation, 5e-3 RaGAN, 1e-2 pixel L1) "
        "on SRResNet-16 from the stage-1 SRResNet; Adam lr 1e-4 for both networks (sec. 4.1)",
        {
            "model.arch": "srresnet",
            "model.args": {"width": 64, "num_blocks": 16},
            **ESRGAN_LOSS,
        },
    ),
    "srgan_percep_x4": Published(
        "Real-ESRGAN sec. 4.1 (L1 1.0, perceptual 1.0 as L1 on VGG19 conv1_2/2_2/3_4/4_4/5_4 before activation "
        "weighted 0.1/0.1/1/1/1) with ESRGAN's relativistic GAN (weight 0.005) on SRResNet-16 from stage 1",
        {
            "model.arch": "srresnet",
            "model.init_from": "srresnet",
            **PERCEP_LOSS,
        },
    ),
    "srgan_freqsep_x4": Published(
        "srgan_percep's loss plus frequency separation (Fritsche, Gu and Timofte, ICCVW 2019): a pixel L1 on "
        "Gaussian low-passed SR and HR, so fidelity is asked of the low band and texture is left to VGG and GAN",
        {
            "model.arch": "srresnet",
            "model.init_from": "srgan_percep",
            **PERCEP_LOSS,
            "loss.lowpass_weight": 10.0,
            "loss.lowpass_sigma": 1.0,
        },
    ),
    "esrgan_small_x4": Published(
        "ESRGAN's stage 2 (RRDBNet from its L1 stage, relativistic average GAN at 0.005, VGG features before "
        "activation with an L1 distance, lr 1e-4, batch 16) with Real-ESRGAN's multi-layer feature weights and "
        "pixel weight 1 (Wang et al. 2021, Real-ESRGAN sec. 4.1)",
        {
            "model.arch": "rrdbnet",
            **PERCEP_LOSS,
            "optim.lr_g": 1e-4,
            "optim.lr_d": 1e-4,
            "data.batch_size": 16,
        },
    ),
    "srgan_normfeat_x4": Published(
        "Zhang et al. 2018 (LPIPS paper) sec. 3: the unlearned deep-feature distance, unit-normalised over channels, "
        "squared L2, averaged over space, summed over VGG relu1_2..relu5_x with weight 1; ESRGAN's RaGAN at 0.005",
        {
            "model.arch": "srresnet",
            "loss.pixel_weight": 1.0,
            "loss.perceptual_weight": 1.0,
            "loss.perceptual_criterion": "mse",
            "loss.perceptual_normalize": True,
            "loss.perceptual_layers": {f"relu{i}": 1.0 for i in ("1_2", "2_2", "3_4", "4_4", "5_4")},
            "loss.adversarial": "ragan",
            "loss.adversarial_weight": 0.005,
        },
    ),
    "srgan_unet_ldl_x4": Published(
        "Real-ESRGAN sec. 3.3 and 4.1 (U-Net discriminator with spectral norm, GAN weight 0.1, perceptual 1.0, "
        "Adam betas (0.9, 0.99), lr 1e-4, EMA 0.999) with LDL's artifact loss at weight 1 (Liang et al. 2022)",
        {
            "discriminator.arch": "unet_sn",
            "loss.adversarial": "vanilla",
            "loss.adversarial_weight": 0.1,
            "loss.perceptual_weight": 1.0,
            "loss.artifact_weight": 1.0,
            "optim.betas": (0.9, 0.99),
            "optim.lr_g": 1e-4,
            "train.ema_decay": 0.999,
        },
    ),
    "srresnet_blur_x4": Published(
        "the image-refinement report's second degradation: Gaussian blur of radius 1.5 (PIL's radius is the "
        "standard deviation), then bicubic x4; the SRResNet-16 generator with the L1 content loss",
        {
            "model.arch": "srresnet",
            "model.args": {"width": 64, "num_blocks": 16},
            "data.degradation": "blur_bicubic",
            "loss.pixel": "l1",
            "discriminator.arch": None,
        },
    ),
}


@pytest.mark.parametrize("name", NEW_RECIPES)
def test_recipe_settings(name: str) -> None:
    config = load_config(CONFIGS / f"{name}.yaml")
    spec = PUBLISHED[name]
    for key, expected in spec.settings.items():
        got = _get(config, key)
        assert got == (pytest.approx(expected) if isinstance(expected, float) else expected), f"{key} ({spec.source})"


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
    # The recipe's comment: every HR image is resized to 256x256 (none is too small), the split keeps 314 of them
    # for training, so an epoch is 314 / 4 = 78.5 steps and 40 epochs are 3140 steps.
    from srkit.data.pipeline import gather_sources

    config = load_config(CONFIGS / "srgan_lsgan_x4.yaml")
    d = config.data
    assert d.hr_size == (256, 256) and d.gt_size == 256
    sources = gather_sources(d.train, d.val, data_dir=data_dir, split_ratios=d.split, split_seed=d.split_seed)
    assert len(sources.train_files) == 314
    assert config.train.save_every == 40 * len(sources.train_files) // d.batch_size == 3140


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
    only_lowpass = load_config(None, ["loss.pixel_weight=0", "loss.lowpass_weight=1"])
    assert only_lowpass.loss.lowpass_weight == 1.0  # the low-passed pixel term alone is a loss
    with pytest.raises(ValueError, match=r"loss\.lowpass_sigma.: must be > 0"):
        load_config(None, ["loss.lowpass_sigma=0"])
    with pytest.raises(ValueError, match=r"loss\.pixel_weight.*>= 0"):
        load_config(None, ["loss.pixel_weight=-1"])
    with pytest.raises(ValueError, match="'relu5_4' is not a vgg16 layer") as info:
        load_config(None, ["loss.perceptual_arch=vgg16", "loss.perceptual_layer=relu5_4"])
    assert "conv5_3" in str(info.value)
    with pytest.raises(ValueError, match=r"data\.gt_size must be 128, got 96"):
        load_config(None, ["discriminator.arch=esrgan_vgg128"])
    ok = load_config(None, ["discriminator.arch=esrgan_vgg128", "data.gt_size=128"])
    assert ok.discriminator.arch == "esrgan_vgg128"


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
        assert model(random_batch(1, 6, 5)).shape == (1, 3, 24, 20)
