"""Tests for `srkit compare`: tiny benchmark sets, bicubic, a random tiny SRResNet and a fake run folder."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srkit.cli import main
from srkit.compare import parse_models
from srkit.evaluate import evaluate_sets
from srkit.metrics import LPIPS, PROTOCOL
from srkit.models import build_generator, load_model, save_weights
from srkit.viz import CAPTION, DPI, PAD, PANEL, TITLE, crop_size, pick_crop

TINY = {"num_blocks": 1, "width": 8, "scale": 4}


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich wraps at the terminal width (80 when captured); keep table rows on one line."""
    monkeypatch.setenv("COLUMNS", "300")


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    """A uint8 RGB image with smooth shapes and some texture."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)).astype(np.int16)
    return np.clip(smooth + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data folder with two tiny benchmark sets: Tiny (two 48x48 images) and Wide (one 40x48 image)."""
    root = tmp_path / "data"
    for set_name, name, (h, w), seed in (
        ("Tiny", "a", (48, 48), 1),
        ("Tiny", "b", (48, 48), 2),
        ("Wide", "c", (40, 48), 3),
    ):
        (root / "benchmarks" / set_name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(_texture(h, w, seed)).save(root / "benchmarks" / set_name / f"{name}.png")
    return root


def _tiny_weights(path: Path, *, seed: int, meta: dict[str, str] | None = None) -> Path:
    torch.manual_seed(seed)
    net = build_generator("srresnet", **TINY)
    return save_weights(net, path, arch="srresnet", arch_kwargs=TINY, meta=meta)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A fake run: best_psnr and best_ssim from one step (same weights), best_lpips from another."""
    run = tmp_path / "myrun"
    ckpt = run / "checkpoints"
    _tiny_weights(ckpt / "best_psnr.safetensors", seed=10, meta={"step": "200", "kind": "best_psnr"})
    _tiny_weights(ckpt / "best_ssim.safetensors", seed=10, meta={"step": "200", "kind": "best_ssim"})
    _tiny_weights(ckpt / "best_lpips.safetensors", seed=11, meta={"step": "400", "kind": "best_lpips"})
    (run / "config.yaml").write_text("name: myrun\n")
    return run


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_parse_models_expands_runs_and_labels(tmp_path: Path, run_dir: Path) -> None:
    weights = _tiny_weights(tmp_path / "small.safetensors", seed=0)
    specs = parse_models(["bicubic", str(weights), f"mine={weights}", str(run_dir)])
    labels = [s.label for s in specs]
    assert labels == ["bicubic", "small", "mine", "myrun:best_psnr", "myrun:best_ssim", "myrun:best_lpips"]
    by_label = {s.label: s for s in specs}
    # Same run, same step: one evaluation serves both rows; another step is other weights.
    assert by_label["myrun:best_psnr"].key == by_label["myrun:best_ssim"].key != by_label["myrun:best_lpips"].key
    assert by_label["small"].key == by_label["mine"].key  # the same file under two labels
    assert [s.label for s in parse_models([f"srgan={run_dir}"])] == [
        "srgan:best_psnr",
        "srgan:best_ssim",
        "srgan:best_lpips",
    ]


def test_parse_models_errors(tmp_path: Path, run_dir: Path) -> None:
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(ValueError, match=r"not an srkit run.*best_psnr"):
        parse_models([str(tmp_path / "empty_run")])
    with pytest.raises(ValueError, match="unique"):
        parse_models(["bicubic", "bicubic"])
    with pytest.raises(ValueError, match="LABEL=MODEL"):
        parse_models(["=bicubic"])


def test_compare_writes_table_csv_and_figures(
    data: Path, tmp_path: Path, run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = _tiny_weights(tmp_path / "small.safetensors", seed=0)
    out = tmp_path / "cmp"
    argv = ["compare", "bicubic", str(weights), str(run_dir), "--sets", "Tiny,Wide", "--data-dir", str(data)]
    assert main([*argv, "--lpips", "none", "--out", str(out), "--device", "cpu", "--figure-images", "1"]) == 0
    printed = capsys.readouterr().out
    labels = ["bicubic", "small", "myrun:best_psnr", "myrun:best_ssim", "myrun:best_lpips"]
    assert all(label in printed for label in labels) and "Protocol" in printed

    # Long CSV: model x set x metric (no LPIPS rows when LPIPS is off), values exactly evaluate's.
    rows = _read_csv(out / "compare.csv")
    assert {(r["model"], r["set"], r["metric"]) for r in rows} == {
        (m, s, k) for m in labels for s in ("Tiny", "Wide") for k in ("psnr", "ssim")
    }
    sources = {
        "bicubic": "bicubic",
        "small": str(weights),
        **{
            f"myrun:{k}": str(run_dir / "checkpoints" / f"{k}.safetensors")
            for k in ("best_psnr", "best_ssim", "best_lpips")
        },
    }
    for label, source in sources.items():
        model = load_model(source)
        sets = [(name, data / "benchmarks" / name) for name in ("Tiny", "Wide")]
        direct = evaluate_sets(model, sets, scale=4, device=torch.device("cpu"), lpips_model=None).summary
        for r in (r for r in rows if r["model"] == label):
            entry = direct[r["set"]]
            assert float(r["mean"]) == entry.mean(r["metric"])
            assert float(r["std"]) == entry.std(r["metric"])
            assert int(r["n"]) == entry.images == (2 if r["set"] == "Tiny" else 1)
    per_image = _read_csv(out / "per_image.csv")
    assert len(per_image) == len(labels) * 3

    # Markdown: one row per model, a column per set x metric, the best of each column in bold, the protocol.
    md = (out / "compare.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert table[0] == "| model | Tiny PSNR ↑ | Tiny SSIM ↑ | Wide PSNR ↑ | Wide SSIM ↑ |"
    assert [line.split("|")[1].strip() for line in table[2:]] == labels
    means = {(r["model"], r["set"], r["metric"]): float(r["mean"]) for r in rows}
    best_psnr = max(labels, key=lambda m: means[(m, "Tiny", "psnr")])
    best_row = next(line for line in table[2:] if line.split("|")[1].strip() == best_psnr)
    assert best_row.split("|")[2].strip() == f"**{means[(best_psnr, 'Tiny', 'psnr')]:.2f}**"
    assert sum(line.split("|")[2].count("**") for line in table[2:]) == 2  # exactly one bold PSNR (no tie)
    assert PROTOCOL in md
    # The two run checkpoints from one step hold the same weights, so their rows agree.
    assert means[("myrun:best_psnr", "Tiny", "psnr")] == means[("myrun:best_ssim", "Tiny", "psnr")]

    # Figures: the first image of each set; LR | bicubic | 4 other models | HR, full images over crops.
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == ["Tiny_a.png", "Wide_c.png"]
    columns = 1 + 1 + 4 + 1
    for name, (h, w) in (("Tiny_a.png", (48, 48)), ("Wide_c.png", (40, 48))):
        with Image.open(out / "figures" / name) as im:
            width, height = im.size
        assert width == pytest.approx(columns * (PANEL + PAD) + PAD, abs=1)
        # Full images keep the HR aspect ratio (PANEL wide); the crop row is PANEL x PANEL.
        assert height - (TITLE + CAPTION + 2 * PAD + PANEL) == pytest.approx(PANEL * h / w, abs=1.5)
        assert DPI == 100


def test_compare_labels_and_lpips(tmp_path: Path, data_dir: Path) -> None:
    """LPIPS columns and values match evaluate's; LABEL=MODEL names the row."""
    folder = tmp_path / "hr"
    folder.mkdir()
    Image.fromarray(_texture(48, 48, 5)).save(folder / "x.png")
    out = tmp_path / "cmp"
    argv = ["compare", "bic=bicubic", "--sets", str(folder), "--lpips", "alex", "--data-dir", str(data_dir)]
    assert main([*argv, "--out", str(out), "--device", "cpu", "--figure-images", "0"]) == 0
    rows = {(r["model"], r["metric"]): float(r["mean"]) for r in _read_csv(out / "compare.csv")}
    assert set(rows) == {("bic", "psnr"), ("bic", "ssim"), ("bic", "lpips")}
    lpips_model = LPIPS("alex", data_dir=data_dir)
    direct = evaluate_sets(
        load_model("bicubic"), [("hr", folder)], scale=4, device=torch.device("cpu"), lpips_model=lpips_model
    ).summary
    assert rows[("bic", "lpips")] == pytest.approx(direct["hr"].lpips_mean, rel=1e-6)
    assert "hr LPIPS ↓" in (out / "compare.md").read_text()
    assert not (out / "figures").exists()


def test_compare_self_ensemble_rows(data: Path, tmp_path: Path, run_dir: Path) -> None:
    """MODEL+ is MODEL as a geometric self-ensemble: its own row and evaluation, scored as evaluate scores the
    wrapped model; a label keeps its name; the protocol says what + means."""
    from srkit.inference import with_self_ensemble

    weights = _tiny_weights(tmp_path / "small.safetensors", seed=0)
    specs = parse_models([str(weights), f"{weights}+", f"ens={weights}+", f"{run_dir}+"])
    assert [s.label for s in specs][:3] == ["small", "small+", "ens"]
    assert [s.label for s in specs][3:] == ["myrun:best_psnr+", "myrun:best_ssim+", "myrun:best_lpips+"]
    assert specs[1].self_ensemble and not specs[0].self_ensemble and specs[1].key == specs[0].key + "+"
    out = tmp_path / "cmp"
    argv = ["compare", str(weights), f"{weights}+", "--sets", "Tiny", "--data-dir", str(data), "--lpips", "none"]
    assert main([*argv, "--out", str(out), "--device", "cpu", "--figure-images", "0"]) == 0
    rows = {(r["model"], r["metric"]): float(r["mean"]) for r in _read_csv(out / "compare.csv")}
    sets = [("Tiny", data / "benchmarks" / "Tiny")]
    ens = with_self_ensemble(load_model(weights))
    direct = evaluate_sets(ens, sets, scale=4, device=torch.device("cpu"), lpips_model=None).summary["Tiny"]
    assert rows[("small+", "psnr")] == direct.mean("psnr") != rows[("small", "psnr")]
    assert "MODEL+ = geometric self-ensemble x8" in (out / "compare.md").read_text()


def test_compare_with_another_degradation(data: Path, tmp_path: Path) -> None:
    """--degradation reaches every model: the scores equal evaluate's under the same LR, the table says which."""
    out = tmp_path / "cmp"
    argv = ["compare", "bicubic", "--sets", "Tiny", "--data-dir", str(data), "--lpips", "none", "--device", "cpu"]
    assert main([*argv, "--degradation", "blur_bicubic", "--out", str(out), "--figure-images", "1"]) == 0
    rows = {(r["model"], r["metric"]): float(r["mean"]) for r in _read_csv(out / "compare.csv")}
    sets = [("Tiny", data / "benchmarks" / "Tiny")]
    model = load_model("bicubic")
    blurred = evaluate_sets(
        model, sets, scale=4, device=torch.device("cpu"), lpips_model=None, degradation="blur_bicubic"
    ).summary["Tiny"]
    plain = evaluate_sets(model, sets, scale=4, device=torch.device("cpu"), lpips_model=None).summary["Tiny"]
    assert rows[("bicubic", "psnr")] == blurred.psnr_mean < plain.psnr_mean
    md = (out / "compare.md").read_text()
    assert "LR degradation: blur_bicubic" in md and "`blur_bicubic` degradation" in md


def test_compare_errors(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--sets", "Tiny", "--data-dir", str(data), "--lpips", "none", "--out", str(tmp_path / "o")]
    assert main(["compare", "no_such_model", *base]) == 2
    assert "no_such_model" in capsys.readouterr().err
    assert main(["compare", "bicubic", *base[:1], "Nope", *base[2:]]) == 2
    assert "Nope" in capsys.readouterr().err
    assert main(["compare", "bicubic", *base, "--figure-images", "-1"]) == 2
    assert "--figure-images" in capsys.readouterr().err


def test_pick_crop_finds_the_texture() -> None:
    gt = torch.full((3, 64, 96), 0.5, dtype=torch.float64)
    gt[:, 32:48, 64:80] = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    side = crop_size(64, 96, scale=4)
    assert side == 16
    assert pick_crop(gt, size=side, scale=4) == (32, 64)
