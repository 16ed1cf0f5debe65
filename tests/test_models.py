"""Tests for srkit.models: building generators, saving and loading safetensors weights."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from srkit.archs import Bicubic, SRResNet
from srkit.models import (
    WEIGHTS_FORMAT,
    available_models,
    build_generator,
    freeze_batchnorm,
    load_model,
    model_scale,
    read_metadata,
    save_weights,
)
from testkit import random_srresnet

TINY = {"width": 8, "num_blocks": 2, "scale": 4}


def _trained_tiny(seed: int = 0) -> SRResNet:
    """A tiny SRResNet whose weights and BatchNorm statistics are not the defaults."""
    torch.manual_seed(seed)
    model = build_generator("srresnet", **TINY)
    assert isinstance(model, SRResNet)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.train()
    model(torch.rand(2, 3, 8, 8))  # moves BatchNorm running stats away from 0 / 1
    return model.eval()


def _fixed_input() -> torch.Tensor:
    return torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(1))


def test_build_generator() -> None:
    model = build_generator("srresnet", **TINY)
    assert isinstance(model, SRResNet) and model.scale == 4
    assert isinstance(build_generator("bicubic", scale=2), Bicubic)


def test_build_generator_unknown_name() -> None:
    with pytest.raises(ValueError, match="'esrgan_x9'") as info:
        build_generator("esrgan_x9")
    assert "srresnet" in str(info.value) and "bicubic" in str(info.value)


def test_build_generator_bad_kwarg() -> None:
    with pytest.raises(ValueError, match="srresnet") as info:
        build_generator("srresnet", depth=3)
    assert "depth" in str(info.value)
    assert isinstance(info.value.__cause__, TypeError)


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = _trained_tiny()
    path = save_weights(model, tmp_path / "sub" / "tiny.safetensors", arch="srresnet", arch_kwargs=TINY)
    assert path == tmp_path / "sub" / "tiny.safetensors" and path.is_file()

    loaded = load_model(path)
    assert isinstance(loaded, SRResNet) and not loaded.training
    assert model_scale(loaded) == 4
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key, value in original.items():
        assert restored[key].dtype == value.dtype, key
        assert torch.equal(restored[key], value), key
    x = _fixed_input()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        # ... and a freshly initialised model of the same arch gives something else.
        fresh = build_generator("srresnet", **TINY).eval()
        assert not torch.equal(fresh(x), model(x))

    # load_model also takes a str path.
    with torch.no_grad():
        assert torch.equal(load_model(str(path))(x), model(x))


def test_metadata(tmp_path: Path) -> None:
    path = save_weights(
        _trained_tiny(), tmp_path / "m.safetensors", arch="srresnet", arch_kwargs=TINY, meta={"step": "7"}
    )
    meta = read_metadata(path)
    assert meta["arch"] == "srresnet"
    assert json.loads(meta["arch_kwargs"]) == TINY
    assert meta["srkit_format"] == WEIGHTS_FORMAT
    assert meta["step"] == "7"


def test_load_bicubic() -> None:
    model = load_model("bicubic")
    assert isinstance(model, Bicubic) and model_scale(model) == 4 and not model.training
    assert model(torch.rand(1, 3, 5, 6)).shape == (1, 3, 20, 24)
    assert model_scale(load_model("bicubic", scale=2)) == 2
    assert "bicubic" in available_models()


def test_load_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no_such_model") as info:
        load_model("no_such_model")
    assert "bicubic" in str(info.value)  # lists what is known
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.safetensors")


def test_load_file_without_srkit_metadata(tmp_path: Path) -> None:
    # Not srkit's: handed to spandrel's detection (community weights), which knows no such layout.
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="no known architecture matches these weights") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_load_weights_missing_keys(tmp_path: Path) -> None:
    # Metadata says 3 blocks, the file holds 2: keys are missing -> a ValueError naming the arch.
    path = save_weights(
        _trained_tiny(), tmp_path / "w.safetensors", arch="srresnet", arch_kwargs={**TINY, "num_blocks": 3}
    )
    with pytest.raises(ValueError, match="do not fit arch 'srresnet'"):
        load_model(path)


def test_load_weights_wrong_shapes(tmp_path: Path) -> None:
    # Metadata says width 16, the file holds width 8: same keys, wrong shapes. load_model promises a
    # ValueError for weights that do not fit ("weights do not fit arch"), and the CLI only turns
    # FileNotFoundError/ValueError into a clean error; a RuntimeError becomes a traceback.
    path = save_weights(_trained_tiny(), tmp_path / "w.safetensors", arch="srresnet", arch_kwargs={**TINY, "width": 16})
    with pytest.raises(ValueError, match="do not fit arch 'srresnet'") as info:
        load_model(path)
    assert "shape mismatch" in str(info.value) and "head.0.bias: file (8,), srresnet (16,)" in str(info.value)


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "w"
    path = save_weights(_trained_tiny(0), folder / "tiny.safetensors", arch="srresnet", arch_kwargs=TINY)
    # Replacing an existing file leaves nothing else behind either.
    save_weights(_trained_tiny(1), path, arch="srresnet", arch_kwargs=TINY)
    assert os.listdir(folder) == ["tiny.safetensors"]
    before = path.read_bytes()
    # The temp-file route keeps umask-based permissions (mkstemp's 0600 would make a shared file private).
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask

    # A write that fails at the last step (the rename into place) leaves the old file intact and no temp
    # file behind.
    def failing_replace(src: object, dst: object) -> None:
        raise OSError("disk full (simulated)")

    with monkeypatch.context() as patch, pytest.raises(OSError, match="disk full"):
        patch.setattr(os, "replace", failing_replace)
        save_weights(_trained_tiny(2), path, arch="srresnet", arch_kwargs=TINY)
    assert os.listdir(folder) == ["tiny.safetensors"]
    assert path.read_bytes() == before
    # The surviving file is the second model.
    x = _fixed_input()
    with torch.no_grad():
        assert torch.equal(load_model(path)(x), _trained_tiny(1)(x))


def test_model_scale_requires_int_attribute() -> None:
    with pytest.raises(ValueError, match="Linear"):
        model_scale(torch.nn.Linear(2, 2))


def test_default_model_is_the_shipped_srgan_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import srkit.models as models

    monkeypatch.setattr(models, "SHIPPED_DIR", tmp_path)
    assert models.default_model() == "bicubic"  # nothing shipped: the baseline
    save_weights(SRResNet(width=8, num_blocks=1), tmp_path / "srresnet.safetensors", arch="srresnet", arch_kwargs={})
    assert models.default_model() == "bicubic"  # an SRResNet alone is not the GAN default
    save_weights(SRResNet(width=8, num_blocks=1), tmp_path / "srgan.safetensors", arch="srresnet", arch_kwargs={})
    assert models.default_model() == "srgan"
    assert models.available_models() == ["bicubic", "srgan", "srresnet"]


def test_every_shipped_model_has_a_record_matching_its_weights() -> None:
    import hashlib
    import json

    from srkit.models import SHIPPED_DIR, describe_shipped, shipped_models

    infos = {i.name: i for i in describe_shipped()}
    for name, path in shipped_models().items():
        record = json.loads((SHIPPED_DIR / f"{name}.json").read_text())
        assert record["name"] == name and record["domain"] in ("natural", "faces")
        assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), f"{name}.json is stale"
        assert (SHIPPED_DIR / record["card"]).is_file()
        assert infos[name].domain == record["domain"] and infos[name].chosen_by.startswith(record["chosen_by"])
        # Best-by-metric variants are named NAME_psnr / NAME_ssim beside NAME (best LPIPS) and load by name.
        if name.endswith(("_psnr", "_ssim")):
            assert name.rsplit("_", 1)[0] in shipped_models(), f"{name} ships without its best-LPIPS sibling"
        assert load_model(name).scale == infos[name].scale


def test_freeze_batchnorm_uses_running_statistics_in_train_mode() -> None:
    net = random_srresnet(width=8, num_blocks=2)
    x = torch.rand(3, 3, 12, 12)
    with torch.no_grad():
        want = net(x)  # eval mode: running statistics
    assert freeze_batchnorm(net) == 5  # 2 per block + the one after the body
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    out = net(x)
    torch.testing.assert_close(out, want)  # train mode normalises the same way ...
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # ... and leaves every buffer alone
    out.mean().backward()
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0
    # Its weights load into a plain model, which gives the same output.
    plain = build_generator("srresnet", width=8, num_blocks=2).eval()
    plain.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(plain(x), want)
