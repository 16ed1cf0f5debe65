"""One resolver from a model name to what it is (models.resolve_model) and one descriptor of a ready model
(descriptor.open_model / describe), used by every command and the server."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from srkit.descriptor import ModelDescriptor, SizeRequirements, describe, open_model
from srkit.export import export_model
from srkit.inference import run_model, upscale_tiled
from srkit.models import resolve_model, save_weights, shipped_models
from testkit import random_srresnet


def _weights(tmp_path: Path, scale: int = 4) -> Path:
    net = random_srresnet(width=8, num_blocks=1, scale=scale)
    args = {"width": 8, "num_blocks": 1, "scale": scale}
    return save_weights(net, tmp_path / f"tiny_x{scale}.safetensors", arch="srresnet", arch_kwargs=args)


def test_resolve_tells_the_four_kinds_apart(tmp_path: Path) -> None:
    bic = resolve_model("bicubic", scale=3)
    assert (bic.kind, bic.scale, bic.path, bic.arch) == ("bicubic", 3, None, "bicubic")
    assert resolve_model("bicubic").scale == 4
    weights = resolve_model(_weights(tmp_path, scale=2))
    assert (weights.kind, weights.scale, weights.arch) == ("weights", 2, "srresnet")
    assert weights.arch_kwargs == {"width": 8, "num_blocks": 1, "scale": 2}
    assert weights.label == "tiny_x2"
    name = next(iter(shipped_models()))
    shipped = resolve_model(name)
    assert shipped.kind == "shipped" and shipped.path == shipped_models()[name] and shipped.label == name
    onnx = tmp_path / "graph.onnx"
    onnx.write_bytes(b"not read until opened")
    assert resolve_model(onnx).kind == "onnx" and resolve_model(onnx).scale is None


def test_resolve_refuses_unknown_names_and_wrong_scales(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a known model"):
        resolve_model("no_such_model")
    with pytest.raises(ValueError, match="upscales x4; --scale 2 does not apply"):
        resolve_model(_weights(tmp_path), scale=2)
    with pytest.raises(ValueError, match=r"scale must be an integer in 1\.\.16"):
        resolve_model("bicubic", scale=17)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        resolve_model(bad)


def test_open_model_describes_torch_models(tmp_path: Path) -> None:
    desc = open_model(_weights(tmp_path, scale=2))
    assert (desc.scale, desc.architecture, desc.backend) == (2, "srresnet", "torch")
    assert (desc.input_channels, desc.output_channels) == (3, 3)
    assert desc.supports_bfloat16 and desc.input_dtype == torch.float32 and desc.params > 0
    assert not desc.model.training
    bic = open_model("bicubic", scale=3)
    assert bic.scale == 3 and bic.params == 0 and bic.input_dtype == torch.float64  # exact arithmetic
    assert run_model(bic, torch.rand(1, 3, 5, 6), device=torch.device("cpu")).shape == (1, 3, 15, 18)


def test_onnx_backend_describes_the_graph_and_matches_torch(tmp_path: Path) -> None:
    weights = _weights(tmp_path)
    torch_desc = open_model(weights)
    onnx_desc = open_model(weights, backend="onnxruntime")  # exported on the fly into the cache
    assert (onnx_desc.backend, onnx_desc.scale, onnx_desc.architecture) == ("onnxruntime", 4, "srresnet")
    assert not onnx_desc.supports_bfloat16 and onnx_desc.input_dtype == torch.float32
    lq = torch.rand(1, 3, 12, 10)
    cpu = torch.device("cpu")
    diff = run_model(onnx_desc, lq, device=cpu) - run_model(torch_desc, lq, device=cpu)
    assert float(diff.abs().max()) < 1e-3
    with pytest.raises(ValueError, match="runs in fp32 as compiled, not bf16"):
        run_model(onnx_desc, lq, device=cpu, dtype=torch.bfloat16)
    exported = export_model(weights, tmp_path / "tiny.onnx")
    direct = open_model(exported, backend="onnxruntime")
    assert direct.scale == 4 and direct.source is not None and direct.source.kind == "onnx"
    with pytest.raises(ValueError, match="upscales x4, not x2"):
        open_model(exported, backend="onnxruntime", scale=2)
    with pytest.raises(ValueError, match="is an ONNX file"):
        open_model(exported)  # the torch backend
    with pytest.raises(ValueError, match="unknown backend"):
        open_model(weights, backend="tensorrt")  # type: ignore[arg-type]


def test_describe_wraps_a_bare_module_from_its_scale_attribute() -> None:
    net = random_srresnet(width=8, num_blocks=1, scale=2).eval()
    desc = describe(net)
    assert desc.model is net and desc.scale == 2 and desc.source is None and desc.label == "SRResNet"
    assert describe(desc) is desc
    with pytest.raises(ValueError, match="does not say its scale"):
        describe(torch.nn.Conv2d(3, 3, 3))


def test_size_requirements_are_checked_before_the_model_runs() -> None:
    net = random_srresnet(width=8, num_blocks=1, scale=2).eval()
    desc = ModelDescriptor(net, scale=2, architecture="srresnet", size_requirements=SizeRequirements(multiple_of=4))
    assert upscale_tiled(desc, torch.rand(3, 8, 12), tile=None, device=torch.device("cpu")).shape == (3, 16, 24)
    with pytest.raises(ValueError, match="sides a multiple of 4"):
        upscale_tiled(desc, torch.rand(3, 9, 12), tile=None, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="at least 16 px a side, a square input"):
        SizeRequirements(minimum=16, square=True).check(8, 12)
