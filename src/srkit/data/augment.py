"""Offline affine augmentation with Keras ImageDataGenerator semantics, and a folder writer for it.

The parameters mean what they mean in keras_preprocessing's ImageDataGenerator (get_random_transform
and apply_affine_transform), which one report used:
- rotation: angle drawn uniformly from [-rotation, rotation] degrees;
- shift: a fraction of the size (Keras' width/height_shift_range below 1): the row shift is drawn
  from [-shift, shift] * H, the column shift from [-shift, shift] * W;
- shear: an angle in DEGREES drawn from [-shear, shear]. Keras documents shear_range as "Shear angle in
  counter-clockwise direction in degrees" and applies np.deg2rad to it, so the customary shear_range=0.2
  is a 0.2 degree shear, almost nothing. (Early Keras 2 releases fed the value to sin() as radians,
  where 0.2 was ~11.5 degrees; pass shear=11.5 to reproduce such a run.)
- zoom: row and column factors drawn independently from [1 - zoom, 1 + zoom]; as in Keras they scale
  input coordinates, so a factor below 1 magnifies;
- hflip: a left-right flip with probability 1/2, applied after the warp as Keras does;
- fill_mode="nearest" (Keras' default) extends the image by repeating its edge pixels (scipy.ndimage's
  'nearest' mode); it is not nearest-neighbour interpolation. Here: grid_sample(padding_mode="border").
  Interpolation is bilinear (Keras' order=1).
Keras composes rotation @ shift @ shear @ zoom about the image centre, mapping output (row, col) to input
(row, col); so does `affine_matrix`. The centre is the pixel-grid centre ((H - 1) / 2, (W - 1) / 2), as in
current keras_preprocessing (older releases used H / 2 + 0.5, one pixel off).
"""

from __future__ import annotations

import errno
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from srkit import fs, image_io
from srkit.data.datasets import sample_seed


@dataclass(frozen=True)
class AffineParams:
    """One drawn transform. Keras names: theta, tx (rows), ty (cols), shear, zx (rows), zy (cols), flip."""

    rotation: float = 0.0  # degrees; Keras' matrix turns the picture clockwise on screen for positive angles
    shift_rows: float = 0.0  # pixels
    shift_cols: float = 0.0  # pixels
    shear: float = 0.0  # degrees
    zoom_rows: float = 1.0
    zoom_cols: float = 1.0
    hflip: bool = False


def _check_ranges(*, rotation: float, shift: float, shear: float, zoom: float) -> None:
    """Raise a ValueError naming the first range outside what Keras' semantics allow here."""
    if not rotation >= 0:
        raise ValueError(f"rotation must be >= 0 (degrees, drawn from [-rotation, rotation]), got {rotation}")
    if not 0 <= shift < 1:
        raise ValueError(f"shift must be in [0, 1) (a fraction of the image size), got {shift}")
    if not shear >= 0:
        raise ValueError(f"shear must be >= 0 (degrees, drawn from [-shear, shear]), got {shear}")
    if not 0 <= zoom < 1:
        raise ValueError(f"zoom must be in [0, 1) (factors drawn from [1 - zoom, 1 + zoom]), got {zoom}")


def sample_affine(
    generator: torch.Generator,
    *,
    size: tuple[int, int],
    rotation: float = 90.0,
    shift: float = 0.2,
    shear: float = 0.2,
    zoom: float = 0.2,
    hflip: bool = True,
) -> AffineParams:
    """Draw one transform for an image of size (H, W); always 7 draws, in Keras' order, whatever the ranges."""
    _check_ranges(rotation=rotation, shift=shift, shear=shear, zoom=zoom)
    u = torch.rand(7, generator=generator, dtype=torch.float64).tolist()
    height, width = size
    return AffineParams(
        rotation=(2 * u[0] - 1) * rotation,
        shift_rows=(2 * u[1] - 1) * shift * height,
        shift_cols=(2 * u[2] - 1) * shift * width,
        shear=(2 * u[3] - 1) * shear,
        zoom_rows=1 + (2 * u[4] - 1) * zoom,
        zoom_cols=1 + (2 * u[5] - 1) * zoom,
        hflip=hflip and u[6] < 0.5,
    )


def affine_matrix(params: AffineParams) -> torch.Tensor:
    """The 3x3 float64 matrix mapping output (row, col) to input (row, col), relative to the image centre."""
    theta, shear = math.radians(params.rotation), math.radians(params.shear)
    rotate = torch.tensor(
        [[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1]],
        dtype=torch.float64,
    )
    shift = torch.tensor([[1, 0, params.shift_rows], [0, 1, params.shift_cols], [0, 0, 1]], dtype=torch.float64)
    shear_m = torch.tensor([[1, -math.sin(shear), 0], [0, math.cos(shear), 0], [0, 0, 1]], dtype=torch.float64)
    zoom = torch.diag(torch.tensor([params.zoom_rows, params.zoom_cols, 1.0], dtype=torch.float64))
    return rotate @ shift @ shear_m @ zoom  # Keras' order


def _grid_theta(matrix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Convert a centred (row, col) pixel matrix into affine_grid's (x, y) normalised theta, (2, 3).

    With align_corners=False a normalised coordinate n is the pixel offset from the centre times 2 / size,
    so theta = D^-1 P A P D with P swapping (row, col) <-> (x, y) and D = diag(W / 2, H / 2).
    """
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    scale = torch.diag(torch.tensor([width / 2, height / 2], dtype=torch.float64))
    linear = torch.linalg.inv(scale) @ swap @ matrix[:2, :2] @ swap @ scale
    offset = torch.linalg.inv(scale) @ swap @ matrix[:2, 2]
    return torch.cat([linear, offset[:, None]], dim=1)


def apply_affine(img: torch.Tensor, params: AffineParams) -> torch.Tensor:
    """Warp (C, H, W) or (N, C, H, W) by one transform: bilinear, edge pixels repeated outside, then flip."""
    if img.ndim not in (3, 4) or not img.is_floating_point():
        raise ValueError(f"apply_affine: expected a float (C, H, W) or (N, C, H, W) tensor, got {tuple(img.shape)}")
    matrix = affine_matrix(params)
    out = img
    # The identity is skipped so that a pure flip is exact (grid_sample would round by ~1e-7).
    if not torch.equal(matrix, torch.eye(3, dtype=torch.float64)):
        batch = img if img.ndim == 4 else img[None]
        h, w = batch.shape[-2:]
        theta = _grid_theta(matrix, h, w).to(device=img.device, dtype=img.dtype)
        grid = F.affine_grid(theta.expand(batch.shape[0], 2, 3), list(batch.shape), align_corners=False)
        warped = F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)
        out = warped if img.ndim == 4 else warped[0]
    return out.flip(-1) if params.hflip else out


def random_affine(
    img: torch.Tensor,
    *,
    generator: torch.Generator,
    rotation: float = 90.0,
    shift: float = 0.2,
    shear: float = 0.2,
    zoom: float = 0.2,
    hflip: bool = True,
) -> torch.Tensor:
    """A random Keras-style affine transform of (C, H, W), or of each image of (N, C, H, W) separately."""
    if img.ndim not in (3, 4):
        raise ValueError(f"random_affine: expected (C, H, W) or (N, C, H, W), got {tuple(img.shape)}")
    size = (int(img.shape[-2]), int(img.shape[-1]))

    def draw() -> AffineParams:
        return sample_affine(generator, size=size, rotation=rotation, shift=shift, shear=shear, zoom=zoom, hflip=hflip)

    if img.ndim == 3:
        return apply_affine(img, draw())
    return torch.stack([apply_affine(x, draw()) for x in img])


@dataclass
class AugmentReport:
    """What augment_folder wrote, and the source files it could not read (with the reason)."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def augment_folder(
    src: Path,
    dst: Path,
    *,
    variants: int,
    seed: int,
    overwrite: bool = False,
    rotation: float = 90.0,
    shift: float = 0.2,
    shear: float = 0.2,
    zoom: float = 0.2,
    hflip: bool = True,
) -> AugmentReport:
    """Write `variants` random transforms of every image directly in src as dst/<stem>_aug<k>.png.

    Each file's transforms depend only on (seed, file name), not on what else is in the folder. Bit depth,
    gray-ness and alpha (warped alike) are kept. Unreadable files are skipped and listed in the report;
    existing outputs stop the run before anything is written unless overwrite=True.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise ValueError(f"augment_folder: source {src} is not a folder")
    if isinstance(variants, bool) or not isinstance(variants, int) or variants < 1:
        raise ValueError(f"augment_folder: variants must be an int >= 1, got {variants!r}")
    _check_ranges(rotation=rotation, shift=shift, shear=shear, zoom=zoom)
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise ValueError(f"augment_folder: refusing to write into the source folder: {dst} is (inside) {src}")
    sources = fs.list_images([src], recursive=False)
    outputs: dict[Path, Path] = {}
    for path in sources:
        for k in range(variants):
            out = dst / f"{path.stem}_aug{k}.png"
            if out in outputs:
                raise ValueError(f"augment_folder: {path.name} and {outputs[out].name} would both write {out.name}")
            outputs[out] = path
    existing = [out for out in outputs if out.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            errno.EEXIST,
            f"{len(existing)} output file(s) already exist, first {existing[0].name}; pass overwrite=True to replace",
            str(dst),
        )
    report = AugmentReport()
    for path in sources:
        try:
            loaded = image_io.read_image(path)
        except (OSError, ValueError) as err:  # ImageReadError is a ValueError
            report.failed.append((path, str(err)))
            continue
        # Alpha rides along as a fourth channel so it gets exactly the same warp.
        x = loaded.rgb if loaded.alpha is None else torch.cat([loaded.rgb, loaded.alpha])
        # crc32, not hash(): str hashes change between Python processes.
        g = torch.Generator().manual_seed(sample_seed(seed, zlib.crc32(path.name.encode())))
        for k in range(variants):
            y = random_affine(x, generator=g, rotation=rotation, shift=shift, shear=shear, zoom=zoom, hflip=hflip)
            alpha = y[3:] if loaded.alpha is not None else None
            report.written.append(image_io.save_like(dst / f"{path.stem}_aug{k}.png", y[:3], loaded, alpha=alpha))
    return report
