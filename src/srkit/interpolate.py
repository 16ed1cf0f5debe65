"""Network interpolation (ESRGAN sec. 3.4): blend a PSNR-oriented model and its GAN fine-tune, weight by weight.

theta = (1 - alpha) * theta_PSNR + alpha * theta_GAN. Pass the PSNR model as `a` and the GAN model as `b`:
alpha 0 gives the PSNR model (smooth, high PSNR), alpha 1 the GAN model (sharp, perceptual), values in
between trade one for the other without retraining. Both must share the architecture, e.g. an ESRGAN
(rrdbnet) fine-tuned from its rrdb_psnr run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from srkit.models import build_generator, read_metadata, save_weights


def interpolate_weights(a: Path, b: Path, alpha: float, out: Path) -> Path:
    """Write (1 - alpha) * A + alpha * B to `out` (A: the PSNR model, B: the GAN model); returns `out`.

    Float tensors are blended (in float64, stored in their own dtype); integer buffers such as BatchNorm's
    num_batches_tracked are taken from B. The output's metadata records both sources and alpha.
    """
    a, b, out = Path(a), Path(b), Path(out)
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
    meta = {
        "kind": "interpolated",
        "interpolated_a": str(a),
        "interpolated_b": str(b),
        "alpha": repr(float(alpha)),
        "formula": "(1 - alpha) * A + alpha * B (ESRGAN sec. 3.4; A = PSNR model, B = GAN model)",
    }
    return save_weights(model, out, arch=meta_a["arch"], arch_kwargs=kwargs_a, meta=meta)
