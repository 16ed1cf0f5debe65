"""Image quality metrics under one protocol (PROTOCOL below); every table srkit prints names it.

PSNR and SSIM are written here because the protocol is the point: BT.601 Y from RGB in float64 without
rounding, a border crop, SSIM's 11x11 Gaussian window over the valid region only (Wang et al.'s
ssim_index.m, which published SR tables use); library versions differ in padding, colour conversion or
precision. LPIPS is the `lpips` package's v0.1 model, with its backbone loaded from local weights.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from srkit.ops import gaussian_kernel1d, quantize
from srkit.paths import MissingDataError, data_file


def protocol(*, y_channel: bool = True) -> str:
    """The metric protocol in one line, as printed under every table."""
    space = "Y (BT.601, float64, unrounded)" if y_channel else "RGB (float64)"
    return (
        f"PSNR/SSIM on {space}, border crop = scale, SR quantised to uint8; "
        "SSIM 11x11 Gaussian (sigma 1.5), valid region; LPIPS v0.1 on RGB, no crop; mean over images"
    )


PROTOCOL = protocol()

# ITU-R BT.601 RGB [0, 1] -> Y [16, 235]: Y = 16 + 65.481 R + 128.553 G + 24.966 B (MATLAB rgb2ycbcr).
_BT601_Y = (65.481, 128.553, 24.966)


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> (..., 1, H, W) Y in [16, 235] (0-255 scale), float64, unrounded."""
    if img.shape[-3] != 3:
        raise ValueError(f"rgb_to_y expects 3 channels in dim -3, got shape {tuple(img.shape)}")
    x = img.to(torch.float64)
    w = torch.tensor(_BT601_Y, dtype=torch.float64, device=img.device).view(3, 1, 1)
    return 16.0 + (x * w).sum(dim=-3, keepdim=True)


def _prepare(sr: torch.Tensor, gt: torch.Tensor, crop: int, y_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise SR, convert both to Y (or RGB x 255), crop the border; float64 on the 0-255 scale."""
    if sr.shape != gt.shape:
        raise ValueError(f"SR and GT shapes differ: {tuple(sr.shape)} vs {tuple(gt.shape)}")
    sr = quantize(sr.to(torch.float64))
    gt = gt.to(torch.float64)
    if y_channel:
        sr, gt = rgb_to_y(sr), rgb_to_y(gt)
    else:
        sr, gt = sr * 255, gt * 255
    if crop > 0:
        h, w = sr.shape[-2:]
        if h <= 2 * crop or w <= 2 * crop:
            raise ValueError(f"border crop {crop} leaves nothing of a {h}x{w} image")
        sr, gt = sr[..., crop:-crop, crop:-crop], gt[..., crop:-crop, crop:-crop]
    return sr, gt


def psnr(sr: torch.Tensor, gt: torch.Tensor, *, crop: int = 4, y_channel: bool = True) -> float:
    """PSNR in dB of one (3, H, W) image pair in [0, 1], peak 255; inf for identical images."""
    a, b = _prepare(sr, gt, crop, y_channel)
    mse = torch.mean((a - b) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ssim(sr: torch.Tensor, gt: torch.Tensor, *, crop: int = 4, y_channel: bool = True) -> float:
    """SSIM of one (3, H, W) pair in [0, 1]: Wang et al. 2004, Gaussian 11x11 window, valid region, L = 255.

    With y_channel=False the SSIM is computed per RGB channel and averaged.
    """
    a, b = _prepare(sr, gt, crop, y_channel)
    if min(a.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels after cropping, got {tuple(a.shape[-2:])}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    a, b = a.reshape(-1, 1, *a.shape[-2:]), b.reshape(-1, 1, *b.shape[-2:])  # channels as a batch
    n = a.shape[0]
    g = gaussian_kernel1d(1.5, 5).to(a.device)  # 11 taps, sigma 1.5 (Wang et al. 2004)
    # The 11x11 Gaussian is separable: two 1-D passes, no padding (valid region only), all five
    # local statistics filtered in one batch. Same result as the 2-D window, ~5x less float64 work.
    stats = torch.cat([a, b, a * a, b * b, a * b])  # (5n, 1, H, W)
    stats = F.conv2d(F.conv2d(stats, g.view(1, 1, 11, 1)), g.view(1, 1, 1, 11))
    mu_a, mu_b, e_aa, e_bb, e_ab = stats.split(n)
    var_a, var_b, cov = e_aa - mu_a**2, e_bb - mu_b**2, e_ab - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean().item()


_LPIPS_BACKBONE_FILES = {
    "alex": "weights/imagenet_backbones/alexnet_features_imagenet.safetensors",
    "vgg": "weights/imagenet_backbones/vgg16_features_imagenet.safetensors",
}
# lpips' slices regroup torchvision's `features` modules: features.N lives at net.slice{k}.N.
_LPIPS_SLICES = {
    "alex": [(0, 2), (2, 5), (5, 8), (8, 10), (10, 12)],
    "vgg": [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)],
}


# Smallest side each LPIPS backbone can score (measured: alex fails at 28 px and works at 31).
LPIPS_MIN_SIZE = {"alex": 31, "vgg": 16}


class LPIPS(torch.nn.Module):
    """LPIPS v0.1 distance (Zhang et al. 2018) of [0, 1] RGB images; lower is closer.

    The linear heads ship inside the `lpips` package; the ImageNet backbone comes from the data folder
    (weights/imagenet_backbones) when there, else from torchvision's download.
    """

    def __init__(self, net: str = "alex", *, data_dir: str | Path | None = None) -> None:
        super().__init__()
        import lpips  # imported here: it prints nothing with verbose=False, but pulls in scipy

        if net not in _LPIPS_SLICES:
            raise ValueError(f"LPIPS net must be one of {sorted(_LPIPS_SLICES)}, got {net!r}")
        self.net_name = net
        # pnet_rand: build the backbone without torchvision's download; we load its weights below.
        with warnings.catch_warnings():
            # lpips 0.1.4 passes torchvision's legacy `pretrained=` argument: not the user's to act on.
            warnings.simplefilter("ignore", UserWarning)
            self.model = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False)
        self.model.net.load_state_dict(self._backbone_state(net, data_dir), strict=True)
        self.model.eval().requires_grad_(False)

    @staticmethod
    def _backbone_state(net: str, data_dir: str | Path | None) -> dict[str, torch.Tensor]:
        how = "Put torchvision's ImageNet `features.*` weights there as safetensors, or run once online."
        try:
            path = data_file(
                _LPIPS_BACKBONE_FILES[net], what=f"LPIPS {net} backbone weights", how=how, explicit=data_dir
            )
            features = load_file(str(path))
        except MissingDataError as missing:
            from torchvision import models

            weights = models.AlexNet_Weights.IMAGENET1K_V1 if net == "alex" else models.VGG16_Weights.IMAGENET1K_V1
            try:
                features = {
                    k: v for k, v in weights.get_state_dict(progress=False).items() if k.startswith("features.")
                }
            except Exception as err:  # offline: the local file is the fix to suggest
                raise MissingDataError(f"{missing} (torchvision download also failed: {err})") from err
        state: dict[str, torch.Tensor] = {}
        for k, (lo, hi) in enumerate(_LPIPS_SLICES[net], start=1):
            for i in range(lo, hi):
                for p in ("weight", "bias"):
                    key = f"features.{i}.{p}"
                    if key in features:
                        state[f"slice{k}.{i}.{p}"] = features[key]
        return state

    @torch.no_grad()
    def forward(self, sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) pairs in [0, 1] -> (N,) distances."""
        least = LPIPS_MIN_SIZE[self.net_name]
        if min(sr.shape[-2:]) < least:
            # AlexNet's strided first conv and two max-pools leave nothing to pool below this size.
            raise ValueError(
                f"image {sr.shape[-1]}x{sr.shape[-2]} is too small for LPIPS-{self.net_name} (needs at least "
                f"{least}x{least}); use --lpips none or a larger image"
            )
        out: torch.Tensor = self.model(sr.float(), gt.float(), normalize=True)
        return out.flatten()
