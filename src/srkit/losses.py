"""Losses: pixel, perceptual (a frozen VGG cut at a named layer) and the adversarial variants.

Adversarial variants are pairs of plain functions (discriminator loss, generator loss) over the
discriminator's logits for real and fake images, so the training step is written once and the
variant is chosen by name (SRGAN: vanilla BCE; replication: LSGAN; ESRGAN: relativistic average).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from srkit.archs.vgg import VGGFeatures, layer_names

AdversarialFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def pixel_loss(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """L1 or MSE between images."""
    if kind == "l1":
        return F.l1_loss
    if kind == "mse":
        return F.mse_loss
    raise ValueError(f"pixel loss must be 'l1' or 'mse', got {kind!r}")


def gaussian_lowpass(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, C, H, W) blurred by a Gaussian of `sigma` pixels: kernel 2 * ceil(3 * sigma) + 1, reflected borders
    (torchvision's gaussian_blur, differentiable)."""
    from torchvision.transforms.v2.functional import gaussian_blur

    size = 2 * math.ceil(3 * sigma) + 1
    return gaussian_blur(img, [size, size], [sigma, sigma])


def lowpass_loss(kind: str, sigma: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The pixel distance (l1 / mse) between Gaussian low-passed SR and HR: frequency separation (Fritsche,
    Gu and Timofte, ICCVW 2019). Fidelity is asked of the low frequencies alone, where PSNR is mostly won,
    and the detail above them is left to the perceptual and adversarial terms."""
    if not sigma > 0:
        raise ValueError(f"low-pass sigma must be > 0 pixels, got {sigma}")
    distance = pixel_loss(kind)

    def loss(sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return distance(gaussian_lowpass(sr, sigma), gaussian_lowpass(gt, sigma))

    return loss


class PerceptualLoss(nn.Module):
    """Distance between VGG features of SR and HR (SRGAN: MSE after ReLU; ESRGAN: L1 before ReLU).

    One layer (`layer`), or several with a weight each (`layers`, Real-ESRGAN's form: {"conv1_2": 0.1,
    "conv2_2": 0.1, "conv3_4": 1, "conv4_4": 1, "conv5_4": 1}); the loss is then sum(w_i * d(phi_i(SR), phi_i(HR))),
    each distance a mean over its own feature map, from one pass through the trunk.

    `normalize`: each position's feature vector is scaled to unit length over the channels before the distance,
    which is then summed over the channels and averaged over the positions (Zhang et al. 2018, the unlearned
    "baseline" deep-feature distance of the LPIPS paper: every channel weighted 1, no learned heads). It measures
    which features are present rather than how strongly, so blur costs as much in flat regions as at edges.
    """

    def __init__(
        self,
        *,
        arch: str = "vgg19",
        layer: str | None = None,
        layers: dict[str, float] | None = None,
        criterion: str = "mse",
        normalize: bool = False,
        weights: str | Path | None = "imagenet",
        data_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.normalize = normalize
        if layers is not None and layer is not None:
            raise ValueError("give the perceptual loss one `layer` or weighted `layers`, not both")
        self.layers = dict(layers) if layers else None
        if self.layers is not None:
            known = layer_names(arch)
            unknown = [name for name in self.layers if name not in known]
            if unknown:
                raise ValueError(f"perceptual layers {unknown} are not {arch} layers; expected names from {known}")
            layer = max(self.layers, key=known.index)  # cut after the deepest tap
        self.vgg = VGGFeatures(arch=arch, layer=layer, weights=weights, data_dir=data_dir)
        self.criterion = pixel_loss(criterion)

    def _distance(self, feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        feat, target = feat.float(), target.float()
        if not self.normalize:
            return self.criterion(feat, target)
        # (N, C, h, w): unit vectors over C (eps as LPIPS: a dead position stays ~0, not NaN), summed over C
        feat = feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
        target = target / (target.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
        return self.criterion(feat, target) * feat.shape[1]

    def forward(self, sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        if self.layers is None:
            with torch.no_grad():  # the target's features need no graph
                target = self.vgg(gt)
            return self._distance(self.vgg(sr), target)
        names = list(self.layers)
        with torch.no_grad():
            targets = self.vgg.taps(gt, names)
        total = torch.zeros((), device=sr.device)
        for name, feat, target in zip(names, self.vgg.taps(sr, names), targets, strict=True):
            total = total + self.layers[name] * self._distance(feat, target)
        return total


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


# Vanilla GAN (Goodfellow et al.; SRGAN): D separates real from fake; G makes D call fakes real.
def d_loss_vanilla(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return _bce(real, 1.0) + _bce(fake, 0.0)


def g_loss_vanilla(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return _bce(fake, 1.0)  # non-saturating form; `real` is unused


# LSGAN (Mao et al. 2017): least squares on the raw outputs, targets 1 (real) and 0 (fake).
def d_loss_lsgan(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.mse_loss(real, torch.ones_like(real)) + F.mse_loss(fake, torch.zeros_like(fake)))


def g_loss_lsgan(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * F.mse_loss(fake, torch.ones_like(fake))


# Relativistic average GAN (Jolicoeur-Martineau 2018; ESRGAN eq. 1-2): is real more realistic than
# the average fake, and vice versa. G's loss is symmetric, so G also gets gradients from real images.
def d_loss_ragan(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (_bce(real - fake.mean(), 1.0) + _bce(fake - real.mean(), 0.0))


def g_loss_ragan(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (_bce(real - fake.mean(), 0.0) + _bce(fake - real.mean(), 1.0))


ADVERSARIAL: dict[str, tuple[AdversarialFn, AdversarialFn]] = {
    "vanilla": (d_loss_vanilla, g_loss_vanilla),
    "lsgan": (d_loss_lsgan, g_loss_lsgan),
    "ragan": (d_loss_ragan, g_loss_ragan),
}


# LDL: locally discriminative learning (Liang, Zeng and Zhang, CVPR 2022) -----------------------------------
LDL_WINDOW = 7  # the local-variance window, sec. 3.2
LDL_GAMMA = 5.0  # the patch-level weight is var(R) ** (1 / gamma)


def ldl_artifact_map(sr: torch.Tensor, sr_ema: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) weights of the pixels the generator is turning into artifacts (no gradient flows here).

    R = |gt - sr| summed over channels; the map is var(R over the image) ** (1/5) times the variance of R in
    a 7x7 window around each pixel (artifacts are where the residual is locally irregular, not merely large),
    kept only where the current generator is worse than its EMA (stable) copy: |gt - sr| >= |gt - sr_ema|.
    """
    with torch.no_grad():
        residual = (gt - sr).abs().sum(1, keepdim=True).float()
        residual_ema = (gt - sr_ema).abs().sum(1, keepdim=True).float()
        patch = residual.var(dim=(1, 2, 3), keepdim=True) ** (1 / LDL_GAMMA)
        pad = LDL_WINDOW // 2
        padded = F.pad(residual, (pad, pad, pad, pad), mode="reflect")
        mean = F.avg_pool2d(padded, LDL_WINDOW, stride=1)
        mean_sq = F.avg_pool2d(padded * padded, LDL_WINDOW, stride=1)
        n = LDL_WINDOW * LDL_WINDOW
        local = (mean_sq - mean * mean).clamp_min(0) * (n / (n - 1))  # unbiased, as torch.var
        weight = patch * local
        return torch.where(residual < residual_ema, torch.zeros_like(weight), weight)


def artifact_loss(sr: torch.Tensor, sr_ema: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """LDL's artifact term: L1 between the map-weighted SR and HR (mean over every element)."""
    weight = ldl_artifact_map(sr, sr_ema, gt)
    return F.l1_loss(weight * sr.float(), weight * gt.float())
