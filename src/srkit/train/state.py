"""Checkpoints are data: state dicts, RNG states, the step and the resolved config; loaded weights_only.

`Networks` is what trains (networks, optimisers, schedules, EMA, scaler); `Checkpoint` is latest.pt as a
dataclass, its `to_dict` the file layout (format 1, unchanged since the first runs so old runs resume).
"""

from __future__ import annotations

import io
import random
import warnings
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from srkit import fs
from srkit.train.step import unwrap

CHECKPOINT_FORMAT = 1  # the format_version of latest.pt


def rng_state() -> dict[str, Any]:
    """Every RNG a run touches: Python, NumPy, torch CPU and CUDA (plain tensors and ints only)."""
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np.asarray(np_state[1]).astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state captured."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise to memory, then write atomically: a crash never leaves a half-written checkpoint."""
    buffer = io.BytesIO()
    torch.save({"format_version": CHECKPOINT_FORMAT, **state}, buffer)
    fs.atomic_write(path, buffer.getvalue())


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with weights_only=True (no arbitrary code from pickles), checking its version."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated files and foreign pickles fail in several ways
        raise ValueError(f"{path}: not a readable srkit checkpoint ({err})") from err
    version = ckpt.get("format_version")
    if version != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {version!r}, this srkit reads format {CHECKPOINT_FORMAT}")
    return ckpt


@dataclass
class Networks:
    """What trains and the state of its training: the two networks, their optimisers and LR schedules,
    the generator's EMA and the fp16 loss scaler (a discriminator-less stage 1 leaves the D fields None)."""

    net_g: nn.Module
    opt_g: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    net_d: nn.Module | None = None
    opt_d: torch.optim.Optimizer | None = None
    sched_d: torch.optim.lr_scheduler.LRScheduler | None = None
    ema: AveragedModel | None = None

    @property
    def generator(self) -> nn.Module:
        """The generator to validate and export: the EMA one when there is one."""
        return self.ema.module if self.ema is not None else unwrap(self.net_g)

    def train(self) -> None:
        self.net_g.train()
        if self.net_d is not None:
            self.net_d.train()

    def lrs(self) -> dict[str, float]:
        """The current learning rates, as logged (lr_g, and lr_d with a discriminator)."""
        out = {"lr_g": float(self.opt_g.param_groups[0]["lr"])}
        if self.opt_d is not None:
            out["lr_d"] = float(self.opt_d.param_groups[0]["lr"])
        return out

    def step_schedules(self) -> None:
        with warnings.catch_warnings():
            # During D warm-up (and a skipped step) the schedules advance without an optimizer step.
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*optimizer.step", category=UserWarning)
            self.sched_g.step()
            if self.sched_d is not None:
                self.sched_d.step()

    def state(self) -> dict[str, Any]:
        """The state dicts a Checkpoint holds (its net_g ... scaler fields)."""
        return {
            "net_g": unwrap(self.net_g).state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "net_d": unwrap(self.net_d).state_dict() if self.net_d is not None else None,
            "opt_d": self.opt_d.state_dict() if self.opt_d is not None else None,
            "sched_d": self.sched_d.state_dict() if self.sched_d is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "ema_generator": self.ema.module.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict(),
        }

    def load(self, ckpt: Checkpoint) -> None:
        """Restore every state the checkpoint holds; the optimisers' LRs are then set by the caller's plan."""
        unwrap(self.net_g).load_state_dict(ckpt.net_g)
        self.opt_g.load_state_dict(ckpt.opt_g)
        self.sched_g.load_state_dict(ckpt.sched_g)
        if self.net_d is not None and self.opt_d is not None and self.sched_d is not None:
            unwrap(self.net_d).load_state_dict(_required(ckpt.net_d, "net_d"))
            self.opt_d.load_state_dict(_required(ckpt.opt_d, "opt_d"))
            self.sched_d.load_state_dict(_required(ckpt.sched_d, "sched_d"))
        if self.ema is not None:
            self.ema.load_state_dict(_required(ckpt.ema, "ema"))
        self.scaler.load_state_dict(ckpt.scaler)


def _required(value: dict[str, Any] | None, key: str) -> dict[str, Any]:
    if value is None:
        raise ValueError(
            f"checkpoint has no {key} state, but this run's config needs one (was it made by another recipe?)"
        )
    return value


@dataclass
class Checkpoint:
    """A run's latest.pt: the step, the resolved config, every state dict, the best scores, the RNG states
    (one per rank) and the partly filled log window. `to_dict` is the on-disk layout (format 1)."""

    step: int
    config: dict[str, Any]
    net_g: dict[str, Any]
    opt_g: dict[str, Any]
    sched_g: dict[str, Any]
    scaler: dict[str, Any]
    net_d: dict[str, Any] | None = None
    opt_d: dict[str, Any] | None = None
    sched_d: dict[str, Any] | None = None
    ema: dict[str, Any] | None = None
    ema_generator: dict[str, Any] | None = None  # the EMA weights alone, for model.init_from=latest.pt
    best: dict[str, dict[str, float]] = field(default_factory=dict)
    evals_without_gain: int = 0
    rng: list[dict[str, Any]] = field(default_factory=list)
    log_window: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0  # training wall time up to this step over all sessions (0 in older checkpoints)

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": CHECKPOINT_FORMAT, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "checkpoint") -> Checkpoint:
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - data.keys())
        if missing:
            raise ValueError(f"{source}: not a complete srkit checkpoint, missing {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: Path) -> None:
        save_checkpoint(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        return cls.from_dict(load_checkpoint(path), source=str(path))

    def rng_for(self, rank: int) -> dict[str, Any]:
        """This rank's RNG state (rank 0's when the run had fewer ranks)."""
        return self.rng[rank] if rank < len(self.rng) else self.rng[0]
