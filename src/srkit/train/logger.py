"""Run logging on rank 0: CSV history, text log, TensorBoard, optional Weights & Biases, JSON summary."""

from __future__ import annotations

import csv
import json
import logging
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from srkit import fs

TRAIN_FIELDS = (
    "step",
    "loss_g",
    "l_pix",
    "l_low",
    "l_percep",
    "l_adv",
    "l_artif",
    "loss_d",
    "d_real",
    "d_fake",
    "lr_g",
    "lr_d",
    "img_per_s",
    "sec_per_step",
)
VAL_FIELDS = ("step", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "lpips_mean", "lpips_std")


def memory_report(device: torch.device) -> dict[str, float]:
    """Peak memory so far, in MiB: the accelerator's allocator on CUDA, process RSS everywhere."""
    report = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        report["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        report["cuda_peak_reserved_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
    return report


def _truncate_csv(path: Path, fields: tuple[str, ...], max_step: int) -> None:
    """Keep the rows up to max_step: a resumed run rewrites whatever came after its checkpoint."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= max_step]
    _write_csv(path, fields, rows)


def _write_csv(path: Path, fields: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields))
    writer.writeheader()
    writer.writerows(rows)
    fs.atomic_write(path, buf.getvalue().encode())


@dataclass
class LogWindow:
    """Logged values summed since the last history.csv row; each is averaged over the steps that logged it
    (G's losses skip discriminator warm-up steps). Part of a checkpoint, so rows after a resume are exact."""

    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    n: int = 0  # steps in the window
    started: float = field(default_factory=time.perf_counter)

    def add(self, logs: dict[str, float]) -> None:
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1
        self.n += 1

    def row(self, *, images_per_step: int) -> dict[str, float]:
        """The window's averages plus its speed: sec_per_step and img_per_s."""
        elapsed = time.perf_counter() - self.started
        row = {k: v / self.counts[k] for k, v in self.sums.items()}
        row["sec_per_step"] = elapsed / self.n
        row["img_per_s"] = self.n * images_per_step / elapsed
        return row

    def state(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "counts": dict(self.counts), "n": self.n}

    @classmethod
    def from_state(cls, saved: dict[str, Any] | None) -> LogWindow:
        """The window a checkpoint saved (empty for a fresh run or a checkpoint from before windows were saved)."""
        saved = saved or {}
        return cls(dict(saved.get("sums", {})), dict(saved.get("counts", {})), int(saved.get("n", 0)))


class RunLogger:
    """Writes everything a run reports; a no-op on ranks other than 0."""

    def __init__(
        self,
        run_dir: Path,
        *,
        enabled: bool,
        config: dict[str, Any],
        tensorboard: bool,
        wandb: bool,
        wandb_mode: str,
        resume_step: int | None = None,
    ) -> None:
        self.run_dir, self.enabled = run_dir, enabled
        self.log = logging.getLogger(f"srkit.train.{id(self)}")
        self.log.propagate = False
        self._tb: Any = None
        self._wandb: Any = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.log.setLevel(logging.INFO)
        handler = logging.FileHandler(run_dir / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.log.addHandler(handler)
        for name, fields in (("history.csv", TRAIN_FIELDS), ("val_history.csv", VAL_FIELDS)):
            if resume_step is not None:
                _truncate_csv(run_dir / name, fields, resume_step)
            if resume_step is None or not (run_dir / name).exists():
                # A fresh run starts clean, also over the logs of a run that died before its first checkpoint.
                _write_csv(run_dir / name, fields, [])
        if resume_step is None and (run_dir / "tensorboard").is_dir():
            shutil.rmtree(run_dir / "tensorboard")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step)
        if wandb:
            try:
                import wandb as wandb_lib
            except ImportError as err:
                raise ValueError(
                    "train.wandb is true but Weights & Biases is not installed: pip install 'srkit[wandb]'"
                ) from err
            init: Any = wandb_lib.init  # its `mode` is a Literal; ours is validated by the config
            self._wandb = init(
                project="srkit", name=run_dir.name, dir=str(run_dir), mode=wandb_mode, config=config, resume="allow"
            )

    def info(self, message: str) -> None:
        """A line in train.log (and on stderr, so it is seen above the progress bar)."""
        if self.enabled:
            self.log.info(message)
            print(message, file=sys.stderr, flush=True)

    def warning(self, message: str, *, stderr: bool = True) -> None:
        if self.enabled:
            self.log.warning(message)
            if stderr:
                print(f"WARNING: {message}", file=sys.stderr, flush=True)

    def rewind(self, step: int) -> None:
        """Forget what was logged after `step`: a rollback replays those steps and logs them again."""
        if not self.enabled:
            return
        for name, fields in (("history.csv", TRAIN_FIELDS), ("val_history.csv", VAL_FIELDS)):
            _truncate_csv(self.run_dir / name, fields, step)
        if self._tb is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb.close()
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=step + 1)

    def _append(self, name: str, fields: tuple[str, ...], row: dict[str, Any]) -> None:
        unknown = sorted(set(row) - set(fields))
        if unknown:  # a new logged value needs its column; dropping it silently would lose it
            raise KeyError(f"{name} has no column for {', '.join(unknown)}; expected keys among {', '.join(fields)}")
        with (self.run_dir / name).open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=list(fields)).writerow({k: row.get(k, "") for k in fields})

    def scalars(self, step: int, values: dict[str, float], *, prefix: str) -> None:
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"{prefix}/{k}", v, step)
        if self._wandb is not None:
            self._wandb.log({f"{prefix}/{k}": v for k, v in values.items()}, step=step)

    def train_row(self, step: int, values: dict[str, float]) -> None:
        """One row of history.csv plus the same scalars to TensorBoard / W&B."""
        if not self.enabled:
            return
        self._append("history.csv", TRAIN_FIELDS, {"step": step, **values})
        self.scalars(step, values, prefix="train")

    def val_row(self, step: int, values: dict[str, float | None]) -> None:
        """One row of val_history.csv."""
        if not self.enabled:
            return
        self._append("val_history.csv", VAL_FIELDS, {"step": step, **values})
        self.scalars(step, {k: v for k, v in values.items() if v is not None}, prefix="val")

    def image(self, step: int, tag: str, img: torch.Tensor) -> None:
        if self._tb is not None:
            self._tb.add_image(tag, img, step)

    def write_json(self, name: str, payload: dict[str, Any]) -> None:
        if self.enabled:
            fs.atomic_write(self.run_dir / name, (json.dumps(payload, indent=2) + "\n").encode())

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        for h in list(self.log.handlers):
            h.close()
            self.log.removeHandler(h)
