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
            "t1",
            "1. faces",
            (("bicubic", "bicubic"), ("SRResNet", "srresnet"), ("absent", "no_such_face_model")),
            (FACE_SET,),
        ),
        TableSpec("t2", "2. only bicubic", (("bicubic", "bicubic"), ("absent", "no_such_model")), ("Nat",)),
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
    assert "Left out (not shipped): no_such_face_model." in text
    assert "Not made: needs the shipped models no_such_model." in text
    assert "Protocol:" in text and "(figures/LFW-test_a.png)" in text.replace("t1/", "")
    assert (tmp_path / "report" / "t1" / "compare.csv").is_file() and report.missing["t2"] == ["no_such_model"]


def test_report_cli_refuses_a_missing_face_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--face-set", str(tmp_path / "none"), "-o", str(tmp_path / "r")]) == 2
    assert "--face-set" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_report_md_gathers_tables_made_at_different_times(tmp_path: Path) -> None:
    import torch

    from srkit.report import TABLES

    faces = _folder(tmp_path / "faces", ["a.png"])
    natural = {"Nat": _folder(tmp_path / "nat", ["c.png"])}
    first = TableSpec("faces", TABLES[0].title, (("bicubic", "bicubic"), ("SRResNet", "srresnet")), (FACE_SET,))
    later = TableSpec("domains", TABLES[3].title, (("bicubic", "bicubic"), ("SRResNet", "srresnet")), ("Nat",))
    out = tmp_path / "report"
    common = {"face_set": faces, "natural_sets": natural, "device": torch.device("cpu"), "lpips_net": "none"}
    text = make_report(out, tables=(first,), **common).path.read_text()
    assert f"## {TABLES[0].title}" in text and "Not made yet: `srkit report --tables domains`." in text
    text = make_report(out, tables=(later,), **common).path.read_text()
    # The second run kept the first table and added its own, in the report's order; two still to come.
    assert text.index(f"## {TABLES[0].title}") < text.index(f"## {TABLES[3].title}")
    assert "--tables domains" not in text and text.count("Not made yet") == 2
    assert sum(line.startswith("| SRResNet |") for line in text.splitlines()) == 2


def test_report_cli_refuses_unknown_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    faces = _folder(tmp_path / "faces", ["a.png"])
    argv = ["report", "-o", str(tmp_path / "r"), "--face-set", str(faces), "--tables", "faces,nope", "--device", "cpu"]
    assert main(argv) == 2
    assert "--tables 'faces,nope': expected names among faces, faces_cross, natural, domains" in capsys.readouterr().err
