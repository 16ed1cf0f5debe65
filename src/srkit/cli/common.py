"""What the srkit commands share: console output, argument types, output-folder checks, batch reports."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def make_console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    # Piped output (logs, CI) has no terminal width: rich would assume 80 columns and cut wide tables.
    return Console(stderr=False, highlight=False, width=None if sys.stdout.isatty() else 160)


def advance(progress: Any, task: Any, _item: object) -> None:
    progress.advance(task)


def parse_sets(text: str, data_dir: str | None) -> list[tuple[str, Path]]:
    """--sets A,B,... -> (name, folder) pairs; naming no set at all is a user error."""
    from srkit.evaluate import resolve_set

    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise ValueError(f"--sets names no set: {text!r} (expected e.g. Set5,Set14 or a folder of HR images)")
    return [resolve_set(name, data_dir=data_dir) for name in names]


def refuse_out_inside(out_dir: Path, folders: Sequence[Path], what: str) -> None:
    """An output folder inside an input folder would be read back as input the next time: refuse it up front."""
    out = out_dir.resolve()
    for folder in folders:
        if out.is_relative_to(folder.resolve()):
            raise ValueError(
                f"output folder {out_dir} is inside the {what} {folder}: what srkit writes there would be read "
                "as input next time; choose an --out outside it"
            )


def resolve_precision(name: str, device: Any, model: Any = None) -> Any:
    """--precision NAME -> a torch dtype; "auto" picks bf16 only where it is native and says so once (stderr).

    `model` (a ModelDescriptor or module): auto keeps float32 for parameter-free models (bicubic: nothing to
    gain, exact arithmetic kept) and for models that cannot run in bf16 (ONNX graphs).
    """
    import torch

    from srkit.descriptor import describe
    from srkit.device import auto_precision, cpu_features
    from srkit.inference import PRECISIONS

    if name != "auto":
        return PRECISIONS[name]
    desc = describe(model) if model is not None else None
    if desc is not None and (desc.params == 0 or not desc.supports_bfloat16):
        return torch.float32
    dtype = auto_precision(device)
    if device.type == "cpu":
        why = "CPU has AVX512-BF16/AMX" if dtype == torch.bfloat16 else "no native bf16 on this CPU (AVX512-BF16/AMX)"
        flags = " ".join(k for k, v in cpu_features().items() if v)
        why += f"; flags: {flags or 'none'}"
    else:
        why = f"{device.type} {'with' if dtype == torch.bfloat16 else 'without'} bf16"
    print(f"precision auto -> {'bf16' if dtype == torch.bfloat16 else 'fp32'} ({why})", file=sys.stderr)
    return dtype


def refuse_existing(out: Path, *, overwrite: bool) -> None:
    """Commands that write one file never replace it unasked."""
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")


def progress_bar(label: str) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)


def report_failed(what: str, failed: Sequence[tuple[Path | str, str]]) -> int:
    """The end of a batch: list each file that failed and why (stderr); exit status 1 if any did, else 0."""
    if not failed:
        return 0
    print(f"{len(failed)} {what}:", file=sys.stderr)
    for path, reason in failed:
        print(f"  {path}: {reason}", file=sys.stderr)
    return 1


def report_skipped(kind: str, skipped: list[tuple[Path, str]]) -> int:
    return report_failed(f"file(s) skipped ({kind})", skipped)


def scale_arg(text: str) -> int:
    """--scale: an integer factor in 1..MAX_SCALE (checked before any work)."""
    from srkit.models import MAX_SCALE

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer factor such as 4, got {text!r}") from None
    if not 1 <= value <= MAX_SCALE:
        raise argparse.ArgumentTypeError(f"expected a factor in 1..{MAX_SCALE}, got {value}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def ext_arg(text: str) -> str:
    """--ext: an output format srkit writes (png, jpg, ...), checked before any work."""
    from srkit.fs import IMAGE_SUFFIXES

    ext = "." + text.strip().lower().lstrip(".")
    if ext not in IMAGE_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"srkit writes {', '.join(sorted(e[1:] for e in IMAGE_SUFFIXES))}; got {text!r}"
        )
    return ext


SCALE_HELP = "upscaling factor of the bicubic baseline (default 4); a trained model has its own and refuses another"


def add_device_args(p: argparse.ArgumentParser, *, data_dir: bool = True) -> None:
    """--device, and --data-dir unless the command reads no data folder."""
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    if data_dir:
        p.add_argument("--data-dir", default=None, help="data folder (default: $SRKIT_DATA, else ../shared/data)")


def degradation_spec(text: str) -> Any:
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
