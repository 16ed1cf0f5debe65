"""srkit: 4x single-image super-resolution with GANs (SRResNet, SRGAN, ESRGAN) and reference-exact metrics."""

from __future__ import annotations

__version__ = "0.1.0"

from srkit.descriptor import ModelDescriptor, open_model
from srkit.interpolate import interpolate_weights
from srkit.metrics import PROTOCOL, psnr, ssim
from srkit.models import build_generator, load_model, resolve_model, save_weights

__all__ = [
    "PROTOCOL",
    "ModelDescriptor",
    "__version__",
    "build_generator",
    "interpolate_weights",
    "load_model",
    "open_model",
    "psnr",
    "resolve_model",
    "save_weights",
    "ssim",
]
