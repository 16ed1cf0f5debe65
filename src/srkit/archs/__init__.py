"""Network architectures, one file each; these dicts are the whole registry."""

from __future__ import annotations

from torch import nn

from srkit.archs.autoencoder import ConvAutoencoder
from srkit.archs.bicubic import Bicubic
from srkit.archs.compact import Compact
from srkit.archs.esrgan_discriminator import ESRGANDiscriminator
from srkit.archs.fusion import FrequencyFusion
from srkit.archs.pixelshuffle import PixelShuffleGenerator
from srkit.archs.rrdbnet import RRDBNet
from srkit.archs.srgan_discriminator import SRGANDiscriminator
from srkit.archs.srresnet import SRResNet
from srkit.archs.unet_discriminator import UNetDiscriminatorSN
from srkit.archs.vgg import VGGFeatures

GENERATORS: dict[str, type[nn.Module]] = {
    "bicubic": Bicubic,
    "srresnet": SRResNet,
    "rrdbnet": RRDBNet,
    "autoencoder": ConvAutoencoder,
    "pixelshuffle": PixelShuffleGenerator,
    "compact": Compact,  # Real-ESRGAN's SRVGGNetCompact layout: fast on CPUs
    "freqfusion": FrequencyFusion,  # two of the above joined in frequency (srkit fuse)
}

DISCRIMINATORS: dict[str, type[nn.Module]] = {
    "srgan": SRGANDiscriminator,
    "esrgan_vgg128": ESRGANDiscriminator,
    "unet_sn": UNetDiscriminatorSN,  # Real-ESRGAN: per-pixel logits, spectral norm
}

__all__ = [
    "DISCRIMINATORS",
    "GENERATORS",
    "Bicubic",
    "Compact",
    "ConvAutoencoder",
    "ESRGANDiscriminator",
    "FrequencyFusion",
    "PixelShuffleGenerator",
    "RRDBNet",
    "SRGANDiscriminator",
    "SRResNet",
    "UNetDiscriminatorSN",
    "VGGFeatures",
]
