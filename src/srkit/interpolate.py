"""Network interpolation (ESRGAN sec. 3.4): blend a PSNR-oriented model and its GAN fine-tune, weight by weight.

theta = (1 - alpha) * theta_PSNR + alpha * theta_GAN. Pass the PSNR model as `a` and the GAN model as `b`:
alpha 0 gives the PSNR model (smooth, high PSNR), alpha 1 the GAN model (sharp, perceptual), values in
between trade one for the other without retraining. Both must share the architecture, e.g. an ESRGAN
(rrdbnet) fine-tuned from its rrdb_psnr run.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
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
    shipped = shipped_models()
    a, b = (shipped.get(str(p), Path(p)) for p in (a, b))
    if not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (0 = A, the PSNR model; 1 = B, the GAN model), got {alpha}")
    for path in (a, b):
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path}")
    meta_a, meta_b = read_metadata(a), read_metadata(b)
    kwargs_a = json.loads(meta_a.get("arch_kwargs", "{}"))
    kwargs_b = json.loads(meta_b.get("arch_kwargs", "{}"))
    if (meta_a["arch"], kwargs_a) != (meta_b["arch"], kwargs_b):
        raise ValueError(
            f"cannot interpolate models of different architectures: {a} is {meta_a['arch']} {kwargs_a}, "
            f"{b} is {meta_b['arch']} {kwargs_b} (expected the same arch and arch_kwargs)"
        )
    state_a, state_b = load_file(str(a)), load_file(str(b))
    if state_a.keys() != state_b.keys():
        only_a, only_b = sorted(state_a.keys() - state_b.keys()), sorted(state_b.keys() - state_a.keys())
        raise ValueError(f"{a} and {b} hold different tensors (only in A: {only_a}; only in B: {only_b})")
    blended: dict[str, torch.Tensor] = {}
    for key, ta in state_a.items():
        tb = state_b[key]
        if ta.shape != tb.shape or ta.dtype != tb.dtype:
            raise ValueError(
                f"{key}: {a} has {tuple(ta.shape)} {ta.dtype}, {b} has {tuple(tb.shape)} {tb.dtype} (expected the same)"
            )
        if ta.is_floating_point():
            mixed = (1.0 - alpha) * ta.to(torch.float64) + alpha * tb.to(torch.float64)
            blended[key] = mixed.to(ta.dtype)
        else:
            blended[key] = tb.clone()  # counters (num_batches_tracked) are not blendable; B's are the later ones
    model = build_generator(meta_a["arch"], **kwargs_a)
    try:
        model.load_state_dict(blended, strict=True)
    except RuntimeError as err:  # missing/unexpected keys or shapes: the files' tensors are not this arch's
        raise ValueError(f"{a}, {b}: weights do not fit arch {meta_a['arch']!r}: {err}") from err
    return model.eval(), meta_a["arch"], kwargs_a


@dataclass(frozen=True)
class AlphaScore:
    alpha: float
    psnr: float
    ssim: float
    lpips: float | None


def sweep_alpha(
    a: Path,
    b: Path,
    folder: Path,
    *,
    alphas: Sequence[float],
    device: torch.device,
    lpips_model: LPIPS | None,
    scale: int = 4,
) -> tuple[list[AlphaScore], float]:
    """Each blend scored on a folder of HR images (validation images, never a benchmark), and bicubic's PSNR there."""
    # Each (HR, LR) pair read and degraded once, not once per alpha.
    images = [
        EvalImage(i.name, functools.partial(lambda pair: pair, i.load()), i.source)
        for i in folder_images(folder, scale=scale)
    ]
    bicubic = evaluate_images(open_model("bicubic", scale=scale), images, set_name="val", scale=scale,
                              device=device, lpips_model=None)  # fmt: skip
    scores = []
    for alpha in alphas:
        model, _, _ = blend(a, b, alpha)
        rows = evaluate_images(
            model.to(device), images, set_name="val", scale=scale, device=device, lpips_model=lpips_model
        )
        summary = summarize(rows)["val"]
        lp = summary.mean("lpips")
        scores.append(AlphaScore(alpha, summary.mean("psnr") or math.nan, summary.mean("ssim") or math.nan, lp))
    return scores, summarize(bicubic)["val"].mean("psnr") or math.nan


def choose_alpha(scores: Sequence[AlphaScore], *, bicubic_psnr: float, min_gain: float) -> AlphaScore:
    """The blend with the lowest LPIPS among those at least `min_gain` dB above bicubic (PSNR when no LPIPS)."""
    allowed = [s for s in scores if s.psnr >= bicubic_psnr + min_gain]
    if not allowed:
        best = max(s.psnr for s in scores)
        raise ValueError(
            f"no alpha reaches bicubic + {min_gain:g} dB = {bicubic_psnr + min_gain:.2f} dB on the validation "
            f"images (best {best:.2f} dB): lower --min-psnr-gain or add smaller alphas"
        )
    return min(allowed, key=lambda s: (s.lpips if s.lpips is not None else -s.psnr, -s.psnr))
