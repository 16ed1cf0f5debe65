"""Face-aware upscaling, the dual-model system's purpose: the natural model for the scene, the face model for faces.

The whole image is upscaled by the natural model. Faces are found on that output (at HR resolution a
face that is 20 LR pixels wide is 80 pixels wide, which the Haar detector finds; on the LR image it would
be below the detector's 24-pixel window). Each face's square window (the face plus the same margin the
face model was trained with) is cut from the LR image with some context around it, upscaled by the face
model, and blended back with a feathered mask: 1 inside, a raised-cosine ramp to 0 at the window's edge,
so the two models' outputs meet without a seam. A face whose LR window is far from the size the face
model was trained on (32 LR pixels: 128 px HR crops) is left to the natural model, and the result says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from srkit import image_io
from srkit.data.faces import Box, Detector, crop_window, haar_detector
from srkit.descriptor import Upscaler, describe
from srkit.inference import TileOptions, TileProgress, upscale_image, upscale_tiled

# The face recipes crop a square of 1.6x the face box (margin 0.3) and resize it to 128 px HR (32 LR).
FACE_MARGIN = 0.3
TRAINED_LR_SIDE = 32
# LR window sides the face model is used for: from half to twice its training size. Smaller faces hold too
# few pixels to restore; larger ones are at a scale the model never saw (and already have detail).
FACE_LR_RANGE = (16, 64)
# LR pixels of context run through the face model around each window, so its zero padding is not inside it.
CONTEXT = 8


@dataclass(frozen=True)
class FaceRegion:
    """One detected face: its window in LR and HR pixels and which model made it."""

    face_hr: Box  # the detector's box on the natural model's output
    window_lr: Box  # (x, y, side, side) in the input
    window_hr: Box  # the same square in output pixels
    used: str  # "face" or "natural"
    reason: str


@dataclass
class FaceUpscale:
    """The blended result and what happened to each face."""

    image: image_io.LoadedImage
    scale: int
    regions: list[FaceRegion]

    @property
    def faces_used(self) -> int:
        return sum(r.used == "face" for r in self.regions)


def feather_mask(side: int, *, ramp: int) -> torch.Tensor:
    """(side, side) weights: 1 inside, a raised-cosine ramp of `ramp` pixels down to 0 at every edge."""
    if ramp < 1:
        return torch.ones(side, side)
    t = torch.arange(side, dtype=torch.float32)
    edge = torch.minimum(t, side - 1 - t)  # distance to the nearest edge, per axis
    axis = 0.5 - 0.5 * torch.cos(math.pi * torch.clamp((edge + 0.5) / ramp, 0, 1))
    return axis[:, None] * axis[None, :]


def _hr_boxes_to_windows(boxes: list[Box], *, scale: int, lr_size: tuple[int, int], margin: float) -> list[Box]:
    """Face boxes found on the HR output -> square windows in LR pixels (clamped inside the LR image)."""
    windows = []
    for x, y, w, h in boxes:
        lr_box = (x // scale, y // scale, max(1, math.ceil(w / scale)), max(1, math.ceil(h / scale)))
        windows.append(crop_window(lr_box, lr_size, margin=margin))
    return windows


def upscale_with_faces(
    natural: Upscaler,
    face: Upscaler,
    image: image_io.LoadedImage,
    *,
    device: torch.device,
    options: TileOptions | None = None,
    detector: Detector | None = None,
    lr_range: tuple[int, int] = FACE_LR_RANGE,
    margin: float = FACE_MARGIN,
    progress: TileProgress | None = None,
) -> FaceUpscale:
    """Upscale `image` with `natural`, then every face in range with `face`, feathered in (see the module doc)."""
    natural, face = describe(natural), describe(face)
    scale = natural.scale
    if face.scale != scale:
        raise ValueError(f"the face model upscales x{face.scale}, the natural model x{scale}: they must agree")
    opts = options or TileOptions()
    base = upscale_image(natural, image, device=device, options=opts, progress=progress)
    out = base.rgb.clone()
    height, width = image.rgb.shape[-2:]
    find = detector or haar_detector()
    boxes = list(find(base.rgb))
    regions: list[FaceRegion] = []
    for box, (x, y, side, _) in zip(
        boxes, _hr_boxes_to_windows(boxes, scale=scale, lr_size=(height, width), margin=margin), strict=True
    ):
        window_lr, window_hr = (x, y, side, side), (x * scale, y * scale, side * scale, side * scale)
        low, high = lr_range
        if not low <= side <= high:
            why = "smaller" if side < low else "larger"
            reason = f"window {side} LR px is {why} than the face model's range {low}-{high}: natural model kept"
            regions.append(FaceRegion(box, window_lr, window_hr, "natural", reason))
            continue
        # The window plus context, clipped to the image; the face model runs on it whole.
        x0, y0 = max(0, x - CONTEXT), max(0, y - CONTEXT)
        x1, y1 = min(width, x + side + CONTEXT), min(height, y + side + CONTEXT)
        crop = image.rgb[:, y0:y1, x0:x1]
        sr = upscale_tiled(face, crop, tile=None, device=device, dtype=opts.dtype, channels_last=opts.channels_last)
        # (3, s*(y1-y0), s*(x1-x0)) -> the window's part
        top, left = (y - y0) * scale, (x - x0) * scale
        s_side = side * scale
        face_sr = sr[:, top : top + s_side, left : left + s_side]
        mask = feather_mask(s_side, ramp=max(1, s_side // 6))
        region = out[:, y * scale : y * scale + s_side, x * scale : x * scale + s_side]
        region.mul_(1 - mask).add_(face_sr * mask)
        regions.append(FaceRegion(box, window_lr, window_hr, "face", f"window {side} LR px: face model"))
        if progress is not None:
            progress(len(regions), len(boxes))  # a caller's cancel check runs between faces too
    result = image_io.LoadedImage(out.clamp_(0, 1), base.alpha, base.bit_depth, base.grayscale, None)
    return FaceUpscale(result, scale, regions)
