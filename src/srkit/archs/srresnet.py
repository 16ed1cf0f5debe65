"""SRResNet generator (Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a GAN", 2017)."""

from __future__ import annotations

import math

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """[Conv3x3 + BN + PReLU, Conv3x3 + BN] with an identity skip (SRGAN fig. 4)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.PReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SubPixelBlock(nn.Module):
    """Conv3x3(C -> 4C), PixelShuffle(2), PReLU: one x2 step."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, 4C, H, W) -> (N, C, 2H, 2W)
        return self.act(self.shuffle(self.conv(x)))


class SRResNet(nn.Module):
    """SRResNet: 9x9 head, residual trunk with a global skip, sub-pixel upsampling, 9x9 tanh tail.

    Takes and returns images in [0, 1]; the network itself works in [-1, 1] (tanh output, as in the paper).
    At paper size (64 wide, 16 blocks, x4) it has 1,549,462 parameters.
    """

    def __init__(self, *, in_channels: int = 3, width: int = 64, num_blocks: int = 16, scale: int = 4) -> None:
        super().__init__()
        if scale not in (2, 4, 8):
            raise ValueError(f"SRResNet scale must be 2, 4 or 8 (a power of two), got {scale}")
        self.scale = scale
        self.head = nn.Sequential(nn.Conv2d(in_channels, width, 9, padding=4), nn.PReLU())
        self.body = nn.Sequential(*[ResidualBlock(width) for _ in range(num_blocks)])
        self.body_tail = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))
        self.upsample = nn.Sequential(*[SubPixelBlock(width) for _ in range(int(math.log2(scale)))])
        self.tail = nn.Conv2d(width, in_channels, 9, padding=4)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        x = lq * 2 - 1  # [0, 1] -> [-1, 1]
        feat = self.head(x)
        feat = feat + self.body_tail(self.body(feat))  # global skip over the residual trunk
        # (N, C, H, W) -> (N, C, sH, sW)
        out = torch.tanh(self.tail(self.upsample(feat)))
        return (out + 1) / 2
