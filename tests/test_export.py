"""Export to ONNX / TorchScript / safetensors, and the ONNX Runtime backend, against the PyTorch model."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from torch import nn

from srkit import image_io
from srkit.cli import main
from srkit.export import (
    OnnxGenerator,
    cached_onnx,
    export_model,
    load_torchscript,
    onnx_bytes,
    torchscript_bytes,
)
from srkit.inference import upscale_tiled
from srkit.models import build_generator, load_model, read_metadata, save_weights
from testkit import random_srresnet

CPU = torch.device("cpu")
TINY = {"width": 8, "num_blocks": 2, "scale": 4}
SIZES = [(1, 3, 20, 28), (2, 3, 33, 17)]


def _trained_tiny(seed: int = 0) -> nn.Module:
    """A tiny SRResNet with random weights and non-trivial BatchNorm statistics, in eval mode."""
    return random_srresnet(seed, **TINY)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two float batches in [0, 1] (peak 1), no quantisation: how close two runtimes are."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    return save_weights(_trained_tiny(), folder / "tiny.safetensors", arch="srresnet", arch_kwargs=TINY)


@pytest.fixture(scope="module")
def tiny_onnx(tiny_weights: Path) -> Path:
    return export_model(tiny_weights, tiny_weights.with_suffix(".onnx"), format="onnx")


# ONNX ---------------------------------------------------------------------------------------------------


def test_onnx_file_is_valid_with_dynamic_batch_height_width(tiny_onnx: Path) -> None:
    proto = onnx.load(str(tiny_onnx))
    onnx.checker.check_model(proto, full_check=True)
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 17
    (graph_input,) = proto.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["arch"] == "srresnet" and meta["scale"] == "4" and json.loads(meta["arch_kwargs"]) == TINY
    assert [p.name for p in tiny_onnx.parent.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_onnxruntime_matches_pytorch_at_two_sizes(tiny_weights: Path, tiny_onnx: Path) -> None:
    model = load_model(tiny_weights)
    ort_model = OnnxGenerator(tiny_onnx, threads=1)
    assert ort_model.scale == 4
    g = torch.Generator().manual_seed(1)
    for shape in SIZES:
        lq = torch.rand(shape, generator=g)
        with torch.no_grad():
            expected = model(lq)
        got = ort_model(lq)
        assert got.shape == expected.shape
        assert _psnr(got, expected) >= 50


def test_onnxruntime_runs_the_tiled_path(tiny_weights: Path, tiny_onnx: Path) -> None:
    lq = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(2))
    expected = upscale_tiled(load_model(tiny_weights), lq, tile=24, overlap=8, device=CPU)
    got = upscale_tiled(OnnxGenerator(tiny_onnx, threads=1), lq, tile=24, overlap=8, device=CPU, batch_tiles=3)
    assert _psnr(got, expected) >= 50


def test_paper_size_srresnet_onnx() -> None:
    torch.manual_seed(0)
    model = build_generator("srresnet").eval()  # 64 wide, 16 blocks: 1.5 M parameters
    session_model = _onnx_generator_from_bytes(onnx_bytes(model))
    for shape in [(1, 3, 12, 10), (1, 3, 9, 14)]:
        lq = torch.rand(shape)
        with torch.no_grad():
            assert _psnr(session_model(lq), model(lq)) >= 50


def _onnx_generator_from_bytes(data: bytes) -> OnnxGenerator:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.onnx"
        path.write_bytes(data)
        return OnnxGenerator(path, threads=1)  # the session holds the graph; the file may go


# TorchScript and safetensors ----------------------------------------------------------------------------


def test_torchscript_equals_pytorch_at_two_sizes(tiny_weights: Path, tmp_path: Path) -> None:
    out = export_model(tiny_weights, tmp_path / "tiny.pt", format="torchscript")
    module, meta = load_torchscript(out)
    assert meta["arch"] == "srresnet" and meta["scale"] == "4"
    model = load_model(tiny_weights)
    for shape in SIZES:
        lq = torch.rand(shape)
        with torch.no_grad():
            torch.testing.assert_close(module(lq), model(lq), atol=1e-6, rtol=0)


def test_safetensors_export_round_trip(tiny_weights: Path, tmp_path: Path) -> None:
    out = export_model(tiny_weights, tmp_path / "copy.safetensors")  # format from the suffix
    meta = read_metadata(out)
    assert meta["arch"] == "srresnet" and json.loads(meta["arch_kwargs"]) == TINY and meta["scale"] == "4"
    lq = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        torch.testing.assert_close(load_model(out)(lq), load_model(tiny_weights)(lq), atol=0, rtol=0)
    bicubic = export_model("bicubic", tmp_path / "bicubic.safetensors")
    assert read_metadata(bicubic)["arch"] == "bicubic"
    torch.testing.assert_close(load_model(bicubic)(lq), load_model("bicubic")(lq), atol=0, rtol=0)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_bicubic_baseline_exports_and_matches_matlab_bicubic_at_any_size(tmp_path: Path) -> None:
    """The baseline's graphs follow the input size: ONNX Runtime and TorchScript give imresize's x4 (clamped) at
    sizes and batches other than the traced one, an odd width and a 2-pixel edge (mirror folds twice) included."""
    from srkit.ops import imresize

    ort = OnnxGenerator(export_model("bicubic", tmp_path / "bicubic.onnx"))
    script, meta = load_torchscript(export_model("bicubic", tmp_path / "bicubic.pt", format="torchscript"))
    assert ort.scale == 4 and meta["arch"] == "bicubic"
    for shape in [(1, 3, 9, 13), (2, 3, 16, 7), (1, 3, 2, 5)]:
        lq = torch.rand(*shape, generator=torch.Generator().manual_seed(sum(shape)))
        want = imresize(lq.double(), 4.0).clamp(0, 1).float()
        for name, got in [("onnx", ort(lq)), ("torchscript", script(lq))]:
            assert got.shape == (shape[0], 3, 4 * shape[2], 4 * shape[3]), name
            torch.testing.assert_close(got, want, atol=2e-6, rtol=0, msg=name)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_graph_that_bakes_its_trace_size_is_caught() -> None:
    class Fixed(nn.Module):
        """Upscales to the size of the first input it saw: a trace records that size as a constant."""

        scale = 4

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, w = int(x.shape[-2]), int(x.shape[-1])
            return torch.nn.functional.interpolate(x, size=(4 * h, 4 * w), mode="nearest")

    with pytest.raises(ValueError, match=r"TorchScript graph gives shape .* trace size"):
        torchscript_bytes(Fixed().eval())


def test_export_does_not_move_or_change_the_model() -> None:
    model = _trained_tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torchscript_bytes(model)
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


# command line -------------------------------------------------------------------------------------------


def _png(path: Path, h: int, w: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_cli_export_and_upscale_with_onnxruntime(
    tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    out = tmp_path / "tiny.onnx"
    assert main(["export", str(tiny_weights), "--format", "onnx", "-o", str(out)]) == 0
    assert f"wrote {out} (onnx)" in capsys.readouterr().out
    assert main(["export", str(tiny_weights), "-o", str(out)]) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err

    src = _png(tmp_path / "in" / "x.png", 30, 22, seed=3)
    base = ["upscale", str(src), "--device", "cpu", "--tile", "16", "--tile-overlap", "8"]
    assert main([*base, "-o", str(tmp_path / "torch"), "--model", str(tiny_weights)]) == 0
    assert main([*base, "-o", str(tmp_path / "ort"), "--model", str(out), "--backend", "onnxruntime"]) == 0
    monkeypatch.setenv("SRKIT_CACHE", str(tmp_path / "cache"))
    argv = [*base, "-o", str(tmp_path / "ort2"), "--model", str(tiny_weights), "--backend", "onnxruntime"]
    assert main(argv) == 0  # exported on the fly into the cache
    cached = list((tmp_path / "cache" / "onnx").glob("tiny-*.onnx"))
    assert len(cached) == 1
    mtime = os.path.getmtime(cached[0])
    assert main([*argv, "--overwrite"]) == 0 and os.path.getmtime(cached[0]) == mtime  # reused, not re-exported
    ref = image_io.to_uint8(image_io.read_rgb(tmp_path / "torch" / "x.png")).astype(int)
    for folder in ("ort", "ort2"):
        got = image_io.to_uint8(image_io.read_rgb(tmp_path / folder / "x.png")).astype(int)
        assert got.shape == (120, 88, 3) and np.abs(got - ref).max() <= 1, folder


def test_cli_export_errors(tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _png(tmp_path / "x.png", 8, 8, seed=4)
    assert main(["export", "bicubic", "-o", str(tmp_path / "b.zip")]) == 2
    assert "cannot tell the export format" in capsys.readouterr().err
    argv = ["upscale", str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_onnx), "--device", "cpu"]
    assert main([*argv, "--backend", "torch"]) == 2
    assert "run it with --backend onnxruntime or openvino" in capsys.readouterr().err
    assert main([*argv, "--backend", "onnxruntime", "--precision", "bf16"]) == 2
    assert "ONNX Runtime runs fp32" in capsys.readouterr().err
    assert main(argv) == 0  # --backend auto runs an .onnx file with ONNX Runtime
    assert "backend auto -> onnxruntime (an ONNX file)" in capsys.readouterr().err


def test_cached_onnx_refuses_unknown_models(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors"):
        cached_onnx(tmp_path / "nope.safetensors", cache_dir=tmp_path)


# exports in the community's layout (spandrel, Real-ESRGAN) ------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "kwargs"),
    [("rrdbnet", {"width": 16, "num_blocks": 1, "growth": 32}), ("compact", {"width": 16, "num_convs": 3})],
)
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_exports_load_in_spandrel_with_the_same_outputs(tmp_path: Path, arch: str, kwargs: dict, suffix: str) -> None:
    import spandrel

    torch.manual_seed(0)
    net = build_generator(arch, **kwargs).eval()
    src = save_weights(net, tmp_path / "src.safetensors", arch=arch, arch_kwargs={"scale": 4, **kwargs})
    out = export_model(src, tmp_path / f"export{suffix}")
    loaded = spandrel.ModelLoader().load_from_file(str(out))  # the community's own loader, its own unpickler
    assert loaded.scale == 4 and loaded.architecture.id == {"rrdbnet": "ESRGAN", "compact": "Compact"}[arch]
    x = torch.rand(1, 3, 13, 11)
    with torch.no_grad():
        assert float((loaded(x) - net(x).clamp(0, 1)).abs().max()) < 1 / 255


def test_pth_export_refuses_what_no_community_loader_reads(tmp_path: Path) -> None:
    tiny = save_weights(
        build_generator("srresnet", width=8, num_blocks=1), tmp_path / "s.safetensors", arch="srresnet",
        arch_kwargs={"width": 8, "num_blocks": 1},
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"no community loader knows srkit's 'srresnet'.*--format onnx"):
        export_model(tiny, tmp_path / "s.pth")
    args = {"width": 8, "num_blocks": 1, "growth": 8}
    rrdb = build_generator("rrdbnet", **args)
    rrdb_path = save_weights(rrdb, tmp_path / "r.safetensors", arch="rrdbnet", arch_kwargs=args)
    with pytest.raises(ValueError, match=r"assume rrdbnet with \{'growth': 32\}"):
        export_model(rrdb_path, tmp_path / "r.pth")
    assert not (tmp_path / "s.pth").exists() and not (tmp_path / "r.pth").exists()


def test_a_community_model_exports_in_its_own_layout(tmp_path: Path) -> None:
    from srkit.descriptor import open_model

    torch.manual_seed(0)
    net = build_generator("compact", width=8, num_convs=2).eval()
    torch.save({"params": net.state_dict()}, tmp_path / "in.pth")
    for name in ("out.safetensors", "out.pth"):
        out = export_model(tmp_path / "in.pth", tmp_path / name)
        again = open_model(out)
        assert again.source is not None and again.source.kind == "community" and again.architecture == "Compact"
        x = torch.rand(1, 3, 9, 9)
        with torch.no_grad():
            # exactly srkit's Compact: srkit's own module runs it (unclamped; run_model clamps)
            assert torch.allclose(again.model(x), net(x), atol=1e-6)


def test_fp16_onnx_export_runs_in_onnxruntime(tmp_path: Path) -> None:
    from srkit.descriptor import open_model

    net = random_srresnet(width=8, num_blocks=1)
    src = save_weights(net, tmp_path / "s.safetensors", arch="srresnet", arch_kwargs={"width": 8, "num_blocks": 1})
    out = export_model(src, tmp_path / "s16.onnx", half=True)
    graph = onnx.load(str(out))
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert {p.key: p.value for p in graph.metadata_props}["precision"] == "fp16"
    fp32 = export_model(src, tmp_path / "s32.onnx")
    assert out.stat().st_size < 0.75 * fp32.stat().st_size  # half the weights' bytes
    desc = open_model(out, backend="onnxruntime")
    x = torch.rand(1, 3, 11, 13)
    with torch.no_grad():
        assert float((desc.model(x) - net(x)).abs().max()) < 1 / 255
    with pytest.raises(ValueError, match="--half is for ONNX exports"):
        export_model(src, tmp_path / "s.pt", half=True)
