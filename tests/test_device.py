"""Precision auto: bf16 only where the hardware has it (AVX512-BF16/AMX CPUs, CUDA), said once on stderr."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srkit import cli, device
from srkit.models import save_weights
from testkit import random_srresnet, smooth_rgb

AVX2_ONLY = {"avx2": True, "avx512_f": False, "avx512_bf16": False, "amx_bf16": False}
WITH_AMX = {"avx2": True, "avx512_f": True, "avx512_bf16": True, "amx_bf16": True}


@pytest.mark.parametrize(("features", "expected"), [(AVX2_ONLY, torch.float32), (WITH_AMX, torch.bfloat16)])
def test_auto_precision_follows_the_cpu(
    monkeypatch: pytest.MonkeyPatch, features: dict[str, bool], expected: torch.dtype
) -> None:
    monkeypatch.setattr(device, "cpu_features", lambda: features)
    assert device.auto_precision(torch.device("cpu")) == expected
    assert device.native_bf16(torch.device("cpu")) == (expected == torch.bfloat16)


def test_cpu_features_match_the_kernel_flags() -> None:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if not flags:
        pytest.skip("no /proc/cpuinfo on this system")
    features = device.cpu_features()
    assert features["avx2"] == (" avx2" in flags)
    assert features["amx_bf16"] == (" amx_bf16" in flags)
    assert "flags:" in device.cpu_description()


@pytest.mark.parametrize(("features", "said"), [(AVX2_ONLY, "auto -> fp32"), (WITH_AMX, "auto -> bf16")])
def test_upscale_says_its_precision_once(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    features: dict[str, bool],
    said: str,
) -> None:
    monkeypatch.setattr(device, "cpu_features", lambda: features)
    weights = save_weights(
        random_srresnet(width=4, num_blocks=1),
        tmp_path / "w.safetensors",
        arch="srresnet",
        arch_kwargs={"width": 4, "num_blocks": 1},
    )
    for i in range(2):
        Image.fromarray(smooth_rgb(12, 12, i)).save(tmp_path / f"in{i}.png")
    argv = ["upscale", str(tmp_path / "in0.png"), str(tmp_path / "in1.png"), "-o", str(tmp_path / "out")]
    assert cli.main([*argv, "--model", str(weights), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert err.count("precision auto") == 1 and said in err
    assert np.asarray(Image.open(tmp_path / "out" / "in1.png")).shape == (48, 48, 3)


def test_bicubic_stays_exact_under_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "cpu_features", lambda: WITH_AMX)
    from srkit.models import load_model

    assert cli.resolve_precision("auto", torch.device("cpu"), load_model("bicubic")) == torch.float32
