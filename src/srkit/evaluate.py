"""Model x benchmark set -> per-image rows, a summary, a CSV, a JSON and a printed table."""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from srkit import fs, image_io
from srkit.data.degradations import bicubic_degrade
from srkit.metrics import LPIPS, PROTOCOL, psnr, ssim
from srkit.ops import modcrop, quantize
from srkit.paths import MissingDataError, data_root

BENCHMARK_SETS = ("Set5", "Set14", "BSD100")


@dataclass(frozen=True)
class ImageScore:
    """One row of the per-image table."""

    set: str
    image: str
    height: int
    width: int
    psnr: float
    ssim: float
    lpips: float | None


def resolve_set(name_or_path: str, *, data_dir: str | Path | None = None) -> tuple[str, Path]:
    """A benchmark name (Set5, Set14, BSD100, ...) under <data>/benchmarks, or any folder of HR images."""
    path = Path(name_or_path)
    if path.is_dir():
        return path.name, path
    root = data_root(data_dir)
    candidate = root / "benchmarks" / name_or_path
    if not candidate.is_dir():
        known = sorted(p.name for p in (root / "benchmarks").glob("*") if p.is_dir())
        raise MissingDataError(
            f"benchmark set {name_or_path!r} not found: expected a folder {candidate} or a folder "
            f"of HR images (available here: {', '.join(known) or 'none'}; "
            f"`srkit data download {name_or_path}`)"
        )
    return name_or_path, candidate


def _model_dtype(model: nn.Module) -> torch.dtype:
    """float64 for parameter-free models (bicubic: exact arithmetic), else the weights' dtype."""
    param = next(model.parameters(), None)
    return torch.float64 if param is None else param.dtype


def super_resolve(
    model: nn.Module, lq: torch.Tensor, *, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(3, h, w) in [0, 1] -> (3, sh, sw) in [0, 1] on the CPU, float64; `dtype` bf16/fp16 runs under autocast."""
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        x = lq.to(device=device, dtype=_model_dtype(model))[None]
        sr = model(x)[0].to("cpu", torch.float64)
    if not bool(torch.isfinite(sr).all()):
        raise ValueError(f"the model ({type(model).__name__}) produced NaN or infinite values: its weights are broken")
    return sr.clamp(0, 1)


def benchmark_images(folder: Path) -> list[Path]:
    """The HR images of a benchmark folder, sorted; MissingDataError when there are none."""
    paths = fs.list_images([folder])
    if not paths:
        raise MissingDataError(f"no images in benchmark folder {folder}")
    return paths


def load_pair(path: Path, *, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(gt, lq) of one HR file under the protocol: modcrop, MATLAB bicubic, 8-bit LR; float64 (3, H, W)."""
    # HR files are 8-bit: snap to the exact k/255 grid in float64 before degrading.
    gt = modcrop(quantize(image_io.read_rgb(path).to(torch.float64)), scale)
    return gt, bicubic_degrade(gt, scale)


def score_folder(
    model: nn.Module,
    set_name: str,
    folder: Path,
    *,
    scale: int,
    device: torch.device,
    lpips_model: LPIPS | None,
    save_dir: Path | None = None,
    y_channel: bool = True,
    on_image: Callable[[str], None] | None = None,
    on_error: Callable[[Path, str], None] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Iterator[ImageScore]:
    """Degrade each HR image (modcrop, MATLAB bicubic, 8-bit LR), super-resolve it and score it.

    With `on_error`, an image that cannot be read or scored is reported there and the set goes on; without
    it the error is raised.
    """
    for path in benchmark_images(folder):
        try:
            gt, lq = load_pair(path, scale=scale)
            if min(lq.shape[-2:]) < 1:
                raise ValueError(f"{gt.shape[-1]}x{gt.shape[-2]} is smaller than one LR pixel at x{scale}")
            sr = super_resolve(model, lq, device=device, dtype=dtype)
            if sr.shape != gt.shape:
                raise ValueError(f"model output {tuple(sr.shape)} does not match HR {tuple(gt.shape)}")
            row = score_pair(
                sr,
                gt,
                set_name=set_name,
                image=path.name,
                crop=scale,
                lpips_model=lpips_model,
                y_channel=y_channel,
            )
            if save_dir is not None:
                image_io.write_image(save_dir / set_name / f"{path.stem}.png", sr)
        except (OSError, ValueError, RuntimeError) as err:
            if on_error is None:
                raise
            on_error(path, str(err))
            row = None
        if on_image is not None:
            on_image(path.name)
        if row is not None:
            yield row


def score_pair(
    sr: torch.Tensor,
    gt: torch.Tensor,
    *,
    set_name: str,
    image: str,
    crop: int,
    lpips_model: LPIPS | None,
    y_channel: bool = True,
) -> ImageScore:
    """Score one (3, H, W) SR image against its HR under the protocol (SR is quantised inside)."""
    dist = None
    if lpips_model is not None:
        dev = next(lpips_model.parameters()).device
        dist = float(lpips_model(quantize(sr)[None].to(dev), gt[None].to(dev)).item())
    return ImageScore(
        set=set_name,
        image=image,
        height=gt.shape[-2],
        width=gt.shape[-1],
        psnr=psnr(sr, gt, crop=crop, y_channel=y_channel),
        ssim=ssim(sr, gt, crop=crop, y_channel=y_channel),
        lpips=dist,
    )


def summarize(rows: Sequence[ImageScore]) -> dict[str, dict[str, float | int | None]]:
    """Per set: image count and mean / std (population, over images) of each metric."""
    out: dict[str, dict[str, float | int | None]] = {}
    for set_name in dict.fromkeys(r.set for r in rows):
        sub = [r for r in rows if r.set == set_name]
        entry: dict[str, float | int | None] = {"images": len(sub)}
        for metric in ("psnr", "ssim", "lpips"):
            values = [getattr(r, metric) for r in sub]
            if any(v is None for v in values):
                entry[f"{metric}_mean"] = entry[f"{metric}_std"] = None
                continue
            finite = [float(v) for v in values if math.isfinite(v)]
            entry[f"{metric}_mean"] = statistics.fmean(finite) if finite else math.inf
            entry[f"{metric}_std"] = statistics.pstdev(finite) if len(finite) > 1 else 0.0
        out[set_name] = entry
    return out


def _atomic_text(path: Path, text: str) -> None:
    fs.atomic_write(path, text.encode("utf-8"))


def write_rows_csv(path: Path, rows: Sequence[ImageScore]) -> None:
    """Per-image table as CSV (atomic)."""
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(ImageScore.__dataclass_fields__))
    writer.writeheader()
    for r in rows:
        writer.writerow(asdict(r))
    _atomic_text(path, buf.getvalue())


def write_summary_json(path: Path, summary: dict[str, Any]) -> None:
    """Summary as JSON (atomic)."""
    _atomic_text(path, json.dumps(summary, indent=2, allow_nan=True) + "\n")


def summary_table(
    summary: dict[str, dict[str, float | int | None]], *, title: str, protocol_text: str = PROTOCOL
) -> Any:
    """A rich Table of mean +- std per set, captioned with the metric protocol."""
    from rich.table import Table

    table = Table(title=title, caption=f"Protocol: {protocol_text}", caption_justify="left")
    for col in ("set", "images", "PSNR (dB)", "SSIM", "LPIPS"):
        table.add_column(col, justify="left" if col == "set" else "right")

    def cell(entry: dict[str, float | int | None], metric: str, digits: int) -> str:
        mean, std = entry.get(f"{metric}_mean"), entry.get(f"{metric}_std")
        if mean is None or std is None:
            return "-"
        return f"{mean:.{digits}f} ± {std:.{digits}f}"

    for set_name, entry in summary.items():
        table.add_row(
            set_name,
            str(entry["images"]),
            cell(entry, "psnr", 2),
            cell(entry, "ssim", 4),
            cell(entry, "lpips", 4),
        )
    return table
