"""Real-ESRGAN's U-Net discriminator: per-pixel logits, spectral norm, gradients to every weight."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from srkit.archs import DISCRIMINATORS, UNetDiscriminatorSN


def test_one_logit_per_pixel_at_any_multiple_of_8() -> None:
    net = DISCRIMINATORS["unet_sn"](width=8)
    for h, w in ((32, 32), (24, 40)):
        assert net(torch.rand(2, 3, h, w)).shape == (2, 1, h, w)
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.rand(1, 3, 30, 32))


def test_spectral_norm_on_all_convs_but_the_first_and_last() -> None:
    net = UNetDiscriminatorSN(width=8)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    normed = [hasattr(m, "parametrizations") and "weight" in m.parametrizations for m in convs]
    assert len(convs) == 10 and normed == [False] + [True] * 8 + [False]
    net.train()
    for _ in range(20):  # power iteration converges: the largest singular value of each normed weight -> 1
        net(torch.rand(1, 3, 16, 16))
    net.eval()
    for conv in convs[1:-1]:
        with torch.no_grad():
            sigma = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2)
        assert float(sigma) == pytest.approx(1.0, abs=0.05)


def test_gradients_reach_every_parameter_and_the_input() -> None:
    torch.manual_seed(0)
    net = UNetDiscriminatorSN(width=8)
    img = torch.rand(2, 3, 16, 16, requires_grad=True)
    net(img).mean().backward()
    assert img.grad is not None and float(img.grad.abs().sum()) > 0
    for name, p in net.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_skip_connections_change_the_output() -> None:
    torch.manual_seed(0)
    with_skip = UNetDiscriminatorSN(width=8).eval()
    without = UNetDiscriminatorSN(width=8, skip=False).eval()
    without.load_state_dict(with_skip.state_dict())
    x = torch.rand(1, 3, 16, 16)
    assert not torch.allclose(with_skip(x), without(x))
