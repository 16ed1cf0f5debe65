"""`srkit data prepare`: HR images -> an `HQ/00000.png` + `LQ/00000.png` pair folder, with any degradation."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from srkit import fs, image_io
from srkit.data.datasets import sample_seed
from srkit.data.lowres import LowRes, Preprocess
from srkit.ops import modcrop, quantize


@dataclass
class PrepareReport:
    """Pairs written, and inputs skipped with the reason."""

    written: list[tuple[Path, Path, Path]] = field(default_factory=list)  # (source, HQ, LQ)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def prepare_pairs(
    images: Sequence[Path],
    out_dir: str | Path,
    *,
    lowres: LowRes | None = None,
    preprocess: Preprocess | None = None,
    seed: int = 0,
    overwrite: bool = False,
    on_file: Callable[[Path], None] | None = None,
) -> PrepareReport:
    """Write HQ (modcropped HR) and LQ (lowres: bicubic x4 by default) PNG pairs in input order; skip bad inputs.

    Each pair's random degradation parameters come from a generator seeded by (seed, index), so a
    re-run reproduces the same files. `preprocess` runs on the HR first (e.g. a face crop or a resize
    to 256x256). Existing pair folders are refused unless `overwrite`.
    """
    out = Path(out_dir)
    hq_dir, lq_dir = out / "HQ", out / "LQ"
    resolved_inputs = {p.resolve() for p in images}
    if any(d.resolve() == p.parent for d in (out, hq_dir, lq_dir) for p in resolved_inputs):
        raise ValueError(f"output folder {out} holds input images; choose another folder")
    if not overwrite and any(d.is_dir() and any(d.iterdir()) for d in (hq_dir, lq_dir)):
        raise FileExistsError(f"{out} already holds HQ/ or LQ/ files; pass --overwrite to replace them")
    lowres = lowres or LowRes(4)
    scale = lowres.scale
    report = PrepareReport()
    index = 0
    for src in images:
        try:
            gt = quantize(image_io.read_rgb(src).to(torch.float64))
            if preprocess is not None:
                gt = quantize(preprocess(gt).clamp(0, 1))
            gt = modcrop(gt, scale)
            lq = lowres.make(gt, torch.Generator().manual_seed(sample_seed(seed, index)))
            expected = (gt.shape[-2] // scale, gt.shape[-1] // scale)
            if tuple(lq.shape[-2:]) != expected:
                raise ValueError(f"degradation gave {tuple(lq.shape[-2:])}, expected {expected} (HR / {scale})")
            name = f"{index:05d}.png"
            image_io.write_image(hq_dir / name, gt)
            image_io.write_image(lq_dir / name, lq)
            report.written.append((src, hq_dir / name, lq_dir / name))
            index += 1
        except (OSError, ValueError) as err:
            report.skipped.append((src, str(err)))
        if on_file is not None:
            on_file(src)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["pair", "source"])
    writer.writerows([(hq.name, str(src)) for src, hq, _lq in report.written])
    fs.atomic_write(out / "pairs.csv", buf.getvalue().encode())
    return report
