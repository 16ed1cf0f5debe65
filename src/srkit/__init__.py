"""srkit: 4x single-image super-resolution with GANs (SRResNet, SRGAN, ESRGAN) and reference-exact metrics."""

from __future__ import annotations

__version__ = "0.1.0"

from srkit.interpolate import interpolate_weights
from srkit.metrics import PROTOCOL, psnr, ssim
from srkit.models import build_generator, load_model, save_weights

__all__ = [
    "PROTOCOL",
    "__version__",
    "build_generator",
    "interpolate_weights",
    "load_model",
    "psnr",
    "save_weights",
    "ssim",
]
