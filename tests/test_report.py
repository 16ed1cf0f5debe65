"""srkit report: the four tables of the dual-model system, from one command."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from srkit.cli import main
from srkit.data.sources import group_key, split
from srkit.report import FACE_SET, TableSpec, face_test_split, make_report
from testkit import smooth_rgb

pytestmark = pytest.mark.usefixtures("one_thread")


def _folder(root: Path, names: list[str], size: int = 64) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(smooth_rgb(size, size, i)).save(root / name)
    return root


def test_face_test_split_holds_the_held_out_identities(tmp_path: Path) -> None:
    names = [f"Person_{i:03d}_0001.jpg" for i in range(40)]
    lfw = _folder(tmp_path / "LFW", names, size=72)
    hq = face_test_split(lfw, tmp_path / "out" / "face_test")
    expected = split(sorted(lfw.glob("*.jpg")), (0.8, 0.15, 0.05), seed=0, key=group_key("lfw"))["test"]
    made = sorted(hq.glob("*.png"))
    assert len(made) == len(expected) == 2
    assert all(Image.open(p).size == (128, 128) for p in made)  # face-cropped (centre fallback) and resized
    again = face_test_split(lfw, tmp_path / "out" / "face_test")  # reused, not rewritten
    assert again == hq and sorted(hq.glob("*.png")) == made


def test_report_tables_put_bicubic_first_and_name_what_is_missing(tmp_path: Path) -> None:
    import torch

    faces = _folder(tmp_path / "faces", ["a.png", "b.png"])
    natural = {"Nat": _folder(tmp_path / "nat", ["c.png"])}
    tables = (
        TableSpec(
            "t1", "1. faces", (("bicubic", "bicubic"), ("SRResNet", "srresnet"), ("absent", "srgan_faces")), (FACE_SET,)
        ),
        TableSpec("t2", "2. only bicubic", (("bicubic", "bicubic"), ("absent", "srgan_faces_psnr")), ("Nat",)),
    )
    report = make_report(
        tmp_path / "report",
        face_set=faces,
        natural_sets=natural,
        device=torch.device("cpu"),
        lpips_net="none",
        tables=tables,
    )
    text = report.path.read_text()
    assert "## 1. faces" in text and "## 2. only bicubic" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[1].startswith("| bicubic |") and table[2].startswith("| SRResNet |")  # after the header
    assert "Left out (not shipped): srgan_faces." in text
    assert "Not made: needs the shipped models srgan_faces_psnr." in text
    assert "Protocol:" in text and "(figures/LFW-test_a.png)" in text.replace("t1/", "")
    assert (tmp_path / "report" / "t1" / "compare.csv").is_file() and report.missing["t2"] == ["srgan_faces_psnr"]


def test_report_cli_refuses_a_missing_face_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--face-set", str(tmp_path / "none"), "-o", str(tmp_path / "r")]) == 2
    assert "--face-set" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
