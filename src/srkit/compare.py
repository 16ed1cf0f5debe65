"""`srkit compare`: several models x benchmark sets under one protocol -> a markdown table, a CSV and figures.

Each image is read and degraded once (evaluate.load_pair); every model is run and scored on it with
evaluate.evaluate_pair, the function `srkit evaluate` uses, so the numbers are exactly what it gives for each
model alone; for the first few images of a set the SRs are kept for the figure.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from srkit import fs
from srkit.descriptor import ModelDescriptor, open_model
from srkit.evaluate import (
    Degradation,
    ImageScore,
    SetSummary,
    benchmark_images,
    evaluate_pair,
    load_pair,
    make_lowres,
    summarize,
)
from srkit.inference import SELF_ENSEMBLE_TEXT, with_self_ensemble
from srkit.metrics import LPIPS, protocol
from srkit.models import build_generator, display_name, shipped_models

RUN_CHECKPOINTS = ("best_psnr", "best_ssim", "best_lpips")
# metric -> (column title, digits, higher is better)
METRICS = {"psnr": ("PSNR", 2, True), "ssim": ("SSIM", 4, True), "lpips": ("LPIPS", 4, False)}


@dataclass(frozen=True)
class ModelSpec:
    """One row of the comparison: its label, what open_model opens, and which weights it is."""

    label: str
    source: str
    # Rows with the same key hold the same weights (a run's best_psnr and best_ssim saved at one step)
    # and share one evaluation.
    key: str
    self_ensemble: bool = False  # MODEL+ : run as a geometric self-ensemble (inference.SelfEnsemble)


@dataclass
class FigureCase:
    """What one comparison figure shows: the LR input and captioned panels (bicubic, models, HR)."""

    set: str
    image: str
    lq: torch.Tensor
    panels: list[tuple[str, torch.Tensor]]


@dataclass
class Comparison:
    """Per-image scores and per-set summaries of every model, plus the figure material."""

    specs: list[ModelSpec]
    sets: list[str]
    scale: int
    lpips_net: str
    degradation: str = "bicubic"  # how the LR was made: the protocol's bicubic, or a preset / step list
    rows: dict[str, list[ImageScore]] = field(default_factory=dict)
    figures: list[FigureCase] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # images left out, with the reason

    def summary(self, label: str) -> dict[str, SetSummary]:
        """set -> its SetSummary for one model, as evaluate.summarize gives it."""
        return summarize(self.rows[label])

    @property
    def protocol(self) -> str:
        lr = "" if self.degradation == "bicubic" else f", LR degradation: {self.degradation}"
        plus = any(s.self_ensemble for s in self.specs)
        ensemble = f"; MODEL+ = {SELF_ENSEMBLE_TEXT}" if plus else ""
        return protocol() + f"; x{self.scale}{lr}, LPIPS net: {self.lpips_net}{ensemble}"

    @property
    def lr_text(self) -> str:
        """How the LR was made, for the table's footnote and the figure titles."""
        if self.degradation == "bicubic":
            return "MATLAB bicubic downscaling"
        return f"the `{self.degradation}` degradation (then MATLAB bicubic downscaling)"


def _weights_key(path: Path) -> str:
    """Identity of a weights file: its tensors (names, dtypes, shapes and bytes; the metadata left out), so rows
    holding the same weights (a run's best_psnr and best_ssim saved at one step, or two shipped names for one
    checkpoint) share one evaluation."""
    data = path.read_bytes()
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + size])
        header.pop("__metadata__", None)
    except (ValueError, UnicodeDecodeError):
        return str(path.resolve())  # not safetensors: open_model will say what is wrong with it
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    digest.update(data[8 + size :])
    return "tensors:" + digest.hexdigest()


def _run_specs(run_dir: Path, prefix: str) -> list[ModelSpec]:
    """A run folder's best_* checkpoints, labelled PREFIX:best_psnr and so on."""
    ckpt_dir = run_dir / "checkpoints"
    found = [ckpt_dir / f"{kind}.safetensors" for kind in RUN_CHECKPOINTS]
    found = [p for p in found if p.is_file()]
    if not found:
        names = ", ".join(f"checkpoints/{k}.safetensors" for k in RUN_CHECKPOINTS)
        raise ValueError(f"{run_dir} is a folder but not an srkit run with weights: expected one of {names}")
    return [ModelSpec(f"{prefix}:{p.stem}", str(p), _weights_key(p)) for p in found]


def _specs_of(target: str, label: str | None) -> list[ModelSpec]:
    path = Path(target)
    if path.is_dir():
        return _run_specs(path, label or path.resolve().name)
    if path.is_file():
        return [ModelSpec(label or display_name(path), target, _weights_key(path))]
    if (shipped := shipped_models().get(target)) is not None:
        return [ModelSpec(label or target, target, _weights_key(shipped))]
    return [ModelSpec(label or target, target, target)]  # bicubic, or a name open_model refuses


def parse_models(args: Sequence[str]) -> list[ModelSpec]:
    """Expand model arguments: NAME, WEIGHTS.safetensors, RUN_DIR (its best_* weights), each optionally LABEL=..."""
    specs: list[ModelSpec] = []
    for arg in args:
        label, target = None, arg
        if "=" in arg and not Path(arg).exists():
            label, _, target = arg.partition("=")
            if not label or not target:
                raise ValueError(f"model argument {arg!r}: expected LABEL=MODEL with both parts non-empty")
        # MODEL+ (EDSR's notation): MODEL averaged over the 8 flips and turns of its input
        ensemble = target.endswith("+") and not Path(target).exists()
        target = target[:-1] if ensemble else target
        found = _specs_of(target, label)
        if ensemble:
            plus = "" if label else "+"
            found = [replace(s, label=s.label + plus, key=s.key + "+", self_ensemble=True) for s in found]
        specs += found
    labels = [s.label for s in specs]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise ValueError(f"model labels must be unique, got {duplicates} twice; name them with LABEL=MODEL")
    if not specs:
        raise ValueError("compare needs at least one model (a name, a .safetensors file or a run folder)")
    return specs


def _describe(degradation: Degradation) -> str:
    """A degradation spec in one line: the preset's name, or the step list as compact YAML flow."""
    if degradation is None:
        return "bicubic"
    if isinstance(degradation, str):
        return degradation
    return json.dumps(list(degradation), separators=(",", ":"))


def compare_models(
    specs: Sequence[ModelSpec],
    sets: Sequence[tuple[str, Path]],
    *,
    scale: int | None = None,
    device: torch.device,
    lpips_model: LPIPS | None,
    lpips_net: str,
    figure_images: int = 2,
    on_image: Callable[[str], None] | None = None,
    degradation: Degradation = None,
) -> Comparison:
    """Score every model on every image of every set; keep the first `figure_images` SRs of each set."""
    if figure_images < 0:
        raise ValueError(f"--figure-images must be >= 0, got {figure_images}")
    models: dict[str, ModelDescriptor] = {}
    for spec in specs:
        if spec.key not in models:
            opened = open_model(spec.source, scale=scale, device=device)
            models[spec.key] = with_self_ensemble(opened) if spec.self_ensemble else opened
    scales = {spec.label: models[spec.key].scale for spec in specs}
    if len(set(scales.values())) != 1:
        raise ValueError(f"models upscale by different factors, cannot compare them: {scales}")
    scale = next(iter(scales.values()))
    # The figure's bicubic panel: the bicubic model when compared, else computed just for the figures.
    bicubic_label = next((s.label for s in specs if s.source == "bicubic"), None)
    bicubic = build_generator("bicubic", scale=scale) if bicubic_label is None else None
    lowres = make_lowres(degradation, scale=scale)
    result = Comparison(
        specs=list(specs),
        sets=[name for name, _ in sets],
        scale=scale,
        lpips_net=lpips_net,
        degradation=_describe(degradation),
    )
    result.rows = {spec.label: [] for spec in specs}
    for set_name, folder in sets:
        for i, path in enumerate(benchmark_images(folder)):
            scores: dict[str, ImageScore] = {}
            srs: dict[str, torch.Tensor] = {}
            try:
                gt, lq = load_pair(path, scale=scale, lowres=lowres)
                for key, model in models.items():
                    sr, scores[key] = evaluate_pair(
                        model,
                        gt,
                        lq,
                        set_name=set_name,
                        image=path.name,
                        scale=scale,
                        device=device,
                        lpips_model=lpips_model,
                    )
                    if i < figure_images:
                        srs[key] = sr.float()
            except (OSError, ValueError, RuntimeError) as err:
                # One bad image must not sink the table: it is left out for every model (rows stay aligned).
                result.failed.append((path, str(err)))
                if on_image is not None:
                    on_image(path.name)
                continue
            for spec in specs:
                result.rows[spec.label].append(scores[spec.key])
            if i < figure_images:
                if bicubic is None:  # bicubic is one of the compared models
                    b = next(s for s in specs if s.label == bicubic_label)
                    first = (_caption(b.label, scores[b.key]), srs[b.key])
                else:
                    sr_bic, score = evaluate_pair(
                        bicubic,
                        gt,
                        lq,
                        set_name=set_name,
                        image=path.name,
                        scale=scale,
                        device=torch.device("cpu"),
                        lpips_model=None,
                    )
                    first = (_caption("bicubic", score), sr_bic.float())
                others = [(_caption(s.label, scores[s.key]), srs[s.key]) for s in specs if s.label != bicubic_label]
                panels = [first, *others, ("HR (ground truth)", gt.float())]
                result.figures.append(FigureCase(set=set_name, image=path.name, lq=lq.float(), panels=panels))
            if on_image is not None:
                on_image(path.name)
    # A set whose every image failed has no row to show; its failures are in result.failed.
    scored = {row.set for rows in result.rows.values() for row in rows}
    result.sets = [name for name in result.sets if name in scored]
    if not result.sets:
        path, reason = result.failed[0]
        raise ValueError(f"no image could be scored ({len(result.failed)} failed; first: {path}: {reason})")
    return result


def _caption(label: str, score: ImageScore) -> str:
    """Panel caption: the label, then this image's PSNR / SSIM (/ LPIPS)."""
    parts = [f"{score.psnr:.2f} dB", f"SSIM {score.ssim:.4f}"]
    if score.lpips is not None:
        parts.append(f"LPIPS {score.lpips:.4f}")
    return f"{label}\n{' / '.join(parts)}"


def _columns(result: Comparison) -> list[tuple[str, str]]:
    """(set, metric) pairs with a value for at least one model, in table order."""
    return [
        (set_name, metric)
        for set_name in result.sets
        for metric in METRICS
        if any(result.summary(s.label)[set_name].mean(metric) is not None for s in result.specs)
    ]


def table_cells(result: Comparison) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """Header, formatted mean values (model x column) and which cells are the best of their column."""
    columns = _columns(result)
    header = ["model"] + [f"{set_name} {METRICS[m][0]} {'↑' if METRICS[m][2] else '↓'}" for set_name, m in columns]
    cells: list[list[str]] = []
    for spec in result.specs:
        summary = result.summary(spec.label)
        row = []
        for set_name, metric in columns:
            mean = summary[set_name].mean(metric)
            row.append("-" if mean is None else f"{mean:.{METRICS[metric][1]}f}")
        cells.append(row)
    best: list[list[bool]] = [[False] * len(columns) for _ in cells]
    for j, (_, metric) in enumerate(columns):
        values = [float(row[j]) for row in cells if row[j] != "-"]
        if not values:
            continue
        # Compared as printed: models equal at the shown precision are all bold.
        target = max(values) if METRICS[metric][2] else min(values)
        for i, row in enumerate(cells):
            best[i][j] = row[j] != "-" and float(row[j]) == target
    return header, cells, best


def markdown(result: Comparison) -> str:
    """compare.md: one table (rows = models, columns = metric per set, best in bold) and the protocol."""
    header, cells, best = table_cells(result)
    lines = [
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for spec, row, flags in zip(result.specs, cells, best, strict=True):
        shown = [f"**{v}**" if b else v for v, b in zip(row, flags, strict=True)]
        lines.append("| " + " | ".join([spec.label, *shown]) + " |")
    first = result.summary(result.specs[0].label)
    counts = ", ".join(f"{s} {first[s].images}" for s in result.sets)
    sources = "; ".join(f"`{s.label}` = `{s.source}`" for s in result.specs)
    lines += [
        "",
        f"Mean over images ({counts} images); **bold**: best in the column (↑ higher is better, ↓ lower).",
        "",
        f"Protocol: {result.protocol}. LR = {result.lr_text} of the HR cropped to a multiple of "
        f"the scale, rounded to 8 bits.",
        "",
        f"Models: {sources}.",
    ]
    return "\n".join(lines) + "\n"


def comparison_table(result: Comparison) -> Any:
    """The same table for the terminal (rich), the protocol on a line under it."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    header, cells, best = table_cells(result)
    table = Table(title=f"srkit compare x{result.scale}")
    for i, col in enumerate(header):
        table.add_column(col, justify="left" if i == 0 else "right")
    for spec, row, flags in zip(result.specs, cells, best, strict=True):
        table.add_row(spec.label, *(f"[bold]{v}[/bold]" if b else v for v, b in zip(row, flags, strict=True)))
    return Group(table, Text(f"Mean over images; bold: best per column. Protocol: {result.protocol}"))


def long_csv(result: Comparison) -> str:
    """compare.csv: one row per model x set x metric with mean, std (population) and n."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", "set", "metric", "mean", "std", "n"])
    for spec in result.specs:
        for set_name, entry in result.summary(spec.label).items():
            for metric in METRICS:
                mean, std = entry.mean(metric), entry.std(metric)
                if mean is not None:
                    writer.writerow([spec.label, set_name, metric, repr(mean), repr(std), entry.images])
    return buf.getvalue()


def per_image_csv(result: Comparison) -> str:
    """per_image.csv: evaluate's per-image rows with a model column in front."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["model", *ImageScore.__dataclass_fields__], lineterminator="\n")
    writer.writeheader()
    for spec in result.specs:
        for row in result.rows[spec.label]:
            writer.writerow({"model": spec.label, **asdict(row)})
    return buf.getvalue()


def write_outputs(result: Comparison, out_dir: Path) -> list[Path]:
    """Write compare.md, compare.csv, per_image.csv and figures/<set>_<image>.png (each atomically)."""
    from srkit.viz import compare_figure

    written: list[Path] = []
    for name, text in (
        ("compare.md", markdown(result)),
        ("compare.csv", long_csv(result)),
        ("per_image.csv", per_image_csv(result)),
    ):
        fs.atomic_write(out_dir / name, text.encode("utf-8"))
        written.append(out_dir / name)
    for case in result.figures:
        path = out_dir / "figures" / f"{case.set}_{Path(case.image).stem}.png"
        source = "MATLAB-bicubic" if result.degradation == "bicubic" else result.degradation
        title = f"{case.set} / {case.image}: x{result.scale} from {source} LR (red box: zoomed region)"
        fs.atomic_write(path, compare_figure(lq=case.lq, panels=case.panels, title=title, scale=result.scale))
        written.append(path)
    return written
