"""Tests for `srkit summary`: parameter totals (paper counts), FLOPs, the markdown table and the diagram."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from srkit.cli import main
from srkit.models import build_generator, save_weights
from srkit.summary import build_network, parse_size, run_summary, summarize_model


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")


@pytest.mark.parametrize(
    ("name", "params", "output"),
    [
        ("srresnet", 1_549_462, (1, 3, 96, 96)),
        ("rrdbnet", 16_697_987, (1, 3, 96, 96)),
        ("autoencoder", 1_110_403, (1, 3, 96, 96)),
        ("pixelshuffle", 474_307, (1, 3, 96, 96)),
        ("srgan_discriminator", 23_565_505, (1, 1)),
        ("esrgan_vgg128", 14_499_401, (1, 1)),
    ],
)
def test_paper_parameter_counts(name: str, params: int, output: tuple[int, ...], tmp_path: Path) -> None:
    net, _ = build_network(name)
    expected = sum(p.numel() for p in net.parameters())
    summary, paths = run_summary(name, input_size=None, out_dir=tmp_path)
    assert summary.total_params == summary.trainable_params == expected == params
    assert summary.output_shape == output
    assert summary.total_flops > 0 and summary.total_macs * 2 == summary.total_flops
    # The diagram's boxes cover the whole network once.
    assert sum(b.params for b in summary.blocks) == params
    assert sum(b.flops for b in summary.blocks) == summary.total_flops
    assert [p.name for p in paths] == [f"{name}_summary.md", f"{name}_diagram.png"]
    assert f"{params:,}" in paths[0].read_text()


def test_flops_scale_with_input_area() -> None:
    net = build_generator("srresnet", num_blocks=2, width=16)
    small = summarize_model(net, name="s", input_size=(24, 24))
    large = summarize_model(build_generator("srresnet", num_blocks=2, width=16), name="s", input_size=(48, 48))
    assert small.total_flops > 0
    assert large.total_flops == 4 * small.total_flops  # fully convolutional: FLOPs per output pixel
    assert large.output_shape == (1, 3, 192, 192)
    # Hand count for the 9x9 head conv: 2 * (3 * 81) multiply-adds per output value, 16 x 24 x 24 outputs.
    head = next(r for r in small.rows if r.name == "head.0")
    assert head.flops == 2 * 3 * 81 * 16 * 24 * 24
    assert head.output_shape == (1, 16, 24, 24)


def test_rows_are_in_execution_order_with_depth() -> None:
    summary = summarize_model(build_generator("srresnet", num_blocks=2), name="s", input_size=(24, 24), depth=1)
    assert [r.name for r in summary.rows] == ["head", "body", "body_tail", "upsample", "tail"]
    deep = summarize_model(build_generator("srresnet", num_blocks=2), name="s", input_size=(24, 24), depth=2)
    names = [r.name for r in deep.rows]
    assert names.index("upsample") < names.index("upsample.0") < names.index("upsample.1")


def test_summary_cli_weights_file_and_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kwargs = {"num_blocks": 1, "width": 8, "scale": 4}
    net = build_generator("srresnet", **kwargs)
    weights = save_weights(net, tmp_path / "tiny.safetensors", arch="srresnet", arch_kwargs=kwargs)
    out = tmp_path / "sum"
    assert main(["summary", str(weights), "--input", "16x20", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    total = sum(p.numel() for p in net.parameters())
    assert f"{total:,}" in printed and "1x3x64x80" in printed
    md = (out / "tiny_summary.md").read_text()
    assert "| parameters | " + f"{total:,}" in md and "1x3x16x20" in md
    with Image.open(out / "tiny_diagram.png") as im:
        assert im.format == "PNG" and im.size[0] > 200


def test_summary_discriminator_default_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "srgan_discriminator", "--input", "96x96", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "srgan_discriminator_diagram.png").is_file()
    capsys.readouterr()
    assert main(["summary", "no_such_net", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no_such_net" in err and "srresnet" in err and "srgan_discriminator" in err
    assert main(["summary", "esrgan_vgg128", "--input", "96x96", "--out", str(tmp_path)]) == 2
    assert "128" in capsys.readouterr().err


def test_parse_size() -> None:
    assert parse_size("24x32") == (24, 32)
    assert parse_size("64") == (64, 64)
    for bad in ("0x4", "abc", "4x", "-3"):
        with pytest.raises(ValueError, match="--input"):
            parse_size(bad)


def test_bicubic_has_no_parameters(tmp_path: Path) -> None:
    summary, _ = run_summary("bicubic", input_size=(8, 8), out_dir=tmp_path)
    assert summary.total_params == 0 and summary.output_shape == (1, 3, 32, 32)
    assert torch.Size(summary.output_shape) == torch.Size([1, 3, 32, 32])
