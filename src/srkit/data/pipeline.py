"""From data.* settings to training and validation pairs: sources, splits, preprocessing and degradation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srkit import fs
from srkit.data.datasets import PairSet, load_pair_folders, load_pairs
from srkit.data.lowres import LowRes, hr_preprocess
from srkit.data.sources import group_key, official_partition, paired_folders, read_file_list, split
from srkit.paths import MissingDataError, data_root


def resolve_folder(name: str, data_dir: str | Path | None) -> Path:
    """A data path given relative to the data root (e.g. train/T91) or as a path of its own."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    candidate = data_root(data_dir) / name
    if not candidate.exists():
        raise MissingDataError(f"data path {name!r} not found: expected {path} or {candidate}")
    return candidate


@dataclass
class Sources:
    """Training inputs (HR files, or HQ/LQ pairs) and validation HR files."""

    train_files: list[Path]
    train_pairs: list[tuple[Path, Path]]
    val_files: list[Path]
    val_name: str


def gather_sources(
    train: Sequence[str],
    val: str,
    *,
    data_dir: str | Path | None,
    split_ratios: Sequence[float] | None = None,
    split_seed: int = 0,
    group_by: str | None = None,
    partition_file: str | None = None,
) -> Sources:
    """Expand data.train / data.val entries into files, applying a split (by identity with `group_by`) or an
    official partition file (CelebA's); val "split" takes the validation part of either."""
    files: list[Path] = []
    pairs: list[tuple[Path, Path]] = []
    for entry in train:
        path = resolve_folder(entry, data_dir)
        if path.suffix == ".txt":
            files += read_file_list(path)
        elif (path / "HQ").is_dir() and (path / "LQ").is_dir():
            pairs += paired_folders(path)
        else:
            files += fs.list_images([path])
    val_files: list[Path] = []
    val_name = Path(val).name
    if partition_file is not None:
        image_dir = resolve_folder(train[0], data_dir)
        parts = official_partition(resolve_folder(partition_file, data_dir), image_dir)
        files, val_files, val_name = parts["train"], parts["val"], "partition-val"
    elif split_ratios is not None:
        parts = split(files, split_ratios, seed=split_seed, key=group_key(group_by))
        files, val_files, val_name = parts["train"], parts["val"], "split-val"
    if val != "split":
        val_files, val_name = fs.list_images([resolve_folder(val, data_dir)]), Path(val).name
    if not files and not pairs:
        raise ValueError(f"no training images found in data.train {list(train)}")
    return Sources(files, pairs, val_files, val_name)


def build_pairs(
    sources: Sources,
    *,
    scale: int,
    seed: int,
    min_size: int,
    degradation: str | Sequence[Any] = "bicubic",
    val_degradation: str | Sequence[Any] = "bicubic",
    face_crop: bool = False,
    face_margin: float = 0.3,
    hr_size: tuple[int, int] | None = None,
    cache_dir: Path | None = None,
) -> tuple[PairSet, PairSet, LowRes]:
    """Training pairs (HR at least `min_size`, the training crop), validation pairs (bicubic LR: the evaluation
    protocol, or `val_degradation`, after the same HR preparation) and the training LowRes."""
    preprocess = hr_preprocess(face_crop=face_crop, face_margin=face_margin, hr_size=hr_size)
    lowres = LowRes.from_spec(degradation, scale=scale)
    # The disk cache's key: a different recipe gets different files. (Spelled as data.* config values, so the
    # caches of runs made before this function took keyword arguments stay valid.)
    recipe = json.dumps(
        {"degradation": degradation, "hr_size": hr_size, "face_crop": face_crop, "m": face_margin}, sort_keys=True
    )
    train = load_pairs(
        sources.train_files,
        lowres=lowres,
        min_size=min_size,
        preprocess=preprocess,
        recipe=recipe,
        seed=seed,
        cache_dir=cache_dir,
    )
    if sources.train_pairs:
        paired = load_pair_folders(sources.train_pairs, scale=scale, min_size=min_size)
        train.gt += paired.gt
        train.lq += paired.lq
        train.names += paired.names
        train.skipped += paired.skipped
    # Validation uses the evaluation protocol's bicubic LR unless the recipe names another fixed pipeline,
    # after the same preprocessing.
    val_lowres = LowRes.from_spec(val_degradation, scale=scale)
    if val_lowres.per_sample:
        raise ValueError(f"data.val_degradation {val_degradation!r} draws random levels; validation needs a fixed LR")
    val = load_pairs(sources.val_files, lowres=val_lowres, preprocess=preprocess)
    return train, val, lowres
