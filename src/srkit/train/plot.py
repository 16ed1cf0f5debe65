"""`srkit plot RUN_DIR`: losses, discriminator outputs, learning rate and validation metrics in one PNG."""

from __future__ import annotations

import csv
from pathlib import Path

from srkit import fs


def _read(path: Path) -> dict[str, list[tuple[int, float]]]:
    """CSV columns as (step, value) series, skipping empty cells."""
    series: dict[str, list[tuple[int, float]]] = {}
    if not path.exists():
        return series
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            step = int(row["step"])
            for k, v in row.items():
                if k != "step" and v not in ("", None):
                    series.setdefault(k, []).append((step, float(v)))
    return series


def plot_run(run_dir: Path, *, out: Path | None = None) -> Path:
    """Draw the run's curves; returns the PNG path (written atomically)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = _read(run_dir / "history.csv")
    val = _read(run_dir / "val_history.csv")
    if not train and not val:
        raise FileNotFoundError(f"no history.csv or val_history.csv with rows in {run_dir}: is it an srkit run?")
    panels = [
        ("generator losses", ["loss_g", "l_pix", "l_percep", "l_adv"], train, True),
        ("discriminator", ["loss_d", "d_real", "d_fake"], train, False),
        ("learning rate", ["lr_g", "lr_d"], train, True),
        ("throughput (images/s)", ["img_per_s"], train, False),
        ("val PSNR (dB, Y)", ["psnr_mean"], val, False),
        ("val SSIM (Y)", ["ssim_mean"], val, False),
        ("val LPIPS", ["lpips_mean"], val, False),
    ]
    panels = [p for p in panels if any(k in p[2] for k in p[1])]
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(11, 3.2 * rows), squeeze=False)
    for ax, (title, keys, data, log_y) in zip(axes.flat, panels, strict=False):
        for k in keys:
            if k in data:
                steps, values = zip(*data[k], strict=True)
                ax.plot(steps, values, label=k, marker="o" if data is val and len(steps) < 30 else None)
        if log_y and all(v > 0 for k in keys if k in data for _, v in data[k]):
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"srkit run: {run_dir.name}")
    fig.tight_layout()
    out = out or run_dir / "curves.png"
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    fs.atomic_write(out, buf.getvalue())
    return out
