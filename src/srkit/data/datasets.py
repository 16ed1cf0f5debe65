"""Training pairs in memory and random aligned patches drawn from them, seeded per sample index.

Each sample k draws its image, crop and augmentation from a generator seeded by (seed, k): any batch
can be rebuilt from its step number alone, so resuming needs no loader state, workers need no
coordination, and DDP ranks take disjoint index ranges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from srkit import io
from srkit.data.degradations import bicubic_degrade, modcrop
from srkit.metrics import quantize


@dataclass
class PairSet:
    """HR images and their bicubic LR, as uint8 tensors, plus the files that were skipped and why."""

    gt: list[torch.Tensor] = field(default_factory=list)  # (3, H, W) uint8
    lq: list[torch.Tensor] = field(default_factory=list)  # (3, H/s, W/s) uint8
    names: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def load_pairs(folders: list[Path], *, scale: int, min_size: int = 0) -> PairSet:
    """Decode every HR image once, make its LR with MATLAB bicubic; skip unreadable or too-small files."""
    pairs = PairSet()
    for path in io.list_images(folders):
        try:
            rgb = io.read_rgb(path)
        except (OSError, ValueError) as err:
            pairs.skipped.append((path, str(err)))
            continue
        h, w = rgb.shape[-2:]
        if min(h, w) < max(min_size, scale):
            pairs.skipped.append((path, f"{w}x{h} is smaller than the {min_size}px crop"))
            continue
        gt = modcrop(quantize(rgb.to(torch.float64)), scale)
        lq = bicubic_degrade(gt, scale)
        pairs.gt.append((gt * 255).round().to(torch.uint8))
        pairs.lq.append((lq * 255).round().to(torch.uint8))
        pairs.names.append(path.name)
    return pairs


def sample_seed(seed: int, index: int) -> int:
    """A 63-bit seed for sample `index` of a run seeded with `seed` (splitmix-style mixing)."""
    x = (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) % (1 << 64)
    x ^= x >> 31
    return x % (1 << 63)


class PatchDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Aligned (lq, gt) patches in [0, 1]: random image, random crop, random flips and 90-degree turns."""

    def __init__(
        self, pairs: PairSet, *, scale: int, gt_size: int, seed: int, flip: bool = True, rot90: bool = True
    ) -> None:
        if not pairs.gt:
            raise ValueError("no usable training images (every file was unreadable or too small)")
        if gt_size % scale:
            raise ValueError(f"gt_size {gt_size} must be a multiple of the scale {scale}")
        self.pairs, self.scale, self.gt_size, self.seed = pairs, scale, gt_size, seed
        self.flip, self.rot90 = flip, rot90

    def __len__(self) -> int:
        return 1 << 62  # indices are drawn, not enumerated: the sampler says which ones a run uses

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(sample_seed(self.seed, index))
        i = int(torch.randint(len(self.pairs.gt), (1,), generator=g))
        gt_full, lq_full = self.pairs.gt[i], self.pairs.lq[i]
        lq_size = self.gt_size // self.scale
        h, w = lq_full.shape[-2:]
        top = int(torch.randint(h - lq_size + 1, (1,), generator=g))
        left = int(torch.randint(w - lq_size + 1, (1,), generator=g))
        s = self.scale
        lq = lq_full[:, top : top + lq_size, left : left + lq_size]
        gt = gt_full[:, top * s : (top + lq_size) * s, left * s : (left + lq_size) * s]
        flips = torch.randint(2, (3,), generator=g).tolist()
        if self.flip and flips[0]:
            lq, gt = lq.flip(-1), gt.flip(-1)
        if self.flip and flips[1]:
            lq, gt = lq.flip(-2), gt.flip(-2)
        if self.rot90 and flips[2]:
            lq, gt = lq.transpose(-1, -2), gt.transpose(-1, -2)
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
