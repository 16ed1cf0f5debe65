"""Device selection: one place that decides where tensors go."""

from __future__ import annotations

import torch


def pick_device(name: str = "auto") -> torch.device:
    """ "auto" -> CUDA if available, else Apple MPS, else CPU; otherwise the named device, checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}; expected auto, cpu, cuda, cuda:N or mps") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} requested but Apple MPS is not available on this machine")
    return device


def cpu_features() -> dict[str, bool]:
    """The CPU's SIMD features that decide which precision pays: avx2, avx512_f, avx512_bf16, amx_bf16."""
    keys = ("avx2", "avx512_f", "avx512_bf16", "amx_bf16")
    caps: dict[str, object] = {}
    get = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.8 reads cpuinfo
    if get is not None:
        try:
            caps = dict(get())
        except Exception:  # an unknown CPU: fall back to the kernel's flags
            caps = {}
    if not caps:
        try:
            with open("/proc/cpuinfo") as f:
                flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
        except OSError:
            flags = []
        aliases = {"avx512_f": "avx512f"}
        caps = {k: aliases.get(k, k) in flags for k in keys}
    return {k: bool(caps.get(k, False)) for k in keys}


def cpu_description() -> str:
    """One line naming the CPU and the flags that matter for speed, for benchmark tables and logs."""
    import platform

    name = ""
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    flags = [k for k, v in cpu_features().items() if v]
    return f"{name}, {torch.get_num_threads()} threads, flags: {' '.join(flags) or 'none of avx2/avx512/bf16'}"


def native_bf16(device: torch.device) -> bool:
    """True where bfloat16 maths runs in hardware: CUDA with bf16 support, or a CPU with AVX512-BF16 or AMX.

    Elsewhere (AVX2-only CPUs) torch emulates bf16 and it is 4-5x slower than float32.
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        features = cpu_features()
        return features["avx512_bf16"] or features["amx_bf16"]
    return False


def auto_precision(device: torch.device) -> torch.dtype:
    """What `--precision auto` picks: bfloat16 where it is native (see native_bf16), float32 otherwise."""
    return torch.bfloat16 if native_bf16(device) else torch.float32
