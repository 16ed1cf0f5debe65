"""srkit train refusing bad input, run in-process through srkit.cli.main: exit status, one line, nothing written.

Everything found before training (bad names and values, unknown keys, unreadable recipes, resumes of folders
that hold no usable checkpoint) exits 2 with one line naming the key or the file, and writes nothing. A
non-finite loss also exits 2: srkit.train.loop.NonFiniteLoss is a ValueError, which cli.main reports as
one line with status 2, and its usual causes (a learning rate or a loss weight too high) are config values
the user has to change. Its run folder keeps latest.pt exactly as the last good step wrote it.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from srkit.cli import main
from srkit.config import dump_config, load_config
from srkit.train import loop
from srkit.train.state import load_checkpoint
from testkit import smooth_rgb, tiny_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SRKIT_DEBUG", raising=False)  # debug mode would re-raise instead of printing one line


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """train/: three 64x64 PNGs; val/: one 48x48."""
    root = tmp_path_factory.mktemp("images")
    (root / "train").mkdir()
    (root / "val").mkdir()
    for i in range(3):
        Image.fromarray(smooth_rgb(64, 64, i)).save(root / "train" / f"square{i}.png")
    Image.fromarray(smooth_rgb(48, 48, 40)).save(root / "val" / "val0.png")
    return {"train": root / "train", "val": root / "val"}


def _overrides(out_dir: Path, images: dict[str, Path], **extra: Any) -> list[str]:
    """A tiny recipe (width-8 SRResNet, 32px crops, 3 steps, fp32) as --key=value flags."""
    return [f"--{o}" for o in tiny_recipe(out_dir, images, **{"train__steps": 3, **extra})]


def _train(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run `srkit train ARGS` in-process; its status and stderr, which must never hold a traceback."""
    capsys.readouterr()
    status = main(["train", *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return status, err


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes: to show that a refused command wrote, moved or removed nothing."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text("{}\n")
    return path


# refused up front: nothing is written -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../x", "ABSOLUTE", "a/b", "", "."])
def test_run_name_outside_out_dir_is_refused(
    tmp_path: Path, images: dict[str, Path], recipe: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    name = str(tmp_path / "abs") if name == "ABSOLUTE" else name
    out_dir = tmp_path / "a" / "runs"  # ../../x would be tmp_path / "x"
    before = _tree(tmp_path)
    status, err = _train(capsys, str(recipe), *_overrides(out_dir, images), f"--name={name}")
    assert status == 2
    assert "'name': must be a run folder name" in err and "letters, digits, '.', '_' and '-'" in err
    assert "not starting with a dot" in err
    assert _tree(tmp_path) == before and not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    ("flag", "key", "expected"),
    [
        ("--optim.lr_g=-1", "optim.lr_g", "must be in (0, 1]"),
        ("--optim.lr_d=0", "optim.lr_d", "must be in (0, 1]"),
        ("--optim.betas=[0.9, 1.5]", "optim.betas", "[0, 1)"),
        ("--optim.gamma=0", "optim.gamma", "must be > 0"),
        ("--train.ema_decay=1.5", "train.ema_decay", "(0, 1)"),
        ("--data.hr_size=[0, 64]", "data.hr_size", ">= 1"),
    ],
)
def test_bad_number_is_refused(
    tmp_path: Path,
    images: dict[str, Path],
    recipe: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    key: str,
    expected: str,
) -> None:
    status, err = _train(capsys, str(recipe), *_overrides(tmp_path / "runs", images), flag)
    assert status == 2
    assert f"'{key}'" in err and expected in err, err
    assert not (tmp_path / "runs").exists()


def test_unknown_key_is_refused(
    tmp_path: Path, images: dict[str, Path], recipe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = _train(capsys, str(recipe), *_overrides(tmp_path / "runs", images), "--train.stepz=3")
    assert status == 2
    assert "unknown key 'train.stepz'" in err and "steps" in err  # and the keys allowed there
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train: {steps: [1\n", "is not valid YAML"),
        ("- train\n- steps\n", "must be a mapping of sections, got list"),
    ],
)
def test_unreadable_recipe_is_refused(
    tmp_path: Path, images: dict[str, Path], capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    before = path.read_bytes()
    status, err = _train(capsys, str(path), *_overrides(tmp_path / "runs", images))
    assert status == 2
    assert str(path) in err and expected in err
    assert path.read_bytes() == before
    assert not (tmp_path / "runs").exists()


def test_missing_recipe_is_refused(tmp_path: Path, images: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent.yaml"
    status, err = _train(capsys, str(missing), *_overrides(tmp_path / "runs", images))
    assert status == 2
    assert "config file not found" in err and str(missing) in err
    assert not missing.exists() and not (tmp_path / "runs").exists()


def test_resume_of_a_missing_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, err = _train(capsys, "--resume", str(tmp_path / "nowhere"))
    assert status == 2
    assert str(tmp_path / "nowhere" / "config.yaml") in err
    assert not (tmp_path / "nowhere").exists()


def test_resume_without_latest_checkpoint_is_refused(
    tmp_path: Path, images: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # A run that died before its first checkpoint: config.yaml and logs, no checkpoints/latest.pt.
    run = tmp_path / "runs" / "run"
    run.mkdir(parents=True)
    config = load_config(None, [o[2:] for o in _overrides(tmp_path / "runs", images)])
    (run / "config.yaml").write_text(dump_config(config))
    (run / "history.csv").write_text("step,loss_g\n1,0.5\n")
    before = _tree(run)
    status, err = _train(capsys, "--resume", str(run))
    assert status == 2
    assert "checkpoint not found" in err and str(run / "checkpoints" / "latest.pt") in err
    assert _tree(run) == before and not (run / "checkpoints").exists()


def _finished_run(tmp_path: Path, images: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> Path:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("{}\n")
    assert _train(capsys, str(recipe), *_overrides(tmp_path / "runs", images, train__steps=1))[0] == 0
    return tmp_path / "runs" / "run"


def test_resume_of_a_truncated_checkpoint_is_refused(
    tmp_path: Path, images: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run = _finished_run(tmp_path, images, capsys)
    latest = run / "checkpoints" / "latest.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # as a full disk would leave it
    before = _tree(run)
    status, err = _train(capsys, "--resume", str(run), "--train.steps=3")
    assert status == 2
    assert str(latest) in err and "not a readable srkit checkpoint" in err
    assert _tree(run) == before  # no log line, no config.yaml rewrite, no history truncation


def test_resume_of_a_foreign_checkpoint_format_is_refused(
    tmp_path: Path, images: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run = _finished_run(tmp_path, images, capsys)
    latest = run / "checkpoints" / "latest.pt"
    torch.save({"format_version": 99, "step": 1}, latest)
    before = _tree(run)
    status, err = _train(capsys, "--resume", str(run), "--train.steps=3")
    assert status == 2
    assert str(latest) in err and "checkpoint format 99" in err
    assert _tree(run) == before


# found while training: a non-finite loss ------------------------------------------------------------------


def test_nonfinite_loss_stops_with_one_line_and_keeps_latest(
    tmp_path: Path,
    images: dict[str, Path],
    recipe: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = tmp_path / "runs" / "run"
    latest = run / "checkpoints" / "latest.pt"
    good: dict[str, bytes] = {}
    calls = itertools.count(1)

    def l1(sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        loss = torch.nn.functional.l1_loss(sr, gt)
        if next(calls) == 2:
            good["latest"] = latest.read_bytes()  # what step 1 saved, just before step 2 goes bad
            return loss * float("nan")
        return loss

    monkeypatch.setattr(loop, "pixel_loss", lambda kind: l1)
    status, err = _train(capsys, str(recipe), *_overrides(tmp_path / "runs", images, train__save_every=1))
    message = "step 2: loss term l_pix is nan; training stopped, latest checkpoint at step 1 kept"
    assert status == 2
    assert err.strip().splitlines()[-1] == f"srkit train: error: {message}"
    assert err.count(message) == 1  # said once, not also as a warning
    assert latest.read_bytes() == good["latest"]  # never overwritten with the bad state
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == message and summary["step"] == 1


def test_loss_weight_overflowing_to_inf_stops(
    tmp_path: Path, images: dict[str, Path], recipe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A real recipe mistake, no patching: 1e39 overflows float32, so the first pixel term is inf.
    status, err = _train(capsys, str(recipe), *_overrides(tmp_path / "runs", images), "--loss.pixel_weight=1e39")
    assert status == 2
    message = "step 1: loss term l_pix is inf; training stopped, no checkpoint was written yet"
    assert f"srkit train: error: {message}" in err
    run = tmp_path / "runs" / "run"
    assert not (run / "checkpoints").exists()
    assert json.loads((run / "summary.json").read_text())["stop_reason"] == message
    assert load_config(run / "config.yaml").loss.pixel_weight == 1e39  # the recipe it stopped on, for the record


def test_nonfinite_loss_after_a_checkpoint_resumes(
    tmp_path: Path,
    images: dict[str, Path],
    recipe: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The kept latest.pt is a normal checkpoint: once the cause is gone the run resumes from it.
    calls = itertools.count(1)

    def l1(sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        loss = torch.nn.functional.l1_loss(sr, gt)
        return loss * float("nan") if next(calls) == 3 else loss

    monkeypatch.setattr(loop, "pixel_loss", lambda kind: l1)
    overrides = _overrides(tmp_path / "runs", images, train__save_every=2, train__steps=4)
    assert _train(capsys, str(recipe), *overrides)[0] == 2
    run = tmp_path / "runs" / "run"
    status, _ = _train(capsys, "--resume", str(run))
    assert status == 0
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 4
