"""Synthetic images and networks shared by the test modules (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from srkit.models import build_generator


def smooth_rgb(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random uint8 (h, w, 3) image with some detail (coarse noise upsampled, plus fine noise)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2), 3), dtype=np.uint8)
    bands = [np.asarray(Image.fromarray(coarse[:, :, c]).resize((w, h), Image.Resampling.BICUBIC)) for c in range(3)]
    img = np.stack(bands, -1).astype(np.int16) + rng.integers(-8, 9, (h, w, 3))
    return img.clip(0, 255).astype(np.uint8)


def random_srresnet(seed: int = 0, **kwargs: int) -> nn.Module:
    """An SRResNet with random weights and random BatchNorm running statistics, in eval mode."""
    torch.manual_seed(seed)
    model = build_generator("srresnet", **kwargs)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            # Non-trivial running statistics: eval-mode BN must be used by every tile and runtime alike.
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def tiny_recipe(out_dir: Path, images: dict[str, Path], name: str = "run", **extra: Any) -> list[str]:
    """A tiny training recipe (width-8 SRResNet, 32 px crops, 4 fp32 steps) as dotted `key=value` overrides.

    `extra` uses '__' for '.', e.g. train__steps=3; `images` has "train" and "val" folders.
    """
    base: dict[str, Any] = {
        "name": name,
        "out_dir": str(out_dir),
        "data.train": [str(images["train"])],
        "data.val": str(images["val"]),
        "data.gt_size": 32,
        "data.batch_size": 2,
        "model.args": {"width": 8, "num_blocks": 1},
        "train.device": "cpu",
        "train.amp": "none",  # fp32: exact comparisons must not depend on the machine's bf16 support
        "train.lpips_net": "none",
        "train.tensorboard": False,
        "train.steps": 4,
        "train.log_every": 1,
        "train.val_every": 100,
        "train.save_every": 100,
    }
    base.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={json.dumps(v)}" for k, v in base.items()]  # JSON is YAML: paths and lists survive quoting


def sources_for(d: Any, data_dir: Any = None) -> Any:
    """gather_sources with a DataConfig's settings, as train.loop passes them."""
    from srkit.data.pipeline import gather_sources

    return gather_sources(
        d.train,
        d.val,
        data_dir=data_dir,
        split_ratios=d.split,
        split_seed=d.split_seed,
        group_by=d.group_by,
        partition_file=d.partition_file,
    )


def pairs_for(d: Any, sources: Any, *, scale: int = 4, seed: int = 0) -> Any:
    """build_pairs with a DataConfig's settings (no disk cache), as train.loop passes them."""
    from srkit.data.pipeline import build_pairs

    return build_pairs(
        sources,
        scale=scale,
        seed=seed,
        min_size=d.gt_size,
        degradation=d.degradation,
        val_degradation=d.val_degradation,
        face_crop=d.face_crop,
        face_margin=d.face_margin,
        hr_size=d.hr_size,
    )


def n_params(model: Any) -> int:
    """Learned parameters of a module (buffers such as BatchNorm statistics not counted)."""
    return sum(p.numel() for p in model.parameters())


def random_batch(n: int, h: int, w: int, seed: int = 0) -> Any:
    """A random (n, 3, h, w) float batch in [0, 1], seeded."""
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def textured_png(path: Path, w: int, h: int, seed: int = 0) -> Path:
    """A w x h RGB PNG of smooth random texture (random 4x-smaller noise, bicubic-upsized), folders made."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(1, h // 4), max(1, w // 4), 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC).save(path)
    return path


def noise_pngs(folder: Path, n: int, *, w: int = 40, h: int = 48) -> Path:
    """`folder` holding n w x h RGB PNGs of uniform noise (random_batch seeds 0..n-1), made if missing."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rgb = (random_batch(1, h, w, seed=i)[0].permute(1, 2, 0).numpy() * 255).astype("uint8")
        Image.fromarray(rgb).save(folder / f"v{i}.png")
    return folder
