"""The `srkit` command: parse arguments, then call one library function per command."""

from __future__ import annotations

import argparse
import errno
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from srkit import __version__


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    # Piped output (logs, CI) has no terminal width: rich would assume 80 columns and cut wide tables.
    return Console(stderr=False, highlight=False, width=None if sys.stdout.isatty() else 160)


def _advance(progress: Any, task: Any, _item: object) -> None:
    progress.advance(task)


def _parse_sets(text: str, data_dir: str | None) -> list[tuple[str, Path]]:
    """--sets A,B,... -> (name, folder) pairs; naming no set at all is a user error."""
    from srkit.evaluate import resolve_set

    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise ValueError(f"--sets names no set: {text!r} (expected e.g. Set5,Set14 or a folder of HR images)")
    return [resolve_set(name, data_dir=data_dir) for name in names]


def _refuse_out_inside(out_dir: Path, folders: Sequence[Path], what: str) -> None:
    """An output folder inside an input folder would be read back as input the next time: refuse it up front."""
    out = out_dir.resolve()
    for folder in folders:
        if out.is_relative_to(folder.resolve()):
            raise ValueError(
                f"output folder {out_dir} is inside the {what} {folder}: what srkit writes there would be read "
                "as input next time; choose an --out outside it"
            )


def cmd_evaluate(args: argparse.Namespace) -> int:
    """srkit evaluate: per-image CSV + summary JSON + a printed table; goes on past a bad image (exit 1)."""
    import torch
    from rich.progress import Progress

    from srkit.device import pick_device
    from srkit.evaluate import score_folder, summarize, summary_table, write_rows_csv, write_summary_json
    from srkit.metrics import LPIPS, protocol
    from srkit.models import load_model, model_scale

    device = pick_device(args.device)
    sets = _parse_sets(args.sets, args.data_dir)
    if args.out is not None and not str(args.out).strip():
        raise ValueError("--out is empty: name the folder the results go to")
    out_dir = Path(args.out) if args.out else Path("runs") / "evaluate" / Path(str(args.model)).stem
    _refuse_out_inside(out_dir, [folder for _, folder in sets], "benchmark set")
    model = load_model(args.model, scale=args.scale, device=device)
    scale = model_scale(model)
    dtype = resolve_precision(args.precision, device, model)
    lpips_model = None if args.lpips == "none" else LPIPS(args.lpips, data_dir=args.data_dir).to(device)
    rows = []
    failed: list[tuple[Path, str]] = []
    console = _console()
    with Progress(console=console, transient=True) as progress:
        for set_name, folder in sets:
            task = progress.add_task(f"{set_name}", total=None)
            rows += list(
                score_folder(
                    model,
                    set_name,
                    folder,
                    scale=scale,
                    device=device,
                    lpips_model=lpips_model,
                    save_dir=out_dir / "images" if args.save_images else None,
                    y_channel=not args.rgb,
                    on_image=functools.partial(_advance, progress, task),
                    on_error=lambda path, reason: failed.append((path, reason)),
                    dtype=dtype,
                )
            )
    summary = summarize(rows)
    run_in = {torch.float32: "", torch.bfloat16: "; model run in bf16 (autocast)", torch.float16: "; model run in fp16"}
    text = protocol(y_channel=not args.rgb) + run_in[dtype]
    if rows:
        write_rows_csv(out_dir / "per_image.csv", rows)
        write_summary_json(
            out_dir / "summary.json",
            {
                "model": str(args.model),
                "scale": scale,
                "lpips_net": args.lpips,
                "protocol": text,
                "sets": summary,
                "failed": [{"image": str(p), "reason": r} for p, r in failed],
            },
        )
        console.print(summary_table(summary, title=f"{args.model} x{scale}", protocol_text=text))
        console.print(f"per-image rows: {out_dir / 'per_image.csv'}  summary: {out_dir / 'summary.json'}")
    return _report_failed("image(s) could not be scored (left out of the means)", failed)


def _upscale_model(args: argparse.Namespace, device: Any) -> Any:
    """The generator `srkit upscale` runs: a PyTorch model, or an ONNX graph run by ONNX Runtime."""
    if args.backend == "onnxruntime":
        from srkit.export import load_onnx_generator

        if args.precision not in ("fp32", "auto"):
            raise ValueError(f"--precision {args.precision} needs --backend torch; ONNX graphs run in float32")
        # An .onnx file as is; any other model is exported once to the cache ($SRKIT_CACHE or ~/.cache/srkit).
        return load_onnx_generator(args.model, scale=args.scale, device=device)
    if str(args.model).lower().endswith(".onnx"):
        raise ValueError(f"{args.model} is an ONNX file: run it with --backend onnxruntime")
    from srkit.models import load_model

    return load_model(args.model, scale=args.scale, device=device)


def resolve_precision(name: str, device: Any, model: Any = None) -> Any:
    """--precision NAME -> a torch dtype; "auto" picks bf16 only where it is native and says so once (stderr)."""
    import torch

    from srkit.device import auto_precision, cpu_features
    from srkit.inference import PRECISIONS

    if name != "auto":
        return PRECISIONS[name]
    if model is not None and next(iter(getattr(model, "parameters", list)()), None) is None:
        return torch.float32  # parameter-free (bicubic): nothing to gain, exact arithmetic kept
    dtype = auto_precision(device)
    if device.type == "cpu":
        why = "CPU has AVX512-BF16/AMX" if dtype == torch.bfloat16 else "no native bf16 on this CPU (AVX512-BF16/AMX)"
        flags = " ".join(k for k, v in cpu_features().items() if v)
        why += f"; flags: {flags or 'none'}"
    else:
        why = f"{device.type} {'with' if dtype == torch.bfloat16 else 'without'} bf16"
    print(f"precision auto -> {'bf16' if dtype == torch.bfloat16 else 'fp32'} ({why})", file=sys.stderr)
    return dtype


def cmd_upscale(args: argparse.Namespace) -> int:
    """srkit upscale: files or folders -> OUT, going on past bad files; non-zero exit if any failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from srkit import fs
    from srkit.batch import upscale_files
    from srkit.device import pick_device
    from srkit.inference import OVERLAP, TILE, TileOptions, check_precision, max_output_pixels
    from srkit.models import default_model

    if args.model is None:
        args.model = default_model()
    if not str(args.output).strip():
        raise ValueError("-o/--output is empty: name the folder the results go to")
    device = pick_device(args.device)
    tile = TILE if args.tile is None else args.tile
    if tile < 0:
        raise ValueError(f"--tile must be >= 0 (0 = whole image), got {tile}")
    files = fs.list_images(args.inputs)
    if not files:
        kinds = ", ".join(sorted(fs.IMAGE_SUFFIXES))
        raise ValueError(f"nothing to upscale: no image files ({kinds}) in {', '.join(args.inputs)}")
    limit = max_output_pixels(tiled=tile > 0, explicit=args.max_output_pixels)
    model = _upscale_model(args, device)
    face_model = None
    if args.faces or args.face_model:
        from srkit.models import default_face_model, load_model

        if args.backend != "torch":
            raise ValueError("--faces runs both models with PyTorch: leave out --backend onnxruntime")
        face_model = load_model(args.face_model or default_face_model(), device=device)
    options = TileOptions(
        tile=tile or None,
        overlap=OVERLAP if args.tile_overlap is None else args.tile_overlap,
        dtype=resolve_precision(args.precision, device, model),
        batch_tiles=args.tile_batch,
        channels_last=args.channels_last,
    )
    check_precision(device, options.dtype)
    console = _console()
    columns = (TextColumn("upscaling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("upscale", total=len(files))
        report = upscale_files(
            model,
            args.inputs,
            args.output,
            device=device,
            suffix=args.suffix,
            ext=args.ext,
            overwrite=args.overwrite,
            options=options,
            batch_size=args.batch_size,
            max_pixels=limit,
            face_model=face_model,
            on_file=lambda _p: progress.advance(task),
        )
    done = len(files) - len(report.skipped_outputs)
    for path, faces in report.faces.items():
        used = sum(model_used == "face" for model_used, _ in faces)
        console.print(f"{path}: {len(faces)} face(s) found, {used} upscaled by the face model", markup=False)
        for model_used, why in faces:
            if model_used != "face":
                console.print(f"  {why}", markup=False)
    console.print(f"wrote {len(report.written)} of {done} image(s) to {args.output}")
    if report.skipped_outputs:
        console.print(f"left out {len(report.skipped_outputs)} earlier output(s) found among the inputs")
    return _report_failed(f"file(s) failed (model {args.model})", report.failed)


def _refuse_existing(out: Path, *, overwrite: bool) -> None:
    """Commands that write one file never replace it unasked."""
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")


def cmd_export(args: argparse.Namespace) -> int:
    """srkit export MODEL [--format onnx|torchscript|safetensors] -o OUT."""
    from srkit.export import export_model, format_from_suffix

    out = Path(args.output)
    _refuse_existing(out, overwrite=args.overwrite)
    fmt = args.format or format_from_suffix(out)
    export_model(args.model, out, format=fmt, scale=args.scale, opset=args.opset)
    print(f"wrote {out} ({fmt})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """srkit train CONFIG [--section.key=value ...] [--resume RUN_DIR]."""
    from srkit.config import load_config
    from srkit.train.loop import fit

    if args.resume:
        # The run's own resolved config, with any overrides on top (e.g. --train.steps=... to extend it).
        config_path = Path(args.resume) / "config.yaml"
        if args.config is not None:
            raise ValueError("give either a CONFIG or --resume RUN_DIR, not both (the run keeps its own config)")
    else:
        if args.config is None:
            raise ValueError("srkit train needs a CONFIG.yaml (see configs/) or --resume RUN_DIR")
        config_path = Path(args.config)
    config = load_config(config_path, args.overrides)
    run_dir = fit(config, resume=args.resume)
    print(f"run folder: {run_dir}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """srkit plot RUN_DIR: training and validation curves as a PNG."""
    from srkit.train.plot import plot_run

    out = plot_run(Path(args.run_dir), out=Path(args.out) if args.out else None)
    print(f"wrote {out}")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    """srkit interpolate A B --alpha X -o OUT: (1 - X) * A + X * B, weight by weight (ESRGAN sec. 3.4)."""
    from srkit.interpolate import interpolate_weights

    out = Path(args.output)
    _refuse_existing(out, overwrite=args.overwrite)
    interpolate_weights(Path(args.a), Path(args.b), args.alpha, out)
    print(f"wrote {out} = {1 - args.alpha:g} * {args.a} + {args.alpha:g} * {args.b}")
    return 0


def _progress_bar(label: str) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)


def _report_failed(what: str, failed: Sequence[tuple[Path, str]]) -> int:
    """The end of a batch: list each file that failed and why (stderr); exit status 1 if any did, else 0."""
    if not failed:
        return 0
    print(f"{len(failed)} {what}:", file=sys.stderr)
    for path, reason in failed:
        print(f"  {path}: {reason}", file=sys.stderr)
    return 1


def _report_skipped(kind: str, skipped: list[tuple[Path, str]]) -> int:
    return _report_failed(f"file(s) skipped ({kind})", skipped)


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


def _degradation_spec(text: str) -> Any:
    """A preset name, or a YAML/JSON list of steps such as '[{blur: {sigma: 1.5}}, bicubic]'."""
    import yaml

    from srkit.config import _yaml

    if not text.strip().startswith("["):
        return text
    try:
        return _yaml(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at column {where.column + 1}" if where is not None else ""
        raise ValueError(
            f"--degradation {text!r} is not a valid step list{at}: {getattr(err, 'problem', None) or err} "
            "(expected e.g. '[{blur: {sigma: 1.5}}, bicubic]')"
        ) from None


def cmd_data_prepare(args: argparse.Namespace) -> int:
    """srkit data prepare INPUT... -o OUT: HQ/LQ pair folders (optionally split train/val/test)."""
    from srkit import fs
    from srkit.data.lowres import LowRes, hr_preprocess
    from srkit.data.prepare import prepare_pairs
    from srkit.data.sources import group_key, split

    lowres = LowRes.from_spec(_degradation_spec(args.degradation), scale=args.scale)
    hr_size = tuple(args.hr_size) if args.hr_size else None
    preprocess = hr_preprocess(face_crop=args.face_crop, face_margin=args.face_margin, hr_size=hr_size)
    images = fs.list_images(args.inputs)
    if not images:
        raise ValueError(f"nothing to prepare: no image files in {', '.join(args.inputs)}")
    if not str(args.output).strip():
        raise ValueError("-o/--output is empty: name the folder the pairs go to")
    out = Path(args.output)
    _refuse_out_inside(out, [Path(p) for p in args.inputs if Path(p).is_dir()], "input folder")
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
        with _progress_bar(f"prepare {part or out.name}") as progress:
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
    return _report_skipped("unreadable or too small", skipped)


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
    return _report_skipped("unreadable", report.failed)


def cmd_models(args: argparse.Namespace) -> int:
    """srkit models: the names --model accepts, with domain, scale, parameters and how each was chosen."""
    from rich.table import Table

    from srkit.models import describe_shipped

    table = Table(title="srkit models (--model NAME; a .safetensors path works too)")
    for col in ("name", "domain", "scale", "parameters", "chosen by", "arch", "file"):
        table.add_column(col, justify="right" if col in ("scale", "parameters") else "left")
    for info in describe_shipped():
        scale = "any" if info.scale is None else f"x{info.scale}"
        table.add_row(info.name, info.domain, scale, f"{info.params:,}", info.chosen_by, info.arch, info.source)
    _console().print(table)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """srkit demo: degrade scikit-image's sample photos, upscale them, print the metric table."""
    from srkit.demo import run_demo
    from srkit.models import available_models

    models = available_models() if args.models == "all" else [m for m in args.models.split(",") if m]
    run_demo(out_dir=Path(args.out), models=models, data_dir=args.data_dir, device=args.device)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """srkit serve: the upscaling HTTP API and web page, on 127.0.0.1 unless --host says otherwise."""
    from srkit.serve import serve

    if args.max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    serve(
        host=args.host,
        port=args.port,
        models=[m.strip() for m in args.models.split(",") if m.strip()] if args.models else None,
        max_upload_bytes=round(args.max_upload_mb * 1024 * 1024),
        max_pixels=args.max_pixels,
        max_jobs=args.max_jobs,
        max_queue=args.max_queue,
        timeout_s=args.timeout,
        device=args.device,
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """srkit compare MODEL|WEIGHTS|RUN_DIR ...: one table (compare.md, compare.csv) and figures."""
    from rich.progress import Progress

    from srkit.compare import compare_models, comparison_table, parse_models, write_outputs
    from srkit.device import pick_device
    from srkit.evaluate import benchmark_images
    from srkit.metrics import LPIPS

    device = pick_device(args.device)
    specs = parse_models(args.models)
    sets = _parse_sets(args.sets, args.data_dir)
    if not str(args.out).strip():
        raise ValueError("--out is empty: name the folder the results go to")
    _refuse_out_inside(Path(args.out), [folder for _, folder in sets], "benchmark set")
    lpips_model = None if args.lpips == "none" else LPIPS(args.lpips, data_dir=args.data_dir).to(device)
    out_dir = Path(args.out)
    total = sum(len(benchmark_images(folder)) for _, folder in sets)
    console = _console()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"{len(specs)} model(s) x {len(sets)} set(s)", total=total)
        result = compare_models(
            specs,
            sets,
            scale=args.scale,
            device=device,
            lpips_model=lpips_model,
            lpips_net=args.lpips,
            figure_images=args.figure_images,
            on_image=functools.partial(_advance, progress, task),
        )
    write_outputs(result, out_dir)
    console.print(comparison_table(result))
    console.print(
        f"table: {out_dir / 'compare.md'}  long CSV: {out_dir / 'compare.csv'}  figures: {out_dir / 'figures'}"
    )
    return _report_failed("image(s) could not be scored (left out for every model)", result.failed)


def cmd_report(args: argparse.Namespace) -> int:
    """srkit report: the dual-model system's four tables (faces, cross-domain, natural, specialisation)."""
    from srkit.device import pick_device
    from srkit.paths import data_root
    from srkit.report import NATURAL_SETS, face_test_split, make_report

    if not str(args.out).strip():
        raise ValueError("--out is empty: name the folder the report goes to")
    out = Path(args.out)
    natural = dict(_parse_sets(",".join(NATURAL_SETS), args.data_dir))
    if args.face_set:
        face_set = Path(args.face_set)
        if not face_set.is_dir():
            raise FileNotFoundError(f"--face-set {face_set}: not a folder of HR face images")
    else:
        lfw = Path(args.lfw) if args.lfw else data_root(args.data_dir) / "faces" / "LFW"
        if not lfw.is_dir():
            raise FileNotFoundError(f"LFW faces not found at {lfw}: pass --lfw DIR or --face-set DIR")
        face_set = face_test_split(lfw, out / "face_test")
    _refuse_out_inside(out, [face_set, *natural.values()], "benchmark set")
    report = make_report(
        out,
        face_set=face_set,
        natural_sets=natural,
        device=pick_device(args.device),
        lpips_net=args.lpips,
        data_dir=args.data_dir,
        figure_images=args.figure_images,
        on_table=lambda key: print(f"table {key}: done", file=sys.stderr),
    )
    print(report.path.read_text())
    print(f"wrote {report.path} and {', '.join(str(p) for p in report.tables.values())}")
    return _report_failed("image(s) could not be scored", report.failed)


def cmd_viz_features(args: argparse.Namespace) -> int:
    """srkit viz features --model M --image IMG -o OUT.png: VGG feature maps of SR vs HR."""
    from srkit.device import pick_device
    from srkit.viz import visualize_features

    out = visualize_features(
        model=args.model,
        image=args.image,
        out=args.output,
        layer=args.layer,
        arch=args.arch,
        channels=args.channels,
        order=args.select,
        scale=args.scale,
        device=pick_device(args.device),
        data_dir=args.data_dir,
    )
    print(f"wrote {out}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """srkit summary MODEL [--input HxW]: layer table, totals, markdown and a block diagram."""
    from srkit.summary import model_table, parse_size, run_summary

    summary, paths = run_summary(
        args.model,
        input_size=parse_size(args.input) if args.input else None,
        out_dir=Path(args.out),
        depth=args.depth,
        scale=args.scale,
    )
    console = _console()
    console.print(model_table(summary))
    console.print("wrote " + "  ".join(str(p) for p in paths))
    return 0


def _scale_arg(text: str) -> int:
    """--scale: an integer factor in 1..MAX_SCALE (checked before any work)."""
    from srkit.models import MAX_SCALE

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer factor such as 4, got {text!r}") from None
    if not 1 <= value <= MAX_SCALE:
        raise argparse.ArgumentTypeError(f"expected a factor in 1..{MAX_SCALE}, got {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _ext_arg(text: str) -> str:
    """--ext: an output format srkit writes (png, jpg, ...), checked before any work."""
    from srkit.fs import IMAGE_SUFFIXES

    ext = "." + text.strip().lower().lstrip(".")
    if ext not in IMAGE_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"srkit writes {', '.join(sorted(e[1:] for e in IMAGE_SUFFIXES))}; got {text!r}"
        )
    return ext


SCALE_HELP = "upscaling factor of the bicubic baseline (default 4); a trained model has its own and refuses another"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every srkit command."""
    parser = argparse.ArgumentParser(prog="srkit", description="4x single-image super-resolution toolkit")
    parser.add_argument("--version", action="version", version=f"srkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, *, data_dir: bool = True) -> None:
        p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
        if data_dir:
            p.add_argument("--data-dir", default=None, help="data folder (default: $SRKIT_DATA, else ../shared/data)")

    p = sub.add_parser("evaluate", help="score a model on benchmark sets (PSNR/SSIM on Y, LPIPS)")
    p.add_argument("--model", default="bicubic", help="bicubic, a shipped model's name, or a .safetensors file")
    p.add_argument("--sets", default="Set5,Set14,BSD100", help="comma-separated set names or folders of HR images")
    p.add_argument("--scale", type=_scale_arg, default=None, help=SCALE_HELP)
    p.add_argument("--lpips", default="alex", choices=["alex", "vgg", "none"], help="LPIPS backbone")
    p.add_argument("-o", "--out", default=None, help="output folder (default runs/evaluate/MODEL; not inside a set)")
    p.add_argument("--save-images", action="store_true", help="also write the SR images")
    p.add_argument("--rgb", action="store_true", help="PSNR/SSIM on RGB instead of the Y channel")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="auto (default): bf16 where native (AVX512-BF16/AMX CPUs, CUDA), else fp32; bicubic always runs exact. "
        "bf16 moves PSNR by ~0.004 dB (srresnet, Set5/Set14); pass fp32 for bit-exact tables across machines",
    )
    common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("upscale", help="upscale image files or folders")
    p.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("-o", "--output", "--out", required=True, help="output folder (inputs are never overwritten)")
    p.add_argument(
        "--model",
        default=None,
        help="bicubic, a shipped model's name, a .safetensors file, or (with --backend onnxruntime) an .onnx file "
        "(default: the shipped srgan, else bicubic)",
    )
    p.add_argument("--scale", type=_scale_arg, default=None, help=SCALE_HELP)
    p.add_argument("--suffix", default="", help="text added to each output file name, e.g. _x4")
    p.add_argument("--ext", type=_ext_arg, default=None, help="output format, e.g. png (default: same as the input)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument(
        "--backend",
        choices=["torch", "onnxruntime"],
        default="torch",
        help="torch (default), or onnxruntime: an .onnx file, or the model exported to ONNX once and cached",
    )
    p.add_argument("--tile", type=int, default=None, help="LR tile side in pixels, 0 = whole image (default 256)")
    p.add_argument("--tile-overlap", type=int, default=None, help="LR pixels shared by neighbouring tiles (default 32)")
    p.add_argument("--tile-batch", type=int, default=None, help="tiles per forward pass (default: 1 on CPU, 4 on GPU)")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="auto (default): bf16 where it is native (CPUs with AVX512-BF16 or AMX, CUDA), else fp32; "
        "bf16 on CPU or CUDA, fp16 on CUDA (autocast, weights stay float32). On CPUs without AVX512-BF16/AMX "
        "bf16 is emulated and several times slower than fp32",
    )
    p.add_argument("--batch-size", type=int, default=1, help="same-size small images per forward pass (default 1)")
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="feed the model NHWC tensors (default: on for conv models on the CPU, where it is ~2x faster)",
    )
    p.add_argument(
        "--faces",
        action="store_true",
        help="upscale detected faces with the face model (--face-model) and blend them into the --model result",
    )
    p.add_argument(
        "--face-model",
        default=None,
        help="the model for faces (implies --faces; default: the shipped srgan_faces, else srresnet_faces)",
    )
    p.add_argument(
        "--max-output-pixels",
        type=_positive_int,
        default=None,
        help="refuse inputs whose output (width x height) would pass N, before decoding them (default: what fits "
        "in half the free memory when tiled; also at most 64 MP untiled)",
    )
    common(p, data_dir=False)
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser("export", help="export a model for deployment: ONNX, TorchScript or safetensors")
    p.add_argument("model", help="bicubic, a shipped model's name, or a .safetensors file")
    p.add_argument("-o", "--output", "--out", required=True, help="output file (.onnx, .pt, .safetensors)")
    p.add_argument(
        "--format",
        choices=["onnx", "torchscript", "safetensors"],
        default=None,
        help="default: from the output suffix (.onnx, .pt/.ts, .safetensors)",
    )
    p.add_argument("--scale", type=_scale_arg, default=None, help=SCALE_HELP)
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, >= 17 (default 18)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "train",
        help="train a model from a YAML recipe",
        description="Train from a recipe; any config key can be overridden as --section.key=value "
        "(e.g. --train.steps=2000 --optim.lr_g=2e-4 --name=myrun). Multi-GPU/CPU: run under torchrun.",
    )
    p.add_argument("config", nargs="?", default=None, help="recipe YAML, e.g. configs/srresnet_x4.yaml")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("plot", help="draw a run's loss and validation curves (PNG)")
    p.add_argument("run_dir", help="a run folder written by srkit train")
    p.add_argument("-o", "--out", default=None, help="output PNG (default RUN_DIR/curves.png)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser(
        "interpolate",
        help="blend two models of one architecture: (1 - alpha) * A + alpha * B (ESRGAN network interpolation)",
        description="Network interpolation (ESRGAN sec. 3.4): A is the PSNR-oriented model, B its GAN fine-tune; "
        "alpha 0 gives A, 1 gives B.",
    )
    p.add_argument("a", help="weights A (.safetensors): the PSNR-oriented model, e.g. an rrdb_psnr_x4 export")
    p.add_argument("b", help="weights B (.safetensors): the GAN model of the same arch, e.g. an esrgan_x4 export")
    p.add_argument("--alpha", type=float, default=0.8, help="weight of B, in [0, 1] (default 0.8)")
    p.add_argument("-o", "--output", "--out", required=True, help="output .safetensors file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_interpolate)

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
    p.add_argument("--scale", type=_scale_arg, default=4)
    p.add_argument(
        "--degradation",
        default="bicubic",
        help="preset (bicubic, blur_bicubic, realistic) or a step list, e.g. '[{blur: {sigma: 1.5}}, bicubic]'",
    )
    p.add_argument("--hr-size", type=_positive_int, nargs=2, metavar=("H", "W"), help="resize HR first (e.g. 256 256)")
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

    p = sub.add_parser("models", help="list the models --model accepts")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("demo", help="degrade and upscale scikit-image's sample photos, print metrics")
    p.add_argument("-o", "--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--models", default="all", help="comma-separated models to compare (default: all)")
    common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="HTTP API and web page for upscaling (http://127.0.0.1:8000/)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--models", default=None, help="comma-separated models to offer (default: all `srkit models`)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload in MB (default 20)")
    p.add_argument("--max-pixels", type=int, default=4_000_000, help="largest input, width x height (default 4000000)")
    p.add_argument("--max-jobs", type=int, default=1, help="upscales running at once (default 1)")
    p.add_argument("--max-queue", type=int, default=2, help="upscales waiting for a worker; more get 503 (default 2)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request before a 504 (default 120)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "compare",
        help="compare models on benchmark sets: one markdown table, a long CSV and LR/bicubic/SR/HR figures",
        description="Each MODEL is a shipped name (bicubic, ...), a .safetensors file or a run folder (its "
        "checkpoints/best_{psnr,ssim,lpips}.safetensors); LABEL=MODEL names a row.",
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help="model name, weights file or run folder; LABEL=MODEL")
    p.add_argument("--sets", default="Set5,Set14,BSD100", help="comma-separated set names or folders of HR images")
    p.add_argument("-o", "--out", default="runs/compare", help="output folder (default runs/compare)")
    p.add_argument("--lpips", default="alex", choices=["alex", "vgg", "none"], help="LPIPS backbone")
    p.add_argument("--figure-images", type=int, default=2, help="figures for the first N images of each set")
    p.add_argument("--scale", type=_scale_arg, default=None, help=SCALE_HELP)
    common(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "report",
        help="the dual-model system's four tables: face model, cross-domain, natural model, specialisation",
    )
    p.add_argument("-o", "--out", default="runs/report", help="output folder (default runs/report)")
    p.add_argument("--face-set", default=None, help="a folder of HR face test images (default: the LFW test split)")
    p.add_argument("--lfw", default=None, help="the LFW folder the test split is taken from (default <data>/faces/LFW)")
    p.add_argument("--lpips", default="alex", choices=["alex", "vgg", "none"], help="LPIPS backbone")
    p.add_argument("--figure-images", type=int, default=1, help="figures for the first N images of each set")
    common(p)
    p.set_defaults(func=cmd_report)

    viz = sub.add_parser("viz", help="figures: VGG feature maps of SR vs HR")
    viz_sub = viz.add_subparsers(dest="viz_command", required=True, metavar="VIZ_COMMAND")
    p = viz_sub.add_parser("features", help="VGG feature maps of a model's SR and the HR image, side by side")
    p.add_argument("--model", default="bicubic", help="bicubic, a shipped model's name, or a .safetensors file")
    p.add_argument("--image", required=True, help="an HR image (cropped to a multiple of the scale)")
    p.add_argument("--layer", default="relu2_2", help="VGG layer, e.g. relu2_2, conv5_4 (default relu2_2)")
    p.add_argument("--arch", default="vgg16", choices=["vgg16", "vgg19"], help="VGG variant (default vgg16)")
    p.add_argument("--channels", type=int, default=16, help="feature maps to draw (default 16)")
    p.add_argument("--select", default="active", choices=["active", "first"], help="most active or first channels")
    p.add_argument("--scale", type=_scale_arg, default=None, help=SCALE_HELP)
    p.add_argument("-o", "--output", "--out", required=True, help="output PNG")
    common(p)
    p.set_defaults(func=cmd_viz_features)

    p = sub.add_parser("summary", help="layer table (shapes, parameters, FLOPs) and a block diagram of a network")
    p.add_argument(
        "model", help="generator or discriminator arch (srresnet, srgan_discriminator, ...), model name or weights"
    )
    p.add_argument("--input", default=None, help="input HxW (default 24x24; discriminators 96x96 or their size)")
    p.add_argument("-o", "--out", default="runs/summary", help="output folder (default runs/summary)")
    p.add_argument("--depth", type=int, default=2, help="module nesting depth shown in the table (default 2)")
    p.add_argument("--scale", type=_scale_arg, default=None, help=SCALE_HELP)
    p.set_defaults(func=cmd_summary)
    return parser


def _explain(err: Exception) -> tuple[int, str]:
    """(exit status, one line) for an error that reached the CLI: 2 for the user's to fix, 1 for the rest."""
    from srkit.data.download import DownloadError

    user = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)
    if isinstance(err, (*user, ValueError, DownloadError)):
        return 2, str(err)  # a missing file, a bad option or config value, a file that is not what it should be
    if isinstance(err, OSError):
        # File names too long for the file system are the user's to fix; a full disk or an I/O error is not.
        return (2 if err.errno == errno.ENAMETOOLONG else 1), str(err)
    if isinstance(err, MemoryError):
        return 1, f"out of memory ({err or 'allocation failed'}); try a smaller --tile"
    return 1, (
        f"unexpected {type(err).__name__}: {err} "
        "(run again with --debug or SRKIT_DEBUG=1 for the traceback, and please report it)"
    )


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("SRKIT_DEBUG", "") not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `srkit` console script; returns the exit status.

    0 done; 1 some work failed (a bad file in a batch, an unexpected error: one line, no traceback);
    2 a user error found before any work (a missing file, a bad option or config value, nothing to do);
    130 interrupted. `--debug` (anywhere) or SRKIT_DEBUG=1 shows the traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Only `train` takes free-form --section.key=value overrides; anything else unknown is an error.
    overrides = [e for e in extra if e.startswith("--") and "=" in e]
    unknown = [e for e in extra if e not in overrides]
    if unknown or (overrides and args.command != "train"):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    args.overrides = [e[2:] for e in overrides]
    sub = getattr(args, "data_command", None) or getattr(args, "viz_command", None)
    where = f"srkit {args.command}" + (f" {sub}" if sub else "")
    try:
        status: int = args.func(args)
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        code, text = _explain(err)
        print(f"{where}: error: {text}", file=sys.stderr)
        return code
    return status


if __name__ == "__main__":
    sys.exit(main())
