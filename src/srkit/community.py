"""Community weights — ESRGAN (old and new key layouts), Real-ESRGAN, BasicSR MSRResNet, Compact, SPAN, SwinIR
and the other architectures spandrel detects — read safely and run behind srkit's model interface.

Architecture detection is spandrel's (a maintained library made for exactly this: it reads the state dict's keys
and shapes); srkit only reads the file, and does so without running code: `.safetensors` is plain tensors, and
pickles (`.pth`, `.pt`, `.ckpt`) go through `torch.load(weights_only=True)`, which refuses any pickle that holds
code or objects other than tensors and containers. spandrel's own file loader is not used, because for `.pt` it
tries `torch.jit.load` first, which runs the archive's TorchScript.

When the file's tensors are exactly the state dict of one of srkit's own networks (BasicSR's RRDBNet layout, as in
Real-ESRGAN's releases; Real-ESRGAN's SRVGGNetCompact), srkit's module runs them instead of spandrel's: the same
arithmetic, plus srkit's float32 residual sums under bf16 autocast (RRDBNet: 48.8 dB of the fp32 output where
spandrel's module, summing in bf16, reaches 44.3 dB; README, "Against Real-ESRGAN"). Nothing is mapped by hand:
the tensors load strictly into srkit's module or the file stays spandrel's.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

COMMUNITY_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")


class UnsafeWeightsError(ValueError):
    """A weights file whose pickle would run code or build arbitrary objects; it is never loaded."""


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips holding code/ (a plain torch.save zip holds data.pkl only)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.split("/", 1)[-1].startswith("code/") for name in zf.namelist())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a community weights file, on the CPU, with wrappers (params_ema, params, state_dict, a
    `module.` prefix...) removed the way spandrel canonicalises them."""
    from safetensors.torch import load_file
    from spandrel import canonicalize_state_dict

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in COMMUNITY_SUFFIXES:
        raise ValueError(
            f"{path}: expected a weights file ({', '.join(COMMUNITY_SUFFIXES)}), got {suffix or 'no suffix'}"
        )
    if suffix == ".safetensors":
        try:
            state: Any = load_file(str(path))
        except Exception as err:  # safetensors raises its own types for truncated or foreign files
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    else:
        if _is_torchscript(path):
            raise UnsafeWeightsError(
                f"{path} is a TorchScript archive: loading it would run its code. srkit reads weights only "
                "(export the model's state dict to .pth or .safetensors)"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            # torch's message: a paragraph of advice, then "WeightsUnpickler error: Unsupported global: GLOBAL x..."
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
            if found is None:  # not a pickle of ours to judge: truncated, or not a pickle at all
                why = re.search(r"WeightsUnpickler error: \s*(.+)", str(err))
                raise ValueError(
                    f"{path}: not a readable PyTorch weights file ({why.group(1).strip() if why else 'bad pickle'})"
                ) from None
            what = f"it calls {found.group(1)}"
            raise UnsafeWeightsError(
                f"{path}: refused, its pickle holds more than tensors ({what}): loading it could run code. srkit "
                "loads weights only (torch.load with weights_only=True); re-save the state dict from trusted code"
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError) as err:
            raise ValueError(f"{path}: not a readable PyTorch weights file ({err})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (a mapping of names to tensors), got a {type(state).__name__}")
    return canonicalize_state_dict(state)


class SpandrelModule(nn.Module):
    """A model spandrel detected, as an srkit generator: `.scale`, (N, C, h, w) -> (N, C, s*h, s*w) in [0, 1].

    The call goes through spandrel's descriptor, which pads inputs to the architecture's size requirements (a
    window multiple for SwinIR, say) and crops the padding off the output, and uses the architecture's own call.
    """

    def __init__(self, descriptor: Any) -> None:
        super().__init__()
        self.net = descriptor.model  # registered: parameters, eval() and .to() reach it
        self._descriptor = descriptor
        self.scale = int(descriptor.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self._descriptor(x)
        return out


def detect(state: dict[str, torch.Tensor], *, source: str | Path) -> Any:
    """spandrel's ImageModelDescriptor for a state dict; ValueError naming the file when nothing matches."""
    import spandrel

    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        keys = ", ".join(list(state)[:4])
        raise ValueError(
            f"{source}: no known architecture matches these weights (first keys: {keys}); srkit reads its own "
            "safetensors and what spandrel detects (ESRGAN, Real-ESRGAN, Compact, SPAN, SwinIR, HAT, ...)"
        ) from None
    except (RuntimeError, KeyError, ValueError) as err:  # a layout spandrel recognised, with tensors that do not fit
        raise ValueError(f"{source}: weights look like a known architecture but do not load: {err}") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ValueError(f"{source}: a {descriptor.architecture.name} model takes an image and a mask, not an image")
    return descriptor


# spandrel's architecture id -> the srkit generator that has the same key layout.
NATIVE_ARCHS = {"ESRGAN": "rrdbnet", "Compact": "compact"}


def _native_kwargs(arch: str, state: dict[str, torch.Tensor], found: Any) -> dict[str, Any] | None:
    """srkit arch kwargs for the network spandrel found, read from its hyperparameters and the tensors' shapes;
    None where srkit's module has no such variant (pixel-unshuffle inputs, other activations, other scales)."""
    net = found.model
    if arch == "compact":
        ok = net.act_type == "prelu" and net.num_in_ch == net.num_out_ch == 3
        return {"width": net.num_feat, "num_convs": net.num_conv, "scale": net.upscale} if ok else None
    first, trunk = state.get("conv_first.weight"), state.get("body.0.rdb1.conv1.weight")
    if first is None or trunk is None or net.shuffle_factor or int(found.scale) not in (2, 4):
        return None  # the old key layout (spandrel's module runs it), or Real-ESRGAN x2plus's unshuffled input
    blocks = {key.split(".")[1] for key in state if key.startswith("body.")}
    return {"width": first.shape[0], "num_blocks": len(blocks), "growth": trunk.shape[0], "scale": int(found.scale)}


def native_equivalent(state: dict[str, torch.Tensor], found: Any) -> tuple[str, dict[str, Any]] | None:
    """(arch, arch_kwargs) when the file is exactly one of srkit's networks (a strict load: every key and shape),
    else None. `found` is spandrel's descriptor of the same tensors. Checked on the meta device: no network is
    built or initialised for real (models.with_tensors loads it later)."""
    from srkit.archs import GENERATORS

    arch = NATIVE_ARCHS.get(str(found.architecture.id))
    kwargs = None if arch is None else _native_kwargs(arch, state, found)
    if arch is None or kwargs is None:
        return None
    with torch.device("meta"):
        net = GENERATORS[arch](**kwargs)
    try:
        net.load_state_dict(state, strict=True, assign=True)
    except RuntimeError:  # a key or shape srkit's module does not have: spandrel's module runs the file
        return None
    return arch, kwargs


def load_community(path: str | Path) -> Any:
    """Read and detect a community weights file: spandrel's ImageModelDescriptor, in eval mode on the CPU."""
    descriptor = detect(read_state_dict(path), source=path)
    descriptor.model.eval()
    return descriptor
