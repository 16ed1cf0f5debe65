"""How a low-resolution image is made from its HR: the one place training pairs, per-patch degradations and
`srkit data prepare` get their LR from. Default: MATLAB bicubic / scale on the 8-bit grid (the protocol)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from srkit.data.degradations import DegradationStep, apply_pipeline, resize_to, resolve_pipeline

Preprocess = Callable[[torch.Tensor], torch.Tensor]  # HR -> HR, before the LR is made (face crop, resize)


@dataclass(frozen=True)
class LowRes:
    """A degradation pipeline at a scale; `per_sample` when it draws levels, so each patch gets fresh ones."""

    scale: int
    steps: tuple[DegradationStep, ...] = (DegradationStep("bicubic"),)

    @classmethod
    def from_spec(cls, spec: str | Sequence[object], *, scale: int) -> LowRes:
        """From a preset name (bicubic, blur_bicubic, realistic) or a config step list; raises on a bad step."""
        return cls(scale=scale, steps=tuple(resolve_pipeline(spec)))

    @property
    def per_sample(self) -> bool:
        """Whether the pipeline draws anything (noise, or a [lo, hi] range) and so differs per sample."""
        return any(s.name == "noise" or any(isinstance(v, tuple) for v in s.params.values()) for s in self.steps)

    def make(self, gt: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(..., 3, H, W) HR with H, W multiples of the scale -> (..., 3, H/s, W/s) LR on the 8-bit grid."""
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        return apply_pipeline(gt, self.steps, scale=self.scale, generator=generator)


def hr_preprocess(
    *, face_crop: bool = False, face_margin: float = 0.3, hr_size: tuple[int, int] | None = None
) -> Preprocess | None:
    """The HR preparation a recipe asks for: a face crop (margin as a fraction of the face), then a resize."""
    if hr_size is not None and (len(hr_size) != 2 or min(hr_size) < 1):
        raise ValueError(f"hr_size must be [H, W] with both sides >= 1 pixel, got {list(hr_size)}")
    if face_margin < 0:
        raise ValueError(f"face_margin must be >= 0 (a fraction of the face's size), got {face_margin}")
    if not face_crop and hr_size is None:
        return None

    def run(img: torch.Tensor) -> torch.Tensor:
        if face_crop:
            from srkit.data.faces import face_crop as crop

            img = crop(img, margin=face_margin).image
        if hr_size is not None:
            img = resize_to(img, size=hr_size)
        return img

    return run
