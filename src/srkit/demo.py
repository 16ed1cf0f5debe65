"""`srkit demo` (what `make run` runs): scikit-image's sample photos -> LR files -> each model -> metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from srkit import image_io
from srkit.batch import upscale_files
from srkit.data.degradations import bicubic_degrade
from srkit.descriptor import open_model
from srkit.device import pick_device
from srkit.evaluate import (
    ImageScore,
    SetSummary,
    score_pair,
    summarize,
    summary_table,
    write_rows_csv,
    write_summary_json,
)
from srkit.metrics import LPIPS, PROTOCOL
from srkit.ops import modcrop, quantize
from srkit.paths import MissingDataError

# Photos that ship inside scikit-image (no download); camera is grayscale on purpose.
SAMPLES = ("astronaut", "chelsea", "coffee", "rocket", "camera")


def _sample_images() -> dict[str, np.ndarray]:
    import skimage.data

    return {name: getattr(skimage.data, name)() for name in SAMPLES}


def _montage(rows: list[list[tuple[str, Path]]], path: Path, *, crop: int = 128) -> None:
    """One row per image: a centre crop of each panel, upscaled panels side by side, with labels."""
    tiles: list[list[tuple[str, Image.Image]]] = []
    for row in rows:
        out: list[tuple[str, Image.Image]] = []
        for label, file in row:
            im = Image.open(file).convert("RGB")
            if label == "LR":
                im = im.resize((im.width * 4, im.height * 4), Image.Resampling.NEAREST)
            left, top = (im.width - crop) // 2, (im.height - crop) // 2
            out.append((label, im.crop((left, top, left + crop, top + crop)).resize((crop * 2, crop * 2))))
        tiles.append(out)
    size, pad = crop * 2, 18
    canvas = Image.new("RGB", (len(tiles[0]) * size, len(tiles) * (size + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, tile_row in enumerate(tiles):
        for c, (label, tile) in enumerate(tile_row):
            x, y = c * size, r * (size + pad)
            draw.text((x + 4, y + 3), label, fill="black")
            canvas.paste(tile, (x, y + pad))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def run_demo(
    *, out_dir: Path, models: list[str], data_dir: str | Path | None = None, device: str = "auto"
) -> dict[str, SetSummary]:
    """Write HR/LR files, upscale the LR folder with each model via the normal batch path, score and print."""
    from rich.console import Console

    console = Console(highlight=False)
    torch_device = pick_device(device)
    scale = 4
    hr_dir, lr_dir = out_dir / "hr", out_dir / "lr"
    gts: dict[str, torch.Tensor] = {}
    for name, arr in _sample_images().items():
        t = torch.from_numpy(arr if arr.ndim == 3 else np.repeat(arr[:, :, None], 3, axis=2))
        gt = modcrop(t.permute(2, 0, 1).to(torch.float64) / 255, scale)
        gts[name] = gt
        image_io.write_image(hr_dir / f"{name}.png", gt, grayscale=arr.ndim == 2)
        image_io.write_image(lr_dir / f"{name}.png", bicubic_degrade(gt, scale), grayscale=arr.ndim == 2)
    try:
        lpips_model: LPIPS | None = LPIPS("alex", data_dir=data_dir)
    except MissingDataError as err:
        console.print(f"LPIPS skipped: {err}", markup=False)
        lpips_model = None
    summaries: dict[str, SetSummary] = {}
    montage_rows = {name: [("LR", lr_dir / f"{name}.png")] for name in gts}
    for model_name in models:
        model = open_model(model_name, scale=scale, device=torch_device)
        if model.scale != scale:
            raise ValueError(f"demo runs at x{scale}, model {model_name!r} is x{model.scale}")
        sr_dir = out_dir / "sr" / Path(model_name).stem
        report = upscale_files(model, [lr_dir], sr_dir, device=torch_device, overwrite=True)
        if report.failed:
            raise RuntimeError(f"demo upscale failed: {report.failed}")
        rows: list[ImageScore] = []
        for name, gt in gts.items():
            sr = quantize(image_io.read_rgb(sr_dir / f"{name}.png").to(torch.float64))
            rows.append(score_pair(sr, gt, set_name=model_name, image=name, crop=scale, lpips_model=lpips_model))
            montage_rows[name].append((model_name, sr_dir / f"{name}.png"))
        summary = summarize(rows)
        write_rows_csv(out_dir / f"{Path(model_name).stem}_per_image.csv", rows)
        summaries.update(summary)
    for name in gts:
        montage_rows[name].append(("HR", hr_dir / f"{name}.png"))
    write_summary_json(out_dir / "summary.json", {"scale": scale, "protocol": PROTOCOL, "models": summaries})
    _montage(list(montage_rows.values()), out_dir / "comparison.png")
    console.print(summary_table(summaries, title=f"srkit demo: scikit-image sample photos, x{scale}"))
    console.print(f"outputs in {out_dir}/ (hr, lr, sr/<model>, comparison.png, summary.json)")
    return summaries
