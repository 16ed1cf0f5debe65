"""Score srkit models with a harness srkit did not write: BasicSR's metric functions and the lpips package.

srkit's own protocol (`srkit compare`) is what every table uses; this script re-scores the same models with other
people's code, so a number in a table cannot hide a bug shared by srkit's LR maker, its metrics and its tables:

- LR: BasicSR's MATLAB-style `imresize` (x1/4, antialiased bicubic) of the HR modcropped to 4, rounded to uint8,
  made here and written as PNG (srkit never makes these LR images);
- SR: `srkit upscale --model M --backend torch --precision fp32 --tile 0` on those PNGs (bicubic: BasicSR's
  `imresize` x4 of the LR instead of srkit's);
- PSNR / SSIM: `basicsr.metrics.calculate_psnr` / `calculate_ssim` with `crop_border=4, test_y_channel=True`;
- LPIPS: `lpips.LPIPS(net="alex", version="0.1")` on RGB in [-1, 1], no crop; the AlexNet ImageNet features are
  loaded from the data folder (`weights/imagenet_backbones`), as torchvision would download them.

It runs in the peers' venv (basicsr, lpips, opencv; `scripts/peer_venv.sh`), never srkit's, and calls srkit's
command line as a subprocess:

    .venv-peers/bin/python benchmarks/independent_check.py --srkit .venv/bin/srkit \\
        --models bicubic,srgan,blend=path/to/blend.safetensors --sets Set5,Set14,BSD100 --out /tmp/indep

Prints one markdown table (mean over images per set) and writes it with a per-image CSV under --out.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

import cv2
import lpips
import numpy as np
import torch
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils.matlab_functions import imresize
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
SCALE = 4


def data_dir(given: str | None) -> Path:
    folder = Path(given or os.environ.get("SRKIT_DATA") or ROOT.parent / "shared" / "data")
    if not (folder / "benchmarks").is_dir():
        sys.exit(f"no benchmarks/ folder in {folder}: give --data-dir or set SRKIT_DATA")
    return folder


def lpips_alex(data: Path) -> lpips.LPIPS:
    """LPIPS v0.1 (AlexNet) with the backbone from the data folder: lpips itself would download it."""
    model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    features = load_file(str(data / "weights" / "imagenet_backbones" / "alexnet_features_imagenet.safetensors"))
    loaded = 0
    for slice_name in ("slice1", "slice2", "slice3", "slice4", "slice5"):
        for index, layer in getattr(model.net, slice_name).named_children():
            if isinstance(layer, torch.nn.Conv2d):
                layer.load_state_dict({k: features[f"features.{index}.{k}"] for k in ("weight", "bias")})
                loaded += 1
    if loaded != 5:
        sys.exit(f"loaded {loaded} of AlexNet's 5 conv layers into lpips: its layout changed")
    return model.eval()


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"cannot read {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def make_lr(sets: list[str], data: Path, out: Path) -> dict[str, list[tuple[str, np.ndarray]]]:
    """HR modcropped to the scale, per set; LR PNGs written to out/lr/SET."""
    hr_by_set: dict[str, list[tuple[str, np.ndarray]]] = {}
    for name in sets:
        folder = data / "benchmarks" / name
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".bmp", ".jpg", ".jpeg"})
        if not files:
            sys.exit(f"no images in {folder}")
        (out / "lr" / name).mkdir(parents=True, exist_ok=True)
        hr_by_set[name] = []
        for f in files:
            hr = read_rgb(f)
            h, w = hr.shape[0] // SCALE * SCALE, hr.shape[1] // SCALE * SCALE
            hr = hr[:h, :w]
            lr = to_uint8(imresize(hr.astype(np.float64) / 255.0, 1 / SCALE))
            cv2.imwrite(str(out / "lr" / name / f"{f.stem}.png"), cv2.cvtColor(lr, cv2.COLOR_RGB2BGR))
            hr_by_set[name].append((f.stem, hr))
    return hr_by_set


def super_resolve(srkit: str, label: str, model: str, sets: list[str], out: Path) -> None:
    for name in sets:
        lr_dir, sr_dir = out / "lr" / name, out / "sr" / label / name
        if model == "bicubic":
            sr_dir.mkdir(parents=True, exist_ok=True)
            for f in sorted(lr_dir.glob("*.png")):
                up = to_uint8(imresize(read_rgb(f).astype(np.float64) / 255.0, SCALE))
                cv2.imwrite(str(sr_dir / f.name), cv2.cvtColor(up, cv2.COLOR_RGB2BGR))
            continue
        cmd = [srkit, "upscale", str(lr_dir), "-o", str(sr_dir), "--model", model, "--backend", "torch"]
        cmd += ["--precision", "fp32", "--tile", "0", "--overwrite"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"srkit upscale failed for {label} on {name}:\n{done.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--srkit", default=str(ROOT / ".venv" / "bin" / "srkit"), help="srkit's command line")
    parser.add_argument("--models", default="bicubic,srresnet,srgan", help="LABEL=MODEL or MODEL, comma-separated")
    parser.add_argument("--sets", default="Set5,Set14,BSD100")
    parser.add_argument("--data-dir", default=None, help="data folder (default: $SRKIT_DATA, else ../shared/data)")
    parser.add_argument("--out", type=Path, required=True, help="work folder for LR / SR images and the tables")
    args = parser.parse_args()

    data = data_dir(args.data_dir)
    sets = [s for s in args.sets.split(",") if s]
    models = []
    for item in args.models.split(","):
        label, _, model = item.rpartition("=")
        models.append((label or Path(model).stem, model))
    torch.set_grad_enabled(False)
    metric = lpips_alex(data)
    hr_by_set = make_lr(sets, data, args.out)

    rows = []
    for label, model in models:
        super_resolve(args.srkit, label, model, sets, args.out)
        for name in sets:
            for stem, hr in hr_by_set[name]:
                sr = read_rgb(args.out / "sr" / label / name / f"{stem}.png")
                if sr.shape != hr.shape:
                    sys.exit(f"{label} {name}/{stem}: SR {sr.shape} is not the HR's {hr.shape}")
                # BasicSR's metric functions take HWC images in [0, 255], BGR order for the Y conversion.
                sr_bgr, hr_bgr = sr[..., ::-1].astype(np.float64), hr[..., ::-1].astype(np.float64)
                psnr = calculate_psnr(sr_bgr, hr_bgr, crop_border=SCALE, input_order="HWC", test_y_channel=True)
                ssim = calculate_ssim(sr_bgr, hr_bgr, crop_border=SCALE, input_order="HWC", test_y_channel=True)
                pair = [torch.from_numpy(x.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1 for x in (sr, hr)]
                dist = float(metric(pair[0], pair[1]))
                rows.append({"model": label, "set": name, "image": stem, "psnr": psnr, "ssim": ssim, "lpips": dist})
        print(f"scored {label}", file=sys.stderr)

    with open(args.out / "per_image.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    header = "| model | " + " | ".join(f"{s} PSNR / SSIM / LPIPS" for s in sets) + " |"
    lines = [header, "|---|" + "---:|" * len(sets)]
    for label, _ in models:
        cells = []
        for name in sets:
            mine = [r for r in rows if r["model"] == label and r["set"] == name]
            mean = {k: sum(r[k] for r in mine) / len(mine) for k in ("psnr", "ssim", "lpips")}
            cells.append(f"{mean['psnr']:.2f} / {mean['ssim']:.4f} / {mean['lpips']:.4f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(
        "\nIndependent harness: LR by basicsr imresize (x1/4, uint8); PSNR/SSIM basicsr.metrics (Y, crop 4); "
        "LPIPS lpips 0.1.4 alex v0.1 (RGB, [-1, 1], no crop); mean over images; SR by srkit upscale, fp32, whole."
    )
    table = "\n".join(lines)
    (args.out / "independent.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
