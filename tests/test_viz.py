"""Tests for `srkit viz features`: a PNG from a tiny model on a small image; a bad layer is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srkit.cli import main
from srkit.models import build_generator, save_weights
from srkit.viz import select_channels

TINY = {"num_blocks": 1, "width": 8, "scale": 4}


@pytest.fixture
def image(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    # 50x58: not a multiple of 4, so the modcrop path runs too.
    arr = np.asarray(Image.fromarray(coarse).resize((58, 50), Image.Resampling.BICUBIC))
    path = tmp_path / "img.png"
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    net = build_generator("srresnet", **TINY)
    return save_weights(net, tmp_path / "tiny.safetensors", arch="srresnet", arch_kwargs=TINY)


def test_viz_features_writes_png(image: Path, weights: Path, tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "viz" / "feat.png"
    argv = ["viz", "features", "--model", str(weights), "--image", str(image), "--layer", "relu2_2"]
    assert main([*argv, "--channels", "6", "-o", str(out), "--device", "cpu", "--data-dir", str(data_dir)]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 300


def test_viz_features_rejects_unknown_layer(image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "feat.png"
    assert main(["viz", "features", "--image", str(image), "--layer", "relu9_9", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "relu9_9" in err and "relu2_2" in err and "conv5_3" in err
    assert not out.exists()


def test_select_channels() -> None:
    feats = torch.zeros(5, 4, 4)
    feats[3] = 2.0
    feats[1] = -1.0  # most active counts magnitude (conv layers are signed)
    feats[4] = 0.5
    assert select_channels(feats, count=3, order="active") == [3, 1, 4]
    assert select_channels(feats, count=2, order="first") == [0, 1]
    assert select_channels(feats, count=99, order="first") == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="channels"):
        select_channels(feats, count=0, order="first")
