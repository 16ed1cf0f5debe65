"""The bicubic baseline as a parameter-free 'model', so it runs through the same evaluate/upscale paths."""

from __future__ import annotations

import torch
from torch import nn

from srkit.ops import upscale_bicubic


class Bicubic(nn.Module):
    """MATLAB-compatible bicubic upscaling by `scale`; [0, 1] in, [0, 1] out (overshoot clamped)."""

    def __init__(self, *, scale: int = 4) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, C, sH, sW)
        # upscale_bicubic equals imresize here and is built from fixed tensor ops, so the baseline exports too.
        return upscale_bicubic(lq, self.scale).clamp(0, 1)
