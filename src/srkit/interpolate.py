"""Network interpolation (ESRGAN sec. 3.4): blend a PSNR-oriented model and its GAN fine-tune, weight by weight.

theta = (1 - alpha) * theta_PSNR + alpha * theta_GAN. Pass the PSNR model as `a` and the GAN model as `b`:
alpha 0 gives the PSNR model (smooth, high PSNR), alpha 1 the GAN model (sharp, perceptual), values in
between trade one for the other without retraining. Both must share the architecture, e.g. an ESRGAN
(rrdbnet) fine-tuned from its rrdb_psnr run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from srkit.descriptor import open_model
from srkit.evaluate import EvalImage, evaluate_images, folder_images, summarize
from srkit.metrics import LPIPS
from srkit.models import build_generator, read_metadata, save_weights, shipped_models


def interpolate_weights(a: Path, b: Path, alpha: float, out: Path) -> Path:
    """Write (1 - alpha) * A + alpha * B to `out` (A: the PSNR model, B: the GAN model); returns `out`.

    Float tensors are blended (in float64, stored in their own dtype); integer buffers such as BatchNorm's
    num_batches_tracked are taken from B. The output's metadata records both sources and alpha.
    """
    _refuse_input_as_output([a, b], out)
    model, arch, kwargs = blend(a, b, alpha)
    meta = {
        "kind": "interpolated",
        "interpolated_a": str(a),
        "interpolated_b": str(b),
        "alpha": repr(float(alpha)),
        "formula": "(1 - alpha) * A + alpha * B (ESRGAN sec. 3.4; A = PSNR model, B = GAN model)",
    }
    return save_weights(model, Path(out), arch=arch, arch_kwargs=kwargs, meta=meta)


def blend(a: Path, b: Path, alpha: float) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """The blended network (eval mode, CPU), its arch and arch_kwargs; see interpolate_weights. A and B are
    .safetensors files or shipped models' names."""
    weights = _alpha_weights(alpha)
    return _combine(_read([a, b], what="interpolate"), weights)


def blends(a: Path, b: Path) -> Callable[[float], torch.nn.Module]:
    """alpha -> the blended network, A and B read once (for sweeps over alpha)."""
    files = _read([a, b], what="interpolate")
    return lambda alpha: _combine(files, _alpha_weights(alpha))[0]


def _alpha_weights(alpha: float) -> list[float]:
    if not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (0 = A, the PSNR model; 1 = B, the GAN model), got {alpha}")
    return [1.0 - alpha, alpha]


def average_weights(paths: Sequence[Path | str], out: Path) -> Path:
    """Write the mean of several checkpoints of one architecture to `out`, weight by weight; returns `out`.

    Checkpoint averaging (stochastic weight averaging over a run's milestones, Izmailov et al. 2018; a uniform
    "model soup", Wortsman et al. 2022): the milestones of one GAN fine-tune lie close together, and their mean
    often keeps their LPIPS at a higher PSNR than any one of them. Integer buffers come from the last file.
    """
    if len(paths) < 2:
        raise ValueError(f"averaging needs at least two checkpoints, got {len(paths)}")
    _refuse_input_as_output(paths, out)
    model, arch, kwargs = _mix(list(paths), [1.0 / len(paths)] * len(paths), what="average")
    meta = {"kind": "averaged", "averaged": json.dumps([str(p) for p in paths]), "formula": "mean of the files"}
    return save_weights(model, Path(out), arch=arch, arch_kwargs=kwargs, meta=meta)


def fuse(low: Path | str, high: Path | str, sigma: float) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """The frequency fusion of two models (archs.fusion.FrequencyFusion: `low`'s output below a Gaussian of `sigma`
    HR pixels, `high`'s above it), eval mode, CPU; its arch and arch_kwargs. Files or shipped names, one scale."""
    from srkit.archs import FrequencyFusion

    parts = [_plain(path) for path in (low, high)]
    scales = [int(kwargs.get("scale", getattr(net, "scale", 4))) for net, _, kwargs in parts]
    if scales[0] != scales[1]:
        raise ValueError(f"cannot fuse a x{scales[0]} model ({low}) with a x{scales[1]} one ({high}): both must match")
    if any(arch == "freqfusion" for _, arch, _ in parts):
        raise ValueError("fuse two plain models, not a fusion: fuse its own low and high models again instead")
    specs = [{"arch": arch, "args": {k: v for k, v in kwargs.items() if k != "scale"}} for _, arch, kwargs in parts]
    kwargs: dict[str, Any] = {"scale": scales[0], "low": specs[0], "high": specs[1], "sigma": float(sigma)}
    model = FrequencyFusion(**kwargs)
    state = {f"{role}.{k}": v for role, (net, _, _) in zip(("low", "high"), parts, strict=True)
             for k, v in net.state_dict().items()}  # fmt: skip
    model.load_state_dict(state, strict=True)
    return model.eval(), "freqfusion", kwargs


class Remembered(torch.nn.Module):
    """`net` that hands back the output it made earlier for an input of the same contents, shape and autocast
    state: a sweep over a fusion's sigma then runs each of its two networks once per image, not once per image
    and sigma (only the blur between them changes). Outputs are kept up to `max_bytes` in all; past that, new
    inputs are computed and not kept, so memory stays bounded and results stay the same."""

    def __init__(self, net: torch.nn.Module, *, max_bytes: int = 1 << 30) -> None:
        super().__init__()
        self.net = net
        self.max_bytes = max_bytes
        self.kept_bytes = 0
        self.runs = 0  # forward passes of `net` actually made
        self._outputs: dict[tuple[Any, ...], torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A caller that differentiates needs a graph, which a kept output lacks: no lookup, nothing kept.
        key = None if torch.is_grad_enabled() else self._key(x)
        if key in self._outputs:
            return self._outputs[key]
        out = self.net(x)
        self.runs += 1
        size = out.numel() * out.element_size()
        if key is not None and self.kept_bytes + size <= self.max_bytes:
            self._outputs[key] = out
            self.kept_bytes += size
        return out

    @staticmethod
    def _key(x: torch.Tensor) -> tuple[Any, ...]:
        raw = x.detach().contiguous().view(-1).view(torch.uint8).cpu().numpy().tobytes()
        digest = hashlib.blake2b(raw, digest_size=16).digest()
        return tuple(x.shape), x.dtype, str(x.device), torch.is_autocast_enabled(x.device.type), digest


def fusions(low: Path | str, high: Path | str) -> Callable[[float], torch.nn.Module]:
    """sigma -> the fusion at that sigma; the two models read and built once (for sweeps over sigma), their
    outputs remembered per input image (Remembered), so each runs once per image whatever the number of sigmas.
    For scoring only: the fusion it returns holds its members inside Remembered wrappers (save with fuse_models)."""
    from srkit.archs import FrequencyFusion

    model, _, _ = fuse(low, high, 1.0)
    assert isinstance(model, FrequencyFusion)
    model.low, model.high = Remembered(model.low), Remembered(model.high)

    def at(sigma: float) -> torch.nn.Module:
        model.set_sigma(sigma)
        return model

    return at


def _plain(path: Path | str) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """A file or shipped name as (network, arch, arch_kwargs); "bicubic" is the parameter-free baseline."""
    if str(path) == "bicubic":
        return build_generator("bicubic", scale=4), "bicubic", {"scale": 4}
    return _mix([path], [1.0], what="fuse")


def fuse_models(low: Path | str, high: Path | str, sigma: float, out: Path) -> Path:
    """Write the frequency fusion of `low` (a PSNR model) and `high` (a GAN model) to `out`; returns `out`."""
    _refuse_input_as_output([low, high], out)
    model, arch, kwargs = fuse(low, high, sigma)
    meta = {
        "kind": "fused",
        "fused_low": str(low),
        "fused_high": str(high),
        "sigma": repr(float(sigma)),
        "formula": "high(x) + G_sigma * (low(x) - high(x)), G_sigma a Gaussian of sigma HR pixels",
    }
    return save_weights(model, Path(out), arch=arch, arch_kwargs=kwargs, meta=meta)


def _refuse_input_as_output(paths: Sequence[Path | str], out: Path) -> None:
    """Inputs are never overwritten: the mixed weights go to a file that is none of them."""
    if any(Path(p).resolve() == Path(out).resolve() for p in paths):
        raise ValueError(f"the output {out} is one of the inputs: write the mixed weights to a new file")


def _mix(
    paths: Sequence[Path | str], weights: Sequence[float], *, what: str
) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """sum_i weights[i] * state_i over files (or shipped names) of one architecture; integer buffers (BatchNorm's
    num_batches_tracked) from the last file, as counters do not blend."""
    return _combine(_read(paths, what=what), weights)


@dataclass(frozen=True)
class _Files:
    """Weights files of one architecture, read and checked to hold the same tensors."""

    files: list[Path]
    arch: str
    kwargs: dict[str, Any]
    states: list[dict[str, torch.Tensor]]


def _read(paths: Sequence[Path | str], *, what: str) -> _Files:
    """The files (or shipped names) read, checked to share one arch, arch_kwargs, keys, shapes and dtypes."""
    shipped = shipped_models()
    files = [shipped.get(str(p), Path(p)) for p in paths]
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path}")
    metas = [read_metadata(f) for f in files]
    first, kwargs_first = files[0], json.loads(metas[0].get("arch_kwargs", "{}"))
    states = [load_file(str(f)) for f in files]
    for path, meta, state in zip(files[1:], metas[1:], states[1:], strict=True):
        kwargs = json.loads(meta.get("arch_kwargs", "{}"))
        if (metas[0]["arch"], kwargs_first) != (meta["arch"], kwargs):
            raise ValueError(
                f"cannot {what} models of different architectures: {first} is {metas[0]['arch']} {kwargs_first}, "
                f"{path} is {meta['arch']} {kwargs} (expected the same arch and arch_kwargs)"
            )
        if state.keys() != states[0].keys():
            only_a, only_b = sorted(states[0].keys() - state.keys()), sorted(state.keys() - states[0].keys())
            raise ValueError(
                f"{first} and {path} hold different tensors (only in the first: {only_a}; only in the other: {only_b})"
            )
        for key, ta in states[0].items():
            tb = state[key]
            if ta.shape != tb.shape or ta.dtype != tb.dtype:
                raise ValueError(
                    f"{key}: {first} has {tuple(ta.shape)} {ta.dtype}, {path} has {tuple(tb.shape)} {tb.dtype} "
                    "(expected the same)"
                )
    return _Files(files, metas[0]["arch"], kwargs_first, states)


def _combine(read: _Files, weights: Sequence[float]) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """sum_i weights[i] * state_i as a network (eval mode, CPU), its arch and arch_kwargs."""
    files, states, kwargs_first = read.files, read.states, read.kwargs
    mixed: dict[str, torch.Tensor] = {}
    for key, t0 in states[0].items():
        if t0.is_floating_point():
            total = sum(w * st[key].to(torch.float64) for w, st in zip(weights, states, strict=True))
            mixed[key] = torch.as_tensor(total).to(t0.dtype)
        else:
            mixed[key] = states[-1][key].clone()  # counters (num_batches_tracked) are not blendable: the last file's
    model = build_generator(read.arch, **kwargs_first)
    try:
        model.load_state_dict(mixed, strict=True)
    except RuntimeError as err:  # missing/unexpected keys or shapes: the files' tensors are not this arch's
        names = ", ".join(str(f) for f in files)
        raise ValueError(f"{names}: weights do not fit arch {read.arch!r}: {err}") from err
    return model.eval(), read.arch, kwargs_first


@dataclass(frozen=True)
class AlphaScore:
    """One setting of a mix (interpolate's alpha, fuse's sigma) scored on validation images."""

    alpha: float  # the setting: alpha for interpolate, sigma for fuse
    psnr: float
    ssim: float
    lpips: float | None


def sweep(
    make: Callable[[float], torch.nn.Module],
    folder: Path,
    *,
    values: Sequence[float],
    device: torch.device,
    lpips_model: LPIPS | None,
    scale: int = 4,
) -> tuple[list[AlphaScore], float]:
    """The model `make(value)` for each value, scored on a folder of HR images (validation images, never a
    benchmark), and bicubic's PSNR there."""
    # Each (HR, LR) pair read and degraded once, not once per value.
    images = [
        EvalImage(i.name, functools.partial(lambda pair: pair, i.load()), i.source)
        for i in folder_images(folder, scale=scale)
    ]
    bicubic = evaluate_images(open_model("bicubic", scale=scale), images, set_name="val", scale=scale,
                              device=device, lpips_model=None)  # fmt: skip
    scores = []
    for value in values:
        rows = evaluate_images(
            make(value).to(device), images, set_name="val", scale=scale, device=device, lpips_model=lpips_model
        )
        summary = summarize(rows)["val"]
        lp = summary.mean("lpips")
        scores.append(AlphaScore(value, summary.mean("psnr") or math.nan, summary.mean("ssim") or math.nan, lp))
    return scores, summarize(bicubic)["val"].mean("psnr") or math.nan


def choose_alpha(
    scores: Sequence[AlphaScore],
    *,
    bicubic_psnr: float,
    min_gain: float,
    what: str = "alpha",
    more: str = "smaller alphas",
) -> AlphaScore:
    """The mix with the lowest LPIPS among those at least `min_gain` dB above bicubic (PSNR when no LPIPS)."""
    allowed = [s for s in scores if s.psnr >= bicubic_psnr + min_gain]
    if not allowed:
        best = max(s.psnr for s in scores)
        raise ValueError(
            f"no {what} reaches bicubic + {min_gain:g} dB = {bicubic_psnr + min_gain:.2f} dB on the validation "
            f"images (best {best:.2f} dB): lower --min-psnr-gain or add {more}"
        )
    return min(allowed, key=lambda s: (s.lpips if s.lpips is not None else -s.psnr, -s.psnr))
