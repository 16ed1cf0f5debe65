"""ESRGAN's VGG-style discriminator for 128x128 patches ("VGG128", Wang et al. 2018, as released with ESRGAN)."""

from __future__ import annotations

import torch
from torch import nn

# Five stages, each [3x3 stride-1 conv, 4x4 stride-2 conv]: 128 / 2^5 = 4, hence the 512*4*4 dense input.
_STAGE_MULTIPLIERS = (1, 2, 4, 8, 8)
_NUM_HALVINGS = len(_STAGE_MULTIPLIERS)


class ESRGANDiscriminator(nn.Module):
    """VGG128: five [3x3 s1, 4x4 s2] conv stages (64 -> 512 channels), BatchNorm on all but the first conv,
    LeakyReLU(0.2), then Linear(512*4*4 -> 100), LeakyReLU(0.2), Linear(100 -> 1).

    Input: (N, 3, 128, 128) in [0, 1], mapped to [-1, 1] inside (the range SRGANDiscriminator uses too;
    BatchNorm after every conv but the first makes the choice matter little). Output: one logit per
    image, (N, 1). Convs followed by BatchNorm have no bias (the BN shift replaces it). At paper size
    (width 64, 128x128) it has 14,499,401 parameters. Other sizes: `input_size`, a multiple of 32.
    """

    def __init__(self, *, in_channels: int = 3, width: int = 64, input_size: int = 128) -> None:
        super().__init__()
        if input_size < 32 or input_size % 32:
            raise ValueError(f"ESRGANDiscriminator input_size must be a positive multiple of 32, got {input_size}")
        self.input_size = input_size
        layers: list[nn.Module] = []
        prev = in_channels
        for stage, mult in enumerate(_STAGE_MULTIPLIERS):
            ch = width * mult
            if stage == 0:  # conv0_0: the only conv with a bias and without BatchNorm
                layers += [nn.Conv2d(prev, ch, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True)]
            else:
                layers += [
                    nn.Conv2d(prev, ch, 3, 1, 1, bias=False),
                    nn.BatchNorm2d(ch),
                    nn.LeakyReLU(0.2, inplace=True),
                ]
            # (N, ch, H, W) -> (N, ch, H/2, W/2)
            layers += [nn.Conv2d(ch, ch, 4, 2, 1, bias=False), nn.BatchNorm2d(ch), nn.LeakyReLU(0.2, inplace=True)]
            prev = ch
        self.features = nn.Sequential(*layers)
        side = input_size >> _NUM_HALVINGS
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(prev * side * side, 100),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(100, 1),
        )

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        size = self.input_size
        if img.ndim != 4 or tuple(img.shape[-2:]) != (size, size):
            raise ValueError(
                f"ESRGANDiscriminator expects (N, C, {size}, {size}) patches (data.gt_size: {size}), "
                f"got shape {tuple(img.shape)}"
            )
        x = img * 2 - 1  # [0, 1] -> [-1, 1]
        # (N, 3, 128, 128) -> (N, 512, 4, 4) -> (N, 1)
        return self.head(self.features(x))
