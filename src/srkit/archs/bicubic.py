"""The bicubic baseline as a parameter-free 'model', so it runs through the same evaluate/upscale paths."""

from __future__ import annotations

import torch
from torch import nn

from srkit.ops import imresize


class Bicubic(nn.Module):
    """MATLAB-compatible bicubic upscaling by `scale`; [0, 1] in, [0, 1] out (overshoot clamped)."""

    def __init__(self, *, scale: int = 4) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, C, sH, sW)
        return imresize(lq, float(self.scale)).clamp(0, 1)
