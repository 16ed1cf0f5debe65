"""Image files <-> tensors: the only place in srkit that decodes or encodes image files.

Inside srkit an image is a float32 RGB tensor, CHW (or NCHW), with values in [0, 1].
"""

import errno
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, TiffImagePlugin

from srkit.fs import IMAGE_SUFFIXES, atomic_write, same_file

_SIXTEEN_BIT_SUFFIXES = frozenset({".png", ".tif", ".tiff"})
_ALPHA_SUFFIXES = frozenset({".png", ".webp", ".tif", ".tiff"})
_PIL_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_LUMA_BT601 = (0.299, 0.587, 0.114)
_EXIF_ORIENTATION = 0x0112
_QUANTIZE_BAND_ELEMENTS = 1 << 22


class ImageReadError(ValueError):
    """An existing file could not be decoded as an image; the message names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        # Keep (path, reason) as args so the exception pickles across DataLoader worker processes.
        super().__init__(path, reason)
        self.path = Path(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot read image {self.path}: {self.reason}"


class ImageTooLargeError(ImageReadError):
    """The image has more pixels than allowed (a caller's limit or Pillow's decompression-bomb guard)."""


@dataclass
class LoadedImage:
    """A decoded image plus what is needed to write a result in the same style."""

    rgb: torch.Tensor
    alpha: torch.Tensor | None
    bit_depth: int
    grayscale: bool
    path: Path | None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.rgb.shape[-1]), int(self.rgb.shape[-2])


def read_image(path: str | Path) -> LoadedImage:
    """Decode an image file into a (3, H, W) float tensor plus alpha, bit depth and gray-ness."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "image file not found", str(path))
    if path.is_dir():
        raise ImageReadError(path, "expected an image file, got a directory")
    if not path.is_file():
        # A FIFO or a device would block or stream forever; only regular files are images.
        raise ImageReadError(path, "not a regular file (a pipe, socket or device); expected an image file")
    # Opened by us first so permission errors surface as themselves, not as "cannot decode".
    with open(path, "rb") as f:
        head = f.read(32)
    return _load(path, head, name=path)


def decode_image(data: bytes, *, name: str) -> LoadedImage:
    """Like read_image, for an encoded image held in memory (an upload); errors name it `name`."""
    return _load(data, data[:32], name=Path(name))


def image_size(data: bytes | Path, *, name: str | Path) -> tuple[int, int]:
    """(width, height) of an encoded image (bytes or a file) from its header alone, without decoding the pixels."""
    if isinstance(data, Path):
        if not data.is_file():
            raise ImageReadError(name, "not a regular file; expected an image file")
        if data.stat().st_size == 0:
            raise ImageReadError(name, "the file is empty (0 bytes)")
    elif not data:
        raise ImageReadError(name, "the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Between 1x and 2x Pillow's limit it only warns; the size is all we want here, so stay quiet.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(data if isinstance(data, Path) else io.BytesIO(data)) as im:
                width, height = im.size
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(name, f"too many pixels, refusing to decode ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        # Its own message names the in-memory buffer object, which means nothing to whoever sent the file.
        kinds = ", ".join(sorted(set(_PIL_FORMATS.values())))
        raise ImageReadError(name, f"not an image in a format srkit reads ({kinds})") from exc
    except Exception as exc:
        # Broken headers make Pillow raise assorted types (SyntaxError, struct.error, OSError, ...).
        raise ImageReadError(name, f"not a valid image ({type(exc).__name__}: {exc})") from exc
    return int(width), int(height)


def _load(source: Path | bytes, head: bytes, *, name: Path) -> LoadedImage:
    """Decode a file or in-memory bytes; every failure is an ImageReadError naming `name`."""
    if not head:
        raise ImageReadError(name, "the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse those inputs too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            arr, maxval, grayscale = _decode(source, head)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(name, f"too many pixels, refusing to decode ({exc})") from exc
    except _Refused as exc:
        raise ImageReadError(name, str(exc)) from None
    except Exception as exc:
        # Corrupt data makes Pillow/OpenCV raise many types (OSError, SyntaxError, struct.error, ...).
        raise ImageReadError(name, f"not a valid image or truncated ({type(exc).__name__}: {exc})") from exc
    t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32))
    t = t.div_(maxval).clamp_(0.0, 1.0)
    channels = t.shape[0]
    rgb = t[:1].expand(3, -1, -1).contiguous() if channels <= 2 else t[:3]
    alpha = t[channels - 1 :] if channels in (2, 4) else None
    # Float and 16-bit sources keep 16 bits in PNG/TIFF outputs (the most srkit writes); 8-bit stay 8-bit.
    bit_depth = 8 if maxval == 255 else 16
    return LoadedImage(rgb, alpha, bit_depth, grayscale, name if isinstance(source, Path) else None)


def read_rgb(path: str | Path) -> torch.Tensor:
    """Shortcut for read_image(path).rgb: a (3, H, W) float32 tensor in [0, 1]."""
    return read_image(path).rgb


class _Refused(ValueError):
    """A decodable image srkit will not guess about (animations, out-of-range samples); the text says why."""


def _decode(source: Path | bytes, head: bytes) -> tuple[np.ndarray, float, bool]:
    """Decode to an (H, W, C) array (C in 1..4), its full-scale value and whether it is gray."""
    with Image.open(source if isinstance(source, Path) else io.BytesIO(source)) as im:
        frames = int(getattr(im, "n_frames", 1))
        if frames > 1:
            # Upscaling only the first frame of an animation or a multi-page TIFF would silently drop the rest.
            raise _Refused(
                f"it has {frames} frames ({im.format} animation or multi-page file); srkit upscales single "
                "images: extract the frame(s) you want first"
            )
        if _is_16bit(im, head):
            return _decode_16bit(source, im)
        im.load()  # decode now so truncated or corrupt data fails here, not lazily later
        ImageOps.exif_transpose(im, in_place=True)
        grayscale = im.mode in _GRAY_MODES
        if im.mode == "F":
            return _float_samples(np.array(im, dtype=np.float32)), 1.0, True
        if im.mode.startswith("I"):
            # 16/32-bit integer gray that did not go through OpenCV: scale by the 16-bit full range.
            return _int_samples(np.asarray(im).astype(np.int64)), 65535, True
        has_alpha = im.mode in _ALPHA_MODES or "transparency" in im.info
        target = ("LA" if has_alpha else "L") if grayscale else ("RGBA" if has_alpha else "RGB")
        arr = np.asarray(im if im.mode == target else im.convert(target))
        return (arr[:, :, None] if arr.ndim == 2 else arr), 255, grayscale


def _float_samples(arr: np.ndarray) -> np.ndarray:
    """Float (mode F) gray samples, read as values in [0, 1]; anything else is refused, not clipped or blackened."""
    if not np.isfinite(arr).all():
        raise _Refused("its float samples include NaN or infinity; expected finite values in [0, 1]")
    low, high = float(arr.min()), float(arr.max())
    if low < 0.0 or high > 1.0:
        raise _Refused(
            f"its float samples span [{low:g}, {high:g}]; srkit reads float images as values in [0, 1] "
            "(rescale it to [0, 1], or save it as 8/16-bit integers)"
        )
    return arr[:, :, None]


def _int_samples(arr: np.ndarray) -> np.ndarray:
    """32-bit integer (mode I) gray samples: read as 16-bit when they fit 0..65535, else refused (never clipped)."""
    low, high = int(arr.min()), int(arr.max())
    if low < 0 or high > 65535:
        raise _Refused(
            f"its 32-bit integer samples span [{low}, {high}]; srkit reads integer images of up to 16 bits "
            "(0..65535): convert it to 16-bit first"
        )
    return arr.astype(np.int32)[:, :, None]


def _is_16bit(im: Image.Image, head: bytes) -> bool:
    """True for PNG/TIFF files whose samples are 16-bit (Pillow would truncate 48/64-bit RGB(A))."""
    if im.format == "PNG":
        return head[12:16] == b"IHDR" and head[24] == 16  # IHDR bit-depth byte
    if isinstance(im, TiffImagePlugin.TiffImageFile):
        bits = im.tag_v2.get(258, 8)  # BitsPerSample: one value per channel
        return bool(max(bits) == 16 if isinstance(bits, tuple) else bits == 16)
    return False


def _decode_16bit(source: Path | bytes, im: Image.Image) -> tuple[np.ndarray, int, bool]:
    """Decode 16-bit PNG/TIFF data with OpenCV, in RGB(A) order and EXIF-oriented."""
    # imdecode rather than imread: imread cannot open non-ASCII paths on Windows.
    encoded = np.fromfile(source, dtype=np.uint8) if isinstance(source, Path) else np.frombuffer(source, np.uint8)
    arr = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError("OpenCV could not decode the 16-bit image data")
    if arr.dtype != np.uint16:
        raise ValueError(f"expected 16-bit samples, OpenCV decoded {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.shape[2] in (3, 4):
        arr = arr[:, :, [2, 1, 0, 3][: arr.shape[2]]]  # OpenCV gives BGR(A)
    # IMREAD_UNCHANGED ignores EXIF orientation, so apply it the way Pillow's exif_transpose does.
    arr = _apply_orientation(arr, _orientation(im))
    return arr, 65535, im.mode in _GRAY_MODES or arr.shape[2] <= 2


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1 when absent), read without decoding the pixels."""
    if im.format == "PNG" and "exif" not in im.info:
        return 1  # PngImageFile.getexif() would decode the whole image looking for a late eXIf chunk
    return int(im.getexif().get(_EXIF_ORIENTATION, 1))


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an (H, W, C) array, matching PIL.ImageOps.exif_transpose."""
    if orientation in (5, 6, 7, 8):
        arr = arr.swapaxes(0, 1)
    if orientation in (3, 4, 7, 8):
        arr = arr[::-1]
    if orientation in (2, 3, 6, 7):
        arr = arr[:, ::-1]
    return np.ascontiguousarray(arr)


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) float in [0, 1] -> (H, W, 3) uint8; clamp, then round half to even."""
    return _quantize(_check_rgb(rgb, "to_uint8"), 255)


def _quantize(x: torch.Tensor, maxval: int) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> (H, W, C) uint8/uint16 array via torch.round(x * maxval)."""
    x = x.detach().to("cpu", torch.float32)
    channels, height, width = x.shape
    out = np.empty((height, width, channels), dtype=np.uint8 if maxval == 255 else np.uint16)
    # A band of rows at a time: temporaries stay ~16 MB however large the image (an 8000x8000 upscale is
    # 768 MB as float32; whole-image temporaries would triple that).
    rows = max(1, _QUANTIZE_BAND_ELEMENTS // max(1, channels * width))
    for y in range(0, height, rows):
        # NaN (e.g. from a diverged model) would otherwise cast to an arbitrary value.
        band = torch.nan_to_num(x[:, y : y + rows], nan=0.0).clamp_(0.0, 1.0)
        out[y : y + rows] = torch.round(band.mul_(maxval)).to(torch.int32).permute(1, 2, 0).numpy()
    return out


def _check_rgb(rgb: torch.Tensor, where: str) -> torch.Tensor:
    """Validate a float (3, H, W) or (1, 3, H, W) tensor and return it as (3, H, W)."""
    if rgb.ndim == 4 and rgb.shape[0] == 1:
        rgb = rgb[0]
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"{where}: expected an RGB tensor of shape (3, H, W) or (1, 3, H, W), got {tuple(rgb.shape)}")
    if not rgb.is_floating_point():
        raise ValueError(f"{where}: expected a float tensor with values in [0, 1], got {rgb.dtype}")
    return rgb


def write_image(
    path: str | Path,
    rgb: torch.Tensor,
    *,
    alpha: torch.Tensor | None = None,
    bit_depth: int = 8,
    grayscale: bool = False,
    quality: int = 95,
) -> Path:
    """Atomically write an RGB tensor (plus optional alpha) to `path`, format chosen by suffix."""
    path = Path(path)
    data = encode_image(
        rgb, suffix=path.suffix, alpha=alpha, bit_depth=bit_depth, grayscale=grayscale, quality=quality, name=str(path)
    )
    atomic_write(path, data)
    return path


def encode_image(
    rgb: torch.Tensor,
    *,
    suffix: str = ".png",
    alpha: torch.Tensor | None = None,
    bit_depth: int = 8,
    grayscale: bool = False,
    quality: int = 95,
    name: str | None = None,
) -> bytes:
    """Encode an RGB tensor (plus optional alpha) as the bytes of a `suffix` file, e.g. ".png"."""
    suffix = suffix.lower()
    where = f"cannot write {name}" if name else f"cannot encode {suffix or 'an image without a suffix'}"
    if suffix not in IMAGE_SUFFIXES:
        allowed = ", ".join(sorted(IMAGE_SUFFIXES))
        raise ValueError(f"{where}: unknown image suffix {suffix!r}, expected one of {allowed}")
    if bit_depth not in (8, 16):
        raise ValueError(f"{where}: bit_depth must be 8 or 16, got {bit_depth}")
    if bit_depth == 16 and suffix not in _SIXTEEN_BIT_SUFFIXES:
        raise ValueError(f"{where}: 16-bit output is supported only for .png, .tif and .tiff, not {suffix}")
    if alpha is not None and suffix not in _ALPHA_SUFFIXES:
        raise ValueError(f"{where}: {suffix} cannot store an alpha channel; use .png (or .webp/.tif)")
    if not 1 <= quality <= 100:
        raise ValueError(f"{where}: quality must be in 1..100, got {quality}")
    rgb = _check_rgb(rgb, where).detach().to("cpu", torch.float32)
    channels = _to_gray(rgb) if grayscale else rgb
    if alpha is not None:
        if alpha.shape[-2:] != rgb.shape[-2:] or alpha.numel() != rgb[0].numel():
            raise ValueError(f"{where}: alpha of shape {tuple(alpha.shape)} does not match image {tuple(rgb.shape)}")
        channels = torch.cat([channels, alpha.detach().to("cpu", torch.float32).reshape(1, *rgb.shape[1:])])
    arr = _quantize(channels, 65535 if bit_depth == 16 else 255)
    return _encode_16bit(arr, suffix, where) if bit_depth == 16 else _encode_8bit(arr, suffix, quality)


def _to_gray(rgb: torch.Tensor) -> torch.Tensor:
    """(3, H, W) -> (1, H, W) BT.601 luma; a replicated-gray tensor gives its channel back exactly."""
    if torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[1], rgb[2]):
        return rgb[:1]  # skip the weighted sum, whose float rounding could move a value by one level
    weights = torch.tensor(_LUMA_BT601, dtype=rgb.dtype).view(3, 1, 1)
    return (rgb * weights).sum(0, keepdim=True)


def _encode_8bit(arr: np.ndarray, suffix: str, quality: int) -> bytes:
    """Encode an (H, W, C) uint8 array with Pillow."""
    image = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)  # L, LA, RGB or RGBA by shape
    options = {"quality": quality} if suffix in (".jpg", ".jpeg", ".webp") else {}
    buffer = io.BytesIO()
    image.save(buffer, format=_PIL_FORMATS[suffix], **options)
    return buffer.getvalue()


def _encode_16bit(arr: np.ndarray, suffix: str, where: str) -> bytes:
    """Encode an (H, W, C) uint16 array as PNG/TIFF with OpenCV (Pillow cannot write 16-bit RGB)."""
    if arr.shape[2] == 2:
        # OpenCV cannot write gray+alpha; replicate the gray into RGBA so no value is lost.
        arr = arr[:, :, [0, 0, 0, 1]]
    if arr.shape[2] in (3, 4):
        arr = arr[:, :, [2, 1, 0, 3][: arr.shape[2]]]  # OpenCV expects BGR(A)
    ok, encoded = cv2.imencode(suffix, np.ascontiguousarray(arr))
    if not ok:
        raise ValueError(f"{where}: OpenCV failed to encode 16-bit {suffix}")
    return encoded.tobytes()


def save_like(
    path: str | Path,
    rgb: torch.Tensor,
    like: LoadedImage,
    *,
    alpha: torch.Tensor | None = None,
    overwrite_source: bool = False,
) -> Path:
    """Write `rgb` keeping the bit depth, gray-ness and (given) alpha of the source image `like`."""
    path = Path(path)
    if like.path is not None and not overwrite_source and same_file(path, like.path):
        raise ValueError(f"refusing to write {path}: it is the source image {like.path}; pass overwrite_source=True")
    # Only PNG/TIFF hold 16 bits; choosing e.g. .jpg as output already implies 8-bit.
    bit_depth = like.bit_depth if path.suffix.lower() in _SIXTEEN_BIT_SUFFIXES else 8
    return write_image(path, rgb, alpha=alpha, bit_depth=bit_depth, grayscale=like.grayscale)
