"""Typed training configuration: YAML in, dotted command-line overrides, the resolved copy saved per run.

Every section forbids unknown keys, so a typo is an error that names the key and the keys allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from annotated_types import Ge, Gt, Le, Lt
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads exponent floats without a dot (1e-4), as people write learning rates."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


class _Section(BaseModel):
    # allow_inf_nan=False: a .nan or .inf in a recipe would only surface as a NaN loss many steps later.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# A run folder is out_dir/name: one path component that stays inside out_dir and is not hidden.
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_SEED_MAX = 2**63  # torch.manual_seed overflows at 2**64; the rank is added to train.seed


def _seed(v: int) -> int:
    if not 0 <= v < _SEED_MAX:
        raise ValueError("must be an integer in 0 .. 2**63 - 1")
    return v


Seed = Annotated[int, AfterValidator(_seed)]


class ModelConfig(_Section):
    """The generator: an architecture from srkit.archs.GENERATORS and its keyword arguments."""

    arch: str = "srresnet"
    scale: int = Field(default=4, ge=1, description="the upscaling factor")
    args: dict[str, Any] = Field(default_factory=dict)
    init_from: str | None = None  # weights (.safetensors) or a checkpoint (.pt) to start from (stage 2)
    # BatchNorm layers normalise with their running statistics (from init_from) in training too; their scale and
    # shift still learn. For fine-tuning SRResNet at a small batch, where batch and running statistics drift apart.
    freeze_bn: bool = False


class DiscriminatorConfig(_Section):
    """The discriminator; arch None trains the generator alone (stage 1)."""

    arch: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)


class DataConfig(_Section):
    """Training and validation images: folders relative to the data folder, or absolute paths.

    `train` entries are folders of HR images (recursive), `HQ/` + `LQ/` pair folders (used as they are),
    or .txt file lists. `val` is a folder, or "split" for the validation part of `split`/`partition_file`.
    """

    train: list[str] = Field(default_factory=lambda: ["train/T91", "train/BSD200", "train/General100"])
    val: str = "benchmarks/Set5"
    split: tuple[float, float, float] | None = None  # train/val/test ratios over the train images, e.g. 0.8 0.15 0.05
    split_seed: Seed = 0
    # keep each identity in one split part: a preset (lfw: <Name>_<NNNN> file names; folder: one folder per
    # identity) or a regular expression whose first group, searched in the file stem, is the identity
    group_by: str | None = None
    partition_file: str | None = None  # an official partition (CelebA's list_eval_partition.txt) instead of split
    degradation: str | list[Any] = "bicubic"  # a preset (bicubic, blur_bicubic, realistic) or a list of steps
    # the validation LR: the protocol's bicubic by default; a model trained for another fixed degradation
    # (blur_bicubic) picks its best checkpoints on LR made the same way. No random levels (noise, ranges).
    val_degradation: str | list[Any] = "bicubic"
    hr_size: tuple[int, int] | None = None  # resize every HR image to (H, W) first (one report: 256x256)
    face_crop: bool = False  # crop HR images around the detected face (faces: flips only, no rotation)
    face_margin: float = Field(default=0.3, ge=0, description="the margin around the face, as a fraction of its size")
    cache: Literal["memory", "disk"] = "memory"  # disk: decoded pairs memory-mapped from cache_dir
    cache_dir: str | None = None  # default <out_dir>/.cache
    val_max_images: int | None = Field(default=None, ge=1)  # validate on the first N images only (quick runs)
    gt_size: int = Field(default=96, ge=1)  # HR crop; the LR crop is gt_size / scale
    batch_size: int = Field(default=16, ge=1)
    workers: int = Field(default=0, ge=0, description="0 loads batches in the training process")
    flip: bool = True
    rot90: bool = True

    @field_validator("split")
    @classmethod
    def _ratios(cls, v: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if v is not None and (any(r < 0 for r in v) or abs(sum(v) - 1) > 1e-6):
            raise ValueError("must be three non-negative train/val/test ratios summing to 1, e.g. [0.8, 0.15, 0.05]")
        return v

    @field_validator("hr_size")
    @classmethod
    def _hr_size(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and min(v) < 1:
            raise ValueError("must be [H, W] with both sides >= 1 pixel, or null")
        return v

    @field_validator("degradation")
    @classmethod
    def _known_degradation(cls, v: str | list[Any]) -> str | list[Any]:
        from srkit.data.degradations import resolve_pipeline

        resolve_pipeline(v)  # raises ValueError naming the bad step or parameter
        return v

    @field_validator("val_degradation")
    @classmethod
    def _fixed_val_degradation(cls, v: str | list[Any]) -> str | list[Any]:
        from srkit.data.lowres import LowRes

        if LowRes.from_spec(v, scale=4).per_sample:
            raise ValueError(
                "validation needs a fixed LR: a pipeline without noise or [lo, hi] ranges (e.g. blur_bicubic)"
            )
        return v


class LossConfig(_Section):
    """Generator loss = pixel_weight * pixel + perceptual_weight * VGG + adversarial_weight * GAN.

    A weight of 0 leaves its term out (pixel_weight 0: a GAN-only or perceptual-only generator loss).
    """

    pixel: Literal["l1", "mse"] = "l1"
    pixel_weight: float = Field(default=1.0, ge=0)
    # frequency separation (Fritsche et al. 2019): `pixel` between Gaussian low-passed SR and HR, added to the
    # other terms with this weight; lowpass_sigma is the Gaussian's sigma in HR pixels
    lowpass_weight: float = Field(default=0.0, ge=0)
    lowpass_sigma: float = Field(default=1.5, gt=0)
    perceptual_weight: float = Field(default=0.0, ge=0)
    perceptual_arch: Literal["vgg16", "vgg19"] = "vgg19"
    # default: the arch's last ReLU (relu5_4 / relu5_3); "convX_Y" cuts before that conv's ReLU (ESRGAN's conv5_4)
    perceptual_layer: str | None = None
    # several layers with a weight each instead (Real-ESRGAN: conv1_2 0.1, conv2_2 0.1, conv3_4/4_4/5_4 1.0)
    perceptual_layers: dict[str, float] | None = None
    perceptual_criterion: Literal["mse", "l1"] = "mse"
    # unit-length feature vectors over the channels before the distance (the LPIPS paper's unlearned baseline)
    perceptual_normalize: bool = False
    adversarial: Literal["vanilla", "lsgan", "ragan"] = "vanilla"
    adversarial_weight: float = Field(default=0.0, ge=0)
    # LDL (Liang et al. 2022): L1 on the pixels where G makes artifacts its EMA copy does not; the paper uses 1.0
    artifact_weight: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _known_layer(self) -> LossConfig:
        from srkit.archs.vgg import layer_names

        names = layer_names(self.perceptual_arch)
        if self.perceptual_layer is not None and self.perceptual_layer not in names:
            raise ValueError(
                f"loss.perceptual_layer {self.perceptual_layer!r} is not a {self.perceptual_arch} layer; "
                f"expected one of {', '.join(names)}"
            )
        if self.perceptual_layers is not None:
            if self.perceptual_layer is not None:
                raise ValueError(
                    "loss.perceptual_layer and loss.perceptual_layers are both set: give one layer, or several "
                    "with a weight each"
                )
            if not self.perceptual_layers:
                raise ValueError("loss.perceptual_layers is empty: expected {layer: weight, ...} or null")
            for name, weight in self.perceptual_layers.items():
                if name not in names:
                    raise ValueError(
                        f"loss.perceptual_layers has {name!r}, not a {self.perceptual_arch} layer; "
                        f"expected names from {', '.join(names)}"
                    )
                if weight < 0:
                    raise ValueError(f"loss.perceptual_layers[{name!r}] is {weight}: expected a weight >= 0")
        return self


class OptimConfig(_Section):
    """Adam or AdamW (decoupled weight decay) for both networks, an LR schedule, clipping, D warm-up."""

    name: Literal["adam", "adamw"] = "adam"
    # Above 1 an Adam step overflows float32 or diverges at once; neither is a learning rate anyone means.
    lr_g: float = Field(default=1e-4, gt=0, le=1, description="an Adam learning rate, e.g. 1e-4")
    lr_d: float = Field(default=1e-4, gt=0, le=1, description="an Adam learning rate, e.g. 1e-4")
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(default=0.0, ge=0)
    scheduler: Literal["none", "multistep", "cosine"] = "none"
    milestones: list[int] = Field(default_factory=list)  # multistep: steps where lr *= gamma
    gamma: float = Field(default=0.5, gt=0, description="the multistep LR factor")
    min_lr: float = Field(default=1e-7, ge=0)  # cosine: the floor
    grad_clip: float | None = Field(
        default=None, gt=0, description="a max gradient norm per network; null: no clipping"
    )
    d_warmup_steps: int = Field(default=0, ge=0)  # train only the discriminator for the first N steps
    warmup_steps: int = Field(default=0, ge=0)  # LR rises linearly to lr over the first N steps (both nets)

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError("must be two Adam coefficients in [0, 1), e.g. [0.9, 0.999]")
        return v

    @field_validator("milestones")
    @classmethod
    def _milestones(cls, v: list[int]) -> list[int]:
        if any(m < 1 for m in v):
            raise ValueError("must be steps >= 1")
        return v


class TrainConfig(_Section):
    """Length, cadence, precision, averaging, stopping and logging of a run."""

    steps: int = Field(default=100_000, ge=1)
    val_every: int = Field(default=1_000, ge=1)
    save_every: int = Field(default=10_000, ge=1)  # milestone checkpoints
    log_every: int = Field(default=10, ge=1)
    seed: Seed = 0
    device: str = "auto"
    # auto: bf16 where it runs natively (CUDA with bf16, CPUs with AVX512-BF16/AMX), else none; a run saves
    # the value it resolved to, so a resume keeps the precision it started with
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"
    channels_last: bool = False
    # torch.compile both networks (TorchInductor; needs a C++ compiler on CPUs): keep it only where
    # benchmarks/train_throughput.py --compile shows it faster on your machine; the first steps compile
    compile: bool = False
    compile_backend: Literal["inductor", "aot_eager", "eager"] = "inductor"  # eager / aot_eager: capture, no codegen
    ema_decay: float | None = Field(
        default=None, gt=0, lt=1, description="e.g. 0.999, or null for no EMA"
    )  # validate/export the EMA
    early_stop_metric: Literal["psnr", "ssim", "lpips"] | None = None
    patience: int = Field(default=10, ge=1)  # validations without improvement before early stopping
    lpips_net: Literal["alex", "vgg", "none"] = "alex"
    tensorboard: bool = True
    wandb: bool = False
    wandb_mode: Literal["offline", "online"] = "offline"
    d_collapse_threshold: float = Field(
        default=0.01, ge=0, le=1, description="a mean discriminator probability"
    )  # warn
    d_collapse_steps: int = Field(default=500, ge=1)  # ... when mean D(G(z)) stays below the threshold this many steps
    # keep only the newest N milestone generator_step*.safetensors (None: all)
    keep_last: int | None = Field(default=None, ge=1, description="milestones to keep, or null to keep all")
    # a NaN/inf loss term: stop (keep latest.pt, exit non-zero) or roll back to latest.pt and go on
    on_nonfinite: Literal["stop", "rollback"] = "stop"
    # micro-batches per step (gradient accumulation): the update of data.batch_size at the memory of
    # batch_size / accumulate (BatchNorm and RaGAN see the micro-batch)
    accumulate: int = Field(default=1, ge=1)
    max_rollbacks: int = Field(default=3, ge=0)  # rollbacks per session before a non-finite loss stops the run


class Config(_Section):
    """A whole training recipe."""

    name: str = "run"
    out_dir: str = "runs"
    data_dir: str | None = None
    model: ModelConfig = Field(default_factory=ModelConfig)
    discriminator: DiscriminatorConfig = Field(default_factory=DiscriminatorConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("name")
    @classmethod
    def _run_name(cls, v: str) -> str:
        # The run folder is out_dir/name: '../x', '/abs', 'a/b', '' or '.' would write outside it or over it.
        if not _NAME.fullmatch(v) or len(v) > 255:
            raise ValueError(
                "must be a run folder name: letters, digits, '.', '_' and '-' (at most 255), not starting with a dot"
            )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.train.early_stop_metric == "lpips" and self.train.lpips_net == "none":
            raise ValueError("train.early_stop_metric=lpips needs train.lpips_net alex or vgg")
        if self.loss.adversarial_weight > 0 and self.discriminator.arch is None:
            raise ValueError("loss.adversarial_weight > 0 needs a discriminator (discriminator.arch: srgan)")
        loss = self.loss
        weights = (loss.pixel_weight, loss.lowpass_weight, loss.perceptual_weight, loss.adversarial_weight)
        if not any(w > 0 for w in weights):
            raise ValueError(
                "the generator loss is empty: loss.pixel_weight, loss.lowpass_weight, loss.perceptual_weight and "
                "loss.adversarial_weight are all 0 (expected at least one > 0)"
            )
        if self.train.accumulate > self.data.batch_size:
            raise ValueError(
                f"train.accumulate {self.train.accumulate} splits data.batch_size {self.data.batch_size} into more "
                "micro-batches than it has images (expected <= batch_size)"
            )
        if loss.artifact_weight > 0 and self.train.ema_decay is None:
            raise ValueError(
                "loss.artifact_weight (LDL) compares with the EMA generator: set train.ema_decay, e.g. 0.999"
            )
        if self.data.val == "split" and self.data.split is None and self.data.partition_file is None:
            raise ValueError("data.val=split needs data.split ratios or data.partition_file")
        if self.data.face_crop and self.data.rot90:
            raise ValueError("data.face_crop: faces train with flips only; set data.rot90=false")
        if self.discriminator.arch == "esrgan_vgg128":
            size = self.discriminator.args.get("input_size", 128)
            if self.data.gt_size != size:
                raise ValueError(
                    f"discriminator.arch esrgan_vgg128 judges {size}x{size} patches: data.gt_size must be {size}, "
                    f"got {self.data.gt_size}"
                )
        if self.discriminator.arch == "unet_sn" and self.data.gt_size % 8:
            raise ValueError(f"discriminator.arch unet_sn needs data.gt_size a multiple of 8, got {self.data.gt_size}")
        if self.data.gt_size % self.model.scale:
            raise ValueError(f"data.gt_size {self.data.gt_size} must be a multiple of model.scale {self.model.scale}")
        return self


def _allowed_keys(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The field names at a location inside the config (for 'unknown key' messages)."""
    current: type[BaseModel] = model
    for part in loc[:-1]:
        field = current.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        current = annotation
    return sorted(current.model_fields)


_BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _field_at(loc: tuple[str | int, ...]) -> Any:
    """The pydantic FieldInfo of a dotted config location, or None."""
    current: Any = Config
    info = None
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(str(part))
        if info is None:
            return None
        current = info.annotation
    return info


def _bounds_text(info: Any) -> str:
    """A field's gt/ge/lt/le constraints as one phrase ("must be >= 1", "must be in (0, 1]") and its description."""
    low = next((m for m in info.metadata if isinstance(m, Gt | Ge)), None)
    high = next((m for m in info.metadata if isinstance(m, Lt | Le)), None)
    lo = None if low is None else (("(", ">", low.gt) if isinstance(low, Gt) else ("[", ">=", low.ge))
    hi = None if high is None else ((")", "<", high.lt) if isinstance(high, Lt) else ("]", "<=", high.le))
    if lo and hi:
        text = f"must be in {lo[0]}{lo[2]}, {hi[2]}{hi[0]}"
    else:
        bound = lo or hi
        assert bound is not None
        text = f"must be {bound[1]} {bound[2]}"
    return f"{text} ({info.description})" if info.description else text


def _explain(err: ValidationError, source: str) -> ValueError:
    """Turn pydantic's report into one message naming each bad key and what was expected."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(Config, e["loc"]))
            lines.append(f"unknown key '{key}' (allowed here: {allowed})")
            continue
        info = _field_at(e["loc"]) if e["type"] in _BOUND_ERRORS else None
        # The whole allowed range, not only the bound that failed; pydantic prefixes our validators' ValueErrors.
        msg = _bounds_text(info) if info is not None else e["msg"].removeprefix("Value error, ")
        lines.append(f"'{key}': {msg} (got {e.get('input')!r})")
    return ValueError(f"bad config {source}: " + "; ".join(lines))


def apply_override(data: dict[str, Any], dotted: str) -> None:
    """Apply one `section.key=value` override in place; the value is parsed as YAML (1e-4, [1, 2], null)."""
    if "=" not in dotted:
        raise ValueError(f"override {dotted!r} must look like section.key=value")
    key, raw = dotted.split("=", 1)
    key = key.strip().removeprefix("--")
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"override {dotted!r}: '{part}' is not a section")
        node = child
    node[parts[-1]] = _yaml(raw) if raw.strip() else ""


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML recipe (or start from defaults), apply overrides, validate strictly."""
    data: dict[str, Any] = {}
    source = "(defaults)"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            loaded = _yaml(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"config {path} is not valid YAML: {err}") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"config {path} must be a mapping of sections, got {type(loaded).__name__}")
        data = loaded or {}
    for item in overrides:
        apply_override(data, item)
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise _explain(err, source) from None


def dump_config(config: Config) -> str:
    """The resolved config as YAML (what a run saves next to its checkpoints)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
