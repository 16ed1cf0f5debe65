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


def test_viz_features_finds_an_image_of_a_benchmark_set(weights: Path, tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "feat.png"  # the README's form: SET/FILE, from any working directory
    argv = ["viz", "features", "--model", str(weights), "--image", "Set5/butterfly.png", "--channels", "4"]
    assert main([*argv, "-o", str(out), "--device", "cpu", "--data-dir", str(data_dir)]) == 0
    assert out.is_file()


def test_resolve_image_names_what_it_tried(tmp_path: Path, image: Path) -> None:
    from srkit.evaluate import resolve_image

    bench = tmp_path / "data" / "benchmarks" / "Mine"
    bench.mkdir(parents=True)
    (bench / "a.png").write_bytes(image.read_bytes())
    data = tmp_path / "data"
    assert resolve_image(image, data_dir=data) == image  # a file is itself
    assert resolve_image("Mine/a.png", data_dir=data) == bench / "a.png"
    with pytest.raises(FileNotFoundError, match=r"'Mine/b.png', neither here nor in benchmark set Mine .*a\.png"):
        resolve_image("Mine/b.png", data_dir=data)
    with pytest.raises(FileNotFoundError, match=r"'Other/a.png' \(give an image file, or SET/FILE"):
        resolve_image("Other/a.png", data_dir=data)
