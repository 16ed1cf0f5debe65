"""Tests for the typed training config: defaults, the shipped recipes, overrides, errors, round trip, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from srkit.cli import main
from srkit.config import Config, apply_override, dump_config, load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


# defaults and shipped recipes -----------------------------------------------------------------------------


def test_defaults() -> None:
    config = load_config(None)
    assert config == Config()
    assert config.model.arch == "srresnet" and config.model.scale == 4 and config.model.init_from is None
    assert config.discriminator.arch is None
    assert config.data.train == ["train/T91", "train/BSD200", "train/General100"]
    assert config.data.val == "benchmarks/Set5"
    assert config.data.gt_size == 96 and config.data.batch_size == 16
    assert config.optim.lr_g == 1e-4 and config.optim.betas == (0.9, 0.999)
    assert config.loss.pixel == "l1" and config.loss.perceptual_weight == 0.0
    assert config.train.amp == "auto" and config.train.ema_decay is None
    assert config.train.keep_last is None  # every milestone is kept
    assert config.train.on_nonfinite == "stop" and config.train.max_rollbacks == 3


def test_srresnet_recipe_has_the_reports_settings() -> None:
    config = load_config(CONFIGS / "srresnet_x4.yaml")
    assert config.name == "srresnet_x4"
    assert config.model.arch == "srresnet" and config.model.scale == 4
    assert config.model.args == {"width": 64, "num_blocks": 16}
    assert config.discriminator.arch is None  # stage 1: generator alone
    assert config.optim.betas == (0.9, 0.999)
    assert config.optim.lr_g == pytest.approx(1e-4)
    assert config.data.batch_size == 16 and config.data.gt_size == 96
    assert config.loss.pixel == "l1" and config.loss.pixel_weight == 1.0
    assert config.loss.perceptual_weight == 0.0 and config.loss.adversarial_weight == 0.0


def test_srgan_recipe_has_the_reports_settings() -> None:
    config = load_config(CONFIGS / "srgan_x4.yaml")
    assert config.name == "srgan_x4"
    assert config.discriminator.arch == "srgan"
    assert config.model.init_from == "srresnet"  # the shipped stage-1 model, so the recipe runs from a fresh clone
    assert config.optim.betas == (0.9, 0.999)
    assert config.optim.lr_g == pytest.approx(1e-4) and config.optim.lr_d == pytest.approx(1e-4)
    assert config.data.batch_size == 16 and config.data.gt_size == 96
    assert config.loss.pixel_weight == 1.0
    assert config.loss.perceptual_weight == pytest.approx(0.006)
    assert config.loss.adversarial_weight == pytest.approx(0.001)
    assert config.loss.adversarial == "vanilla"


# overrides ------------------------------------------------------------------------------------------------


def test_overrides_are_yaml_parsed() -> None:
    config = load_config(
        CONFIGS / "srresnet_x4.yaml",
        ["train.steps=10", "optim.lr_g=2e-4", "model.args={width: 8}", "data.train=[a, b]", "name=x"],
    )
    assert config.train.steps == 10 and isinstance(config.train.steps, int)
    assert config.optim.lr_g == 2e-4 and isinstance(config.optim.lr_g, float)
    assert config.model.args == {"width": 8}  # replaced, not merged
    assert config.data.train == ["a", "b"]
    assert config.name == "x"
    # The other settings of the file are kept.
    assert config.data.gt_size == 96


def test_overrides_on_defaults_and_null() -> None:
    config = load_config(None, ["train.ema_decay=0.999", "model.init_from=null", "--train.seed=3"])
    assert config.train.ema_decay == 0.999
    assert config.model.init_from is None
    assert config.train.seed == 3  # a leading '--' is accepted


def test_apply_override_into_missing_section() -> None:
    data: dict[str, object] = {}
    apply_override(data, "optim.milestones=[2, 4]")
    assert data == {"optim": {"milestones": [2, 4]}}


# errors ---------------------------------------------------------------------------------------------------


def test_unknown_key_names_key_and_lists_allowed() -> None:
    with pytest.raises(ValueError, match=r"train\.stepz") as info:
        load_config(None, ["train.stepz=3"])
    message = str(info.value)
    assert "unknown key" in message
    assert "steps" in message and "val_every" in message  # the allowed keys of that section


def test_unknown_section() -> None:
    with pytest.raises(ValueError, match="trian") as info:
        load_config(None, ["trian.steps=3"])
    assert "train" in str(info.value) and "optim" in str(info.value)  # allowed top-level keys


def test_unknown_key_in_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.1\n")
    with pytest.raises(ValueError, match=r"optim\.lr") as info:
        load_config(path)
    assert str(path) in str(info.value) and "lr_g" in str(info.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.steps=abc", "train.steps"),  # wrong type
        ("data.batch_size=[1]", "data.batch_size"),  # wrong type
        ("loss.pixel=l3", "loss.pixel"),  # bad Literal
        ("train.amp=fp8", "train.amp"),  # bad Literal
        ("data.gt_size=0", "data.gt_size"),  # below the minimum
        ("train.steps=0", "train.steps"),
        ("train=5", "train"),  # a section given a scalar
    ],
)
def test_bad_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ValueError, match=f"'{key}'"):
        load_config(None, [override])


@pytest.mark.parametrize("name", ["../../x", "..", "/abs/path", "a/b", "a\\b", "", ".", ".hidden", "x" * 256, "a b"])
def test_run_name_must_stay_inside_out_dir(name: str) -> None:
    with pytest.raises(ValueError, match="'name': must be a run folder name") as info:
        load_config(None, [f"name={name}"])
    assert "letters, digits" in str(info.value) and "not starting with a dot" in str(info.value)


@pytest.mark.parametrize("name", ["run", "srresnet_x4", "a.b-c_1", "run-2024-06-01", "x" * 255])
def test_good_run_names(name: str) -> None:
    assert load_config(None, [f"name={name}"]).name == name


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("optim.lr_g=-1", "optim.lr_g", "in (0, 1]"),
        ("optim.lr_g=0", "optim.lr_g", "in (0, 1]"),
        ("optim.lr_d=0", "optim.lr_d", "in (0, 1]"),
        ("optim.lr_d=1e38", "optim.lr_d", "in (0, 1]"),  # overflows float32 inside Adam
        ("optim.lr_g=.nan", "optim.lr_g", "finite"),
        ("optim.lr_g=.inf", "optim.lr_g", "finite"),
        ("optim.betas=[0.9, 1.0]", "optim.betas", "[0, 1)"),
        ("optim.betas=[-0.1, 0.999]", "optim.betas", "[0, 1)"),
        ("optim.weight_decay=-0.01", "optim.weight_decay", ">= 0"),
        ("optim.gamma=0", "optim.gamma", "> 0"),
        ("optim.gamma=-0.5", "optim.gamma", "> 0"),
        ("optim.min_lr=-1e-7", "optim.min_lr", ">= 0"),
        ("optim.grad_clip=-1", "optim.grad_clip", "> 0"),
        ("optim.grad_clip=0", "optim.grad_clip", "> 0"),
        ("optim.milestones=[0, 10]", "optim.milestones", ">= 1"),
        ("optim.d_warmup_steps=-1", "optim.d_warmup_steps", ">= 0"),
        ("train.ema_decay=0", "train.ema_decay", "(0, 1)"),
        ("train.ema_decay=1.0", "train.ema_decay", "(0, 1)"),
        ("train.ema_decay=1.5", "train.ema_decay", "(0, 1)"),
        ("train.patience=0", "train.patience", ">= 1"),
        ("train.d_collapse_steps=0", "train.d_collapse_steps", ">= 1"),
        ("train.d_collapse_threshold=2", "train.d_collapse_threshold", "[0, 1]"),
        ("train.seed=-1", "train.seed", "2**63"),
        ("train.seed=18446744073709551616", "train.seed", "2**63"),  # torch.manual_seed overflows
        ("train.keep_last=0", "train.keep_last", ">= 1"),
        ("train.max_rollbacks=-1", "train.max_rollbacks", ">= 0"),
        ("train.on_nonfinite=skip", "train.on_nonfinite", "rollback"),
        ("data.workers=-1", "data.workers", ">= 0"),
        ("data.hr_size=[0, 256]", "data.hr_size", ">= 1"),
        ("data.hr_size=[256, -4]", "data.hr_size", ">= 1"),
        ("data.face_margin=-0.1", "data.face_margin", ">= 0"),
        ("data.split=[0.8, 0.3, 0.05]", "data.split", "summing to 1"),
        ("data.split=[1.1, -0.1, 0]", "data.split", "non-negative"),
        ("data.split_seed=-3", "data.split_seed", "2**63"),
        ("model.scale=0", "model.scale", ">= 1"),  # was a ZeroDivisionError in the gt_size check
        ("loss.pixel_weight=-1", "loss.pixel_weight", ">= 0"),
    ],
)
def test_numeric_ranges_name_the_key(override: str, key: str, expected: str) -> None:
    with pytest.raises(ValueError, match=f"'{key}'") as info:
        load_config(None, [override])
    message = str(info.value)
    assert expected in message, message
    assert "Value error," not in message  # pydantic's prefix is dropped


@pytest.mark.parametrize(
    "override",
    [
        "optim.lr_g=1",
        "optim.betas=[0, 0.999]",
        "optim.min_lr=0",
        "optim.grad_clip=0.5",
        "optim.gamma=2",
        "train.ema_decay=0.5",
        "train.d_collapse_threshold=0",
        "train.seed=0",
        "train.keep_last=1",
        "train.max_rollbacks=0",
        "train.on_nonfinite=rollback",
        "train.amp=auto",
        "data.workers=0",
        "data.face_margin=0",
        "data.hr_size=[1, 1]",
        "data.split=[0.8, 0.15, 0.05]",
    ],
)
def test_range_edges_are_accepted(override: str) -> None:
    load_config(None, [override])


def test_literal_error_says_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="l1") as info:
        load_config(None, ["loss.pixel=l3"])
    assert "l3" in str(info.value)


def test_yaml_list_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- train\n- steps\n")
    with pytest.raises(ValueError, match="mapping") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_invalid_yaml_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train: {steps: [1\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(path)


def test_empty_yaml_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == Config()


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_config(missing)


def test_override_without_equals() -> None:
    with pytest.raises(ValueError, match=r"train\.steps"):
        load_config(None, ["train.steps"])


def test_override_through_a_scalar() -> None:
    with pytest.raises(ValueError, match="not a section"):
        load_config(CONFIGS / "srresnet_x4.yaml", ["name.sub=1"])  # the file sets name: a string
    with pytest.raises(ValueError, match="'name'"):
        load_config(None, ["name.sub=1"])  # from defaults it reaches validation instead


# round trip -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", ["srresnet_x4.yaml", "srgan_x4.yaml", None])
def test_dump_round_trips(tmp_path: Path, recipe: str | None) -> None:
    config = load_config(
        CONFIGS / recipe if recipe else None,
        ["optim.milestones=[10, 20]", "train.ema_decay=0.99", "model.args={width: 8, num_blocks: 2}"],
    )
    text = dump_config(config)
    assert isinstance(yaml.safe_load(text), dict)
    path = tmp_path / "dumped.yaml"
    path.write_text(text)
    again = load_config(path)
    assert again == config
    assert dump_config(again) == text


# command line ---------------------------------------------------------------------------------------------


def test_cli_train_unknown_key(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    status = main(["train", "configs/srresnet_x4.yaml", "--train.stepz=3"])
    assert status == 2
    err = capsys.readouterr().err
    assert "train.stepz" in err
    assert "Traceback" not in err


def test_cli_overrides_rejected_for_other_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--foo.bar=1"])
    assert info.value.code == 2
    assert "--foo.bar=1" in capsys.readouterr().err


def test_cli_train_rejects_unknown_flag_without_value(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "configs/srresnet_x4.yaml", "--train.steps"])
    assert info.value.code == 2
    assert "--train.steps" in capsys.readouterr().err


def test_cli_train_without_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train"]) == 2
    err = capsys.readouterr().err
    assert "CONFIG" in err and "--resume" in err


def test_cli_train_config_and_resume_together(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", "configs/srresnet_x4.yaml", "--resume", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err


def test_cli_train_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml" in capsys.readouterr().err


def test_ldl_needs_ema_and_unet_needs_multiples_of_8() -> None:
    with pytest.raises(ValueError, match=r"set train\.ema_decay"):
        load_config(None, ["loss.artifact_weight=1.0", "discriminator.arch=srgan", "loss.adversarial_weight=0.001"])
    config = load_config(None, ["loss.artifact_weight=1.0", "train.ema_decay=0.999", "discriminator.arch=unet_sn"])
    assert config.loss.artifact_weight == 1.0 and config.discriminator.arch == "unet_sn"
    with pytest.raises(ValueError, match=r"unet_sn needs data\.gt_size a multiple of 8"):
        load_config(None, ["discriminator.arch=unet_sn", "data.gt_size=100"])


def test_accumulate_is_at_most_the_batch() -> None:
    assert load_config(None, ["train.accumulate=4", "data.batch_size=16"]).train.accumulate == 4
    with pytest.raises(ValueError, match="more micro-batches than it has images"):
        load_config(None, ["train.accumulate=32", "data.batch_size=16"])


def test_perceptual_layers_are_checked_against_the_arch() -> None:
    from srkit.config import LossConfig

    ok = LossConfig(perceptual_weight=1.0, perceptual_arch="vgg16", perceptual_layers={"conv1_2": 0.1, "conv5_3": 1})
    assert ok.perceptual_layers == {"conv1_2": 0.1, "conv5_3": 1.0}
    with pytest.raises(ValueError, match=r"conv5_4.*not a vgg16 layer"):
        LossConfig(perceptual_arch="vgg16", perceptual_layers={"conv5_4": 1.0})
    with pytest.raises(ValueError, match="both set"):
        LossConfig(perceptual_layer="conv5_4", perceptual_layers={"conv5_4": 1.0})
    with pytest.raises(ValueError, match="weight >= 0"):
        LossConfig(perceptual_layers={"conv5_4": -1.0})
    with pytest.raises(ValueError, match="empty"):
        LossConfig(perceptual_layers={})
