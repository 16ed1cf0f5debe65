"""Frequency fusion: two upscalers of one scale joined in frequency rather than in weights.

The output is the low band of `low`'s output plus everything above it from `high`'s:

    SR = G_sigma * low(x) + (high(x) - G_sigma * high(x)) = high(x) + G_sigma * (low(x) - high(x))

with G_sigma a Gaussian of `sigma` HR pixels. With `low` a PSNR model and `high` its GAN fine-tune, this keeps the
colours, shading and coarse edges where the PSNR model is closest to the truth and the GAN's texture above them;
the idea is frequency separation (Fritsche, Gu and Timofte, ICCVW 2019), which applies it as a training loss, used
here at inference like ESRGAN's network interpolation. Unlike network interpolation the two networks need not share
an architecture; the price is running both. sigma -> 0 gives `high`, sigma -> infinity tends to `low`'s mean colour
plus `high`'s detail.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MAX_SIGMA = 16.0  # HR pixels; a wider Gaussian only moves the image mean and needs a huge reflected border


def gaussian_taps(sigma: float) -> torch.Tensor:
    """The normalised 1-D Gaussian of `sigma` pixels on 2 * ceil(3 * sigma) + 1 taps (as torchvision's blur)."""
    radius = math.ceil(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-(x * x) / (2 * sigma * sigma))
    return (taps / taps.sum()).float()


class FrequencyFusion(nn.Module):
    """Frequency fusion: one model's output below a Gaussian of sigma HR pixels, another's above it.

    SR = high(x) + G_sigma * (low(x) - high(x)); see the module docstring.

    low / high: {"arch": name, "args": {...}} of two srkit generators of this `scale`; their weights live under
    `low.` and `high.` in the state dict. The Gaussian is a fixed, non-persistent buffer: the file holds only the
    two networks.
    """

    taps: torch.Tensor

    def __init__(
        self,
        *,
        scale: int = 4,
        low: dict[str, Any] | None = None,
        high: dict[str, Any] | None = None,
        sigma: float = 1.0,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.low = _member("low", low or {"arch": "srresnet"}, scale)
        self.high = _member("high", high or {"arch": "srresnet"}, scale)
        self.set_sigma(sigma)

    def set_sigma(self, sigma: float) -> None:
        """Move the band edge to a Gaussian of `sigma` HR pixels (the networks stay as they are)."""
        if not isinstance(sigma, int | float) or not 0 < sigma <= MAX_SIGMA:
            raise ValueError(f"fusion sigma must be in (0, {MAX_SIGMA:g}] HR pixels, got {sigma!r}")
        self.sigma = float(sigma)
        old = getattr(self, "taps", None)
        taps = gaussian_taps(self.sigma)
        self.register_buffer("taps", taps if old is None else taps.to(old.device), persistent=False)

    def blur(self, img: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) convolved with the Gaussian, separably, borders reflected (replicated where an image is
        smaller than the kernel's radius).

        Written here rather than calling torchvision's gaussian_blur (which the training loss uses): its taps
        are a buffer that TorchScript and ONNX export carry as they are, and an image smaller than the radius
        (a tiny tile) still works where reflect padding would fail. tests/test_fusion.py holds it equal to
        torchvision's blur."""
        n, c, h, w = img.shape
        radius = (self.taps.numel() - 1) // 2
        mode = "reflect" if min(h, w) > radius else "replicate"
        taps = self.taps.to(img.dtype)
        flat = img.reshape(n * c, 1, h, w)
        flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode=mode), taps.view(1, 1, 1, -1))
        flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode=mode), taps.view(1, 1, -1, 1))
        return flat.reshape(n, c, h, w)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, C, sH, sW)
        sharp = self.high(lq)
        return sharp + self.blur(self.low(lq) - sharp)


def _member(role: str, spec: dict[str, Any], scale: int) -> nn.Module:
    """One of the two networks from its {"arch", "args"} spec, checked to upscale by `scale`."""
    from srkit.archs import GENERATORS

    if not isinstance(spec, dict) or not isinstance(spec.get("arch"), str):
        raise ValueError(f"fusion {role} must be {{'arch': name, 'args': {{...}}}}, got {spec!r}")
    arch, args = spec["arch"], dict(spec.get("args") or {})
    if arch not in GENERATORS or arch == "freqfusion":
        known = sorted(a for a in GENERATORS if a != "freqfusion")
        raise ValueError(f"fusion {role} arch {arch!r} unknown; expected one of {known}")
    if args.get("scale", scale) != scale:
        raise ValueError(f"fusion {role} upscales x{args['scale']}, the fusion x{scale}: both must be x{scale}")
    return GENERATORS[arch](**{**args, "scale": scale})
