"""Where training images come from: folders, paired HQ/LQ folders, file lists, and reproducible splits."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import torch

from srkit import fs

T = TypeVar("T")
SPLIT_NAMES = ("train", "val", "test")


def read_file_list(path: str | Path) -> list[Path]:
    """A text file with one image path per line (relative paths are relative to the list's folder; # comments)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file list not found: {path}")
    out: list[Path] = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        item = Path(entry)
        item = item if item.is_absolute() else path.parent / item
        if not item.is_file():
            raise FileNotFoundError(f"{path}:{n}: listed image not found: {item}")
        out.append(item)
    return out


def paired_folders(root: str | Path) -> list[tuple[Path, Path]]:
    """(HQ, LQ) pairs from the `root/HQ` + `root/LQ` layout, matched by file stem.

    A stem present on one side only is an error naming it: silently dropping half a pair would shrink
    the dataset without anyone noticing.
    """
    root = Path(root)
    hq_dir, lq_dir = root / "HQ", root / "LQ"
    for d in (hq_dir, lq_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"paired dataset {root}: expected folders HQ/ and LQ/, missing {d}")
    hq = {p.relative_to(hq_dir).with_suffix(""): p for p in fs.list_images([hq_dir])}
    lq = {p.relative_to(lq_dir).with_suffix(""): p for p in fs.list_images([lq_dir])}
    only_hq, only_lq = sorted(set(hq) - set(lq)), sorted(set(lq) - set(hq))
    if only_hq or only_lq:
        raise ValueError(
            f"paired dataset {root}: unmatched names (HQ only: {[str(s) for s in only_hq[:5]]}, "
            f"LQ only: {[str(s) for s in only_lq[:5]]}); every HQ/x needs an LQ/x"
        )
    return [(hq[k], lq[k]) for k in sorted(hq)]


GROUP_PRESETS = {
    # LFW names each file <Person_Name>_<NNNN>.jpg: the person is everything before the last number.
    "lfw": r"^(.+)_\d+$",
    # one folder per person (or per scene): the parent folder's name is the group.
    "folder": "folder",
}


def group_key(group_by: str | None) -> Callable[[Path], str] | None:
    """The identity of a file for a split that keeps each identity in one part, or None (every file alone).

    `group_by` is a preset (lfw, folder) or a regular expression searched in the file stem: its first
    group (or the whole match) is the identity. A file the pattern does not match is an error naming it,
    since silently putting it alone could leak an identity across parts.
    """
    if group_by is None:
        return None
    pattern = GROUP_PRESETS.get(group_by, group_by)
    if pattern == "folder":
        return lambda path: str(Path(path).parent)
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise ValueError(
            f"group_by {group_by!r} is not a preset ({', '.join(GROUP_PRESETS)}) or a valid regular expression: {err}"
        ) from None

    def key(path: Path) -> str:
        match = regex.search(Path(path).stem)
        if match is None:
            raise ValueError(f"group_by {group_by!r}: file name {Path(path).name!r} does not match {pattern!r}")
        return match.group(1) if regex.groups else match.group(0)

    return key


def split(
    items: Sequence[T],
    ratios: Sequence[float] = (0.8, 0.15, 0.05),
    *,
    seed: int = 0,
    key: Callable[[T], str] | None = None,
) -> dict[str, list[T]]:
    """Shuffle with a seeded generator and cut into train/val/test by ratio (the face report's 80/15/5).

    The same items, ratios and seed always give the same split; part sizes are floor(ratio * n) images
    with the remainder going to train, so no item is lost. With `key` (an identity per item, e.g. the
    person in a face photo) whole groups are shuffled and each group lands in the part where its first
    image falls, so no identity is in two parts; sizes then follow the ratios to within one group.
    With one item per group this is exactly the ungrouped split.
    """
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(f"split ratios must be three non-negative numbers summing to 1, got {list(ratios)}")
    groups: dict[str, list[T]] = {}
    for n, item in enumerate(items):
        groups.setdefault(key(item) if key else str(n), []).append(item)
    members = list(groups.values())
    order = torch.randperm(len(members), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val, n_test = int(ratios[1] * len(items)), int(ratios[2] * len(items))
    n_train = len(items) - n_val - n_test
    out: dict[str, list[T]] = {name: [] for name in SPLIT_NAMES}
    seen = 0
    for i in order:
        part = "train" if seen < n_train else "val" if seen < n_train + n_val else "test"
        out[part] += members[i]
        seen += len(members[i])
    return out


def official_partition(partition_file: str | Path, image_dir: str | Path) -> dict[str, list[Path]]:
    """CelebA's list_eval_partition.txt ("000001.jpg 0"; 0 train, 1 val, 2 test) -> paths per split."""
    partition_file, image_dir = Path(partition_file), Path(image_dir)
    if not partition_file.is_file():
        raise FileNotFoundError(f"partition file not found: {partition_file}")
    out: dict[str, list[Path]] = {name: [] for name in SPLIT_NAMES}
    for n, line in enumerate(partition_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise ValueError(f"{partition_file}:{n}: expected '<image name> <0|1|2>', got {line!r}")
        out[SPLIT_NAMES[int(parts[1])]].append(image_dir / parts[0])
    return out
