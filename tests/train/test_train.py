"""Tests for the training subsystem (srkit.train) on tiny recipes: a few steps of a width-8 SRResNet on CPU.

Artifacts, stage 2 (GAN) variants, exact resume, best-checkpoint selection, early stopping, DDP with two
CPU processes, AMP, plotting and the patch dataset. Tests marked `# Regression:` guard bugs that were
found and fixed; the comment at each says what went wrong and where the fix lives.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from srkit import image_io
from srkit.cli import main
from srkit.config import Config, load_config
from srkit.data.datasets import IndexRange, PairSet, PatchDataset, load_pairs, sample_seed
from srkit.data.degradations import bicubic_degrade
from srkit.data.lowres import LowRes
from srkit.evaluate import SetSummary
from srkit.models import load_model, read_metadata
from srkit.train import loop
from srkit.train.logger import TRAIN_FIELDS
from srkit.train.loop import fit
from srkit.train.schedule import ema_avg_fn
from srkit.train.state import CHECKPOINT_FORMAT, load_checkpoint
from srkit.train.validate import ValResult, update_best
from testkit import smooth_rgb, tiny_recipe

LOSS_COLUMNS = ("loss_g", "l_pix", "l_percep", "l_adv", "loss_d", "d_real", "d_fake", "lr_g", "lr_d")
GAN_COLUMNS = ("loss_d", "d_real", "d_fake", "l_adv")


pytestmark = pytest.mark.usefixtures("one_thread")


# data and recipes -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """train/: 6 usable PNGs (64x64, 80x48), one corrupt file, one image smaller than the crop; val/: 2 of 48x48."""
    root = tmp_path_factory.mktemp("images")
    train, val = root / "train", root / "val"
    train.mkdir()
    val.mkdir()
    for i in range(3):
        Image.fromarray(smooth_rgb(64, 64, i)).save(train / f"square{i}.png")
        Image.fromarray(smooth_rgb(48, 80, 10 + i)).save(train / f"wide{i}.png")
    (train / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    Image.fromarray(smooth_rgb(20, 20, 30)).save(train / "small.png")
    for i in range(2):
        Image.fromarray(smooth_rgb(48, 48, 40 + i)).save(val / f"val{i}.png")
    return {"train": train, "val": val}


def _overrides(out_dir: Path, images: dict[str, Path], name: str = "run", **extra: Any) -> list[str]:
    return tiny_recipe(out_dir, images, name, **extra)


def _tiny(out_dir: Path, images: dict[str, Path], name: str = "run", **extra: Any) -> Config:
    return load_config(None, _overrides(out_dir, images, name, **extra))


def _gan(init_from: Path, **extra: Any) -> dict[str, Any]:
    """Stage-2 settings: the tiny SRGAN discriminator, an adversarial loss, the stage-1 weights."""
    settings: dict[str, Any] = {
        "model.init_from": str(init_from),
        "discriminator.arch": "srgan",
        "discriminator.args": {"channels": [8, 8, 16, 16], "hidden": 16},
        "loss.adversarial_weight": 0.001,
        "optim.lr_d": 1e-4,
    }
    settings.update({k.replace("__", "."): v for k, v in extra.items()})
    return {k.replace(".", "__"): v for k, v in settings.items()}


def _vgg16(data_dir: Path) -> dict[str, Any]:
    return {
        "data_dir": str(data_dir),
        "loss__perceptual_weight": 0.006,
        "loss__perceptual_arch": "vgg16",
        "loss__perceptual_layer": "relu2_2",
    }


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _history(run: Path) -> list[dict[str, str]]:
    return _rows(run / "history.csv")


def _assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory, images: dict[str, Path]) -> tuple[Config, Path]:
    """A 4-step stage-1 run with every artifact on: validation and milestones every 2 steps, TensorBoard."""
    out = tmp_path_factory.mktemp("stage1")
    config = _tiny(
        out, images, train__steps=4, train__val_every=2, train__save_every=2, train__tensorboard=True, optim__lr_g=1e-3
    )
    return config, fit(config)


# a. stage 1 artifacts --------------------------------------------------------------------------------------


def test_stage1_writes_every_artifact(stage1: tuple[Config, Path]) -> None:
    config, run = stage1
    assert run == Path(config.out_dir) / "run"

    # The resolved config, loadable as it was given.
    assert load_config(run / "config.yaml") == config

    # One history row per step, finite losses and LR.
    rows = _history(run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert list(rows[0]) == list(TRAIN_FIELDS)
    for r in rows:
        for k in ("loss_g", "l_pix", "lr_g", "sec_per_step", "img_per_s"):
            assert math.isfinite(float(r[k])), (k, r)
        assert float(r["loss_g"]) == float(r["l_pix"]) > 0
        assert r["loss_d"] == r["l_adv"] == r["l_percep"] == ""  # stage 1: no D, no VGG
        assert float(r["lr_g"]) == pytest.approx(1e-3)

    val_rows = _rows(run / "val_history.csv")
    assert [int(r["step"]) for r in val_rows] == [2, 4]
    for r in val_rows:
        assert math.isfinite(float(r["psnr_mean"])) and 0 < float(r["ssim_mean"]) <= 1
        assert r["lpips_mean"] == ""

    for step in (2, 4):
        per_image = _rows(run / "val" / f"step{step:07d}.csv")
        assert sorted(r["image"] for r in per_image) == ["val0.png", "val1.png"]
        summary = json.loads((run / "val" / f"step{step:07d}.json").read_text())
        assert summary["step"] == step and summary["set"] == "val" and summary["images"] == 2
        # The sample grid: LR | bicubic | SR | HR, one 48x48 row per validation image, 2px padding.
        grid = image_io.read_rgb(run / "samples" / f"step{step:07d}.png")
        assert tuple(grid.shape) == (3, 2 * 48 + 3 * 2, 4 * 48 + 5 * 2)

    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt["format_version"] == CHECKPOINT_FORMAT
    assert ckpt["step"] == 4
    assert ckpt["config"] == config.model_dump(mode="json")
    for key in ("net_g", "opt_g", "sched_g", "scaler", "rng", "best"):
        assert ckpt[key] is not None, key
    assert ckpt["net_d"] is None and ckpt["opt_d"] is None and ckpt["ema"] is None
    assert len(ckpt["rng"]) == 1 and {"python", "numpy", "torch"} <= set(ckpt["rng"][0])
    assert ckpt["sched_g"]["last_epoch"] == 4
    # weights_only loading of a file that is not a checkpoint fails with a clear error.
    bad = run.parent / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable srkit checkpoint"):
        load_checkpoint(bad)

    ckpt_dir = run / "checkpoints"
    names = sorted(p.name for p in ckpt_dir.iterdir())
    assert names == [
        "best_psnr.safetensors",
        "best_ssim.safetensors",
        "generator_step0000002.safetensors",
        "generator_step0000004.safetensors",
        "latest.pt",
    ]  # no best_lpips without LPIPS
    assert read_metadata(ckpt_dir / "generator_step0000004.safetensors")["kind"] == "milestone"
    _assert_same_tensors(load_file(str(ckpt_dir / "generator_step0000004.safetensors")), ckpt["net_g"])

    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 4 and summary["steps_this_session"] == 4
    assert summary["stop_reason"] == "finished"
    assert summary["world_size"] == 1 and summary["device"] == "cpu"
    assert "threads, flags:" in summary["hardware"] and torch.__version__ in summary["hardware"]
    assert " INFO command: " in (run / "train.log").read_text()  # how the run was started, for its card
    assert summary["wall_seconds_this_session"] > 0
    assert summary["memory"]["peak_rss_mib"] > 0
    assert set(summary["best"]) == {"psnr", "ssim"}

    log = (run / "train.log").read_text()
    assert "skipped training image" in log
    assert "corrupt.png" in log and "small.png" in log
    assert "6 training images" in log
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_stage1_exports_load_and_upscale(stage1: tuple[Config, Path]) -> None:
    _, run = stage1
    for metric in ("psnr", "ssim"):
        path = run / "checkpoints" / f"best_{metric}.safetensors"
        meta = read_metadata(path)
        assert meta["arch"] == "srresnet" and meta["kind"] == f"best_{metric}" and meta["val_set"] == "val"
        assert json.loads(meta["arch_kwargs"]) == {"scale": 4, "width": 8, "num_blocks": 1}
        model = load_model(path)
        with torch.no_grad():
            out = model(torch.rand(1, 3, 12, 10))
        assert out.shape == (1, 3, 48, 40)
        assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_skipped_files_and_no_usable_images(tmp_path: Path, images: dict[str, Path]) -> None:
    pairs = load_pairs([images["train"]], lowres=LowRes(4), min_size=32)
    assert len(pairs.gt) == 6
    assert sorted(p.name for p, _ in pairs.skipped) == ["corrupt.png", "small.png"]
    assert any("smaller than the 32px crop" in reason for _, reason in pairs.skipped)
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    shutil.copy(images["train"] / "corrupt.png", only_bad)
    config = _tiny(tmp_path / "runs", images, data__train=[str(only_bad)])
    with pytest.raises(ValueError, match="no usable training images"):
        fit(config)


# b. stage 2 -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("adversarial", ["vanilla", "lsgan", "ragan"])
def test_stage2_trains_gan_with_vgg(
    tmp_path: Path, images: dict[str, Path], stage1: tuple[Config, Path], data_dir: Path, adversarial: str
) -> None:
    init = stage1[1] / "checkpoints" / "best_psnr.safetensors"
    config = _tiny(
        tmp_path,
        images,
        train__steps=2,
        train__val_every=2,
        **_gan(init, loss__adversarial=adversarial),
        **_vgg16(data_dir),
    )
    run = fit(config)
    rows = _history(run)
    assert [int(r["step"]) for r in rows] == [1, 2]
    for r in rows:
        for k in (*GAN_COLUMNS, "l_percep", "loss_g", "l_pix", "lr_d"):
            assert r[k] != "" and math.isfinite(float(r[k])), (k, r)
        assert 0 < float(r["d_real"]) < 1 and 0 < float(r["d_fake"]) < 1
        assert float(r["l_percep"]) > 0
        parts = float(r["l_pix"]) + float(r["l_percep"]) + float(r["l_adv"])
        assert float(r["loss_g"]) == pytest.approx(parts, rel=1e-5)
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt["net_d"] is not None and ckpt["opt_d"] is not None and ckpt["sched_d"] is not None


def test_stage2_starts_from_init_weights(tmp_path: Path, images: dict[str, Path], stage1: tuple[Config, Path]) -> None:
    init = stage1[1] / "checkpoints" / "best_psnr.safetensors"
    init_state = load_file(str(init))
    # D warm-up for every step: G is never updated, so it must still be the init file's generator.
    frozen = fit(_tiny(tmp_path, images, "frozen", train__steps=2, **_gan(init, optim__d_warmup_steps=2)))
    rows = _history(frozen)
    assert all(r["loss_g"] == "" and r["loss_d"] != "" for r in rows)
    net_g = load_checkpoint(frozen / "checkpoints" / "latest.pt")["net_g"]
    params = {k for k, _ in load_model(init).named_parameters()}
    _assert_same_tensors({k: net_g[k] for k in params}, {k: init_state[k] for k in params})
    # With no warm-up, G moves.
    moved = fit(_tiny(tmp_path, images, "moved", train__steps=2, **_gan(init, optim__d_warmup_steps=0)))
    net_g = load_checkpoint(moved / "checkpoints" / "latest.pt")["net_g"]
    assert any(not torch.equal(net_g[k], init_state[k]) for k in params)


def test_stage2_warmup_leaves_generator_buffers_alone(
    tmp_path: Path, images: dict[str, Path], stage1: tuple[Config, Path]
) -> None:
    # Regression: during discriminator warm-up (optim.d_warmup_steps) the generator runs `net_g(lq)` under
    # no_grad but in train mode, so its BatchNorm running statistics keep moving: after a warm-up-only
    # run, latest.pt's net_g (and every export) differs from the init weights, and the warm-up's
    # "frozen" G feeds D batch-statistics outputs. Fix (loop.py, the `else` branch of `if train_g`):
    # run G in eval mode there, e.g. `unwrap(net_g).eval(); sr = net_g(lq); unwrap(net_g).train()`.
    init = stage1[1] / "checkpoints" / "best_psnr.safetensors"
    run = fit(_tiny(tmp_path, images, train__steps=2, **_gan(init, optim__d_warmup_steps=2)))
    _assert_same_tensors(load_checkpoint(run / "checkpoints" / "latest.pt")["net_g"], load_file(str(init)))


def test_freeze_bn_keeps_running_statistics_and_trains_the_affine(
    tmp_path: Path, images: dict[str, Path], stage1: tuple[Config, Path]
) -> None:
    # model.freeze_bn: BatchNorm normalises with the init's running statistics in training too (no train/eval
    # mismatch), while every parameter, BatchNorm's scale and shift included, still learns.
    init = stage1[1] / "checkpoints" / "best_psnr.safetensors"
    init_state = load_file(str(init))
    stats = [k for k in init_state if k.endswith(("running_mean", "running_var"))]
    assert stats
    frozen = fit(_tiny(tmp_path, images, "frozen_bn", train__steps=3, model__freeze_bn=True, **_gan(init)))
    net_g = load_checkpoint(frozen / "checkpoints" / "latest.pt")["net_g"]
    _assert_same_tensors({k: net_g[k] for k in stats}, {k: init_state[k] for k in stats})
    bn_affine = [k.rsplit(".", 1)[0] + ".weight" for k in stats if k.endswith("running_mean")]
    assert all(not torch.equal(net_g[k], init_state[k]) for k in bn_affine)
    # Without it the same run moves the running statistics.
    plain = fit(_tiny(tmp_path, images, "plain_bn", train__steps=3, **_gan(init)))
    net_g = load_checkpoint(plain / "checkpoints" / "latest.pt")["net_g"]
    assert any(not torch.equal(net_g[k], init_state[k]) for k in stats)


def test_freeze_bn_on_a_generator_without_batchnorm_is_refused(tmp_path: Path, images: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"model\.freeze_bn: rrdbnet has no BatchNorm"):
        fit(
            _tiny(
                tmp_path,
                images,
                model__arch="rrdbnet",
                model__args={"width": 8, "num_blocks": 1, "growth": 4},
                model__freeze_bn=True,
            )
        )


def test_stage2_init_from_checkpoint_and_mismatch(
    tmp_path: Path, images: dict[str, Path], stage1: tuple[Config, Path]
) -> None:
    latest = stage1[1] / "checkpoints" / "latest.pt"
    run = fit(_tiny(tmp_path, images, "from_pt", train__steps=1, **_gan(latest, optim__d_warmup_steps=1)))
    net_g = load_checkpoint(run / "checkpoints" / "latest.pt")["net_g"]
    source = load_checkpoint(latest)["net_g"]
    assert torch.equal(net_g["head.0.weight"], source["head.0.weight"])
    wrong = _tiny(tmp_path, images, "wrong", train__steps=1, model__args={"width": 16, "num_blocks": 1})
    wrong.model.init_from = str(stage1[1] / "checkpoints" / "best_psnr.safetensors")
    with pytest.raises(ValueError, match="do not fit"):
        fit(wrong)


# c. resume ------------------------------------------------------------------------------------------------


def _compare_histories(a: Path, b: Path, steps: int) -> None:
    rows_a, rows_b = _history(a), _history(b)
    assert [int(r["step"]) for r in rows_a] == list(range(1, steps + 1))
    assert [int(r["step"]) for r in rows_b] == list(range(1, steps + 1))
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for k in LOSS_COLUMNS:
            assert ra[k] == rb[k], (ra["step"], k, ra[k], rb[k])  # exactly: the CSV holds repr-exact floats


def test_resume_equals_uninterrupted_stage1(tmp_path: Path, images: dict[str, Path]) -> None:
    settings = {
        "train__val_every": 3,
        "train__save_every": 3,
        "train__ema_decay": 0.9,
        "optim__lr_g": 1e-3,
        "optim__scheduler": "multistep",
        "optim__milestones": [4],
        "optim__gamma": 0.1,
    }
    straight = fit(_tiny(tmp_path, images, "A", train__steps=6, **settings))
    first = fit(_tiny(tmp_path, images, "B", train__steps=3, **settings))
    first_wall = load_checkpoint(first / "checkpoints" / "latest.pt")["wall_seconds"]
    # A stale row after the checkpoint (as a crash after logging would leave) must be dropped on resume.
    with (first / "history.csv").open("a", newline="") as f:
        csv.writer(f).writerow([5, 999.0, 999.0] + [""] * (len(TRAIN_FIELDS) - 3))
    with (first / "val_history.csv").open("a", newline="") as f:
        csv.writer(f).writerow([5, 99.0, 0.0, 0.9, 0.0, "", ""])
    resumed = fit(load_config(first / "config.yaml", ["train.steps=6"]), resume=first)
    assert resumed == first

    _compare_histories(straight, resumed, 6)
    lrs = [float(r["lr_g"]) for r in _history(resumed)]
    # lr_g is the rate each step trained with: milestone 4 means 4 steps at 1e-3, then 1e-4.
    assert lrs[:4] == [1e-3] * 4 and lrs[4:] == pytest.approx([1e-4] * 2)
    assert all(float(r["loss_g"]) < 999 for r in _history(resumed))
    assert [int(r["step"]) for r in _rows(resumed / "val_history.csv")] == [3, 6]
    assert [r["psnr_mean"] for r in _rows(resumed / "val_history.csv")] == [
        r["psnr_mean"] for r in _rows(straight / "val_history.csv")
    ]

    ca = load_checkpoint(straight / "checkpoints" / "latest.pt")
    cb = load_checkpoint(resumed / "checkpoints" / "latest.pt")
    assert ca["step"] == cb["step"] == 6
    _assert_same_tensors(ca["net_g"], cb["net_g"])
    _assert_same_tensors(ca["ema"], cb["ema"])
    _assert_same_tensors(ca["ema_generator"], cb["ema_generator"])
    assert ca["sched_g"] == cb["sched_g"]
    assert ca["best"] == cb["best"]
    _assert_same_tensors(
        load_file(str(straight / "checkpoints" / "best_psnr.safetensors")),
        load_file(str(resumed / "checkpoints" / "best_psnr.safetensors")),
    )
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["step"] == 6 and summary["steps_this_session"] == 3
    assert "resumed from" in (resumed / "train.log").read_text()
    # Wall time adds up over sessions: the first session's, to its checkpoint at step 3, plus this one's.
    assert summary["wall_seconds_total"] == pytest.approx(first_wall + summary["wall_seconds_this_session"])
    assert cb["wall_seconds"] > first_wall > 0 and ca["wall_seconds"] > 0


def test_resume_equals_uninterrupted_stage2(
    tmp_path: Path, images: dict[str, Path], stage1: tuple[Config, Path]
) -> None:
    init = stage1[1] / "checkpoints" / "best_psnr.safetensors"
    settings = _gan(init, loss__adversarial="ragan", optim__d_warmup_steps=1, optim__lr_d=1e-3)
    straight = fit(_tiny(tmp_path, images, "A", train__steps=4, train__val_every=2, **settings))
    first = fit(_tiny(tmp_path, images, "B", train__steps=2, train__val_every=2, **settings))
    resumed = fit(load_config(first / "config.yaml", ["train.steps=4"]), resume=first)
    _compare_histories(straight, resumed, 4)
    assert all(_history(resumed)[i][k] != "" for i in range(4) for k in GAN_COLUMNS[:3])
    ca = load_checkpoint(straight / "checkpoints" / "latest.pt")
    cb = load_checkpoint(resumed / "checkpoints" / "latest.pt")
    _assert_same_tensors(ca["net_g"], cb["net_g"])
    _assert_same_tensors(ca["net_d"], cb["net_d"])


def test_resume_via_cli(tmp_path: Path, images: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    straight = fit(_tiny(tmp_path, images, "A", train__steps=4, train__val_every=2))
    first = fit(_tiny(tmp_path, images, "B", train__steps=2, train__val_every=2))
    assert main(["train", "--resume", str(first), "--train.steps=4"]) == 0
    assert "run folder" in capsys.readouterr().out
    _compare_histories(straight, first, 4)
    assert load_config(first / "config.yaml").train.steps == 4  # the extended config is saved


def test_resume_extending_a_cosine_schedule_replans_it(tmp_path: Path, images: dict[str, Path]) -> None:
    # Regression: the schedule is a closed-form function of (step, config), so extending a run with
    # `--resume RUN --train.steps=N` re-plans the cosine over N steps (no stale T_max from the checkpoint,
    # no stale LR in the optimiser state for the first resumed step), and it ends at the floor.
    settings: dict[str, Any] = {
        "optim__scheduler": "cosine",
        "optim__lr_g": 1e-3,
        "optim__min_lr": 1e-5,
        "train__val_every": 2,
    }
    first = fit(_tiny(tmp_path, images, train__steps=2, **settings))
    extended = load_config(first / "config.yaml", ["train.steps=6"])
    fit(extended, resume=first)
    lrs = [float(r["lr_g"]) for r in _history(first)]
    short = load_config(first / "config.yaml", ["train.steps=2"])
    short_plan = loop.lr_plan(short.optim, base_lr=1e-3, total=short.train.steps)
    extended_plan = loop.lr_plan(extended.optim, base_lr=1e-3, total=extended.train.steps)
    expected = [1e-3 * short_plan(s) for s in range(2)]
    expected += [1e-3 * extended_plan(s) for s in range(2, 6)]
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert all(b <= a for a, b in itertools.pairwise(lrs[2:]))  # the new plan anneals monotonically
    assert 1e-3 * extended_plan(6) == pytest.approx(1e-5)  # and reaches the floor


def test_lr_warmup_ramps_then_follows_the_schedule(tmp_path: Path, images: dict[str, Path]) -> None:
    # A fine-tune with a fresh Adam: the logged LRs rise linearly over warmup_steps, then the cosine takes over.
    run = fit(
        _tiny(
            tmp_path,
            images,
            train__steps=8,
            train__val_every=8,
            train__log_every=1,
            optim__scheduler="cosine",
            optim__lr_g=1e-3,
            optim__min_lr=0.0,
            optim__warmup_steps=4,
        )
    )
    lrs = [float(r["lr_g"]) for r in _history(run)]
    cosine = [0.5 * (1 + math.cos(math.pi * s / 8)) for s in range(8)]
    ramp = [min(1.0, (s + 1) / 4) for s in range(8)]
    assert lrs == pytest.approx([1e-3 * r * c for r, c in zip(ramp, cosine, strict=True)], rel=1e-9)
    assert lrs[0] == pytest.approx(1e-3 / 4 * cosine[0]) and lrs[1] > lrs[0] and lrs[4] < lrs[3]
    with pytest.raises(ValueError, match="warmup_steps"):
        load_config(run / "config.yaml", ["optim.warmup_steps=-1"])


# d. best checkpoints and early stopping --------------------------------------------------------------------


SCRIPTED_SCORES = [  # (psnr, ssim, lpips) per validation, steps 1..5
    (20.0, 0.5, 0.3),
    (21.0, 0.4, 0.2),
    (21.0, 0.6, 0.25),
    (19.0, 0.6, 0.1),
    (22.0, 0.1, 0.4),
]


def _summary(psnr: float, ssim: float, lpips: float) -> SetSummary:
    return SetSummary(1, psnr, 0.0, ssim, 0.0, lpips, 0.0)


def test_update_best_rules() -> None:
    """PSNR/SSIM: higher is better, LPIPS lower; a tie is not a gain (the earlier step stays best)."""
    best: dict[str, dict[str, float]] = {}
    gains = [update_best(best, _summary(*s), step) for step, s in enumerate(SCRIPTED_SCORES, 1)]
    assert gains == [["psnr", "ssim", "lpips"], ["psnr", "lpips"], ["ssim"], ["lpips"], ["psnr"]]
    assert best == {
        "psnr": {"value": 22.0, "step": 5},
        "ssim": {"value": 0.6, "step": 3},
        "lpips": {"value": 0.1, "step": 4},
    }


def test_patience_counts_the_early_stop_metric_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, images: dict[str, Path]
) -> None:
    # PSNR gains at steps 1 and 2 only: with patience 2 the run stops after step 4's validation, though SSIM
    # (step 3) and LPIPS (step 4) still gained. Each best_* export holds the step that was best.
    scores = iter(SCRIPTED_SCORES)

    def fake_validate(*_args: Any, **_kwargs: Any) -> ValResult:
        return ValResult(rows=[], summary=_summary(*next(scores)), grid=torch.zeros(3, 4, 4))

    monkeypatch.setattr(loop, "validate", fake_validate)
    config = _tiny(
        tmp_path, images, train__steps=5, train__val_every=1, train__early_stop_metric="psnr", train__patience=2
    )
    run = fit(config)
    best = json.loads((run / "best.json").read_text())
    assert best == {
        "psnr": {"value": 21.0, "step": 2},
        "ssim": {"value": 0.6, "step": 3},
        "lpips": {"value": 0.1, "step": 4},
    }
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 4 and summary["stop_reason"].startswith("early stop: no psnr gain in 2")
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["evals_without_gain"] == 2
    for metric, step in (("psnr", 2), ("ssim", 3), ("lpips", 4)):
        assert read_metadata(run / "checkpoints" / f"best_{metric}.safetensors")["step"] == str(step)
    assert [int(r["step"]) for r in _rows(run / "val_history.csv")] == [1, 2, 3, 4]


def test_best_checkpoints_match_val_history(tmp_path: Path, images: dict[str, Path], data_dir: Path) -> None:
    config = _tiny(
        tmp_path,
        images,
        train__steps=4,
        train__val_every=1,
        train__lpips_net="alex",
        optim__lr_g=3e-3,
        data_dir=str(data_dir),
    )
    run = fit(config)
    val_rows = _rows(run / "val_history.csv")
    assert [int(r["step"]) for r in val_rows] == [1, 2, 3, 4]
    best = json.loads((run / "best.json").read_text())
    assert best == json.loads((run / "summary.json").read_text())["best"]
    for metric, pick in (("psnr", max), ("ssim", max), ("lpips", min)):
        values = [float(r[f"{metric}_mean"]) for r in val_rows]
        target = pick(values)
        step = int(val_rows[values.index(target)]["step"])  # the first step that reached it
        assert best[metric] == {"value": pytest.approx(target, abs=0, rel=1e-12), "step": step}
        meta = read_metadata(run / "checkpoints" / f"best_{metric}.safetensors")
        assert int(meta["step"]) == step
        assert float(meta[metric]) == pytest.approx(target, abs=1e-6)
        assert meta["kind"] == f"best_{metric}"
        per_image = _rows(run / "val" / f"step{step:07d}.csv")
        assert all(r["lpips"] != "" for r in per_image)
    assert len({float(r["psnr_mean"]) for r in val_rows}) > 1  # the scores did vary


def test_early_stop(tmp_path: Path, images: dict[str, Path]) -> None:
    # lr 1e-30 leaves the float32 weights as they are (lr 0 is refused); BatchNorm running statistics still
    # move in train mode, so the validated network is an EMA: no validation can improve.
    config = _tiny(
        tmp_path,
        images,
        train__steps=10,
        train__val_every=1,
        train__early_stop_metric="psnr",
        train__patience=1,
        train__ema_decay=0.999,
        optim__lr_g=1e-30,
    )
    run = fit(config)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 2 < config.train.steps
    assert summary["stop_reason"].startswith("early stop")
    assert "psnr" in summary["stop_reason"]
    assert len(_history(run)) == 2
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 2
    assert "early stop" in (run / "train.log").read_text()


def test_early_stop_on_lpips_needs_lpips(tmp_path: Path, images: dict[str, Path]) -> None:
    # Regression: with train.early_stop_metric=lpips and train.lpips_net=none, LPIPS is never measured, so no
    # validation counts as a gain and the run "early stops" after `patience` validations (here at step 1 of 4,
    # stop_reason "no lpips gain"). Fix: reject the combination, e.g. a model_validator on Config (or a check
    # at the top of _fit): `if train.early_stop_metric == "lpips" and train.lpips_net == "none": raise
    # ValueError("train.early_stop_metric=lpips needs train.lpips_net alex or vgg")`.
    with pytest.raises(ValueError, match="lpips_net"):
        fit(
            _tiny(
                tmp_path,
                images,
                train__steps=4,
                train__val_every=1,
                train__early_stop_metric="lpips",
                train__patience=1,
            )
        )


# e. distributed (2 CPU processes) ---------------------------------------------------------------------------


def test_index_range_ranks_are_disjoint_and_cover() -> None:
    bs, steps = 3, 4
    r0 = list(IndexRange(0, steps, batch_size=bs, rank=0, world=2))
    r1 = list(IndexRange(0, steps, batch_size=bs, rank=1, world=2))
    assert len(r0) == len(r1) == steps * bs == len(IndexRange(0, steps, batch_size=bs, rank=1, world=2))
    assert not set(r0) & set(r1)
    single = list(IndexRange(0, steps, batch_size=2 * bs))
    assert sorted(r0 + r1) == single == list(range(steps * 2 * bs))
    for step in range(steps):  # each step's global batch is split between the ranks
        batch = single[step * 2 * bs : (step + 1) * 2 * bs]
        assert sorted(r0[step * bs : (step + 1) * bs] + r1[step * bs : (step + 1) * bs]) == batch
    # A resumed range continues exactly where the full one would be.
    assert list(IndexRange(2, steps, batch_size=bs, rank=1, world=2)) == r1[2 * bs :]
    assert list(IndexRange(3, 3, batch_size=bs)) == []


def test_ddp_two_cpu_processes(tmp_path: Path, images: dict[str, Path]) -> None:
    out = tmp_path / "runs"
    overrides = _overrides(
        out,
        images,
        "ddp",
        train__steps=3,
        train__val_every=2,
        train__save_every=2,
        **{"discriminator.arch": "srgan", "discriminator.args": {"channels": [8, 8], "hidden": 8}},
        loss__adversarial_weight=0.001,
    )
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("{}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "srkit.cli", "train", str(recipe), *(f"--{o}" for o in overrides)]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert [p.name for p in out.iterdir()] == ["ddp"]  # one run folder, written by rank 0 only
    run = out / "ddp"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == 3 and summary["stop_reason"] == "finished"
    rows = _history(run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(r["loss_d"] != "" and math.isfinite(float(r["loss_g"])) for r in rows)
    assert [int(r["step"]) for r in _rows(run / "val_history.csv")] == [2, 3]
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 3 and len(ckpt["rng"]) == 2
    assert not any(k.startswith("module.") for k in ckpt["net_g"])  # unwrapped from DDP
    log = (run / "train.log").read_text()
    assert log.count("world 2") == 1
    assert proc.stdout.count("run folder:") == 2  # both ranks finish; each prints its line


# f. other ------------------------------------------------------------------------------------------------


def test_discriminator_collapse_warning(tmp_path: Path, images: dict[str, Path]) -> None:
    gan = {"discriminator.arch": "srgan", "discriminator.args": {"channels": [8, 8], "hidden": 8}}
    warned = fit(
        _tiny(
            tmp_path,
            images,
            "warned",
            train__steps=3,
            train__d_collapse_threshold=1.0,  # every mean D(G(z)) is below 1
            train__d_collapse_steps=2,
            loss__adversarial_weight=0.001,
            **gan,
        )
    )
    log = (warned / "train.log").read_text()
    assert log.count("discriminator is winning outright") == 1  # once per collapse, not every step
    assert "step 2:" in log and "D(G(z)) < 1.0 for 2 steps" in log
    quiet = fit(_tiny(tmp_path, images, "quiet", train__steps=3, train__d_collapse_steps=2, **gan))
    assert "winning outright" not in (quiet / "train.log").read_text()


def test_plot(tmp_path: Path, stage1: tuple[Config, Path], capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "copy"
    run.mkdir()
    for name in ("history.csv", "val_history.csv"):
        shutil.copy(stage1[1] / name, run)
    assert main(["plot", str(run)]) == 0
    assert "curves.png" in capsys.readouterr().out
    with Image.open(run / "curves.png") as im:
        assert im.format == "PNG" and im.width > 200 and im.height > 200
        im.verify()
    other = tmp_path / "elsewhere.png"
    assert main(["plot", str(run), "--out", str(other)]) == 0
    assert other.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    empty = tmp_path / "empty"
    empty.mkdir()
    capsys.readouterr()
    assert main(["plot", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "no history.csv" in err and str(empty) in err and "Traceback" not in err
    assert not (empty / "curves.png").exists()


def test_new_run_in_existing_folder_is_refused(stage1: tuple[Config, Path]) -> None:
    config, run = stage1
    before = (run / "history.csv").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        fit(config)
    assert (run / "history.csv").read_bytes() == before


def test_cli_new_run_in_existing_folder_is_a_clean_error(
    tmp_path: Path, images: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # Regression: cli.main turns FileNotFoundError/ValueError into "srkit train: error: ..." and exit 2, but the
    # FileExistsError that fit raises for an existing run escapes as a traceback. Fix: catch it too in
    # main (`except (FileNotFoundError, FileExistsError, ValueError)`), or raise a ValueError subclass.
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("{}\n")
    args = ["train", str(recipe), *(f"--{o}" for o in _overrides(tmp_path / "runs", images, train__steps=1))]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err


def test_fresh_run_does_not_inherit_stale_history(tmp_path: Path, images: dict[str, Path]) -> None:
    # Regression: a run folder without checkpoints/latest.pt is reused (a run that crashed before its first
    # checkpoint), and RunLogger only writes the CSV headers when the files are missing, so the new run
    # appends to the old rows: history.csv then holds steps 1, 2, 1, 2. Fix (RunLogger.__init__): when
    # resume_step is None, always rewrite history.csv / val_history.csv with just the header (and purge
    # the TensorBoard folder), or have _new_run_dir refuse a non-empty folder.
    config = _tiny(tmp_path, images, train__steps=2)
    run = fit(config)
    (run / "checkpoints" / "latest.pt").unlink()  # as if it had crashed before its first checkpoint
    fit(config)
    assert [int(r["step"]) for r in _history(run)] == [1, 2]


def test_summary_reports_a_crash(tmp_path: Path, images: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # Regression: summary.json is written in a `finally`, but stop_reason stays "finished" when the loop raised
    # (NaN loss, KeyboardInterrupt, out of memory): a crashed run's summary says it finished. Fix (loop.py):
    # `except BaseException as err: stop_reason = f"error: {type(err).__name__}: {err}"; raise` before
    # the `finally`. (A NaN loss is no crash any more: it stops cleanly, see test_nonfinite_loss_stops_*.)
    calls = itertools.count(1)

    def crashing_l1(sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        if next(calls) == 2:
            raise RuntimeError("out of memory (simulated)")
        return torch.nn.functional.l1_loss(sr, gt)

    monkeypatch.setattr(loop, "pixel_loss", lambda kind: crashing_l1)
    with pytest.raises(RuntimeError, match="simulated"):
        fit(_tiny(tmp_path, images, train__steps=3))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["step"] == 1
    assert summary["stop_reason"] == "error: RuntimeError: out of memory (simulated)"


# hardening: non-finite losses, milestone pruning, stale temporary files, train.amp auto --------------------


def _nan_pixel_loss(monkeypatch: pytest.MonkeyPatch, bad_calls: set[int]) -> None:
    """The L1 pixel loss, NaN on the given calls (1-based; one call per generator step that runs)."""
    calls = itertools.count(1)

    def l1(sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        loss = torch.nn.functional.l1_loss(sr, gt)
        return loss * float("nan") if next(calls) in bad_calls else loss

    monkeypatch.setattr(loop, "pixel_loss", lambda kind: l1)


def test_nonfinite_loss_stops_and_keeps_latest(
    tmp_path: Path, images: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _nan_pixel_loss(monkeypatch, {3})
    config = _tiny(tmp_path, images, train__steps=4, train__save_every=2)
    with pytest.raises(loop.NonFiniteLoss) as info:
        fit(config)
    message = "step 3: loss term l_pix is nan; training stopped, latest checkpoint at step 2 kept"
    assert str(info.value) == message
    run = tmp_path / "run"
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 2  # the bad step was not applied, nor saved
    assert all(torch.isfinite(v).all() for v in ckpt["net_g"].values())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == message and summary["step"] == 2 and summary["rollbacks"] == 0
    assert [int(r["step"]) for r in _history(run)] == [1, 2]
    assert message in (run / "train.log").read_text()


def test_nonfinite_discriminator_loss_stops(
    tmp_path: Path, images: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    d_loss, g_loss = loop.ADVERSARIAL["vanilla"]

    def inf_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return d_loss(real, fake) * float("inf")

    monkeypatch.setitem(loop.ADVERSARIAL, "vanilla", (inf_d_loss, g_loss))
    gan = {"discriminator.arch": "srgan", "discriminator.args": {"channels": [8, 8], "hidden": 8}}
    config = _tiny(
        tmp_path, images, train__steps=2, train__on_nonfinite="rollback", loss__adversarial_weight=0.001, **gan
    )
    # No latest.pt yet: nothing to roll back to, so it stops.
    with pytest.raises(loop.NonFiniteLoss, match=r"^step 1: loss term loss_d is inf; training stopped, no checkpoint"):
        fit(config)
    assert not (tmp_path / "run" / "checkpoints" / "latest.pt").exists()


def test_nonfinite_loss_rolls_back_and_continues(
    tmp_path: Path, images: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _nan_pixel_loss(monkeypatch, {3})
    config = _tiny(
        tmp_path, images, train__steps=5, train__save_every=2, train__ema_decay=0.9, train__on_nonfinite="rollback"
    )
    run = fit(config)
    log = (run / "train.log").read_text()
    assert "step 3: loss term l_pix is nan; rolling back to latest.pt at step 2 (rollback 1 of at most 3)" in log
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "finished" and summary["step"] == 5 and summary["rollbacks"] == 1
    rows = _history(run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]  # steps 3.. logged once, after the rollback
    assert rows[2]["loss_g"] == ""  # the batch that gave the NaN is skipped on the replay
    assert all(math.isfinite(float(r["loss_g"])) for i, r in enumerate(rows) if i != 2)
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 5
    for key in ("net_g", "ema"):
        assert all(torch.isfinite(v).all() for v in ckpt[key].values() if v.is_floating_point()), key


def test_nonfinite_loss_stops_after_max_rollbacks(
    tmp_path: Path, images: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _nan_pixel_loss(monkeypatch, {3, 4, 5})
    config = _tiny(
        tmp_path, images, train__steps=6, train__save_every=2, train__on_nonfinite="rollback", train__max_rollbacks=1
    )
    with pytest.raises(loop.NonFiniteLoss) as info:
        fit(config)
    # Step 3 rolls back to step 2; on the replay step 3 is skipped and step 4's loss is NaN: no rollbacks left.
    message = "step 4: loss term l_pix is nan; training stopped after 1 rollback(s), latest checkpoint at step 2 kept"
    assert str(info.value) == message
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stop_reason"] == message and summary["rollbacks"] == 1
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["step"] == 2


def test_keep_last_prunes_old_milestones(tmp_path: Path, images: dict[str, Path]) -> None:
    run = fit(_tiny(tmp_path, images, train__steps=5, train__save_every=1, train__val_every=2, train__keep_last=2))
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == [
        "best_psnr.safetensors",
        "best_ssim.safetensors",
        "generator_step0000004.safetensors",
        "generator_step0000005.safetensors",
        "latest.pt",
    ]
    log = (run / "train.log").read_text()
    assert "removed milestone generator_step0000001.safetensors" in log and "train.keep_last=2" in log


def test_stale_temporary_files_are_removed_on_start_and_resume(tmp_path: Path, images: dict[str, Path]) -> None:
    # What a kill -9 inside fs.atomic_write leaves: .NAME.tmpXXXXXXXX next to the file it was replacing.
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / ".latest.pt.tmp0123abcd").write_bytes(b"x" * 1000)
    (run / ".summary.json.tmpdeadbeef").write_bytes(b"{")
    (run / "notes.tmp.txt").write_text("mine")  # not a hidden temp: left alone
    fit(_tiny(tmp_path, images, train__steps=2, train__val_every=2))
    assert not list(run.glob(".*.tmp*")) and not list((run / "checkpoints").glob(".*.tmp*"))
    assert (run / "notes.tmp.txt").read_text() == "mine"
    log = (run / "train.log").read_text()
    assert f"removed stale temporary file {run / 'checkpoints' / '.latest.pt.tmp0123abcd'} (1000 bytes)" in log
    assert ".summary.json.tmpdeadbeef (1 bytes)" in log

    (run / "checkpoints" / ".latest.pt.tmpfeedf00d").write_bytes(b"y" * 10)
    fit(load_config(run / "config.yaml", ["train.steps=3"]), resume=run)
    assert not list((run / "checkpoints").glob(".*.tmp*"))
    assert ".latest.pt.tmpfeedf00d (10 bytes)" in (run / "train.log").read_text()


@pytest.mark.parametrize(
    ("native", "resolved", "why"),
    [(True, "bf16", "CPU has AVX512-BF16/AMX"), (False, "none", "CPU has no AVX512-BF16/AMX: float32")],
)
def test_amp_auto_resolves_once_and_is_recorded(
    tmp_path: Path, images: dict[str, Path], monkeypatch: pytest.MonkeyPatch, native: bool, resolved: str, why: str
) -> None:
    monkeypatch.setattr(loop, "auto_precision", lambda device: torch.bfloat16 if native else torch.float32)
    config = _tiny(tmp_path, images, train__steps=2, train__val_every=2, train__amp="auto")
    run = fit(config)
    assert config.train.amp == "auto"  # the caller's config is not changed
    assert load_config(run / "config.yaml").train.amp == resolved
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["config"]["train"]["amp"] == resolved
    assert json.loads((run / "summary.json").read_text())["amp"] == resolved
    assert (run / "train.log").read_text().count(f"train.amp auto -> {resolved} ({why})") == 1
    # A resume keeps the precision the run saved, whatever this machine would pick now.
    monkeypatch.setattr(loop, "auto_precision", lambda device: torch.float32 if native else torch.bfloat16)
    fit(load_config(run / "config.yaml", ["train.steps=3"]), resume=run)
    assert json.loads((run / "summary.json").read_text())["amp"] == resolved
    assert (run / "train.log").read_text().count("train.amp auto") == 1


def test_logged_losses_average_only_the_steps_that_had_them(
    tmp_path: Path, images: dict[str, Path], stage1: tuple[Config, Path]
) -> None:
    # Regression: the log window divides every summed loss by the number of steps in the window, but during
    # D warm-up the G losses are absent: with log_every=2 and d_warmup_steps=1, step 2's loss_g is half the
    # real value. Fix (loop.py): count per key (`counts[k] += 1`) and divide each sum by its own count.
    init = stage1[1] / "checkpoints" / "best_psnr.safetensors"
    gan = _gan(init, optim__d_warmup_steps=1)
    every = _history(fit(_tiny(tmp_path, images, "every", train__steps=2, **gan)))
    paired = _history(fit(_tiny(tmp_path, images, "paired", train__steps=2, train__log_every=2, **gan)))
    assert every[0]["loss_g"] == "" and [int(r["step"]) for r in paired] == [2]
    assert float(paired[0]["loss_g"]) == pytest.approx(float(every[1]["loss_g"]), rel=1e-6)
    mean_d = (float(every[0]["loss_d"]) + float(every[1]["loss_d"])) / 2
    assert float(paired[0]["loss_d"]) == pytest.approx(mean_d, rel=1e-6)


def test_amp_bf16_on_cpu(tmp_path: Path, images: dict[str, Path]) -> None:
    run = fit(_tiny(tmp_path, images, train__steps=2, train__amp="bf16", train__channels_last=True))
    rows = _history(run)
    assert len(rows) == 2 and all(math.isfinite(float(r["loss_g"])) for r in rows)
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert all(v.dtype != torch.bfloat16 for v in ckpt["net_g"].values())  # master weights stay fp32


def test_amp_fp16_on_cpu_is_refused(tmp_path: Path, images: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="fp16"):
        fit(_tiny(tmp_path, images, train__steps=2, train__amp="fp16"))
    assert not (tmp_path / "run" / "checkpoints" / "latest.pt").exists()


def test_unknown_discriminator(tmp_path: Path, images: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"discriminator\.arch 'nope'"):
        fit(_tiny(tmp_path, images, discriminator__arch="nope"))


def test_empty_validation_folder_is_a_clear_error(tmp_path: Path, images: dict[str, Path]) -> None:
    # Regression: an empty validation folder (or data.val_max_images=0, or only unreadable files) is accepted; the
    # first validation then dies with `KeyError: '<set name>'` from `summarize(rows)[set_name]` in
    # validate.py, after val_every training steps. Fix (loop._fit, after loading val_pairs on rank 0):
    # `if is_main and not val_pairs.gt: raise ValueError(f"no usable validation images in {val_dir}")`
    # (and reject val_max_images < 1 in DataConfig).
    empty = tmp_path / "novalimages"
    empty.mkdir()
    with pytest.raises(ValueError, match="novalimages"):
        fit(_tiny(tmp_path, images, train__steps=2, train__val_every=1, data__val=str(empty)))
    assert not (tmp_path / "run").exists()  # refused before the run folder is even created


def test_missing_data_folder(tmp_path: Path, images: dict[str, Path]) -> None:
    config = _tiny(tmp_path, images, data_dir=str(tmp_path), data__train=["train/nothing"])
    with pytest.raises(FileNotFoundError, match="train/nothing"):
        fit(config)


# the patch dataset -----------------------------------------------------------------------------------------


def _nearest_pairs(h: int = 16, w: int = 20, scale: int = 4) -> PairSet:
    """One pair whose HR is the LR upsampled by pixel repetition: any aligned patch keeps that relation."""
    lq = torch.arange(3 * h * w, dtype=torch.int64).remainder(251).to(torch.uint8).reshape(3, h, w)
    gt = lq.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    return PairSet(gt=[gt], lq=[lq], names=["x.png"])


def test_patch_dataset_is_a_function_of_seed_and_index() -> None:
    pairs = _nearest_pairs()
    a = PatchDataset(pairs, scale=4, gt_size=32, seed=7)
    b = PatchDataset(pairs, scale=4, gt_size=32, seed=7)
    c = PatchDataset(pairs, scale=4, gt_size=32, seed=8)
    for index in (0, 5, 10**12):
        la, ga = a[index]
        lb, gb = b[index]
        assert torch.equal(la, lb) and torch.equal(ga, gb)
        assert torch.equal(a[index][0], la)  # asking twice gives the same sample
    assert any(not torch.equal(a[i][0], c[i][0]) for i in range(8))
    assert any(not torch.equal(a[i][0], a[i + 1][0]) for i in range(8))
    assert len({sample_seed(0, i) for i in range(1000)}) == 1000


def test_patch_dataset_keeps_lq_and_gt_aligned() -> None:
    pairs = _nearest_pairs()
    lq_full = pairs.lq[0]
    plain = PatchDataset(pairs, scale=4, gt_size=32, seed=0, flip=False, rot90=False)
    augmented = PatchDataset(pairs, scale=4, gt_size=32, seed=0)

    def is_plain_crop(lq_u8: torch.Tensor) -> bool:
        h, w = lq_full.shape[-2:]
        return any(torch.equal(lq_full[:, t : t + 8, l : l + 8], lq_u8) for t in range(h - 7) for l in range(w - 7))

    n_augmented = 0
    for i in range(40):
        for ds in (plain, augmented):
            lq, gt = ds[i]
            assert lq.shape == (3, 8, 8) and gt.shape == (3, 32, 32)
            assert lq.dtype == gt.dtype == torch.float32 and float(lq.min()) >= 0 and float(gt.max()) <= 1
            assert torch.equal(gt, lq.repeat_interleave(4, -1).repeat_interleave(4, -2))
        lq_u8 = (plain[i][0] * 255).round().to(torch.uint8)
        assert is_plain_crop(lq_u8)
        n_augmented += not is_plain_crop((augmented[i][0] * 255).round().to(torch.uint8))
    assert n_augmented > 20  # 7 of the 8 flip/transpose combinations change the patch


def test_patch_dataset_errors() -> None:
    with pytest.raises(ValueError, match="no usable training images"):
        PatchDataset(PairSet(), scale=4, gt_size=32, seed=0)
    with pytest.raises(ValueError, match="multiple of the scale"):
        PatchDataset(_nearest_pairs(), scale=4, gt_size=30, seed=0)


def test_load_pairs_makes_modcropped_bicubic_pairs(tmp_path: Path) -> None:
    Image.fromarray(smooth_rgb(46, 50, 3)).save(tmp_path / "odd.png")
    pairs = load_pairs([tmp_path], lowres=LowRes(4))
    assert pairs.names == ["odd.png"] and not pairs.skipped
    gt, lq = pairs.gt[0], pairs.lq[0]
    assert gt.dtype == lq.dtype == torch.uint8
    assert tuple(gt.shape) == (3, 44, 48) and tuple(lq.shape) == (3, 11, 12)
    with Image.open(tmp_path / "odd.png") as im:
        source = torch.from_numpy(np.array(im)).permute(2, 0, 1)
    assert torch.equal(gt, source[:, :44, :48])
    expected = (bicubic_degrade(gt.to(torch.float64) / 255, 4) * 255).round().to(torch.uint8)
    assert torch.equal(lq, expected)


def test_wandb_offline_logs_without_network(
    tmp_path: Path, images: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # W&B in offline mode (the default for train.wandb) writes a local run that `wandb sync` can upload later.
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = fit(_tiny(tmp_path, images, train__steps=2, train__wandb=True))
    offline_runs = list((run / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    assert any(p.suffix == ".wandb" for p in offline_runs[0].iterdir())  # the run's event log


def test_ema_warmup_follows_the_model_early() -> None:
    # With a fixed 0.999 decay the average would still be ~99% the initial weights after 10 updates.
    avg = ema_avg_fn(0.999)
    p = torch.zeros(3)
    for n in range(1, 11):
        p = avg(p, torch.ones(3), torch.tensor(n))
    assert p.min().item() > 0.5
    late = avg(torch.zeros(1), torch.ones(1), torch.tensor(10**6))
    assert late.item() == pytest.approx(0.001)


def test_compiled_training_captures_the_step_and_keeps_the_weights_layout(
    tmp_path: Path, images: dict[str, Path]
) -> None:
    # torch.compile through dynamo with the "aot_eager" backend: the whole capture (forward and backward graphs)
    # without TorchInductor's code generation, which takes minutes on a 2-core CPU. Same losses, same keys.
    settings = {"train__steps": 2, "train__val_every": 2, "train__save_every": 2}
    eager = fit(_tiny(tmp_path, images, "eager", **settings))
    compiled = fit(
        _tiny(tmp_path, images, "compiled", train__compile=True, train__compile_backend="aot_eager", **settings)
    )
    for ra, rb in zip(_history(eager), _history(compiled), strict=True):
        assert float(ra["loss_g"]) == pytest.approx(float(rb["loss_g"]), rel=1e-4)
    ea = load_checkpoint(eager / "checkpoints" / "latest.pt")
    cb = load_checkpoint(compiled / "checkpoints" / "latest.pt")
    assert ea["net_g"].keys() == cb["net_g"].keys()  # no _orig_mod. prefix: exports and resume are unchanged
    assert load_model(compiled / "checkpoints" / "best_psnr.safetensors").scale == 4


def test_sigterm_stops_training_with_a_summary_and_resume_goes_on(images: dict[str, Path], tmp_path: Path) -> None:
    """A session's stop (SIGTERM) unwinds like Ctrl-C: exit 130, summary.json says why, latest.pt resumes."""
    import signal
    import time

    out = tmp_path / "runs"
    overrides = _overrides(out, images, "term", train__steps=100000, train__val_every=100000, train__save_every=2)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("{}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "srkit.cli", "train", str(recipe), *(f"--{o}" for o in overrides)]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    latest = out / "term" / "checkpoints" / "latest.pt"
    deadline = time.monotonic() + 120
    while not latest.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert latest.is_file(), proc.stderr.read() if proc.poll() is not None else "no checkpoint in 120 s"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "srkit train: interrupted" in err
    summary = json.loads((out / "term" / "summary.json").read_text())
    assert summary["stop_reason"] == "error: Terminated: stopped by SIGTERM" and summary["step"] >= 2
    saved = load_checkpoint(latest)["step"]
    assert saved % 2 == 0 and saved <= summary["step"]
    assert main(["train", "--resume", str(out / "term"), f"--train.steps={saved + 2}"]) == 0
    assert json.loads((out / "term" / "summary.json").read_text())["step"] == saved + 2
