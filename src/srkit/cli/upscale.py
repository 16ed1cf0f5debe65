"""`srkit upscale`, `export`, `models`, `demo` and `serve`: running models on images."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from srkit.cli.common import (
    SCALE_HELP,
    add_device_args,
    ext_arg,
    make_console,
    positive_int,
    refuse_existing,
    report_failed,
    resolve_precision,
    scale_arg,
)
from srkit.serve import limits

BACKEND_CHOICES = ("auto", "torch", "onnxruntime", "openvino")


def _upscale_model(args: argparse.Namespace, device: Any, files: list[Path], *, quiet: bool) -> tuple[Any, Any]:
    """The model `srkit upscale` runs (a ModelDescriptor) and its precision (None: from --precision).

    --backend auto (the default, or $SRKIT_BACKEND): the runtime measured fastest for this model on this machine
    (tune.choose; measured once when the job is large enough, then remembered); torch, onnxruntime or openvino
    as asked otherwise (an .onnx file as is; any other model exported once to the cache, $SRKIT_CACHE or
    ~/.cache/srkit)."""
    from srkit.descriptor import open_model
    from srkit.models import resolve_model

    backend = args.backend or os.environ.get("SRKIT_BACKEND") or "auto"
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"SRKIT_BACKEND={backend!r}: expected one of {', '.join(BACKEND_CHOICES)}")
    source = resolve_model(args.model, scale=args.scale)
    if backend == "auto" and (args.faces or args.face_model):
        backend = "torch"  # the face path blends two PyTorch models
    if backend == "auto":
        from srkit import tune

        choice, desc = tune.choose(source, request=args.precision, device=device, lr_pixels=lambda: _lr_pixels(files))
        measured = choice.cached or bool(choice.measured)
        if not quiet:  # unmeasured: PyTorch, and --precision decides as with --backend torch (said below)
            label = choice.runtime.label if measured else choice.runtime.backend
            print(f"backend auto -> {label} ({choice.why})", file=sys.stderr)
        return desc, choice.runtime.dtype if measured else None
    if source.kind == "onnx" and backend == "torch":
        raise ValueError(f"{args.model} is an ONNX file: run it with --backend onnxruntime or openvino")
    if backend == "onnxruntime" and args.precision not in ("fp32", "auto"):
        # Said before any export or load: ONNX graphs run as exported (ModelDescriptor.supports_bfloat16).
        raise ValueError(f"--precision {args.precision} needs --backend torch or openvino; ONNX Runtime runs fp32")
    if backend == "openvino" and args.precision == "fp16":
        raise ValueError("--precision fp16 is for CUDA; OpenVINO runs fp32 or bf16")
    if backend == "openvino":
        import torch

        dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
        return open_model(source, device=device, backend="openvino", precision=dtype), dtype
    return open_model(source, device=device, backend=backend), None  # type: ignore[arg-type]


def cmd_tune(args: argparse.Namespace) -> int:
    """srkit tune MODEL: measure the runtimes for MODEL on this machine, store the fastest, print the table."""
    from srkit import tune
    from srkit.device import cpu_description, pick_device

    choice, _ = tune.choose(args.model, request=args.precision, device=pick_device(args.device), force=args.force)
    console = make_console()
    console.print(f"# {args.model} on {cpu_description()}", markup=False)
    for line in tune.table(choice):
        console.print(line, markup=False)
    stored = f"stored in {tune.cache_file()}"
    if choice.cached:
        stored = "stored earlier, not measured again (--force to redo)"
    console.print(f"--backend auto runs {choice.runtime.label} ({choice.why}); {stored}", markup=False)
    return 0


def _lr_pixels(files: list[Path]) -> int:
    """The job's input pixels, from the image headers. Unreadable files, and anything but a regular file (a FIFO
    would block), count 0: the batch reports them."""
    from PIL import Image

    total = 0
    for path in files:
        if not path.is_file():
            continue
        with contextlib.suppress(Exception), Image.open(path) as im:
            total += im.width * im.height
    return total


def cmd_upscale(args: argparse.Namespace) -> int:
    """srkit upscale: files or folders -> OUT, going on past bad files; non-zero exit if any failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from srkit import fs
    from srkit.batch import merge_reports, upscale_files
    from srkit.device import pick_device
    from srkit.inference import OVERLAP, TileOptions, check_precision, default_tile, max_output_pixels
    from srkit.models import default_model
    from srkit.shard import finish, from_env, gather

    if args.model is None:
        args.model = default_model()
    if not str(args.output).strip():
        raise ValueError("-o/--output is empty: name the folder the results go to")
    device = pick_device(args.device)
    if args.tile is not None and args.tile < 0:
        raise ValueError(f"--tile must be >= 0 (0 = whole image), got {args.tile}")
    files = fs.list_images(args.inputs)
    if not files:
        kinds = ", ".join(sorted(fs.IMAGE_SUFFIXES))
        raise ValueError(f"nothing to upscale: no image files ({kinds}) in {', '.join(args.inputs)}")
    limit = max_output_pixels(tiled=args.tile != 0, explicit=args.max_output_pixels)
    shard = from_env()  # under torchrun: this rank's share of the files; rank 0 reports for all
    model, chosen_dtype = _upscale_model(args, device, files, quiet=not shard.main)
    tile = default_tile(model) if args.tile is None else args.tile
    if args.self_ensemble:
        from srkit.inference import with_self_ensemble

        model = with_self_ensemble(model)  # after the tile is sized: the 8 passes run one after another
    face_model = None
    if args.faces or args.face_model:
        from srkit.descriptor import open_model
        from srkit.models import default_face_model

        if model.backend != "torch":
            raise ValueError(f"--faces runs both models with PyTorch: use --backend torch (not {model.backend})")
        face_model = open_model(args.face_model or default_face_model(), device=device)
    overlap = OVERLAP if args.tile_overlap is None else args.tile_overlap
    if tile and overlap > tile // 2:
        given = "" if args.tile_overlap is not None else f" (its default, {OVERLAP})"
        raise ValueError(
            f"--tile-overlap{given} must be at most --tile / 2 = {tile // 2}, got {overlap}: "
            f"give --tile {2 * overlap} or more, or --tile-overlap {tile // 2} or less"
        )
    options = TileOptions(
        tile=tile or None,
        overlap=overlap,
        dtype=chosen_dtype if chosen_dtype is not None else resolve_precision(args.precision, device, model),
        batch_tiles=args.tile_batch,
        channels_last=args.channels_last,
    )
    check_precision(device, options.dtype)
    model.check_precision(options.dtype)
    console = make_console()
    columns = (TextColumn("upscaling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not shard.main) as progress:
        task = progress.add_task("upscale", total=len(shard.take(files)))
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
            shard=shard,
        )
    report = merge_reports(gather(shard, report))
    try:
        if not shard.main:  # rank 0 prints the merged report; every rank exits with the same status
            return 1 if report.failed else 0
        return _print_report(report, console, files=files, args=args)
    finally:
        finish(shard)  # a barrier: no rank exits (and has torchrun stop the others) before rank 0 has printed


def _print_report(report: Any, console: Any, *, files: list[Path], args: argparse.Namespace) -> int:
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
    return report_failed(f"file(s) failed (model {args.model})", report.failed)


def cmd_export(args: argparse.Namespace) -> int:
    """srkit export MODEL [--format onnx|torchscript|safetensors] -o OUT."""
    from srkit.export import export_model, format_from_suffix

    out = Path(args.output)
    refuse_existing(out, overwrite=args.overwrite)
    fmt = args.format or format_from_suffix(out)
    export_model(args.model, out, format=fmt, scale=args.scale, opset=args.opset, half=args.half)
    print(f"wrote {out} ({fmt}{', fp16' if args.half else ''})")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """srkit models: the names --model accepts, with domain, scale, parameters and how each was chosen."""
    from rich.table import Table

    from srkit.models import describe_shipped

    if args.inspect:
        return _inspect(args.inspect)
    table = Table(title="srkit models (--model NAME; a .safetensors, .pth, .pt, .ckpt or .onnx path works too)")
    for col in ("name", "domain", "scale", "parameters", "chosen by", "arch", "file"):
        table.add_column(col, justify="right" if col in ("scale", "parameters") else "left")
    for info in describe_shipped():
        scale = "any" if info.scale is None else f"x{info.scale}"
        table.add_row(info.name, info.domain, scale, f"{info.params:,}", info.chosen_by, info.arch, info.source)
    make_console().print(table)
    return 0


def _runs_as(source: Any) -> str:
    """Which module runs a community file (a ModelSource): srkit's own network (its tensors are exactly one of
    srkit's) or spandrel's."""
    from srkit.archs import GENERATORS

    if source.arch in GENERATORS:
        return f"srkit {source.arch} ({', '.join(f'{k}={v}' for k, v in source.arch_kwargs.items())})"
    return "spandrel's module"


def _inspect(path: str) -> int:
    """srkit models --inspect FILE: what srkit detects in a weights file, nothing run."""
    from srkit.descriptor import open_model

    desc = open_model(path, backend="onnxruntime" if path.lower().endswith(".onnx") else "torch")
    source = desc.source
    req = desc.size_requirements
    rows = [
        ("file", path),
        ("kind", source.kind if source else "-"),
        ("architecture", desc.architecture),
        *([("runs as", _runs_as(source))] if source and source.kind == "community" else []),
        ("scale", f"x{desc.scale}"),
        ("channels", f"{desc.input_channels} in, {desc.output_channels} out"),
        ("parameters", f"{desc.params:,}" if desc.backend == "torch" else "(ONNX graph)"),
        (
            "precisions",
            ", ".join(
                ["fp32", *(["bf16"] if desc.supports_bfloat16 else []), *(["fp16"] if desc.supports_half else [])]
            ),
        ),
        (
            "size needs",
            f"min {req.minimum} px, multiple of {req.multiple_of}"
            + (", square" if req.square else "")
            + (" (padded automatically)" if desc.pads_input else ""),
        ),
        ("backend", desc.backend),
    ]
    console = make_console()
    for key, value in rows:
        console.print(f"{key:>13}: {value}", markup=False)
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


def register(sub: Any) -> None:
    """The upscale, tune, export, models, demo, serve command parsers."""
    _register_upscale(sub)
    _register_deployment(sub)


def _register_upscale(sub: Any) -> None:
    p = sub.add_parser("upscale", help="upscale image files or folders")
    p.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("-o", "--output", "--out", required=True, help="output folder (inputs are never overwritten)")
    p.add_argument(
        "--model",
        default=None,
        help="bicubic, a shipped model's name, a .safetensors file, or (with --backend onnxruntime) an .onnx file "
        "(default: the shipped srgan, else bicubic)",
    )
    p.add_argument("--scale", type=scale_arg, default=None, help=SCALE_HELP)
    p.add_argument("--suffix", default="", help="text added to each output file name, e.g. _x4")
    p.add_argument("--ext", type=ext_arg, default=None, help="output format, e.g. png (default: same as the input)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default=None,
        help="auto (default, or $SRKIT_BACKEND): the runtime measured fastest for the model on this machine, "
        "within 45 dB of PyTorch fp32 (measured once, for jobs big enough to repay it, then remembered); torch; "
        "onnxruntime or openvino: an .onnx file, or the model exported to ONNX once and cached",
    )
    p.add_argument(
        "--tile",
        type=int,
        default=None,
        help="LR tile side in pixels, 0 = whole image (default: sized to the model, the largest whose conv "
        "activations fit ~512 MiB: 256 for RRDBNet-23, 320 SRResNet, 1024 Compact)",
    )
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
        "--self-ensemble",
        action="store_true",
        help="average the model over the 8 flips and 90-degree turns of each tile (EDSR's '+'; 8x slower)",
    )
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
        type=positive_int,
        default=None,
        help="refuse inputs whose output (width x height) would pass N, before decoding them (default: what fits "
        "in half the free memory when tiled; also at most 64 MP untiled)",
    )
    add_device_args(p, data_dir=False)
    p.set_defaults(func=cmd_upscale)


def _register_deployment(sub: Any) -> None:
    """tune, export, models, demo, serve."""
    p = sub.add_parser("tune", help="measure which runtime runs a model fastest here (what --backend auto uses)")
    p.add_argument("model", help="a shipped model's name or a weights file")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="as for upscale")
    p.add_argument("--force", action="store_true", help="measure again even if a choice is stored")
    add_device_args(p, data_dir=False)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("export", help="export a model for deployment: ONNX, TorchScript or safetensors")
    p.add_argument("model", help="bicubic, a shipped model's name, or a .safetensors file")
    p.add_argument("-o", "--output", "--out", required=True, help="output file (.onnx, .pt, .safetensors)")
    p.add_argument(
        "--format",
        choices=["onnx", "torchscript", "safetensors", "pth"],
        default=None,
        help="default: from the output suffix (.onnx, .pt/.ts, .safetensors, .pth: the community's layout, for "
        "spandrel / Real-ESRGAN; RRDBNet and Compact)",
    )
    p.add_argument("--scale", type=scale_arg, default=None, help=SCALE_HELP)
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, >= 17 (default 18)")
    p.add_argument("--half", action="store_true", help="ONNX with float16 weights, input and output")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("models", help="list the models --model accepts, or --inspect FILE")
    p.add_argument(
        "--inspect", metavar="FILE", help="say what srkit detects in a weights file (.safetensors, .pth, ...)"
    )
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("demo", help="degrade and upscale scikit-image's sample photos, print metrics")
    p.add_argument("-o", "--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--models", default="all", help="comma-separated models to compare (default: all)")
    add_device_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help=f"HTTP API and web page for upscaling (http://{limits.HOST}:{limits.PORT}/)")
    p.add_argument("--host", default=limits.HOST, help="address to bind (default %(default)s: this machine only)")
    p.add_argument("--port", type=int, default=limits.PORT, help="port (default %(default)s)")
    p.add_argument("--models", default=None, help="comma-separated models to offer (default: all `srkit models`)")
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=limits.MAX_UPLOAD_BYTES / limits.MB,
        help="largest upload in MB (default %(default)g)",
    )
    p.add_argument(
        "--max-pixels", type=int, default=limits.MAX_PIXELS, help="largest input, width x height (default %(default)d)"
    )
    p.add_argument(
        "--max-jobs", type=int, default=limits.MAX_JOBS, help="upscales running at once (default %(default)s)"
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=limits.MAX_QUEUE,
        help="upscales waiting for a worker; more get 503 (default %(default)s)",
    )
    p.add_argument(
        "--timeout", type=float, default=limits.TIMEOUT_S, help="seconds per request before a 504 (default %(default)g)"
    )
    add_device_args(p, data_dir=False)
    p.set_defaults(func=cmd_serve)
