"""From a DataConfig to training and validation pairs: sources, splits, preprocessing and degradation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from srkit import io
from srkit.config import DataConfig
from srkit.data.datasets import Degrade, PairSet, Preprocess, load_paired, load_pairs
from srkit.data.degradations import DegradationStep, apply_pipeline, resize_to, resolve_pipeline
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


def is_random(steps: Sequence[DegradationStep]) -> bool:
    """Whether a pipeline draws anything (noise, or a [lo, hi] range) and so differs per sample."""
    return any(s.name == "noise" or any(isinstance(v, tuple) for v in s.params.values()) for s in steps)


def preprocess_for(cfg: DataConfig) -> Preprocess | None:
    """HR preprocessing the config asks for: a face crop, then a resize to a fixed size."""
    if not cfg.face_crop and cfg.hr_size is None:
        return None

    def run(img: torch.Tensor) -> torch.Tensor:
        if cfg.face_crop:
            from srkit.data.faces import face_crop

            img = face_crop(img, margin=cfg.face_margin).image
        if cfg.hr_size is not None:
            img = resize_to(img, size=cfg.hr_size)
        return img

    return run


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
            files += io.list_images([path])
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
        val_files, val_name = io.list_images([resolve_folder(cfg.val, data_dir)]), Path(cfg.val).name
    if not files and not pairs:
        raise ValueError(f"no training images found in data.train {cfg.train}")
    return Sources(files, pairs, val_files, val_name)


def build_pairs(
    cfg: DataConfig, sources: Sources, *, scale: int, seed: int, cache_dir: Path | None
) -> tuple[PairSet, PairSet, list[DegradationStep] | None]:
    """Training pairs, validation pairs and the per-sample degradation steps (None: LR made at load)."""
    preprocess = preprocess_for(cfg)
    steps = resolve_pipeline(cfg.degradation)
    random_steps = steps if is_random(steps) else None
    degrade: Degrade | None = None
    if cfg.degradation != "bicubic" and random_steps is None:

        def degrade(gt: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            return apply_pipeline(gt, steps, scale=scale, generator=generator)

    recipe = json.dumps(
        {"degradation": cfg.degradation, "hr_size": cfg.hr_size, "face_crop": cfg.face_crop, "m": cfg.face_margin},
        sort_keys=True,
    )
    train = load_pairs(
        sources.train_files,
        scale=scale,
        min_size=cfg.gt_size,
        degrade=degrade,
        preprocess=preprocess,
        recipe=recipe,
        seed=seed,
        cache_dir=cache_dir,
    )
    if sources.train_pairs:
        paired = load_paired(sources.train_pairs, scale=scale, min_size=cfg.gt_size)
        train.gt += paired.gt
        train.lq += paired.lq
        train.names += paired.names
        train.skipped += paired.skipped
    # Validation always uses the standard bicubic LR (the evaluation protocol), after the same preprocessing.
    val = load_pairs(sources.val_files, scale=scale, preprocess=preprocess)
    return train, val, random_steps
