"""Export generators for deployment (ONNX, TorchScript, safetensors) and run ONNX files with ONNX Runtime.

Every exported graph is checked before it is written: it is run at two input sizes other than the one it was
traced at (batch 1 and 2) and compared with the PyTorch model, so a graph that baked in its trace size fails
here with a clear error instead of silently producing wrong-sized images later.

The bicubic baseline exports like any model: it upscales with `ops.upscale_bicubic` (MATLAB's bicubic from fixed
slices and multiply-adds), so its graph follows the input size. The autoencoder pre-upsamples the same way.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io as bytes_io
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

from srkit import fs
from srkit.community import SpandrelModule
from srkit.models import WEIGHTS_FORMAT, ModelSource, load_source, resolve_model, save_weights

FORMATS = ("onnx", "torchscript", "safetensors", "pth")
_SUFFIX_FORMATS = {
    ".onnx": "onnx",
    ".pt": "torchscript",
    ".ts": "torchscript",
    ".safetensors": "safetensors",
    ".pth": "pth",
}
# srkit archs whose state dict is already in a layout the community's loaders (spandrel, Real-ESRGAN, chaiNNer)
# detect, and what they assume of it: spandrel builds ESRGAN's RRDB with growth 32 whatever the file says.
COMMUNITY_LAYOUTS: dict[str, dict[str, Any]] = {"rrdbnet": {"growth": 32}, "compact": {}}
ONNX_OPSET = 18
# Traced at one size, checked at two others (batch 1 and 2, odd sizes, wider than high and the reverse).
_TRACE_SHAPE = (1, 3, 24, 32)
_CHECK_SHAPES = ((1, 3, 20, 28), (2, 3, 33, 17))
# Largest |exported - PyTorch| accepted by the check: far below one 8-bit level (1/255 = 0.0039), far above
# the float32 differences of another runtime's conv kernels (~1e-6).
_CHECK_TOLERANCE = 1e-3
_TORCHSCRIPT_META = "srkit.json"


def format_from_suffix(path: str | Path) -> str:
    """The export format an output file name implies (.onnx, .pt/.ts, .safetensors)."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        raise ValueError(
            f"cannot tell the export format from {path}: expected a suffix in {sorted(_SUFFIX_FORMATS)} "
            "or an explicit --format"
        )
    return _SUFFIX_FORMATS[suffix]


def describe_model(name_or_path: str | Path | ModelSource, *, scale: int | None = None) -> dict[str, str]:
    """Metadata stored with an export: srkit format version, arch, arch_kwargs, scale and the source model."""
    source = name_or_path if isinstance(name_or_path, ModelSource) else resolve_model(name_or_path, scale=scale)
    if source.kind == "onnx":
        raise ValueError(f"{source.spec} is already an ONNX graph: srkit exports PyTorch models")
    out = {k: v for k, v in source.metadata.items() if k not in ("srkit_format", "arch", "arch_kwargs")}
    out.update(
        srkit_format=WEIGHTS_FORMAT,
        arch=source.arch,
        arch_kwargs=json.dumps(source.arch_kwargs),
        scale=str(source.scale),
        source=Path(source.spec).name,
    )
    return out


def _on_cpu(model: nn.Module) -> nn.Module:
    """The model itself when it is on the CPU, else a CPU copy (exporting must not move the caller's model)."""
    if all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()]):
        return model
    return copy.deepcopy(model).cpu()


def _check_exportable(model: nn.Module, what: str) -> None:
    """Refuse a model in training mode: its graph would bake in BatchNorm's batch statistics."""
    if model.training:
        raise ValueError(f"export to {what} needs the model in eval mode (BatchNorm folded to running statistics)")


# An fp16 graph is compared with the float32 model: fp16's 11-bit mantissa leaves ~1e-3 of rounding, still a
# quarter of one 8-bit level.
_CHECK_TOLERANCE_FP16 = 1 / 255


def _check_against_torch(model: nn.Module, run: Any, what: str, *, tolerance: float = _CHECK_TOLERANCE) -> None:
    """Run the exported graph at two sizes other than the traced one and compare with the PyTorch model."""
    generator = torch.Generator().manual_seed(0)
    for shape in _CHECK_SHAPES:
        lq = torch.rand(shape, generator=generator)
        try:
            with torch.no_grad():
                expected = model(lq).float()
                got = run(lq)
        except Exception as err:  # runtimes raise their own error types for shape problems
            raise ValueError(f"the exported {what} graph fails on an input of shape {shape}: {err}") from err
        if tuple(got.shape) != tuple(expected.shape):
            raise ValueError(
                f"the exported {what} graph gives shape {tuple(got.shape)} for input {shape}, expected "
                f"{tuple(expected.shape)}: it has the trace size {_TRACE_SHAPE} baked in"
            )
        diff = float((got.float() - expected).abs().max())
        if not diff <= tolerance:
            raise ValueError(
                f"the exported {what} graph differs from PyTorch by up to {diff:.3g} at input {shape} "
                f"(expected <= {tolerance:.3g})"
            )


def onnx_bytes(
    model: nn.Module, *, opset: int = ONNX_OPSET, metadata: dict[str, str] | None = None, half: bool = False
) -> bytes:
    """Serialise a generator to ONNX with dynamic batch, height and width, checked (onnx.checker and two sizes).

    half: float16 weights, input and output (half the file, for GPU runtimes and fp16-capable CPUs), checked
    against the float32 model to within a quarter of an 8-bit level.
    """
    import onnx

    if opset < 17:
        raise ValueError(f"ONNX opset must be >= 17, got {opset}")
    _check_exportable(model, "ONNX")
    model = _on_cpu(model)
    reference = model
    if half:
        model = copy.deepcopy(model).half()
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    try:
        program = torch.onnx.export(
            model,
            (torch.rand(_TRACE_SHAPE, dtype=torch.float16 if half else torch.float32),),
            None,
            dynamo=True,
            opset_version=opset,
            input_names=["lq"],
            output_names=["sr"],
            dynamic_shapes={"lq": dims},
            verbose=False,
        )
    except Exception as err:  # the exporter raises many types; the first line says which op failed
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"ONNX export of {type(model).__name__} failed: {first}") from err
    assert program is not None
    proto = program.model_proto
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    data: bytes = proto.SerializeToString()
    session = _session(data, threads=1)
    tolerance = _CHECK_TOLERANCE_FP16 if half else _CHECK_TOLERANCE
    _check_against_torch(reference, lambda lq: _run_session(session, lq), "ONNX", tolerance=tolerance)
    return data


def torchscript_bytes(model: nn.Module, *, metadata: dict[str, str] | None = None) -> bytes:
    """Trace a generator to TorchScript (works at any size for conv nets; checked at two other sizes)."""
    _check_exportable(model, "TorchScript")
    model = _on_cpu(model)
    with _jit_deprecation_silenced():
        traced = torch.jit.trace(model, torch.rand(_TRACE_SHAPE))
        _check_against_torch(model, traced, "TorchScript")
        buffer = bytes_io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={_TORCHSCRIPT_META: json.dumps(metadata or {})})
    return buffer.getvalue()


@contextlib.contextmanager
def _jit_deprecation_silenced() -> Iterator[None]:
    """torch.jit is deprecated in favour of torch.export, but TorchScript is what the user asked for."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..* is deprecated", category=Warning)
        yield


def export_model(
    name_or_path: str | Path | ModelSource,
    out: str | Path,
    *,
    format: str | None = None,
    scale: int | None = None,
    opset: int = ONNX_OPSET,
    half: bool = False,
) -> Path:
    """Export "bicubic", a shipped model or a weights file to ONNX, TorchScript, safetensors or the community's
    .pth layout, atomically. A community model (spandrel-detected) keeps its own key layout in .pth/.safetensors."""
    out = Path(out)
    fmt = format or format_from_suffix(out)
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if half and fmt != "onnx":
        raise ValueError(f"--half is for ONNX exports (float16 graphs), not {fmt}")
    source = name_or_path if isinstance(name_or_path, ModelSource) else resolve_model(name_or_path, scale=scale)
    meta = describe_model(source) | ({"precision": "fp16"} if half else {})
    model = load_source(source, device="cpu")
    community = source.kind == "community"
    # A community model spandrel runs is srkit's SpandrelModule around the detected network: its layout is the
    # network's (one srkit runs natively is in that layout already).
    inner: nn.Module = model.net if isinstance(model, SpandrelModule) else model
    if fmt == "safetensors" and community:  # the detected architecture's own layout, no srkit arch metadata
        tensors = {k: v.detach().cpu().contiguous() for k, v in inner.state_dict().items()}
        fs.atomic_write(out, safetensors.torch.save(tensors, metadata={"source": meta["source"]}))
        return out
    if fmt == "safetensors":
        extra = {k: v for k, v in meta.items() if k not in ("srkit_format", "arch", "arch_kwargs")}
        return save_weights(model, out, arch=meta["arch"], arch_kwargs=json.loads(meta["arch_kwargs"]), meta=extra)
    if fmt == "pth":
        data = pth_bytes(inner, arch=source.arch, arch_kwargs=source.arch_kwargs, community=community)
    elif fmt == "onnx":
        data = onnx_bytes(model, opset=opset, metadata=meta, half=half)
    else:
        data = torchscript_bytes(model, metadata=meta)
    fs.atomic_write(out, data)
    return out


def pth_bytes(model: nn.Module, *, arch: str, arch_kwargs: dict[str, Any], community: bool = False) -> bytes:
    """A tensors-only `{"params": state_dict}` pickle in the community's key layout (BasicSR / Real-ESRGAN),
    checked before it is written: spandrel must detect it and match the model's outputs at two sizes.
    `community`: the model came from such a file (spandrel's module), its layout is the community's already."""
    import spandrel

    needs = {} if community else COMMUNITY_LAYOUTS.get(arch)
    if needs is None:
        raise ValueError(
            f"no community loader knows srkit's {arch!r} (spandrel detects {', '.join(sorted(COMMUNITY_LAYOUTS))}"
            " from srkit); export it as ONNX (--format onnx) or safetensors instead"
        )
    wrong = {k: v for k, v in needs.items() if arch_kwargs.get(k, v) != v}
    if wrong:
        raise ValueError(f"community loaders assume {arch} with {needs}; this model has {arch_kwargs}")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    try:
        found = spandrel.ModelLoader().load_from_state_dict(state)
    except Exception as err:  # spandrel's detection or load_state_dict errors
        raise ValueError(f"spandrel does not load the {arch} export: {err}") from err
    found.model.eval()
    # spandrel clamps its outputs to [0, 1] (as srkit's run_model does): compare with the clamped model.
    _check_against_torch(nn.Sequential(model, nn.Hardtanh(0.0, 1.0)), lambda lq: found(lq).float(), "spandrel")
    buffer = bytes_io.BytesIO()
    torch.save({"params": state}, buffer)
    return buffer.getvalue()


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    """A TorchScript file written by export_model, and the srkit metadata stored with it."""
    extra = {_TORCHSCRIPT_META: ""}
    with _jit_deprecation_silenced():
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module, json.loads(extra[_TORCHSCRIPT_META] or "{}")


# ONNX Runtime backend ------------------------------------------------------------------------------------


def _providers(device: torch.device) -> list[str]:
    """CUDA first when asked for a CUDA device and this onnxruntime build has it; the CPU always as fallback."""
    import onnxruntime as ort

    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _session(model: str | Path | bytes, *, threads: int | None = None, device: torch.device | None = None) -> Any:
    """An onnxruntime InferenceSession for a file or serialised model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=_providers(device or torch.device("cpu")))


def _run_session(session: Any, lq: torch.Tensor) -> torch.Tensor:
    """(N, 3, h, w) tensor -> the session's first output as a float32 CPU tensor (fp16 graphs get fp16 input)."""
    graph_input = session.get_inputs()[0]
    dtype = torch.float16 if graph_input.type == "tensor(float16)" else torch.float32
    x = np.ascontiguousarray(lq.detach().to("cpu", dtype).numpy())
    out = session.run(None, {graph_input.name: x})[0]
    return torch.from_numpy(out).float()


def _probe_scale(net: nn.Module, path: Path) -> int:
    """The factor of a foreign ONNX file without srkit metadata: run a 16x16 input and look."""
    out = net(torch.zeros(1, 3, 16, 16))
    scale = out.shape[-1] // 16
    if scale < 1 or tuple(out.shape[-2:]) != (16 * scale, 16 * scale):
        raise ValueError(f"{path}: output {tuple(out.shape)} for a 16x16 input is not an integer upscale")
    return int(scale)


def file_digest(path: str | Path, prefix: bytes = b"") -> str:
    """sha256 of `prefix` then the file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256(prefix)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OnnxGenerator(nn.Module):
    """An ONNX generator run by ONNX Runtime behind the nn.Module interface (.scale, (N,3,h,w) -> (N,3,sh,sw))."""

    def __init__(self, path: str | Path, *, device: torch.device | None = None, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model {self.path} not found")
        try:
            self.session = _session(self.path, threads=threads, device=device)
        except Exception as err:  # onnxruntime's own error types (InvalidProtobuf, Fail, ...)
            raise ValueError(f"{self.path}: not a loadable ONNX model ({err})") from err
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            shapes = [i.shape for i in inputs]
            raise ValueError(f"{self.path}: expected one (N, 3, H, W) image input, got inputs of shapes {shapes}")
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.scale = int(self.metadata["scale"]) if "scale" in self.metadata else _probe_scale(self, self.path)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        try:
            out = _run_session(self.session, lq)
        except Exception as err:  # onnxruntime raises its own types; keep the file name in the message
            raise RuntimeError(f"ONNX Runtime failed on {self.path.name} with input {tuple(lq.shape)}: {err}") from err
        return out.to(lq.device)


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file (srkit writes arch, arch_kwargs, scale...), weights left unread."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # onnx's DecodeError and friends
        raise ValueError(f"{path}: not a readable ONNX model ({err})") from err
    return {p.key: p.value for p in graph.metadata_props}


class OpenVINOGenerator(nn.Module):
    """An ONNX generator compiled by OpenVINO for the CPU, behind the nn.Module interface.

    `precision` is OpenVINO's inference precision, fixed when compiling: "fp32", or "bf16" (every op in bf16,
    residual sums included; on CPUs with AVX512-BF16/AMX only). OpenVINO reads the ONNX file itself; srkit's
    metadata in it gives the scale, else a 16x16 input is run to find it.
    """

    def __init__(self, path: str | Path, *, precision: str = "fp32", threads: int | None = None) -> None:
        import openvino as ov

        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model {self.path} not found")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"OpenVINO runs srkit models in fp32 or bf16, not {precision}")
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise ValueError("OpenVINO bf16 needs a CPU with AVX512-BF16 or AMX; use --precision fp32")
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        self.precision = precision
        self.metadata = onnx_metadata(self.path)
        try:
            self.compiled = core.compile_model(str(self.path), "CPU", config)
        except RuntimeError as err:  # OpenVINO's conversion and compile errors
            raise ValueError(f"{self.path}: OpenVINO cannot compile this ONNX model ({err})") from err
        self.scale = int(self.metadata["scale"]) if "scale" in self.metadata else _probe_scale(self, self.path)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        x = lq.detach().to("cpu", torch.float32).contiguous().numpy()
        try:
            out = self.compiled(x)[0]
        except RuntimeError as err:  # keep the file name and shape in the message
            raise RuntimeError(f"OpenVINO failed on {self.path.name} with input {tuple(lq.shape)}: {err}") from err
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(lq.device)


def onnx_cache_dir() -> Path:
    """Where on-the-fly ONNX exports are kept: $SRKIT_CACHE/onnx, else ~/.cache/srkit/onnx."""
    return cache_root() / "onnx"


def cache_root() -> Path:
    """srkit's cache folder (ONNX exports, measured runtime choices): $SRKIT_CACHE, else ~/.cache/srkit."""
    root = os.environ.get("SRKIT_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "srkit"


def cached_onnx(
    name_or_path: str | Path | ModelSource, *, scale: int | None = None, cache_dir: Path | None = None
) -> Path:
    """The ONNX export of a model, made once and reused: keyed by the weights' bytes, torch version and opset.

    An .onnx file is its own export. A resolved ModelSource is used as is (not resolved again)."""
    source = name_or_path if isinstance(name_or_path, ModelSource) else resolve_model(name_or_path, scale=scale)
    if source.kind == "onnx":
        assert source.path is not None
        return source.path
    prefix = f"{torch.__version__}|{ONNX_OPSET}|{source.scale}".encode()
    digest = file_digest(source.path, prefix) if source.path is not None else hashlib.sha256(prefix).hexdigest()
    out = (cache_dir or onnx_cache_dir()) / f"{Path(source.spec).stem}-{digest[:16]}.onnx"
    if not out.is_file():
        export_model(source, out, format="onnx")
    return out
