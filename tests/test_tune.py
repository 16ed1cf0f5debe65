"""--backend auto: runtimes measured on a probe, the fastest that agrees with PyTorch fp32 kept and remembered."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srkit import tune
from srkit.cli import main
from srkit.models import build_generator, resolve_model, save_weights
from srkit.tune import MARGIN, Measurement, Runtime

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no stored choice."""
    monkeypatch.setenv("SRKIT_CACHE", str(tmp_path / "cache"))


def _compact(tmp_path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    net = build_generator("compact", width=8, num_convs=2).eval()
    kwargs = {"width": 8, "num_convs": 2}
    return save_weights(net, tmp_path / f"c{seed}.safetensors", arch="compact", arch_kwargs=kwargs)


def _row(backend: str, precision: str, seconds: float, psnr: float = 60.0) -> Measurement:
    return Measurement(backend, precision, seconds, psnr, accepted=psnr >= tune.MIN_PSNR)


def test_pick_keeps_torch_unless_another_runtime_is_clearly_faster() -> None:
    slightly = [_row("torch", "bf16", 1.0), _row("openvino", "bf16", 1.0 / (MARGIN - 0.05))]
    assert tune.pick(slightly)[0] == Runtime("torch", "bf16")
    clearly = [_row("torch", "bf16", 1.0), _row("openvino", "bf16", 1.0 / (MARGIN + 0.1))]
    assert tune.pick(clearly)[0] == Runtime("openvino", "bf16")
    # the fastest disagrees with fp32 (bf16 sums of a deep trunk): not taken
    inexact = [_row("torch", "fp32", 4.0, math.inf), _row("torch", "bf16", 1.0), _row("openvino", "bf16", 0.5, 44.0)]
    assert tune.pick(inexact)[0] == Runtime("torch", "bf16")
    failed = [_row("torch", "fp32", 1.0, math.inf), Measurement("onnxruntime", "fp32", error="boom")]
    assert tune.pick(failed)[0] == Runtime("torch", "fp32")
    with pytest.raises(ValueError, match="no runtime agreed"):
        tune.pick([_row("openvino", "bf16", 0.5, 30.0)])


def test_start_up_decides_small_jobs() -> None:
    # OpenVINO: 30% faster per forward, 1.2 s to import and compile; PyTorch's model loads in 0.2 s
    rows = [_row("torch", "bf16", 0.040), _row("openvino", "bf16", 0.028)]
    rows[0].start_seconds, rows[1].start_seconds = 0.2, 1.2
    probe_px = tune.PROBE**2
    assert tune.pick(rows)[0].backend == "openvino"  # per forward (large jobs)
    assert tune.pick(rows, lr_pixels=10 * probe_px)[0].backend == "torch"  # 0.6 s vs 1.48 s
    big, why = tune.pick(rows, lr_pixels=1000 * probe_px)  # 40.2 s vs 29.2 s
    assert big.backend == "openvino" and "start-up included" in why


def test_candidates_follow_the_request_and_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(tune, "native_bf16", lambda _d: False)
    labels = [r.label for r in tune.candidates("auto", cpu)]
    assert labels == ["torch fp32", "onnxruntime fp32", "openvino fp32"]  # no bf16 candidate on an AVX2 CPU
    monkeypatch.setattr(tune, "native_bf16", lambda _d: True)
    monkeypatch.setattr(tune, "_openvino_bf16", lambda: True)
    assert [r.label for r in tune.candidates("bf16", cpu)] == ["torch bf16", "openvino bf16"]
    assert [r.label for r in tune.candidates("fp32", cpu)] == ["torch fp32", "onnxruntime fp32", "openvino fp32"]
    assert [r.label for r in tune.candidates("auto", torch.device("meta"))] == ["torch fp32"]  # not a CPU


def test_choose_measures_once_stores_and_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = _compact(tmp_path)
    choice, desc = tune.choose(weights, request="fp32")
    assert not choice.cached and {m.backend for m in choice.measured} == {"torch", "onnxruntime", "openvino"}
    for m in choice.measured:  # every fp32 runtime agrees with PyTorch far beyond the bar
        assert m.error is None and m.seconds is not None and m.seconds > 0 and m.psnr is not None and m.psnr > 80
        assert m.start_seconds > 0  # loading, compiling, importing: measured, not assumed
    assert desc.backend == choice.runtime.backend
    stored = json.loads(tune.cache_file().read_text())
    assert len(stored) == 1 and next(iter(stored.values()))["runtime"] == {"backend": desc.backend, "precision": "fp32"}

    def no_measuring(*_a: object, **_k: object) -> None:
        raise AssertionError("measured again")

    monkeypatch.setattr(tune, "measure", no_measuring)
    again, desc2 = tune.choose(weights, request="fp32")
    assert again.cached and again.runtime == choice.runtime and desc2.backend == desc.backend
    # the chosen runtime's output is the model's
    x = tune.probe_image(24)
    from srkit.descriptor import open_model
    from srkit.inference import run_model

    cpu = torch.device("cpu")
    ref = run_model(open_model(weights), x, device=cpu)
    assert torch.allclose(run_model(desc2, x, device=cpu), ref, atol=1e-4)
    # other weights, another request: not the stored choice
    with pytest.raises(AssertionError, match="measured again"):
        tune.choose(_compact(tmp_path, seed=1), request="fp32")


def test_measuring_auto_also_stores_the_fp32_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = _compact(tmp_path)
    monkeypatch.setattr(tune, "native_bf16", lambda _d: False)  # fp32 candidates only: quick
    auto, _ = tune.choose(weights, request="auto")
    monkeypatch.setattr(tune, "measure", lambda *_a, **_k: pytest.fail("fp32 measured again"))
    fp32, _ = tune.choose(weights, request="fp32")
    assert fp32.cached and fp32.runtime == auto.runtime and {m.precision for m in fp32.measured} == {"fp32"}


def test_small_jobs_are_not_measured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tune, "measure", lambda *_a, **_k: pytest.fail("a tiny job was measured"))
    choice, desc = tune.choose(_compact(tmp_path), request="fp32", lr_pixels=lambda: 64 * 64)
    assert choice.runtime == Runtime("torch", "fp32") and desc.backend == "torch" and "not measured" in choice.why
    assert not tune.cache_file().exists()


def test_a_runtime_that_fails_is_recorded_and_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = tune._open

    def broken_openvino(source: object, runtime: Runtime, threads: int | None) -> object:
        if runtime.backend == "openvino":
            raise RuntimeError("compile failed\nsecond line")
        return real_open(source, runtime, threads)  # type: ignore[arg-type]

    monkeypatch.setattr(tune, "_open", broken_openvino)
    rows, opened = tune.measure(resolve_model(_compact(tmp_path)), tune.candidates("fp32", torch.device("cpu")))
    bad = [r for r in rows if r.backend == "openvino"]
    assert bad and bad[0].error == "RuntimeError: compile failed" and not bad[0].accepted
    assert Runtime("openvino", "fp32") not in opened and tune.pick(rows)[0].backend != "openvino"


def _image(path: Path) -> np.ndarray:
    rgb = (np.random.default_rng(3).random((14, 18, 3)) * 255).round().astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return rgb


def test_upscale_backends_agree_and_auto_uses_the_stored_choice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = _compact(tmp_path)
    _image(tmp_path / "in.png")
    outs = {}
    for backend in ("torch", "openvino", "onnxruntime"):
        args = ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / backend), "--model", str(weights)]
        assert main([*args, "--backend", backend, "--precision", "fp32"]) == 0
        outs[backend] = np.asarray(Image.open(tmp_path / backend / "in.png")).astype(int)
    for backend in ("openvino", "onnxruntime"):  # within one 8-bit level of PyTorch
        assert np.abs(outs[backend] - outs["torch"]).max() <= 1

    # a stored choice (here made by hand: openvino) is what auto runs, said on stderr
    source = resolve_model(weights)
    key = tune.cache_key(source, "fp32", None)
    record = {"runtime": {"backend": "openvino", "precision": "fp32"}, "measured": [], "when": "earlier"}
    tune.cache_file().parent.mkdir(parents=True, exist_ok=True)
    tune.cache_file().write_text(json.dumps({key: record}))
    capsys.readouterr()
    args = ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "auto"), "--model", str(weights)]
    assert main([*args, "--precision", "fp32"]) == 0
    assert "backend auto -> openvino fp32 (measured on earlier)" in capsys.readouterr().err
    auto = np.asarray(Image.open(tmp_path / "auto" / "in.png")).astype(int)
    assert np.array_equal(auto, outs["openvino"])

    monkeypatch.setenv("SRKIT_BACKEND", "torch")
    assert main([*args, "--precision", "fp32", "--overwrite"]) == 0
    assert "backend auto" not in capsys.readouterr().err
    monkeypatch.setenv("SRKIT_BACKEND", "tensorrt")
    assert main([*args, "--overwrite"]) == 2
    assert "SRKIT_BACKEND='tensorrt': expected one of auto, torch, onnxruntime, openvino" in capsys.readouterr().err


def test_tune_command_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = _compact(tmp_path)
    assert main(["tune", str(weights), "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "| torch fp32 |" in out and "| openvino fp32 |" in out and "| onnxruntime fp32 |" in out
    assert "**yes**" in out and "--backend auto runs" in out
    assert main(["tune", str(weights), "--precision", "fp32"]) == 0
    assert "not measured again" in capsys.readouterr().out


def test_openvino_refuses_other_precisions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = _compact(tmp_path)
    _image(tmp_path / "in.png")
    args = ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "o"), "--model", str(weights)]
    assert main([*args, "--backend", "openvino", "--precision", "fp16"]) == 2
    assert "OpenVINO runs fp32 or bf16" in capsys.readouterr().err
    from srkit.descriptor import open_model

    desc = open_model(weights, backend="openvino")
    with pytest.raises(ValueError, match=r"runs in fp32 as compiled, not bf16"):
        desc.check_precision(torch.bfloat16)


def test_a_damaged_or_foreign_record_is_measured_again(tmp_path: Path) -> None:
    weights = _compact(tmp_path)
    key = tune.cache_key(resolve_model(weights), "fp32", None)
    tune.cache_file().parent.mkdir(parents=True, exist_ok=True)
    tune.cache_file().write_text(json.dumps({key: {"runtime": {"backend": "openvino", "colour": "blue"}}}))
    choice, _ = tune.choose(weights, request="fp32")
    assert not choice.cached and choice.measured  # measured, and the record rewritten
    assert json.loads(tune.cache_file().read_text())[key]["runtime"]["precision"] == "fp32"
