"""Tests for the `srkit` command line, called in-process through srkit.cli.main (two subprocess tests)."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from srkit import image_io
from srkit.archs import SRResNet
from srkit.cli import main
from srkit.metrics import PROTOCOL
from srkit.models import build_generator, save_weights


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich wraps at the terminal width (80 when captured); long tmp paths must stay on one line."""
    monkeypatch.setenv("COLUMNS", "300")


def _smooth(h: int, w: int, *, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A smooth random uint8 (h, w, channels) image: random coarse grid, bicubic-upsampled by Pillow."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2), channels), dtype=np.uint8)
    bands = [
        np.asarray(Image.fromarray(coarse[:, :, c]).resize((w, h), Image.Resampling.BICUBIC)) for c in range(channels)
    ]
    return np.stack(bands, -1)


def _write_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(path)
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder (hidden ones too), by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# evaluate -----------------------------------------------------------------------------------------------


@pytest.fixture
def hr_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "hr"
    _write_png(folder / "a.png", _smooth(48, 40, seed=1))
    _write_png(folder / "b.png", _smooth(40, 48, seed=2))
    return folder


def test_evaluate_folder(hr_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["evaluate", "--model", "bicubic", "--sets", str(hr_folder), "--lpips", "none"]
    assert main([*argv, "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "Protocol" in printed and "hr" in printed

    rows = _read_csv(out / "per_image.csv")
    assert [r["image"] for r in rows] == ["a.png", "b.png"]
    assert all(r["set"] == "hr" for r in rows)
    assert [(int(r["height"]), int(r["width"])) for r in rows] == [(48, 40), (40, 48)]
    psnrs = [float(r["psnr"]) for r in rows]
    ssims = [float(r["ssim"]) for r in rows]
    assert all(15 < p < 60 for p in psnrs) and all(0 < s <= 1 for s in ssims)
    assert all(r["lpips"] == "" for r in rows)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"] == PROTOCOL
    assert summary["model"] == "bicubic" and summary["scale"] == 4 and summary["lpips_net"] == "none"
    entry = summary["sets"]["hr"]
    assert entry["images"] == 2
    assert entry["psnr_mean"] == pytest.approx(sum(psnrs) / 2, rel=1e-12)
    assert entry["ssim_mean"] == pytest.approx(sum(ssims) / 2, rel=1e-12)
    assert entry["lpips_mean"] is None
    # No temp files left next to the results.
    assert sorted(os.listdir(out)) == ["per_image.csv", "summary.json"]


def test_evaluate_with_another_degradation(hr_folder: Path, tmp_path: Path) -> None:
    """--degradation blur_bicubic scores against LR made by blur(1.5) then bicubic: the row equals a hand-made
    pair scored directly, differs from the protocol's bicubic row, and the summary says which LR it used."""
    from srkit.data.degradations import bicubic_degrade, gaussian_blur
    from srkit.evaluate import evaluate_pair, load_pair
    from srkit.ops import modcrop, quantize

    base = ["evaluate", "--model", "bicubic", "--sets", str(hr_folder), "--lpips", "none", "--device", "cpu"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert main([*base, "--degradation", "blur_bicubic", "--out", str(tmp_path / "blur")]) == 0
    plain = {r["image"]: float(r["psnr"]) for r in _read_csv(tmp_path / "plain" / "per_image.csv")}
    blur = {r["image"]: float(r["psnr"]) for r in _read_csv(tmp_path / "blur" / "per_image.csv")}
    assert all(blur[k] < plain[k] - 0.1 for k in plain)  # blurred LR loses detail bicubic cannot bring back

    gt = modcrop(quantize(image_io.read_rgb(hr_folder / "a.png").to(torch.float64)), 4)
    lq = quantize(bicubic_degrade(gaussian_blur(gt, sigma=1.5), 4))
    model = build_generator("bicubic", scale=4)
    _, row = evaluate_pair(
        model, gt, lq, set_name="hr", image="a.png", scale=4, device=torch.device("cpu"), lpips_model=None
    )
    assert blur["a.png"] == pytest.approx(row.psnr, abs=1e-9)
    # The step-list spelling of the same pipeline gives the same LR; a seeded pipeline is the same on every call.
    from srkit.data.lowres import LowRes

    steps = LowRes.from_spec([{"blur": {"sigma": 1.5}}, "bicubic"], scale=4)
    assert torch.equal(load_pair(hr_folder / "a.png", scale=4, lowres=steps)[1], lq)
    noisy = LowRes.from_spec("realistic", scale=4)
    first, again = (load_pair(hr_folder / "b.png", scale=4, lowres=noisy)[1] for _ in range(2))
    assert torch.equal(first, again)

    summary = json.loads((tmp_path / "blur" / "summary.json").read_text())
    assert summary["degradation"] == "blur_bicubic" and "LR degradation: blur_bicubic" in summary["protocol"]
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["protocol"] == PROTOCOL


def test_evaluate_bad_degradation(hr_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["evaluate", "--model", "bicubic", "--sets", str(hr_folder), "--lpips", "none", "--out", str(tmp_path / "o")]
    assert main([*base, "--degradation", "blurry"]) == 2
    assert "unknown degradation preset 'blurry'" in capsys.readouterr().err
    assert main([*base, "--degradation", "[{blur: {sigma: 1.5}}"]) == 2
    assert "not a valid step list" in capsys.readouterr().err
    assert main([*base, "--degradation", "[{blur: {sigma: 1.5}}]"]) == 2  # no bicubic step: no downscale
    assert "exactly one 'bicubic' step" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_evaluate_folder_with_lpips(hr_folder: Path, tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "out"
    argv = ["evaluate", "--model", "bicubic", "--sets", str(hr_folder), "--lpips", "alex"]
    assert main([*argv, "--out", str(out), "--device", "cpu"]) == 0
    rows = _read_csv(out / "per_image.csv")
    assert len(rows) == 2
    values = [float(r["lpips"]) for r in rows]
    assert all(math.isfinite(v) and 0 < v < 1 for v in values)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lpips_net"] == "alex"
    assert summary["sets"]["hr"]["lpips_mean"] == pytest.approx(sum(values) / 2, rel=1e-12)


def test_evaluate_set5_bicubic_matches_published(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "out"
    argv = ["evaluate", "--sets", "Set5", "--model", "bicubic", "--lpips", "none", "--device", "cpu"]
    assert main([*argv, "--out", str(out)]) == 0
    entry = json.loads((out / "summary.json").read_text())["sets"]["Set5"]
    assert entry["images"] == 5
    assert entry["psnr_mean"] == pytest.approx(28.43, abs=0.015)
    assert entry["ssim_mean"] == pytest.approx(0.811, abs=0.002)


def test_evaluate_unknown_set(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["evaluate", "--sets", "NoSuchSet", "--model", "bicubic", "--lpips", "none", "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "NoSuchSet" in err
    assert "expected a folder" in err and "Set5" in err  # what was expected, and what is there
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_evaluate_leaves_grad_mode_alone(hr_folder: Path, tmp_path: Path) -> None:
    # Evaluation must not switch autograd off process-wide: later training in the same process needs it.
    assert torch.is_grad_enabled()
    argv = ["evaluate", "--sets", str(hr_folder), "--lpips", "none", "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    assert torch.is_grad_enabled(), "srkit evaluate left autograd disabled for the whole process"


# upscale ------------------------------------------------------------------------------------------------


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """Good images of every kind, one nested, plus a corrupt bad.png."""
    folder = tmp_path / "in"
    _write_png(folder / "rgb.png", _smooth(12, 16, seed=3))
    rgba = _smooth(12, 16, channels=4, seed=4)
    rgba[:, :8, 3] = 0  # a transparent left half
    rgba[:, 8:, 3] = 255
    _write_png(folder / "rgba.png", rgba)
    _write_png(folder / "gray.png", _smooth(16, 12, channels=1, seed=5))
    # 16-bit values off the 8-bit grid (x * 257 is where 8-bit values land), so precision loss would show.
    deep = np.minimum(_smooth(12, 12, seed=6).astype(np.uint32) * 257 + 100, 65535).astype(np.uint16)
    assert cv2.imwrite(str(folder / "deep.png"), np.ascontiguousarray(deep[:, :, ::-1]))
    assert image_io.read_image(folder / "deep.png").bit_depth == 16
    _write_png(folder / "sub" / "nested.png", _smooth(16, 16, seed=7))
    (folder / "bad.png").write_bytes(b"not an image")
    return folder


GOOD = {"rgb.png": (12, 16), "rgba.png": (12, 16), "gray.png": (16, 12), "deep.png": (12, 12)}
GOOD["sub/nested.png"] = (16, 16)


def test_upscale_mixed_folder(mixed_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    inputs_before = _snapshot(mixed_folder)
    assert main(["upscale", str(mixed_folder), "-o", str(out), "--model", "bicubic", "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    printed = captured.out + captured.err  # the failures are listed on stderr
    assert "bad.png" in printed and "1 file(s) failed" in printed
    assert "wrote 5 of 6" in printed
    assert _snapshot(mixed_folder) == inputs_before

    assert sorted(_snapshot(out)) == sorted(GOOD)  # same relative paths, nothing for bad.png
    for rel, (h, w) in GOOD.items():
        with Image.open(out / rel) as im:
            assert im.size == (4 * w, 4 * h), rel

    with Image.open(out / "rgb.png") as im:
        assert im.mode == "RGB"
        rgb = np.asarray(im).astype(int)
    with Image.open(mixed_folder / "rgb.png") as im:
        reference = np.asarray(im.resize((64, 48), Image.Resampling.BICUBIC)).astype(int)
    # A real 4x bicubic: matches Pillow's bicubic within one level away from the borders.
    assert np.abs(rgb - reference)[8:-8, 8:-8].max() <= 1

    with Image.open(out / "rgba.png") as im:
        assert im.mode == "RGBA"
        alpha = np.asarray(im)[:, :, 3]
    assert (alpha[:, :28] == 0).all() and (alpha[:, 36:] == 255).all()  # transparent half kept

    with Image.open(out / "gray.png") as im:
        assert im.mode == "L"

    deep = image_io.read_image(out / "deep.png")
    assert deep.bit_depth == 16 and deep.rgb.shape == (3, 48, 48)
    raw = cv2.imread(str(out / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert raw is not None and raw.dtype == np.uint16
    assert np.any(raw % 257 != 0)  # 16-bit precision, not 8-bit values scaled up


def test_upscale_existing_outputs_and_overwrite(
    mixed_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["upscale", str(mixed_folder), "-o", str(out), "--device", "cpu"]
    assert main(argv) == 1
    first = _snapshot(out)
    capsys.readouterr()

    assert main(argv) == 1
    captured = capsys.readouterr()
    printed = captured.out + captured.err  # the failures are listed on stderr
    assert "wrote 0 of 6" in printed
    assert printed.count("exists") == 5 and "--overwrite" in printed
    assert _snapshot(out) == first  # nothing replaced

    (mixed_folder / "bad.png").unlink()
    (out / "rgb.png").write_bytes(b"stale")
    assert main([*argv, "--overwrite"]) == 0
    assert _snapshot(out) == first  # the stale file was replaced by the same result as before


def test_upscale_refuses_to_overwrite_inputs(mixed_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(mixed_folder)
    status = main(["upscale", str(mixed_folder), "-o", str(mixed_folder), "--overwrite", "--device", "cpu"])
    assert status != 0
    assert _snapshot(mixed_folder) == before  # byte-for-byte, and no new files
    captured = capsys.readouterr()
    printed = captured.out + captured.err  # the failures are listed on stderr
    assert "overwrite an input" in printed


def test_upscale_with_saved_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_generator("srresnet", width=8, num_blocks=2, scale=4)
    assert isinstance(model, SRResNet)
    # One training step, so the file holds weights that differ from any fresh init.
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    lq = torch.rand(2, 3, 8, 8)
    loss = (model(lq) - torch.rand(2, 3, 32, 32)).abs().mean()
    loss.backward()
    opt.step()
    model.eval()
    kwargs = {"width": 8, "num_blocks": 2, "scale": 4}
    weights = save_weights(model, tmp_path / "tiny.safetensors", arch="srresnet", arch_kwargs=kwargs)
    src = _write_png(tmp_path / "in" / "x.png", _smooth(12, 16, seed=8))
    out = tmp_path / "out"
    argv = ["upscale", str(src), "-o", str(out), "--model", str(weights), "--device", "cpu", "--precision", "fp32"]
    assert main(argv) == 0
    result = image_io.read_image(out / "x.png")
    assert result.rgb.shape == (3, 48, 64)
    with torch.no_grad():
        expected = model(image_io.read_rgb(src)[None])[0]
    np.testing.assert_array_equal(image_io.to_uint8(result.rgb), image_io.to_uint8(expected))


def test_upscale_missing_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["upscale", str(tmp_path / "nope.png"), "-o", str(tmp_path / "out"), "--device", "cpu"]) == 2
    assert "nope.png" in capsys.readouterr().err


# models, entry point ------------------------------------------------------------------------------------


def test_models_lists_every_model_with_domain_scale_params(capsys: pytest.CaptureFixture[str]) -> None:
    from srkit.models import describe_shipped, load_model, shipped_models

    assert main(["models"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("│")]
    cells = {r.split("│")[1].strip(): [c.strip() for c in r.split("│")[2:]] for r in rows}
    assert cells["bicubic"][:3] == ["any", "any", "0"]
    for name in shipped_models():
        domain, scale, params = cells[name][:3]
        assert domain in ("natural", "faces") and scale == "x4"
        info = next(i for i in describe_shipped() if i.name == name)
        model = load_model(name)
        assert int(params.replace(",", "")) == info.params == sum(p.numel() for p in model.parameters())


def test_console_script_help() -> None:
    script = Path(sys.executable).parent / "srkit"
    assert script.is_file(), f"console script not installed next to {sys.executable}"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: srkit")
    for command in ("evaluate", "upscale", "models"):
        assert command in result.stdout


def test_python_dash_m_runs_the_cli() -> None:
    """`python -m srkit` is the console script: same commands, same exit status for a bad one."""

    def srkit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "srkit", *args], capture_output=True, text=True, check=False)

    ok = srkit("models")
    assert ok.returncode == 0, ok.stderr
    assert "bicubic" in ok.stdout
    bad = srkit("no-such-command")
    assert bad.returncode != 0
    assert "no-such-command" in bad.stderr
