"""`srkit data ...` commands and the data options of training configs, end to end on tiny inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from srkit import image_io
from srkit.cli import main
from srkit.config import DataConfig, load_config
from srkit.data.datasets import PatchDataset
from testkit import pairs_for, sources_for, textured_png


@pytest.fixture()
def hr(tmp_path: Path) -> Path:
    folder = tmp_path / "hr"
    for i in range(10):
        textured_png(folder / f"im{i}.png", 48 + 4 * i, 40, seed=i)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    return folder


def test_data_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("div2k", "flickr2k", "celeba", "set5", "set14", "bsd100", "urban100"):
        assert name in out


def test_data_prepare_split_and_report(hr: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pairs"
    args = ["data", "prepare", str(hr), "-o", str(out), "--split", "0.8,0.1,0.1", "--degradation", "blur_bicubic"]
    assert main(args) == 1  # the broken file is reported and makes the exit non-zero
    assert "broken.png" in capsys.readouterr().err
    counts = {part: len(list((out / part / "HQ").glob("*.png"))) for part in ("train", "val", "test")}
    assert sum(counts.values()) == 10 and counts["val"] == 1 and counts["test"] == 1
    hq = image_io.read_rgb(out / "train" / "HQ" / "00000.png")
    lq = image_io.read_rgb(out / "train" / "LQ" / "00000.png")
    assert lq.shape[-2:] == (hq.shape[-2] // 4, hq.shape[-1] // 4)
    assert main(args) == 2  # existing output without --overwrite: a clean error
    assert "--overwrite" in capsys.readouterr().err
    bad = ["data", "prepare", str(hr), "-o", str(tmp_path / "x"), "--degradation", "[{blurr: {sigma: 1}}, bicubic]"]
    assert main(bad) == 2
    assert "blurr" in capsys.readouterr().err


def test_data_augment(hr: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "augment", str(hr), str(tmp_path / "aug"), "--variants", "2", "--seed", "1"]) == 1
    assert len(list((tmp_path / "aug").glob("*_aug*.png"))) == 20
    assert "broken.png" in capsys.readouterr().err


def _data_config(tmp_path: Path, *overrides: str) -> DataConfig:
    return load_config(None, [f"out_dir={tmp_path / 'runs'}", "data.gt_size=32", *overrides]).data


def test_random_degradation_is_drawn_per_sample(hr: Path, tmp_path: Path) -> None:
    data = _data_config(tmp_path, f"data.train=[{hr}]", f"data.val={hr}", "data.degradation=realistic")
    sources = sources_for(data, None)
    train, _val, lowres = pairs_for(data, sources)
    assert lowres.per_sample and len(train.gt) == 10 and [p.name for p, _ in train.skipped] == ["broken.png"]
    assert train.lq == [None] * 10  # no LR is stored: each patch gets its own
    ds = PatchDataset(train, scale=4, gt_size=32, seed=0, lowres=lowres)
    a, b = ds[3], ds[3]
    assert torch.equal(a[0], b[0])  # a function of (seed, index)
    bicubic = _data_config(tmp_path, f"data.train=[{hr}]", f"data.val={hr}")
    plain, _val, _ = pairs_for(bicubic, sources_for(bicubic, None))
    clean = PatchDataset(plain, scale=4, gt_size=32, seed=0)[3]
    assert torch.equal(a[1], clean[1]) and not torch.equal(a[0], clean[0])  # same HR patch, noisy/JPEG LR
    with pytest.raises(ValueError, match="lowres"):
        PatchDataset(train, scale=4, gt_size=32, seed=0)


def test_validation_degradation(hr: Path, tmp_path: Path) -> None:
    """Validation LR is the protocol's bicubic unless data.val_degradation names another fixed pipeline."""
    from srkit.data.degradations import bicubic_degrade, gaussian_blur
    from srkit.ops import quantize

    args = (f"data.train=[{hr}]", f"data.val={hr}", "data.degradation=blur_bicubic")
    plain = _data_config(tmp_path, *args)
    blurred = _data_config(tmp_path, *args, "data.val_degradation=blur_bicubic")
    _, val_plain, _ = pairs_for(plain, sources_for(plain, None))
    train, val_blur, _ = pairs_for(blurred, sources_for(blurred, None))
    gt = torch.as_tensor(val_blur.gt[0]).to(torch.float64) / 255
    want_blur = quantize(bicubic_degrade(gaussian_blur(gt, sigma=1.5), 4))
    assert torch.equal(torch.as_tensor(val_blur.lq[0]), (want_blur * 255).round().byte())
    assert torch.equal(torch.as_tensor(val_plain.lq[0]), (bicubic_degrade(gt, 4) * 255).round().byte())
    assert torch.equal(
        torch.as_tensor(train.lq[0]), torch.as_tensor(pairs_for(plain, sources_for(plain, None))[0].lq[0])
    )
    with pytest.raises(ValueError, match=r"data\.val_degradation"):
        load_config(None, ["data.val_degradation=realistic"])  # random levels: no fixed validation LR
    with pytest.raises(ValueError, match=r"data\.val_degradation"):
        load_config(None, ["data.val_degradation=blurry"])


def test_split_validation_and_paired_training(hr: Path, tmp_path: Path) -> None:
    data = _data_config(tmp_path, f"data.train=[{hr}]", "data.val=split", "data.split=[0.8, 0.2, 0.0]")
    sources = sources_for(data, None)
    assert len(sources.train_files) + len(sources.val_files) == 11 and len(sources.val_files) == 2
    assert not set(sources.train_files) & set(sources.val_files)
    # HQ/LQ pair folders are used as they are.
    assert main(["data", "prepare", str(hr), "-o", str(tmp_path / "pairs")]) == 1
    paired = _data_config(tmp_path, f"data.train=[{tmp_path / 'pairs'}]", f"data.val={hr}")
    src = sources_for(paired, None)
    train, _, _ = pairs_for(paired, src)
    assert len(src.train_pairs) == 10 and len(train.gt) == 10
    assert torch.equal(
        torch.as_tensor(train.lq[0]), (image_io.read_rgb(tmp_path / "pairs/LQ/00000.png") * 255).round().byte()
    )


def test_face_recipe_requires_flips_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rot90"):
        load_config(None, ["data.face_crop=true"])
    cfg = load_config(Path("configs/srgan_faces_x4.yaml"))
    assert cfg.data.face_crop and not cfg.data.rot90 and cfg.data.hr_size == (128, 128)
