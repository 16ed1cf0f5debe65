"""srkit upscale against Real-ESRGAN's RealESRGANer on the same weights and inputs, each as a whole process.

    scripts/peer_venv.sh                      # once: Real-ESRGAN + BasicSR in .venv-peers (not srkit's deps)
    python benchmarks/peer_speed.py [--sizes 160,512] [--runs 3] [--models rrdb23,compact]

srkit runs the same tensors as its own safetensors (PyTorch fp32; its defaults, `--backend auto --precision
auto`; `--precision fp32` with the auto backend, which is what the defaults give on a CPU without native bf16)
and as the peer's .pth (read through spandrel). `srkit tune` runs first for each (what --backend auto measures
once per model and machine, and stores), so the timed runs read the stored choice, as every run after a user's
first does; the rows name the runtime it chose. For every model and size the runs alternate (peer, srkit ...,
peer, ...), each a fresh process timed from start to exit (imports, weight loading, reading, upscaling,
writing: what a user waits for).
Printed per row: the median wall time, srkit's speed-up over the peer, the output agreement (PSNR of srkit's
8-bit output against the peer's fp32 output, RGB) and the share of the machine's measured matmul rate the
upscale itself reaches (2 x conv multiply-adds / time / matmul FLOP/s, the matmul measured here in the same
dtype and thread count). Weights are random (seeded): speed and agreement do not depend on training.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from srkit.device import cpu_description
from srkit.models import build_generator, save_weights

TOOLS = ("RealESRGANer fp32", "srkit torch fp32", "srkit default", "srkit fp32", "srkit default, .pth")
# Runs RealESRGANer the way its README's CPU advice says (fp32, no tiling, pre_pad 0), on an RGB PNG.
PEER = r"""
import sys, time, cv2, torch
from realesrgan import RealESRGANer
arch, weights, src, dst = sys.argv[1:5]
if arch == "rrdb23":
    from basicsr.archs.rrdbnet_arch import RRDBNet
    net = RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4)
else:
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact
    feat, conv = (int(v) for v in arch.split(":")[1:])
    net = SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=feat, num_conv=conv, upscale=4, act_type="prelu")
up = RealESRGANer(scale=4, model_path=weights, model=net, tile=0, pre_pad=0, half=False, device=torch.device("cpu"))
img = cv2.imread(src, cv2.IMREAD_UNCHANGED)
t0 = time.perf_counter()
out, _ = up.enhance(img, outscale=4)
print("upscale_s", time.perf_counter() - t0)
cv2.imwrite(dst, out)
"""


def _conv_macs(net: nn.Module, size: int) -> int:
    """Multiply-adds of every conv for one (1, 3, size, size) input, counted with forward hooks."""
    total = 0

    def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += output.numel() * k

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return total


def _matmul_flops(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """FLOP/s of an n x n matmul in `dtype` with the threads torch uses here (best of `reps`)."""
    a, b = torch.rand(n, n).to(dtype), torch.rand(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def _image(path: Path, size: int) -> None:
    """A deterministic photo-like RGB test image: smooth gradients plus fine texture."""
    rng = np.random.default_rng(size)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * x + 2 * y), np.cos(5 * y - 3 * x), np.sin(4 * (x + y))], -1) * 0.35 + 0.5
    img = np.clip(base + rng.normal(0, 0.06, base.shape), 0, 1)
    Image.fromarray((img * 255).round().astype(np.uint8)).save(path)


def _psnr(a: Path, b: Path) -> float:
    x = np.asarray(Image.open(a).convert("RGB"), np.float64)
    y = np.asarray(Image.open(b).convert("RGB"), np.float64)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def _run(command: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    return wall


def _models(names: list[str], tmp: Path) -> dict[str, tuple[nn.Module, Path, Path, str]]:
    """name -> (srkit module, .pth in the community layout, the same tensors as srkit safetensors, peer arch)."""
    out = {}
    torch.manual_seed(0)
    for name in names:
        if name == "rrdb23":
            kwargs: dict[str, int] = {"width": 64, "num_blocks": 23, "growth": 32}
            arch, peer_arch, key = "rrdbnet", "rrdb23", "params_ema"
        elif name.startswith("compact"):
            feat, conv = (int(v) for v in (name.split(":")[1:] or ["48", "16"]))
            kwargs = {"width": feat, "num_convs": conv}
            arch, peer_arch, key = "compact", f"compact:{feat}:{conv}", "params"
        else:
            raise SystemExit(f"unknown model {name!r}: rrdb23 or compact[:WIDTH:CONVS]")
        # PyTorch's default init: outputs with an image-like spread (std ~0.25 for RRDBNet), not a constant.
        net = build_generator(arch, **kwargs).eval()
        path = tmp / f"{name.replace(':', '_')}.pth"
        torch.save({key: net.state_dict()}, path)
        native = save_weights(net, path.with_suffix(".safetensors"), arch=arch, arch_kwargs={"scale": 4, **kwargs})
        out[name] = (net, path, native, peer_arch)
    return out


def _tune(srkit: list[str], weights: Path, precision: str, env: dict[str, str]) -> str:
    """`srkit tune` once (what --backend auto stores for the timed runs); returns the runtime it chose."""
    done = subprocess.run(
        [*srkit, "tune", str(weights), "--precision", precision], env=env, capture_output=True, text=True
    )
    found = [line for line in done.stdout.splitlines() if line.startswith("--backend auto runs ")]
    if done.returncode != 0 or not found:
        raise SystemExit(f"srkit tune failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return found[0].removeprefix("--backend auto runs ").split(" (")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-python", default=".venv-peers/bin/python", help="a Python with realesrgan")
    parser.add_argument("--sizes", default="160,512", help="square input sides, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool (alternating)")
    parser.add_argument("--models", default="rrdb23,compact", help="rrdb23 and/or compact[:WIDTH:CONVS]")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for every process")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    if not Path(args.peer_python).exists():
        raise SystemExit(f"{args.peer_python} not found: run scripts/peer_venv.sh first (or pass --peer-python)")
    env = dict(os.environ)
    if args.threads is not None:
        env["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    flops = {"fp32": _matmul_flops(torch.float32), "bf16": _matmul_flops(torch.bfloat16)}
    cli = [sys.executable, "-m", "srkit.cli"]
    srkit = [*cli, "upscale"]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env["SRKIT_CACHE"] = str(tmp / "cache")  # measured afresh here; the user's stored choices left alone
        for name, (net, weights, native, peer_arch) in _models(args.models.split(","), tmp).items():
            chosen = {
                "srkit default": _tune(cli, native, "auto", env),
                "srkit fp32": _tune(cli, native, "fp32", env),
                "srkit default, .pth": _tune(cli, weights, "auto", env),
                "srkit torch fp32": "torch fp32",
            }
            for size in (int(s) for s in args.sizes.split(",")):
                src = tmp / f"in{size}.png"
                _image(src, size)
                peer_out = tmp / f"peer_{size}.png"
                dirs = {tool: tmp / tool.replace(" ", "_").replace(",", "").replace(".", "") for tool in TOOLS}
                own = ["--model", str(native), "--overwrite"]
                tools: dict[str, list[str]] = {
                    "RealESRGANer fp32": [args.peer_python, "-c", PEER, peer_arch, str(weights), str(src), str(peer_out)],  # noqa: E501
                    "srkit torch fp32": [*srkit, str(src), "-o", str(dirs["srkit torch fp32"]), *own,
                                         "--precision", "fp32", "--backend", "torch"],
                    "srkit default": [*srkit, str(src), "-o", str(dirs["srkit default"]), *own],
                    "srkit fp32": [*srkit, str(src), "-o", str(dirs["srkit fp32"]), *own, "--precision", "fp32"],
                    "srkit default, .pth": [*srkit, str(src), "-o", str(dirs["srkit default, .pth"]), "--model",
                                            str(weights), "--overwrite"],
                }  # fmt: skip
                times: dict[str, list[float]] = {tool: [] for tool in tools}
                for _ in range(args.runs):
                    for tool, command in tools.items():
                        times[tool].append(_run(command, env))
                macs = _conv_macs(net, size)
                peer_s = statistics.median(times["RealESRGANer fp32"])
                for tool, walls in times.items():
                    out = None if tool.startswith("RealESRGANer") else dirs[tool] / src.name
                    wall = statistics.median(walls)
                    runtime = chosen.get(tool, "")
                    dtype = "bf16" if runtime.endswith("bf16") else "fp32"
                    rows.append(
                        {
                            "model": name,
                            "size": size,
                            "tool": tool + (f" ({runtime})" if tool in chosen and "torch fp32" not in tool else ""),
                            "wall_s": wall,
                            "runs": walls,
                            "speedup": peer_s / wall,
                            "psnr_vs_peer": None if out is None else _psnr(out, peer_out),
                            "matmul_share": 2 * macs / wall / flops[dtype],
                        }
                    )
    print(f"# srkit vs RealESRGANer, whole processes: {cpu_description()}\n")
    threads = torch.get_num_threads()
    print(
        f"Matmul rate here: fp32 {flops['fp32'] / 1e9:.0f} GFLOP/s, bf16 {flops['bf16'] / 1e9:.0f} GFLOP/s "
        f"(2048x2048, {threads} threads); runs: {args.runs} per tool, alternating; median.\n"
    )
    print("| model | input | tool | wall s (median) | x peer | PSNR vs peer fp32 (dB) | share of matmul rate |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        psnr = "-" if r["psnr_vs_peer"] is None else f"{r['psnr_vs_peer']:.1f}"
        print(
            f"| {r['model']} | {r['size']}x{r['size']} | {r['tool']} | {r['wall_s']:.2f} | {r['speedup']:.2f}x | "
            f"{psnr} | {100 * r['matmul_share']:.0f}% |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
