"""Frequency fusion (archs.fusion, `srkit fuse`): LOW's output below a Gaussian, HIGH's above it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from srkit.archs import FrequencyFusion
from srkit.archs.fusion import gaussian_taps
from srkit.cli import main
from srkit.inference import upscale_tiled
from srkit.interpolate import fuse, fuse_models
from srkit.losses import gaussian_lowpass
from srkit.models import build_generator, load_model, read_metadata, save_weights
from testkit import noise_pngs, random_batch

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"width": 8, "num_blocks": 1}
CPU = torch.device("cpu")


def _saved(path: Path, seed: int, arch: str = "srresnet", **kwargs: object) -> Path:
    torch.manual_seed(seed)
    args = {"scale": 4, **(kwargs or TINY)}
    return save_weights(build_generator(arch, **args).eval(), path, arch=arch, arch_kwargs=args)


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return _saved(tmp_path / "low.safetensors", 1), _saved(tmp_path / "high.safetensors", 2)


def test_taps_are_a_normalised_gaussian() -> None:
    taps = gaussian_taps(1.5).double()
    assert taps.numel() == 2 * 5 + 1 and taps.sum().item() == pytest.approx(1.0)
    assert taps[6].item() / taps[5].item() == pytest.approx(np.exp(-1 / (2 * 1.5**2)), rel=1e-6)
    assert torch.equal(taps, taps.flip(0))


def test_fusion_is_high_plus_the_low_band_of_the_difference(pair: tuple[Path, Path]) -> None:
    low, high = (load_model(p) for p in pair)
    lq = random_batch(2, 12, 10, seed=3)
    for sigma in (0.6, 1.0, 2.5):
        fused, arch, kwargs = fuse(*pair, sigma)
        assert arch == "freqfusion" and kwargs["sigma"] == sigma
        with torch.no_grad():
            a, b, got = low(lq), high(lq), fused(lq)
        # By hand: torchvision's Gaussian blur (the training loss's low-pass) of LOW - HIGH, added to HIGH.
        expected = b + gaussian_lowpass(a - b, sigma)
        torch.testing.assert_close(got, expected, atol=2e-6, rtol=0)
        # ...which is LOW's low band plus HIGH's high band.
        torch.testing.assert_close(got, gaussian_lowpass(a, sigma) + b - gaussian_lowpass(b, sigma), atol=2e-6, rtol=0)


def test_a_sweep_moves_only_the_band_edge(pair: tuple[Path, Path]) -> None:
    from srkit.interpolate import fusions

    at = fusions(*pair)  # the two networks read once, the sigma set per value
    lq = random_batch(1, 10, 9, seed=11)
    for sigma in (2.0, 0.6):
        fresh, _, _ = fuse(*pair, sigma)
        with torch.no_grad():
            torch.testing.assert_close(at(sigma)(lq), fresh(lq), atol=0, rtol=0)
    with pytest.raises(ValueError, match="sigma must be in"):
        at(-1.0)


def test_a_sweep_runs_each_network_once_per_image(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    from srkit.interpolate import Remembered, fusions, sweep

    val = noise_pngs(tmp_path / "val", 2)
    at = fusions(*pair)
    sigmas = [0.5, 1.0, 2.0]
    scores, bicubic = sweep(at, val, values=sigmas, device=CPU, lpips_model=None)
    members = [at(1.0).low, at(1.0).high]
    assert all(isinstance(m, Remembered) for m in members)
    assert [m.runs for m in members] == [2, 2]  # two images, three sigmas: each network ran twice, not six times
    # ...and every sigma scores what a fusion built afresh at that sigma scores.
    fresh, bicubic_fresh = sweep(lambda s: fuse(*pair, s)[0], val, values=sigmas, device=CPU, lpips_model=None)
    assert [(s.psnr, s.ssim) for s in scores] == [(s.psnr, s.ssim) for s in fresh]
    assert bicubic == bicubic_fresh
    assert len({s.psnr for s in scores}) == 3  # the band edge did move


def test_remembered_keeps_within_its_budget_and_never_under_grad(pair: tuple[Path, Path]) -> None:
    from srkit.interpolate import Remembered

    lq = random_batch(1, 8, 8, seed=5)
    kept = Remembered(load_model(pair[0]))
    with torch.no_grad():
        first = kept(lq)
        assert kept(lq.clone()) is first and kept.runs == 1  # same contents: the kept output
        kept(lq + 0.01)  # other contents: a new pass
        assert kept.runs == 2
    kept(lq)  # grad enabled: a training caller must get a fresh graph, not a kept output
    assert kept.runs == 3
    none = Remembered(load_model(pair[0]), max_bytes=0)
    with torch.no_grad():
        a, b = none(lq), none(lq)
    assert none.runs == 2 and none.kept_bytes == 0 and torch.equal(a, b)


def test_fusing_a_model_with_itself_gives_the_model(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    same, _, _ = fuse(pair[0], pair[0], 1.0)
    lq = random_batch(1, 9, 11, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(same(lq), load_model(pair[0])(lq), atol=1e-6, rtol=0)


def test_fusion_of_different_architectures_loads_from_its_file(tmp_path: Path) -> None:
    low = _saved(tmp_path / "rrdb.safetensors", 5, "rrdbnet", width=8, num_blocks=1, growth=4)
    high = _saved(tmp_path / "srresnet.safetensors", 6)
    out = fuse_models(low, high, 0.8, tmp_path / "fused.safetensors")
    meta = read_metadata(out)
    assert meta["arch"] == "freqfusion" and meta["kind"] == "fused" and meta["sigma"] == "0.8"
    loaded = load_model(out)
    built, _, _ = fuse(low, high, 0.8)
    lq = random_batch(1, 10, 10, seed=7)
    with torch.no_grad():
        torch.testing.assert_close(loaded(lq), built(lq), atol=0, rtol=0)


def test_bicubic_is_a_parameter_free_member(pair: tuple[Path, Path]) -> None:
    from srkit.ops import upscale_bicubic

    fused, _, kwargs = fuse("bicubic", pair[1], 1.0)
    assert kwargs["low"] == {"arch": "bicubic", "args": {}}
    lq = random_batch(1, 10, 12, seed=9)
    with torch.no_grad():
        sharp = load_model(pair[1])(lq)
        expected = sharp + gaussian_lowpass(upscale_bicubic(lq, 4).clamp(0, 1) - sharp, 1.0)
        torch.testing.assert_close(fused(lq), expected, atol=2e-6, rtol=0)


def test_tiled_equals_whole(pair: tuple[Path, Path]) -> None:
    fused, _, _ = fuse(*pair, 1.5)
    lq = random_batch(1, 40, 36, seed=8)
    whole = upscale_tiled(fused, lq, tile=None, device=CPU)
    tiled = upscale_tiled(fused, lq, tile=24, overlap=12, device=CPU)
    assert tiled.shape == whole.shape == (1, 3, 160, 144)
    assert ((tiled * 255).round() - (whole * 255).round()).abs().max().item() <= 1


def test_fusion_errors(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    x2 = _saved(tmp_path / "x2.safetensors", 3, scale=2, **TINY)
    with pytest.raises(ValueError, match="cannot fuse a x4 model"):
        fuse(pair[0], x2, 1.0)
    with pytest.raises(ValueError, match="sigma must be in"):
        fuse(*pair, 0.0)
    with pytest.raises(ValueError, match="is one of the inputs"):
        fuse_models(pair[0], pair[1], 1.0, pair[1])
    fused = fuse_models(*pair, 1.0, tmp_path / "f.safetensors")
    with pytest.raises(ValueError, match="not a fusion"):
        fuse(fused, pair[1], 1.0)
    with pytest.raises(ValueError, match="arch 'nope' unknown"):
        FrequencyFusion(low={"arch": "nope"})
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        fuse(tmp_path / "missing.safetensors", pair[1], 1.0)


def test_cli_fuse_chooses_sigma_on_validation_images(
    tmp_path: Path, pair: tuple[Path, Path], data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    val = noise_pngs(tmp_path / "val", 2)
    out = tmp_path / "chosen.safetensors"
    args = ["fuse", str(pair[0]), str(pair[1]), "-o", str(out), "--choose-on", str(val), "--sigmas", "0.5,2"]
    status = main([*args, "--min-psnr-gain", "-100", "--device", "cpu", "--data-dir", str(data_dir)])
    printed = capsys.readouterr().out
    assert status == 0 and out.is_file()
    rows = [line for line in printed.splitlines() if line.startswith(("| 0.5", "| 2"))]
    assert len(rows) == 2 and sum("(chosen)" in r for r in rows) == 1
    chosen = float(next(r for r in rows if "(chosen)" in r).split()[1])
    assert read_metadata(out)["sigma"] == repr(chosen)
    # No sigma can reach an impossible floor: one line naming the floor, exit 2, nothing written.
    again = tmp_path / "none.safetensors"
    status = main([*args[:4], str(again), *args[5:], "--min-psnr-gain", "100", "--device", "cpu"])
    assert status != 0 and not again.exists()
    assert "no sigma reaches bicubic + 100 dB" in capsys.readouterr().err
