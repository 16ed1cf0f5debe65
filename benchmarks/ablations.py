"""With vs without: each perceptual-training upgrade of issue 16 measured against one base, same steps, same seed.

Every variant is the base recipe plus one switch, trained through `srkit train` exactly as a user would, from the
same init, on the same data order (seed 0), for the same number of steps; validation is the held-out split of the
training images (never a benchmark set), scored once at the last step. The table gives each variant's
seconds per step (the mean of the logged windows after the first, which holds the warm-up / compilation), its training
wall time and its validation PSNR / SSIM / LPIPS with the change against the base.

    python benchmarks/ablations.py --steps 300 --out ~/srkit-runs/ablations
    python benchmarks/ablations.py --variants base,compile --steps 40       # torch.compile's speed only

Run it again with the same --out and --steps and finished variants are read back, a stopped one resumes exactly
(`srkit train --resume`), so a table can be built over several sessions. Wall time: the training loop's own clock,
summed over sessions (runs from before it kept the clock: their last session's).

Variants (each one switch over the base, configs/srgan_x4.yaml from the shipped srresnet, EMA 0.995 as `srgan`):
  base      SRGAN's loss: L1 + 0.006 MSE(VGG relu5_x) + 0.001 vanilla GAN, SRGAN discriminator
  ragan     the relativistic average GAN (ESRGAN) instead of the vanilla one
  preact    the VGG features before activation (conv5_x instead of relu5_x, ESRGAN)
  unet_sn   Real-ESRGAN's U-Net discriminator with spectral normalisation instead of SRGAN's
  ldl       + LDL's artifact-map loss (Liang et al. 2022) at weight 1, against the EMA generator
  compile   train.compile=true (torch.compile of both networks): the same model, only the speed should move
  multilayer  Real-ESRGAN's perceptual term: L1 on five VGG layers before activation, weights 0.1/0.1/1/1/1
  lowpass   + frequency separation (Fritsche et al. 2019): 10 x L1 between Gaussian (sigma 1) low-passed SR and HR
  accum4    train.accumulate=4: the same batch of 16 as 4 micro-batches of 4 (BatchNorm sees 4 images), for
            users with little memory: the model should barely move, the time should grow a little
  seed1, seed2  the base with another seed (data order, discriminator init): their spread with the base's is the
            noise a difference must beat (printed under the table)

VGG19 weights are not offline here: VGG16 stands in (relu5_4 -> relu5_3, conv5_4 -> conv5_3, conv3_4 -> conv3_3 ...)
and the table says so. Short runs show a direction, not a converged result: read them with their step count.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "configs" / "srgan_x4.yaml"


def _layers(arch: str) -> dict[str, str]:
    """The perceptual layers each variant names, for `arch` (vgg19's conv5_4 is vgg16's conv5_3)."""
    last = "5_4" if arch == "vgg19" else "5_3"
    deep = ("3_4", "4_4", "5_4") if arch == "vgg19" else ("3_3", "4_3", "5_3")
    multi = "{conv1_2: 0.1, conv2_2: 0.1, " + ", ".join(f"conv{d}: 1" for d in deep) + "}"
    return {"relu": f"relu{last}", "conv": f"conv{last}", "multi": multi}


def variants(arch: str) -> dict[str, list[str]]:
    layer = _layers(arch)
    return {
        "base": [],
        "ragan": ["--loss.adversarial=ragan"],
        "preact": [f"--loss.perceptual_layer={layer['conv']}"],
        "unet_sn": ["--discriminator.arch=unet_sn"],
        "ldl": ["--loss.artifact_weight=1.0"],
        "compile": ["--train.compile=true"],
        "multilayer": [
            "--loss.perceptual_layer=null",
            f"--loss.perceptual_layers={layer['multi']}",
            "--loss.perceptual_criterion=l1",
            "--loss.perceptual_weight=0.006",
        ],
        "lowpass": ["--loss.lowpass_weight=10", "--loss.lowpass_sigma=1.0"],
        "accum4": ["--train.accumulate=4"],
        "seed1": ["--train.seed=1"],
        "seed2": ["--train.seed=2"],
    }


def _rows(path: Path) -> list[dict[str, float]]:
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="base,seed1,seed2,ragan,preact,unet_sn,ldl,multilayer,compile")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--init", default="srresnet", help="the generator every variant starts from")
    parser.add_argument("--out", default="runs/ablations", help="one run folder per variant goes here")
    parser.add_argument("--data-dir", default=None, help="srkit's data folder (default: SRKIT_DATA, ../shared/data)")
    parser.add_argument("--val-images", type=int, default=None, help="validate on the first N split images")
    args = parser.parse_args()
    from srkit.archs.vgg import has_offline_weights
    from srkit.device import cpu_description

    arch = "vgg19" if has_offline_weights("vgg19", args.data_dir) else "vgg16"
    table = variants(arch)
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in table]
    if unknown:
        print(f"unknown variant(s) {unknown}; expected names from {', '.join(table)}", file=sys.stderr)
        return 2
    out = Path(args.out).expanduser().resolve()
    common = [
        f"--out_dir={out}",
        f"--model.init_from={args.init}",
        "--data.val=split",
        "--data.split=[0.92,0.08,0.0]",
        f"--data.batch_size={args.batch}",
        f"--train.steps={args.steps}",
        f"--train.log_every={args.log_every}",
        f"--train.val_every={args.steps}",
        f"--train.save_every={args.steps}",
        "--train.tensorboard=false",
        "--train.seed=0",
        "--train.ema_decay=0.995",  # as the shipped srgan; LDL needs the EMA generator
        f"--loss.perceptual_arch={arch}",
        f"--loss.perceptual_layer={_layers(arch)['relu']}",
    ]
    if args.val_images:
        common.append(f"--data.val_max_images={args.val_images}")
    if args.data_dir:
        common.append(f"--data_dir={args.data_dir}")
    results: dict[str, tuple[float, float, dict[str, float]]] = {}
    failed: list[str] = []
    for name in names:
        run = out / name
        summary = run / "summary.json"
        if summary.is_file() and json.loads(summary.read_text())["step"] >= args.steps:
            print(f"== {name}: finished earlier, read from {run}", flush=True)
        else:
            if (run / "checkpoints" / "latest.pt").is_file():  # stopped part-way: continue it exactly
                cmd = ["train", "--resume", str(run)]
            elif run.exists():
                print(f"{run} exists but holds no checkpoint: remove it or give another --out", file=sys.stderr)
                return 2
            else:
                cmd = ["train", str(BASE.relative_to(ROOT)), f"--name={name}", *common, *table[name]]
            print("$ srkit " + " ".join(cmd), flush=True)
            proc = subprocess.run([sys.executable, "-m", "srkit", *cmd], cwd=ROOT, check=False)
            if proc.returncode != 0:
                failed.append(f"{name} (exit {proc.returncode})")
                continue
        ran = json.loads(summary.read_text())  # the training loop's own clock, over all sessions where kept
        wall = ran.get("wall_seconds_total", ran["wall_seconds_this_session"])
        hist = _rows(run / "history.csv")
        steady = [r["sec_per_step"] for r in hist[1:] if "sec_per_step" in r] or [hist[-1]["sec_per_step"]]
        results[name] = (sum(steady) / len(steady), wall, _rows(run / "val_history.csv")[-1])

    base = results.get("base")
    print(f"\n## With vs without: {args.steps} steps each, batch {args.batch}, from `{args.init}`, seed 0")
    print(f"Machine: {cpu_description()}. Perceptual network {arch} (ImageNet). Validation: the held-out 8% split of")
    print("the training images, once at the last step; PSNR/SSIM on Y, border crop 4; LPIPS-alex v0.1 on RGB.\n")
    print("| variant | switch | s/step | wall min | val PSNR | SSIM | LPIPS | dPSNR | dLPIPS |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (sec, wall, val) in results.items():
        switch = " ".join(table[name]).replace("--", "") or "(srgan_x4 as it is)"
        psnr, ssim, lp = val["psnr_mean"], val["ssim_mean"], val.get("lpips_mean", float("nan"))
        if base is not None and name != "base":
            d = f"{psnr - base[2]['psnr_mean']:+.2f} | {lp - base[2].get('lpips_mean', float('nan')):+.4f}"
        else:
            d = "- | -"
        print(f"| {name} | `{switch}` | {sec:.2f} | {wall / 60:.1f} | {psnr:.2f} | {ssim:.4f} | {lp:.4f} | {d} |")
    seeds = [results[n][2] for n in ("base", "seed1", "seed2") if n in results]
    if len(seeds) > 1:
        psnrs = [v["psnr_mean"] for v in seeds]
        lpipss = [v.get("lpips_mean", float("nan")) for v in seeds]
        print(
            f"\nSeed spread of the base ({len(seeds)} seeds): PSNR {min(psnrs):.2f}-{max(psnrs):.2f} dB "
            f"(range {max(psnrs) - min(psnrs):.2f}), LPIPS {min(lpipss):.4f}-{max(lpipss):.4f} "
            f"(range {max(lpipss) - min(lpipss):.4f}): a variant's change smaller than that is noise."
        )
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
