"""Learning-rate plans and the EMA decay ramp, as pure functions of the step (nothing kept between calls)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal

import torch

ScheduleKind = Literal["none", "multistep", "cosine"]


def lr_factor(
    step: int,
    *,
    kind: ScheduleKind = "none",
    milestones: Sequence[int] = (),
    gamma: float = 0.5,
    floor: float = 0.0,
    total: int = 1,
    warmup: int = 0,
) -> float:
    """The LR multiplier at `step` (0-based): a linear warm-up times the schedule.

    multistep: x gamma at each milestone passed; cosine: from 1 down to `floor` over `total` steps; none: 1.
    Closed form, so extending a run (a larger `total`) re-plans it from the step it is at.
    """
    # A linear warm-up lets a fresh optimizer (a fine-tune from init_from) learn its gradient scales
    # before it takes full-size steps; Adam's first steps are about lr per weight whatever the gradient.
    warm = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    if kind == "multistep":
        return warm * float(gamma ** sum(step >= m for m in milestones))
    if kind == "cosine":
        progress = min(step / total, 1.0)
        return warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
    if kind == "none":
        return warm
    raise ValueError(f"LR schedule {kind!r} unknown; expected none, multistep or cosine")


def plan(
    *,
    kind: ScheduleKind,
    base_lr: float,
    min_lr: float,
    total: int,
    milestones: Sequence[int] = (),
    gamma: float = 0.5,
    warmup: int = 0,
) -> Callable[[int], float]:
    """lr_factor with a run's settings bound; the cosine floor is min_lr as a fraction of base_lr."""
    floor = min(min_lr / base_lr, 1.0) if base_lr > 0 else 0.0
    return partial(
        lr_factor, kind=kind, milestones=tuple(milestones), gamma=gamma, floor=floor, total=total, warmup=warmup
    )


def ema_avg_fn(decay: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor | int], torch.Tensor]:
    """EMA update with warm-up: the decay ramps (1 + n) / (10 + n) up to `decay`, so early averages are not
    dominated by the random initial weights (with a fixed 0.999 they are for the first thousands of steps)."""

    def avg(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor | int) -> torch.Tensor:
        n = float(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        return averaged * d + current * (1 - d)

    return avg
