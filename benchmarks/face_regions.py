"""Face-aware upscaling measured: the natural model alone vs the natural model with the face model on faces.

Scenes: natural HR photos (BSD100) with faces of the held-out LFW test split (identity-disjoint from every
face training image; face-cropped to 128 px as the face recipes do) pasted in, then MATLAB-bicubic x4 LR.
Each scene is upscaled twice through srkit's own paths: `upscale_image` with the natural model, and
`upscale_with_faces` (what `srkit upscale --faces` runs). Scores are over the pasted face squares only,
against the HR: PSNR on Y (border crop 4 inside each square) and LPIPS-alex on RGB. A figure shows one face:
LR (nearest) | natural model | with the face model | HR.

    python benchmarks/face_regions.py --natural srgan --face-model srgan_faces --scenes 8
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from srkit import fs, image_io
from srkit.data.degradations import bicubic_degrade
from srkit.data.faces import face_crop
from srkit.data.sources import group_key, split
from srkit.device import cpu_description
from srkit.face_upscale import upscale_with_faces
from srkit.inference import TileOptions, upscale_image
from srkit.metrics import LPIPS, psnr
from srkit.models import default_face_model, load_model
from srkit.ops import quantize
from srkit.paths import data_root

FACE = 128  # HR face crop side, as in training
SPOTS = ((16, 16), (16, 176), (176, 96))  # (top, left) of the pasted faces in a 320x320 HR scene


def scenes(n: int, data_dir: Path) -> list[tuple[str, torch.Tensor, list[tuple[int, int]]]]:
    """n HR scenes (320x320 crops of BSD100) with LFW test faces pasted at SPOTS."""
    lfw = fs.list_images([data_dir / "faces" / "LFW"])
    test = split(lfw, (0.8, 0.15, 0.05), seed=0, key=group_key("lfw"))["test"]
    photos = fs.list_images([data_dir / "benchmarks" / "BSD100"])
    out = []
    faces = iter(test)
    for k in range(n):
        scene = image_io.read_rgb(photos[k])[:, :320, :320].clone()
        for top, left in SPOTS:
            crop = face_crop(image_io.read_rgb(next(faces)), size=FACE).image
            scene[:, top : top + FACE, left : left + FACE] = quantize(crop)
        out.append((photos[k].stem, scene, list(SPOTS)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--natural", default="srgan", help="the natural model (default srgan)")
    parser.add_argument("--face-model", default=None, help="the face model (default: srgan_faces, else srresnet_faces)")
    parser.add_argument("--scenes", type=int, default=8, help="scenes of 3 faces each (default 8)")
    parser.add_argument("--figure", type=Path, default=None, help="write the figure here (PNG)")
    args = parser.parse_args()

    device = torch.device("cpu")
    root = data_root()
    natural = load_model(args.natural, device=device)
    face_name = args.face_model or default_face_model()
    face = load_model(face_name, device=device)
    lpips = LPIPS("alex").to(device)
    options = TileOptions(dtype=torch.float32)
    scores: dict[str, dict[str, list[float]]] = {
        "natural": {"psnr": [], "lpips": []},
        "faces": {"psnr": [], "lpips": []},
    }
    found = used = total = 0
    example: list[torch.Tensor] = []
    for name, hr, spots in scenes(args.scenes, root):
        lq = bicubic_degrade(hr.to(torch.float64), 4).float().clamp(0, 1)
        image = image_io.LoadedImage(lq, None, 8, False, None)
        plain = upscale_image(natural, image, device=device, options=options).rgb
        blended = upscale_with_faces(natural, face, image, device=device, options=options)
        found += len(blended.regions)
        used += blended.faces_used
        for top, left in spots:
            total += 1
            gt = hr[:, top : top + FACE, left : left + FACE].to(torch.float64)
            for key, sr in (("natural", plain), ("faces", blended.image.rgb)):
                patch = quantize(sr[:, top : top + FACE, left : left + FACE]).to(torch.float64)
                scores[key]["psnr"].append(psnr(patch, gt, crop=4))
                scores[key]["lpips"].append(float(lpips(patch[None].float(), gt[None].float()).item()))
        if not example:
            top, left = spots[0]
            window = (slice(None), slice(top, top + FACE), slice(left, left + FACE))
            lq_patch = lq[:, top // 4 : (top + FACE) // 4, left // 4 : (left + FACE) // 4]
            example = [lq_patch, plain[window], blended.image.rgb[window], hr[window]]
            print(f"figure scene: BSD100 {name}, face at ({top}, {left})")

    print(f"CPU: {cpu_description()}")
    print(
        f"{args.scenes} scenes (BSD100 320x320 crops) x {len(SPOTS)} pasted LFW test faces = {total} faces; "
        f"detected {found}, upscaled by the face model {used}"
    )
    print()
    print(f"| face regions ({total}, 128x128 HR each) | Y-PSNR (dB) | LPIPS-alex |")
    print("|---|---:|---:|")
    for key, label in (
        ("natural", f"`{args.natural}` alone"),
        ("faces", f"`{args.natural}` + `{face_name}` (--faces)"),
    ):
        p, lp = statistics.fmean(scores[key]["psnr"]), statistics.fmean(scores[key]["lpips"])
        print(f"| {label} | {p:.2f} | {lp:.4f} |")
    print()
    print("Protocol: PSNR on Y (BT.601), 4-pixel border crop inside each face square, SR quantised to 8 bits;")
    print("LPIPS v0.1 (AlexNet) on RGB of each square; mean over faces. LR = MATLAB bicubic x4 of the scene.")
    if args.figure is not None and example:
        from srkit.viz import compare_figure

        panels = [
            (f"{args.natural} alone", example[1]),
            (f"{args.natural} + {face_name}", example[2]),
            ("HR", example[3]),
        ]
        title = "face-aware upscaling (--faces): one pasted LFW test face"
        png = compare_figure(lq=example[0], panels=panels, title=title, scale=4)
        fs.atomic_write(args.figure, png)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
