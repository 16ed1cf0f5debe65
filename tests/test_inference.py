"""Tiled inference: tiles blend back to the whole-image output; precision, memory bound, files and CLI options."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from srkit import image_io
from srkit.batch import upscale_files
from srkit.cli import main
from srkit.inference import (
    OVERLAP,
    TileOptions,
    blend_window,
    tile_layout,
    tile_starts,
    upscale_tiled,
)
from srkit.models import build_generator, save_weights
from testkit import random_srresnet

CPU = torch.device("cpu")
LEVEL = 1 / 255


def _photo(n: int, h: int, w: int, *, seed: int = 0) -> torch.Tensor:
    """(n, 3, h, w) in [0, 1]: smooth shapes plus fine noise, so tile edges cut through real structure."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, h // 6 + 2, w // 6 + 2, generator=g)
    smooth = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    return (smooth + 0.1 * torch.randn(n, 3, h, w, generator=g)).clamp(0, 1)


# tile geometry ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(53, 16, 4), (53, 20, 8), (37, 24, 6), (64, 16, 0), (10, 16, 4)]
)
def test_tile_starts_cover_with_full_size_tiles(length: int, tile: int, overlap: int) -> None:
    size, starts = tile_layout(length, tile, overlap)
    assert starts == tile_starts(length, tile, overlap)
    assert size <= min(tile, length) and (size == length or size >= 2 * overlap)
    assert starts[0] == 0 and starts[-1] + size == length  # the last tile is flush with the far edge
    assert all(s >= 0 and s + size <= length for s in starts)  # every tile the same size, inside the image
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(0 < g <= size - overlap for g in gaps)  # neighbours overlap by at least `overlap`
    assert not gaps or max(gaps) - min(gaps) <= 1  # spread evenly
    # as few tiles as stepping by tile - overlap would need, and no more pixels of work than that
    stepped = 1 if tile >= length else math.ceil((length - overlap) / (tile - overlap))
    assert len(starts) == stepped and len(starts) * size <= stepped * min(tile, length)


def test_tile_layout_of_a_512_image_at_the_default_tile() -> None:
    # 3 tiles of 192 (576 px of work per axis) instead of 3 of 256 with the last shifted back (768 px)
    assert tile_layout(512, 256, 32) == (192, [0, 160, 320])
    assert tile_layout(256, 256, 32) == (256, [0])


@pytest.mark.parametrize(("length", "tile", "overlap"), [(53, 16, 4), (53, 20, 8), (37, 24, 6), (200, 64, 32)])
def test_summed_blend_weight_is_never_small(length: int, tile: int, overlap: int) -> None:
    scale = 4
    total = torch.zeros(length * scale, dtype=torch.float64)
    size, starts = tile_layout(length, tile, overlap)
    for s in starts:
        w = blend_window(size * scale, overlap * scale, ramp_start=s > 0, ramp_end=s + size < length)
        assert w.min() >= 0 and w.max() == 1
        total[s * scale : (s + size) * scale] += w
    # >= 1 everywhere: some tile has full weight at every pixel; exactly 1 where only two ramps meet.
    assert total.min() >= 1 - 1e-12


def test_blend_window_ignores_the_outer_quarter_of_a_cut() -> None:
    w = blend_window(64, 16, ramp_start=True, ramp_end=False)
    assert (w[:4] == 0).all() and (w[4:12] > 0).all() and (w[4:12] < 1).all() and (w[12:] == 1).all()
    assert (w[4:12].diff() > 0).all()
    assert (blend_window(64, 16, ramp_start=False, ramp_end=False) == 1).all()  # image edges: no ramp


# tiled == whole -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tile", [16, 20, 24])
@pytest.mark.parametrize("overlap", [4, 6, 8])
def test_bicubic_tiled_matches_whole(tile: int, overlap: int) -> None:
    model = build_generator("bicubic").eval()
    lq = _photo(2, 37, 53)  # neither side a multiple of any tile
    whole = upscale_tiled(model, lq, tile=None, device=CPU)
    tiled = upscale_tiled(model, lq, tile=tile, overlap=overlap, device=CPU, batch_tiles=3)
    assert tiled.shape == whole.shape == (2, 3, 148, 212)
    diff = (tiled - whole).abs().max().item()
    assert diff <= LEVEL
    if overlap >= 8:
        # Bicubic sees 2 LR pixels each side; from overlap 8 the ignored outer quarter (2 px) covers that.
        assert diff <= 1e-6


@pytest.mark.parametrize(("tile", "overlap"), [(48, 24), (56, 28), (64, 32)])
def test_tiny_srresnet_tiled_matches_whole(tile: int, overlap: int) -> None:
    # A tiny SRResNet still has a 9x9 head and tail: receptive field 4 + 2*2 + 1 + 1 + 0.5 + 1 = 11.5 LR px, and
    # a crop changes outputs by ~3/255 at 4 px from the cut, so overlaps of 4-8 are too small for it (errors
    # 3-8/255); here the ignored quarter is 6-8 px.
    model = random_srresnet(width=8, num_blocks=2)
    lq = _photo(2, 70, 93, seed=1)
    whole = upscale_tiled(model, lq, tile=None, device=CPU)
    tiled = upscale_tiled(model, lq, tile=tile, overlap=overlap, device=CPU)
    assert (tiled - whole).abs().max().item() <= LEVEL


def test_tiled_is_exact_once_the_ignored_margin_covers_the_receptive_field() -> None:
    # One block: receptive field 4 + 2 + 1 + 1 + 0.5 + 1 = 9.5 LR px < overlap / 4 = 10, so every pixel that
    # gets weight is computed exactly as in the whole image: only float rounding remains.
    model = random_srresnet(width=8, num_blocks=1)
    lq = _photo(1, 90, 130, seed=2)
    whole = upscale_tiled(model, lq, tile=None, device=CPU)
    tiled = upscale_tiled(model, lq, tile=80, overlap=40, device=CPU)
    assert (tiled - whole).abs().max().item() <= 1e-5


def test_paper_size_srresnet_default_overlap() -> None:
    model = random_srresnet()  # 64 wide, 16 blocks: receptive field 40 LR px
    lq = _photo(1, 70, 90, seed=3)
    whole = upscale_tiled(model, lq, tile=None, device=CPU)
    # The default overlap with a tile small enough to cut this small image both ways.
    tiled = upscale_tiled(model, lq, tile=2 * OVERLAP, overlap=OVERLAP, device=CPU)
    assert (tiled - whole).abs().max().item() <= LEVEL


def test_whole_image_path_equals_the_model() -> None:
    model = random_srresnet(width=8, num_blocks=2)
    lq = _photo(3, 20, 24)
    with torch.no_grad():
        expected = model(lq).clamp(0, 1)
    for tile in (None, 24, 1000):  # None, or a tile at least as large as the image: one forward pass
        torch.testing.assert_close(upscale_tiled(model, lq, tile=tile, device=CPU, batch_tiles=2), expected)
    single = upscale_tiled(model, lq[0], tile=8, overlap=2, device=CPU)
    assert single.shape == (3, 80, 96)


# options ------------------------------------------------------------------------------------------------


class _Recorder(nn.Module):
    """Nearest x2 upscaling that records the shape of every batch it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = 2
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return F.interpolate(x, scale_factor=2.0, mode="nearest")


def test_memory_is_bounded_by_the_tile_batch() -> None:
    model = _Recorder()
    lq = _photo(2, 50, 70)
    calls: list[tuple[int, int]] = []
    out = upscale_tiled(
        model, lq, tile=16, overlap=4, device=CPU, batch_tiles=5, progress=lambda d, t: calls.append((d, t))
    )
    assert all(s[0] <= 5 and s[1] == 3 and s[2] <= 16 and s[3] <= 16 for s in model.shapes)
    n_tiles = 2 * len(tile_starts(50, 16, 4)) * len(tile_starts(70, 16, 4))
    assert sum(s[0] for s in model.shapes) == n_tiles
    assert calls[-1] == (n_tiles, n_tiles) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    torch.testing.assert_close(out, F.interpolate(lq, scale_factor=2.0, mode="nearest"))  # exact for nearest


def test_bf16_and_channels_last_on_cpu() -> None:
    model = random_srresnet(width=8, num_blocks=2)
    lq = _photo(1, 30, 40)
    fp32 = upscale_tiled(model, lq, tile=20, overlap=5, device=CPU, channels_last=False)
    nhwc = upscale_tiled(model, lq, tile=20, overlap=5, device=CPU, channels_last=True)
    torch.testing.assert_close(nhwc, fp32, atol=1e-5, rtol=0)
    bf16 = upscale_tiled(model, lq, tile=20, overlap=5, device=CPU, dtype=torch.bfloat16)
    assert bf16.dtype == torch.float32 and 0 < (bf16 - fp32).abs().max() < 0.05  # it really ran in bf16
    assert next(model.parameters()).dtype == torch.float32  # the model was not converted


def test_bad_options_raise_clear_errors() -> None:
    model = random_srresnet(width=8, num_blocks=1)
    lq = _photo(1, 30, 40)
    with pytest.raises(ValueError, match="fp16 is for CUDA"):
        upscale_tiled(model, lq, tile=20, overlap=4, device=CPU, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"overlap must be in \[0, tile / 2\]"):
        upscale_tiled(model, lq, tile=20, overlap=11, device=CPU)
    with pytest.raises(ValueError, match="tile must be a positive"):
        upscale_tiled(model, lq, tile=0, device=CPU)
    with pytest.raises(ValueError, match=r"expected a float RGB tensor"):
        upscale_tiled(model, lq[:, :1], device=CPU)
    with pytest.raises(ValueError, match="at most tile / 2 = 8"):
        TileOptions(tile=16, overlap=9)
    model.train()
    with pytest.raises(ValueError, match=r"training mode and has BatchNorm: call model.eval\(\)"):
        upscale_tiled(model, lq, tile=20, overlap=4, device=CPU)


def test_model_with_wrong_output_size_is_named() -> None:
    class Wrong(nn.Module):
        scale = 4

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, scale_factor=2.0)

    with pytest.raises(ValueError, match=r"expected \(1, 3, 64, 64\).*x4"):
        upscale_tiled(Wrong(), torch.rand(1, 3, 16, 16), tile=None, device=CPU)


# files and the command line -----------------------------------------------------------------------------


def _write_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(path)
    return path


@pytest.fixture
def small_folder(tmp_path: Path) -> Path:
    """Three 12x16 images (one RGBA, one gray) and one 20x18: batches must split by size and keep each style."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    _write_png(folder / "a.png", rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    _write_png(folder / "b.png", rng.integers(0, 256, (12, 16, 4), dtype=np.uint8))
    _write_png(folder / "c.png", rng.integers(0, 256, (12, 16, 1), dtype=np.uint8))
    _write_png(folder / "d.png", rng.integers(0, 256, (20, 18, 3), dtype=np.uint8))
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_batched_small_images_match_one_by_one(small_folder: Path, tmp_path: Path) -> None:
    model = random_srresnet(width=8, num_blocks=2)
    one = upscale_files(model, [small_folder], tmp_path / "one", device=CPU)
    many = upscale_files(model, [small_folder], tmp_path / "many", device=CPU, batch_size=3)
    assert not one.failed and not many.failed and len(many.written) == 4
    for name, data in _files(tmp_path / "one").items():
        a = image_io.read_image(tmp_path / "one" / name)
        b = image_io.read_image(tmp_path / "many" / name)
        assert (a.bit_depth, a.grayscale, a.alpha is None) == (b.bit_depth, b.grayscale, b.alpha is None), name
        # Batched convolutions may round differently in the last float bit; never by a visible level.
        assert np.abs(image_io.to_uint8(a.rgb).astype(int) - image_io.to_uint8(b.rgb).astype(int)).max() <= 1, name
        assert len(data) > 0
    with Image.open(tmp_path / "many" / "b.png") as im:
        assert im.mode == "RGBA" and im.size == (64, 48)
    with Image.open(tmp_path / "many" / "c.png") as im:
        assert im.mode == "L"


def _tiny_weights_and_png(tmp_path: Path, h: int, w: int) -> tuple[Path, Path]:
    """A tiny random SRResNet saved as weights, and an h x w photo-like PNG to upscale."""
    model = random_srresnet(width=8, num_blocks=2)
    weights = save_weights(
        model, tmp_path / "tiny.safetensors", arch="srresnet", arch_kwargs={"width": 8, "num_blocks": 2}
    )
    src = tmp_path / "in" / "x.png"
    _write_png(src, (_photo(1, h, w)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    return weights, src


def test_cli_upscale_tiled_options(tmp_path: Path) -> None:
    weights, src = _tiny_weights_and_png(tmp_path, 40, 56)
    base = ["upscale", str(src), "--model", str(weights), "--device", "cpu"]
    # fp32 named: --precision auto would pick bf16 on CPUs with AVX512-BF16/AMX.
    assert main([*base, "-o", str(tmp_path / "whole"), "--tile", "0", "--precision", "fp32"]) == 0
    assert (
        main(
            [
                *base,
                "-o",
                str(tmp_path / "tiled"),
                "--tile",
                "24",
                "--tile-overlap",
                "12",
                "--tile-batch",
                "2",
                "--precision",
                "fp32",
            ]
        )
        == 0
    )
    assert (
        main([*base, "-o", str(tmp_path / "bf16"), "--tile", "24", "--tile-overlap", "8", "--precision", "bf16"]) == 0
    )
    whole = image_io.to_uint8(image_io.read_rgb(tmp_path / "whole" / "x.png")).astype(int)
    tiled = image_io.to_uint8(image_io.read_rgb(tmp_path / "tiled" / "x.png")).astype(int)
    bf16 = image_io.to_uint8(image_io.read_rgb(tmp_path / "bf16" / "x.png")).astype(int)
    assert whole.shape == tiled.shape == bf16.shape == (160, 224, 3)
    assert np.abs(whole - tiled).max() <= 1
    assert np.abs(whole - bf16).mean() < 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--precision", "fp16"], "fp16 is for CUDA"),
        (["--tile", "20"], "--tile-overlap (its default, 32) must be at most --tile / 2 = 10, got 32: give --tile 64"),
        (["--tile", "20", "--tile-overlap", "11"], "--tile-overlap must be at most --tile / 2 = 10, got 11"),
        (["--tile", "20", "--tile-overlap", "-1"], "tile overlap must be >= 0"),
        (["--tile", "-1"], "--tile must be >= 0"),
        (["--batch-size", "0"], "batch_size must be >= 1"),
    ],
)
def test_cli_upscale_bad_options(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _write_png(tmp_path / "x.png", np.zeros((8, 8, 3), dtype=np.uint8))
    assert main(["upscale", str(src), "-o", str(tmp_path / "out"), "--device", "cpu", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_default_tile_is_sized_to_the_model() -> None:
    from srkit.descriptor import describe
    from srkit.inference import TILE, TILE_MEMORY, conv_profile, default_tile
    from srkit.models import build_generator

    # Compact: every conv at LR size; its largest is the last, 48 in, 48 (3 x 4 x 4) out, float32
    compact = build_generator("compact").eval()
    profile = conv_profile(compact)
    assert profile is not None and profile.peak_bytes_per_pixel == (48 + 48) * 4
    # every conv 3x3 at LR size: 3->48, 16 x 48->48, 48->48; 2 FLOPs per multiply-add
    assert profile.flop_per_pixel == 2 * 9 * (3 * 48 + 16 * 48 * 48 + 48 * 48)
    assert default_tile(compact) == 1024  # the cap: sqrt(512 MiB / 384 B) = 1182
    # RRDBNet-23: the x4 convs, 64 in and 64 out at 16 output pixels per LR pixel
    rrdb = build_generator("rrdbnet").eval()
    rrdb_profile = conv_profile(rrdb)
    assert rrdb_profile is not None and rrdb_profile.peak_bytes_per_pixel == (64 + 64) * 16 * 4
    assert default_tile(rrdb) == 256 == int((TILE_MEMORY / 8192) ** 0.5)
    assert default_tile(build_generator("srresnet").eval()) == 320  # 5 KiB per LR pixel

    class NoMeta(torch.nn.Module):  # a network that needs real tensors: the fixed default
        scale = 2

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 12, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.pixel_shuffle(self.conv(x), 2) + float(x.sum())

    assert default_tile(describe(NoMeta())) == TILE
    assert default_tile(build_generator("bicubic")) == TILE  # no conv: nothing to size by


# geometric self-ensemble ---------------------------------------------------------------------------------


def _dihedral(x: torch.Tensor, flip: bool, turns: int) -> torch.Tensor:
    return torch.rot90(x.flip(-1) if flip else x, turns, dims=(-2, -1))


def test_self_ensemble_is_the_mean_of_the_eight_transformed_runs_and_equivariant() -> None:
    from srkit.inference import SelfEnsemble, run_model, with_self_ensemble

    model = random_srresnet(width=8, num_blocks=2)
    lq = _photo(2, 14, 19, seed=3)  # not square: the turned inputs are 19 x 14
    plain = run_model(model, lq, device=CPU)
    ens = run_model(with_self_ensemble(model), lq, device=CPU)
    # By hand: each of the 8 inputs through the model, its output turned back, the 8 averaged.
    outs = []
    for flip in (False, True):
        for turns in range(4):
            y = run_model(model, _dihedral(lq, flip, turns), device=CPU)  # clamped, as the mean of clamped
            y = torch.rot90(y, -turns, dims=(-2, -1))
            outs.append(y.flip(-1) if flip else y)
    by_hand = torch.stack(outs).mean(0)
    assert ens.shape == plain.shape == (2, 3, 56, 76)
    # run_model clamps once, after the mean; the hand version clamps each run first: equal wherever no run left [0, 1].
    inside = torch.stack(outs).gt(0).all(0) & torch.stack(outs).lt(1).all(0)
    assert inside.float().mean() > 0.9
    torch.testing.assert_close(ens[inside], by_hand[inside], atol=1e-5, rtol=0)
    assert (ens - plain).abs().max() > 1e-3  # a random model is not flip-invariant: the ensemble changed it
    # Equivariance: the ensemble of a transformed image is the transformed ensemble (the plain model is not).
    for flip, turns in [(True, 0), (False, 1), (True, 3)]:
        got = run_model(with_self_ensemble(model), _dihedral(lq, flip, turns), device=CPU)
        torch.testing.assert_close(got, _dihedral(ens, flip, turns), atol=1e-5, rtol=0)
    desc = with_self_ensemble(model)
    assert isinstance(desc.model, SelfEnsemble) and desc.self_ensemble and desc.label.endswith("+")
    assert with_self_ensemble(desc) is desc  # not wrapped twice


def test_self_ensemble_of_bicubic_is_bicubic_and_tiles_match_whole() -> None:
    from srkit.inference import with_self_ensemble

    # MATLAB bicubic has a symmetric kernel and mirrored edges: every flip and turn commutes with it.
    bicubic = build_generator("bicubic").eval()
    lq = _photo(1, 21, 30, seed=5)
    torch.testing.assert_close(
        upscale_tiled(with_self_ensemble(bicubic), lq, tile=None, device=CPU),
        upscale_tiled(bicubic, lq, tile=None, device=CPU),
        atol=1e-6,
        rtol=0,
    )
    model = with_self_ensemble(random_srresnet(width=8, num_blocks=2))
    lq = _photo(1, 70, 93, seed=1)
    whole = upscale_tiled(model, lq, tile=None, device=CPU)
    tiled = upscale_tiled(model, lq, tile=48, overlap=24, device=CPU, channels_last=True)
    assert (tiled - whole).abs().max().item() <= LEVEL


def test_cli_self_ensemble_upscale_and_evaluate(tmp_path: Path) -> None:
    import json

    weights, src = _tiny_weights_and_png(tmp_path, 24, 32)
    base = ["upscale", str(src), "--model", str(weights), "--device", "cpu", "--precision", "fp32", "--tile", "0"]
    assert main([*base, "-o", str(tmp_path / "plain")]) == 0
    assert main([*base, "-o", str(tmp_path / "ens"), "--self-ensemble"]) == 0
    plain = image_io.to_uint8(image_io.read_rgb(tmp_path / "plain" / "x.png")).astype(int)
    ens = image_io.to_uint8(image_io.read_rgb(tmp_path / "ens" / "x.png")).astype(int)
    assert ens.shape == plain.shape == (96, 128, 3) and np.abs(ens - plain).max() > 1
    hr = tmp_path / "hr"
    _write_png(hr / "a.png", (_photo(1, 48, 64, seed=2)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    argv = ["evaluate", "--model", str(weights), "--sets", str(hr), "--lpips", "none", "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "e0"), "--precision", "fp32"]) == 0
    assert main([*argv, "--out", str(tmp_path / "e1"), "--precision", "fp32", "--self-ensemble"]) == 0
    s0, s1 = (json.loads((tmp_path / e / "summary.json").read_text()) for e in ("e0", "e1"))
    assert not s0["self_ensemble"] and s1["self_ensemble"] and "self-ensemble x8" in s1["protocol"]
    assert abs(s0["sets"]["hr"]["psnr_mean"] - s1["sets"]["hr"]["psnr_mean"]) > 0.01
