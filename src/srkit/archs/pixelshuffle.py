"""A small PixelShuffle generator, the "vanilla GAN" baseline of one report (trained with a BCE GAN loss only)."""

from __future__ import annotations

import torch
from torch import nn


class PixelShuffleGenerator(nn.Module):
    """9x9 conv, `num_convs` 3x3 conv+ReLU, two [conv(C -> 4C), PixelShuffle(2), ReLU] steps, 9x9 conv, tanh.

    No residual blocks, no BatchNorm: a deliberately plain x4 baseline. Takes and returns images in
    [0, 1]; the network itself works in [-1, 1] (tanh output, like SRResNet).
    """

    def __init__(self, *, in_channels: int = 3, width: int = 64, num_convs: int = 4, scale: int = 4) -> None:
        super().__init__()
        if scale != 4:
            raise ValueError(f"PixelShuffleGenerator is an x4 model (two PixelShuffle x2 steps), got scale {scale}")
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 9, padding=4), nn.ReLU(inplace=True)]
        for _ in range(num_convs):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(2):
            # (N, C, H, W) -> (N, 4C, H, W) -> (N, C, 2H, 2W)
            layers += [nn.Conv2d(width, 4 * width, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, in_channels, 9, padding=4))
        self.net = nn.Sequential(*layers)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        # (N, 3, H, W) in [0, 1] -> (N, 3, 4H, 4W) in [0, 1]
        return (torch.tanh(self.net(lq * 2 - 1)) + 1) / 2
