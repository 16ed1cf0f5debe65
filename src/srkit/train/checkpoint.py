"""Checkpoints are data: state dicts, RNG states, the step and the resolved config; loaded weights_only."""

from __future__ import annotations

import io as stdio
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from srkit import io

FORMAT_VERSION = 1


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
    buffer = stdio.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buffer)
    io.atomic_write(path, buffer.getvalue())


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
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {version!r}, this srkit reads format {FORMAT_VERSION}")
    return ckpt
