"""PSNR/SSIM protocol edge cases and cross-checks against scikit-image; LPIPS; published bicubic numbers."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from srkit import fs, image_io
from srkit.data.degradations import bicubic_degrade
from srkit.metrics import LPIPS, PROTOCOL, psnr, rgb_to_y, ssim
from srkit.ops import imresize, modcrop, quantize
from srkit.paths import MissingDataError


def _img(seed: int, h: int = 40, w: int = 36) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(3, h // 4, w // 4, generator=g, dtype=torch.float64)
    return quantize(imresize(base, 4.0).clamp(0, 1))  # smooth-ish, on the 8-bit grid


def test_rgb_to_y_bt601_range() -> None:
    black, white = torch.zeros(3, 2, 2), torch.ones(3, 2, 2)
    assert torch.allclose(rgb_to_y(black), torch.full((1, 2, 2), 16.0, dtype=torch.float64))
    assert torch.allclose(rgb_to_y(white), torch.full((1, 2, 2), 235.0, dtype=torch.float64))
    red = torch.zeros(3, 1, 1)
    red[0] = 1
    assert rgb_to_y(red).item() == pytest.approx(16 + 65.481)


def test_identical_images() -> None:
    a = _img(0)
    assert psnr(a, a) == math.inf
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def test_constant_images_closed_form() -> None:
    # Every channel differs by one 8-bit level -> Y differs by (65.481 + 128.553 + 24.966) / 255 everywhere.
    a = torch.full((3, 32, 32), 100 / 255, dtype=torch.float64)
    b = torch.full((3, 32, 32), 101 / 255, dtype=torch.float64)
    dy = 219.0 / 255
    assert psnr(b, a) == pytest.approx(20 * math.log10(255 / dy), abs=1e-9)
    # Zero variance: SSIM reduces to the luminance term.
    ya, yb = 16 + 219 * 100 / 255, 16 + 219 * 101 / 255
    c1 = (0.01 * 255) ** 2
    assert ssim(b, a) == pytest.approx((2 * ya * yb + c1) / (ya**2 + yb**2 + c1), abs=1e-12)


def test_psnr_and_ssim_match_scikit_image_on_y() -> None:
    sr, gt = _img(1), _img(2)
    crop = 4
    y_sr = rgb_to_y(sr)[0, crop:-crop, crop:-crop].numpy()
    y_gt = rgb_to_y(gt)[0, crop:-crop, crop:-crop].numpy()
    assert psnr(sr, gt) == pytest.approx(peak_signal_noise_ratio(y_gt, y_sr, data_range=255), abs=1e-9)
    ref = structural_similarity(
        y_gt, y_sr, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ssim(sr, gt) == pytest.approx(ref, abs=1e-9)


def test_rgb_variant_and_border_crop() -> None:
    gt = _img(3)
    sr = gt.clone()
    sr[:, :4, :] = 1 - sr[:, :4, :]  # damage only the top 4 rows
    assert psnr(sr, gt, crop=4) == math.inf
    assert psnr(sr, gt, crop=0) < 30
    rgb = psnr(sr, gt, crop=0, y_channel=False)
    mse = torch.mean(((sr - gt) * 255) ** 2).item()
    assert rgb == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)
    assert 0 < ssim(sr, gt, crop=0, y_channel=False) < 1


def test_sr_is_quantised_before_scoring() -> None:
    gt = _img(4)
    assert psnr(gt + 0.4 / 255, gt) == math.inf  # rounds back onto gt's 8-bit levels
    assert psnr(gt + 0.6 / 255, gt) < math.inf


def test_metric_input_errors() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(torch.rand(3, 20, 20), torch.rand(3, 20, 24))
    with pytest.raises(ValueError, match="border crop"):
        psnr(torch.rand(3, 8, 8), torch.rand(3, 8, 8), crop=4)
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.rand(3, 16, 16), torch.rand(3, 16, 16), crop=4)
    with pytest.raises(ValueError, match="3 channels"):
        rgb_to_y(torch.rand(1, 8, 8))


def test_lpips_identity_and_ordering(data_dir: Path) -> None:
    metric = LPIPS("alex", data_dir=data_dir)
    gt = _img(5, 64, 64).float()[None]
    noisy = (gt + 0.05 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    noisier = (gt + 0.2 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert metric(gt, gt).item() == pytest.approx(0.0, abs=1e-7)
    d1, d2 = metric(noisy, gt).item(), metric(noisier, gt).item()
    assert 0 < d1 < d2


def test_lpips_missing_weights_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models._api import WeightsEnum

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(MissingDataError) as info:
        LPIPS("alex", data_dir=tmp_path)
    message = str(info.value)
    assert "alexnet_features_imagenet.safetensors" in message and "download also failed" in message


def test_protocol_is_stated() -> None:
    assert "Y (BT.601" in PROTOCOL and "border crop" in PROTOCOL and "LPIPS" in PROTOCOL


@pytest.mark.parametrize(("set_name", "want_psnr", "want_ssim"), [("Set5", 28.43, 0.811), ("Set14", 26.09, 0.705)])
def test_bicubic_reproduces_published_numbers(
    data_dir: Path, set_name: str, want_psnr: float, want_ssim: float
) -> None:
    # Set5 28.42 dB is the published MATLAB figure; Set14 under this protocol on the standard images is 26.09.
    scores = []
    for path in fs.list_images([data_dir / "benchmarks" / set_name]):
        gt = modcrop(quantize(image_io.read_rgb(path).double()), 4)
        sr = imresize(bicubic_degrade(gt, 4), 4.0)
        scores.append((psnr(sr, gt), ssim(sr, gt)))
    assert statistics.fmean(p for p, _ in scores) == pytest.approx(want_psnr, abs=0.015)
    assert statistics.fmean(s for _, s in scores) == pytest.approx(want_ssim, abs=0.002)


def test_quantize_grid() -> None:
    x = torch.tensor([0.0, 0.5 / 255, 1.49 / 255, 1.2, -0.1], dtype=torch.float64)
    assert np.allclose((quantize(x) * 255).numpy(), [0, 0, 1, 255, 0])
