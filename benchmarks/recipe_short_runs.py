"""A short run of every recipe at its real width: does each one train (losses falling) on this machine?

Each recipe in configs/ runs through `srkit train`, exactly as a user would, for a few dozen steps with a
small batch; the table compares the losses of the first and the last logged window (each row of
history.csv is a mean over `--log-every` steps) and ends with the validation scores after the run.

    python benchmarks/recipe_short_runs.py [--steps 60] [--batch 4] [--out runs/short]
    python benchmarks/recipe_short_runs.py --recipes autoencoder_x4 --steps 4 --log-every 2   # quick look

esrgan_x4 starts from the rrdb_psnr_x4 short run when both are listed (as the recipe starts from stage 1);
srgan_lsgan_x4 from the shipped srresnet. Where the recipe asks for VGG19 and its ImageNet weights are not
in the data folder, the run uses VGG16 at the same place (relu5_4 -> relu5_3, conv5_4 -> conv5_3), as
the shipped SRGAN does; the table says which. Not a test: a few dozen steps show a trend, not a result.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ["rrdb_psnr_x4", "esrgan_x4", "srgan_lsgan_x4", "autoencoder_x4", "vanilla_gan_x4", "srgan_small_x4"]
LOSSES = ["loss_g", "l_pix", "l_percep", "l_adv", "loss_d", "d_real", "d_fake"]
VGG16_FOR = {"relu5_4": "relu5_3", "conv5_4": "conv5_3", None: None}


def _history(run: Path, name: str = "history.csv") -> list[dict[str, float]]:
    with open(run / name, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def _fmt(first: dict[str, float], last: dict[str, float], key: str) -> str:
    if key not in first or key not in last:
        return "-"
    arrow = "↓" if last[key] < first[key] else "↑"
    return f"{first[key]:.4g} → {last[key]:.4g} {arrow}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=",".join(RECIPES), help="config names in configs/, comma-separated")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--amp", default="auto", help="none, bf16, fp16 or auto (bf16 where the CPU/GPU has it)")
    parser.add_argument("--out", default="runs/short", help="run folders go here (one per recipe)")
    parser.add_argument("--data-dir", default=None, help="srkit's data folder (default: SRKIT_DATA, ../shared/data)")
    parser.add_argument("--val-images", type=int, default=5, help="validate on the first N images of the val set")
    args = parser.parse_args()
    import torch

    from srkit.archs.vgg import has_offline_weights

    amp = args.amp
    if amp == "auto":
        bf16 = torch.cuda.is_available() or (torch.backends.mkldnn.is_available() and _cpu_has_bf16())
        amp = "bf16" if bf16 else "none"
    vgg19 = has_offline_weights("vgg19", args.data_dir)
    out = Path(args.out).resolve()
    recipes = [r for r in args.recipes.split(",") if r]
    taken = [str(out / name) for name in recipes if (out / name).exists()]
    if taken:  # checked before any run starts, not after the earlier ones have taken minutes
        print(f"{', '.join(taken)} exist(s): remove or give another --out", file=sys.stderr)
        return 2
    rows: list[str] = []
    failed: list[str] = []
    for name in recipes:
        config_path = ROOT / "configs" / f"{name}.yaml"
        cfg = yaml.safe_load(config_path.read_text())
        overrides = [
            f"--name={name}",
            f"--out_dir={out}",
            f"--train.steps={args.steps}",
            f"--train.log_every={args.log_every}",
            f"--train.val_every={args.steps}",
            f"--train.save_every={args.steps}",
            f"--train.amp={amp}",
            "--train.channels_last=true",
            "--train.tensorboard=false",
            f"--data.batch_size={args.batch}",
            f"--data.val_max_images={args.val_images}",
        ]
        if args.data_dir:
            overrides.append(f"--data_dir={args.data_dir}")
        loss = cfg.get("loss", {})
        percep = "-"
        if loss.get("perceptual_weight", 0) > 0:
            arch, layer = loss.get("perceptual_arch", "vgg19"), loss.get("perceptual_layer")
            if arch == "vgg19" and not vgg19:
                arch, layer = "vgg16", VGG16_FOR.get(layer, layer)
                overrides += ["--loss.perceptual_arch=vgg16"]
                if layer:
                    overrides.append(f"--loss.perceptual_layer={layer}")
            percep = f"{arch} {layer or '(last ReLU)'}"
        if name == "esrgan_x4" and "rrdb_psnr_x4" in recipes:
            overrides.append(f"--model.init_from={out / 'rrdb_psnr_x4' / 'checkpoints' / 'best_psnr.safetensors'}")
        run = out / name
        cmd = [sys.executable, "-m", "srkit", "train", str(config_path), *overrides]
        print("$ srkit train " + " ".join([f"configs/{name}.yaml", *overrides]), flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            failed.append(name)
            rows.append(f"| {name} | failed (exit {proc.returncode}) |" + " |" * 9)
            continue
        hist = _history(run)
        first, last = hist[0], hist[-1]
        val = _history(run, "val_history.csv")[-1]
        val_txt = " / ".join(f"{val[k]:.4g}" for k in ("psnr_mean", "ssim_mean", "lpips_mean") if k in val) or "-"
        sec = last.get("sec_per_step", float("nan"))
        cells = [_fmt(first, last, k) for k in LOSSES]
        rows.append(f"| {name} | {percep} | {sec:.2f} | {wall / 60:.1f} | " + " | ".join(cells) + f" | {val_txt} |")

    print(f"\n## Short runs: {args.steps} steps, batch {args.batch}, amp {amp}, channels-last")
    print(f"first → last logged window (mean over {args.log_every} steps); validation on {args.val_images} image(s)\n")
    print("| recipe | perceptual | s/step | min | " + " | ".join(LOSSES) + " | val PSNR / SSIM / LPIPS |")
    print("|---|---|---:|---:|" + "---|" * len(LOSSES) + "---|")
    print("\n".join(rows))
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


def _cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX on x86 Linux (bf16 autocast is slower than fp32 without them)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


if __name__ == "__main__":
    sys.exit(main())
