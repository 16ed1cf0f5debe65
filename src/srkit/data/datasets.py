"""Training pairs in memory and random aligned patches drawn from them, seeded per sample index.

Each sample k draws its image, crop and augmentation from a generator seeded by (seed, k): any batch
can be rebuilt from its step number alone, so resuming needs no loader state, workers need no
coordination, and DDP ranks take disjoint index ranges.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from srkit import fs, image_io
from srkit.data.lowres import LowRes, Preprocess
from srkit.ops import modcrop, quantize, to_uint8

Image = torch.Tensor | np.ndarray  # (3, H, W) uint8: in memory, or a read-only memory map of an on-disk cache


@dataclass
class PairSet:
    """HR images and their LR, as uint8 (3, H, W) arrays, plus the files that were skipped and why.

    An LR of None is made per training patch (a LowRes whose levels are drawn per sample).
    """

    gt: list[Image] = field(default_factory=list)
    lq: list[Image | None] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _cache_paths(cache_dir: Path, path: Path, scale: int, recipe: str) -> tuple[Path, Path]:
    """Cache files for one image: keyed by its path, size, mtime and the LR recipe, so edits invalidate them."""
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|x{scale}|{recipe}".encode()).hexdigest()
    return cache_dir / f"{key}.gt.npy", cache_dir / f"{key}.lq.npy"


def _save_npy(path: Path, arr: torch.Tensor) -> None:
    buf = io.BytesIO()
    np.save(buf, arr.numpy())
    fs.atomic_write(path, buf.getvalue())


def load_pairs(
    folders: list[Path],
    *,
    lowres: LowRes,
    min_size: int = 0,
    preprocess: Preprocess | None = None,
    recipe: str = "bicubic",
    seed: int = 0,
    cache_dir: Path | None = None,
) -> PairSet:
    """Decode every HR image once and make its LR with `lowres`; skip unreadable or too-small files with why.

    A fixed degradation runs here, on the whole image, seeded per image (so it is reproducible); one that
    draws levels per sample (`lowres.per_sample`) is left to PatchDataset, and its LR here is None.
    `preprocess` runs on the HR first (face crop, resize to a fixed size). With `cache_dir`, decoded pairs
    are stored as .npy files and memory-mapped: a second run skips decoding, and sets larger than memory
    stay on disk (`recipe` names the LR recipe so a different one gets different cache files).
    """
    pairs = PairSet()
    scale = lowres.scale
    for index, path in enumerate(fs.list_images(folders)):
        try:
            cached = _cache_paths(cache_dir, path, scale, recipe) if cache_dir is not None else None
            gt_arr, lq_arr = _load_cached(cached, with_lq=not lowres.per_sample)
            if gt_arr is None:
                rgb = quantize(image_io.read_rgb(path).to(torch.float64))
                if preprocess is not None:
                    rgb = quantize(preprocess(rgb).clamp(0, 1))
                h, w = rgb.shape[-2:]
                if min(h, w) < max(min_size, scale):
                    raise ValueError(f"{w}x{h} is smaller than the {min_size}px crop")
                gt = modcrop(rgb, scale)
                gt_arr = to_uint8(gt)
                if not lowres.per_sample:
                    lq_arr = to_uint8(lowres.make(gt, torch.Generator().manual_seed(sample_seed(seed, index))))
                if cached is not None:
                    gt_arr, lq_arr = _store_cached(cached, gt_arr, lq_arr)
            h, w = gt_arr.shape[-2:]
            if min(h, w) < max(min_size, scale):
                raise ValueError(f"{w}x{h} is smaller than the {min_size}px crop")
            if lq_arr is not None and tuple(lq_arr.shape[-2:]) != (h // scale, w // scale):
                raise ValueError(f"LR {tuple(lq_arr.shape[-2:])} is not HR {(h, w)} / {scale}")
        except (OSError, ValueError) as err:
            pairs.skipped.append((path, str(err)))
            continue
        pairs.gt.append(gt_arr)
        pairs.lq.append(lq_arr)
        pairs.names.append(path.name)
    return pairs


def _load_cached(cached: tuple[Path, Path] | None, *, with_lq: bool) -> tuple[Image | None, Image | None]:
    """(gt, lq) memory maps from a complete cache entry, else (None, None)."""
    if cached is None or not cached[0].exists() or (with_lq and not cached[1].exists()):
        return None, None
    lq = np.load(cached[1], mmap_mode="r") if with_lq else None
    return np.load(cached[0], mmap_mode="r"), lq


def _store_cached(cached: tuple[Path, Path], gt: torch.Tensor, lq: Image | None) -> tuple[Image, Image | None]:
    """Write a cache entry (the LR only when there is one) and hand back its memory maps."""
    _save_npy(cached[0], gt)
    if isinstance(lq, torch.Tensor):
        _save_npy(cached[1], lq)
    return np.load(cached[0], mmap_mode="r"), (np.load(cached[1], mmap_mode="r") if lq is not None else None)


def load_pair_folders(pairs: list[tuple[Path, Path]], *, scale: int, min_size: int = 0) -> PairSet:
    """Pairs from HQ/LQ files as they are (no degradation here); LQ must be HQ / scale after modcrop."""
    out = PairSet()
    for hq_path, lq_path in pairs:
        try:
            gt = modcrop(quantize(image_io.read_rgb(hq_path).to(torch.float64)), scale)
            lq = quantize(image_io.read_rgb(lq_path).to(torch.float64))
            h, w = gt.shape[-2:]
            if tuple(lq.shape[-2:]) != (h // scale, w // scale):
                raise ValueError(
                    f"LQ {lq_path.name} is {tuple(lq.shape[-2:])}, expected HQ/{scale} = {(h // scale, w // scale)}"
                )
            if min(h, w) < max(min_size, scale):
                raise ValueError(f"{w}x{h} is smaller than the {min_size}px crop")
        except (OSError, ValueError) as err:
            out.skipped.append((hq_path, str(err)))
            continue
        out.gt.append(to_uint8(gt))
        out.lq.append(to_uint8(lq))
        out.names.append(hq_path.name)
    return out


def as_tensor(img: Image) -> torch.Tensor:
    """A cached image as a uint8 tensor (copies a memory map into memory)."""
    return img if isinstance(img, torch.Tensor) else torch.from_numpy(np.array(img))


def _crop(img: Image, top: int, left: int, size: int) -> torch.Tensor:
    """A (3, size, size) uint8 tensor; from a memory map only the crop's rows are read."""
    part = img[:, top : top + size, left : left + size]
    return part if isinstance(part, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(part))


def sample_seed(seed: int, index: int) -> int:
    """A 63-bit seed for sample `index` of a run seeded with `seed` (splitmix-style mixing)."""
    x = (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) % (1 << 64)
    x ^= x >> 31
    return x % (1 << 63)


class PatchDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Aligned (lq, gt) patches in [0, 1]: random image, random crop, random flips and 90-degree turns."""

    def __init__(
        self,
        pairs: PairSet,
        *,
        scale: int,
        gt_size: int,
        seed: int,
        flip: bool = True,
        rot90: bool = True,
        lowres: LowRes | None = None,
    ) -> None:
        if not pairs.gt:
            raise ValueError("no usable training images (every file was unreadable or too small)")
        if gt_size % scale:
            raise ValueError(f"gt_size {gt_size} must be a multiple of the scale {scale}")
        self.pairs, self.scale, self.gt_size, self.seed = pairs, scale, gt_size, seed
        self.flip, self.rot90 = flip, rot90
        # Images whose LR is None get it here, per patch, from `lowres` (random levels: fresh every time).
        self.lowres = lowres
        if lowres is None and any(lq is None for lq in pairs.lq):
            raise ValueError("pairs without an LR need the LowRes that makes it per patch (lowres=...)")

    def __len__(self) -> int:
        return 1 << 62  # indices are drawn, not enumerated: the sampler says which ones a run uses

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(sample_seed(self.seed, index))
        i = int(torch.randint(len(self.pairs.gt), (1,), generator=g))
        gt_full, lq_full = self.pairs.gt[i], self.pairs.lq[i]
        s, lq_size = self.scale, self.gt_size // self.scale
        h, w = gt_full.shape[-2] // s, gt_full.shape[-1] // s  # the LR's size
        top = int(torch.randint(h - lq_size + 1, (1,), generator=g))
        left = int(torch.randint(w - lq_size + 1, (1,), generator=g))
        gt = _crop(gt_full, top * s, left * s, lq_size * s)
        lq = _crop(lq_full, top, left, lq_size) if lq_full is not None else None
        flips = torch.randint(2, (3,), generator=g).tolist()
        if self.flip and flips[0]:
            gt = gt.flip(-1)
            lq = lq.flip(-1) if lq is not None else None
        if self.flip and flips[1]:
            gt = gt.flip(-2)
            lq = lq.flip(-2) if lq is not None else None
        if self.rot90 and flips[2]:
            gt = gt.transpose(-1, -2)
            lq = lq.transpose(-1, -2) if lq is not None else None
        if lq is None:
            assert self.lowres is not None  # checked in __init__
            return self.lowres.make(gt.to(torch.float64).div(255), g).float(), gt.float().div(255)
        return lq.float().div(255), gt.float().div(255)


class IndexRange(torch.utils.data.Sampler[int]):
    """The sample indices of steps [start, stop) for one rank: step s, rank r -> ((s * world + r) * bs + j)."""

    def __init__(self, start: int, stop: int, *, batch_size: int, rank: int = 0, world: int = 1) -> None:
        self.start, self.stop, self.bs, self.rank, self.world = start, stop, batch_size, rank, world

    def __iter__(self):  # type: ignore[no-untyped-def]
        for step in range(self.start, self.stop):
            base = (step * self.world + self.rank) * self.bs
            yield from range(base, base + self.bs)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.bs
