"""imresize against independent implementations and MATLAB's documented behaviour; modcrop; degrade."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from bicubic_pytorch.core import imresize as reference_imresize

from srkit.data.degradations import bicubic_degrade
from srkit.ops import _phase_taps, imresize, modcrop, upscale_bicubic


def _cubic(x: float) -> float:
    ax = abs(x)
    if ax <= 1:
        return 1.5 * ax**3 - 2.5 * ax**2 + 1
    if ax <= 2:
        return -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
    return 0.0


def _matlab_resize_1d(v: np.ndarray, scale: float, out_len: int) -> np.ndarray:
    """A direct, per-pixel transcription of MATLAB imresize's 1-D step (symmetric padding via np.pad)."""
    width = 4 / scale if scale < 1 else 4.0
    pad = math.ceil(width) + 2
    padded = np.pad(v, pad, mode="symmetric")  # MATLAB repeats the edge sample
    out = np.empty(out_len)
    for i in range(1, out_len + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        js = range(left, left + math.ceil(width) + 2)
        ws = [scale * _cubic(scale * (u - j)) if scale < 1 else _cubic(u - j) for j in js]
        total = sum(ws)
        out[i - 1] = sum(w * padded[j - 1 + pad] for w, j in zip(ws, js, strict=True)) / total
    return out


def _matlab_resize_2d(img: np.ndarray, scale: float) -> np.ndarray:
    h, w = img.shape
    out_h, out_w = math.ceil(h * scale), math.ceil(w * scale)
    cols = np.stack([_matlab_resize_1d(img[:, c], scale, out_h) for c in range(w)], axis=1)
    return np.stack([_matlab_resize_1d(cols[r], scale, out_w) for r in range(out_h)], axis=0)


@pytest.mark.parametrize(("shape", "scale"), [((13, 17), 0.25), ((8, 6), 4.0), ((9, 11), 0.5), ((5, 7), 3.0)])
def test_imresize_matches_per_pixel_transcription(shape: tuple[int, int], scale: float) -> None:
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, size=shape)
    ours = imresize(torch.from_numpy(img), scale).numpy()
    np.testing.assert_allclose(ours, _matlab_resize_2d(img, scale), atol=1e-9)


@pytest.mark.parametrize(("shape", "scale"), [((8, 6), 4), ((2, 2), 4), ((5, 7), 3), ((1, 4), 4), ((9, 3), 2)])
def test_upscale_bicubic_matches_the_transcription(shape: tuple[int, int], scale: int) -> None:
    # The exportable integer upscale (fixed taps per output phase, mirrored edges by concatenation) against
    # the per-pixel MATLAB transcription, down to the 2-pixel edge case where the mirror folds twice.
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 255, size=shape)
    ours = upscale_bicubic(torch.from_numpy(img), scale).numpy()
    np.testing.assert_allclose(ours, _matlab_resize_2d(img, float(scale)), atol=1e-9)
    batch = torch.rand(2, 3, *shape)  # float32, batched: the same as imresize up to rounding
    torch.testing.assert_close(upscale_bicubic(batch, scale), imresize(batch, float(scale)), atol=1e-6, rtol=0)


def test_upscale_bicubic_exports_with_symbolic_sizes_from_a_cold_start() -> None:
    # `srkit export autoencoder` in a fresh process: the taps are computed while torch.export traces, so they
    # must not be tensor ops (they were, and the export failed, while a warm cache hid it in the same process).
    _phase_taps.cache_clear()

    class Up(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return upscale_bicubic(x, 4)

    h, w = torch.export.Dim("h", min=2, max=256), torch.export.Dim("w", min=2, max=256)
    program = torch.export.export(Up(), (torch.rand(1, 3, 8, 9),), dynamic_shapes={"x": {2: h, 3: w}})
    other = torch.rand(1, 3, 13, 6)  # another size than the traced one
    torch.testing.assert_close(program.module()(other), imresize(other, 4.0), atol=1e-6, rtol=0)


def test_upscale_bicubic_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="integer scale >= 2"):
        upscale_bicubic(torch.rand(1, 3, 4, 4), 1)
    with pytest.raises(ValueError, match="float image"):
        upscale_bicubic(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), 4)


@pytest.mark.parametrize("scale", [0.25, 0.5, 1 / 3, 2.0, 4.0])
def test_imresize_matches_bicubic_pytorch(scale: float) -> None:
    # bicubic_pytorch (S. Son) is an independent MATLAB port; it works in float32, hence the tolerance.
    x = torch.rand(2, 3, 37, 29, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 255
    ours = imresize(x, scale)
    ref = reference_imresize(x.float(), scale=scale).double()
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() < 2e-4


def test_imresize_known_values() -> None:
    # imresize(reshape(0:15, 4, 4)', [3 3]) in MATLAB, as printed in bicubic_pytorch's docs
    # (its 6.1505 is a typo: the output is separable, 4 * f(1) + f(0) = 6.1501).
    x = torch.arange(16, dtype=torch.float64).view(4, 4)
    expected = torch.tensor(
        [[0.7506, 2.1004, 3.4503], [6.1501, 7.5000, 8.8499], [11.5497, 12.8996, 14.2494]], dtype=torch.float64
    )
    assert torch.allclose(imresize(x, size=(3, 3)), expected, atol=1e-4)


def test_imresize_preserves_constants_and_ramps() -> None:
    const = torch.full((1, 3, 20, 24), 0.37, dtype=torch.float64)
    assert torch.allclose(imresize(const, 0.25), torch.full((1, 3, 5, 6), 0.37, dtype=torch.float64))
    assert torch.allclose(imresize(const, 4.0), torch.full((1, 3, 80, 96), 0.37, dtype=torch.float64))
    # Cubic convolution reproduces linear functions away from the borders.
    ramp = torch.arange(16, dtype=torch.float64).repeat(16, 1)
    up = imresize(ramp, 2.0)
    u = (torch.arange(1, 33, dtype=torch.float64) / 2 + 0.5 * (1 - 1 / 2)) - 1  # 0-based source coordinate
    assert torch.allclose(up[8, 4:-4], u[4:-4], atol=1e-12)


def test_imresize_uint8_rounds_and_clamps() -> None:
    x = torch.tensor([[0, 255, 0, 255], [255, 0, 255, 0]] * 2, dtype=torch.uint8)
    y = imresize(x, 2.0)
    assert y.dtype == torch.uint8 and y.shape == (8, 8)
    ref = imresize(x.double(), 2.0).round().clamp(0, 255)
    assert torch.equal(y.double(), ref)


def test_imresize_argument_errors() -> None:
    x = torch.rand(4, 4)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(x)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(x, 2.0, size=(8, 8))
    with pytest.raises(ValueError, match="positive"):
        imresize(x, -1.0)


def test_modcrop() -> None:
    x = torch.rand(3, 250, 361)
    y = modcrop(x, 4)
    assert y.shape == (3, 248, 360)
    assert torch.equal(y, x[:, :248, :360])  # crops bottom/right, like MATLAB's modcrop
    with pytest.raises(ValueError, match="smaller than the scale"):
        modcrop(torch.rand(3, 3, 10), 4)


def test_bicubic_degrade_is_8bit_and_quarter_size() -> None:
    gt = torch.rand(3, 32, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    lq = bicubic_degrade(gt, 4)
    assert lq.shape == (3, 8, 6)
    assert torch.equal(lq * 255, (lq * 255).round())
    assert lq.min() >= 0 and lq.max() <= 1
