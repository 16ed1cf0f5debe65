"""Batch commands across processes: torchrun --nproc_per_node=2 shards the files, rank 0 reports for all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srkit.shard import Shard, from_env


def test_shards_partition_the_items() -> None:
    items = list(range(7))
    parts = [Shard(r, 3).take(items) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]] and sorted(i for part in parts for i in part) == items
    assert Shard().take(items) == items and Shard(0, 1).main and not Shard(1, 2).main


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert from_env() == Shard(0, 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert from_env() == Shard(1, 2)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match=r"RANK 2 is not in 0\.\.WORLD_SIZE-1"):
        from_env()


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "srkit.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _images(folder: Path, n: int) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((32 + 4 * i, 40, 3)) * 255).astype(np.uint8)).save(folder / f"im{i}.png")


def test_two_process_upscale_writes_every_file_once_and_reports_bad_ones(tmp_path: Path) -> None:
    _images(tmp_path / "in", 5)
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    done = _torchrun("upscale", "in", "-o", "out", "--model", "bicubic", cwd=tmp_path)
    assert done.returncode != 0, done.stdout + done.stderr  # one bad file: non-zero on every rank
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [f"im{i}.png" for i in range(5)]
    for i in range(5):
        with Image.open(tmp_path / "out" / f"im{i}.png") as im:
            assert im.size == (160, (32 + 4 * i) * 4)
    out = done.stdout + done.stderr
    assert out.count("wrote 5 of 6 image(s)") == 1  # the merged report, printed by rank 0 only
    assert sum("broken.png" in line for line in out.splitlines()) == 1  # listed once, by rank 0


def test_two_process_evaluate_equals_one_process(tmp_path: Path) -> None:
    _images(tmp_path / "hr", 5)
    args = ("evaluate", "--model", "bicubic", "--sets", str(tmp_path / "hr"), "--lpips", "none")
    done = _torchrun(*args, "--out", "two", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    one = subprocess.run(
        [sys.executable, "-m", "srkit.cli", *args, "--out", "one"], cwd=tmp_path, capture_output=True, text=True
    )
    assert one.returncode == 0, one.stderr
    assert (tmp_path / "two" / "per_image.csv").read_text() == (tmp_path / "one" / "per_image.csv").read_text()
    assert (tmp_path / "two" / "summary.json").read_text() == (tmp_path / "one" / "summary.json").read_text()
