"""`srkit report`: the first report's four tables of the dual-model system, made by one command.

1. the face model on the face test split (SRResNet vs SRGAN best by PSNR / SSIM / LPIPS);
2. the face model on natural images (cross-domain);
3. the natural model on natural images (the same four rows);
4. domain specialisation: both models on both domains.

Each table is an `srkit compare` (bicubic first, the protocol under it, LR | bicubic | models | HR figures
with zoomed crops). The face test split is the identity-disjoint 5% of LFW that the face recipes hold out
(data.split 0.8/0.15/0.05, seed 0, group_by lfw), face-cropped and resized to 128 px as in training; it is
written once under the output folder. A model that is not shipped is left out of its table, which says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from srkit import fs
from srkit.compare import compare_models, markdown, parse_models, write_outputs
from srkit.metrics import LPIPS
from srkit.models import available_models

FACE_SET = "LFW-test"
SECTION = "section.md"  # one table's part of report.md, written in its folder
NATURAL_SETS = ("Set5", "Set14", "BSD100")
# (label, model name) rows; the SRGAN's best-LPIPS generator is the plain name, the others carry the metric.
FACE_ROWS = (
    ("bicubic", "bicubic"),
    ("SRResNet (faces)", "srresnet_faces"),
    ("SRGAN best-PSNR (faces)", "srgan_faces_psnr"),
    ("SRGAN best-SSIM (faces)", "srgan_faces_ssim"),
    ("SRGAN best-LPIPS (faces)", "srgan_faces"),
)
NATURAL_ROWS = (
    ("bicubic", "bicubic"),
    ("SRResNet (natural)", "srresnet"),
    ("SRGAN best-PSNR (natural)", "srgan_psnr"),
    ("SRGAN best-SSIM (natural)", "srgan_ssim"),
    ("SRGAN best-LPIPS (natural)", "srgan"),
)
DOMAIN_ROWS = (
    ("bicubic", "bicubic"),
    ("SRResNet (faces)", "srresnet_faces"),
    ("SRGAN (faces)", "srgan_faces"),
    ("SRResNet (natural)", "srresnet"),
    ("SRGAN (natural)", "srgan"),
)


@dataclass(frozen=True)
class TableSpec:
    key: str
    title: str
    rows: tuple[tuple[str, str], ...]
    sets: tuple[str, ...]


TABLES = (
    TableSpec("faces", "1. Face model on the face test split", FACE_ROWS, (FACE_SET,)),
    TableSpec("faces_cross", "2. Face model on natural images (cross-domain)", FACE_ROWS, NATURAL_SETS),
    TableSpec("natural", "3. Natural model on natural images", NATURAL_ROWS, NATURAL_SETS),
    TableSpec("domains", "4. Domain specialisation: each model on each domain", DOMAIN_ROWS, (FACE_SET, "Set14")),
)


@dataclass
class Report:
    """What was written: report.md and each table's compare folder; rows left out, images that failed."""

    path: Path
    tables: dict[str, Path] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def face_test_split(lfw_dir: Path, out_dir: Path) -> Path:
    """The LFW test split as HR files (face crop, 128 px), written once to out_dir/HQ; returns that folder."""
    from srkit.data.lowres import hr_preprocess
    from srkit.data.prepare import prepare_pairs
    from srkit.data.sources import group_key, split

    files = fs.list_images([lfw_dir])
    test = split(files, (0.8, 0.15, 0.05), seed=0, key=group_key("lfw"))["test"]
    hq = out_dir / "HQ"
    if hq.is_dir() and len(fs.list_images([hq])) == len(test):
        return hq  # made before from the same split (the split is a pure function of the file names)
    preprocess = hr_preprocess(face_crop=True, hr_size=(128, 128))
    report = prepare_pairs(test, out_dir, preprocess=preprocess, overwrite=True)
    if not report.written:
        raise ValueError(f"no face test images could be prepared from {lfw_dir}: {report.skipped[:3]}")
    return hq


def make_report(
    out_dir: Path,
    *,
    face_set: Path,
    natural_sets: dict[str, Path],
    device: torch.device,
    lpips_net: str = "alex",
    data_dir: str | Path | None = None,
    figure_images: int = 1,
    tables: Sequence[TableSpec] = TABLES,
    on_table: Callable[[str], None] | None = None,
) -> Report:
    """Run every table's compare and write out_dir/report.md (tables, protocols and figure links)."""
    known = set(available_models())
    sets = {FACE_SET: face_set, **natural_sets}
    lpips_model = None if lpips_net == "none" else LPIPS(lpips_net, data_dir=data_dir).to(device)
    report = Report(out_dir / "report.md")
    lines = [
        "# srkit report: the dual-model system (faces and natural images)",
        "",
        f"Face test split `{FACE_SET}`: the identity-disjoint 5% of LFW held out by the face recipes (split "
        "0.8/0.15/0.05, seed 0, `group_by: lfw`), face-cropped and resized to 128x128 as in training; never "
        "used for training, validation or any choice. SRGAN rows: the generators best by validation PSNR, "
        "SSIM and LPIPS of one fine-tuning run; `srgan_faces` and `srgan` are the best-LPIPS ones.",
        "",
    ]
    for spec in tables:
        rows = [f"{label}={name}" for label, name in spec.rows if name in known]
        report.missing[spec.key] = [name for _, name in spec.rows if name not in known]
        section = [f"## {spec.title}", ""]
        if len(rows) < 2:
            section += [f"Not made: needs the shipped models {', '.join(report.missing[spec.key])}.", ""]
        else:
            result = compare_models(
                parse_models(rows),
                [(name, sets[name]) for name in spec.sets],
                device=device,
                lpips_model=lpips_model,
                lpips_net=lpips_net,
                figure_images=figure_images,
            )
            written = write_outputs(result, out_dir / spec.key)
            report.tables[spec.key] = out_dir / spec.key
            report.failed += result.failed
            section += [markdown(result).rstrip(), ""]
            if report.missing[spec.key]:
                section += [f"Left out (not shipped): {', '.join(report.missing[spec.key])}.", ""]
            figures = [p for p in written if p.suffix == ".png"]
            section += [f"![{spec.title}: {p.stem}]({p.relative_to(out_dir).as_posix()})" for p in figures] + [""]
        # Each table's section is kept beside its outputs, so report.md holds every table made so far, also
        # those of an earlier `srkit report --tables ...` into the same folder.
        fs.atomic_write(out_dir / spec.key / SECTION, ("\n".join(section).rstrip() + "\n").encode("utf-8"))
        if on_table is not None:
            on_table(spec.key)
    standard = {t.key for t in TABLES}
    for spec in [*TABLES, *(t for t in tables if t.key not in standard)]:
        path = out_dir / spec.key / SECTION
        if path.is_file():
            lines += [path.read_text(encoding="utf-8").rstrip(), ""]
        elif spec.key in standard:
            lines += [f"## {spec.title}", "", f"Not made yet: `srkit report --tables {spec.key}`.", ""]
    fs.atomic_write(report.path, ("\n".join(lines).rstrip() + "\n").encode("utf-8"))
    return report
