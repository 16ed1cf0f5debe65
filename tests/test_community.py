"""Community weights through spandrel: built in-process from the reference modules with random weights (no
downloads), upscaled by `srkit upscale`, compared with the reference forward; unsafe files refused."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from spandrel.architectures.Compact import Compact
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.SPAN import SPAN
from torch import nn

from srkit.cli import main
from srkit.community import UnsafeWeightsError, read_state_dict
from srkit.descriptor import open_model
from srkit.models import build_generator, resolve_model

pytestmark = pytest.mark.usefixtures("one_thread")


# name -> (the reference module, the key its .pth wraps the state dict in (None: bare), spandrel's arch id,
# the srkit arch that runs it (None: spandrel's module))
BUILDERS: dict[str, tuple[Callable[[], nn.Module], str | None, str, str | None]] = {
    # old layout: model.0.weight, model.1.sub.0.RDB1.conv1.0.weight, ...
    "esrgan_old": (lambda: ESRGAN(num_filters=16, num_blocks=1, scale=4), None, "ESRGAN", None),
    # BasicSR's key layout (srkit's RRDBNet uses it), wrapped as Real-ESRGAN's released .pth files are
    "realesrgan_new": (
        lambda: build_generator("rrdbnet", width=16, num_blocks=2, growth=32),
        "params_ema",
        "ESRGAN",
        "rrdbnet",
    ),
    "compact": (lambda: Compact(num_feat=16, num_conv=4, upscale=4), "params", "Compact", "compact"),
    "span": (lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=4), None, "SPAN", None),
}


def _randomise(net: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)  # a random model: outputs differ from image to image, not a near-constant
    return net.eval()


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_upscale_matches_the_reference_forward(tmp_path: Path, kind: str) -> None:
    build, wrapper, arch, native = BUILDERS[kind]
    net = _randomise(build(), seed=1)
    weights = tmp_path / f"{kind}.pth"
    torch.save(net.state_dict() if wrapper is None else {wrapper: net.state_dict()}, weights)
    rgb = (np.random.default_rng(0).random((20, 26, 3)) * 255).round().astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "in.png")

    desc = open_model(weights)
    assert (desc.architecture, desc.scale, desc.source.kind if desc.source else None) == (arch, 4, "community")
    assert desc.input_channels == desc.output_channels == 3
    # the new ESRGAN layout and Compact run as srkit's own module (same tensors, strictly loaded), the rest in
    # spandrel's, which pads inputs to the architecture's size needs itself
    assert desc.pads_input == (native is None)
    assert desc.source is not None and desc.source.arch == (native or arch)
    assert (type(desc.model).__module__.startswith("srkit.archs")) == (native is not None)

    out = tmp_path / "out"
    status = main(["upscale", str(tmp_path / "in.png"), "-o", str(out), "--model", str(weights), "--precision", "fp32"])
    assert status == 0
    got = np.asarray(Image.open(tmp_path / "out" / "in.png")).astype(np.float64)
    with torch.no_grad():
        ref = net(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255).clamp(0, 1)[0]
    expected = ref.permute(1, 2, 0).numpy() * 255
    assert got.shape == (80, 104, 3)
    assert np.abs(got - expected).max() <= 0.5 + 1e-3  # the reference forward, rounded to 8 bits
    # tiled (4x4 tiles of 12 px) agrees with whole as for srkit's own models
    status = main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "tiled"), "--model", str(weights),
                   "--tile", "12", "--tile-overlap", "4", "--precision", "fp32"])  # fmt: skip
    tiled = np.asarray(Image.open(tmp_path / "tiled" / "in.png")).astype(np.float64)
    assert status == 0 and tiled.shape == got.shape and np.abs(tiled - got).mean() < 2.0


def test_safetensors_without_srkit_metadata_is_community(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    net = BUILDERS["compact"][0]()
    path = tmp_path / "compact.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    source = resolve_model(path)
    assert (source.kind, source.metadata["community_arch"], source.scale) == ("community", "Compact", 4)
    assert source.arch == "compact"  # exactly srkit's Compact: srkit's module runs it
    with pytest.raises(ValueError, match=r"\(Compact\) upscales x4; --scale 2 does not apply"):
        resolve_model(path, scale=2)


def test_a_pickle_with_code_is_refused_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (Path.touch, (str(marker),))

    torch.save({"weight": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeWeightsError, match="refused, its pickle holds more than tensors"):
        read_state_dict(tmp_path / "evil.pth")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in.png")
    status = main(
        ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "evil.pth")]
    )
    assert status == 2 and "refused, its pickle holds more than tensors" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_torchscript_and_unknown_layouts_get_clear_errors(tmp_path: Path) -> None:
    script = tmp_path / "model.pt"
    with zipfile.ZipFile(script, "w") as zf:  # the shape of a TorchScript archive: code/ beside the data
        zf.writestr("model/code/__torch__.py", "def forward(self, x): ...")
        zf.writestr("model/data.pkl", b"")
    with pytest.raises(UnsafeWeightsError, match="TorchScript archive"):
        read_state_dict(script)
    odd = tmp_path / "odd.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, odd)
    with pytest.raises(ValueError, match="no known architecture matches these weights"):
        open_model(odd)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="not a readable PyTorch weights file"):
        read_state_dict(broken)


def test_models_inspect_prints_what_was_detected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = BUILDERS["span"][0]()
    torch.save(net.state_dict(), tmp_path / "span.pth")
    assert main(["models", "--inspect", str(tmp_path / "span.pth")]) == 0
    out = capsys.readouterr().out
    assert "architecture: SPAN" in out and "scale: x4" in out and "kind: community" in out
    assert f"parameters: {sum(p.numel() for p in net.parameters()):,}" in out
    assert "runs as: spandrel's module" in out

    rrdb = BUILDERS["realesrgan_new"][0]()
    torch.save({"params_ema": rrdb.state_dict()}, tmp_path / "rrdb.pth")
    assert main(["models", "--inspect", str(tmp_path / "rrdb.pth")]) == 0
    out = capsys.readouterr().out
    assert "architecture: ESRGAN" in out
    assert "runs as: srkit rrdbnet (width=16, num_blocks=2, growth=32, scale=4)" in out


def test_a_near_miss_of_srkit_layout_stays_with_spandrel(tmp_path: Path) -> None:
    """An ESRGAN file with a tensor srkit's RRDBNet lacks (here: an extra key) is not forced into srkit's module."""
    net = _randomise(BUILDERS["realesrgan_new"][0](), seed=2)
    state = net.state_dict() | {"conv_extra.weight": torch.zeros(1)}
    from srkit.community import detect, native_equivalent

    canonical = {k: v for k, v in state.items()}
    found = detect({k: v for k, v in canonical.items() if k != "conv_extra.weight"}, source="x")
    assert native_equivalent(canonical, found) is None  # strict load refuses the extra key
    exact = native_equivalent(net.state_dict(), found)
    assert exact is not None and exact[0] == "rrdbnet"
    from srkit.models import with_tensors

    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(with_tensors(*exact, net.state_dict()).eval()(x), net(x))
