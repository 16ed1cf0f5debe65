"""One table of trained models with how each was trained: `srkit compare`'s metrics plus steps, wall time and
hardware per row, and compare's figures (the same crops across every model). Used for the ladder (issue 16).

    python scripts/training_table.py -o runs/ladder \
        bicubic \
        autoencoder=$RUNS/ladder_autoencoder/checkpoints/best_psnr.safetensors \
        srgan6=$RUNS/ladder_srgan6/checkpoints/best_lpips.safetensors@$RUNS/ladder_srresnet6,$RUNS/ladder_srgan6 \
        "srgan16=srgan@41,000 + 2,400 | 250 + 52 min | AMD EPYC, 2 threads (its card)"

Each row is LABEL=MODEL, optionally @ the run folders that trained it (their steps and wall times are summed,
stage 1 first) or @ free text for a model whose runs are not on this machine (a shipped model: its card), as
"STEPS | WALL TIME | HARDWARE" to fill the three cells. A run
folder alone (LABEL=RUN) stands for its best_lpips weights and itself. Writes OUT/table.md (the table, the
protocol line, the command), OUT/compare.md/csv, OUT/per_image.csv and OUT/figures/.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from srkit import fs
from srkit.compare import ModelSpec, compare_models, markdown, parse_models, write_outputs
from srkit.device import pick_device
from srkit.evaluate import resolve_set
from srkit.metrics import LPIPS


@dataclass(frozen=True)
class Row:
    label: str
    model: str
    runs: tuple[Path, ...] = ()
    text: str = ""  # training info given as text (runs not on this machine)


def parse_row(item: str) -> Row:
    label, sep, rest = item.partition("=")
    if not sep:  # a bare model name: bicubic
        return Row(item, item)
    model, _, trained = rest.partition("@")
    if not trained and Path(model).is_dir():
        return Row(label, str(Path(model) / "checkpoints" / "best_lpips.safetensors"), (Path(model),))
    parts = [p for p in trained.split(",") if p]
    if parts and all(Path(p).is_dir() for p in parts):
        return Row(label, model, tuple(Path(p) for p in parts))
    return Row(label, model, (), trained)


def training_cells(row: Row) -> tuple[str, str, str]:
    """(steps, wall time, hardware) of a row: summed over its runs' summary.json, or its text."""
    if row.model == "bicubic":
        return "-", "-", "-"
    if not row.runs:  # "STEPS | WALL | HARDWARE" (from its card), or one text for all three
        cells = [c.strip() for c in row.text.split("|")] if row.text else ["see the model's card"]
        if len(cells) > 3:
            raise SystemExit(f"row {row.label!r}: '{row.text}' has {len(cells)} '|'-separated cells, expected 1 to 3")
        first, second, third = [*cells, "", ""][:3]
        return first, second, third
    steps, wall, hardware, approx = [], 0.0, [], False
    for run in row.runs:
        path = run / "summary.json"
        if path.is_file():
            s = json.loads(path.read_text())
            steps.append(str(s["step"]))
            wall += s.get("wall_seconds_total", s["wall_seconds_this_session"])
            hardware.append(s.get("hardware", s["device"]))
        else:  # stopped before it wrote a summary (killed): its step log, seconds per step x steps
            step, seconds = _from_history(run)
            steps.append(str(step))
            wall += seconds
            approx = True
    total = sum(int(x) for x in steps)
    shown = f"{total:,}" if len(steps) == 1 else f"{total:,} ({' + '.join(steps)})"
    unique = list(dict.fromkeys(hardware)) or ["?"]
    return shown, f"{'~' if approx else ''}{wall / 60:.0f} min", "; ".join(unique)


def _from_history(run: Path) -> tuple[int, float]:
    """(last logged step, training seconds) from history.csv: each row's sec_per_step over its steps."""
    path = run / "history.csv"
    if not path.is_file():
        raise SystemExit(f"{run}: neither summary.json nor history.csv (is it a run folder?)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{path}: no steps logged yet")
    prev, seconds = 0, 0.0
    for r in rows:
        step = int(r["step"])
        seconds += float(r["sec_per_step"]) * (step - prev)
        prev = step
    return prev, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="+", help="LABEL=MODEL[@RUN,RUN | @text], or a bare model name")
    parser.add_argument("--sets", default="Set5,Set14,BSD100")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--figure-images", type=int, default=1)
    parser.add_argument("--degradation", default=None, help="as srkit compare --degradation")
    args = parser.parse_args()

    rows = [parse_row(r) for r in args.rows]
    specs: list[ModelSpec] = []
    for row in rows:
        specs += parse_models([f"{row.label}={row.model}" if row.label != row.model else row.model])
    sets = [resolve_set(s) for s in args.sets.split(",")]
    device = pick_device("auto")
    result = compare_models(
        specs,
        sets,
        device=device,
        lpips_model=LPIPS("alex").to(device),
        lpips_net="alex",
        figure_images=args.figure_images,
        degradation=args.degradation,
    )
    write_outputs(result, args.out)
    table = markdown(result).splitlines()
    header_end = 2  # the header row and its rule; the model rows follow until the first blank line
    body_end = table.index("", header_end)
    table[0] += " steps | wall time | trained on |"
    table[1] += "---:|---:|---|"
    for i, row in zip(range(header_end, body_end), rows, strict=True):
        table[i] += " " + " | ".join(training_cells(row)) + " |"
    # The command as typed, with this machine's home folder written as ~ (tables go into the README).
    command = "python scripts/training_table.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    text = ("\n".join(table) + f"\n\nMade by `{command}`.\n").replace(str(Path.home()), "~")
    fs.atomic_write(args.out / "table.md", text.encode("utf-8"))
    print(text)
    return 1 if result.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
