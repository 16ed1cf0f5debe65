"""Keras-style random affine augmentation and the folder writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from srkit import image_io
from srkit.data.augment import (
    AffineParams,
    affine_matrix,
    apply_affine,
    augment_folder,
    random_affine,
    sample_affine,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _no_warp(img: torch.Tensor, generator: torch.Generator, *, hflip: bool = False) -> torch.Tensor:
    """random_affine with every range at zero (the flip optional)."""
    return random_affine(img, generator=generator, rotation=0, shift=0, shear=0, zoom=0, hflip=hflip)


def _keras_reference(img: torch.Tensor, params: AffineParams) -> np.ndarray:
    """Keras' own backend before TF-addons: scipy.ndimage.affine_transform, order=1, mode='nearest'."""
    ndimage = pytest.importorskip("scipy.ndimage")
    h, w = img.shape[-2:]
    centre = np.eye(3)
    centre[:2, 2] = [(h - 1) / 2, (w - 1) / 2]
    full = centre @ affine_matrix(params).numpy() @ np.linalg.inv(centre)  # transform_matrix_offset_center
    channels = [ndimage.affine_transform(c, full[:2, :2], full[:2, 2], order=1, mode="nearest") for c in img.numpy()]
    out = np.stack(channels)
    return out[..., ::-1] if params.hflip else out


def test_identity_parameters_give_the_input_back() -> None:
    img = torch.rand(3, 31, 40, generator=_gen(0))
    out = _no_warp(img, _gen(1))
    assert out.shape == img.shape and out.dtype == img.dtype
    assert torch.allclose(out, img, atol=1e-6)
    batch = torch.rand(2, 3, 16, 16, generator=_gen(2))
    assert torch.allclose(_no_warp(batch, _gen(1)), batch, atol=1e-6)


def test_pure_hflip_equals_flip() -> None:
    img = torch.rand(3, 20, 27, generator=_gen(0))
    assert torch.equal(apply_affine(img, AffineParams(hflip=True)), img.flip(-1))
    # Drawn flips: with every other range at 0 the output is the input or its mirror, about half each.
    flips = 0
    for seed in range(40):
        out = _no_warp(img, _gen(seed), hflip=True)
        assert torch.equal(out, img.flip(-1)) or torch.allclose(out, img, atol=1e-6)
        flips += torch.equal(out, img.flip(-1))
    assert 10 <= flips <= 30


def test_matches_keras_scipy_backend() -> None:
    img = torch.rand(3, 37, 52, dtype=torch.float64, generator=_gen(3))
    g = _gen(4)
    for _ in range(4):
        params = sample_affine(g, size=(37, 52), rotation=90, shift=0.2, shear=20, zoom=0.3, hflip=True)
        ours = apply_affine(img, params).numpy()
        np.testing.assert_allclose(ours, _keras_reference(img, params), atol=1e-10)


def test_grid_has_no_half_pixel_offset() -> None:
    # Whole turns about the exact centre land on pixel centres: any coordinate-convention slip would show.
    img = torch.rand(3, 9, 9, dtype=torch.float64, generator=_gen(5))
    # Keras' matrix with +90 degrees moves the left edge to the top: clockwise on screen, rot90 k=-1.
    assert torch.allclose(apply_affine(img, AffineParams(rotation=90.0)), torch.rot90(img, -1, (-2, -1)), atol=1e-12)
    assert torch.allclose(apply_affine(img, AffineParams(rotation=180.0)), img.flip(-1, -2), atol=1e-12)
    odd = torch.rand(3, 10, 15, generator=_gen(6))  # float32, odd and even sides, through grid_sample
    assert torch.allclose(apply_affine(odd, AffineParams(rotation=360.0)), odd, atol=1e-5)


def test_seeded() -> None:
    img = torch.rand(2, 3, 24, 24, generator=_gen(0))
    a = random_affine(img, generator=_gen(7))
    b = random_affine(img, generator=_gen(7))
    c = random_affine(img, generator=_gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], random_affine(img[1], generator=_gen(7)))  # each image its own draw
    assert a.min() >= 0 and a.max() <= 1  # bilinear stays inside the input's range


def test_sampled_ranges_follow_keras() -> None:
    g = _gen(0)
    draws = [sample_affine(g, size=(100, 200), rotation=30, shift=0.1, shear=5, zoom=0.2) for _ in range(300)]
    assert all(abs(p.rotation) <= 30 and abs(p.shear) <= 5 for p in draws)
    assert all(abs(p.shift_rows) <= 10 and abs(p.shift_cols) <= 20 for p in draws)  # fraction of H, of W
    assert all(0.8 <= p.zoom_rows <= 1.2 and 0.8 <= p.zoom_cols <= 1.2 for p in draws)
    assert any(p.zoom_rows != p.zoom_cols for p in draws)  # independent, as Keras draws zx, zy
    assert max(p.rotation for p in draws) > 25 and min(p.rotation for p in draws) < -25


def test_border_fill_repeats_edge_pixels() -> None:
    # Left column red, the rest blue: shifting content right exposes the left, which must stay red
    # (Keras' fill_mode='nearest'), not black or mirrored blue.
    img = torch.zeros(3, 20, 30)
    img[2] = 1.0
    img[:, :, 0] = torch.tensor([1.0, 0.0, 0.0])[:, None]
    out = apply_affine(img, AffineParams(shift_cols=-9.0))  # input col = output col - 9: content moves right
    red = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    assert torch.allclose(out[:, :, :10], red.expand(3, 20, 10), atol=1e-6)
    assert torch.allclose(out[:, :, 10:], img[:, :, 1:21], atol=1e-6)


def test_argument_errors() -> None:
    img = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match=r"shift must be in \[0, 1\)"):
        random_affine(img, generator=_gen(0), shift=10)
    with pytest.raises(ValueError, match=r"zoom must be in \[0, 1\)"):
        random_affine(img, generator=_gen(0), zoom=1.0)
    with pytest.raises(ValueError, match="rotation must be >= 0"):
        random_affine(img, generator=_gen(0), rotation=-5)
    with pytest.raises(ValueError, match="shear must be >= 0"):
        random_affine(img, generator=_gen(0), shear=-1)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        random_affine(torch.rand(8, 8), generator=_gen(0))


# --- augment_folder ---


def _make_folder(root: Path) -> Path:
    src = root / "src"
    src.mkdir()
    g = _gen(0)
    image_io.write_image(src / "a.png", torch.rand(3, 20, 24, generator=g))
    image_io.write_image(src / "b.jpg", torch.rand(3, 16, 16, generator=g))
    image_io.write_image(src / "c.png", torch.rand(3, 12, 18, generator=g), alpha=torch.rand(1, 12, 18, generator=g))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return src


def test_augment_folder_writes_variants_and_reports_bad_files(tmp_path: Path) -> None:
    src = _make_folder(tmp_path)
    dst = tmp_path / "out"
    report = augment_folder(src, dst, variants=3, seed=1, rotation=20, shift=0.1, shear=5, zoom=0.1)
    names = sorted(p.name for p in dst.iterdir())
    expected = sorted(f"{stem}_aug{k}.png" for stem in ("a", "b", "c") for k in range(3))
    assert names == expected  # no temp files left behind either
    assert sorted(p.name for p in report.written) == expected
    assert [p.name for p, _ in report.failed] == ["broken.png"]
    assert "broken.png" in report.failed[0][1]
    assert sorted(p.name for p in src.iterdir()) == ["a.png", "b.jpg", "broken.png", "c.png"]  # src untouched
    a0 = image_io.read_image(dst / "a_aug0.png")
    assert a0.size == (24, 20)
    assert image_io.read_image(dst / "c_aug1.png").alpha is not None  # alpha kept (and warped alike)
    # Deterministic per (seed, file name): a second run elsewhere writes the same pixels.
    again = augment_folder(src, tmp_path / "again", variants=3, seed=1, rotation=20, shift=0.1, shear=5, zoom=0.1)
    assert len(again.written) == 9
    assert torch.equal(image_io.read_rgb(tmp_path / "again" / "a_aug2.png"), image_io.read_rgb(dst / "a_aug2.png"))
    augment_folder(src, tmp_path / "other", variants=1, seed=2, rotation=20, shift=0.1)
    assert not torch.equal(image_io.read_rgb(tmp_path / "other" / "a_aug0.png"), a0.rgb)


def test_augment_folder_refuses_to_overwrite(tmp_path: Path) -> None:
    src = _make_folder(tmp_path)
    dst = tmp_path / "out"
    augment_folder(src, dst, variants=2, seed=0)
    before = (dst / "a_aug1.png").read_bytes()
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        augment_folder(src, dst, variants=2, seed=5)
    assert (dst / "a_aug1.png").read_bytes() == before  # nothing was written
    report = augment_folder(src, dst, variants=2, seed=5, overwrite=True)
    assert len(report.written) == 6
    assert (dst / "a_aug1.png").read_bytes() != before


def test_augment_folder_never_writes_into_src(tmp_path: Path) -> None:
    src = _make_folder(tmp_path)
    with pytest.raises(ValueError, match="refusing to write into the source folder"):
        augment_folder(src, src, variants=1, seed=0)
    with pytest.raises(ValueError, match="refusing to write into the source folder"):
        augment_folder(src, src / "aug", variants=1, seed=0)
    assert not (src / "aug").exists()
    with pytest.raises(ValueError, match="variants must be an int >= 1"):
        augment_folder(src, tmp_path / "x", variants=0, seed=0)
    with pytest.raises(ValueError, match="is not a folder"):
        augment_folder(tmp_path / "missing", tmp_path / "x", variants=1, seed=0)
    image_io.write_image(src / "a.jpg", torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match=r"a\.jpg and a\.png would both write a_aug0\.png|a\.png and a\.jpg"):
        augment_folder(src, tmp_path / "x", variants=1, seed=0)
