"""The models shipped in src/srkit/weights: tiled output equals whole-image output, ONNX Runtime equals PyTorch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from srkit.archs import GENERATORS
from srkit.export import COMMUNITY_LAYOUTS, OnnxGenerator, export_model
from srkit.inference import upscale_tiled
from srkit.models import load_model, read_metadata, shipped_models

CPU = torch.device("cpu")
SHIPPED = sorted(shipped_models())


def _photo(h: int, w: int, seed: int) -> torch.Tensor:
    """(1, 3, h, w) in [0, 1]: smooth shapes plus fine noise, so tile cuts go through real structure."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 6 + 2, w // 6 + 2, generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    return (smooth + 0.05 * torch.randn(1, 3, h, w, generator=g)).clamp(0, 1)


def test_the_shipped_models_are_present() -> None:
    # The repo ships an SRResNet (issue 3); the parametrized tests below run on whatever is shipped.
    assert "srresnet" in SHIPPED
    for name, path in shipped_models().items():
        meta = read_metadata(path)
        assert meta["name"] == name and meta["arch"] in GENERATORS
        assert (path.parent / f"{name}.md").is_file(), f"{name} has no model card"


@pytest.mark.parametrize("name", SHIPPED)
# None of these divides the 75x101 input. The overlap must cover the models' reach: at 16 LR pixels the
# trained SRResNet/SRGAN differ from the whole image by 2 levels near tile seams, and so does vanilla_gan (two 9x9
# convolutions: a reach of about 12 LR pixels) at 24; srkit's default is 32.
@pytest.mark.parametrize(("tile", "overlap"), [(64, 32), (72, 32), (56, 28)])
def test_tiled_equals_whole_within_one_level(name: str, tile: int, overlap: int) -> None:
    model = load_model(name)
    lq = _photo(75, 101, seed=tile)
    whole = upscale_tiled(model, lq, tile=None, device=CPU)
    tiled = upscale_tiled(model, lq, tile=tile, overlap=overlap, device=CPU)
    # Compare as the written file would: quantised to 8 bits.
    diff = ((tiled * 255).round() - (whole * 255).round()).abs().max().item()
    assert diff <= 1, f"{name} tile {tile}/{overlap}: {diff} levels"


@pytest.mark.parametrize("name", SHIPPED)
def test_onnxruntime_matches_pytorch_at_two_sizes(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    model = load_model(name)
    path = tmp_path_factory.mktemp("onnx") / f"{name}.onnx"
    export_model(name, path, format="onnx")
    session = OnnxGenerator(path, threads=1)
    for h, w in [(24, 32), (41, 29)]:  # one exported graph, two input sizes (dynamic height and width)
        lq = _photo(h, w, seed=h)
        with torch.no_grad():
            expected = model(lq)
        got = session(lq)
        assert got.shape == expected.shape == (1, 3, 4 * h, 4 * w)
        mse = float(((got.double() - expected.double()) ** 2).mean())
        psnr = math.inf if mse == 0 else 10 * math.log10(1 / mse)
        assert psnr >= 50, f"{name} {h}x{w}: ONNX Runtime vs PyTorch {psnr:.1f} dB"


COMMUNITY = [name for name in SHIPPED if read_metadata(shipped_models()[name])["arch"] in COMMUNITY_LAYOUTS]


@pytest.mark.parametrize("name", COMMUNITY)
def test_community_export_loads_in_spandrel_within_one_level(name: str, tmp_path: Path) -> None:
    import spandrel

    out = export_model(name, tmp_path / f"{name}.pth", format="pth")
    state = torch.load(out, map_location="cpu", weights_only=True)  # tensors only: no code to run
    found = spandrel.ModelLoader().load_from_state_dict(state)
    found.model.eval()
    model = load_model(name)
    lq = _photo(37, 45, seed=7)
    with torch.no_grad():
        ours = upscale_tiled(model, lq, tile=None, device=CPU)
        theirs = found(lq).float()
    assert theirs.shape == ours.shape and float((theirs - ours).abs().max()) <= 1 / 255
