"""Pure image maths every layer shares: MATLAB's bicubic imresize, modcrop, 8-bit quantisation, Gaussian kernels.

Nothing here reads files or keeps state; archs, data, metrics and inference all import it, and it imports
nothing of srkit.
"""

from __future__ import annotations

import functools
import math
from typing import TypeVar

import torch

# _keys_cubic runs on tensors (imresize's taps) and on plain floats (_phase_taps)
_Sample = TypeVar("_Sample", torch.Tensor, float)


def quantize(img: torch.Tensor) -> torch.Tensor:
    """Round [0, 1] images to the 8-bit grid (what saving as an 8-bit PNG does), keeping the dtype."""
    return (img.clamp(0, 1) * 255).round() / 255


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> uint8 levels 0..255 (rounded), same shape."""
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def modcrop(img: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop (..., H, W) at the bottom and right so H and W are multiples of `scale`."""
    h, w = img.shape[-2:]
    if h < scale or w < scale:
        raise ValueError(f"modcrop: image {h}x{w} is smaller than the scale {scale}")
    return img[..., : h - h % scale, : w - w % scale]


def gaussian_kernel1d(sigma: float, radius: int | None = None, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The normalised 1-D Gaussian kernel, 2 * radius + 1 taps; radius defaults to ceil(3 * sigma)."""
    if not sigma >= 0:  # also catches NaN
        raise ValueError(f"gaussian blur sigma must be >= 0, got {sigma}")
    if radius is None:
        # 3 sigma each side keeps all but 0.27% of the mass (scikit-image truncates at 4, OpenCV 8-bit at 3).
        radius = math.ceil(3 * sigma)
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise ValueError(f"gaussian blur radius must be an int >= 0 (kernel of 2 * radius + 1 taps), got {radius!r}")
    if sigma == 0 or radius == 0:
        return torch.ones(1, dtype=dtype)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(x * x) / (2 * sigma * sigma))
    return (k / k.sum()).to(dtype)


def _keys_cubic(x: _Sample) -> _Sample:
    """Keys' cubic convolution kernel with a = -0.5, the one MATLAB's 'bicubic' uses."""
    ax = abs(x)  # a tensor or a plain float (_phase_taps)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


@functools.lru_cache(maxsize=64)
def _contributions(in_len: int, out_len: int, scale: float, antialias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """MATLAB's contributions(): for each output pixel, the input indices (0-based) and their weights.

    Returns (indices, weights), both (out_len, taps); weights are float64 and each row sums to 1.
    """
    kernel_width = 4.0
    shrink = antialias and scale < 1
    if shrink:
        kernel_width /= scale  # widen the kernel: antialiasing when downscaling
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    # Output pixel x maps to input coordinate u (1-based, pixel centres at integers).
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # 1-based
    dist = u[:, None] - indices
    weights = scale * _keys_cubic(scale * dist) if shrink else _keys_cubic(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # Symmetric padding: index -1 -> 0, in_len -> in_len - 1, ... (edge pixels repeated, as in MATLAB).
    mirror = torch.cat([torch.arange(in_len), torch.arange(in_len - 1, -1, -1)])
    idx0 = mirror[(indices.long() - 1) % (2 * in_len)]
    return idx0, weights


def _resize_dim(x: torch.Tensor, dim: int, out_len: int, scale: float, antialias: bool) -> torch.Tensor:
    """Resize x along `dim` (-1 or -2) to out_len samples."""
    idx, w = _contributions(x.shape[dim], out_len, scale, antialias)
    idx, w = idx.to(x.device), w.to(device=x.device, dtype=x.dtype)
    out: torch.Tensor | None = None
    # One gather per tap keeps memory at one output-sized buffer (no (taps, H, W) intermediate).
    for t in range(idx.shape[1]):
        shape = [1] * x.dim()
        shape[dim] = out_len
        term = x.index_select(dim, idx[:, t]) * w[:, t].view(shape)
        out = term if out is None else out + term
    assert out is not None
    return out


def imresize(
    img: torch.Tensor,
    scale: float | None = None,
    *,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """Resize (..., H, W) like MATLAB's imresize(img, scale, 'bicubic'); give `scale` or `size` (H, W).

    Float input is resized in its own dtype, unclamped (bicubic overshoots; quantise afterwards if you
    need pixels). uint8 input is computed in float64 and rounded and clamped back to uint8, as MATLAB does.
    """
    if (scale is None) == (size is None):
        raise ValueError("imresize needs exactly one of scale or size")
    in_h, in_w = img.shape[-2:]
    if size is not None:
        out_h, out_w = size
        scale_h, scale_w = out_h / in_h, out_w / in_w
    else:
        assert scale is not None
        if scale <= 0:
            raise ValueError(f"imresize scale must be positive, got {scale}")
        out_h, out_w = math.ceil(in_h * scale), math.ceil(in_w * scale)
        scale_h = scale_w = scale
    if min(out_h, out_w) < 1:
        raise ValueError(f"imresize output would be empty: {in_h}x{in_w} at scale {scale} -> {out_h}x{out_w}")
    is_uint8 = img.dtype == torch.uint8
    x = img.to(torch.float64) if not img.is_floating_point() else img
    # MATLAB resizes the dimension with the smaller scale first (height first on a tie).
    order = [(-2, out_h, scale_h), (-1, out_w, scale_w)]
    if scale_w < scale_h:
        order.reverse()
    for dim, out_len, s in order:
        if out_len != x.shape[dim] or s != 1:
            x = _resize_dim(x, dim, out_len, s, antialias)
    if is_uint8:
        return x.round().clamp(0, 255).to(torch.uint8)
    return x


@functools.lru_cache(maxsize=8)
def _phase_taps(scale: int) -> tuple[tuple[float, ...], ...]:
    """For an integer upscale: output pixel s*k + j is sum_o taps[j][o + 2] * x[k + o], o in -2..2.

    MATLAB's weights as `_contributions` computes them, for input pixel k = 0 (the weights only depend on the
    phase j), in plain Python floats: no tensor is made, so nothing of this lands in a traced or exported graph.
    """
    taps = []
    for j in range(scale):
        u = (j + 1) / scale + 0.5 * (1 - 1 / scale)  # output pixel j + 1 (1-based) in input coordinates
        left = math.floor(u - 2.0)
        weights = {i: _keys_cubic(u - i) for i in range(left, left + 6)}  # 1-based input indices
        total = sum(weights.values())
        row = [0.0] * 5
        for i, weight in weights.items():
            if weight != 0:
                offset = i - 1  # 0-based, relative to k = 0
                assert -2 <= offset <= 2, offset  # the cubic's support: 2 input pixels either side
                row[offset + 2] += weight / total
        taps.append(tuple(row))
    return tuple(taps)


def _upscale_dim(x: torch.Tensor, dim: int, scale: int) -> torch.Tensor:
    """Integer upscale along dim (-1 or -2): mirror-pad 2, 5-tap sums per phase, interleave the phases."""
    n = x.shape[dim]
    # MATLAB's symmetric padding: the edge pixel repeated, then its neighbour (x1 x0 | x0 x1 ... xn-1 | xn-1 xn-2).
    pad = torch.cat(
        [x.narrow(dim, 1, 1), x.narrow(dim, 0, 1), x, x.narrow(dim, n - 1, 1), x.narrow(dim, n - 2, 1)], dim=dim
    )
    shifted = [pad.narrow(dim, o, n) for o in range(5)]  # shifted[o][k] = x[k + o - 2]
    phases = []
    for taps in _phase_taps(scale):
        acc: torch.Tensor | None = None
        for o, weight in enumerate(taps):
            if weight != 0:
                term = shifted[o] * weight
                acc = term if acc is None else acc + term
        assert acc is not None
        phases.append(acc)
    # (..., n, ...) -> (..., n, scale, ...) -> (..., n * scale, ...): phase j of pixel k lands at k * scale + j
    stacked = torch.stack(phases, dim=dim)
    if dim == -1:
        return stacked.flatten(-2)
    return stacked.flatten(-3, -2)


def upscale_bicubic(img: torch.Tensor, scale: int) -> torch.Tensor:
    """imresize(img, scale) for a float image and an integer scale >= 2, in fixed tensor ops only.

    The same MATLAB bicubic (Keys a = -0.5, mirrored edges) as `imresize`, up to float rounding, but built from
    slices, concatenations and multiply-adds whose shapes follow the input symbolically, so a network that
    pre-upsamples with it (the autoencoder baseline) exports to ONNX with dynamic sizes. Elementwise ops only:
    it runs in the input's dtype even under autocast. Inputs narrower than 2 pixels fall back to `imresize`.
    """
    if not img.is_floating_point() or scale < 2 or scale != int(scale):
        raise ValueError(f"upscale_bicubic takes a float image and an integer scale >= 2, got {img.dtype}, {scale}")
    if min(img.shape[-2:]) < 2:
        return imresize(img, float(scale), antialias=False)
    # MATLAB resizes height first on equal scales.
    return _upscale_dim(_upscale_dim(img, -2, int(scale)), -1, int(scale))
