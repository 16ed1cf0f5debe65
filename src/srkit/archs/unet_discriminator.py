"""U-Net discriminator with spectral normalisation (Real-ESRGAN, Wang et al. 2021, sec. 3.3 and fig. 6).

Instead of one real/fake logit per image it gives one per pixel: an encoder of three stride-2 convs, a decoder
that upsamples back with skip connections, and a short head. Per-pixel feedback tells the generator *where*
an image looks wrong, which a global critic cannot; spectral normalisation (Miyato et al. 2018) on every conv
but the first and the last keeps the larger discriminator's training stable.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm


class UNetDiscriminatorSN(nn.Module):
    """(N, 3, H, W) in [0, 1] -> per-pixel logits (N, 1, H, W); H and W multiples of 8.

    Widths follow Real-ESRGAN: `width`, 2x, 4x, 8x down the encoder and back; LeakyReLU(0.2) throughout.
    """

    def __init__(self, *, in_channels: int = 3, width: int = 64, skip: bool = True) -> None:
        super().__init__()
        w = width
        self.skip = skip
        self.stem = nn.Conv2d(in_channels, w, 3, padding=1)
        # encoder: 4 x 4 stride-2 convs, no bias (spectral norm bounds the weight; a bias adds nothing here)
        self.down = nn.ModuleList(
            spectral_norm(nn.Conv2d(a, b, 4, stride=2, padding=1, bias=False))
            for a, b in ((w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w))
        )
        # decoder: bilinear x2, then a 3 x 3 conv, added to the encoder feature of that size
        self.up = nn.ModuleList(
            spectral_norm(nn.Conv2d(a, b, 3, padding=1, bias=False))
            for a, b in ((8 * w, 4 * w), (4 * w, 2 * w), (2 * w, w))
        )
        self.head = nn.Sequential(
            spectral_norm(nn.Conv2d(w, w, 3, padding=1, bias=False)),
            nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(w, w, 3, padding=1, bias=False)),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(w, 1, 3, padding=1),
        )

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        if h % 8 or w % 8:
            raise ValueError(f"UNetDiscriminatorSN needs sides that are multiples of 8, got {h}x{w}")
        x = F.leaky_relu(self.stem(img * 2 - 1), 0.2)  # [0, 1] -> [-1, 1], as the other discriminators
        skips = [x]
        for conv in self.down:
            x = F.leaky_relu(conv(x), 0.2)
            skips.append(x)
        skips.pop()  # the bottleneck itself is not a skip
        for conv in self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = F.leaky_relu(conv(x), 0.2)
            skip = skips.pop()
            if self.skip:
                x = x + skip
        return self.head(x)
