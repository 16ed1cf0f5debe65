"""The training loop: `fit`, for stage 1 (generator alone) and stage 2 (GAN fine-tuning).

A step draws batch `step` (see data.datasets: batches are a pure function of seed and step), updates
the generator, then the discriminator (train.step). Validation, checkpoints and logs happen on rank 0 at
the configured cadence. Resuming restores every state, so the losses after a resume equal those of an
uninterrupted run. A NaN/inf loss term is never applied or saved: the run stops (train.on_nonfinite=stop)
or goes back to latest.pt (rollback) and replays from there without that step's batch.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader

from srkit import fs
from srkit.archs import DISCRIMINATORS
from srkit.config import Config, LossConfig, OptimConfig, TrainConfig, dump_config
from srkit.data.datasets import IndexRange, PairSet, PatchDataset
from srkit.data.pipeline import build_pairs, gather_sources
from srkit.device import auto_precision, pick_device
from srkit.losses import ADVERSARIAL, PerceptualLoss, lowpass_loss, pixel_loss
from srkit.metrics import LPIPS
from srkit.models import build_generator, freeze_batchnorm, load_model, save_weights
from srkit.train.logger import LogWindow, RunLogger, memory_report
from srkit.train.schedule import ema_avg_fn, plan
from srkit.train.state import Checkpoint, Networks, rng_state, set_rng_state
from srkit.train.step import (
    LOSS_TERMS,
    AdversarialLoss,
    FiniteCheck,
    Logs,
    Objective,
    Update,
    discriminator_step,
    first_nonfinite,
    generate_fakes,
    generator_step,
    unwrap,
)
from srkit.train.validate import Best, record_validation, update_best, validate

_MILESTONE = re.compile(r"generator_step(\d+)\.safetensors")


class NonFiniteLoss(ValueError):
    """A loss term became NaN/inf and the run stopped (latest.pt kept); a ValueError so the CLI prints one line."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a torchrun job (rank 0 of 1 when run plainly)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @staticmethod
    def from_env() -> DistInfo:
        return DistInfo(
            rank=int(os.environ.get("RANK", 0)),
            world=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )


@dataclass
class _Data:
    dataset: PatchDataset
    val_pairs: PairSet  # empty on ranks other than 0
    skipped: list[tuple[Path, str]]  # training images that could not be used, with why
    val_source: str  # where the validation images come from, for the log
    set_name: str  # the name validation results carry


@dataclass
class _Progress:
    """What changes as a run goes, besides the networks. In latest.pt: step, best, evals_without_gain, window and
    (as wall_seconds) the wall time; the rest lives in this session only."""

    step: int = 0
    best: Best = field(default_factory=dict)
    evals_without_gain: int = 0
    window: LogWindow = field(default_factory=LogWindow)
    last_saved: int | None = None  # the step latest.pt holds
    collapse_run: int = 0  # consecutive steps with D winning outright
    rollbacks: int = 0
    # Steps whose batch gave a non-finite loss before a rollback: replayed without an update, as the same
    # state and batch would (deterministically) give the same NaN again.
    skip_steps: set[int] = field(default_factory=set)
    stop_reason: str = "finished"
    # Wall time: seconds the steps up to latest.pt took in earlier sessions, and when this session started.
    wall_before: float = 0.0
    session_start: float = field(default_factory=time.perf_counter)

    @property
    def wall_seconds(self) -> float:
        """Training wall time of the run so far, over every session (each up to the checkpoint it resumed)."""
        return self.wall_before + time.perf_counter() - self.session_start


def fit(config: Config, *, resume: str | Path | None = None) -> Path:
    """Train as the config says; with `resume` (a run folder) continue from its latest checkpoint."""
    dinfo = DistInfo.from_env()
    device = pick_device(config.train.device)
    if device.type == "cuda" and dinfo.world > 1:
        device = torch.device("cuda", dinfo.local_rank)
        torch.cuda.set_device(device)
    with _distributed(dinfo, device):
        return _fit(config, resume=resume, dinfo=dinfo, device=device)


def _fit(config: Config, *, resume: str | Path | None, dinfo: DistInfo, device: torch.device) -> Path:
    # Everything that can fail on bad input is checked before the run folder is touched.
    run_dir, ckpt = _open_run(config, resume)
    config, amp_note = _resolve_amp(config, device)
    _check_settings(config, device)
    torch.manual_seed(config.train.seed + dinfo.rank)
    is_main, t = dinfo.rank == 0, config.train
    data = _load_data(config, is_main=is_main)
    nets = _build_networks(config, device, fresh=ckpt is None)
    objective, d_loss = _objective(config.loss, with_d=nets.net_d is not None, data_dir=config.data_dir, device=device)
    lpips_model = LPIPS(t.lpips_net, data_dir=config.data_dir).to(device) if is_main and t.lpips_net != "none" else None
    logger = RunLogger(
        run_dir,
        enabled=is_main,
        config=config.model_dump(mode="json"),
        tensorboard=t.tensorboard,
        wandb=t.wandb,
        wandb_mode=t.wandb_mode,
        resume_step=ckpt.step if ckpt else None,
    )
    _start_logs(config, run_dir, data, logger, amp_note=amp_note, dinfo=dinfo, device=device)
    progress = _Progress()
    if ckpt is not None:
        _restore(nets, progress, ckpt, optim=config.optim, total=t.steps, rank=dinfo.rank)
        logger.info(f"resumed from {run_dir / 'checkpoints' / 'latest.pt'} at step {ckpt.step}")
    if dinfo.world > 1:
        nets.net_g = DistributedDataParallel(nets.net_g)
        if nets.net_d is not None:
            nets.net_d = DistributedDataParallel(nets.net_d)
    amp_dtype = torch.bfloat16 if t.amp == "bf16" else torch.float16
    update = Update(
        torch.autocast(device.type, dtype=amp_dtype, enabled=t.amp != "none"), nets.scaler, config.optim.grad_clip
    )
    check = partial(_first_nonfinite_anywhere, dinfo=dinfo, device=device)
    start_step, t_start = progress.step, time.perf_counter()
    progress.session_start = t_start
    bar = _progress_bar(t.steps, start_step, is_main)
    nonfinite: NonFiniteLoss | None = None
    nets.train()
    try:
        while True:  # once, plus once more after each rollback (the loader restarts there)
            rolled_back = False
            for lq, gt in _batches(data.dataset, config, start=progress.step, dinfo=dinfo, device=device):
                skip = progress.step + 1 in progress.skip_steps  # a batch that gave NaN before a rollback
                train_g = progress.step >= config.optim.d_warmup_steps or nets.net_d is None
                logs: Logs = {}
                bad = None
                if not skip:
                    logs, bad = _train_step(
                        nets,
                        lq,
                        gt,
                        objective,
                        d_loss,
                        update=update,
                        check=check,
                        train_g=train_g,
                        accumulate=t.accumulate,
                    )
                if bad is not None:  # not applied, nothing saved: roll back to latest.pt, or stop
                    nonfinite = _on_nonfinite(
                        nets, progress, logs, bad, config, run_dir=run_dir, rank=dinfo.rank, logger=logger
                    )
                    rolled_back = nonfinite is None
                    bar.n = progress.step
                    bar.refresh()
                    break
                _watch_collapse(progress, logs, t, logger)
                _finish_step(nets, progress, logs, applied=not skip)
                if progress.step % t.log_every == 0 or progress.step == t.steps:
                    _log_row(progress, logger, bar, images_per_step=config.data.batch_size * dinfo.world)
                bar.update(1)
                if _after_step(config, progress, nets, data, run_dir, dinfo, device, lpips_model, logger):
                    break
            if not rolled_back:
                break
    except BaseException as err:
        progress.stop_reason = f"error: {type(err).__name__}: {err}"
        logger.warning(f"step {progress.step}: training stopped by {progress.stop_reason}")
        raise
    finally:
        bar.close()
        if is_main:
            wall = time.perf_counter() - t_start
            _write_summary(config, progress, logger, start_step=start_step, wall=wall, device=device, world=dinfo.world)
        logger.close()
    if nonfinite is not None:
        raise nonfinite
    return run_dir


def _open_run(config: Config, resume: str | Path | None) -> tuple[Path, Checkpoint | None]:
    """The run folder and, when resuming, its latest checkpoint; a new run may not overwrite an old one."""
    if resume is not None:
        run_dir = Path(resume)
        return run_dir, Checkpoint.load(run_dir / "checkpoints" / "latest.pt")
    run_dir = Path(config.out_dir) / config.name
    if (run_dir / "checkpoints" / "latest.pt").exists():
        raise FileExistsError(
            f"run folder {run_dir} already holds a run; resume it with --resume {run_dir} or pick another "
            "name with --name=..."
        )
    return run_dir, None


def _resolve_amp(config: Config, device: torch.device) -> tuple[Config, str | None]:
    """train.amp auto -> bf16 where bf16 is native on `device`, else none; a copy of the config and a note."""
    if config.train.amp != "auto":
        return config, None
    bf16 = auto_precision(device) == torch.bfloat16
    if device.type == "cuda":
        why = "CUDA device supports bf16" if bf16 else "CUDA device without bf16: float32"
    elif device.type == "cpu":
        why = "CPU has AVX512-BF16/AMX" if bf16 else "CPU has no AVX512-BF16/AMX: float32"
    else:
        why = f"no native bf16 on {device.type}: float32"
    resolved = config.model_copy(deep=True)
    # The resolved value is what config.yaml and the checkpoints record, so a resume keeps this precision.
    resolved.train.amp = "bf16" if bf16 else "none"
    return resolved, f"train.amp auto -> {resolved.train.amp} ({why})"


def _check_settings(config: Config, device: torch.device) -> None:
    if config.train.amp == "fp16" and device.type != "cuda":
        raise ValueError("train.amp=fp16 needs a CUDA device; use bf16 on CPU")
    arch = config.discriminator.arch
    if arch is not None and arch not in DISCRIMINATORS:
        raise ValueError(f"discriminator.arch {arch!r} unknown; expected one of {sorted(DISCRIMINATORS)}")


def _load_data(config: Config, *, is_main: bool) -> _Data:
    """Every training image decoded once (in memory, or memory-mapped from a disk cache), its LR made by the
    configured degradation (MATLAB bicubic by default); patches are drawn per sample index."""
    d = config.data
    sources = gather_sources(
        d.train,
        d.val,
        data_dir=config.data_dir,
        split_ratios=d.split,
        split_seed=d.split_seed,
        group_by=d.group_by,
        partition_file=d.partition_file,
    )
    cache_dir = None
    if d.cache == "disk":
        cache_dir = Path(d.cache_dir) if d.cache_dir else Path(config.out_dir) / ".cache"
    scale = config.model.scale
    pairs, val_pairs, lowres = build_pairs(
        sources,
        scale=scale,
        seed=config.train.seed,
        min_size=d.gt_size,
        degradation=d.degradation,
        val_degradation=d.val_degradation,
        face_crop=d.face_crop,
        face_margin=d.face_margin,
        hr_size=d.hr_size,
        cache_dir=cache_dir,
    )
    dataset = PatchDataset(
        pairs,
        scale=scale,
        gt_size=d.gt_size,
        seed=config.train.seed,
        flip=d.flip,
        rot90=d.rot90,
        lowres=lowres,
    )
    if not is_main:
        val_pairs = PairSet()
    else:
        n = d.val_max_images
        if n is not None:
            val_pairs = PairSet(val_pairs.gt[:n], val_pairs.lq[:n], val_pairs.names[:n], val_pairs.skipped)
        if not val_pairs.gt:
            raise ValueError(f"no usable validation images in {d.val} (data.val): need at least one readable image")
    set_name = "split-val" if d.val == "split" else Path(d.val).name
    return _Data(dataset, val_pairs, pairs.skipped, sources.val_name, set_name)


def make_optimizer(
    params: Iterator[nn.Parameter],
    *,
    name: str = "adam",
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """Adam (weight decay added to the gradient) or AdamW (decoupled weight decay)."""
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, betas=betas, weight_decay=weight_decay)


def lr_plan(optim: OptimConfig, *, base_lr: float, total: int) -> Callable[[int], float]:
    """The optim section's LR plan for a network whose base LR is `base_lr`, over a `total`-step run."""
    return plan(
        kind=optim.scheduler,
        base_lr=base_lr,
        min_lr=optim.min_lr,
        total=total,
        milestones=optim.milestones,
        gamma=optim.gamma,
        warmup=optim.warmup_steps,
    )


def _build_networks(config: Config, device: torch.device, *, fresh: bool) -> Networks:
    """The generator (from model.init_from on a fresh stage 2), the discriminator, their optimisers and plans."""
    m, o, t = config.model, config.optim, config.train
    net_g: nn.Module = build_generator(m.arch, scale=m.scale, **m.args).to(device)
    if m.init_from and fresh:
        _init_generator(net_g, m.init_from, device)
    if m.freeze_bn and freeze_batchnorm(net_g) == 0:
        raise ValueError(f"model.freeze_bn: {m.arch} has no BatchNorm layers to freeze; expected a BatchNorm generator")
    net_d: nn.Module | None = None
    if config.discriminator.arch is not None:
        net_d = DISCRIMINATORS[config.discriminator.arch](**config.discriminator.args).to(device)
    if t.channels_last:
        net_g = net_g.to(memory_format=torch.channels_last)
        net_d = net_d.to(memory_format=torch.channels_last) if net_d is not None else None

    def optimizer(net: nn.Module, lr: float) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        opt = make_optimizer(net.parameters(), name=o.name, lr=lr, betas=o.betas, weight_decay=o.weight_decay)
        # A LambdaLR of a pure function: only the step count lives in the checkpoint, never the plan.
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_plan(o, base_lr=lr, total=t.steps))

    opt_g, sched_g = optimizer(net_g, o.lr_g)
    opt_d, sched_d = optimizer(net_d, o.lr_d) if net_d is not None else (None, None)
    ema = None
    if t.ema_decay is not None:
        ema = AveragedModel(net_g, avg_fn=ema_avg_fn(t.ema_decay), use_buffers=True)
    if t.compile:
        # In place (nn.Module.compile): the state dict keys stay the module's own, so checkpoints and exports
        # are the same with or without it. The EMA copy, validated rarely, stays eager.
        net_g.compile(backend=t.compile_backend)
        if net_d is not None:
            net_d.compile(backend=t.compile_backend)
    scaler = torch.amp.GradScaler(device.type, enabled=t.amp == "fp16")
    return Networks(net_g, opt_g, sched_g, scaler, net_d=net_d, opt_d=opt_d, sched_d=sched_d, ema=ema)


def _init_generator(net_g: nn.Module, source: str, device: torch.device) -> None:
    """Stage 2 starts from stage 1: a .safetensors export or a run checkpoint (its EMA if it has one)."""
    if source.endswith(".pt"):
        ckpt = Checkpoint.load(source)
        state = ckpt.ema_generator or ckpt.net_g
    else:
        state = load_model(source, device="cpu").state_dict()
    try:
        net_g.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"model.init_from {source}: weights do not fit model.arch/args: {err}") from err
    net_g.to(device)


def _objective(
    loss: LossConfig, *, with_d: bool, data_dir: str | None, device: torch.device
) -> tuple[Objective, AdversarialLoss]:
    """The generator's objective and the discriminator's loss, from the loss section."""
    d_loss, g_loss = ADVERSARIAL[loss.adversarial]
    percep = None
    if loss.perceptual_weight > 0:
        percep = PerceptualLoss(
            arch=loss.perceptual_arch,
            layer=loss.perceptual_layer,
            layers=loss.perceptual_layers,
            criterion=loss.perceptual_criterion,
            normalize=loss.perceptual_normalize,
            data_dir=data_dir,
        ).to(device)
    objective = Objective(
        pixel=pixel_loss(loss.pixel),
        pixel_weight=loss.pixel_weight,
        lowpass=lowpass_loss(loss.pixel, loss.lowpass_sigma) if loss.lowpass_weight > 0 else None,
        lowpass_weight=loss.lowpass_weight,
        perceptual=percep,
        perceptual_weight=loss.perceptual_weight,
        g_adversarial=g_loss if with_d else None,
        adversarial_weight=loss.adversarial_weight,
        relativistic=loss.adversarial == "ragan",
        artifact_weight=loss.artifact_weight,
    )
    return objective, d_loss


def _start_logs(
    config: Config,
    run_dir: Path,
    data: _Data,
    logger: RunLogger,
    *,
    amp_note: str | None,
    dinfo: DistInfo,
    device: torch.device,
) -> None:
    if dinfo.rank == 0:
        _remove_stale_temps(run_dir, logger)
        fs.atomic_write(run_dir / "config.yaml", dump_config(config).encode())
    logger.info(f"command: {_command_line()}")
    if amp_note:
        logger.info(amp_note)
    for path, reason in data.skipped:
        logger.warning(f"skipped training image {path}: {reason}")
    logger.info(
        f"run {run_dir}: {len(data.dataset.pairs.gt)} training images from {len(config.data.train)} source(s), "
        f"{len(data.val_pairs.gt)} validation images from {data.val_source}, device {device}, world {dinfo.world}"
    )


def _command_line() -> str:
    """How this process was started, as a shell line (`srkit train ...` for the CLI), for train.log and cards."""
    import shlex

    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("srkit", "__main__.py"):
        argv[0] = "srkit"
    return shlex.join(argv)


def _restore(
    nets: Networks, progress: _Progress, ckpt: Checkpoint, *, optim: OptimConfig, total: int, rank: int
) -> None:
    """Load a checkpoint's networks, optimisers, schedules, EMA, scaler, best scores, patience, RNG, log window."""
    nets.load(ckpt)
    # The optimisers' saved LRs follow the old plan; set this step's LR from the config (re-planned).
    for opt, base in ((nets.opt_g, optim.lr_g), (nets.opt_d, optim.lr_d)):
        for group in opt.param_groups if opt is not None else []:
            group["lr"] = base * lr_plan(optim, base_lr=base, total=total)(ckpt.step)
    progress.step = progress.last_saved = ckpt.step
    progress.best = dict(ckpt.best)
    progress.evals_without_gain = ckpt.evals_without_gain
    progress.window = LogWindow.from_state(ckpt.log_window)
    progress.collapse_run = 0
    progress.wall_before = ckpt.wall_seconds
    set_rng_state(ckpt.rng_for(rank))


def _batches(
    dataset: PatchDataset, config: Config, *, start: int, dinfo: DistInfo, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's (lq, gt) batches for steps start+1 .. train.steps, on `device` (NHWC with channels_last)."""
    d, channels_last = config.data, config.train.channels_last
    sampler = IndexRange(start, config.train.steps, batch_size=d.batch_size, rank=dinfo.rank, world=dinfo.world)
    loader = DataLoader(
        dataset,
        batch_size=d.batch_size,
        sampler=sampler,
        num_workers=d.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=d.workers > 0,
    )
    for lq, gt in loader:
        lq, gt = lq.to(device, non_blocking=True), gt.to(device, non_blocking=True)
        if channels_last:
            lq, gt = lq.contiguous(memory_format=torch.channels_last), gt.contiguous(memory_format=torch.channels_last)
        yield lq, gt


def _first_nonfinite_anywhere(logs: Logs, *, dinfo: DistInfo, device: torch.device) -> str | None:
    """The first loss term of this step that is NaN/inf on any rank, from the .item() values logged anyway."""
    if dinfo.world == 1:
        return first_nonfinite(logs)
    # Every rank must skip the same optimizer step, or the others would wait in DDP's gradient all-reduce.
    bad = [k in logs and first_nonfinite({k: logs[k]}) is not None for k in LOSS_TERMS]
    flags = torch.tensor(bad, dtype=torch.int32, device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return next((k for k, flag in zip(LOSS_TERMS, flags.tolist(), strict=True) if flag), None)


def _train_step(
    nets: Networks,
    lq: torch.Tensor,
    gt: torch.Tensor,
    objective: Objective,
    d_loss: AdversarialLoss,
    *,
    update: Update,
    check: FiniteCheck,
    train_g: bool,
    accumulate: int = 1,
) -> tuple[Logs, str | None]:
    """The generator step (or, in D warm-up, fakes only), then the discriminator step on the same batch."""
    if train_g:
        sr, logs, bad = generator_step(
            nets.net_g,
            nets.opt_g,
            lq,
            gt,
            objective=objective,
            net_d=nets.net_d,
            ema=nets.ema.module if nets.ema is not None else None,
            update=update,
            check=check,
            accumulate=accumulate,
        )
        if bad is None and nets.ema is not None:
            nets.ema.update_parameters(unwrap(nets.net_g))
    else:
        sr, logs, bad = generate_fakes(nets.net_g, lq, update=update), {}, None
    if bad is None and nets.net_d is not None and nets.opt_d is not None:
        d_logs, bad = discriminator_step(
            nets.net_d, nets.opt_d, sr, gt, d_loss=d_loss, update=update, check=check, accumulate=accumulate
        )
        logs.update(d_logs)
    return logs, bad


def _on_nonfinite(
    nets: Networks,
    progress: _Progress,
    logs: Logs,
    bad: str,
    config: Config,
    *,
    run_dir: Path,
    rank: int,
    logger: RunLogger,
) -> NonFiniteLoss | None:
    """Roll back to latest.pt when allowed (None: go on from there), else the error that stops the run."""
    t = config.train
    what = f"step {progress.step + 1}: loss term {bad} is " + (
        f"{logs[bad]}" if bad in logs else "not finite (on another rank)"
    )
    if t.on_nonfinite == "rollback" and progress.last_saved is not None and progress.rollbacks < t.max_rollbacks:
        progress.rollbacks += 1
        progress.skip_steps.add(progress.step + 1)
        logger.warning(
            f"{what}; rolling back to latest.pt at step {progress.last_saved} (rollback {progress.rollbacks} of at "
            f"most {t.max_rollbacks}); step {progress.step + 1}'s batch will be skipped"
        )
        _restore(
            nets,
            progress,
            Checkpoint.load(run_dir / "checkpoints" / "latest.pt"),
            optim=config.optim,
            total=t.steps,
            rank=rank,
        )
        progress.window.started = time.perf_counter()
        logger.rewind(progress.step)
        return None
    kept = (
        f"latest checkpoint at step {progress.last_saved} kept"
        if progress.last_saved is not None
        else "no checkpoint was written yet"
    )
    after = f" after {progress.rollbacks} rollback(s)" if progress.rollbacks else ""
    progress.stop_reason = f"{what}; training stopped{after}, {kept}"
    logger.warning(progress.stop_reason, stderr=False)  # the raised NonFiniteLoss carries it to the user
    return NonFiniteLoss(progress.stop_reason)


def _watch_collapse(progress: _Progress, logs: Logs, t: TrainConfig, logger: RunLogger) -> None:
    """Warn once when D has called every fake fake (mean D(G(z)) < threshold) for d_collapse_steps running."""
    if "d_fake" not in logs:  # no discriminator step this time
        return
    progress.collapse_run = progress.collapse_run + 1 if logs["d_fake"] < t.d_collapse_threshold else 0
    if progress.collapse_run == t.d_collapse_steps:
        logger.warning(
            f"step {progress.step + 1}: the discriminator is winning outright: mean D(G(z)) < "
            f"{t.d_collapse_threshold} for {t.d_collapse_steps} steps. The generator gets little adversarial "
            "signal; consider a lower optim.lr_d, a higher loss.adversarial_weight, or loss.adversarial=ragan."
        )


def _finish_step(nets: Networks, progress: _Progress, logs: Logs, *, applied: bool) -> None:
    """Close step `progress.step`: scaler update, the LRs it trained with, the schedules, the log window."""
    if applied:  # GradScaler.update needs an optimizer step since the last one
        nets.scaler.update()
    logs.update(nets.lrs())  # logged before the schedules move on
    nets.step_schedules()
    progress.step += 1
    progress.window.add(logs)


def _log_row(progress: _Progress, logger: RunLogger, bar: Any, *, images_per_step: int) -> None:
    row = progress.window.row(images_per_step=images_per_step)
    logger.train_row(progress.step, row)
    shown = ("loss_g", "loss_d", "d_real", "d_fake", "lr_g", "img_per_s")
    bar.set_postfix({k: f"{row[k]:.4g}" for k in shown if k in row}, refresh=False)
    progress.window = LogWindow()


def _after_step(
    config: Config,
    progress: _Progress,
    nets: Networks,
    data: _Data,
    run_dir: Path,
    dinfo: DistInfo,
    device: torch.device,
    lpips_model: LPIPS | None,
    logger: RunLogger,
) -> bool:
    """Validate, export milestones, save latest.pt at the configured cadence; True to stop early."""
    t, step, is_main = config.train, progress.step, dinfo.rank == 0
    ckpt_dir = run_dir / "checkpoints"
    is_val = step % t.val_every == 0 or step == t.steps
    if is_val and is_main:
        result = validate(
            nets.generator,
            data.val_pairs,
            scale=config.model.scale,
            device=device,
            lpips_model=lpips_model,
            set_name=data.set_name,
        )
        record_validation(step, result, set_name=data.set_name, run_dir=run_dir, logger=logger)
        gained = update_best(progress.best, result.summary, step)
        for metric in gained:
            value = result.summary.mean(metric)
            extra = {"kind": f"best_{metric}", metric: f"{value:.6f}", "val_set": data.set_name}
            _export(nets, config, ckpt_dir / f"best_{metric}.safetensors", step, extra)
        logger.write_json("best.json", progress.best)
        if t.early_stop_metric is not None:
            progress.evals_without_gain = 0 if t.early_stop_metric in gained else progress.evals_without_gain + 1
    if step % t.save_every == 0 and is_main:
        _export(nets, config, ckpt_dir / f"generator_step{step:07d}.safetensors", step, {"kind": "milestone"})
        if t.keep_last is not None:
            _prune_milestones(ckpt_dir, t.keep_last, logger)
    stop_now = t.early_stop_metric is not None and progress.evals_without_gain >= t.patience
    if dinfo.world > 1:
        flag = torch.tensor([int(stop_now)], device=device)
        dist.broadcast(flag, src=0)
        stop_now = bool(flag.item())
    if is_val or step % t.save_every == 0 or step == t.steps or stop_now:
        rngs = _gather_rng(dinfo)
        if is_main:
            ckpt = Checkpoint(
                step=step,
                config=config.model_dump(mode="json"),
                **nets.state(),
                best=progress.best,
                evals_without_gain=progress.evals_without_gain,
                rng=rngs,
                log_window=progress.window.state(),
                wall_seconds=progress.wall_seconds,
            )
            ckpt.save(ckpt_dir / "latest.pt")
        progress.last_saved = step
    if stop_now:
        progress.stop_reason = f"early stop: no {t.early_stop_metric} gain in {t.patience} validations"
        logger.info(f"step {step}: {progress.stop_reason}")
    return stop_now


def _export(nets: Networks, config: Config, path: Path, step: int, extra: dict[str, str]) -> None:
    """The (EMA) generator as .safetensors with what it is and where it comes from."""
    arch_kwargs = {"scale": config.model.scale, **config.model.args}
    meta = {"step": str(step), "run": config.name, **extra}
    save_weights(nets.generator, path, arch=config.model.arch, arch_kwargs=arch_kwargs, meta=meta)


def _gather_rng(dinfo: DistInfo) -> list[dict[str, Any]]:
    state = rng_state()
    if dinfo.world == 1:
        return [state]
    out: list[Any] = [None] * dinfo.world
    dist.all_gather_object(out, state)
    return out


def _write_summary(
    config: Config,
    progress: _Progress,
    logger: RunLogger,
    *,
    start_step: int,
    wall: float,
    device: torch.device,
    world: int,
) -> None:
    logger.write_json(
        "summary.json",
        {
            "run": config.name,
            "step": progress.step,
            "steps_this_session": progress.step - start_step,
            "wall_seconds_this_session": wall,
            "wall_seconds_total": progress.wall_before + wall,
            "stop_reason": progress.stop_reason,
            "device": str(device),
            "hardware": _hardware(device),
            "world_size": world,
            "best": progress.best,
            "amp": config.train.amp,
            "rollbacks": progress.rollbacks,
            "memory": memory_report(device),
        },
    )


def _hardware(device: torch.device) -> str:
    """What trained the run, for tables and cards: the GPU's name, or the CPU with its speed-relevant flags."""
    from srkit.device import cpu_description

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{cpu_description()}, torch {torch.__version__}"


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, dynamic_ncols=True, unit="step", mininterval=1.0)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def _remove_stale_temps(run_dir: Path, logger: RunLogger) -> None:
    """Delete temporary files that an interrupted fs.atomic_write left behind (.NAME.tmpXXXXXXXX)."""
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "val", run_dir / "samples"):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob(".*.tmp*")):
            if path.is_symlink() or not path.is_file():
                continue
            size = path.stat().st_size
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            logger.warning(f"removed stale temporary file {path} ({_size(size)}), left by an interrupted write")


def _prune_milestones(ckpt_dir: Path, keep: int, logger: RunLogger) -> None:
    """Keep the newest `keep` milestone exports; best_* and latest.pt are never touched."""
    found = sorted((int(m.group(1)), path) for path in ckpt_dir.iterdir() if (m := _MILESTONE.fullmatch(path.name)))
    for _, path in found[:-keep]:
        size = path.stat().st_size
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        logger.info(f"removed milestone {path.name} ({_size(size)}): train.keep_last={keep}")


@contextlib.contextmanager
def _distributed(dinfo: DistInfo, device: torch.device) -> Iterator[None]:
    if dinfo.world == 1:
        yield
        return
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()
