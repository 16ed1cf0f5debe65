"""`--backend auto`: the fastest runtime for a model on this machine, measured once and remembered.

Which runtime is fastest depends on the CPU, the model and the precision, so srkit measures instead of guessing.
The candidates are PyTorch (fp32, and bf16 where it is native), ONNX Runtime (fp32) and OpenVINO (fp32, and bf16
where the CPU has it), each where installed. Each runs the same image-like probe (PROBE px a side, one warm-up,
best of three timed runs); a candidate counts only if its output agrees with PyTorch's fp32 output to at least
MIN_PSNR dB (OpenVINO's bf16 sums a deep residual trunk in bf16 and can miss that; see the README's speed
tables), and one other than PyTorch is kept only when it is at least MARGIN faster. The winner is stored in
$SRKIT_CACHE/runtimes.json (default ~/.cache/srkit), keyed by the weights' bytes, the CPU and its flags, the
thread count and the library versions: later runs read it and measure nothing.

Measuring costs an ONNX export of the model (once per weights file, cached) and a few probe runs, up to a minute
for a paper-size RRDBNet, so a job too small to repay it (under TUNE_MIN_FLOP of convolution work) runs PyTorch
unless a choice is already stored. `srkit tune MODEL` measures on demand and prints the table.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from srkit import fs
from srkit.descriptor import Backend, ModelDescriptor, open_model
from srkit.device import auto_precision, cpu_description, native_bf16
from srkit.export import cache_root, cached_onnx, file_digest
from srkit.inference import conv_profile, run_model, use_channels_last
from srkit.models import ModelSource, resolve_model

MIN_PSNR = 45.0  # dB of agreement with PyTorch fp32 on the probe (an 8-bit rounding alone is ~59 dB)
PROBE = 96  # LR px a side
MARGIN = 1.1  # another runtime replaces PyTorch only when at least 10% faster
TUNE_MIN_FLOP = 2e12  # ~10 s of paper-size RRDBNet in bf16 here: smaller jobs are not worth a measurement
PRECISION_NAMES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """A backend and the precision it runs in."""

    backend: Backend
    precision: str  # "fp32" | "bf16" | "fp16"

    @property
    def dtype(self) -> torch.dtype:
        return PRECISION_NAMES[self.precision]

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"


@dataclass
class Measurement:
    """One candidate on the probe: seconds per forward (best of three), agreement with PyTorch fp32."""

    backend: str
    precision: str
    seconds: float | None = None
    psnr: float | None = None  # dB against PyTorch fp32; inf when identical
    accepted: bool = False
    error: str | None = None
    # what starting costs in a fresh process: the runtime's import (PyTorch's is paid by every run) plus
    # loading or compiling the model; weighed against the job's size when choosing
    start_seconds: float = 0.0


@dataclass
class Choice:
    """The runtime `--backend auto` runs, and why."""

    runtime: Runtime
    why: str
    measured: list[Measurement] = field(default_factory=list)
    cached: bool = False


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _openvino_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def candidates(request: str, device: torch.device) -> list[Runtime]:
    """The runtimes worth measuring for a `--precision` request ("auto", "fp32", "bf16") on `device`."""
    if device.type != "cpu" or request == "fp16":
        return [Runtime("torch", "fp16" if request == "fp16" else _resolve(request, device))]
    precisions = {"auto": ["fp32", *(["bf16"] if native_bf16(device) else [])], "fp32": ["fp32"], "bf16": ["bf16"]}
    out: list[Runtime] = []
    for precision in precisions[request]:
        out.append(Runtime("torch", precision))
        if precision == "fp32" and _installed("onnxruntime"):
            out.append(Runtime("onnxruntime", "fp32"))
        if _installed("openvino") and (precision == "fp32" or _openvino_bf16()):
            out.append(Runtime("openvino", precision))
    return out


def _resolve(request: str, device: torch.device) -> str:
    """`--precision auto` -> bf16 where native, else fp32 (device.auto_precision); others as given."""
    if request != "auto":
        return request
    return "bf16" if auto_precision(device) == torch.bfloat16 else "fp32"


def probe_image(size: int = PROBE) -> torch.Tensor:
    """A deterministic photo-like (1, 3, size, size) input in [0, 1]: smooth colour gradients plus fine texture."""
    g = torch.Generator().manual_seed(size)
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = torch.stack([torch.sin(6 * x + 2 * y), torch.cos(5 * y - 3 * x), torch.sin(4 * (x + y))]) * 0.35 + 0.5
    return (base + 0.06 * torch.randn(base.shape, generator=g)).clamp(0, 1)[None]


def _timed(desc: ModelDescriptor, x: torch.Tensor, runtime: Runtime, repeats: int = 3) -> tuple[float, torch.Tensor]:
    cpu = torch.device("cpu")
    channels_last = use_channels_last(desc.model, cpu)
    out = run_model(desc, x, device=cpu, dtype=runtime.dtype, channels_last=channels_last)  # warm-up
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run_model(desc, x, device=cpu, dtype=runtime.dtype, channels_last=channels_last)
        best = min(best, time.perf_counter() - t0)
    return best, out


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) * 255).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def measure(
    source: ModelSource, runtimes: list[Runtime], *, threads: int | None = None, probe: int = PROBE
) -> tuple[list[Measurement], dict[Runtime, ModelDescriptor]]:
    """Time every runtime on the probe and compare its output with PyTorch fp32 (which is always run first)."""
    x = probe_image(probe)
    t0 = time.perf_counter()
    reference = open_model(source)
    ref_start = time.perf_counter() - t0
    ref_s, ref = _timed(reference, x, Runtime("torch", "fp32"))
    rows, opened = [], {}
    for runtime in runtimes:
        row = Measurement(runtime.backend, runtime.precision)
        try:
            if runtime.backend == "torch":
                desc, row.start_seconds = reference, ref_start
                row.seconds, out = (ref_s, ref) if runtime.precision == "fp32" else _timed(desc, x, runtime)
            else:
                cached_onnx(source)  # the export is made once per weights: not timed
                t0 = time.perf_counter()
                desc = _open(source, runtime, threads)
                row.start_seconds = time.perf_counter() - t0 + _import_seconds(runtime.backend)
                row.seconds, out = _timed(desc, x, runtime)
            row.psnr = _psnr(out, ref)
            row.accepted = row.psnr >= MIN_PSNR
            opened[runtime] = desc
        except Exception as err:  # any runtime's failure to export, compile or run: that candidate is out
            row.error = f"{type(err).__name__}: {err}".splitlines()[0][:200]
        rows.append(row)
    return rows, opened


def _import_seconds(module: str) -> float:
    """Seconds a fresh process spends importing `module` (after numpy, which srkit imports anyway)."""
    code = f"import time, numpy; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
        return float(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return 0.0


def _open(source: ModelSource, runtime: Runtime, threads: int | None) -> ModelDescriptor:
    return open_model(source, backend=runtime.backend, threads=threads, precision=runtime.dtype)


def pick(rows: list[Measurement], lr_pixels: int | None = None, probe: int = PROBE) -> tuple[Runtime, str]:
    """The accepted runtime that finishes first; PyTorch unless another is at least MARGIN faster.

    With `lr_pixels` (the job's input pixels) each runtime's time is its start-up plus its probe time scaled to
    the job; without, per forward only (the choice for large jobs)."""
    ok = [r for r in rows if r.accepted and r.seconds is not None]
    if not ok:
        raise ValueError("no runtime agreed with PyTorch fp32 on the probe")

    def cost(r: Measurement) -> float:
        assert r.seconds is not None
        return r.seconds if lr_pixels is None else r.start_seconds + r.seconds * lr_pixels / probe**2

    fastest = min(ok, key=cost)
    torch_rows = [r for r in ok if r.backend == "torch"]
    best_torch = min(torch_rows, key=cost) if torch_rows else None
    if best_torch is not None and fastest.backend != "torch" and cost(best_torch) < MARGIN * cost(fastest):
        fastest = best_torch
    winner = Runtime(fastest.backend, fastest.precision)  # type: ignore[arg-type]
    size = "" if lr_pixels is None else f" for {lr_pixels / 1e6:.2f} MP of input, start-up included"
    return winner, f"fastest on this CPU{size}, within {MIN_PSNR:.0f} dB of PyTorch fp32"


def cache_key(source: ModelSource, request: str, threads: int | None) -> str:
    """What a stored choice depends on: the weights, the request, the CPU, threads and the runtimes' versions."""
    from importlib.metadata import PackageNotFoundError, version

    versions = [str(torch.__version__)]
    for package in ("onnxruntime", "openvino"):
        with contextlib.suppress(PackageNotFoundError):
            versions.append(f"{package} {version(package)}")
    parts = [
        file_digest(source.path) if source.path else "",
        request,
        cpu_description(),
        str(threads or torch.get_num_threads()),
        *versions,
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def cache_file() -> Path:
    return cache_root() / "runtimes.json"


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):  # none yet, or damaged: measure again (and rewrite it)
        return {}
    return data if isinstance(data, dict) else {}


def _store(key: str, source: ModelSource, request: str, choice: Choice) -> None:
    data = _read_cache()
    data[key] = {
        "model": source.label,
        "request": request,
        "cpu": cpu_description(),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runtime": asdict(choice.runtime),
        "probe": PROBE,
        "measured": [asdict(m) for m in choice.measured],
    }
    with contextlib.suppress(OSError):  # a read-only cache folder only means measuring again next time
        fs.atomic_write(cache_file(), json.dumps(data, indent=1).encode())


def _stored_choice(record: Any, lr_pixels: Callable[[], int] | None) -> Choice | None:
    """A stored record as a Choice (re-weighed for this job's size when rows and `lr_pixels` are there); None when
    there is none, or it is from another srkit version or damaged (then it is measured again)."""
    if not isinstance(record, dict):
        return None
    try:
        runtime = Runtime(**record["runtime"])
        rows = [Measurement(**m) for m in record.get("measured", [])]
    except (TypeError, KeyError, AttributeError):
        return None
    why = f"measured on {record.get('when', '?')}"
    if lr_pixels is not None and any(r.accepted for r in rows):  # weigh start-up against this job's size
        runtime, how = pick(rows, lr_pixels(), record.get("probe", PROBE))
        why = f"{how}; {why}"
    return Choice(runtime, why, rows, cached=True)


def choose(
    model: str | Path | ModelSource,
    *,
    request: str = "auto",
    device: torch.device | str = "cpu",
    threads: int | None = None,
    lr_pixels: Callable[[], int] | None = None,
    force: bool = False,
) -> tuple[Choice, ModelDescriptor]:
    """The runtime for `model` and the model opened in it. `lr_pixels`: the job's total input pixels, asked for
    only when nothing is stored (None: measure regardless of size); `force`: measure even when a choice is
    stored."""
    device = torch.device(device)
    source = model if isinstance(model, ModelSource) else resolve_model(model)
    if source.kind == "onnx":
        runtime = Runtime("onnxruntime", "fp32")
        return Choice(runtime, "an ONNX file"), open_model(source, backend="onnxruntime", threads=threads)
    default = Runtime("torch", _resolve(request, device))
    if source.kind == "bicubic" or device.type != "cpu" or request == "fp16":
        why = "bicubic runs in PyTorch" if source.kind == "bicubic" else "PyTorch on this device"
        return Choice(default, why), open_model(source, device=device)
    key = cache_key(source, request, threads)
    stored = None if force else _stored_choice(_read_cache().get(key), lr_pixels)
    if stored is not None:
        runtime = stored.runtime
        return stored, _open(source, runtime, threads) if runtime.backend != "torch" else open_model(source)
    torch_desc = open_model(source)
    if lr_pixels is not None and not force:
        profile = conv_profile(torch_desc)
        work = 0.0 if profile is None else profile.flop_per_pixel * lr_pixels()  # unknown: not measured
        if work < TUNE_MIN_FLOP:
            why = f"not measured: {work / 1e12:.2f} TFLOP of work, under the {TUNE_MIN_FLOP / 1e12:.0f} that repay it"
            return Choice(default, why), torch_desc
    runtimes = candidates(request, device)
    if len(runtimes) < 2:
        return Choice(default, "no other runtime installed"), torch_desc
    rows, opened = measure(source, runtimes, threads=threads)
    runtime, why = pick(rows)
    choice = Choice(runtime, why, rows)
    _store(key, source, request, choice)
    if lr_pixels is not None:  # this job's own choice weighs start-up against its size
        runtime, why = pick(rows, lr_pixels())
        choice = Choice(runtime, why, rows)
    if request == "auto":  # the fp32 and bf16 requests' candidates were measured too: store their choices
        for sub in ("fp32", "bf16"):
            sub_rows = [r for r in rows if r.precision == sub]
            if any(r.accepted for r in sub_rows):
                _store(cache_key(source, sub, threads), source, sub, Choice(pick(sub_rows)[0], why, sub_rows))
    return choice, opened[runtime]


def table(choice: Choice) -> list[str]:
    """The measurements as markdown rows, the chosen one marked."""
    lines = [
        f"| runtime | s per {PROBE}x{PROBE} | start-up s | PSNR vs PyTorch fp32 | used for large jobs |",
        "|---|---:|---:|---:|---|",
    ]
    for m in choice.measured:
        if m.error:
            lines.append(f"| {m.backend} {m.precision} | - | - | - | failed: {m.error} |")
            continue
        psnr = "identical" if m.psnr == math.inf else f"{m.psnr:.1f} dB"
        used = "**yes**" if (m.backend, m.precision) == (choice.runtime.backend, choice.runtime.precision) else ""
        used = used or ("" if m.accepted else f"no: under {MIN_PSNR:.0f} dB")
        lines.append(f"| {m.backend} {m.precision} | {m.seconds:.3f} | {m.start_seconds:.2f} | {psnr} | {used} |")
    return lines
