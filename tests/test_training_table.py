"""scripts/training_table.py: rows name their model and the runs that trained it; steps and wall time add up."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "training_table.py"


@pytest.fixture(scope="module")
def table() -> ModuleType:
    spec = importlib.util.spec_from_file_location("training_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(folder: Path, **summary: object) -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    if summary:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_rows_and_training_cells(table: ModuleType, tmp_path: Path) -> None:
    stage1 = _run(
        tmp_path / "s1",
        step=1000,
        wall_seconds_total=600.0,
        wall_seconds_this_session=60.0,
        device="cpu",
        hardware="Xeon, 2 threads",
    )
    stage2 = _run(tmp_path / "s2", step=2000, wall_seconds_this_session=1200.0, device="cpu")  # an older summary
    assert table.parse_row("bicubic") == table.Row("bicubic", "bicubic")
    assert table.training_cells(table.parse_row("bicubic")) == ("-", "-", "-")
    alone = table.parse_row(f"one={stage1}")
    assert alone.model == str(stage1 / "checkpoints" / "best_lpips.safetensors") and alone.runs == (stage1,)
    assert table.training_cells(alone) == ("1,000", "10 min", "Xeon, 2 threads")
    both = table.parse_row(f"two=w.safetensors@{stage1},{stage2}")
    assert both.model == "w.safetensors" and both.runs == (stage1, stage2)
    assert table.training_cells(both) == ("3,000 (1000 + 2000)", "30 min", "Xeon, 2 threads; cpu")
    text = table.parse_row("srgan16=srgan@2,400 steps, see its card")
    assert text.runs == () and table.training_cells(text) == ("2,400 steps, see its card", "", "")
    cells = table.parse_row("srgan16=srgan@41,000 + 2,400 | 250 + 52 min | AMD EPYC (its card)")
    assert table.training_cells(cells) == ("41,000 + 2,400", "250 + 52 min", "AMD EPYC (its card)")
    with pytest.raises(SystemExit, match=r"'srgan16'.* 4 '\|'-separated cells"):
        table.training_cells(table.parse_row("srgan16=srgan@1 | 2 | 3 | 4"))


def test_a_killed_run_is_read_from_its_step_log(table: ModuleType, tmp_path: Path) -> None:
    run = _run(tmp_path / "killed")
    (run / "history.csv").write_text("step,loss_g,sec_per_step\n20,1.0,3.0\n40,1.0,6.0\n50,1.0,2.0\n")
    assert table.training_cells(table.parse_row(f"k={run}")) == ("50", "~3 min", "?")  # 60 + 120 + 20 = 200 s
    empty = _run(tmp_path / "empty")
    with pytest.raises(SystemExit, match=r"neither summary\.json nor history\.csv"):
        table.training_cells(table.parse_row(f"e={empty}"))
