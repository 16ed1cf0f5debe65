"""Synthetic images and networks shared by the test modules (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from srkit.models import build_generator


def smooth_rgb(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random uint8 (h, w, 3) image with some detail (coarse noise upsampled, plus fine noise)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2), 3), dtype=np.uint8)
    bands = [np.asarray(Image.fromarray(coarse[:, :, c]).resize((w, h), Image.Resampling.BICUBIC)) for c in range(3)]
    img = np.stack(bands, -1).astype(np.int16) + rng.integers(-8, 9, (h, w, 3))
    return img.clip(0, 255).astype(np.uint8)


def random_srresnet(seed: int = 0, **kwargs: int) -> nn.Module:
    """An SRResNet with random weights and random BatchNorm running statistics, in eval mode."""
    torch.manual_seed(seed)
    model = build_generator("srresnet", **kwargs)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            # Non-trivial running statistics: eval-mode BN must be used by every tile and runtime alike.
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()
