"""Upscaling speed and peak memory: output megapixels/s, peak RSS, and the share of the machine's matmul rate.

Each configuration (model x LR size x precision x backend x tiled/whole) runs in a fresh subprocess, so the
peak resident memory (getrusage maxrss) of one does not hide in another's. Full run (slow on a CPU: paper-size
RRDBNet at 2000x2000 is ~140 TFLOP per image):

    python benchmarks/upscale_speed.py
    python benchmarks/upscale_speed.py --budget 1200   # skips what would take over 20 min, saying so
    python benchmarks/upscale_speed.py --sizes 128 --models srresnet --tile 64   # quick look

Prints a markdown table. Not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

BYTES_PER_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
MIB = 1 << 20
# Whole-image runs are skipped where the extrapolated peak (from the same config's largest smaller whole run,
# linear in pixels) passes this; the table says so.
WHOLE_LIMIT_MIB = 10 * 1024


def _build(name: str) -> nn.Module:
    """A paper-size generator with fixed random weights (speed and memory do not depend on the values)."""
    from srkit.models import build_generator

    torch.manual_seed(0)
    return build_generator(name).eval()


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * BYTES_PER_MAXRSS_UNIT / MIB


def worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in this (fresh) process; returns seconds per image and peak memory."""
    from srkit.device import pick_device
    from srkit.export import OnnxGenerator, OpenVINOGenerator
    from srkit.inference import PRECISIONS, upscale_tiled

    torch.set_num_threads(cfg["threads"])
    device = pick_device(cfg["device"])
    if cfg["backend"] == "onnxruntime":
        model: nn.Module = OnnxGenerator(cfg["onnx"], device=device, threads=cfg["threads"])
    elif cfg["backend"] == "openvino":  # compiled for the run's precision (fp32 or bf16)
        model = OpenVINOGenerator(cfg["onnx"], precision=cfg["precision"], threads=cfg["threads"])
    else:
        model = _build(cfg["model"]).to(device)
    tile = cfg["tile"] if cfg["mode"] == "tiled" else None
    size = cfg["size"]
    lq = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))

    def run(x: torch.Tensor) -> None:
        upscale_tiled(model, x, tile=tile, overlap=cfg["overlap"], device=device, dtype=PRECISIONS[cfg["precision"]])
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run(lq[..., : min(size, 64), : min(size, 64)])  # warm-up: kernels chosen, sessions initialised
    base = _maxrss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(cfg["repeats"]):
        t = time.perf_counter()
        run(lq)
        times.append(time.perf_counter() - t)
    result = {"seconds": min(times), "peak_mib": _maxrss_mib(), "base_mib": base}
    if device.type == "cuda":
        result["gpu_peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB
    return result


def _matmul_side(device: torch.device) -> int:
    return 8192 if device.type == "cuda" else 2048


def matmul_gflops(device: torch.device, threads: int, dtype: torch.dtype = torch.float32) -> float:
    """The machine's matmul rate in `dtype`: best of a few large square products."""
    torch.set_num_threads(threads)
    n = _matmul_side(device)
    a = torch.rand(n, n, device=device).to(dtype)
    b = torch.rand(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def flops_per_output_pixel(name: str) -> float:
    """Convolution/matmul FLOPs per output pixel (torch.utils.flop_counter; elementwise ops not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = _build(name)
    lq = torch.rand(1, 3, 32, 32)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = model(lq)
    return counter.get_total_flops() / (out.shape[-1] * out.shape[-2])


def _spawn(cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run worker(cfg) in a fresh interpreter; a crash or timeout becomes a note in the table."""
    cmd = [sys.executable, __file__, "--worker", json.dumps(cfg)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"note": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"note": f"failed ({last[:120]})"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="srresnet,rrdbnet", help="generators, comma-separated")
    parser.add_argument("--sizes", default="128,512,2000", help="square LR input sides, comma-separated")
    parser.add_argument("--precisions", default="fp32,bf16", help="fp32, bf16, fp16 (CUDA)")
    parser.add_argument("--backends", default="torch,onnxruntime,openvino")
    parser.add_argument("--modes", default="tiled,whole")
    parser.add_argument("--tile", type=int, default=256, help="LR tile side for the tiled runs (default 256)")
    parser.add_argument("--overlap", type=int, default=None, help="tile overlap (default srkit's OVERLAP)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per configuration (best is kept)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per configuration")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="skip a configuration whose time, extrapolated (linear in pixels) from the same configuration at "
        "the next smaller size, passes this many seconds; the table gives the estimate (default: run all)",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    from srkit.archs import GENERATORS
    from srkit.device import pick_device
    from srkit.export import export_model
    from srkit.inference import OVERLAP, PRECISIONS
    from srkit.models import save_weights

    device = pick_device(args.device)
    overlap = OVERLAP if args.overlap is None else args.overlap
    notes: list[str] = []
    models = [m for m in args.models.split(",") if m]
    for name in [m for m in models if m not in GENERATORS]:
        notes.append(f"{name}: not in srkit.archs.GENERATORS in this version, skipped")
    models = [m for m in models if m in GENERATORS]
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    # each run is compared with the matmul rate of its own precision (ONNX Runtime runs float32)
    peak_rate = {p: matmul_gflops(device, args.threads, PRECISIONS[p]) for p in args.precisions.split(",")}
    flops = {m: flops_per_output_pixel(m) for m in models}
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx_files: dict[str, str] = {}
        if "onnxruntime" in args.backends or "openvino" in args.backends:
            for m in models:
                weights = save_weights(_build(m), Path(tmp) / f"{m}.safetensors", arch=m, arch_kwargs={})
                onnx_files[m] = str(export_model(weights, Path(tmp) / f"{m}.onnx", format="onnx"))
        for model_name in models:
            for backend in args.backends.split(","):
                for precision in args.precisions.split(","):
                    if backend == "onnxruntime" and precision != "fp32":
                        continue  # the exported graph is float32
                    if backend == "openvino" and precision not in ("fp32", "bf16"):
                        continue
                    if precision == "fp16" and device.type != "cuda":
                        continue
                    last_whole: tuple[int, float] | None = None  # (size, MiB added) of the largest whole run
                    last_time: dict[str, tuple[int, float]] = {}  # mode -> (size, seconds) of its largest run
                    for size in sizes:
                        for mode in args.modes.split(","):
                            label = f"| {model_name} | {size}x{size} | {precision} | {backend} | {mode} |"
                            if mode == "tiled" and size <= args.tile:
                                rows.append(f"{label} - | - | - | - | same as whole (one tile) |")
                                continue
                            if mode == "whole" and last_whole is not None:
                                est = last_whole[1] * (size / last_whole[0]) ** 2
                                if est > WHOLE_LIMIT_MIB:
                                    note = f"skipped: ~{est / 1024:.0f} GB estimated (> {WHOLE_LIMIT_MIB // 1024} GB)"
                                    rows.append(f"{label} - | - | - | - | {note} |")
                                    continue
                            if args.budget is not None and mode in last_time:
                                done, secs = last_time[mode]
                                est = secs * (size / done) ** 2
                                if est > args.budget:
                                    note = (
                                        f"skipped: ~{est / 60:.1f} min estimated from {done}x{done} "
                                        f"(> --budget {args.budget:g} s)"
                                    )
                                    rows.append(f"{label} - | - | - | - | {note} |")
                                    continue
                            cfg = {
                                "model": model_name,
                                "size": size,
                                "precision": precision,
                                "backend": backend,
                                "mode": mode,
                                "tile": args.tile,
                                "overlap": overlap,
                                "threads": args.threads,
                                "device": str(device),
                                "repeats": args.repeats,
                                "onnx": onnx_files.get(model_name),
                            }
                            res = _spawn(cfg, args.timeout)
                            if "note" in res:
                                rows.append(f"{label} - | - | - | - | {res['note']} |")
                                continue
                            if mode == "whole":
                                last_whole = (size, res["peak_mib"] - res["base_mib"])
                            last_time[mode] = (size, res["seconds"])
                            mpix = (4 * size) ** 2 / 1e6
                            rate = mpix / res["seconds"]
                            share = rate * 1e6 * flops[model_name] / (peak_rate[precision] * 1e9)
                            gpu = f", GPU {res['gpu_peak_mib']:.0f}" if "gpu_peak_mib" in res else ""
                            rows.append(
                                f"{label} {res['seconds']:.2f} | {rate:.3f} | {res['peak_mib']:.0f}{gpu} | "
                                f"{100 * share:.1f}% | |"
                            )
                            print(rows[-1], file=sys.stderr, flush=True)  # progress while the table grows

    print(
        f"\n## srkit upscale speed: {platform.processor() or platform.machine()}, {device}, {args.threads} thread(s)\n"
    )
    peaks = ", ".join(f"{p} {r:.0f}" for p, r in peak_rate.items())
    print(f"Matmul rate (GFLOP/s, best {_matmul_side(device)}^2 product): {peaks}.")
    print(f"Tile {args.tile}, overlap {overlap}, x4, batch of 1 image.")
    print(
        "'of matmul' = counted conv FLOPs per second / the matmul rate of the run's precision: a reference rate "
        "measured here, not the hardware's peak, so a convolution library faster than this matmul passes 100%."
    )
    for m in models:
        print(f"{m}: {flops[m] / 1e6:.2f} MFLOP per output pixel (convolutions, torch.utils.flop_counter)")
    print()
    print("| model | LR size | precision | backend | mode | s/image | output MP/s | peak RSS MiB | of matmul | note |")
    print("|---|---|---|---|---|---:|---:|---:|---:|---|")
    print("\n".join(rows))
    for note in notes:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
