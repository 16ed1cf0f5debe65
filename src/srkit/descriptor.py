"""A ready model and what callers need to know about it, read once instead of guessed at each use.

`open_model` turns any model name srkit accepts (see models.resolve_model: bicubic, a shipped name, a
.safetensors file, an .onnx file) into a `ModelDescriptor`: the runnable module plus its scale, channels, the
precisions it can run in, the input sizes it needs and where it came from. `describe` gives the same for a module
built by hand, so every library function takes either.

The fields follow spandrel's ImageModelDescriptor (scale, input_channels, output_channels, supports_half,
supports_bfloat16, size_requirements), so that a model spandrel loads can be described the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from srkit.community import SpandrelModule
from srkit.export import OnnxGenerator, OpenVINOGenerator, cached_onnx
from srkit.models import ModelSource, load_source, model_scale, resolve_model

Backend = Literal["torch", "onnxruntime", "openvino"]
BACKENDS: tuple[Backend, ...] = ("torch", "onnxruntime", "openvino")
# Runtimes that run an ONNX graph (an .onnx file, or a model exported once to the cache)
ONNX_BACKENDS: tuple[Backend, ...] = ("onnxruntime", "openvino")


@dataclass(frozen=True)
class SizeRequirements:
    """Input sizes a model accepts: at least `minimum` pixels a side, a multiple of `multiple_of`, square or not."""

    minimum: int = 1
    multiple_of: int = 1
    square: bool = False

    def check(self, height: int, width: int) -> None:
        """Raise ValueError, saying what is needed, for an (height, width) input the model cannot take."""
        problems = []
        if min(height, width) < self.minimum:
            problems.append(f"at least {self.minimum} px a side")
        if height % self.multiple_of or width % self.multiple_of:
            problems.append(f"sides a multiple of {self.multiple_of}")
        if self.square and height != width:
            problems.append("a square input")
        if problems:
            raise ValueError(f"input {width}x{height}: the model needs {', '.join(problems)}")


@dataclass(frozen=True)
class ModelDescriptor:
    """A runnable generator, (N, C_in, h, w) in [0, 1] -> (N, C_out, scale*h, scale*w), and its traits."""

    model: nn.Module
    scale: int
    architecture: str
    backend: Backend = "torch"
    input_channels: int = 3
    output_channels: int = 3
    supports_half: bool = True
    supports_bfloat16: bool = True
    size_requirements: SizeRequirements = field(default_factory=SizeRequirements)
    pads_input: bool = False  # the model pads inputs to its size requirements itself (spandrel's models)
    source: ModelSource | None = None  # None: a module described by hand
    # The one precision a compiled runtime runs in (ONNX Runtime: float32; OpenVINO: as compiled); None for
    # PyTorch, which takes any through autocast.
    fixed_precision: torch.dtype | None = None
    self_ensemble: bool = False  # model is inference.SelfEnsemble around the generator (inference.with_self_ensemble)

    @property
    def label(self) -> str:
        """The model's name in tables and file names; "+" marks a self-ensemble (EDSR's convention)."""
        base = self.source.label if self.source is not None else type(self.model).__name__
        return base + "+" if self.self_ensemble else base

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype the model's input is given in: its weights' dtype; float64 for a parameter-free PyTorch
        model (bicubic: exact arithmetic, so it reproduces the published bicubic numbers); float32 for ONNX."""
        if self.backend != "torch":
            return torch.float32
        param = next(self.model.parameters(), None)
        return torch.float64 if param is None else param.dtype

    def check_precision(self, dtype: torch.dtype) -> None:
        """Refuse a reduced precision the model cannot run in (ONNX graphs run as exported, in float32)."""
        if self.fixed_precision is not None and dtype != self.fixed_precision:
            names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
            raise ValueError(
                f"{self.label} ({self.backend}) runs in {names[self.fixed_precision]} as compiled, not "
                f"{names.get(dtype, str(dtype))}: open it with that precision or use --backend torch"
            )
        refused = {torch.bfloat16: not self.supports_bfloat16, torch.float16: not self.supports_half}
        if refused.get(dtype, False):
            name = "bf16" if dtype == torch.bfloat16 else "fp16"
            raise ValueError(f"{self.label} ({self.backend}) cannot run in {name}: use --precision fp32")

    @property
    def params(self) -> int:
        """Learned parameters (0 for bicubic and for ONNX graphs, whose weights PyTorch does not see)."""
        return sum(p.numel() for p in self.model.parameters())


Upscaler = nn.Module | ModelDescriptor


def describe(model: Upscaler) -> ModelDescriptor:
    """A descriptor as is; a bare module (a user's own, or a test's) described from its `.scale` attribute."""
    if isinstance(model, ModelDescriptor):
        return model
    if isinstance(model, OnnxGenerator):
        return _onnx_descriptor(model, None)
    if isinstance(model, OpenVINOGenerator):
        return _openvino_descriptor(model, None)
    if isinstance(model, SpandrelModule):
        return _spandrel_descriptor(model, None)
    return ModelDescriptor(model=model, scale=model_scale(model), architecture=type(model).__name__)


def _spandrel_descriptor(net: SpandrelModule, source: ModelSource | None) -> ModelDescriptor:
    """What spandrel reports of the model it detected: scale, channels, precisions, size requirements."""
    found = net._descriptor
    if (found.input_channels, found.output_channels) != (3, 3):
        raise ValueError(
            f"{source.spec if source else found.architecture.name}: a {found.input_channels}-in, "
            f"{found.output_channels}-out channel model; srkit upscales RGB images (3 in, 3 out)"
        )
    req = found.size_requirements
    return ModelDescriptor(
        model=net,
        scale=int(found.scale),
        architecture=str(found.architecture.id),
        input_channels=int(found.input_channels),
        output_channels=int(found.output_channels),
        supports_half=bool(found.supports_half),
        supports_bfloat16=bool(found.supports_bfloat16),
        size_requirements=SizeRequirements(max(1, req.minimum), req.multiple_of, req.square),
        pads_input=True,
        source=source,
    )


def _onnx_descriptor(net: OnnxGenerator, source: ModelSource | None) -> ModelDescriptor:
    arch = net.metadata.get("arch", "onnx")
    return ModelDescriptor(
        model=net,
        scale=net.scale,
        architecture=arch,
        backend="onnxruntime",
        supports_half=False,
        supports_bfloat16=False,
        source=source,
        fixed_precision=torch.float32,
    )


def _openvino_descriptor(net: OpenVINOGenerator, source: ModelSource | None) -> ModelDescriptor:
    bf16 = net.precision == "bf16"
    return ModelDescriptor(
        model=net,
        scale=net.scale,
        architecture=net.metadata.get("arch", "onnx"),
        backend="openvino",
        supports_half=False,
        supports_bfloat16=bf16,
        source=source,
        fixed_precision=torch.bfloat16 if bf16 else torch.float32,
    )


def open_model(
    name_or_path: str | Path | ModelSource,
    *,
    scale: int | None = None,
    device: str | torch.device = "cpu",
    backend: Backend = "torch",
    threads: int | None = None,
    precision: torch.dtype = torch.float32,
) -> ModelDescriptor:
    """Resolve a model name and load it for `backend`: PyTorch, ONNX Runtime or OpenVINO (an .onnx file as is;
    any other model exported to ONNX once and cached, see export.cached_onnx). `precision` is what OpenVINO
    compiles for (fp32 or bf16); PyTorch takes any precision per call, ONNX Runtime runs float32."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    source = name_or_path if isinstance(name_or_path, ModelSource) else resolve_model(name_or_path, scale=scale)
    device = torch.device(device)
    if backend in ONNX_BACKENDS:
        path = source.path if source.kind == "onnx" else cached_onnx(source)
        assert path is not None
        if backend == "openvino":
            if device.type != "cpu":
                raise ValueError(f"the OpenVINO backend runs on the CPU, not {device}")
            name = "bf16" if precision == torch.bfloat16 else "fp32"
            desc = _openvino_descriptor(OpenVINOGenerator(path, precision=name, threads=threads), source)
        else:
            desc = _onnx_descriptor(OnnxGenerator(path, device=device, threads=threads), source)
        if source.scale is not None and desc.scale != source.scale:
            raise ValueError(f"{source.spec}: the ONNX graph upscales x{desc.scale}, not x{source.scale}")
        return desc
    net = load_source(source, device=device)
    if isinstance(net, SpandrelModule):
        return _spandrel_descriptor(net, source)
    assert source.scale is not None  # known for every non-ONNX source
    # a community file srkit's own module runs keeps spandrel's name for its architecture
    arch = source.metadata.get("community_arch", source.arch)
    return ModelDescriptor(model=net, scale=source.scale, architecture=arch, source=source)
