"""Compact (Real-ESRGAN's SRVGGNetCompact layout): a plain stack of 3x3 convs with PReLU at LR resolution, one
pixel shuffle, and the nearest-upsampled input added back.

No residual blocks, no BatchNorm, no upsampling convs at HR: every conv runs at LR size, so a 48-wide, 16-conv
model costs about 1/6 of SRResNet's multiply-adds per pixel. The key layout (body.0 = first conv, body.1 its PReLU,
..., body.N the last conv) is the community's, so spandrel and Real-ESRGAN's tools load srkit's weights as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Compact(nn.Module):
    """(N, C, h, w) in [0, 1] -> (N, C, s*h, s*w): `num_convs` hidden 3x3 convs of `width` channels, PReLU each."""

    def __init__(self, *, in_channels: int = 3, width: int = 48, num_convs: int = 16, scale: int = 4) -> None:
        super().__init__()
        if width < 1 or num_convs < 0 or scale < 1:
            raise ValueError(f"Compact needs width >= 1, num_convs >= 0, scale >= 1; got {width}, {num_convs}, {scale}")
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.PReLU(width)]
        for _ in range(num_convs):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.PReLU(width)]
        layers.append(nn.Conv2d(width, in_channels * scale * scale, 3, padding=1))
        self.body = nn.ModuleList(layers)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:  # named lq as every generator's input (ONNX export)
        y = lq
        for layer in self.body:
            y = layer(y)
        # The network learns the residual over a nearest-neighbour upscale of its input.
        return self.shuffle(y) + F.interpolate(lq, scale_factor=self.scale, mode="nearest")
