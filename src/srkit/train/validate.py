"""Validation during training: per-image PSNR/SSIM/LPIPS on a held set, a sample grid, the best scores."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.utils import make_grid

from srkit import image_io
from srkit.data.datasets import PairSet, as_tensor
from srkit.evaluate import ImageScore, SetSummary, evaluate_pair, summarize, write_rows_csv
from srkit.metrics import LPIPS
from srkit.ops import imresize
from srkit.train.logger import RunLogger

METRIC_BETTER: dict[str, Callable[[float, float], float]] = {"psnr": max, "ssim": max, "lpips": min}
Best = dict[str, dict[str, float]]  # metric -> {"value": best mean so far, "step": where}


@dataclass
class ValResult:
    rows: list[ImageScore]
    summary: SetSummary
    grid: torch.Tensor  # (3, H, W) in [0, 1]: LR | bicubic | SR | HR for a few images


def _centre_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return img[..., top : top + size, left : left + size]


@torch.no_grad()
def validate(
    net_g: nn.Module,
    pairs: PairSet,
    *,
    scale: int,
    device: torch.device,
    lpips_model: LPIPS | None,
    set_name: str,
    grid_images: int = 3,
    grid_crop: int = 128,
) -> ValResult:
    """Super-resolve every validation image whole, score it under the protocol, build a sample grid."""
    was_training = net_g.training
    net_g.eval()
    rows: list[ImageScore] = []
    panels: list[torch.Tensor] = []
    try:
        for i, (gt_img, lq_img) in enumerate(zip(pairs.gt, pairs.lq, strict=True)):
            if lq_img is None:
                raise ValueError(f"validation image {pairs.names[i]} has no LR (validation LR is always bicubic)")
            gt_u8, lq_u8 = as_tensor(gt_img), as_tensor(lq_img)
            gt, lq = gt_u8.to(torch.float64) / 255, lq_u8.to(torch.float64) / 255
            sr, row = evaluate_pair(
                net_g,
                gt,
                lq,
                set_name=set_name,
                image=pairs.names[i],
                scale=scale,
                device=device,
                lpips_model=lpips_model,
            )
            rows.append(row)
            if i < grid_images:
                up = F.interpolate(lq[None], scale_factor=scale, mode="nearest")[0]
                bic = imresize(lq_u8.to(torch.float64) / 255, float(scale)).clamp(0, 1)
                for panel in (up, bic, sr, gt):
                    panels.append(_centre_crop(panel, grid_crop).float())
    finally:
        net_g.train(was_training)
    size = min(min(p.shape[-2:]) for p in panels) if panels else 1
    panels = [p[..., :size, :size] for p in panels]
    grid = make_grid(panels, nrow=4, padding=2, pad_value=1.0) if panels else torch.zeros(3, 1, 1)
    return ValResult(rows=rows, summary=summarize(rows)[set_name], grid=grid)


def record_validation(step: int, result: ValResult, *, set_name: str, run_dir: Path, logger: RunLogger) -> None:
    """Write what a validation found: val/stepN.csv and .json, samples/stepN.png, a val_history.csv row."""
    s = result.summary.as_dict()
    logger.val_row(step, {k: v for k, v in s.items() if k != "images"})
    write_rows_csv(run_dir / "val" / f"step{step:07d}.csv", result.rows)
    logger.write_json(f"val/step{step:07d}.json", {"step": step, "set": set_name, **s})
    image_io.write_image(run_dir / "samples" / f"step{step:07d}.png", result.grid)
    logger.image(step, "val/samples", result.grid)
    parts = [f"{m} {s[f'{m}_mean']:.4f}" for m in METRIC_BETTER if s.get(f"{m}_mean") is not None]
    logger.info(f"step {step} val {set_name}: " + ", ".join(parts))


def update_best(best: Best, summary: SetSummary, step: int) -> list[str]:
    """Record each metric whose mean beats its best so far (ties keep the earlier step); the ones that did."""
    gained = []
    for metric, better in METRIC_BETTER.items():
        value = summary.mean(metric)
        if value is None:
            continue
        old = best.get(metric)
        if old is None or better(float(value), old["value"]) != old["value"]:
            best[metric] = {"value": float(value), "step": step}
            gained.append(metric)
    return gained
