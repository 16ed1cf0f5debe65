"""`srkit upscale` over files and folders: outputs mirror the input tree, bad files are reported and skipped,
earlier outputs are never read back as inputs, and faces optionally go through the face model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from srkit import fs, image_io
from srkit.descriptor import Upscaler, describe
from srkit.face_upscale import upscale_with_faces
from srkit.inference import (
    TileOptions,
    check_output_size,
    max_output_pixels,
    upscale_alpha,
    upscale_image,
    upscale_tiled,
)
from srkit.shard import Shard


@dataclass
class BatchReport:
    """What a batch upscale did: files written, and files that failed with the reason."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped_outputs: list[Path] = field(default_factory=list)  # earlier results found among the inputs
    faces: dict[Path, list[tuple[str, str]]] = field(default_factory=dict)  # per file: (model used, why) per face


def merge_reports(reports: Sequence[BatchReport]) -> BatchReport:
    """One report from the ranks' reports of a sharded batch (earlier outputs are the same list on every rank)."""
    merged = BatchReport(skipped_outputs=list(reports[0].skipped_outputs) if reports else [])
    for report in reports:
        merged.written += report.written
        merged.failed += report.failed
        merged.faces.update(report.faces)
    return merged


class NothingToDoError(ValueError):
    """The inputs hold no image to work on (an empty folder, only earlier outputs)."""


def output_path(src: Path, *, roots: Sequence[Path], out_dir: Path, suffix: str, ext: str | None) -> Path:
    """Where the result of `src` goes: its path relative to the input folder it came from, under out_dir."""
    rel = Path(src.name)
    for root in roots:
        if root.is_dir() and src.is_relative_to(root):
            rel = src.relative_to(root)
            break
    new_ext = ext if ext is not None else src.suffix
    if not new_ext.startswith("."):
        new_ext = "." + new_ext
    return out_dir / rel.with_name(f"{rel.stem}{suffix}{new_ext}")


def _same_size_groups(
    items: list[tuple[Path, Path, image_io.LoadedImage]],
) -> list[list[tuple[Path, Path, image_io.LoadedImage]]]:
    """Images grouped by (width, height), so each group stacks into one (N, 3, H, W) batch."""
    groups: dict[tuple[int, int], list[tuple[Path, Path, image_io.LoadedImage]]] = {}
    for item in items:
        groups.setdefault(item[2].size, []).append(item)
    return list(groups.values())


def upscale_files(
    model: Upscaler,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    device: torch.device,
    suffix: str = "",
    ext: str | None = None,
    overwrite: bool = False,
    options: TileOptions | None = None,
    batch_size: int = 1,
    max_pixels: int | None = None,
    face_model: Upscaler | None = None,
    on_file: Callable[[Path], None] | None = None,
    shard: Shard | None = None,
) -> BatchReport:
    """Upscale files and folders into out_dir; a bad file is recorded and the batch goes on.

    `shard` (srkit.shard, under torchrun): only this rank's share of the files; merge the ranks' reports with
    merge_reports.

    batch_size > 1 reads that many files at a time and runs same-size images that need no tiling as one batch
    (many small images); larger images are tiled one by one as usual. An input whose output would pass
    `max_pixels` (default: max_output_pixels) is refused from its header, before it is decoded. With
    `face_model`, faces are upscaled by it and blended in (srkit.face_upscale); report.faces says per file.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    opts = options or TileOptions()
    roots = [Path(p) for p in inputs]
    out_root = Path(out_dir)
    files = fs.list_images(roots)
    # Earlier results written next to the inputs (-o IN --suffix _x4) are outputs of this run's inputs: never
    # upscale them again (a second run would otherwise make a_x4_x4.png).
    made_from = {output_path(p, roots=roots, out_dir=out_root, suffix=suffix, ext=ext).resolve(): p for p in files}
    earlier = [p for p in files if made_from.get(p.resolve(), p) != p]
    files = [p for p in files if p not in earlier]
    if not files:
        what = f" (only earlier outputs: {', '.join(p.name for p in earlier[:3])})" if earlier else ""
        raise NothingToDoError(f"no images to upscale in {', '.join(map(str, roots))}{what}")
    input_set = {p.resolve() for p in files}  # every input, also other ranks': none may be overwritten
    files = (shard or Shard()).take(files)
    report = BatchReport(skipped_outputs=earlier)
    scale = describe(model).scale
    limit = max_output_pixels(tiled=opts.tile is not None, explicit=max_pixels)

    def fits_whole(image: image_io.LoadedImage) -> bool:
        return opts.tile is None or max(image.size) <= opts.tile

    for k in range(0, len(files), batch_size):
        ready: list[tuple[Path, Path, image_io.LoadedImage]] = []
        for src in files[k : k + batch_size]:
            dst = output_path(src, roots=roots, out_dir=out_root, suffix=suffix, ext=ext)
            try:
                if dst.resolve() in input_set:
                    raise ValueError(f"output {dst} would overwrite an input; choose another -o folder or --suffix")
                fs.check_name_length(dst)
                if dst.suffix.lower() not in fs.IMAGE_SUFFIXES:
                    raise ValueError(f"cannot write {dst.suffix} output; choose a format with --ext (png, jpg, ...)")
                if dst.exists() and not overwrite:
                    raise FileExistsError(f"output {dst} exists; pass --overwrite to replace it")
                # From the header alone: a tiny file can declare a huge image (a 79 KB PNG of 9000 x 9000).
                width, height = image_io.image_size(src, name=src)
                check_output_size(width, height, scale, limit=limit)
                image = image_io.read_image(src)
                if face_model is not None:
                    blended = upscale_with_faces(model, face_model, image, device=device, options=opts)
                    _write(dst, blended.image)
                    report.faces[src] = [(r.used, r.reason) for r in blended.regions]
                    report.written.append(dst)
                    if on_file is not None:
                        on_file(src)
                    continue
                if batch_size > 1 and fits_whole(image):
                    ready.append((src, dst, image))
                    continue
                _write(dst, upscale_image(model, image, device=device, options=opts))
                report.written.append(dst)
            except (OSError, ValueError, RuntimeError) as err:
                # One bad file must not sink the batch: record it, report at the end, exit non-zero.
                report.failed.append((src, str(err)))
            if on_file is not None:
                on_file(src)
        for group in _same_size_groups(ready):
            _upscale_group(model, group, device=device, options=opts, report=report, on_file=on_file)
    return report


def _upscale_group(
    model: Upscaler,
    group: list[tuple[Path, Path, image_io.LoadedImage]],
    *,
    device: torch.device,
    options: TileOptions,
    report: BatchReport,
    on_file: Callable[[Path], None] | None,
) -> None:
    """Run same-size images as one (N, 3, H, W) batch, then write each with its own alpha, depth and gray-ness."""
    try:
        # (N, 3, H, W) -> (N, 3, sH, sW)
        srs = upscale_tiled(
            model,
            torch.stack([image.rgb for _, _, image in group]),
            tile=None,
            device=device,
            dtype=options.dtype,
            batch_tiles=len(group),  # the caller's batch_size: small images, one forward pass
            channels_last=options.channels_last,
        )
    except (ValueError, RuntimeError) as err:
        for src, _, _ in group:
            report.failed.append((src, str(err)))
            if on_file is not None:
                on_file(src)
        return
    scale = describe(model).scale
    for (src, dst, image), sr in zip(group, srs, strict=True):
        try:
            _write(
                dst,
                image_io.LoadedImage(sr, upscale_alpha(image.alpha, scale), image.bit_depth, image.grayscale, None),
            )
            report.written.append(dst)
        except (OSError, ValueError, RuntimeError) as err:
            report.failed.append((src, str(err)))
        if on_file is not None:
            on_file(src)


def _write(dst: Path, result: image_io.LoadedImage) -> None:
    image_io.write_image(dst, result.rgb, alpha=result.alpha, bit_depth=result.bit_depth, grayscale=result.grayscale)
