"""Training throughput on this machine: stage 1 (SRResNet, L1) and stage 2 (SRGAN: + VGG + D), fp32 vs bf16,
and the rate the patch pipeline delivers batches, so one can see whether the loader is the bottleneck; and what
gradient accumulation (`train.accumulate: N`) costs and saves: stage 2 at the same batch run as N micro-batches, each
N in a fresh process, its time per step and how far the step raises the process's peak memory.

    python benchmarks/train_throughput.py [--steps 5] [--batch 16] [--gt-size 96] [--layouts nchw,nhwc] [--device auto]
    python benchmarks/train_throughput.py --only accumulate --accumulate 1,2,4,8

Prints a markdown table. Not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from srkit.archs import SRGANDiscriminator, SRResNet
from srkit.data.datasets import IndexRange, PairSet, PatchDataset, load_pairs
from srkit.data.lowres import LowRes
from srkit.data.pipeline import resolve_folder
from srkit.device import auto_precision, cpu_description, pick_device
from srkit.losses import ADVERSARIAL, PerceptualLoss
from srkit.train.step import Objective, Update, discriminator_step, generator_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_rate(
    stage: int,
    *,
    amp: str,
    steps: int,
    batch: int,
    gt_size: int,
    device: torch.device,
    channels_last: bool = False,
    compiled: bool = False,
    accumulate: int = 1,
) -> float:
    """Seconds per optimisation step (median of `steps` after the warm-up steps).

    compiled: both networks through torch.compile, as `train.compile: true` does; the warm-up then also
    holds the compilation (three steps: the first compiles, the next may recompile for dynamic shapes).

    channels_last: generator, discriminator and batches in NHWC, as `train.channels_last: true` does (VGG then
    runs on NHWC activations with its weights as loaded; converting them too measured no faster here).
    """
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net_g = SRResNet().to(device).to(memory_format=fmt)
    opt_g = torch.optim.Adam(net_g.parameters(), lr=1e-4)
    net_d = percep = opt_d = None
    if stage == 2:
        net_d = SRGANDiscriminator().to(device).to(memory_format=fmt)
        opt_d = torch.optim.Adam(net_d.parameters(), lr=1e-4)
        percep = PerceptualLoss(arch="vgg16", layer="relu5_3").to(device)  # the loop leaves VGG as it is too
    if compiled:
        net_g.compile()
        if net_d is not None:
            net_d.compile()
    warmup = 3 if compiled else 1
    d_loss, g_loss = ADVERSARIAL["vanilla"]
    # The loop's own step functions (srkit.train.step), with the shipped SRGAN recipe's weights.
    objective = Objective(
        pixel=torch.nn.functional.l1_loss,
        perceptual=percep,
        perceptual_weight=0.006 if percep is not None else 0.0,
        g_adversarial=g_loss if net_d is not None else None,
        adversarial_weight=0.001 if net_d is not None else 0.0,
    )
    lq = torch.rand(batch, 3, gt_size // 4, gt_size // 4, device=device).contiguous(memory_format=fmt)
    gt = torch.rand(batch, 3, gt_size, gt_size, device=device).contiguous(memory_format=fmt)
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16, enabled=amp != "fp32"
    )
    update = Update(autocast=autocast)
    times = []
    for i in range(steps + warmup):
        _sync(device)
        t = time.perf_counter()
        sr, _, _ = generator_step(
            net_g, opt_g, lq, gt, objective=objective, net_d=net_d, update=update, accumulate=accumulate
        )
        if net_d is not None and opt_d is not None:
            discriminator_step(net_d, opt_d, sr, gt, d_loss=d_loss, update=update, accumulate=accumulate)
        _sync(device)
        if i >= warmup:  # the first step pays for allocation and kernel selection (and compilation)
            times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def _peak_mib(device: torch.device) -> float:
    """The process's peak memory so far: resident set on CPU (Linux reports KiB), allocated tensors on CUDA."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _accumulate_child(kwargs: dict[str, object]) -> tuple[float, float, float]:
    """In a fresh process: (peak RSS before the first step, peak RSS after the steps, seconds per step)."""
    torch.set_num_threads(int(kwargs.pop("threads")))  # type: ignore[call-overload]
    # Networks, optimisers and VGG are built inside train_rate, before its first step: build them once here too
    # (same shapes, same allocator) so `before` holds everything that does not depend on the micro-batch.
    SRResNet(), SRGANDiscriminator(), PerceptualLoss(arch="vgg16", layer="relu5_3")
    device = kwargs["device"]
    assert isinstance(device, torch.device)
    before = _peak_mib(device)
    sec = train_rate(2, **kwargs)  # type: ignore[arg-type]
    return before, _peak_mib(device), sec


def accumulate_table(args: argparse.Namespace, device: torch.device, amp: str) -> None:
    """Stage 2 at --batch as N micro-batches for each N: s/step and the peak memory the training step adds."""
    print(
        f"\n# gradient accumulation: stage 2 (SRGAN: L1 + VGG16 + D), batch {args.batch} as N micro-batches, "
        f"{amp}, each N in a fresh process\n"
    )
    print(
        "| N (train.accumulate) | micro-batch | s/step | time x first row | peak memory the step adds, MiB "
        "| memory x first row |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    ctx = multiprocessing.get_context("spawn")
    first: tuple[float, float] | None = None
    for n in (int(v) for v in args.accumulate.split(",")):
        if args.batch % n:
            print(f"| {n} | - | - | - | - | batch {args.batch} does not split into {n} |")
            continue
        kwargs = dict(
            amp=amp,
            steps=args.steps,
            batch=args.batch,
            gt_size=args.gt_size,
            device=device,
            accumulate=n,
            threads=torch.get_num_threads(),
        )
        with ctx.Pool(1) as pool:
            before, after, sec = pool.apply(_accumulate_child, (kwargs,))
        grown = after - before
        first = first or (sec, grown)
        print(
            f"| {n} | {args.batch // n} | {sec:.3f} | {sec / first[0]:.2f} | {grown:.0f} | {grown / first[1]:.2f} |",
            flush=True,
        )


def loader_rate(pairs: PairSet, *, workers: int, batches: int, batch: int, gt_size: int) -> tuple[float, float]:
    """(seconds to the first batch, including worker start-up; warm batches per second after it)."""
    dataset = PatchDataset(pairs, scale=4, gt_size=gt_size, seed=0)
    loader = DataLoader(
        dataset, batch_size=batch, sampler=IndexRange(0, batches, batch_size=batch), num_workers=workers
    )
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    t1 = time.perf_counter()
    n = 0
    for _ in it:
        n += 1
    t2 = time.perf_counter()
    return t1 - t0, n / (t2 - t1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--gt-size", type=int, default=96)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16 (CUDA)")
    parser.add_argument("--layouts", default="nchw,nhwc", help="comma-separated: nchw, nhwc (channels-last)")
    parser.add_argument("--loader-batches", type=int, default=60)
    parser.add_argument("--compile", default="eager", help="comma-separated: eager, compiled (torch.compile)")
    parser.add_argument(
        "--accumulate", default="1,2,4", help="comma-separated micro-batch counts for the accumulation table"
    )
    parser.add_argument(
        "--only", choices=("all", "accumulate"), default="all", help="accumulate: only the accumulation table"
    )
    args = parser.parse_args()
    device = pick_device(args.device)
    print(
        f"# srkit training throughput: {cpu_description() if device.type == 'cpu' else device}, "
        f"torch {torch.__version__}, batch {args.batch}, HR {args.gt_size}px"
    )
    # The precision a training run picks on this device (train.amp: auto), never bf16 where it is emulated.
    auto_amp = "bf16" if auto_precision(device) == torch.bfloat16 else "fp32"
    if args.only == "accumulate":
        accumulate_table(args, device, auto_amp)
        return
    print()
    print("| stage | precision | layout | mode | s/step | images/s |")
    print("|---|---|---|---|---:|---:|")
    consumed: dict[int, float] = {}
    for stage in (1, 2):
        for amp in args.amp.split(","):
            for layout in args.layouts.split(","):
                for mode in args.compile.split(","):
                    sec = train_rate(
                        stage,
                        amp=amp,
                        steps=args.steps,
                        batch=args.batch,
                        gt_size=args.gt_size,
                        device=device,
                        channels_last=layout == "nhwc",
                        compiled=mode == "compiled",
                    )
                    consumed[stage] = max(consumed.get(stage, 0.0), 1 / sec)
                    what = "SRResNet, L1" if stage == 1 else "SRGAN: L1 + VGG16 + D"
                    print(
                        f"| {stage} ({what}) | {amp} | {layout} | {mode} | {sec:.3f} | {args.batch / sec:.1f} |",
                        flush=True,
                    )
    folders = [resolve_folder("train/T91", None), resolve_folder("train/BSD200", None)]
    print(f"\n# patch pipeline: T91 + BSD200 decoded once; batches of {args.batch} ({args.gt_size}px HR + LR)\n")
    print("| start-up | seconds | images/s |")
    print("|---|---:|---:|")
    with tempfile.TemporaryDirectory() as cache:
        for label, cache_dir in (
            ("decode + bicubic LR, in memory", None),
            ("same, writing the disk cache", cache),
            ("disk cache warm (memory-mapped)", cache),
        ):
            t = time.perf_counter()
            pairs = load_pairs(
                folders, lowres=LowRes(4), min_size=args.gt_size, cache_dir=Path(cache_dir) if cache_dir else None
            )
            dt = time.perf_counter() - t
            print(f"| {label} | {dt:.1f} | {len(pairs.gt) / dt:.0f} |", flush=True)
            if label.startswith("disk cache warm"):
                mapped = pairs
            elif cache_dir is None:
                in_memory = pairs
        print(
            "\n| storage | workers | first batch (s) | warm batches/s | patches/s | x stage-1 need | x stage-2 need |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for storage, p in (("memory", in_memory), ("memory-mapped", mapped)):
            for workers in (0, 2):
                first, warm = loader_rate(
                    p, workers=workers, batches=args.loader_batches, batch=args.batch, gt_size=args.gt_size
                )
                print(
                    f"| {storage} | {workers} | {first:.2f} | {warm:.1f} | {warm * args.batch:.0f} | "
                    f"{warm / consumed[1]:.0f}x | {warm / consumed[2]:.0f}x |",
                    flush=True,
                )
    accumulate_table(args, device, auto_amp)


if __name__ == "__main__":
    main()
