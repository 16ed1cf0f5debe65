"""The one evaluation path: model x (HR, LR) pairs -> per-image rows and a typed summary per set.

`evaluate_pair` runs a model on one LR image (inference.run_model) and scores the SR against its HR under
the protocol; `evaluate_images` does it over a set, going on past a bad image when asked; `evaluate_sets`
over several. `srkit evaluate`, `srkit compare`, validation during training, the demo, the release script
and the peer benchmark all score through `evaluate_pair`, so their numbers cannot disagree.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import statistics
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from srkit import fs, image_io
from srkit.data.degradations import bicubic_degrade
from srkit.data.lowres import LowRes
from srkit.descriptor import Upscaler
from srkit.inference import run_model
from srkit.metrics import LPIPS, PROTOCOL, psnr, ssim
from srkit.ops import modcrop, quantize
from srkit.paths import MissingDataError, data_root
from srkit.shard import Shard

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


def resolve_image(name_or_path: str | Path, *, data_dir: str | Path | None = None) -> Path:
    """An image file, or SET/FILE naming one in a benchmark set (`Set14/baboon.png` -> <data>/benchmarks/Set14/...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    parts = path.parts
    if len(parts) == 2 and not path.is_absolute():
        try:
            _, folder = resolve_set(parts[0], data_dir=data_dir)
        except MissingDataError:
            folder = None
        if folder is not None:
            if (folder / parts[1]).is_file():
                return folder / parts[1]
            known = ", ".join(p.name for p in benchmark_images(folder)[:6])
            raise FileNotFoundError(
                f"image file not found: {str(name_or_path)!r}, neither here nor in benchmark set {parts[0]} "
                f"({folder}), which holds e.g. {known}"
            )
    raise FileNotFoundError(
        f"image file not found: {str(name_or_path)!r} (give an image file, or SET/FILE for one of a benchmark set, "
        "e.g. Set14/baboon.png)"
    )


def super_resolve(
    model: Upscaler, lq: torch.Tensor, *, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(3, h, w) in [0, 1] -> (3, sh, sw) in [0, 1] on the CPU, float64 (inference.run_model, whole image)."""
    return run_model(model, lq[None], device=device, dtype=dtype)[0].to("cpu", torch.float64)


def benchmark_images(folder: Path) -> list[Path]:
    """The HR images of a benchmark folder, sorted; MissingDataError when there are none."""
    paths = fs.list_images([folder])
    if not paths:
        raise MissingDataError(f"no images in benchmark folder {folder}")
    return paths


def load_pair(path: Path, *, scale: int, lowres: LowRes | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(gt, lq) of one HR file under the protocol: modcrop, MATLAB bicubic, 8-bit LR; float64 (3, H, W).

    `lowres` replaces the bicubic LR by another degradation (e.g. blur_bicubic); its random draws, if any,
    come from a generator seeded per image name, so every model and every run sees the same LR.
    """
    # HR files are 8-bit: snap to the exact k/255 grid in float64 before degrading.
    gt = modcrop(quantize(image_io.read_rgb(path).to(torch.float64)), scale)
    if lowres is None:
        return gt, bicubic_degrade(gt, scale)
    if lowres.scale != scale:
        raise ValueError(f"degradation is for x{lowres.scale}, the model upscales x{scale}")
    return gt, lowres.make(gt, torch.Generator().manual_seed(zlib.crc32(path.name.encode("utf-8"))))


@dataclass(frozen=True)
class EvalImage:
    """One image of a set to evaluate: its name and how to get its (gt, lq), float64 (3, H, W) in [0, 1]."""

    name: str
    load: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    source: Path | None = None  # the HR file, for error reports


Degradation = str | Sequence[object] | None  # a preset name or a step list; None: the protocol's bicubic LR


def make_lowres(degradation: Degradation, *, scale: int) -> LowRes | None:
    """The LowRes of a degradation spec at a scale; None for the protocol's bicubic (bicubic_degrade)."""
    if degradation is None or degradation == "bicubic":
        return None
    return LowRes.from_spec(degradation, scale=scale)


def folder_images(folder: Path, *, scale: int, lowres: LowRes | None = None) -> list[EvalImage]:
    """A folder of HR images under the protocol (modcrop, MATLAB bicubic LR on the 8-bit grid, or `lowres`),
    sorted."""
    return [
        EvalImage(p.name, functools.partial(load_pair, p, scale=scale, lowres=lowres), p)
        for p in benchmark_images(folder)
    ]


def evaluate_pair(
    model: Upscaler,
    gt: torch.Tensor,
    lq: torch.Tensor,
    *,
    set_name: str,
    image: str,
    scale: int,
    device: torch.device,
    lpips_model: LPIPS | None,
    dtype: torch.dtype = torch.float32,
    y_channel: bool = True,
) -> tuple[torch.Tensor, ImageScore]:
    """Super-resolve `lq` with the model and score the SR against `gt`; (sr float64 on the CPU, its row)."""
    if min(lq.shape[-2:]) < 1:
        raise ValueError(f"{gt.shape[-1]}x{gt.shape[-2]} is smaller than one LR pixel at x{scale}")
    sr = super_resolve(model, lq, device=device, dtype=dtype)
    if sr.shape != gt.shape:
        raise ValueError(f"model output {tuple(sr.shape)} does not match HR {tuple(gt.shape)}")
    score = score_pair(sr, gt, set_name=set_name, image=image, crop=scale, lpips_model=lpips_model, y_channel=y_channel)
    return sr, score


OnResult = Callable[[EvalImage, torch.Tensor, torch.Tensor, torch.Tensor, ImageScore], None]  # image, gt, lq, sr, row


def evaluate_images(
    model: Upscaler,
    images: Iterable[EvalImage],
    *,
    set_name: str,
    scale: int,
    device: torch.device,
    lpips_model: LPIPS | None,
    dtype: torch.dtype = torch.float32,
    y_channel: bool = True,
    on_result: OnResult | None = None,
    on_error: Callable[[Path | str, str], None] | None = None,
) -> list[ImageScore]:
    """evaluate_pair over a set. With `on_error`, an image that cannot be read or scored is reported there
    and the set goes on; without it the error is raised. `on_result` sees each scored image (figures, saving)."""
    rows = []
    for image in images:
        try:
            gt, lq = image.load()
            sr, row = evaluate_pair(
                model,
                gt,
                lq,
                set_name=set_name,
                image=image.name,
                scale=scale,
                device=device,
                lpips_model=lpips_model,
                dtype=dtype,
                y_channel=y_channel,
            )
            if on_result is not None:
                on_result(image, gt, lq, sr, row)
        except (OSError, ValueError, RuntimeError) as err:
            if on_error is None:
                raise
            on_error(image.source or image.name, str(err))
            continue
        rows.append(row)
    return rows


@dataclass
class Evaluation:
    """A model over several sets: every per-image row, the summary per set, and the images left out."""

    rows: list[ImageScore] = field(default_factory=list)
    failed: list[tuple[Path | str, str]] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, SetSummary]:
        return summarize(self.rows)


def evaluate_sets(
    model: Upscaler,
    sets: Sequence[tuple[str, Path]],
    *,
    scale: int,
    device: torch.device,
    lpips_model: LPIPS | None,
    dtype: torch.dtype = torch.float32,
    y_channel: bool = True,
    on_result: OnResult | None = None,
    on_image: Callable[[str, str], None] | None = None,
    shard: Shard | None = None,
    degradation: Degradation = None,
) -> Evaluation:
    """evaluate_images over named HR folders (protocol LR, or `degradation`'s), going on past bad images
    (Evaluation.failed).

    `shard` (under torchrun): only this rank's share of each set; merge the ranks' results with merge_evaluations.
    """
    result = Evaluation()
    lowres = make_lowres(degradation, scale=scale)

    def failed(source: Path | str, reason: str) -> None:
        result.failed.append((source, reason))

    for set_name, folder in sets:

        def seen(image: EvalImage, *args: object, set_name: str = set_name) -> None:
            if on_result is not None:
                on_result(image, *args)  # type: ignore[arg-type]
            if on_image is not None:
                on_image(set_name, image.name)

        result.rows += evaluate_images(
            model,
            (shard or Shard()).take(folder_images(folder, scale=scale, lowres=lowres)),
            set_name=set_name,
            scale=scale,
            device=device,
            lpips_model=lpips_model,
            dtype=dtype,
            y_channel=y_channel,
            on_result=seen,
            on_error=failed,
        )
    return result


def merge_evaluations(parts: Sequence[Evaluation], sets: Sequence[tuple[str, Path]]) -> Evaluation:
    """The ranks' results of a sharded evaluation as one, rows in the order one process gives them (sets in
    order, images as folder_images lists them), so the summary and the CSV do not depend on the number of ranks."""
    if len(parts) == 1:
        return parts[0]
    position = {
        (set_name, path.name): (i, j)
        for i, (set_name, folder) in enumerate(sets)
        for j, path in enumerate(benchmark_images(folder))
    }
    every = [r for part in parts for r in part.rows]
    rows = sorted(every, key=lambda r: position.get((r.set, r.image), (len(sets), 0)))
    return Evaluation(rows=rows, failed=[f for part in parts for f in part.failed])


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


@dataclass(frozen=True)
class SetSummary:
    """One set's image count and the mean / population std over images of each metric (None: not measured)."""

    images: int
    psnr_mean: float | None = None
    psnr_std: float | None = None
    ssim_mean: float | None = None
    ssim_std: float | None = None
    lpips_mean: float | None = None
    lpips_std: float | None = None

    def mean(self, metric: str) -> float | None:
        """The mean of psnr, ssim or lpips."""
        if metric not in METRICS:
            raise KeyError(f"metric {metric!r} unknown; expected one of {', '.join(METRICS)}")
        value: float | None = getattr(self, f"{metric}_mean")
        return value

    def std(self, metric: str) -> float | None:
        if metric not in METRICS:
            raise KeyError(f"metric {metric!r} unknown; expected one of {', '.join(METRICS)}")
        value: float | None = getattr(self, f"{metric}_std")
        return value

    def as_dict(self) -> dict[str, float | int | None]:
        """The JSON layout: images, psnr_mean, psnr_std, ssim_mean, ..."""
        return asdict(self)


METRICS = ("psnr", "ssim", "lpips")


def summarize(rows: Sequence[ImageScore]) -> dict[str, SetSummary]:
    """Per set, in first-seen order: image count and mean / std (population, over images) of each metric."""
    out: dict[str, SetSummary] = {}
    for set_name in dict.fromkeys(r.set for r in rows):
        sub = [r for r in rows if r.set == set_name]
        stats: dict[str, float | None] = {}
        for metric in METRICS:
            values = [getattr(r, metric) for r in sub]
            if any(v is None for v in values):
                stats[f"{metric}_mean"] = stats[f"{metric}_std"] = None
                continue
            finite = [float(v) for v in values if math.isfinite(v)]
            stats[f"{metric}_mean"] = statistics.fmean(finite) if finite else math.inf
            stats[f"{metric}_std"] = statistics.pstdev(finite) if len(finite) > 1 else 0.0
        out[set_name] = SetSummary(images=len(sub), **stats)
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


def _jsonable(obj: object) -> object:
    if isinstance(obj, SetSummary):
        return obj.as_dict()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_summary_json(path: Path, summary: dict[str, Any]) -> None:
    """Summary as JSON (atomic); SetSummary values in their images / psnr_mean / psnr_std ... layout."""
    _atomic_text(path, json.dumps(summary, indent=2, allow_nan=True, default=_jsonable) + "\n")


def summary_table(summary: dict[str, SetSummary], *, title: str, protocol_text: str = PROTOCOL) -> Any:
    """A rich Table of mean +- std per set, captioned with the metric protocol."""
    from rich.table import Table

    table = Table(title=title, caption=f"Protocol: {protocol_text}", caption_justify="left")
    for col in ("set", "images", "PSNR (dB)", "SSIM", "LPIPS"):
        table.add_column(col, justify="left" if col == "set" else "right")

    def cell(entry: SetSummary, metric: str, digits: int) -> str:
        mean, std = entry.mean(metric), entry.std(metric)
        if mean is None or std is None:
            return "-"
        return f"{mean:.{digits}f} ± {std:.{digits}f}"

    for set_name, entry in summary.items():
        table.add_row(
            set_name,
            str(entry.images),
            cell(entry, "psnr", 2),
            cell(entry, "ssim", 4),
            cell(entry, "lpips", 4),
        )
    return table
