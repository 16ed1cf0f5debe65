"""Build, save and load generators. Weights are safetensors whose metadata names the architecture."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import safe_open
from torch import nn

from srkit import io
from srkit.archs import GENERATORS

FORMAT_VERSION = "1"
# Models shipped with the package: name -> file in src/srkit/weights (filled in by trained releases).
SHIPPED_DIR = Path(__file__).parent / "weights"


def build_generator(name: str, **arch_kwargs: Any) -> nn.Module:
    """A generator by architecture name, e.g. build_generator("srresnet", num_blocks=6)."""
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; expected one of {sorted(GENERATORS)}")
    try:
        return GENERATORS[name](**arch_kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments for generator {name!r}: {err}") from err


def save_weights(
    model: nn.Module,
    path: str | Path,
    *,
    arch: str,
    arch_kwargs: dict[str, Any],
    meta: dict[str, str] | None = None,
) -> Path:
    """Write model weights and the arch needed to rebuild them to a safetensors file, atomically."""
    path = Path(path)
    metadata = {"srkit_format": FORMAT_VERSION, "arch": arch, "arch_kwargs": json.dumps(arch_kwargs)}
    metadata.update(meta or {})
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    io.atomic_write(path, safetensors.torch.save(tensors, metadata=metadata))
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of an srkit safetensors file (arch, arch_kwargs, and whatever the trainer added)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types for truncated or foreign files
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    if "arch" not in meta:
        raise ValueError(f"{path}: not an srkit weights file (no 'arch' in its safetensors metadata)")
    return dict(meta)


def shipped_models() -> dict[str, Path]:
    """Pretrained models that come with the package, by name."""
    if not SHIPPED_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.safetensors"))}


def default_model() -> str:
    """What `srkit upscale` uses without --model: the shipped SRGAN, else the bicubic baseline."""
    return "srgan" if "srgan" in shipped_models() else "bicubic"


def available_models() -> list[str]:
    """Names `load_model` accepts besides a file path."""
    return ["bicubic", *shipped_models()]


def load_model(name_or_path: str | Path, *, scale: int = 4, device: str | torch.device = "cpu") -> nn.Module:
    """A ready-to-run generator in eval mode: "bicubic", a shipped model's name, or a safetensors path."""
    name = str(name_or_path)
    if name == "bicubic":
        return build_generator("bicubic", scale=scale).to(device).eval()
    shipped = shipped_models()
    path = shipped.get(name, Path(name))
    if not path.is_file():
        raise FileNotFoundError(
            f"model {name!r} is neither a known model ({', '.join(available_models())}) nor a weights file"
        )
    from safetensors.torch import load_file

    meta = read_metadata(path)
    model = build_generator(meta["arch"], **json.loads(meta.get("arch_kwargs", "{}")))
    try:
        missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    except RuntimeError as err:  # shape mismatches: the file's tensors are not this arch's
        raise ValueError(f"{path}: weights do not fit arch {meta['arch']!r}: {err}") from err
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not fit arch {meta['arch']!r} (missing {missing}, unexpected {unexpected})"
        )
    return model.to(device).eval()


def display_name(name_or_path: str | Path) -> str:
    """A short label: a model's name, a weights file's stem, RUN:best_psnr for a run's checkpoint."""
    path = Path(name_or_path)
    if not path.suffix:
        return str(name_or_path)
    return f"{path.parent.parent.name}:{path.stem}" if path.parent.name == "checkpoints" else path.stem


def model_scale(model: nn.Module) -> int:
    """The upscaling factor a generator was built for."""
    scale = getattr(model, "scale", None)
    if not isinstance(scale, int):
        raise ValueError(f"{type(model).__name__} does not say its scale (no integer .scale attribute)")
    return scale
