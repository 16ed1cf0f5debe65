"""Network architectures, one file each; these dicts are the whole registry."""

from __future__ import annotations

from torch import nn

from srkit.archs.bicubic import Bicubic
from srkit.archs.srgan_discriminator import SRGANDiscriminator
from srkit.archs.srresnet import SRResNet
from srkit.archs.vgg import VGGFeatures

GENERATORS: dict[str, type[nn.Module]] = {
    "bicubic": Bicubic,
    "srresnet": SRResNet,
}

DISCRIMINATORS: dict[str, type[nn.Module]] = {
    "srgan": SRGANDiscriminator,
}

__all__ = ["DISCRIMINATORS", "GENERATORS", "Bicubic", "SRGANDiscriminator", "SRResNet", "VGGFeatures"]
