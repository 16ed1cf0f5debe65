"""Degradations: MATLAB-compatible bicubic `imresize` and `modcrop`.

`imresize` is written here rather than taken from a library: bicubic_pytorch (the maintained
MATLAB-compatible port) always computes in float32 whatever the input dtype, so values that MATLAB's
double arithmetic rounds one way can round the other. Here the 1-D weights follow MATLAB's
`contributions()` (Keys cubic, a = -0.5, kernel widened by 1/scale when downscaling with antialiasing,
symmetric edge mirroring) and are applied in the input's dtype, float64 for the metric protocol.
bicubic_pytorch serves as the independent reference in the tests.

On top of those sit the other degradations (blur, noise, JPEG, resize), each a pure function of
(image, generator) -> image on float [0, 1] tensors, (C, H, W) or (N, C, H, W), and a small spec layer
(`parse_pipeline`, `apply_pipeline`, `PRESETS`) so a training config can name its LQ pipeline.
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from io import BytesIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from srkit.ops import gaussian_kernel1d, imresize, quantize, to_uint8


def bicubic_degrade(gt: torch.Tensor, scale: int) -> torch.Tensor:
    """The standard SR degradation: MATLAB bicubic downscale by `scale`, quantised to 8-bit levels.

    gt: (..., 3, H, W) float in [0, 1] with H, W multiples of `scale`. Returns lq in [0, 1], values on
    the 1/255 grid, as an LR PNG made by MATLAB would hold.
    """
    return quantize(imresize(gt.to(torch.float64), 1 / scale)).to(gt.dtype)


# --- Composable degradations: pure functions of (image[, generator]) on float [0, 1] tensors ---


def _check_image(img: torch.Tensor, where: str) -> None:
    """Raise unless img is a float (C, H, W) or (N, C, H, W) tensor."""
    if img.ndim not in (3, 4) or not img.is_floating_point():
        raise ValueError(
            f"{where}: expected a float image tensor of shape (C, H, W) or (N, C, H, W), "
            f"got {img.dtype} of shape {tuple(img.shape)}"
        )


def gaussian_blur(img: torch.Tensor, *, sigma: float, radius: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding (mirror without repeating the edge, OpenCV's default).

    sigma is the standard deviation in pixels; radius (default ceil(3 * sigma)) sets 2 * radius + 1 taps.
    "Blur radius 1.5" in the report is read as sigma = 1.5: Pillow's ImageFilter.GaussianBlur(radius=...)
    documents its radius as the standard deviation, and that is the blur such scripts call.
    """
    _check_image(img, "gaussian_blur")
    k = gaussian_kernel1d(sigma, radius, dtype=img.dtype).to(img.device)
    r = (k.numel() - 1) // 2
    if r == 0:
        return img.clone()
    h, w = img.shape[-2:]
    if r >= min(h, w):
        raise ValueError(f"gaussian_blur: a radius-{r} kernel needs an image larger than {r}px per side, got {h}x{w}")
    x = img.reshape(-1, 1, h, w)  # (N, C, H, W) -> (N*C, 1, H, W): every channel blurred alike
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return x.reshape(img.shape)


def add_gaussian_noise(img: torch.Tensor, *, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Add i.i.d. Gaussian noise of std `sigma` on the 0-255 scale to every pixel and channel; clamp to [0, 1]."""
    _check_image(img, "add_gaussian_noise")
    if not 0 <= sigma <= 255:
        raise ValueError(f"add_gaussian_noise: sigma must be in [0, 255] (0-255 scale), got {sigma}")
    noise = torch.randn(img.shape, generator=generator, dtype=img.dtype, device=generator.device)
    return (img + noise.to(img.device) * (sigma / 255)).clamp(0, 1)


def jpeg(img: torch.Tensor, *, quality: int) -> torch.Tensor:
    """Encode each RGB image as JPEG with Pillow at `quality` and decode it again (deterministic).

    Pillow's defaults otherwise (4:2:0 chroma subsampling, standard tables), as a saved JPEG would have.
    """
    _check_image(img, "jpeg")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"jpeg: quality must be an int in [1, 100], got {quality!r}")
    if img.shape[-3] != 3:
        raise ValueError(f"jpeg: expected 3 (RGB) channels, got shape {tuple(img.shape)}")
    batch = img.reshape(-1, *img.shape[-3:])
    q = to_uint8(batch.detach()).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for arr in q:  # (H, W, 3) uint8
        buffer = BytesIO()
        Image.fromarray(arr).save(buffer, format="JPEG", quality=quality)
        with Image.open(buffer) as decoded:
            out.append(np.asarray(decoded.convert("RGB")))
    result = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)  # (N, H, W, 3) -> (N, 3, H, W)
    return result.to(device=img.device, dtype=img.dtype).div(255).reshape(img.shape)


def resize_to(img: torch.Tensor, *, size: tuple[int, int]) -> torch.Tensor:
    """Resize to size = (H, W) with MATLAB bicubic (antialiased when shrinking), clamped to [0, 1]."""
    _check_image(img, "resize_to")
    if len(size) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in size):
        raise ValueError(f"resize_to: size must be (height, width) of positive ints, got {size!r}")
    # Clamped because bicubic overshoots at edges and the image contract is [0, 1].
    return imresize(img, size=(size[0], size[1])).clamp(0, 1)


def _check_scale(img: torch.Tensor, scale: int, what: str) -> None:
    """Refuse a scale that is not an int >= 1, or an image whose sides it does not divide (`what` names both)."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"{what.split(':')[0]}: scale must be an int >= 1, got {scale!r}")
    h, w = img.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"{what} {h}x{w} is not a multiple of the scale {scale}; modcrop it first")


def bicubic_down(img: torch.Tensor, *, scale: int) -> torch.Tensor:
    """MATLAB bicubic downscale by an integer `scale`, clamped to [0, 1] but not quantised (cf. bicubic_degrade)."""
    _check_image(img, "bicubic_down")
    _check_scale(img, scale, "bicubic_down: image")
    # The same call bicubic_degrade makes, so quantising this result reproduces it bit for bit.
    return imresize(img, 1 / scale).clamp(0, 1)


# --- Pipelines by name: the spec a training config holds ---

# A parameter is a number, or a (lo, hi) range sampled uniformly per call (int parameters: inclusive).
ParamValue = float | tuple[float, float]


@dataclass(frozen=True)
class _ParamSpec:
    """What one step parameter accepts."""

    kind: type  # int or float
    required: bool
    low: float
    high: float = math.inf


# Every step and its parameters; "bicubic" takes the pipeline's scale. apply_pipeline's _apply_step
# calls the function for each name, spelled out there.
_STEPS: dict[str, dict[str, _ParamSpec]] = {
    "blur": {"sigma": _ParamSpec(float, True, 0.0), "radius": _ParamSpec(int, False, 0)},
    "bicubic": {},
    "noise": {"sigma": _ParamSpec(float, True, 0.0, 255.0)},
    "jpeg": {"quality": _ParamSpec(int, True, 1, 100)},
}


def _check_param(step: str, name: str, spec: _ParamSpec, value: object) -> ParamValue:
    """Validate one parameter value (or [lo, hi] range) and return it normalised (ranges as tuples)."""
    kind = "an int" if spec.kind is int else "a number"
    bounds = f"[{spec.low:g}, {spec.high:g}]" if spec.high < math.inf else f">= {spec.low:g}"
    expected = f"{kind} {bounds} or a [lo, hi] range of them"

    def one(v: object) -> float:
        if isinstance(v, bool) or not isinstance(v, int if spec.kind is int else (int, float)):
            raise ValueError(f"step {step!r}: parameter {name!r} must be {expected}, got {value!r}")
        assert isinstance(v, (int, float))
        if not spec.low <= v <= spec.high:
            raise ValueError(f"step {step!r}: parameter {name!r} must be {expected}, got {value!r}")
        return int(v) if spec.kind is int else float(v)

    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"step {step!r}: parameter {name!r} range must be [lo, hi], got {value!r}")
        lo, hi = one(value[0]), one(value[1])
        if lo > hi:
            raise ValueError(f"step {step!r}: parameter {name!r} range [lo, hi] needs lo <= hi, got {value!r}")
        return (lo, hi)
    return one(value)


@dataclass(frozen=True)
class DegradationStep:
    """One named degradation and its parameters, validated on construction."""

    name: str
    params: Mapping[str, ParamValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        allowed = _STEPS.get(self.name)
        if allowed is None:
            raise ValueError(f"unknown degradation step {self.name!r}; allowed: {', '.join(sorted(_STEPS))}")
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            names = ", ".join(sorted(allowed)) or "none"
            raise ValueError(f"step {self.name!r}: unknown parameter {unknown[0]!r}; allowed: {names}")
        missing = [p for p, spec in allowed.items() if spec.required and p not in self.params]
        if missing:
            raise ValueError(f"step {self.name!r}: missing required parameter {missing[0]!r}")
        checked = {p: _check_param(self.name, p, allowed[p], v) for p, v in sorted(self.params.items())}
        # A read-only view keeps the frozen promise for the mapping too.
        object.__setattr__(self, "params", types.MappingProxyType(checked))

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.params.items())))

    def __reduce__(self) -> tuple[type[DegradationStep], tuple[str, dict[str, ParamValue]]]:
        # mappingproxy cannot be pickled; DataLoader workers may need to pickle a dataset holding steps.
        return (DegradationStep, (self.name, dict(self.params)))


def parse_pipeline(spec: Sequence[object]) -> list[DegradationStep]:
    """Turn a config list like [{"blur": {"sigma": 1.5}}, {"bicubic": {}}] into validated steps.

    Each item is a step name ("bicubic") or a one-key mapping {name: {param: value}}; parameters may be
    None (YAML "- bicubic:"). Typed as object because the list comes from YAML and is checked here.
    """
    if isinstance(spec, (str, Mapping)) or not isinstance(spec, Sequence):
        raise ValueError(f"a degradation pipeline is a list of steps, got {spec!r}")
    steps: list[DegradationStep] = []
    for i, item in enumerate(spec):
        if isinstance(item, str):  # YAML "- bicubic"
            name, params = item, None
        elif isinstance(item, Mapping) and len(item) == 1:
            ((name, params),) = item.items()
        else:
            raise ValueError(
                f"degradation step {i}: expected a name or a one-key mapping {{name: {{param: value}}}}, got {item!r}"
            )
        if params is not None and not isinstance(params, Mapping):
            raise ValueError(f"degradation step {i} ({name!r}): parameters must be a mapping, got {params!r}")
        try:
            steps.append(DegradationStep(str(name), dict(params or {})))
        except ValueError as err:
            raise ValueError(f"degradation step {i}: {err}") from None
    _check_pipeline(steps)
    return steps


def _check_pipeline(steps: Sequence[DegradationStep]) -> None:
    """A pipeline downscales exactly once, so its output is always HR / scale."""
    n = sum(step.name == "bicubic" for step in steps)
    if n != 1:
        raise ValueError(
            f"a degradation pipeline needs exactly one 'bicubic' step (the downscale to HR / scale), got {n}: "
            f"{[step.name for step in steps]}"
        )


# Named pipelines. "realistic" draws noise and JPEG levels from Real-ESRGAN's first-order ranges
# (noise_range [1, 30], jpeg_range [30, 95] in its train_realesrgan_x4plus.yml).
PRESETS: dict[str, tuple[DegradationStep, ...]] = {
    "bicubic": (DegradationStep("bicubic"),),
    "blur_bicubic": (DegradationStep("blur", {"sigma": 1.5}), DegradationStep("bicubic")),
    "realistic": (
        DegradationStep("bicubic"),
        DegradationStep("noise", {"sigma": (1.0, 30.0)}),
        DegradationStep("jpeg", {"quality": (30, 95)}),
    ),
}


def resolve_pipeline(spec: str | Sequence[object]) -> list[DegradationStep]:
    """A preset name (see PRESETS) or a list of steps, as a training config gives it."""
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f"unknown degradation preset {spec!r}; allowed: {', '.join(sorted(PRESETS))}")
        return list(PRESETS[spec])
    return parse_pipeline(spec)


def sample_params(steps: Sequence[DegradationStep], generator: torch.Generator) -> list[DegradationStep]:
    """Replace every [lo, hi] range by a value drawn with `generator` (in step, then parameter-name order)."""
    out = []
    for step in steps:
        params: dict[str, ParamValue] = {}
        for name, value in step.params.items():
            if isinstance(value, tuple):
                lo, hi = value
                if _STEPS[step.name][name].kind is int:
                    params[name] = int(torch.randint(int(lo), int(hi) + 1, (1,), generator=generator))
                else:
                    params[name] = lo + (hi - lo) * float(torch.rand(1, generator=generator, dtype=torch.float64))
            else:
                params[name] = value
        out.append(DegradationStep(step.name, params))
    return out


def _value(step: DegradationStep, name: str) -> float:
    """A parameter's concrete value (ranges are sampled before a step runs)."""
    value = step.params[name]
    if isinstance(value, tuple):
        raise AssertionError(f"step {step.name!r}: range {name}={value} was not sampled")
    return value


def _apply_step(x: torch.Tensor, step: DegradationStep, *, scale: int, generator: torch.Generator) -> torch.Tensor:
    """Run one step whose parameters are concrete values."""
    if step.name == "blur":
        radius = int(_value(step, "radius")) if "radius" in step.params else None
        return gaussian_blur(x, sigma=_value(step, "sigma"), radius=radius)
    if step.name == "bicubic":
        return bicubic_down(x, scale=scale)
    if step.name == "noise":
        return add_gaussian_noise(x, sigma=_value(step, "sigma"), generator=generator)
    if step.name == "jpeg":
        return jpeg(x, quality=int(_value(step, "quality")))
    raise AssertionError(f"no implementation for step {step.name!r}")  # _STEPS and this function disagree


def apply_pipeline(
    gt: torch.Tensor, steps: Sequence[DegradationStep], *, scale: int, generator: torch.Generator
) -> torch.Tensor:
    """Degrade gt (H, W multiples of `scale`) into lq of size H / scale, W / scale on the 8-bit grid.

    Steps run in order in float64; ranges are drawn once per call (a batch shares them: call per image
    for per-image levels). The `bicubic` preset reproduces bicubic_degrade exactly.
    """
    _check_image(gt, "apply_pipeline")
    _check_scale(gt, scale, "apply_pipeline: gt")
    _check_pipeline(steps)
    x = gt.to(torch.float64)
    for step in sample_params(steps, generator):
        x = _apply_step(x, step, scale=scale, generator=generator)
    # The same rounding as bicubic_degrade: what an LR PNG would hold.
    return quantize(x).to(gt.dtype)
