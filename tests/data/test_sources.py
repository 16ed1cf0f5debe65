"""Data sources, splits, the pair preparation step and the on-disk decoded cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srkit import fs, image_io
from srkit.data.datasets import PatchDataset, load_pairs
from srkit.data.degradations import bicubic_degrade
from srkit.data.lowres import LowRes
from srkit.data.prepare import prepare_pairs
from srkit.data.sources import group_key, official_partition, paired_folders, read_file_list, split
from srkit.ops import modcrop
from testkit import sources_for, textured_png


@pytest.fixture()
def hr_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "hr"
    textured_png(folder / "a.png", 50, 42, 1)
    textured_png(folder / "sub" / "b.png", 64, 64, 2)
    textured_png(folder / "c.png", 20, 20, 3)  # smaller than a 32px crop
    (folder / "bad.png").write_bytes(b"not an image")
    return folder


def test_split_is_reproducible_and_complete() -> None:
    items = list(range(103))
    a, b = split(items, seed=7), split(items, seed=7)
    assert a == b
    assert split(items, seed=8) != a
    assert sorted(a["train"] + a["val"] + a["test"]) == items  # nothing lost, nothing twice
    assert (len(a["val"]), len(a["test"])) == (15, 5)  # the face report's 80/15/5
    with pytest.raises(ValueError, match="sum"):
        split(items, (0.5, 0.2, 0.2))


def test_file_list(tmp_path: Path, hr_folder: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("# training images\nhr/a.png\n\nhr/sub/b.png  # the big one\n")
    assert read_file_list(listing) == [tmp_path / "hr/a.png", tmp_path / "hr/sub/b.png"]
    listing.write_text("hr/missing.png\n")
    with pytest.raises(FileNotFoundError, match=r"list.txt:1.*missing.png"):
        read_file_list(listing)


def test_paired_folders(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    for name in ("00000", "00001"):
        textured_png(root / "HQ" / f"{name}.png", 16, 16)
        textured_png(root / "LQ" / f"{name}.png", 4, 4)
    pairs = paired_folders(root)
    assert [(h.name, lq.name) for h, lq in pairs] == [("00000.png", "00000.png"), ("00001.png", "00001.png")]
    textured_png(root / "HQ" / "00002.png", 16, 16)
    with pytest.raises(ValueError, match="00002"):
        paired_folders(root)
    with pytest.raises(FileNotFoundError, match="HQ"):
        paired_folders(tmp_path / "nothing")


def test_official_partition(tmp_path: Path) -> None:
    part = tmp_path / "list_eval_partition.txt"
    part.write_text("000001.jpg 0\n000002.jpg 0\n000003.jpg 1\n000004.jpg 2\n")
    out = official_partition(part, tmp_path / "img")
    assert [p.name for p in out["train"]] == ["000001.jpg", "000002.jpg"]
    assert [p.name for p in out["val"]] == ["000003.jpg"] and [p.name for p in out["test"]] == ["000004.jpg"]
    part.write_text("000001.jpg 7\n")
    with pytest.raises(ValueError, match=r":1: expected"):
        official_partition(part, tmp_path)


def test_prepare_pairs(tmp_path: Path, hr_folder: Path) -> None:
    out = tmp_path / "prepared"
    images = fs.list_images([hr_folder])
    report = prepare_pairs(images, out)
    assert [p.name for p, _, _ in report.written] == ["a.png", "c.png", "b.png"]
    assert [p.name for p, _ in report.skipped] == ["bad.png"]
    assert sorted(p.name for p in (out / "HQ").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    hq, lq = image_io.read_rgb(out / "HQ" / "00000.png"), image_io.read_rgb(out / "LQ" / "00000.png")
    assert hq.shape == (3, 40, 48) and lq.shape == (3, 10, 12)  # modcropped 42x50 -> 40x48
    src = modcrop(image_io.read_rgb(hr_folder / "a.png").double(), 4)
    assert torch.allclose(lq.double(), bicubic_degrade(src, 4), atol=1e-6)
    assert "a.png" in (out / "pairs.csv").read_text()
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare_pairs(images, out)
    assert prepare_pairs(images, out, overwrite=True).written
    with pytest.raises(ValueError, match="holds input images"):
        prepare_pairs(images, hr_folder / "sub", overwrite=True)


def test_prepare_is_reproducible_with_random_degradation(tmp_path: Path, hr_folder: Path) -> None:
    noisy = LowRes.from_spec(["bicubic", {"noise": {"sigma": [5, 15]}}], scale=4)
    images = fs.list_images([hr_folder / "sub"])
    prepare_pairs(images, tmp_path / "one", lowres=noisy, seed=3)
    prepare_pairs(images, tmp_path / "two", lowres=noisy, seed=3)
    prepare_pairs(images, tmp_path / "three", lowres=noisy, seed=4)
    one, two, three = (image_io.read_rgb(tmp_path / d / "LQ" / "00000.png") for d in ("one", "two", "three"))
    assert torch.equal(one, two) and not torch.equal(one, three)


def test_disk_cache_matches_memory_and_skips_decoding(
    tmp_path: Path, hr_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = load_pairs([hr_folder], lowres=LowRes(4), min_size=32)
    cache = tmp_path / "cache"
    cold = load_pairs([hr_folder], lowres=LowRes(4), min_size=32, cache_dir=cache)
    assert cold.names == memory.names == ["a.png", "b.png"]
    assert {p.name for p, _ in cold.skipped} == {"bad.png", "c.png"}
    assert len(list(cache.glob("*.npy"))) == 4  # HR + LR of the two usable images

    def no_decoding(path: object) -> None:
        raise AssertionError("a warm cache must not decode images")

    monkeypatch.setattr(image_io, "read_rgb", no_decoding)
    warm = load_pairs([hr_folder / "a.png", hr_folder / "sub"], lowres=LowRes(4), min_size=32, cache_dir=cache)
    assert isinstance(warm.gt[0], np.memmap)
    for g_mem, g_disk in zip(memory.gt, warm.gt, strict=True):
        assert torch.equal(torch.as_tensor(g_mem), torch.from_numpy(np.array(g_disk)))
    a = PatchDataset(memory, scale=4, gt_size=32, seed=1)
    b = PatchDataset(warm, scale=4, gt_size=32, seed=1)
    for k in range(5):
        assert all(torch.equal(x, y) for x, y in zip(a[k], b[k], strict=True))


def test_training_images_in_odd_modes_become_rgb_pairs(tmp_path: Path) -> None:
    """Gray, palette, RGBA, gray+alpha and 16-bit HR files train like RGB; a truncated one is skipped."""
    folder = tmp_path / "odd"
    folder.mkdir()
    rgb = np.asarray(Image.open(textured_png(tmp_path / "base.png", 48, 40, 7)))
    Image.fromarray(rgb).convert("L").save(folder / "gray.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(rgb).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(rgb).convert("LA").save(folder / "gray_alpha.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(folder / "deep16.png")
    (folder / "truncated.png").write_bytes((folder / "gray.png").read_bytes()[:60])
    pairs = load_pairs([folder], lowres=LowRes(4), min_size=32)
    assert [p.name for p, _ in pairs.skipped] == ["truncated.png"]
    assert "truncated.png" in str(pairs.skipped[0][0])
    assert len(pairs.gt) == 5
    for gt, lq in zip(pairs.gt, pairs.lq, strict=True):
        assert torch.as_tensor(gt).dtype == torch.uint8 and tuple(gt.shape) == (3, 40, 48)
        assert torch.as_tensor(lq).dtype == torch.uint8 and tuple(lq.shape) == (3, 10, 12)
    gray = np.asarray(pairs.gt[[Path(n).name for n in pairs.names].index("gray.png")])
    assert np.array_equal(gray[0], gray[2])  # gray stays gray in all three channels


def test_split_by_identity_keeps_each_person_in_one_part() -> None:
    # LFW-style names: several photos of some people, one of others.
    names = [
        f"{person}_{n:04d}.jpg" for person, count in [("Ann_Lee", 5), ("Bo", 1), ("Cy_D", 3)] for n in range(count)
    ]
    names += [f"Solo_{i}_0001.jpg" for i in range(40)]
    items = [Path("faces") / n for n in names]
    key = group_key("lfw")
    assert key is not None and key(Path("Ann_Lee_0003.jpg")) == "Ann_Lee"
    parts = split(items, (0.7, 0.2, 0.1), seed=3, key=key)
    assert sorted(p for files in parts.values() for p in files) == sorted(items)  # nothing lost, nothing twice
    people = {name: {key(p) for p in files} for name, files in parts.items()}
    assert not (people["train"] & people["val"]) and not (people["train"] & people["test"])
    assert not (people["val"] & people["test"])
    assert parts["val"] and parts["test"]
    # One item per identity: exactly the plain split (so runs started before grouping keep their parts).
    solo = [Path(f"P{i}_0001.jpg") for i in range(50)]
    assert split(solo, (0.8, 0.15, 0.05), seed=0, key=key) == split(solo, (0.8, 0.15, 0.05), seed=0)


def test_split_by_folder_and_by_regex(tmp_path: Path) -> None:
    items = [Path(f"person{i % 7}") / f"img{i}.png" for i in range(35)]
    parts = split(items, (0.6, 0.2, 0.2), seed=1, key=group_key("folder"))
    folders = {name: {p.parent for p in files} for name, files in parts.items()}
    assert not (folders["train"] & folders["val"]) and not (folders["val"] & folders["test"])
    regex_key = group_key(r"^id(\d+)-")
    assert regex_key is not None and regex_key(Path("id42-front.png")) == "42"
    with pytest.raises(ValueError, match=r"frontal\.png"):
        regex_key(Path("frontal.png"))
    with pytest.raises(ValueError, match="regular expression"):
        group_key("(unclosed")


def test_face_recipe_runs_on_celeba_partition(tmp_path: Path) -> None:
    from srkit.config import load_config

    images = tmp_path / "celeba" / "img_align_celeba"
    for i in range(1, 7):
        textured_png(images / f"{i:06d}.png", 40, 40, i)
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text(
        "".join(f"{i:06d}.png {part}\n" for i, part in zip(range(1, 7), [0, 0, 0, 1, 1, 2], strict=True))
    )
    overrides = [
        f"data.train=[{images}]",
        f"data.partition_file={tmp_path / 'celeba' / 'list_eval_partition.txt'}",
        "data.split=null",
        "data.group_by=null",
    ]
    config = load_config(Path(__file__).parents[2] / "configs" / "srresnet_faces_x4.yaml", overrides)
    sources = sources_for(config.data, None)
    assert [p.name for p in sources.train_files] == ["000001.png", "000002.png", "000003.png"]
    assert [p.name for p in sources.val_files] == ["000004.png", "000005.png"]  # the official val part
    assert sources.val_name == "partition-val"


def test_face_recipe_splits_lfw_by_identity(data_dir: Path) -> None:
    from srkit.config import load_config

    config = load_config(Path(__file__).parents[2] / "configs" / "srresnet_faces_x4.yaml")
    assert config.data.group_by == "lfw" and config.data.val == "split"
    sources = sources_for(config.data, data_dir)
    key = group_key("lfw")
    assert key is not None
    train = {key(p) for p in sources.train_files}
    val = {key(p) for p in sources.val_files}
    test = split(sorted((data_dir / "faces" / "LFW").glob("*.jpg")), (0.8, 0.15, 0.05), seed=0, key=key)["test"]
    assert len(train) > 3000 and len(val) > 600 and len(test) > 200
    assert not train & val and not train & {key(p) for p in test} and not val & {key(p) for p in test}
