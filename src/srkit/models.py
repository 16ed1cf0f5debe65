"""Build, save and load generators. Weights are safetensors whose metadata names the architecture."""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import safetensors.torch
import torch
from safetensors import safe_open
from torch import nn

from srkit import fs
from srkit.archs import GENERATORS

WEIGHTS_FORMAT = "1"  # the srkit_format metadata of a .safetensors export
# Upscaling factors srkit accepts: x1 (restoration) to x16; beyond that no architecture here is meant to go.
MAX_SCALE = 16
# Models shipped with the package: name -> file in src/srkit/weights (filled in by trained releases).
SHIPPED_DIR = Path(__file__).parent / "weights"


class _RunningStatsBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that normalises with its running statistics in training too (they never update); its
    affine scale and shift still learn. Same parameters, buffers and state-dict keys as BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )


def freeze_batchnorm(net: nn.Module) -> int:
    """Make every BatchNorm2d of `net` normalise with its running statistics, in train() as in eval().

    For fine-tuning a BatchNorm generator (SRResNet) at a small batch: with batch statistics in training and
    running statistics in evaluation the two drift apart, and eval-mode outputs can break (srgan_lsgan_x4 at batch 4
    and lr 2e-4: 33.5 dB in train mode, 6.3 dB in eval mode on one validation image at step 314). Returns how many
    layers it changed; saved weights load into a plain model unchanged.
    """
    n = 0
    for m in net.modules():
        if type(m) is nn.BatchNorm2d:
            if m.running_mean is None or m.running_var is None:
                raise ValueError("model.freeze_bn needs BatchNorm layers with running statistics")
            m.__class__ = _RunningStatsBatchNorm2d
            n += 1
    return n


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
    metadata = {"srkit_format": WEIGHTS_FORMAT, "arch": arch, "arch_kwargs": json.dumps(arch_kwargs)}
    metadata.update(meta or {})
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    fs.atomic_write(path, safetensors.torch.save(tensors, metadata=metadata))
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


@dataclass(frozen=True)
class ShippedInfo:
    """What `srkit models` says of a model: read from its file's header, nothing loaded."""

    name: str
    arch: str
    domain: str  # natural | faces | any
    scale: int | None  # None: any (bicubic)
    params: int
    chosen_by: str
    source: str


_CHOSEN_BY = {
    "best_psnr": "best validation PSNR",
    "best_ssim": "best validation SSIM",
    "best_lpips": "best validation LPIPS",
    "milestone": "last step",
}


def describe_shipped() -> list[ShippedInfo]:
    """bicubic and every shipped model: domain, scale, parameters and the metric it was chosen by."""
    out = [ShippedInfo("bicubic", "bicubic", "any", None, 0, "-", "built-in (MATLAB-compatible)")]
    for name, path in shipped_models().items():
        meta = read_metadata(path)
        with safe_open(str(path), framework="pt") as f:
            # Parameters only: BatchNorm's running statistics are buffers, not learned weights.
            params = sum(
                math.prod(f.get_slice(k).get_shape())
                for k in f.keys()  # noqa: SIM118
                if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
            )
        kwargs = arch_kwargs_of(meta, path)
        # The model's record (model-database style JSON beside the weights), else the weights' own metadata.
        record_path = path.with_suffix(".json")
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        kind = meta.get("kind", "")
        chosen = record.get("chosen_by") or meta.get("chosen_by") or _CHOSEN_BY.get(kind, kind or "-")
        step = meta.get("source_step")
        step = None if step == "?" else step  # averaged weights: their chosen_by names the steps
        out.append(
            ShippedInfo(
                name=name,
                arch=meta["arch"],
                domain=record.get("domain") or meta.get("domain", "natural"),
                scale=int(kwargs.get("scale", 4)),
                params=params,
                chosen_by=f"{chosen} (step {step})" if step and chosen != "-" else chosen,
                source=f"src/srkit/weights/{path.name}",
            )
        )
    return out


def default_face_model() -> str:
    """What `--faces` uses without --face-model: the shipped face SRGAN, else the face SRResNet."""
    shipped = shipped_models()
    for name in ("srgan_faces", "srresnet_faces"):
        if name in shipped:
            return name
    raise FileNotFoundError(
        "no face model is shipped with this srkit: pass --face-model WEIGHTS (train one with "
        "configs/srresnet_faces_x4.yaml, then configs/srgan_faces_x4.yaml)"
    )


def available_models() -> list[str]:
    """Names `load_model` accepts besides a file path."""
    return ["bicubic", *shipped_models()]


def arch_kwargs_of(meta: dict[str, str], path: str | Path) -> dict[str, Any]:
    """The arch_kwargs a weights file's metadata records, checked to be a JSON object of named arguments."""
    raw = meta.get("arch_kwargs", "{}")
    try:
        kwargs = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: metadata arch_kwargs is not valid JSON ({err}): {raw[:80]!r}") from None
    if not isinstance(kwargs, dict):
        kind = type(kwargs).__name__
        raise ValueError(f"{path}: metadata arch_kwargs must be a JSON object of arguments, got a {kind}")
    return kwargs


def with_tensors(arch: str, kwargs: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    """srkit's `arch` holding `state`'s tensors (strict: every key and shape), without a random init first.

    The network is built on the meta device and the tensors assigned to it: initialising a paper-size RRDBNet
    (Kaiming-normal on 350 convs) took 4.3 s of a 10 s `srkit upscale` of a 160 px image, only to be
    overwritten. Floating tensors become float32, as loading into a freshly built module would make them.
    """
    with torch.device("meta"):
        net = build_generator(arch, **kwargs)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    net.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in [*net.parameters(), *net.buffers()]):  # a buffer the state dict does not hold
        net = build_generator(arch, **kwargs)
        net.load_state_dict(state, strict=True)
    return net


def build_for_weights(path: str | Path, meta: dict[str, str] | None = None) -> nn.Module:
    """The network a weights file describes, built only once its shapes are known to fit the file.

    The architecture is first built on the meta device (no memory), so metadata with absurd or negative
    sizes (a 1 KB file claiming width 200000 would ask for a terabyte) is refused before anything is
    allocated, and every tensor shape is compared with the file's before the real build.
    """
    meta = read_metadata(path) if meta is None else meta
    arch, kwargs = meta["arch"], arch_kwargs_of(meta, path)
    try:
        with torch.device("meta"):
            probe = build_generator(arch, **kwargs)
    except (ValueError, RuntimeError, TypeError, OverflowError) as err:
        raise ValueError(f"{path}: metadata arch_kwargs {kwargs} do not build a {arch!r}: {err}") from None
    with safe_open(str(path), framework="pt") as f:
        stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    wanted = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    missing, unexpected = sorted(set(wanted) - set(stored)), sorted(set(stored) - set(wanted))
    wrong = [f"{k}: file {stored[k]}, {arch} {wanted[k]}" for k in wanted if k in stored and stored[k] != wanted[k]]
    if missing or unexpected or wrong:
        details = "; ".join(
            part
            for part in (
                f"missing {missing[:3]}" if missing else "",
                f"unexpected {unexpected[:3]}" if unexpected else "",
                f"shape mismatch {wrong[:3]}" if wrong else "",
            )
            if part
        )
        raise ValueError(f"{path}: weights do not fit arch {arch!r} with arch_kwargs {kwargs} ({details})")
    return build_generator(arch, **kwargs)


def check_fits(path: str | Path, meta: dict[str, str] | None = None) -> None:
    """Refuse (ValueError) a weights file whose tensors do not fit the arch its metadata names (build_for_weights'
    checks, nothing built for real)."""
    with torch.device("meta"):
        build_for_weights(path, meta)


ModelKind = Literal["bicubic", "shipped", "weights", "community", "onnx"]


@dataclass(frozen=True)
class ModelSource:
    """What a model name means, decided in one place (`resolve_model`); nothing is loaded yet.

    kind: "bicubic" (built in), "shipped" (a file in src/srkit/weights), "weights" (an srkit .safetensors file),
    "community" (a .pth/.pt/.ckpt/.safetensors file of an architecture spandrel detects, see community.py) or
    "onnx" (an .onnx file, run by ONNX Runtime). `scale` is None only for an ONNX file, whose factor is known once
    it is opened (srkit.descriptor.open_model).
    """

    spec: str  # the name or path as given
    kind: ModelKind
    path: Path | None
    arch: str  # "bicubic", the weights' arch, or "onnx"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)  # the safetensors header (empty for bicubic and ONNX)
    scale: int | None = None

    @property
    def label(self) -> str:
        """A short name for tables and file names (see display_name)."""
        return display_name(self.spec)


def _arch_scale(arch: str, kwargs: dict[str, Any], path: Path) -> int:
    """The factor a weights file's arch builds: its `scale` argument, else the arch's default."""
    if arch not in GENERATORS:
        raise ValueError(f"{path}: unknown generator {arch!r} in its metadata; expected one of {sorted(GENERATORS)}")
    raw = kwargs.get("scale", inspect.signature(GENERATORS[arch]).parameters["scale"].default)
    if not isinstance(raw, int) or isinstance(raw, bool) or not 1 <= raw <= MAX_SCALE:
        raise ValueError(f"{path}: metadata scale {raw!r} is not an integer in 1..{MAX_SCALE}")
    return raw


def resolve_model(name_or_path: str | Path, *, scale: int | None = None) -> ModelSource:
    """ "bicubic", a shipped model's name, a .safetensors file or an .onnx file -> its ModelSource.

    `scale` is bicubic's factor (default 4); a trained model has its own, and a different `scale` is an error
    rather than a silent x4. Raises FileNotFoundError for a name that is none of these.
    """
    name = str(name_or_path)
    if scale is not None and not 1 <= scale <= MAX_SCALE:
        raise ValueError(f"scale must be an integer in 1..{MAX_SCALE}, got {scale}")
    if name == "bicubic":
        return ModelSource(name, "bicubic", None, "bicubic", {"scale": scale or 4}, {}, scale or 4)
    shipped = shipped_models()
    path = shipped.get(name, Path(name))
    if not path.is_file():
        raise FileNotFoundError(
            f"model {name!r} is neither a known model ({', '.join(available_models())}) nor a weights file"
        )
    suffix = path.suffix.lower()
    if name not in shipped and suffix == ".onnx":
        return ModelSource(name, "onnx", path, "onnx", scale=scale)
    if name not in shipped and (
        suffix in (".pth", ".pt", ".ckpt") or (suffix == ".safetensors" and not _is_srkit(path))
    ):
        return _community_source(name, path, scale)
    meta = read_metadata(path)
    kwargs = arch_kwargs_of(meta, path)
    own = _arch_scale(meta["arch"], kwargs, path)
    if scale is not None and scale != own:
        raise ValueError(f"model {name!r} upscales x{own}; --scale {scale} does not apply to it (leave --scale out)")
    kind: ModelKind = "shipped" if name in shipped else "weights"
    return ModelSource(name, kind, path, meta["arch"], kwargs, meta, own)


def _is_srkit(path: Path) -> bool:
    """Whether a readable safetensors file carries srkit's metadata (an `arch`); unreadable files count as srkit's,
    so read_metadata reports what is wrong with them."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return "arch" in (f.metadata() or {})
    except Exception:  # safetensors' own error types; read_metadata words them
        return True


def _community_source(name: str, path: Path, scale: int | None) -> ModelSource:
    """Read and detect community weights once, for their architecture and scale (community.load_community).

    A file that is exactly one of srkit's networks (community.native_equivalent) resolves to that arch and its
    kwargs, and runs as srkit's module; any other to spandrel's architecture id (metadata `community_arch` holds
    spandrel's id either way)."""
    from srkit.community import detect, native_equivalent, read_state_dict

    state = read_state_dict(path)
    found = detect(state, source=path)
    community_arch, own = str(found.architecture.id), int(found.scale)
    if scale is not None and scale != own:
        raise ValueError(
            f"model {name!r} ({community_arch}) upscales x{own}; --scale {scale} does not apply to it "
            "(leave --scale out)"
        )
    meta = {"community_arch": community_arch, "source_format": path.suffix.lower().lstrip(".")}
    native = native_equivalent(state, found)
    arch, kwargs = (community_arch, {"scale": own}) if native is None else native
    return ModelSource(name, "community", path, arch, kwargs, meta | {"arch": arch}, own)


def load_source(source: ModelSource, *, device: str | torch.device = "cpu") -> nn.Module:
    """The PyTorch generator of a resolved bicubic, shipped, weights or community model, in eval mode on `device`."""
    if source.kind == "onnx":
        raise ValueError(f"{source.spec} is an ONNX file: run it with --backend onnxruntime")
    if source.kind == "bicubic":
        return build_generator("bicubic", **source.arch_kwargs).to(device).eval()
    if source.kind == "community":
        from srkit.community import SpandrelModule, load_community, read_state_dict

        assert source.path is not None
        if source.arch in GENERATORS:  # exactly an srkit network (see _community_source): srkit's module runs it
            return with_tensors(source.arch, source.arch_kwargs, read_state_dict(source.path)).to(device).eval()
        return SpandrelModule(load_community(source.path)).to(device).eval()
    assert source.path is not None
    from safetensors.torch import load_file

    check_fits(source.path, source.metadata)
    try:
        model = with_tensors(source.arch, source.arch_kwargs, load_file(str(source.path)))
    except RuntimeError as err:  # shapes were checked; dtype or other oddities remain
        raise ValueError(f"{source.path}: weights do not load into arch {source.arch!r}: {err}") from err
    return model.to(device).eval()


def load_model(name_or_path: str | Path, *, scale: int | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """A ready-to-run PyTorch generator in eval mode: "bicubic", a shipped model's name, or a safetensors path.

    The same names as resolve_model (an .onnx file is refused: srkit.descriptor.open_model runs those).
    """
    return load_source(resolve_model(name_or_path, scale=scale), device=device)


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
