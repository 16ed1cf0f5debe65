"""Face-aware upscaling: faces found on real photos, upscaled by the face model, feathered in; fall-backs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srkit import image_io
from srkit.cli import main
from srkit.data.degradations import bicubic_degrade
from srkit.face_upscale import feather_mask, upscale_with_faces
from srkit.inference import TileOptions, upscale_tiled
from srkit.models import load_model, save_weights
from testkit import random_srresnet

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
FP32 = TileOptions(dtype=torch.float32)


def _astronaut_lr() -> torch.Tensor:
    """scikit-image's astronaut (a real photo with one frontal face), as a 128x128 MATLAB-bicubic LR."""
    import skimage.data

    hr = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).to(torch.float64) / 255
    return bicubic_degrade(hr, 4).float().clamp(0, 1)


def _loaded(rgb: torch.Tensor) -> image_io.LoadedImage:
    return image_io.LoadedImage(rgb, None, 8, False, None)


def test_feather_mask_is_one_inside_and_zero_at_the_edges() -> None:
    mask = feather_mask(60, ramp=10)
    assert mask.shape == (60, 60)
    assert torch.all(mask[10:50, 10:50] == 1)
    assert mask[0].max() < 0.05 and mask[:, 0].max() < 0.05  # near 0 on the border: no seam
    assert torch.equal(mask, mask.flip(0)) and torch.equal(mask, mask.T)
    row = mask[30, :30]
    assert torch.all(row[1:] >= row[:-1])  # rises monotonically toward the inside


def test_astronaut_face_is_found_and_blended_without_a_seam() -> None:
    lq = _astronaut_lr()
    natural, face = load_model("bicubic"), random_srresnet(seed=3, width=8, num_blocks=1)
    result = upscale_with_faces(natural, face, _loaded(lq), device=CPU, options=FP32)
    assert result.faces_used == 1, result.regions
    region = result.regions[0]
    x, y, side, _ = region.window_hr
    assert 140 <= x <= 220 and 0 <= y <= 100 and 100 <= side <= 260  # her face, upper middle of the photo
    base = upscale_tiled(natural, lq, tile=None, device=CPU)
    out = result.image.rgb
    inside = torch.zeros(out.shape[-2:], dtype=torch.bool)
    inside[y : y + side, x : x + side] = True
    assert torch.equal(out[:, ~inside], base[:, ~inside])  # outside every face: the natural model's pixels
    assert (out[:, inside] - base[:, inside]).abs().mean() > 0.01  # inside: the face model's work
    # The window's outermost ring is (almost) all natural model: the two outputs meet without a step.
    ring = torch.cat([out[:, y, x : x + side], out[:, y + side - 1, x : x + side]], dim=1)
    ring_base = torch.cat([base[:, y, x : x + side], base[:, y + side - 1, x : x + side]], dim=1)
    assert (ring - ring_base).abs().max() < 0.02


def test_faces_out_of_range_fall_back_to_the_natural_model() -> None:
    lq = _astronaut_lr()
    natural, face = load_model("bicubic"), random_srresnet(seed=3, width=8, num_blocks=1)
    for lr_range in ((2, 8), (100, 400)):  # her window is ~40 LR px: too large, then too small for the range
        result = upscale_with_faces(natural, face, _loaded(lq), device=CPU, options=FP32, lr_range=lr_range)
        assert result.faces_used == 0 and len(result.regions) == 1
        assert result.regions[0].used == "natural" and "range" in result.regions[0].reason
        assert torch.equal(result.image.rgb, upscale_tiled(natural, lq, tile=None, device=CPU))


def test_lfw_faces_pasted_into_a_scene_are_each_upscaled(data_dir: Path) -> None:
    from srkit.data.faces import face_crop

    scene = image_io.read_rgb(data_dir / "benchmarks" / "BSD100" / "img_001.png")  # a 480x320 or 320x480 photo
    scene = scene[:, :320, :320].clone()
    faces = sorted((data_dir / "faces" / "LFW").glob("*.jpg"))[:2]
    spots = [(24, 32), (168, 176)]
    for path, (top, left) in zip(faces, spots, strict=True):
        crop = face_crop(image_io.read_rgb(path), size=128).image
        scene[:, top : top + 128, left : left + 128] = crop
    lq = bicubic_degrade(scene.to(torch.float64), 4).float().clamp(0, 1)
    result = upscale_with_faces(
        load_model("bicubic"), random_srresnet(seed=4, width=8, num_blocks=1), _loaded(lq), device=CPU, options=FP32
    )
    used = [r for r in result.regions if r.used == "face"]
    assert len(used) >= 2, result.regions
    for top, left in spots:  # each pasted face lies in some window the face model made
        cy, cx = top + 64, left + 64
        assert any(x <= cx < x + s and y <= cy < y + s for x, y, s, _ in (r.window_hr for r in used)), (cy, cx)


def test_cli_faces_keeps_alpha_and_16_bit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lq = _astronaut_lr()
    rgba = np.concatenate([image_io.to_uint8(lq), np.full((128, 128, 1), 200, np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "astro.png")
    weights = save_weights(
        random_srresnet(seed=5, width=8, num_blocks=1),
        tmp_path / "face.safetensors",
        arch="srresnet",
        arch_kwargs={"width": 8, "num_blocks": 1},
    )
    argv = ["upscale", str(tmp_path / "astro.png"), "-o", str(tmp_path / "out"), "--model", "bicubic"]
    assert main([*argv, "--face-model", str(weights), "--precision", "fp32"]) == 0
    assert "1 face(s) found, 1 upscaled by the face model" in capsys.readouterr().out
    out = Image.open(tmp_path / "out" / "astro.png")
    assert out.mode == "RGBA" and out.size == (512, 512)
    assert np.asarray(out)[..., 3].min() >= 199  # alpha upscaled separately, not lost
    # 16-bit input: the output stays 16-bit.
    deep = (np.asarray(Image.open(tmp_path / "astro.png").convert("RGB")).astype(np.uint16) * 257)[..., ::-1]
    import cv2

    cv2.imwrite(str(tmp_path / "astro16.png"), np.ascontiguousarray(deep))
    argv16 = ["upscale", str(tmp_path / "astro16.png"), "-o", str(tmp_path / "out"), "--model", "bicubic"]
    assert main([*argv16, "--face-model", str(weights), "--tile", "48", "--tile-overlap", "16"]) == 0
    assert image_io.read_image(tmp_path / "out" / "astro16.png").bit_depth == 16
