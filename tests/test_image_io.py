"""Tests for srkit.image_io and srkit.files; every fixture image is generated on the fly in tmp_path."""

import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from srkit.fs import IMAGE_SUFFIXES, list_images
from srkit.image_io import (
    ImageReadError,
    ImageTooLargeError,
    LoadedImage,
    decode_image,
    encode_image,
    image_size,
    read_image,
    read_rgb,
    save_like,
    to_uint8,
    write_image,
)

LOSSLESS = [".png", ".bmp", ".tif", ".tiff"]
LOSSY = [".jpg", ".jpeg", ".webp"]


def _noise(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    """Random uint8 (H, W, C) image."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _smooth(h: int, w: int) -> np.ndarray:
    """Smooth uint8 RGB gradient: lossy codecs keep it close to the original."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 127 // (h + w)], -1).astype(np.uint8)


def _tensor(arr: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255


def _pil_rgb(path: Path) -> np.ndarray:
    """Pillow's own decode of `path` as RGB, EXIF-oriented: the reference for 8-bit reads."""
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def _cv2_read(path: Path) -> np.ndarray:
    """OpenCV's raw decode (BGR order, native dtype): an independent check of 16-bit files."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw is not None
    return raw


def _only_files(folder: Path) -> list[str]:
    """Names of all entries in `folder`, hidden temp files included."""
    return sorted(os.listdir(folder))


# 1. Formats ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", LOSSLESS + LOSSY)
def test_read_each_format(tmp_path: Path, suffix: str) -> None:
    arr = _smooth(12, 17)
    path = tmp_path / f"img{suffix}"
    Image.fromarray(arr).save(path)
    img = read_image(path)
    assert img.rgb.dtype == torch.float32 and img.rgb.shape == (3, 12, 17)
    assert img.size == (17, 12) and img.bit_depth == 8 and not img.grayscale and img.alpha is None
    assert img.path == path
    np.testing.assert_array_equal(to_uint8(img.rgb), _pil_rgb(path))
    if suffix in LOSSLESS:
        np.testing.assert_array_equal(to_uint8(img.rgb), arr)


@pytest.mark.parametrize("suffix", LOSSLESS + LOSSY)
def test_write_each_format(tmp_path: Path, suffix: str) -> None:
    arr = _smooth(16, 24)
    path = write_image(tmp_path / f"out{suffix}", _tensor(arr))
    expected_format = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
    with Image.open(path) as im:
        assert im.format == expected_format.get(suffix, suffix[1:].upper())
        assert im.mode == "RGB"
    back = _pil_rgb(path).astype(int)
    if suffix in LOSSLESS:
        np.testing.assert_array_equal(back, arr)
    else:
        assert np.abs(back - arr).mean() < 3


def test_write_suffix_case_insensitive(tmp_path: Path) -> None:
    path = write_image(tmp_path / "OUT.PNG", _tensor(_noise(3, 4)))
    with Image.open(path) as im:
        assert im.format == "PNG"


def test_unknown_output_suffix(tmp_path: Path) -> None:
    path = tmp_path / "out.gif"
    with pytest.raises(ValueError, match=r"out\.gif") as info:
        write_image(path, torch.rand(3, 4, 4))
    for suffix in IMAGE_SUFFIXES:
        assert suffix in str(info.value)
    assert _only_files(tmp_path) == []


# 2. Modes -----------------------------------------------------------------------------------------------


def test_read_grayscale_l(tmp_path: Path) -> None:
    gray = _noise(5, 7, 1)[:, :, 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.grayscale and img.alpha is None and img.bit_depth == 8 and img.rgb.shape == (3, 5, 7)
    assert torch.equal(img.rgb[0], img.rgb[1]) and torch.equal(img.rgb[0], img.rgb[2])
    np.testing.assert_array_equal(to_uint8(img.rgb)[:, :, 0], gray)


def test_read_mode_1(tmp_path: Path) -> None:
    bits = _noise(6, 9, 1)[:, :, 0] > 127
    Image.fromarray(bits).convert("1").save(tmp_path / "b.png")
    img = read_image(tmp_path / "b.png")
    assert img.grayscale and img.alpha is None
    np.testing.assert_array_equal(img.rgb[0].numpy(), bits.astype(np.float32))


def test_read_palette_without_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (4, 3))
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    im.putpixel((1, 2), 1)
    im.save(tmp_path / "p.png")
    img = read_image(tmp_path / "p.png")
    assert not img.grayscale and img.alpha is None
    assert to_uint8(img.rgb)[0, 0].tolist() == [10, 20, 30]
    assert to_uint8(img.rgb)[2, 1].tolist() == [200, 100, 50]


def test_read_palette_with_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (4, 3))
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    im.putpixel((1, 2), 1)
    im.save(tmp_path / "p.png", transparency=0)
    img = read_image(tmp_path / "p.png")
    assert not img.grayscale and img.alpha is not None and img.alpha.shape == (1, 3, 4)
    expected = np.zeros((3, 4), np.float32)
    expected[2, 1] = 1.0
    np.testing.assert_array_equal(img.alpha[0].numpy(), expected)


def test_read_rgba_splits_alpha(tmp_path: Path) -> None:
    arr = _noise(5, 6, 4)
    Image.fromarray(arr).save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert not img.grayscale and img.alpha is not None
    assert img.rgb.shape == (3, 5, 6) and img.alpha.shape == (1, 5, 6)
    np.testing.assert_array_equal(to_uint8(img.rgb), arr[:, :, :3])
    np.testing.assert_array_equal(to_uint8(img.alpha.expand(3, -1, -1))[:, :, 0], arr[:, :, 3])


def test_read_la(tmp_path: Path) -> None:
    arr = _noise(5, 6, 2)
    Image.fromarray(arr).save(tmp_path / "la.png")
    img = read_image(tmp_path / "la.png")
    assert img.grayscale and img.alpha is not None
    np.testing.assert_array_equal(to_uint8(img.rgb), np.repeat(arr[:, :, :1], 3, axis=2))
    np.testing.assert_array_equal(torch.round(img.alpha[0] * 255).numpy(), arr[:, :, 1])


def test_read_cmyk_jpeg(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    img = read_image(tmp_path / "c.jpg")
    assert not img.grayscale and img.alpha is None and img.rgb.shape == (3, 8, 8)
    red = to_uint8(img.rgb).reshape(-1, 3).mean(0)
    assert red[0] > 240 and red[1] < 15 and red[2] < 15


# 3. 16-bit ----------------------------------------------------------------------------------------------


def _u16(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    """Random uint16 data that is mostly not a multiple of 257 (so 8-bit truncation would show)."""
    arr = np.random.default_rng(seed).integers(0, 65536, (h, w, c), dtype=np.uint16)
    assert (arr % 257 != 0).mean() > 0.9
    return arr


def test_read_16bit_rgb_png(tmp_path: Path) -> None:
    arr = _u16(7, 9, 3)
    cv2.imwrite(str(tmp_path / "c.png"), arr[:, :, ::-1])  # cv2 wants BGR
    img = read_image(tmp_path / "c.png")
    assert img.bit_depth == 16 and not img.grayscale and img.alpha is None
    np.testing.assert_array_equal(torch.round(img.rgb * 65535).permute(1, 2, 0).numpy(), arr)


def test_read_16bit_gray_png(tmp_path: Path) -> None:
    arr = _u16(7, 9, 1)[:, :, 0]
    Image.fromarray(arr).save(tmp_path / "g.png")  # Pillow writes I;16 as 16-bit gray PNG
    img = read_image(tmp_path / "g.png")
    assert img.bit_depth == 16 and img.grayscale and img.alpha is None and img.rgb.shape == (3, 7, 9)
    for c in range(3):
        np.testing.assert_array_equal(torch.round(img.rgb[c] * 65535).numpy(), arr)


@pytest.mark.parametrize("channels", [3, 4])
def test_read_16bit_tiff(tmp_path: Path, channels: int) -> None:
    arr = _u16(6, 5, channels)
    bgr = arr[:, :, [2, 1, 0, 3][:channels]]
    cv2.imwrite(str(tmp_path / "c.tif"), np.ascontiguousarray(bgr))
    img = read_image(tmp_path / "c.tif")
    assert img.bit_depth == 16 and not img.grayscale
    np.testing.assert_array_equal(torch.round(img.rgb * 65535).permute(1, 2, 0).numpy(), arr[:, :, :3])
    if channels == 4:
        assert img.alpha is not None
        np.testing.assert_array_equal(torch.round(img.alpha[0] * 65535).numpy(), arr[:, :, 3])
    else:
        assert img.alpha is None


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff"])
def test_write_16bit_round_trip(tmp_path: Path, suffix: str) -> None:
    arr = _u16(5, 8, 3, seed=1)
    rgb = torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1) / 65535
    path = write_image(tmp_path / f"c{suffix}", rgb, bit_depth=16)
    raw = _cv2_read(path)
    assert raw.dtype == np.uint16 and raw.shape == (5, 8, 3)
    np.testing.assert_array_equal(raw[:, :, ::-1], arr)
    img = read_image(path)
    assert img.bit_depth == 16
    np.testing.assert_array_equal(torch.round(img.rgb * 65535).permute(1, 2, 0).numpy(), arr)


def test_write_16bit_gray_and_alpha(tmp_path: Path) -> None:
    arr = _u16(4, 6, 2, seed=2).astype(np.float32) / 65535
    gray = torch.from_numpy(arr[:, :, 0]).expand(3, -1, -1)
    alpha = torch.from_numpy(arr[:, :, 1])[None]
    raw = _cv2_read(write_image(tmp_path / "g.png", gray, bit_depth=16, grayscale=True))
    assert raw.dtype == np.uint16 and raw.shape == (4, 6)
    np.testing.assert_array_equal(raw, np.round(arr[:, :, 0] * 65535))
    # OpenCV cannot write 16-bit gray+alpha, so it is stored as RGBA with the gray replicated, losslessly.
    img = read_image(write_image(tmp_path / "ga.png", gray, alpha=alpha, bit_depth=16, grayscale=True))
    assert img.bit_depth == 16 and img.alpha is not None
    assert torch.equal(img.rgb, gray) and torch.equal(img.alpha, alpha)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".webp", ".bmp"])
def test_write_16bit_unsupported_format(tmp_path: Path, suffix: str) -> None:
    with pytest.raises(ValueError, match=r"out\..*16-bit.*\.png.*\.tif"):
        write_image(tmp_path / f"out{suffix}", torch.rand(3, 4, 4), bit_depth=16)
    assert _only_files(tmp_path) == []


def test_write_bad_bit_depth(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bit_depth"):
        write_image(tmp_path / "out.png", torch.rand(3, 4, 4), bit_depth=12)


# 4. EXIF orientation ------------------------------------------------------------------------------------


def _exif(orientation: int) -> Image.Exif:
    """An EXIF block carrying only the orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def test_exif_orientation_jpeg(tmp_path: Path) -> None:
    Image.fromarray(_smooth(20, 40)).save(tmp_path / "r.jpg", exif=_exif(6), quality=95)
    img = read_image(tmp_path / "r.jpg")
    assert img.size == (20, 40) and img.rgb.shape == (3, 40, 20)
    with Image.open(tmp_path / "r.jpg") as im:
        assert im.size == (40, 20)  # the stored pixels are landscape; only the tag makes them portrait
    np.testing.assert_array_equal(to_uint8(img.rgb), _pil_rgb(tmp_path / "r.jpg"))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_16bit_matches_pillow(tmp_path: Path, orientation: int) -> None:
    # The 16-bit path (OpenCV) orients by hand; it must agree with Pillow's exif_transpose on 8-bit data.
    gray8 = _noise(3, 5, 1, seed=orientation)[:, :, 0]
    Image.fromarray(gray8).save(tmp_path / "g8.png", exif=_exif(orientation))
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "g16.png", exif=_exif(orientation))
    img8, img16 = read_image(tmp_path / "g8.png"), read_image(tmp_path / "g16.png")
    assert (img8.bit_depth, img16.bit_depth) == (8, 16)
    assert torch.equal(img8.rgb, img16.rgb)


# 5. Grayscale and alpha on write ------------------------------------------------------------------------


def test_write_grayscale_from_colour_uses_bt601(tmp_path: Path) -> None:
    rgb = torch.rand(3, 6, 7, generator=torch.Generator().manual_seed(0))
    path = write_image(tmp_path / "g.png", rgb, grayscale=True)
    with Image.open(path) as im:
        assert im.mode == "L"
        gray = np.asarray(im).astype(np.float64)
    luma = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]).double().numpy() * 255
    assert np.abs(gray - luma).max() <= 0.5 + 1e-4
    img = read_image(path)
    assert img.grayscale and img.bit_depth == 8


def test_write_grayscale_from_replicated_gray_is_exact(tmp_path: Path) -> None:
    gray = torch.rand(1, 5, 5, generator=torch.Generator().manual_seed(1))
    path = write_image(tmp_path / "g.png", gray.expand(3, -1, -1), grayscale=True)
    with Image.open(path) as im:
        np.testing.assert_array_equal(np.asarray(im), to_uint8(gray.expand(3, -1, -1))[:, :, 0])


@pytest.mark.parametrize("suffix", [".png", ".webp", ".tif", ".tiff"])
def test_write_alpha(tmp_path: Path, suffix: str) -> None:
    arr = _smooth(8, 8)
    alpha = torch.linspace(0, 1, 64).reshape(1, 8, 8)
    path = write_image(tmp_path / f"a{suffix}", _tensor(arr), alpha=alpha, quality=100)
    img = read_image(path)
    assert img.alpha is not None and img.alpha.shape == (1, 8, 8)
    with Image.open(path) as im:
        assert im.mode == "RGBA"
    if suffix != ".webp":
        assert torch.equal(img.alpha, torch.round(alpha * 255) / 255)
        np.testing.assert_array_equal(to_uint8(img.rgb), arr)


def test_write_gray_alpha_is_la(tmp_path: Path) -> None:
    alpha = torch.rand(1, 4, 4)
    path = write_image(tmp_path / "la.png", torch.rand(1, 4, 4).expand(3, -1, -1), alpha=alpha, grayscale=True)
    with Image.open(path) as im:
        assert im.mode == "LA"
    img = read_image(path)
    assert img.grayscale and img.alpha is not None


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".bmp"])
def test_write_alpha_unsupported_format(tmp_path: Path, suffix: str) -> None:
    with pytest.raises(ValueError, match=r"out\..*\.png"):
        write_image(tmp_path / f"out{suffix}", torch.rand(3, 4, 4), alpha=torch.rand(1, 4, 4))
    assert _only_files(tmp_path) == []


def test_write_rejects_bad_tensors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        write_image(tmp_path / "a.png", torch.rand(4, 5, 5))
    with pytest.raises(ValueError, match="float"):
        write_image(tmp_path / "a.png", torch.zeros(3, 5, 5, dtype=torch.uint8))
    with pytest.raises(ValueError, match="alpha"):
        write_image(tmp_path / "a.png", torch.rand(3, 5, 5), alpha=torch.rand(1, 5, 4))
    assert _only_files(tmp_path) == []


# 6. Read errors -----------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        read_image(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.png.*empty"):
        read_image(path)


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_text("this is not an image\n")
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(path) in str(info.value) and info.value.path == path
    assert isinstance(info.value, ValueError)


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ImageReadError, match=r"d\.png.*directory"):
        read_image(tmp_path / "d.png")


@pytest.mark.parametrize("kind", ["png", "jpg", "png16"])
def test_truncated_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"t.{kind[:3]}"
    if kind == "png16":
        cv2.imwrite(str(path), _u16(64, 64, 3))
    else:
        Image.fromarray(_noise(64, 64)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(("side", "limit"), [(20, 100), (12, 100)])
def test_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: int, limit: int) -> None:
    # 400 px > 2 * limit makes Pillow raise; 144 px is between limit and 2 * limit, where Pillow only warns.
    path = tmp_path / "big.png"
    Image.fromarray(_noise(side, side)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(path) in str(info.value) and str(side * side) in str(info.value)


def test_read_error_pickles(tmp_path: Path) -> None:
    err = pickle.loads(pickle.dumps(ImageReadError(tmp_path / "a.png", "broken")))
    assert isinstance(err, ImageReadError) and err.path == tmp_path / "a.png" and "broken" in str(err)


# 7. Atomic writes ---------------------------------------------------------------------------------------


def test_write_leaves_no_temp_and_creates_parents(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "out.png"
    assert write_image(path, torch.rand(3, 4, 4)) == path
    assert _only_files(path.parent) == ["out.png"]


def test_failed_replace_removes_temp_and_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.png"
    path.write_bytes(b"old")
    seen: list[str] = []

    def failing_replace(src: str | Path, dst: str | Path) -> None:
        seen.append(Path(src).name)
        assert Path(src).exists() and Path(src).parent == path.parent
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk on fire"):
        write_image(path, torch.rand(3, 4, 4))
    assert len(seen) == 1 and seen[0].startswith(".out.png.tmp")
    assert _only_files(tmp_path) == ["out.png"] and path.read_bytes() == b"old"


def test_write_overwrites_existing(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    write_image(path, torch.zeros(3, 2, 2))
    write_image(path, torch.ones(3, 2, 2))
    assert read_rgb(path).min() == 1.0 and _only_files(tmp_path) == ["out.png"]


# 8. list_images -----------------------------------------------------------------------------------------


def _tree(root: Path) -> None:
    """A folder with nested subfolders, mixed-case suffixes, non-images and hidden files."""
    for rel in ["b.png", "A.PNG", "notes.txt", "c.Jpeg", "sub/d.webp", "sub/deeper/e.TIFF", "sub/x.gif"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "h.png").write_bytes(b"")
    (root / "._b.png").write_bytes(b"")
    (root / "folder.png").mkdir()  # a folder with an image suffix is not an image


def test_list_images_recursive(tmp_path: Path) -> None:
    _tree(tmp_path)
    found = list_images([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "A.PNG",
        "b.png",
        "c.Jpeg",
        "sub/d.webp",
        "sub/deeper/e.TIFF",
    ]


def test_list_images_top_level_only(tmp_path: Path) -> None:
    _tree(tmp_path)
    found = list_images([str(tmp_path)], recursive=False)
    assert [p.name for p in found] == ["A.PNG", "b.png", "c.Jpeg"]


def test_list_images_keeps_given_files_and_order(tmp_path: Path) -> None:
    _tree(tmp_path)
    notes = tmp_path / "notes.txt"
    found = list_images([notes, tmp_path / "sub", tmp_path / "sub" / "d.webp"])
    assert found == [notes, tmp_path / "sub" / "d.webp", tmp_path / "sub" / "deeper" / "e.TIFF"]
    assert list_images([]) == []


def test_list_images_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ghost"):
        list_images([tmp_path, tmp_path / "ghost"])


# 9. Round trips and to_uint8 ----------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w"), [(1, 1), (3, 5), (5, 3), (17, 31)])
def test_png_round_trip_exact(tmp_path: Path, h: int, w: int) -> None:
    rgb = torch.rand(3, h, w, generator=torch.Generator().manual_seed(h * 100 + w))
    path = write_image(tmp_path / "rt.png", rgb)
    img = read_image(path)
    assert img.rgb.dtype == torch.float32 and img.rgb.shape == (3, h, w) and img.size == (w, h)
    assert img.rgb.is_contiguous() and img.rgb.min() >= 0.0 and img.rgb.max() <= 1.0
    np.testing.assert_array_equal(to_uint8(img.rgb), to_uint8(rgb))


def test_write_accepts_nchw_and_out_of_range(tmp_path: Path) -> None:
    rgb = torch.tensor([-0.5, 0.25, 1.5]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    img = read_image(write_image(tmp_path / "n.png", rgb))
    assert to_uint8(img.rgb)[0, 0].tolist() == [0, 64, 255]


def test_to_uint8_matches_reference() -> None:
    x = torch.rand(1, 3, 4, 6, generator=torch.Generator().manual_seed(3)) * 1.4 - 0.2
    x[0, 0, 0, :3] = torch.tensor([0.5, 1.5, 2.5]) / 255  # near half-way points
    out = to_uint8(x)
    assert out.dtype == np.uint8 and out.shape == (4, 6, 3) and out.flags.c_contiguous
    ref = np.rint(np.clip(x[0].numpy(), 0, 1) * np.float32(255)).astype(np.uint8).transpose(1, 2, 0)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(to_uint8(x[0]), out)
    with pytest.raises(ValueError, match="shape"):
        to_uint8(torch.rand(2, 3, 4, 4))


# save_like ----------------------------------------------------------------------------------------------


def test_save_like_keeps_16bit_gray_and_alpha(tmp_path: Path) -> None:
    Image.fromarray(_u16(4, 4, 1)[:, :, 0]).save(tmp_path / "src.png")
    src = read_image(tmp_path / "src.png")
    up = torch.nn.functional.interpolate(src.rgb[None], scale_factor=4, mode="nearest")[0]
    out = save_like(tmp_path / "out" / "up.png", up, src)
    raw = _cv2_read(out)
    assert raw.dtype == np.uint16 and raw.shape == (16, 16)
    back = read_image(out)
    assert back.bit_depth == 16 and back.grayscale and torch.equal(back.rgb, up)

    Image.fromarray(_noise(4, 4, 4)).save(tmp_path / "rgba.png")
    src = read_image(tmp_path / "rgba.png")
    assert src.alpha is not None
    back = read_image(save_like(tmp_path / "out" / "rgba.png", src.rgb, src, alpha=src.alpha))
    assert back.bit_depth == 8 and not back.grayscale and back.alpha is not None
    assert torch.equal(back.rgb, src.rgb) and torch.equal(back.alpha, src.alpha)


def test_save_like_8bit_only_format_downgrades(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "src.png"), _u16(8, 8, 3))
    src = read_image(tmp_path / "src.png")
    back = read_image(save_like(tmp_path / "out.jpg", src.rgb, src))
    assert back.bit_depth == 8 and back.rgb.shape == (3, 8, 8)


def test_save_like_refuses_source_path(tmp_path: Path) -> None:
    path = tmp_path / "src.png"
    Image.fromarray(_noise(4, 4)).save(path)
    src = read_image(path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"src\.png.*overwrite_source"):
        save_like(tmp_path / "." / "src.png", torch.zeros(3, 4, 4), src)
    assert path.read_bytes() == before
    save_like(path, torch.zeros(3, 4, 4), src, overwrite_source=True)
    assert read_rgb(path).max() == 0.0


def test_loaded_image_size() -> None:
    img = LoadedImage(torch.zeros(3, 2, 7), None, 8, False, None)
    assert img.size == (7, 2)


@pytest.mark.parametrize(("channels", "bit_depth"), [(3, 8), (4, 8), (1, 8), (3, 16), (4, 16)])
def test_decode_image_from_bytes_matches_read_image(tmp_path: Path, channels: int, bit_depth: int) -> None:
    rgb = _tensor(_noise(6, 5, 3))
    alpha = _tensor(_noise(6, 5, 1, seed=1)) if channels == 4 else None
    path = write_image(tmp_path / "x.png", rgb, alpha=alpha, bit_depth=bit_depth, grayscale=channels == 1)
    from_file = read_image(path)
    from_bytes = decode_image(path.read_bytes(), name="upload.png")
    assert torch.equal(from_bytes.rgb, from_file.rgb)
    assert (from_bytes.alpha is None) == (from_file.alpha is None)
    if from_file.alpha is not None:
        assert from_bytes.alpha is not None and torch.equal(from_bytes.alpha, from_file.alpha)
    assert (from_bytes.bit_depth, from_bytes.grayscale) == (from_file.bit_depth, from_file.grayscale)
    assert from_bytes.path is None  # nothing on disk to point at


def test_encode_image_is_what_write_image_writes(tmp_path: Path) -> None:
    rgb, alpha = _tensor(_noise(4, 7)), _tensor(_noise(4, 7, 1, seed=2))
    for bit_depth in (8, 16):
        path = write_image(tmp_path / f"x{bit_depth}.png", rgb, alpha=alpha, bit_depth=bit_depth)
        assert encode_image(rgb, suffix=".png", alpha=alpha, bit_depth=bit_depth) == path.read_bytes()
    with pytest.raises(ValueError, match=r"cannot encode \.jpg: .*alpha"):
        encode_image(rgb, suffix=".jpg", alpha=alpha)


def test_image_size_reads_the_header_only() -> None:
    # A PNG's signature and IHDR (declaring 3000 x 2000), then IEND with no pixel data at all.
    header = cv2.imencode(".png", np.zeros((2000, 3000), np.uint8))[1].tobytes()[:33] + b"\0\0\0\0IEND\xaeB`\x82"
    assert image_size(header, name="big.png") == (3000, 2000)
    with pytest.raises(ImageReadError, match=r"notes\.txt: not an image in a format srkit reads"):
        image_size(b"hello", name="notes.txt")
    with pytest.raises(ImageReadError, match=r"e\.png: the file is empty"):
        image_size(b"", name="e.png")


def test_decode_errors_name_the_upload() -> None:
    data = cv2.imencode(".png", _noise(16, 16))[1].tobytes()
    with pytest.raises(ImageReadError, match=r"cannot read image cut\.png: not a valid image or truncated"):
        decode_image(data[: len(data) // 2], name="cut.png")
    with pytest.raises(ImageReadError, match=r"e\.png: the file is empty"):
        decode_image(b"", name="e.png")


def test_decompression_bomb_is_image_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    data = cv2.imencode(".png", np.zeros((64, 64), np.uint8))[1].tobytes()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels > 2 x 1000: Pillow refuses to open it
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png: too many pixels"):
        image_size(data, name="bomb.png")
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png: too many pixels"):
        decode_image(data, name="bomb.png")
