"""Upscaling images and folders with any generator: alpha, grayscale and 16-bit carried through."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from srkit import io
from srkit.data.degradations import imresize
from srkit.models import model_scale


def upscale_tensor(model: nn.Module, lq: torch.Tensor, *, device: torch.device) -> torch.Tensor:
    """(3, h, w) or (N, 3, h, w) in [0, 1] -> the model's output in [0, 1], float32 on the CPU."""
    batched = lq.dim() == 4
    x = lq if batched else lq[None]
    param = next(model.parameters(), None)
    dtype = torch.float32 if param is None else param.dtype
    with torch.inference_mode():
        out = model(x.to(device=device, dtype=dtype)).clamp(0, 1).float().cpu()
    return out if batched else out[0]


def upscale_image(model: nn.Module, image: io.LoadedImage, *, device: torch.device) -> io.LoadedImage:
    """Super-resolve the colour with the model; upscale alpha separately with bicubic (no model sees it)."""
    scale = model_scale(model)
    rgb = upscale_tensor(model, image.rgb, device=device)
    alpha = None
    if image.alpha is not None:
        # Alpha is a mask, not a photo: bicubic keeps edges where they were without inventing texture.
        alpha = imresize(image.alpha.to(torch.float64), float(scale)).clamp(0, 1).float()
    return io.LoadedImage(rgb, alpha, image.bit_depth, image.grayscale, None)


@dataclass
class BatchReport:
    """What a batch upscale did: files written, and files that failed with the reason."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def output_path(src: Path, *, roots: Sequence[Path], out_dir: Path, suffix: str, ext: str | None) -> Path:
    """Where the result of `src` goes: its path relative to the input folder it came from, under out_dir."""
    rel = Path(src.name)
    for root in roots:
        if root.is_dir() and src.is_relative_to(root):
            rel = src.relative_to(root)
            break
    new_ext = ext if ext is not None else src.suffix
    if not new_ext.startswith("."):
        new_ext = "." + new_ext
    return out_dir / rel.with_name(f"{rel.stem}{suffix}{new_ext}")


def upscale_files(
    model: nn.Module,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    device: torch.device,
    suffix: str = "",
    ext: str | None = None,
    overwrite: bool = False,
    on_file: Callable[[Path], None] | None = None,
) -> BatchReport:
    """Upscale files and folders into out_dir; a bad file is recorded and the batch goes on."""
    roots = [Path(p) for p in inputs]
    files = io.list_images(roots)
    input_set = {p.resolve() for p in files}
    out_root = Path(out_dir)
    report = BatchReport()
    for src in files:
        dst = output_path(src, roots=roots, out_dir=out_root, suffix=suffix, ext=ext)
        try:
            if dst.resolve() in input_set:
                raise ValueError(f"output {dst} would overwrite an input; choose another -o folder or --suffix")
            if dst.exists() and not overwrite:
                raise FileExistsError(f"output {dst} exists; pass --overwrite to replace it")
            result = upscale_image(model, io.read_image(src), device=device)
            io.write_image(dst, result.rgb, alpha=result.alpha, bit_depth=result.bit_depth, grayscale=result.grayscale)
            report.written.append(dst)
        except (OSError, ValueError, RuntimeError) as err:
            # One bad file must not sink the batch: record it, report at the end, exit non-zero.
            report.failed.append((src, str(err)))
        if on_file is not None:
            on_file(src)
    return report
