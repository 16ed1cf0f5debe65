"""`srkit data list | download | prepare | augment`: getting and preparing datasets."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from srkit.cli.common import (
    degradation_spec,
    positive_int,
    progress_bar,
    refuse_out_inside,
    report_skipped,
    scale_arg,
)


def cmd_data_list(args: argparse.Namespace) -> int:
    """srkit data list: the datasets `srkit data download` knows."""
    from srkit.data.catalog import describe

    for name, description in describe():
        print(f"{name:20s} {description}")
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    """srkit data download NAME --to DIR: fetch, verify (checksums), extract; resumable."""
    from srkit.data.download import download_dataset
    from srkit.paths import data_root

    to = Path(args.to) if args.to else data_root(args.data_dir) / "downloads"
    folder = download_dataset(
        args.name, to, keep_archives=args.keep_archives, progress=not args.no_progress, mirror=args.mirror
    )
    print(f"{args.name}: ready in {folder}")
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    """srkit data prepare INPUT... -o OUT: HQ/LQ pair folders (optionally split train/val/test)."""
    from srkit import fs
    from srkit.data.lowres import LowRes, hr_preprocess
    from srkit.data.prepare import prepare_pairs
    from srkit.data.sources import group_key, split

    lowres = LowRes.from_spec(degradation_spec(args.degradation), scale=args.scale)
    hr_size = tuple(args.hr_size) if args.hr_size else None
    preprocess = hr_preprocess(face_crop=args.face_crop, face_margin=args.face_margin, hr_size=hr_size)
    images = fs.list_images(args.inputs)
    if not images:
        raise ValueError(f"nothing to prepare: no image files in {', '.join(args.inputs)}")
    if not str(args.output).strip():
        raise ValueError("-o/--output is empty: name the folder the pairs go to")
    out = Path(args.output)
    refuse_out_inside(out, [Path(p) for p in args.inputs if Path(p).is_dir()], "input folder")
    if args.split:
        try:
            ratios = [float(r) for r in args.split.split(",")]
        except ValueError:
            raise ValueError(f"--split {args.split!r}: expected three ratios such as 0.8,0.15,0.05") from None
        parts = split(images, ratios, seed=args.seed, key=group_key(args.group_by))
    else:
        parts = {"": images}
    skipped: list[tuple[Path, str]] = []
    for part, files in parts.items():
        with progress_bar(f"prepare {part or out.name}") as progress:
            task = progress.add_task("prepare", total=len(files))
            report = prepare_pairs(
                files,
                out / part if part else out,
                lowres=lowres,
                preprocess=preprocess,
                seed=args.seed,
                overwrite=args.overwrite,
                on_file=lambda _p, t=task: progress.advance(t),  # type: ignore[misc]
            )
        print(f"{out / part if part else out}: {len(report.written)} pair(s) (HQ/, LQ/, pairs.csv)")
        skipped += report.skipped
    return report_skipped("unreadable or too small", skipped)


def cmd_data_augment(args: argparse.Namespace) -> int:
    """srkit data augment SRC DST: N random affine variants per image (Keras-style offline augmentation)."""
    from srkit.data.augment import augment_folder

    if (args.dst is None) == (args.out is None):
        raise ValueError("give the output folder once: as DST or as -o/--out")
    args.dst = args.dst or args.out
    report = augment_folder(
        Path(args.src),
        Path(args.dst),
        variants=args.variants,
        seed=args.seed,
        overwrite=args.overwrite,
        rotation=args.rotation,
        shift=args.shift,
        shear=args.shear,
        zoom=args.zoom,
        hflip=not args.no_hflip,
    )
    print(f"wrote {len(report.written)} image(s) to {args.dst}")
    return report_skipped("unreadable", report.failed)


def register(sub: Any) -> None:
    """The data command parsers."""
    data = sub.add_parser("data", help="datasets: list, download, prepare pairs, augment")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    p = data_sub.add_parser("list", help="datasets `srkit data download` knows")
    p.set_defaults(func=cmd_data_list)
    p = data_sub.add_parser("download", help="download, verify and extract a dataset (resumable)")
    p.add_argument("name", help="a name from `srkit data list` (div2k, flickr2k, celeba, set5, benchmarks, ...)")
    p.add_argument("--to", default=None, help="target folder (default: <data folder>/downloads)")
    p.add_argument("--keep-archives", action="store_true", help="keep the downloaded archives")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--mirror", default=None, help="fetch files from MIRROR/<file name> (also $SRKIT_DOWNLOAD_MIRROR)")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_data_download)
    p = data_sub.add_parser("prepare", help="write HQ/00000.png + LQ/00000.png pairs with a degradation")
    p.add_argument("inputs", nargs="+", help="HR image files and/or folders")
    p.add_argument("-o", "--output", "--out", required=True, help="output folder (gets HQ/, LQ/, pairs.csv)")
    p.add_argument("--scale", type=scale_arg, default=4)
    p.add_argument(
        "--degradation",
        default="bicubic",
        help="preset (bicubic, blur_bicubic, realistic) or a step list, e.g. '[{blur: {sigma: 1.5}}, bicubic]'",
    )
    p.add_argument("--hr-size", type=positive_int, nargs=2, metavar=("H", "W"), help="resize HR first (e.g. 256 256)")
    p.add_argument("--face-crop", action="store_true", help="crop HR around the detected face first")
    p.add_argument("--face-margin", type=float, default=0.3)
    p.add_argument("--split", default=None, help="ratios, e.g. 0.8,0.15,0.05 -> OUT/train, OUT/val, OUT/test")
    p.add_argument(
        "--group-by",
        default=None,
        help="keep each identity in one split part: lfw (<Name>_<NNNN> names), folder, or a regex on the stem",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_data_prepare)
    p = data_sub.add_parser("augment", help="offline augmentation: N random affine variants per image")
    p.add_argument("src", help="folder of images")
    p.add_argument("dst", nargs="?", default=None, help="output folder (not inside src); or -o/--out")
    p.add_argument("-o", "--out", "--output", dest="out", default=None, help="output folder (same as DST)")
    p.add_argument("--variants", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rotation", type=float, default=90.0, help="max rotation, degrees")
    p.add_argument("--shift", type=float, default=0.2, help="max shift, fraction of the size")
    p.add_argument("--shear", type=float, default=0.2, help="max shear, degrees (Keras semantics)")
    p.add_argument("--zoom", type=float, default=0.2, help="zoom range [1 - z, 1 + z]")
    p.add_argument("--no-hflip", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_data_augment)
