"""Network interpolation (ESRGAN sec. 3.4): the library function and `srkit interpolate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from srkit.cli import main
from srkit.interpolate import AlphaScore, average_weights, choose_alpha, interpolate_weights
from srkit.models import build_generator, load_model, read_metadata, save_weights
from testkit import noise_pngs, random_batch

pytestmark = pytest.mark.usefixtures("one_thread")


# network interpolation ------------------------------------------------------------------------------------

TINY_SRRESNET = {"scale": 4, "width": 8, "num_blocks": 1}
TINY_RRDB = {"width": 8, "num_blocks": 1, "growth": 4}


def _saved(path: Path, seed: int, arch: str = "srresnet", **kwargs: Any) -> Path:
    """A tiny generator with seed-dependent weights and BN counters, saved as srkit safetensors."""
    arch_kwargs = kwargs or TINY_SRRESNET
    torch.manual_seed(seed)
    model = build_generator(arch, **arch_kwargs)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("num_batches_tracked"):
                buf.fill_(10 + seed)
            elif name.endswith("running_mean"):
                buf.normal_()
    return save_weights(model, path, arch=arch, arch_kwargs=arch_kwargs)


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return _saved(tmp_path / "psnr.safetensors", 1), _saved(tmp_path / "gan.safetensors", 2)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_interpolate_ends_are_exact(tmp_path: Path, pair: tuple[Path, Path], alpha: float) -> None:
    a, b = pair
    out = interpolate_weights(a, b, alpha, tmp_path / "out.safetensors")
    got, expected, sb = load_file(str(out)), load_file(str(b if alpha else a)), load_file(str(b))
    assert got.keys() == expected.keys()
    for key in expected:
        # Every float tensor is exactly the chosen end's; integer counters always come from B (by design).
        want = expected[key] if expected[key].is_floating_point() else sb[key]
        assert got[key].dtype == want.dtype and torch.equal(got[key], want), key


def test_interpolate_half_is_the_mean(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    a, b = pair
    out = interpolate_weights(a, b, 0.5, tmp_path / "mid.safetensors")
    got, sa, sb = load_file(str(out)), load_file(str(a)), load_file(str(b))
    for key, value in got.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (sa[key] + sb[key]) / 2)
        else:
            assert key.endswith("num_batches_tracked") and torch.equal(value, sb[key])  # counters from B
    meta = read_metadata(out)
    assert meta["arch"] == "srresnet" and json.loads(meta["arch_kwargs"]) == TINY_SRRESNET
    assert meta["interpolated_a"] == str(a) and meta["interpolated_b"] == str(b) and meta["alpha"] == "0.5"
    with torch.no_grad():
        assert load_model(out)(random_batch(1, 5, 6)).shape == (1, 3, 20, 24)


def test_interpolate_errors(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    a, b = pair
    rrdb = _saved(tmp_path / "rrdb.safetensors", 3, "rrdbnet", scale=4, **TINY_RRDB)
    with pytest.raises(ValueError, match="different architectures") as info:
        interpolate_weights(a, rrdb, 0.5, tmp_path / "x.safetensors")
    assert str(a) in str(info.value) and str(rrdb) in str(info.value)
    wider = _saved(tmp_path / "wide.safetensors", 4, "srresnet", scale=4, width=16, num_blocks=1)
    with pytest.raises(ValueError, match="'width': 16"):
        interpolate_weights(a, wider, 0.5, tmp_path / "x.safetensors")
    for alpha in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="alpha must be in"):
            interpolate_weights(a, b, alpha, tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError, match="nothere"):
        interpolate_weights(a, tmp_path / "nothere.safetensors", 0.5, tmp_path / "x.safetensors")
    before = b.read_bytes()
    with pytest.raises(ValueError, match="one of the inputs"):  # inputs are never overwritten
        interpolate_weights(a, b, 0.5, b)
    assert b.read_bytes() == before
    assert not (tmp_path / "x.safetensors").exists()


def test_cli_interpolate(tmp_path: Path, pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    a, b = pair
    out = tmp_path / "interp.safetensors"
    assert main(["interpolate", str(a), str(b), "--alpha", "0.8", "-o", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert read_metadata(out)["alpha"] == "0.8"
    sa, sb, got = load_file(str(a)), load_file(str(b)), load_file(str(out))
    torch.testing.assert_close(got["head.0.weight"], 0.2 * sa["head.0.weight"] + 0.8 * sb["head.0.weight"])

    assert main(["interpolate", str(a), str(b), "--alpha", "0.3", "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["interpolate", str(a), str(b), "--alpha", "0.3", "-o", str(out), "--overwrite"]) == 0
    assert read_metadata(out)["alpha"] == "0.3"

    rrdb = _saved(tmp_path / "rrdb.safetensors", 3, "rrdbnet", scale=4, **TINY_RRDB)
    capsys.readouterr()
    assert main(["interpolate", str(a), str(rrdb), "-o", str(tmp_path / "bad.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "srkit interpolate: error:" in err and "different architectures" in err and "Traceback" not in err
    assert main(["interpolate", str(a), str(b), "--alpha", "2", "-o", str(tmp_path / "bad.safetensors")]) == 2
    assert "alpha must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "bad.safetensors").exists()


def test_choose_alpha_takes_the_lowest_lpips_above_the_psnr_floor() -> None:
    scores = [
        AlphaScore(0.0, 30.0, 0.90, 0.30),
        AlphaScore(0.5, 29.2, 0.88, 0.22),
        AlphaScore(0.8, 28.9, 0.86, 0.18),
        AlphaScore(1.0, 28.1, 0.84, 0.15),  # the lowest LPIPS, but under bicubic + 1 dB = 29.0
    ]
    assert choose_alpha(scores, bicubic_psnr=28.0, min_gain=1.0).alpha == 0.5
    assert choose_alpha(scores, bicubic_psnr=27.0, min_gain=1.0).alpha == 1.0
    with pytest.raises(ValueError, match="no alpha reaches bicubic"):
        choose_alpha(scores, bicubic_psnr=29.5, min_gain=1.0)


def test_cli_chooses_alpha_on_validation_images(
    tmp_path: Path, pair: tuple[Path, Path], data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    val = noise_pngs(tmp_path / "val", 2)
    a, b = pair
    out = tmp_path / "chosen.safetensors"
    args = ["interpolate", str(a), str(b), "-o", str(out), "--choose-on", str(val), "--alphas", "0,0.5,1"]
    status = main([*args, "--min-psnr-gain", "-100", "--device", "cpu", "--data-dir", str(data_dir)])
    printed = capsys.readouterr().out
    assert status == 0 and out.is_file()
    rows = [line for line in printed.splitlines() if line.startswith("| 0") or line.startswith("| 1")]
    assert len(rows) == 3 and sum("(chosen)" in r for r in rows) == 1
    chosen = float(next(r for r in rows if "(chosen)" in r).split()[1])
    assert read_metadata(out)["alpha"] == repr(chosen)


def test_shipped_names_blend_like_their_files(tmp_path: Path) -> None:
    from srkit.models import shipped_models

    files = shipped_models()
    by_name = interpolate_weights("srresnet", "srgan", 0.5, tmp_path / "names.safetensors")
    by_path = interpolate_weights(files["srresnet"], files["srgan"], 0.5, tmp_path / "paths.safetensors")
    named, pathed = load_file(str(by_name)), load_file(str(by_path))
    assert named.keys() == pathed.keys() and all(torch.equal(named[k], pathed[k]) for k in named)


# checkpoint averaging -------------------------------------------------------------------------------------


def test_average_of_two_is_the_half_blend_and_of_three_the_mean(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    a, b = pair
    c = _saved(tmp_path / "third.safetensors", 5)
    two = load_file(str(average_weights([a, b], tmp_path / "two.safetensors")))
    half = load_file(str(interpolate_weights(a, b, 0.5, tmp_path / "half.safetensors")))
    assert two.keys() == half.keys() and all(torch.equal(two[k], half[k]) for k in two)
    out = average_weights([a, b, c], tmp_path / "three.safetensors")
    got, states = load_file(str(out)), [load_file(str(p)) for p in (a, b, c)]
    for key, value in got.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (states[0][key] + states[1][key] + states[2][key]) / 3)
        else:  # counters from the last file
            assert torch.equal(value, states[2][key])
    meta = read_metadata(out)
    assert meta["kind"] == "averaged" and json.loads(meta["averaged"]) == [str(a), str(b), str(c)]
    with torch.no_grad():
        assert load_model(out)(random_batch(1, 5, 6)).shape == (1, 3, 20, 24)


def test_average_errors(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    a, b = pair
    with pytest.raises(ValueError, match="at least two"):
        average_weights([a], tmp_path / "x.safetensors")
    rrdb = _saved(tmp_path / "rrdb.safetensors", 3, "rrdbnet", scale=4, **TINY_RRDB)
    with pytest.raises(ValueError, match="cannot average models of different architectures"):
        average_weights([a, b, rrdb], tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError, match="nothere"):
        average_weights([a, tmp_path / "nothere.safetensors"], tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_cli_average(tmp_path: Path, pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    a, b = pair
    out = tmp_path / "avg.safetensors"
    assert main(["average", str(a), str(b), "-o", str(out)]) == 0
    assert "mean of 2 checkpoints" in capsys.readouterr().out
    sa, sb, got = load_file(str(a)), load_file(str(b)), load_file(str(out))
    torch.testing.assert_close(got["head.0.weight"], (sa["head.0.weight"] + sb["head.0.weight"]) / 2)
    assert main(["average", str(a), str(b), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    before = a.read_bytes()
    assert main(["average", str(a), str(b), "-o", str(a), "--overwrite"]) == 2  # never over an input
    err = capsys.readouterr().err
    assert "one of the inputs" in err and "Traceback" not in err and a.read_bytes() == before
    assert main(["average", str(a), "-o", str(tmp_path / "one.safetensors")]) == 2
    assert "at least two" in capsys.readouterr().err
