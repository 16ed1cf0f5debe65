"""A convolutional autoencoder baseline for x4 SR, as one of the reports describes it.

The report's network: an encoder of 5 convs and 2 max-pools, a decoder of 5 convs and 2 bicubic x2
upsamplings. The encoder halves the size twice and the decoder doubles it twice, so the network alone
maps an image to one of the *same* size. To reach x4 the LR input is first upscaled x4 with MATLAB-style
bicubic (pre-upsampling, as SRCNN does) and the autoencoder then refines that image at the HR size:

    lq (N, 3, H, W) -> bicubic x4 (N, 3, 4H, 4W) -> encoder (N, 4w, H, W) -> decoder (N, 3, 4H, 4W)

(4H and 4W are always divisible by the encoder's total stride 4, so any LR size works.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from srkit.ops import upscale_bicubic


def _conv_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True)]


class BicubicUp2(nn.Module):
    """x2 bicubic upsampling inside the decoder (torch's kernel: differentiable, align_corners=False)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, C, 2H, 2W)
        return F.interpolate(x, scale_factor=2.0, mode="bicubic", align_corners=False)


class ConvAutoencoder(nn.Module):
    """Bicubic x4 pre-upsampling, then a conv encoder (5 convs, 2 max-pools) and decoder (5 convs, 2 bicubic x2).

    Channels: w, w, [pool] 2w, 2w, [pool] 4w | 2w, [up] 2w, w, [up] w, 3. ReLU after every conv but the last.
    Takes and returns images in [0, 1]; the output is not clamped (callers clamp).
    """

    def __init__(self, *, in_channels: int = 3, width: int = 64, scale: int = 4) -> None:
        super().__init__()
        if scale != 4:
            raise ValueError(f"ConvAutoencoder is an x4 model (bicubic x4 pre-upsampling), got scale {scale}")
        self.scale = scale
        w = width
        self.encoder = nn.Sequential(
            *_conv_relu(in_channels, w),
            *_conv_relu(w, w),
            nn.MaxPool2d(2),  # (N, w, 4H, 4W) -> (N, w, 2H, 2W)
            *_conv_relu(w, 2 * w),
            *_conv_relu(2 * w, 2 * w),
            nn.MaxPool2d(2),  # (N, 2w, 2H, 2W) -> (N, 2w, H, W)
            *_conv_relu(2 * w, 4 * w),
        )
        self.decoder = nn.Sequential(
            *_conv_relu(4 * w, 2 * w),
            BicubicUp2(),  # (N, 2w, H, W) -> (N, 2w, 2H, 2W)
            *_conv_relu(2 * w, 2 * w),
            *_conv_relu(2 * w, w),
            BicubicUp2(),  # (N, w, 2H, 2W) -> (N, w, 4H, 4W)
            *_conv_relu(w, w),
            nn.Conv2d(w, in_channels, 3, padding=1),
        )

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        # (N, 3, H, W) -> (N, 3, 4H, 4W): MATLAB-style bicubic, the same kernel that made the LR images, in
        # fixed tensor ops (upscale_bicubic == imresize), so the network exports to ONNX at any input size
        up = upscale_bicubic(lq, self.scale)
        return self.decoder(self.encoder(up))
