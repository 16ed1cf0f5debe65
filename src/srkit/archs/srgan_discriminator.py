"""SRGAN discriminator (Ledig et al. 2017, fig. 4): eight conv blocks, then a two-layer dense head."""

from __future__ import annotations

import torch
from torch import nn


class SRGANDiscriminator(nn.Module):
    """VGG-style critic: conv blocks with alternating stride 1/2, BN on all but the first, LeakyReLU(0.2).

    Takes images in [0, 1] of any size (adaptive 6x6 pooling before the dense layers, so crops larger
    than the paper's 96x96 work too) and returns one logit per image, shape (N, 1).
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        channels: tuple[int, ...] = (64, 64, 128, 128, 256, 256, 512, 512),
        hidden: int = 1024,
        pooled_size: int = 6,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for i, ch in enumerate(channels):
            stride = 1 if i % 2 == 0 else 2
            layers.append(nn.Conv2d(prev, ch, 3, stride=stride, padding=1))
            if i > 0:  # the first block has no BatchNorm (paper fig. 4)
                layers.append(nn.BatchNorm2d(ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            prev = ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pooled_size)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(prev * pooled_size * pooled_size, hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = img * 2 - 1  # [0, 1] -> [-1, 1], the range the generator's tanh produces
        # (N, 3, H, W) -> (N, 512, H/16, W/16) -> (N, 512, 6, 6) -> (N, 1)
        return self.head(self.pool(self.features(x)))
