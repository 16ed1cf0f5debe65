"""From a DataConfig to training and validation pairs: sources, splits, preprocessing and degradation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from srkit import fs
from srkit.config import DataConfig
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


def gather_sources(cfg: DataConfig, data_dir: str | Path | None) -> Sources:
    """Expand the config's train/val entries into files, applying a split or an official partition."""
    files: list[Path] = []
    pairs: list[tuple[Path, Path]] = []
    for entry in cfg.train:
        path = resolve_folder(entry, data_dir)
        if path.suffix == ".txt":
            files += read_file_list(path)
        elif (path / "HQ").is_dir() and (path / "LQ").is_dir():
            pairs += paired_folders(path)
        else:
            files += fs.list_images([path])
    val_files: list[Path] = []
    val_name = Path(cfg.val).name
    if cfg.partition_file is not None:
        image_dir = resolve_folder(cfg.train[0], data_dir)
        parts = official_partition(resolve_folder(cfg.partition_file, data_dir), image_dir)
        files, val_files, val_name = parts["train"], parts["val"], "partition-val"
    elif cfg.split is not None:
        parts = split(files, cfg.split, seed=cfg.split_seed, key=group_key(cfg.group_by))
        files, val_files, val_name = parts["train"], parts["val"], "split-val"
    if cfg.val != "split":
        val_files, val_name = fs.list_images([resolve_folder(cfg.val, data_dir)]), Path(cfg.val).name
    if not files and not pairs:
        raise ValueError(f"no training images found in data.train {cfg.train}")
    return Sources(files, pairs, val_files, val_name)


def build_pairs(
    cfg: DataConfig, sources: Sources, *, scale: int, seed: int, cache_dir: Path | None
) -> tuple[PairSet, PairSet, LowRes]:
    """Training pairs, validation pairs (bicubic LR: the evaluation protocol) and the training LowRes."""
    preprocess = hr_preprocess(face_crop=cfg.face_crop, face_margin=cfg.face_margin, hr_size=cfg.hr_size)
    lowres = LowRes.from_spec(cfg.degradation, scale=scale)
    recipe = json.dumps(
        {"degradation": cfg.degradation, "hr_size": cfg.hr_size, "face_crop": cfg.face_crop, "m": cfg.face_margin},
        sort_keys=True,
    )
    train = load_pairs(
        sources.train_files,
        lowres=lowres,
        min_size=cfg.gt_size,
        preprocess=preprocess,
        recipe=recipe,
        seed=seed,
        cache_dir=cache_dir,
    )
    if sources.train_pairs:
        paired = load_pair_folders(sources.train_pairs, scale=scale, min_size=cfg.gt_size)
        train.gt += paired.gt
        train.lq += paired.lq
        train.names += paired.names
        train.skipped += paired.skipped
    # Validation always uses the standard bicubic LR (the evaluation protocol), after the same preprocessing.
    val = load_pairs(sources.val_files, lowres=LowRes(scale), preprocess=preprocess)
    return train, val, lowres
