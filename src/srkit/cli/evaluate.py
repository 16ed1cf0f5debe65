"""`srkit evaluate`, `srkit compare` and `srkit report`: models scored on image sets under the protocol."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any

from srkit.cli.common import (
    SCALE_HELP,
    add_device_args,
    advance,
    degradation_spec,
    make_console,
    parse_sets,
    refuse_out_inside,
    report_failed,
    resolve_precision,
    scale_arg,
)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """srkit evaluate: per-image CSV + summary JSON + a printed table; goes on past a bad image (exit 1)."""
    from rich.progress import Progress

    from srkit import image_io
    from srkit.descriptor import open_model
    from srkit.device import pick_device
    from srkit.evaluate import evaluate_sets, merge_evaluations
    from srkit.metrics import LPIPS
    from srkit.shard import finish, from_env, gather

    device = pick_device(args.device)
    sets = parse_sets(args.sets, args.data_dir)
    if args.out is not None and not str(args.out).strip():
        raise ValueError("--out is empty: name the folder the results go to")
    default_out = Path("runs") / "evaluate" / (Path(str(args.model)).stem + ("+" if args.self_ensemble else ""))
    out_dir = Path(args.out) if args.out else default_out
    refuse_out_inside(out_dir, [folder for _, folder in sets], "benchmark set")
    model = open_model(args.model, scale=args.scale, device=device)
    if args.self_ensemble:
        from srkit.inference import with_self_ensemble

        model = with_self_ensemble(model)
    scale = model.scale
    dtype = resolve_precision(args.precision, device, model)
    lpips_model = None if args.lpips == "none" else LPIPS(args.lpips, data_dir=args.data_dir).to(device)
    save = None
    if args.save_images:

        def save(image: Any, _gt: Any, _lq: Any, sr: Any, row: Any) -> None:
            image_io.write_image(out_dir / "images" / row.set / f"{Path(image.name).stem}.png", sr)

    shard = from_env()  # under torchrun: this rank's share of every set; rank 0 writes and prints for all
    console = make_console()
    with Progress(console=console, transient=True, disable=not shard.main) as progress:
        tasks = {name: progress.add_task(name, total=None) for name, _ in sets}
        result = evaluate_sets(
            model,
            sets,
            scale=scale,
            device=device,
            lpips_model=lpips_model,
            dtype=dtype,
            y_channel=not args.rgb,
            on_result=save,
            on_image=lambda set_name, _name: progress.advance(tasks[set_name]),
            shard=shard,
            degradation=degradation_spec(args.degradation),
        )
    result = merge_evaluations(gather(shard, result), sets)
    try:
        if not shard.main:  # rank 0 writes and prints for all; every rank exits with the same status
            return 1 if result.failed else 0
        return _write_evaluation(result, console, args=args, out_dir=out_dir, scale=scale, dtype=dtype)
    finally:
        finish(shard)  # a barrier: no rank exits before rank 0 has written and printed


def _write_evaluation(
    result: Any, console: Any, *, args: argparse.Namespace, out_dir: Path, scale: int, dtype: Any
) -> int:
    import torch

    from srkit.evaluate import summary_table, write_rows_csv, write_summary_json
    from srkit.inference import SELF_ENSEMBLE_TEXT
    from srkit.metrics import protocol

    rows, failed = result.rows, result.failed
    summary = result.summary
    run_in = {torch.float32: "", torch.bfloat16: "; model run in bf16 (autocast)", torch.float16: "; model run in fp16"}
    lr = "" if args.degradation == "bicubic" else f"; LR degradation: {args.degradation} (not the protocol's bicubic)"
    ensemble = f"; {SELF_ENSEMBLE_TEXT}" if args.self_ensemble else ""
    text = protocol(y_channel=not args.rgb) + lr + run_in[dtype] + ensemble
    if rows:
        write_rows_csv(out_dir / "per_image.csv", rows)
        write_summary_json(
            out_dir / "summary.json",
            {
                "model": str(args.model),
                "scale": scale,
                "lpips_net": args.lpips,
                "degradation": args.degradation,
                "self_ensemble": bool(args.self_ensemble),
                "protocol": text,
                "sets": summary,
                "failed": [{"image": str(p), "reason": r} for p, r in failed],
            },
        )
        name = f"{args.model}+" if args.self_ensemble else str(args.model)
        console.print(summary_table(summary, title=f"{name} x{scale}", protocol_text=text))
        console.print(f"per-image rows: {out_dir / 'per_image.csv'}  summary: {out_dir / 'summary.json'}")
    return report_failed("image(s) could not be scored (left out of the means)", failed)


def cmd_compare(args: argparse.Namespace) -> int:
    """srkit compare MODEL|WEIGHTS|RUN_DIR ...: one table (compare.md, compare.csv) and figures."""
    from rich.progress import Progress

    from srkit.compare import compare_models, comparison_table, parse_models, write_outputs
    from srkit.device import pick_device
    from srkit.evaluate import benchmark_images
    from srkit.metrics import LPIPS

    device = pick_device(args.device)
    specs = parse_models(args.models)
    sets = parse_sets(args.sets, args.data_dir)
    if not str(args.out).strip():
        raise ValueError("--out is empty: name the folder the results go to")
    refuse_out_inside(Path(args.out), [folder for _, folder in sets], "benchmark set")
    lpips_model = None if args.lpips == "none" else LPIPS(args.lpips, data_dir=args.data_dir).to(device)
    out_dir = Path(args.out)
    total = sum(len(benchmark_images(folder)) for _, folder in sets)
    console = make_console()
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
            on_image=functools.partial(advance, progress, task),
            degradation=degradation_spec(args.degradation),
        )
    write_outputs(result, out_dir)
    console.print(comparison_table(result))
    console.print(
        f"table: {out_dir / 'compare.md'}  long CSV: {out_dir / 'compare.csv'}  figures: {out_dir / 'figures'}"
    )
    return report_failed("image(s) could not be scored (left out for every model)", result.failed)


def cmd_report(args: argparse.Namespace) -> int:
    """srkit report: the dual-model system's four tables (faces, cross-domain, natural, specialisation)."""
    from srkit.device import pick_device
    from srkit.paths import data_root
    from srkit.report import NATURAL_SETS, TABLES, face_test_split, make_report

    if not str(args.out).strip():
        raise ValueError("--out is empty: name the folder the report goes to")
    out = Path(args.out)
    natural = dict(parse_sets(",".join(NATURAL_SETS), args.data_dir))
    if args.face_set:
        face_set = Path(args.face_set)
        if not face_set.is_dir():
            raise FileNotFoundError(f"--face-set {face_set}: not a folder of HR face images")
    else:
        lfw = Path(args.lfw) if args.lfw else data_root(args.data_dir) / "faces" / "LFW"
        if not lfw.is_dir():
            raise FileNotFoundError(f"LFW faces not found at {lfw}: pass --lfw DIR or --face-set DIR")
        face_set = face_test_split(lfw, out / "face_test")
    refuse_out_inside(out, [face_set, *natural.values()], "benchmark set")
    by_key = {t.key: t for t in TABLES}
    keys = [k.strip() for k in args.tables.split(",") if k.strip()] if args.tables else list(by_key)
    unknown = [k for k in keys if k not in by_key]
    if unknown or not keys:
        raise ValueError(f"--tables {args.tables!r}: expected names among {', '.join(by_key)}")
    report = make_report(
        out,
        face_set=face_set,
        natural_sets=natural,
        device=pick_device(args.device),
        lpips_net=args.lpips,
        data_dir=args.data_dir,
        figure_images=args.figure_images,
        tables=[by_key[k] for k in keys],
        on_table=lambda key: print(f"table {key}: done", file=sys.stderr),
    )
    print(report.path.read_text())
    print(f"wrote {report.path} and {', '.join(str(p) for p in report.tables.values())}")
    return report_failed("image(s) could not be scored", report.failed)


DEGRADATION_HELP = (
    "how the LR is made from each HR: bicubic (default, the protocol), a preset (blur_bicubic: Gaussian sigma 1.5 "
    "then bicubic; realistic) or a step list such as '[{blur: {sigma: 1.5}}, bicubic]'"
)


def register(sub: Any) -> None:
    """The evaluate, compare, report command parsers."""
    p = sub.add_parser("evaluate", help="score a model on benchmark sets (PSNR/SSIM on Y, LPIPS)")
    p.add_argument("--model", default="bicubic", help="bicubic, a shipped model's name, or a .safetensors file")
    p.add_argument("--sets", default="Set5,Set14,BSD100", help="comma-separated set names or folders of HR images")
    p.add_argument("--scale", type=scale_arg, default=None, help=SCALE_HELP)
    p.add_argument("--lpips", default="alex", choices=["alex", "vgg", "none"], help="LPIPS backbone")
    p.add_argument("-o", "--out", default=None, help="output folder (default runs/evaluate/MODEL; not inside a set)")
    p.add_argument("--save-images", action="store_true", help="also write the SR images")
    p.add_argument("--rgb", action="store_true", help="PSNR/SSIM on RGB instead of the Y channel")
    p.add_argument("--degradation", default="bicubic", help=DEGRADATION_HELP)
    p.add_argument(
        "--self-ensemble",
        action="store_true",
        help="score the model averaged over the 8 flips and 90-degree turns of each LR image (EDSR's '+')",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="auto (default): bf16 where native (AVX512-BF16/AMX CPUs, CUDA), else fp32; bicubic always runs exact. "
        "bf16 moves PSNR by ~0.004 dB (srresnet, Set5/Set14); pass fp32 for bit-exact tables across machines",
    )
    add_device_args(p)
    p.set_defaults(func=cmd_evaluate)

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
    p.add_argument("--scale", type=scale_arg, default=None, help=SCALE_HELP)
    p.add_argument("--degradation", default="bicubic", help=DEGRADATION_HELP)
    add_device_args(p)
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
    p.add_argument(
        "--tables",
        default=None,
        help="make only these, comma-separated: faces, faces_cross, natural, domains (default: all four); report.md "
        "then holds them and any made before into the same folder",
    )
    add_device_args(p)
    p.set_defaults(func=cmd_report)
