"""RRDBNet, the ESRGAN generator (Wang et al., "ESRGAN: Enhanced Super-Resolution GANs", ECCV-W 2018).

Module names follow the ESRGAN authors' released models (conv_first, body.N.rdb1.conv1, conv_body,
conv_up1, conv_up2, conv_hr, conv_last), so their state dicts use the same keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Residual scaling (ESRGAN sec. 3.1): each residual is multiplied by 0.2 before it is added back.
RESIDUAL_SCALE = 0.2
# "Smaller initialization" (ESRGAN sec. 3.1): Kaiming-normal weights scaled by 0.1 in the dense blocks.
INIT_SCALE = 0.1


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.2, inplace=True)


def _residual(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """x + 0.2 * r, summed in float32 under autocast: the 69 residual sums of a 23-block trunk are where bf16
    rounding piles up (measured on a random paper-size RRDBNet: 44.0 dB against fp32 with bf16 sums, 48.3 dB
    with float32 ones, at 1.8x instead of 2.1x the fp32 speed); the convs still run in bf16. Outside autocast
    the dtype is left alone (a model cast with .half() stays half)."""
    if x.device.type != "meta" and torch.is_autocast_enabled(x.device.type):  # meta: shape-only runs (summary)
        return x.float() + RESIDUAL_SCALE * r.float()
    return x + RESIDUAL_SCALE * r


def _low_precision(x: torch.Tensor) -> torch.Tensor:
    """x in the autocast dtype when autocast is on (else as is): the block input is cast once, so the dense
    concatenations stay in bf16 instead of promoting to float32 at every torch.cat (and being cast back by the
    next conv). Measured on a random paper-size RRDBNet, 128x128, one thread, channels-last, bf16 autocast on
    AMX: 2.44 s per forward before, about half after; the residual sums stay float32 (_residual)."""
    if x.device.type != "meta" and torch.is_autocast_enabled(x.device.type):
        return x.to(torch.get_autocast_dtype(x.device.type))
    return x


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and every earlier output (dense), residual scaled by 0.2."""

    def __init__(self, width: int = 64, growth: int = 32) -> None:
        super().__init__()
        # conv_k takes width + (k - 1) * growth channels; the first four add `growth` channels, the last maps back.
        self.conv1 = nn.Conv2d(width, growth, 3, padding=1)
        self.conv2 = nn.Conv2d(width + growth, growth, 3, padding=1)
        self.conv3 = nn.Conv2d(width + 2 * growth, growth, 3, padding=1)
        self.conv4 = nn.Conv2d(width + 3 * growth, growth, 3, padding=1)
        self.conv5 = nn.Conv2d(width + 4 * growth, width, 3, padding=1)
        self.act = _lrelu()
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            if conv.weight.is_meta:  # shapes only (weights are loaded next, or FLOPs counted): normal_ on the
                continue  # meta device runs torch's Python reference and imports torch._dynamo, ~3 s here
            nn.init.kaiming_normal_(conv.weight)
            conv.weight.data.mul_(INIT_SCALE)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, C + k*G, H, W) as the features pile up; conv5 maps back to (N, C, H, W)
        h = _low_precision(x)
        x1 = self.act(self.conv1(h))
        x2 = self.act(self.conv2(torch.cat((h, x1), 1)))
        x3 = self.act(self.conv3(torch.cat((h, x1, x2), 1)))
        x4 = self.act(self.conv4(torch.cat((h, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((h, x1, x2, x3, x4), 1))  # no activation before the residual sum
        return _residual(x, x5)


class RRDB(nn.Module):
    """Residual-in-Residual Dense Block: three dense blocks in sequence, wrapped in a 0.2-scaled residual."""

    def __init__(self, width: int = 64, growth: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(width, growth)
        self.rdb2 = ResidualDenseBlock(width, growth)
        self.rdb3 = ResidualDenseBlock(width, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _residual(x, self.rdb3(self.rdb2(self.rdb1(x))))


class RRDBNet(nn.Module):
    """ESRGAN generator: conv, RRDB trunk + conv with a global skip, (nearest x2 + conv) per x2 step, two convs.

    No BatchNorm (ESRGAN sec. 3.1). Works directly on [0, 1] images as the paper's model does; the output is
    not clamped (it can overshoot [0, 1] slightly; callers clamp). At paper size (64 wide, 23 blocks, growth
    32, x4) it has 16,697,987 parameters.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        width: int = 64,
        num_blocks: int = 23,
        growth: int = 32,
        scale: int = 4,
    ) -> None:
        super().__init__()
        if scale not in (2, 4):
            raise ValueError(f"RRDBNet scale must be 2 or 4 (one or two nearest x2 steps), got {scale}")
        self.scale = scale
        self.conv_first = nn.Conv2d(in_channels, width, 3, padding=1)
        self.body = nn.Sequential(*[RRDB(width, growth) for _ in range(num_blocks)])
        self.conv_body = nn.Conv2d(width, width, 3, padding=1)
        self.conv_up1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv_up2 = nn.Conv2d(width, width, 3, padding=1) if scale == 4 else None
        self.conv_hr = nn.Conv2d(width, width, 3, padding=1)
        self.conv_last = nn.Conv2d(width, in_channels, 3, padding=1)
        self.act = _lrelu()

    def _up(self, conv: nn.Conv2d, feat: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, C, 2H, 2W): nearest-neighbour x2, then conv + LeakyReLU (ESRGAN fig. 3)
        return self.act(conv(F.interpolate(feat, scale_factor=2.0, mode="nearest")))

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(lq)
        feat = feat + self.conv_body(self.body(feat))  # global skip over the RRDB trunk
        feat = self._up(self.conv_up1, feat)
        if self.conv_up2 is not None:
            feat = self._up(self.conv_up2, feat)
        # (N, C, sH, sW) -> (N, 3, sH, sW)
        return self.conv_last(self.act(self.conv_hr(feat)))
