"""`srkit train`, `plot`, `interpolate`, `fuse`, `average`, `viz features`, `summary`: making and inspecting models."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from srkit.cli.common import SCALE_HELP, add_device_args, make_console, refuse_existing, scale_arg


def cmd_train(args: argparse.Namespace) -> int:
    """srkit train CONFIG [--section.key=value ...] [--resume RUN_DIR]."""
    from srkit.config import load_config
    from srkit.train.loop import fit

    if args.resume:
        # The run's own resolved config, with any overrides on top (e.g. --train.steps=... to extend it).
        config_path = Path(args.resume) / "config.yaml"
        if args.config is not None:
            raise ValueError("give either a CONFIG or --resume RUN_DIR, not both (the run keeps its own config)")
    else:
        if args.config is None:
            raise ValueError("srkit train needs a CONFIG.yaml (see configs/) or --resume RUN_DIR")
        config_path = Path(args.config)
    config = load_config(config_path, args.overrides)
    with _sigterm_as_interrupt():
        run_dir = fit(config, resume=args.resume)
    print(f"run folder: {run_dir}")
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM (a session's or a scheduler's stop) during training: unwound like Ctrl-C, so the run's summary.json
    is written with the reason; latest.pt stays the last one saved, and `srkit train --resume RUN` goes on."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        raise Terminated(f"stopped by {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_plot(args: argparse.Namespace) -> int:
    """srkit plot RUN_DIR: training and validation curves as a PNG."""
    from srkit.train.plot import plot_run

    out = plot_run(Path(args.run_dir), out=Path(args.out) if args.out else None)
    print(f"wrote {out}")
    return 0


def _choose_on(args: argparse.Namespace, *, knob: str, values_arg: str, make: Any, more: str) -> float:
    """--choose-on: the model `make(value)` for every value of the comma list `values_arg` scored on the
    validation folder, the table printed, and the value with the lowest LPIPS at least --min-psnr-gain dB above
    bicubic returned."""
    from srkit.device import pick_device
    from srkit.interpolate import choose_alpha, sweep
    from srkit.metrics import LPIPS

    raw = getattr(args, values_arg)
    try:
        values = [float(v) for v in raw.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{values_arg} must be comma-separated numbers, got {raw!r}") from None
    device = pick_device(args.device)
    lpips_model = LPIPS("alex", data_dir=args.data_dir).to(device)
    scores, bicubic = sweep(make, Path(args.choose_on), values=values, device=device, lpips_model=lpips_model)
    chosen = choose_alpha(scores, bicubic_psnr=bicubic, min_gain=args.min_psnr_gain, what=knob, more=more)
    print(f"validation images: {args.choose_on} (bicubic PSNR {bicubic:.2f} dB)")
    print(f"| {knob} | PSNR | SSIM | LPIPS |\n|---:|---:|---:|---:|")
    for s in scores:
        mark = " (chosen)" if s is chosen else ""
        lpips = "-" if s.lpips is None else f"{s.lpips:.4f}"
        print(f"| {s.alpha:g}{mark} | {s.psnr:.2f} | {s.ssim:.4f} | {lpips} |")
    return chosen.alpha


def cmd_interpolate(args: argparse.Namespace) -> int:
    """srkit interpolate A B --alpha X -o OUT: (1 - X) * A + X * B, weight by weight (ESRGAN sec. 3.4).

    With --choose-on VAL_FOLDER: every alpha of --alphas scored on those HR images, the table printed, and the
    blend with the lowest LPIPS among those at least --min-psnr-gain dB above bicubic written.
    """
    from srkit.interpolate import blends, interpolate_weights

    out = Path(args.output)
    refuse_existing(out, overwrite=args.overwrite)
    alpha = args.alpha
    if args.choose_on:
        make = blends(Path(args.a), Path(args.b))
        alpha = _choose_on(args, knob="alpha", values_arg="alphas", make=make, more="smaller alphas")
    interpolate_weights(Path(args.a), Path(args.b), alpha, out)
    print(f"wrote {out} = {1 - alpha:g} * {args.a} + {alpha:g} * {args.b}")
    return 0


def cmd_fuse(args: argparse.Namespace) -> int:
    """srkit fuse LOW HIGH --sigma S -o OUT: LOW's output below a Gaussian of S HR pixels, HIGH's above it.

    With --choose-on VAL_FOLDER: every sigma of --sigmas scored on those HR images, the table printed, and the
    fusion with the lowest LPIPS among those at least --min-psnr-gain dB above bicubic written.
    """
    from srkit.interpolate import fuse_models, fusions

    out = Path(args.output)
    refuse_existing(out, overwrite=args.overwrite)
    sigma = args.sigma
    if args.choose_on:
        make = fusions(Path(args.low), Path(args.high))
        sigma = _choose_on(args, knob="sigma", values_arg="sigmas", make=make, more="larger sigmas")
    fuse_models(Path(args.low), Path(args.high), sigma, out)
    print(f"wrote {out} = {args.low} below a Gaussian of sigma {sigma:g} HR px + {args.high} above it")
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    """srkit average A B [C ...] -o OUT: the mean of several checkpoints of one architecture, weight by weight."""
    from srkit.interpolate import average_weights

    out = Path(args.output)
    refuse_existing(out, overwrite=args.overwrite)
    average_weights([Path(w) for w in args.weights], out)
    print(f"wrote {out} = mean of {len(args.weights)} checkpoints")
    return 0


def cmd_viz_features(args: argparse.Namespace) -> int:
    """srkit viz features --model M --image IMG -o OUT.png: VGG feature maps of SR vs HR."""
    from srkit.device import pick_device
    from srkit.viz import visualize_features

    out = visualize_features(
        model=args.model,
        image=args.image,
        out=args.output,
        layer=args.layer,
        arch=args.arch,
        channels=args.channels,
        order=args.select,
        scale=args.scale,
        device=pick_device(args.device),
        data_dir=args.data_dir,
    )
    print(f"wrote {out}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """srkit summary MODEL [--input HxW]: layer table, totals, markdown and a block diagram."""
    from srkit.summary import model_table, parse_size, run_summary

    summary, paths = run_summary(
        args.model,
        input_size=parse_size(args.input) if args.input else None,
        out_dir=Path(args.out),
        depth=args.depth,
        scale=args.scale,
    )
    console = make_console()
    console.print(model_table(summary))
    console.print("wrote " + "  ".join(str(p) for p in paths))
    return 0


def register(sub: Any) -> None:
    """The train, plot, interpolate, viz, summary command parsers."""
    p = sub.add_parser(
        "train",
        help="train a model from a YAML recipe",
        description="Train from a recipe; any config key can be overridden as --section.key=value "
        "(e.g. --train.steps=2000 --optim.lr_g=2e-4 --name=myrun). Multi-GPU/CPU: run under torchrun.",
    )
    p.add_argument("config", nargs="?", default=None, help="recipe YAML, e.g. configs/srresnet_x4.yaml")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("plot", help="draw a run's loss and validation curves (PNG)")
    p.add_argument("run_dir", help="a run folder written by srkit train")
    p.add_argument("-o", "--out", default=None, help="output PNG (default RUN_DIR/curves.png)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser(
        "interpolate",
        help="blend two models of one architecture: (1 - alpha) * A + alpha * B (ESRGAN network interpolation)",
        description="Network interpolation (ESRGAN sec. 3.4): A is the PSNR-oriented model, B its GAN fine-tune; "
        "alpha 0 gives A, 1 gives B.",
    )
    p.add_argument("a", help="weights A (.safetensors): the PSNR-oriented model, e.g. an rrdb_psnr_x4 export")
    p.add_argument("b", help="weights B (.safetensors): the GAN model of the same arch, e.g. an esrgan_x4 export")
    p.add_argument("--alpha", type=float, default=0.8, help="weight of B, in [0, 1] (default 0.8)")
    p.add_argument(
        "--choose-on",
        metavar="VAL_FOLDER",
        default=None,
        help="choose alpha on these HR validation images (never a benchmark set): the lowest LPIPS at least "
        "--min-psnr-gain dB above bicubic",
    )
    p.add_argument("--alphas", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1", help="alphas --choose-on tries")
    p.add_argument("--min-psnr-gain", type=float, default=1.0, help="dB over bicubic a chosen blend keeps (1.0)")
    add_device_args(p)
    p.add_argument("-o", "--output", "--out", required=True, help="output .safetensors file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser(
        "fuse",
        help="join two models in frequency: LOW's output below a Gaussian of sigma HR pixels, HIGH's above it",
        description="Frequency fusion: SR = HIGH(x) + G_sigma * (LOW(x) - HIGH(x)). LOW is the PSNR-oriented model "
        "(its colours, shading and coarse edges are kept), HIGH the GAN model (its texture is kept). The two may "
        "differ in architecture; the fused model runs both.",
    )
    p.add_argument("low", help="the PSNR-oriented model (.safetensors or a shipped name), e.g. srresnet")
    p.add_argument("high", help="the GAN model of the same scale (.safetensors or a shipped name), e.g. srgan_percep")
    p.add_argument("--sigma", type=float, default=1.0, help="the Gaussian's sigma in HR pixels (default 1.0)")
    p.add_argument(
        "--choose-on",
        metavar="VAL_FOLDER",
        default=None,
        help="choose sigma on these HR validation images (never a benchmark set): the lowest LPIPS at least "
        "--min-psnr-gain dB above bicubic",
    )
    p.add_argument("--sigmas", default="0.5,0.75,1,1.5,2,3", help="sigmas --choose-on tries")
    p.add_argument("--min-psnr-gain", type=float, default=1.0, help="dB over bicubic a chosen fusion keeps (1.0)")
    add_device_args(p)
    p.add_argument("-o", "--output", "--out", required=True, help="output .safetensors file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_fuse)

    p = sub.add_parser(
        "average",
        help="average checkpoints of one run weight by weight (SWA over milestones; often a higher PSNR at the "
        "same LPIPS)",
        description="The mean of several checkpoints of one architecture, weight by weight (stochastic weight "
        "averaging over a run's milestones). Integer buffers come from the last file.",
    )
    p.add_argument("weights", nargs="+", help="two or more .safetensors files (or shipped names) of one architecture")
    p.add_argument("-o", "--output", "--out", required=True, help="output .safetensors file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_average)

    viz = sub.add_parser("viz", help="figures: VGG feature maps of SR vs HR")
    viz_sub = viz.add_subparsers(dest="viz_command", required=True, metavar="VIZ_COMMAND")
    p = viz_sub.add_parser("features", help="VGG feature maps of a model's SR and the HR image, side by side")
    p.add_argument("--model", default="bicubic", help="bicubic, a shipped model's name, or a .safetensors file")
    p.add_argument(
        "--image",
        required=True,
        help="an HR image (cropped to a multiple of the scale), or SET/FILE of a benchmark set, e.g. Set14/baboon.png",
    )
    p.add_argument("--layer", default="relu2_2", help="VGG layer, e.g. relu2_2, conv5_4 (default relu2_2)")
    p.add_argument("--arch", default="vgg16", choices=["vgg16", "vgg19"], help="VGG variant (default vgg16)")
    p.add_argument("--channels", type=int, default=16, help="feature maps to draw (default 16)")
    p.add_argument("--select", default="active", choices=["active", "first"], help="most active or first channels")
    p.add_argument("--scale", type=scale_arg, default=None, help=SCALE_HELP)
    p.add_argument("-o", "--output", "--out", required=True, help="output PNG")
    add_device_args(p)
    p.set_defaults(func=cmd_viz_features)

    p = sub.add_parser("summary", help="layer table (shapes, parameters, FLOPs) and a block diagram of a network")
    p.add_argument(
        "model", help="generator or discriminator arch (srresnet, srgan_discriminator, ...), model name or weights"
    )
    p.add_argument("--input", default=None, help="input HxW (default 24x24; discriminators 96x96 or their size)")
    p.add_argument("-o", "--out", default="runs/summary", help="output folder (default runs/summary)")
    p.add_argument("--depth", type=int, default=2, help="module nesting depth shown in the table (default 2)")
    p.add_argument("--scale", type=scale_arg, default=None, help=SCALE_HELP)
    p.set_defaults(func=cmd_summary)
