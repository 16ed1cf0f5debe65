"""Figures: the LR / bicubic / models / HR comparison with a zoomed crop, and VGG feature maps of SR vs HR."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from srkit import fs, image_io
from srkit.archs.vgg import VGGFeatures, layer_names
from srkit.descriptor import open_model
from srkit.evaluate import load_pair, resolve_image, super_resolve
from srkit.metrics import rgb_to_y
from srkit.models import display_name

# Comparison figure layout, in pixels: every full image is drawn PANEL wide (height by its aspect), every
# zoomed crop PANEL x PANEL, so a figure is (n * (PANEL + PAD) + PAD) pixels wide.
PANEL = 256
PAD = 8
TITLE = 30
CAPTION = 36
DPI = 100
CROP_COLOUR = "#ff2020"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    _pyplot().close(fig)
    return buf.getvalue()


def crop_size(height: int, width: int, *, scale: int) -> int:
    """Side of the zoomed crop: a quarter of the short side, a multiple of `scale`, 4 LR pixels to 128 HR."""
    side = max(4 * scale, min(128, min(height, width) // 4) // scale * scale)
    return min(side, min(height, width) // scale * scale)


def pick_crop(gt: torch.Tensor, *, size: int, scale: int) -> tuple[int, int]:
    """(top, left) of the size x size window with the most fine detail, on the `scale` grid (so LR aligns).

    Detail is the mean squared luma gradient: plain variance prefers one strong edge (a white
    background against a dark coat), while SR methods differ most on texture.
    """
    h, w = gt.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"crop of {size} px does not fit a {h}x{w} image")
    y = rgb_to_y(gt.to(torch.float64))[None]  # (1, 1, H, W)
    dy, dx = y[..., 1:, :-1] - y[..., :-1, :-1], y[..., :-1, 1:] - y[..., :-1, :-1]  # (1, 1, H-1, W-1)
    energy = F.pad(dy * dy + dx * dx, (0, 1, 0, 1))  # back to (1, 1, H, W)
    score = F.avg_pool2d(energy, size, stride=scale)  # every window on a stride-`scale` grid
    index = int(score.flatten().argmax())
    cols = score.shape[-1]
    return (index // cols) * scale, (index % cols) * scale


def _image(x: torch.Tensor) -> Any:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8 for imshow."""
    return image_io.to_uint8(x.float())


def compare_figure(
    *,
    lq: torch.Tensor,
    panels: Sequence[tuple[str, torch.Tensor]],
    title: str,
    scale: int,
) -> bytes:
    """A PNG: LR | panels (bicubic, models, HR; each (3, H, W) with a caption) over a row of zoomed crops."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    h, w = panels[-1][1].shape[-2:]
    side = crop_size(h, w, scale=scale)
    top, left = pick_crop(panels[-1][1], size=side, scale=scale)
    full_h = round(PANEL * h / w)
    columns: list[tuple[str, torch.Tensor, torch.Tensor]] = [
        (f"LR ({lq.shape[-1]}x{lq.shape[-2]}, nearest x{scale})", lq, lq[:, top // scale :, left // scale :]),
        *((caption, img, img[:, top:, left:]) for caption, img in panels),
    ]
    fig_w = len(columns) * (PANEL + PAD) + PAD
    fig_h = TITLE + CAPTION + full_h + PAD + PANEL + PAD
    fig = plt.figure(figsize=(fig_w / DPI, fig_h / DPI), dpi=DPI)
    fig.text(0.5, 1 - (TITLE / 2) / fig_h, title, ha="center", va="center", fontsize=10)

    def axes(x: int, y: int, width: int, height: int) -> Any:
        """Axes at pixel (x, y) from the top-left, no ticks."""
        ax = fig.add_axes((x / fig_w, 1 - (y + height) / fig_h, width / fig_w, height / fig_h))
        ax.set_axis_off()
        return ax

    for i, (caption, img, crop_src) in enumerate(columns):
        x = PAD + i * (PANEL + PAD)
        is_lr = i == 0
        ax = axes(x, TITLE + CAPTION, PANEL, full_h)
        # LR is stretched to the HR extent with nearest-neighbour pixels, so the same rectangle marks it.
        ax.imshow(_image(img), extent=(0, w, h, 0), interpolation="nearest" if is_lr else "antialiased")
        ax.add_patch(Rectangle((left, top), side, side, fill=False, edgecolor=CROP_COLOUR, linewidth=1.5))
        ax.set_title(caption, fontsize=8, pad=3)
        n = side // scale if is_lr else side
        ax = axes(x, TITLE + CAPTION + full_h + PAD, PANEL, PANEL)
        ax.imshow(_image(crop_src[:, :n, :n]), interpolation="nearest")
    return _png(fig)


def _feature_maps(
    extractor: VGGFeatures, sr: torch.Tensor, gt: torch.Tensor, *, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """VGG features of SR and HR: two (C, h, w) float32 tensors on the CPU."""
    with torch.inference_mode():
        batch = torch.stack([sr, gt]).to(device=device, dtype=torch.float32)
        feats = extractor.to(device)(batch).cpu()
    return feats[0], feats[1]


def select_channels(f_hr: torch.Tensor, *, count: int, order: str) -> list[int]:
    """Channel indices to draw: the first `count`, or the `count` with the highest mean |activation| on HR."""
    if count < 1:
        raise ValueError(f"--channels must be >= 1, got {count}")
    count = min(count, f_hr.shape[0])
    if order == "first":
        return list(range(count))
    if order == "active":
        return [int(c) for c in f_hr.abs().mean(dim=(1, 2)).argsort(descending=True)[:count]]
    raise ValueError(f"channel order must be 'active' or 'first', got {order!r}")


def features_figure(
    *,
    lq: torch.Tensor,
    sr: torch.Tensor,
    gt: torch.Tensor,
    f_sr: torch.Tensor,
    f_hr: torch.Tensor,
    channels: Sequence[int],
    title: str,
    model_label: str,
) -> bytes:
    """A PNG: LR, SR, HR and the per-pixel feature distance on top, then HR | SR maps per channel."""
    plt = _pyplot()
    pairs_per_row = 4
    grid_rows = math.ceil(len(channels) / pairs_per_row)
    fh, fw = f_hr.shape[-2:]
    cell = 2.0  # inches per feature map
    aspect = fh / fw
    fig = plt.figure(figsize=(2 * pairs_per_row * cell, (2 + grid_rows) * cell * aspect + 0.8), dpi=DPI)
    grid = fig.add_gridspec(1 + grid_rows, 2 * pairs_per_row, height_ratios=[2] + [1] * grid_rows)
    fig.suptitle(title, fontsize=11)
    distance = (f_sr - f_hr).pow(2).mean(dim=0)  # (h, w): where the perceptual (feature MSE) loss lives
    top_row = [
        (f"LR {lq.shape[-1]}x{lq.shape[-2]}", _image(lq), "nearest", None),
        (f"SR: {model_label}", _image(sr), "antialiased", None),
        (f"HR {gt.shape[-1]}x{gt.shape[-2]}", _image(gt), "antialiased", None),
        ("feature distance (mean sq. diff.)", distance.numpy(), "nearest", "magma"),
    ]
    for i, (caption, arr, interp, cmap) in enumerate(top_row):
        ax = fig.add_subplot(grid[0, 2 * i : 2 * i + 2])
        ax.imshow(arr, interpolation=interp, cmap=cmap)
        ax.set_title(caption, fontsize=9)
        ax.set_axis_off()
    for k, c in enumerate(channels):
        row, col = 1 + k // pairs_per_row, 2 * (k % pairs_per_row)
        # One colour scale per channel, shared by HR and SR, so brightness is comparable within a pair.
        lo, hi = float(min(f_hr[c].min(), f_sr[c].min())), float(max(f_hr[c].max(), f_sr[c].max()))
        for j, (name, fmap) in enumerate((("HR", f_hr[c]), ("SR", f_sr[c]))):
            ax = fig.add_subplot(grid[row, col + j])
            ax.imshow(fmap.numpy(), cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(f"{name} ch {c}", fontsize=8)
            ax.set_axis_off()
    fig.tight_layout()
    return _png(fig)


def visualize_features(
    *,
    model: str,
    image: str | Path,
    out: str | Path,
    layer: str = "relu2_2",
    arch: str = "vgg16",
    channels: int = 16,
    order: str = "active",
    scale: int | None = None,
    device: torch.device | None = None,
    data_dir: str | Path | None = None,
) -> Path:
    """Write a PNG of the VGG `layer` feature maps of HR and of the model's SR of its bicubic LR."""
    if arch not in ("vgg16", "vgg19"):
        raise ValueError(f"--arch must be vgg16 or vgg19, got {arch!r}")
    valid = layer_names(arch)
    if layer not in valid:  # checked before any model or weights are loaded
        raise ValueError(f"unknown {arch} layer {layer!r}; expected one of: {', '.join(valid)}")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"output must be a .png file, got {out}")
    device = device or torch.device("cpu")
    desc = open_model(model, scale=scale, device=device)
    net_g: nn.Module = desc.model
    scale = desc.scale
    path = resolve_image(image, data_dir=data_dir)
    gt, lq = load_pair(path, scale=scale)
    sr = super_resolve(net_g, lq, device=device)
    extractor = VGGFeatures(arch=arch, layer=layer, data_dir=data_dir)
    f_sr, f_hr = _feature_maps(extractor, sr, gt, device=device)
    picked = select_channels(f_hr, count=channels, order=order)
    label = display_name(model)
    title = (
        f"{path.name}: {arch} {layer} features ({f_hr.shape[0]} channels, {f_hr.shape[-1]}x{f_hr.shape[-2]}), "
        f"{len(picked)} {'most active' if order == 'active' else 'first'} shown; SR by {label} from bicubic x{scale} LR"
    )
    png = features_figure(lq=lq, sr=sr, gt=gt, f_sr=f_sr, f_hr=f_hr, channels=picked, title=title, model_label=label)
    fs.atomic_write(out, png)
    return out
