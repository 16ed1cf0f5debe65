"""Bad input across the CLI, run in-process through srkit.cli.main: status, one line, inputs untouched, no debris.

The rules each case checks (the hardening issue): no traceback ever reaches the user; a user error found up
front exits 2 before any work; a batch goes on past a bad file and exits 1 at the end; "nothing to do" is
exit 2; the message names the file or the option; inputs keep their bytes; no partial or temporary file is
left behind, and nothing is written outside the output folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from srkit import cli
from srkit.cli import main
from srkit.models import build_generator, save_weights, shipped_models
from testkit import random_srresnet, smooth_rgb

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SRKIT_DEBUG", raising=False)  # debug mode re-raises instead of printing one line


def _png(path: Path, h: int, w: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(smooth_rgb(h, w, seed)).save(path)
    return path


def _weights(path: Path, *, kwargs: object = None, nan: bool = False) -> Path:
    """A tiny SRResNet's weights; `kwargs` overrides the recorded arch_kwargs (JSON), `nan` breaks a weight."""
    model = random_srresnet(seed=1, width=4, num_blocks=1)
    if nan:
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
    save_weights(model, path, arch="srresnet", arch_kwargs={"scale": 4, "width": 4, "num_blocks": 1})
    if kwargs is not None:
        tensors = safetensors.torch.load_file(str(path))
        meta = {"srkit_format": "1", "arch": "srresnet", "arch_kwargs": json.dumps(kwargs)}
        safetensors.torch.save_file(tensors, str(path), metadata=meta)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of every kind of input the cases use (read-only for the tests: hashed before and after)."""
    root = tmp_path_factory.mktemp("inputs")
    _png(root / "ok.png", 24, 32)
    Image.new("L", (9000, 9000)).save(root / "huge.png", optimize=True)  # ~80 KB on disk, 81 MP decoded
    (root / "empty").mkdir()
    (root / "x.png").mkdir()  # a folder with an image's name
    ramp = np.linspace(0, 1, 24 * 32, dtype=np.float32).reshape(24, 32)
    Image.fromarray(ramp, mode="F").save(root / "float01.tif")
    Image.fromarray(ramp * 4, mode="F").save(root / "float_over.tif")
    Image.fromarray((ramp * 200_000).astype(np.int32), mode="I").save(root / "int32.tif")
    frames = [Image.fromarray(smooth_rgb(24, 32, s)) for s in range(3)]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(root / "anim.webp", save_all=True, append_images=frames[1:])
    frames[0].save(root / "pages.tif", save_all=True, append_images=frames[1:])
    frames[0].save(root / "single.gif")
    good = (root / "ok.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "notimage.png").write_bytes(b"this is text, not a PNG")
    mixed = root / "mixed"
    _png(mixed / "a.png", 24, 24, 1)
    (mixed / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _png(mixed / "c.png", 24, 24, 2)
    hr = root / "hrset"
    _png(hr / "a.png", 48, 48, 3)
    _png(hr / "b.png", 40, 56, 4)
    badset = root / "badset"
    _png(badset / "a.png", 48, 48, 5)
    (badset / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nxxxx")
    tinyset = root / "tinyset"
    _png(tinyset / "a.png", 48, 48, 6)
    _png(tinyset / "tiny.png", 16, 16, 7)  # LR 4x4; too small for LPIPS-alex
    weights = root / "weights"
    weights.mkdir()
    _weights(weights / "tiny.safetensors")
    _weights(weights / "nan.safetensors", nan=True)
    _weights(weights / "list_kwargs.safetensors", kwargs=[4, 1])
    _weights(weights / "negative.safetensors", kwargs={"scale": 4, "width": -4, "num_blocks": 1})
    # 1 KB of tensors whose metadata claims a width that would need terabytes.
    safetensors.torch.save_file(
        {"head.weight": torch.zeros(4)},
        str(weights / "huge_width.safetensors"),
        metadata={"srkit_format": "1", "arch": "srresnet", "arch_kwargs": json.dumps({"width": 200_000})},
    )
    (weights / "garbage.safetensors").write_bytes(b"\x00" * 64)

    class Evil:
        def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
            return (os.system, (f"touch {root / 'PWNED'}",))

    torch.save({"params": Evil()}, weights / "evil.pth")
    return root


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _debris(root: Path) -> list[Path]:
    """Temporary files an interrupted or failed write would leave."""
    return [p for p in root.rglob("*") if ".tmp" in p.name]


@dataclass(frozen=True)
class Case:
    """argv (with {in} for the inputs folder and {out} for a fresh output folder), the exit status, and what
    the output must mention."""

    argv: tuple[str, ...]
    status: int
    says: tuple[str, ...]
    writes_nothing: bool = True  # status 2: refused before any work, so the output folder is never made


CASES: dict[str, Case] = {
    # upscale: refused up front (2)
    "upscale_scale_1000": Case(
        ("upscale", "{in}/ok.png", "-o", "{out}", "--model", "bicubic", "--scale", "1000"), 2, ("--scale", "1..16")
    ),
    "upscale_scale_0": Case(
        ("upscale", "{in}/ok.png", "-o", "{out}", "--model", "bicubic", "--scale", "0"), 2, ("--scale",)
    ),
    "upscale_scale_negative": Case(
        ("upscale", "{in}/ok.png", "-o", "{out}", "--model", "bicubic", "--scale=-2"), 2, ("--scale",)
    ),
    "upscale_scale_not_int": Case(
        ("upscale", "{in}/ok.png", "-o", "{out}", "--model", "bicubic", "--scale", "x4"), 2, ("--scale", "'x4'")
    ),
    "upscale_fixed_scale_model": Case(
        ("upscale", "{in}/ok.png", "-o", "{out}", "--model", "{in}/weights/tiny.safetensors", "--scale", "2"),
        2,
        ("x4", "--scale 2"),
    ),
    "upscale_ext_gif": Case(
        ("upscale", "{in}/ok.png", "-o", "{out}", "--model", "bicubic", "--ext", "gif"), 2, ("--ext", "gif")
    ),
    "upscale_empty_folder": Case(
        ("upscale", "{in}/empty", "-o", "{out}", "--model", "bicubic"), 2, ("nothing to upscale", "empty")
    ),
    "upscale_folder_named_png": Case(
        ("upscale", "{in}/x.png", "-o", "{out}", "--model", "bicubic"), 2, ("nothing to upscale", "x.png")
    ),
    "upscale_empty_output": Case(
        ("upscale", "{in}/ok.png", "-o", "", "--model", "bicubic"), 2, ("-o/--output is empty",)
    ),
    "upscale_missing_input": Case(("upscale", "{in}/nope.png", "-o", "{out}", "--model", "bicubic"), 2, ("nope.png",)),
    "upscale_missing_model": Case(
        ("upscale", "{in}/ok.png", "-o", "{out}", "--model", "{in}/weights/none.safetensors"), 2, ("none.safetensors",)
    ),
    "upscale_unknown_option": Case(("upscale", "{in}/ok.png", "-o", "{out}", "--data-dir", "{in}"), 2, ("--data-dir",)),
    "upscale_negative_tile": Case(
        ("upscale", "{in}/ok.png", "-o", "{out}", "--model", "bicubic", "--tile", "-1"), 2, ("--tile",)
    ),
    "upscale_fp16_on_cpu": Case(
        (
            "upscale",
            "{in}/ok.png",
            "-o",
            "{out}",
            "--model",
            "{in}/weights/tiny.safetensors",
            "--precision",
            "fp16",
            "--device",
            "cpu",
        ),
        2,
        ("fp16",),
    ),
    "upscale_kwargs_list": Case(
        ("upscale", "{in}/ok.png", "-o", "{out}", "--model", "{in}/weights/list_kwargs.safetensors"),
        2,
        ("list_kwargs.safetensors", "arch_kwargs"),
    ),
    "upscale_kwargs_negative": Case(
        ("upscale", "{in}/ok.png", "-o", "{out}", "--model", "{in}/weights/negative.safetensors"),
        2,
        ("negative.safetensors", "-4"),
    ),
    "upscale_kwargs_huge": Case(
        ("upscale", "{in}/ok.png", "-o", "{out}", "--model", "{in}/weights/huge_width.safetensors"),
        2,
        ("huge_width.safetensors", "200000"),
    ),
    "upscale_weights_garbage": Case(
        ("upscale", "{in}/ok.png", "-o", "{out}", "--model", "{in}/weights/garbage.safetensors"),
        2,
        ("garbage.safetensors",),
    ),
    "upscale_pickle_with_code": Case(
        ("upscale", "{in}/ok.png", "-o", "{out}", "--model", "{in}/weights/evil.pth"), 2, ("evil.pth",)
    ),
    "upscale_onnx_precision": Case(
        (
            "upscale",
            "{in}/ok.png",
            "-o",
            "{out}",
            "--model",
            "bicubic",
            "--backend",
            "onnxruntime",
            "--precision",
            "bf16",
        ),
        2,
        ("--precision bf16",),
    ),
    # upscale: per-file failures after the others were done (1)
    "upscale_huge_png": Case(
        ("upscale", "{in}/huge.png", "-o", "{out}", "--model", "bicubic"),
        1,
        ("huge.png", "36000x36000", "--max-output-pixels"),
        False,
    ),
    "upscale_over_pixel_flag": Case(
        ("upscale", "{in}/ok.png", "-o", "{out}", "--model", "bicubic", "--max-output-pixels", "1000"),
        1,
        ("ok.png", "128x96", "--max-output-pixels"),
        False,
    ),
    "upscale_float_out_of_range": Case(
        ("upscale", "{in}/float_over.tif", "-o", "{out}", "--model", "bicubic"), 1, ("float_over.tif", "[0, 4]"), False
    ),
    "upscale_int32_tiff": Case(
        ("upscale", "{in}/int32.tif", "-o", "{out}", "--model", "bicubic"), 1, ("int32.tif", "32-bit integer"), False
    ),
    "upscale_animated_gif": Case(
        ("upscale", "{in}/anim.gif", "-o", "{out}", "--model", "bicubic", "--ext", "png"),
        1,
        ("anim.gif", "3 frames"),
        False,
    ),
    "upscale_animated_webp": Case(
        ("upscale", "{in}/anim.webp", "-o", "{out}", "--model", "bicubic"), 1, ("anim.webp", "3 frames"), False
    ),
    "upscale_multipage_tiff": Case(
        ("upscale", "{in}/pages.tif", "-o", "{out}", "--model", "bicubic"), 1, ("pages.tif", "3 frames"), False
    ),
    "upscale_gif_output": Case(
        ("upscale", "{in}/single.gif", "-o", "{out}", "--model", "bicubic"), 1, ("single.gif", "--ext"), False
    ),
    "upscale_truncated": Case(
        ("upscale", "{in}/truncated.png", "-o", "{out}", "--model", "bicubic"), 1, ("truncated.png",), False
    ),
    "upscale_not_an_image": Case(
        ("upscale", "{in}/notimage.png", "-o", "{out}", "--model", "bicubic"), 1, ("notimage.png",), False
    ),
    "upscale_nan_weights": Case(
        ("upscale", "{in}/ok.png", "-o", "{out}", "--model", "{in}/weights/nan.safetensors"),
        1,
        ("nan.safetensors", "NaN"),
        False,
    ),
    "upscale_name_too_long": Case(
        ("upscale", "{in}/ok.png", "-o", "{out}", "--model", "bicubic", "--suffix", "_" + "x" * 250),
        1,
        ("ok.png", "255"),
        False,
    ),
    "upscale_onto_its_input": Case(
        ("upscale", "{in}/mixed", "-o", "{in}/mixed", "--model", "bicubic"), 1, ("overwrite an input",), False
    ),
    # evaluate
    "evaluate_no_sets": Case(("evaluate", "--sets", ",", "--out", "{out}"), 2, ("--sets",)),
    "evaluate_scale_0": Case(("evaluate", "--sets", "{in}/hrset", "--scale", "0", "--out", "{out}"), 2, ("--scale",)),
    "evaluate_unknown_set": Case(
        ("evaluate", "--sets", "NoSuchSet", "--out", "{out}", "--data-dir", "{in}"), 2, ("NoSuchSet",)
    ),
    "evaluate_out_inside_set": Case(
        ("evaluate", "--sets", "{in}/hrset", "--save-images", "--out", "{in}/hrset/sr", "--lpips", "none"),
        2,
        ("inside the benchmark set",),
    ),
    "evaluate_bad_model_kwargs": Case(
        ("evaluate", "--sets", "{in}/hrset", "--model", "{in}/weights/negative.safetensors", "--out", "{out}"),
        2,
        ("negative.safetensors",),
    ),
    "evaluate_fixed_scale_model": Case(
        (
            "evaluate",
            "--sets",
            "{in}/hrset",
            "--model",
            "{in}/weights/tiny.safetensors",
            "--scale",
            "3",
            "--out",
            "{out}",
        ),
        2,
        ("--scale 3",),
    ),
    "evaluate_broken_image": Case(
        ("evaluate", "--sets", "{in}/badset", "--lpips", "none", "--out", "{out}"), 1, ("broken.png",), False
    ),
    "evaluate_tiny_for_lpips": Case(
        ("evaluate", "--sets", "{in}/tinyset", "--lpips", "alex", "--out", "{out}"),
        1,
        ("tiny.png", "too small for LPIPS"),
        False,
    ),
    "evaluate_nan_weights": Case(
        (
            "evaluate",
            "--sets",
            "{in}/hrset",
            "--model",
            "{in}/weights/nan.safetensors",
            "--lpips",
            "none",
            "--out",
            "{out}",
        ),
        1,
        ("NaN",),
        False,
    ),
    # compare
    "compare_no_sets": Case(("compare", "bicubic", "--sets", ",", "-o", "{out}"), 2, ("--sets",)),
    "compare_out_inside_set": Case(
        ("compare", "bicubic", "--sets", "{in}/hrset", "-o", "{in}/hrset/cmp", "--lpips", "none"),
        2,
        ("inside the benchmark set",),
    ),
    "compare_bad_figure_count": Case(
        ("compare", "bicubic", "--sets", "{in}/hrset", "-o", "{out}", "--figure-images", "-1", "--lpips", "none"),
        2,
        ("--figure-images",),
    ),
    "compare_broken_image": Case(
        ("compare", "bicubic", "--sets", "{in}/badset", "-o", "{out}", "--lpips", "none", "--figure-images", "0"),
        1,
        ("broken.png",),
        False,
    ),
    # data prepare
    "prepare_scale_0": Case(("data", "prepare", "{in}/ok.png", "-o", "{out}", "--scale", "0"), 2, ("--scale",)),
    "prepare_bad_degradation_yaml": Case(
        ("data", "prepare", "{in}/ok.png", "-o", "{out}", "--degradation", "[{blur: "),
        2,
        ("--degradation", "step list"),
    ),
    "prepare_unknown_degradation": Case(
        ("data", "prepare", "{in}/ok.png", "-o", "{out}", "--degradation", "sharpen"), 2, ("sharpen",)
    ),
    "prepare_hr_size_0": Case(
        ("data", "prepare", "{in}/ok.png", "-o", "{out}", "--hr-size", "0", "0"), 2, ("--hr-size",)
    ),
    "prepare_empty_folder": Case(("data", "prepare", "{in}/empty", "-o", "{out}"), 2, ("nothing to prepare", "empty")),
    "prepare_out_inside_input": Case(
        ("data", "prepare", "{in}/hrset", "-o", "{in}/hrset/pairs"), 2, ("inside the input folder",)
    ),
    "prepare_bad_split": Case(("data", "prepare", "{in}/hrset", "-o", "{out}", "--split", "a,b"), 2, ("--split",)),
    "prepare_bad_group_regex": Case(
        ("data", "prepare", "{in}/hrset", "-o", "{out}", "--split", "0.5,0.25,0.25", "--group-by", "(unclosed"),
        2,
        ("group_by", "(unclosed"),
    ),
    # export, summary, demo, interpolate
    "export_missing_model": Case(
        ("export", "{in}/weights/none.safetensors", "-o", "{out}/m.onnx"), 2, ("none.safetensors",)
    ),
    "export_bad_kwargs": Case(
        ("export", "{in}/weights/huge_width.safetensors", "--out", "{out}/m.onnx"), 2, ("huge_width.safetensors",)
    ),
    "export_unknown_suffix": Case(("export", "{in}/weights/tiny.safetensors", "-o", "{out}/m.xyz"), 2, ("m.xyz",)),
    "export_onto_existing": Case(
        ("export", "{in}/weights/tiny.safetensors", "-o", "{in}/ok.png"), 2, ("ok.png", "--overwrite")
    ),
    "summary_bad_kwargs": Case(
        ("summary", "{in}/weights/huge_width.safetensors", "-o", "{out}"), 2, ("huge_width.safetensors",)
    ),
    "demo_no_cuda": Case(("demo", "--device", "cuda:0", "--models", "bicubic", "-o", "{out}"), 2, ("cuda",)),
    "interpolate_bad_alpha": Case(
        (
            "interpolate",
            "{in}/weights/tiny.safetensors",
            "{in}/weights/tiny.safetensors",
            "--alpha",
            "2",
            "-o",
            "{out}/i.safetensors",
        ),
        2,
        ("alpha",),
    ),
}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """main(argv) in-process, with a time limit (a regression that blocks, e.g. on a FIFO, fails instead)."""
    result: dict[str, int] = {}

    def target() -> None:
        try:
            result["status"] = main(argv)
        except SystemExit as exit_:  # argparse refuses bad options with SystemExit(2)
            result["status"] = int(exit_.code or 0)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), f"srkit {' '.join(argv)} did not return within 120 s"
    captured = capsys.readouterr()
    return result["status"], captured.out + captured.err


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    out = tmp_path / "out"
    argv = [a.replace("{in}", str(inputs)).replace("{out}", str(out)) for a in case.argv]
    before = _hashes(inputs)
    status, text = _run(argv, capsys)
    assert status == case.status, text
    assert "Traceback" not in text, text
    flat = " ".join(text.split())  # rich wraps long lines
    for word in case.says:
        assert word.replace("{in}", str(inputs)) in flat, f"{word!r} not in: {text}"
    assert _hashes(inputs) == before, "an input file was changed, added or removed"
    assert not _debris(tmp_path) and not _debris(inputs), "temporary files left behind"
    assert not (inputs / "PWNED").exists(), "a pickle ran code"
    if case.writes_nothing:
        assert not out.exists(), f"refused up front, yet {out} was created"


def test_batch_goes_on_past_a_bad_file(inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, text = _run(["upscale", str(inputs / "mixed"), "-o", str(tmp_path), "--model", "bicubic"], capsys)
    assert status == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "c.png"]
    assert "b.png" in text and "1 file(s) failed" in text


def test_evaluate_goes_on_and_scores_the_rest(inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, text = _run(
        ["evaluate", "--sets", str(inputs / "badset"), "--lpips", "none", "--out", str(tmp_path)], capsys
    )
    assert status == 1, text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["sets"]["badset"]["images"] == 1
    assert [Path(f["image"]).name for f in summary["failed"]] == ["broken.png"]


def test_float_tiff_in_unit_range_is_read_as_is(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It used to come out all black (mode F went through an 8-bit conversion).
    status, text = _run(["upscale", str(inputs / "float01.tif"), "-o", str(tmp_path), "--model", "bicubic"], capsys)
    assert status == 0, text
    out = cv2_read(tmp_path / "float01.tif")
    assert out.dtype == np.uint16 and out.shape == (96, 128)
    assert abs(out.mean() / 65535 - 0.5) < 0.01  # the ramp's mean, not black


def cv2_read(path: Path) -> np.ndarray:
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert arr is not None, path
    return arr


def test_own_outputs_are_not_upscaled_again(inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "photos"
    _png(folder / "a.png", 16, 16)
    argv = ["upscale", str(folder), "-o", str(folder), "--suffix", "_x4", "--model", "bicubic"]
    assert _run(argv, capsys)[0] == 0
    status, text = _run([*argv, "--overwrite"], capsys)
    assert status == 0, text
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_x4.png"]  # no a_x4_x4.png
    assert "left out 1 earlier output" in " ".join(text.split())


def test_fifo_is_refused_not_waited_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    status, text = _run(["upscale", str(fifo), "-o", str(tmp_path / "out"), "--model", "bicubic"], capsys)
    assert status == 1
    assert "pipe.png" in text and "not a regular file" in text


def test_unexpected_error_is_one_line_and_debug_shows_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(_args: object) -> int:
        raise TypeError("something srkit did not expect")

    monkeypatch.setattr(cli.upscale, "cmd_models", broken)
    status, text = _run(["models"], capsys)
    assert status == 1
    assert "Traceback" not in text
    assert "unexpected TypeError: something srkit did not expect" in text and "--debug" in text
    with pytest.raises(TypeError):
        main(["models", "--debug"])
    monkeypatch.setenv("SRKIT_DEBUG", "1")
    with pytest.raises(TypeError):
        main(["models"])


def test_every_command_that_writes_takes_o_and_out() -> None:
    parser = cli.build_parser()
    commands = [
        ["upscale", "x.png"],
        ["evaluate"],
        ["compare", "bicubic"],
        ["export", "bicubic"],
        ["summary", "srresnet"],
        ["demo"],
        ["plot", "run"],
        ["interpolate", "a", "b"],
        ["viz", "features", "--image", "x.png"],
        ["data", "prepare", "x.png"],
        ["data", "augment", "src"],
    ]
    for argv in commands:
        for flag in ("-o", "--out"):
            args = parser.parse_args([*argv, flag, "dest"])
            assert "dest" in (getattr(args, "out", None), getattr(args, "output", None)), (argv, flag)


def test_shipped_model_refuses_another_scale() -> None:
    from srkit.models import load_model

    name = next(iter(shipped_models()), None)
    assert name is not None, "no shipped model"
    with pytest.raises(ValueError, match="--scale 2 does not apply"):
        load_model(name, scale=2)
    assert load_model("bicubic", scale=2).scale == 2  # the baseline takes any factor
    assert build_generator("bicubic", scale=3).scale == 3
