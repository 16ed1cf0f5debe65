"""The training loop: one function, `fit`, for stage 1 (generator alone) and stage 2 (GAN fine-tuning).

A step draws batch `step` (see data.datasets: batches are a pure function of seed and step), updates
the generator, then the discriminator. Validation, checkpoints and logs happen on rank 0 at the
configured cadence. Resuming restores every state, so the losses after a resume equal those of an
uninterrupted run. A NaN/inf loss term is never applied or saved: the run stops (train.on_nonfinite=stop)
or goes back to latest.pt (rollback) and replays from there without that step's batch.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader

from srkit import io
from srkit.archs import DISCRIMINATORS
from srkit.config import Config, dump_config
from srkit.data.datasets import IndexRange, PairSet, PatchDataset
from srkit.data.pipeline import build_pairs, gather_sources
from srkit.device import auto_precision, pick_device
from srkit.losses import ADVERSARIAL, PerceptualLoss, pixel_loss
from srkit.metrics import LPIPS
from srkit.models import build_generator, load_model, save_weights
from srkit.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from srkit.train.logger import RunLogger, memory_report
from srkit.train.validate import validate

METRIC_BETTER = {"psnr": max, "ssim": max, "lpips": min}
LOSS_TERMS = ("l_pix", "l_percep", "l_adv", "loss_g", "loss_d")  # in the order a step computes them
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


def unwrap(net: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel wrapper."""
    return net.module if isinstance(net, DistributedDataParallel) else net


def ema_avg_fn(decay: float) -> Any:
    """EMA update with warm-up: the decay ramps (1 + n) / (10 + n) up to `decay`, so early averages are not
    dominated by the random initial weights (with a fixed 0.999 they are for the first thousands of steps)."""

    def avg(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        n = float(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        return averaged * d + current * (1 - d)

    return avg


def lr_factor(step: int, config: Config, base_lr: float) -> float:
    """The LR multiplier at `step`, in closed form from the config (so extending a run re-plans it)."""
    # A linear warm-up lets a fresh optimizer (a fine-tune from init_from) learn its gradient scales
    # before it takes full-size steps; Adam's first steps are about lr per weight whatever the gradient.
    n = config.optim.warmup_steps
    warm = min(1.0, (step + 1) / n) if n > 0 else 1.0
    return warm * _schedule_factor(step, config, base_lr)


def _schedule_factor(step: int, config: Config, base_lr: float) -> float:
    o = config.optim
    if o.scheduler == "multistep":
        return float(o.gamma ** sum(step >= m for m in o.milestones))
    if o.scheduler == "cosine":
        floor = min(o.min_lr / base_lr, 1.0) if base_lr > 0 else 0.0
        progress = min(step / config.train.steps, 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def _make_scheduler(opt: torch.optim.Optimizer, config: Config, base_lr: float) -> torch.optim.lr_scheduler.LambdaLR:
    # A LambdaLR of a pure function: only the step count lives in the checkpoint, never the plan.
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, config, base_lr))


def _init_generator(net_g: nn.Module, source: str, device: torch.device) -> None:
    """Stage 2 starts from stage 1: a .safetensors export or a run checkpoint (its EMA if it has one)."""
    if source.endswith(".pt"):
        ckpt = load_checkpoint(source)
        state = ckpt.get("ema_generator") or ckpt["net_g"]
    else:
        state = load_model(source, device="cpu").state_dict()
    try:
        net_g.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"model.init_from {source}: weights do not fit model.arch/args: {err}") from err
    net_g.to(device)


def make_optimizer(params: Iterator[nn.Parameter], config: Config, lr: float) -> torch.optim.Optimizer:
    """The configured optimizer: Adam (weight decay added to the gradient) or AdamW (decoupled weight decay)."""
    o = config.optim
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, betas=o.betas, weight_decay=o.weight_decay)


def _optimizer_step(
    loss: torch.Tensor,
    opt: torch.optim.Optimizer,
    net: nn.Module,
    scaler: torch.amp.GradScaler,
    grad_clip: float | None,
) -> None:
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(opt)  # clip the true gradients, not the loss-scaled ones
        nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    scaler.step(opt)


def _loader(dataset: PatchDataset, start: int, stop: int, config: Config, dinfo: DistInfo, device: torch.device) -> Any:
    sampler = IndexRange(start, stop, batch_size=config.data.batch_size, rank=dinfo.rank, world=dinfo.world)
    return DataLoader(
        dataset,
        batch_size=config.data.batch_size,
        sampler=sampler,
        num_workers=config.data.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=config.data.workers > 0,
    )


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, dynamic_ncols=True, unit="step", mininterval=1.0)


def _new_run_dir(config: Config) -> Path:
    run_dir = Path(config.out_dir) / config.name
    if (run_dir / "checkpoints" / "latest.pt").exists():
        raise FileExistsError(
            f"run folder {run_dir} already holds a run; resume it with --resume {run_dir} or pick another "
            "name with --name=..."
        )
    return run_dir


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


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def _remove_stale_temps(run_dir: Path, logger: RunLogger) -> None:
    """Delete temporary files that an interrupted io.atomic_write left behind (.NAME.tmpXXXXXXXX)."""
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


def _first_nonfinite(logs: dict[str, float], dinfo: DistInfo, device: torch.device) -> str | None:
    """The first loss term of this step that is NaN/inf on any rank, from the .item() values logged anyway."""
    bad = [k in logs and not math.isfinite(logs[k]) for k in LOSS_TERMS]
    if dinfo.world > 1:
        # Every rank must skip the same optimizer step, or the others would wait in DDP's gradient all-reduce.
        flags = torch.tensor(bad, dtype=torch.int32, device=device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        bad = [bool(f) for f in flags.tolist()]
    return next((k for k, is_bad in zip(LOSS_TERMS, bad, strict=True) if is_bad), None)


def _log_window(state: dict[str, Any] | None) -> tuple[dict[str, float], dict[str, int], int]:
    """The partly filled log window a checkpoint saved (sums, counts, steps), empty for a fresh run."""
    saved = state.get("log_window", {}) if state else {}
    return dict(saved.get("sums", {})), dict(saved.get("counts", {})), int(saved.get("n", 0))


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
    ckpt: dict[str, Any] | None = None
    if resume is not None:
        run_dir = Path(resume)
        ckpt = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    else:
        run_dir = _new_run_dir(config)
    is_main = dinfo.rank == 0
    start_step = int(ckpt["step"]) if ckpt else 0
    config, amp_note = _resolve_amp(config, device)
    cfg_dump = config.model_dump(mode="json")
    amp = config.train.amp
    amp_dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("train.amp=fp16 needs a CUDA device; use bf16 on CPU")
    if config.discriminator.arch is not None and config.discriminator.arch not in DISCRIMINATORS:
        raise ValueError(
            f"discriminator.arch {config.discriminator.arch!r} unknown; expected one of {sorted(DISCRIMINATORS)}"
        )
    torch.manual_seed(config.train.seed + dinfo.rank)
    scale = config.model.scale

    # Data: every training image decoded once (in memory, or memory-mapped from a disk cache); LR made
    # by the configured degradation (MATLAB bicubic by default); patches drawn per sample index.
    sources = gather_sources(config.data, config.data_dir)
    cache_dir = None
    if config.data.cache == "disk":
        cache_dir = Path(config.data.cache_dir) if config.data.cache_dir else Path(config.out_dir) / ".cache"
    pairs, val_pairs, per_sample_steps = build_pairs(
        config.data, sources, scale=scale, seed=config.train.seed, cache_dir=cache_dir
    )
    dataset = PatchDataset(
        pairs,
        scale=scale,
        gt_size=config.data.gt_size,
        seed=config.train.seed,
        flip=config.data.flip,
        rot90=config.data.rot90,
        degrade_steps=per_sample_steps,
    )
    val_dir = sources.val_name
    if not is_main:
        val_pairs = PairSet()
    else:
        n = config.data.val_max_images
        if n is not None:
            val_pairs = PairSet(val_pairs.gt[:n], val_pairs.lq[:n], val_pairs.names[:n], val_pairs.skipped)
        if not val_pairs.gt:
            raise ValueError(
                f"no usable validation images in {config.data.val} (data.val): need at least one readable image"
            )

    # Networks, losses, optimisers.
    net_g: nn.Module = build_generator(config.model.arch, scale=scale, **config.model.args).to(device)
    if config.model.init_from and ckpt is None:
        _init_generator(net_g, config.model.init_from, device)
    net_d: nn.Module | None = None
    if config.discriminator.arch is not None:
        net_d = DISCRIMINATORS[config.discriminator.arch](**config.discriminator.args).to(device)
    if config.train.channels_last:
        net_g = net_g.to(memory_format=torch.channels_last)
        if net_d is not None:
            net_d = net_d.to(memory_format=torch.channels_last)
    loss_cfg = config.loss
    pix_fn = pixel_loss(loss_cfg.pixel)
    percep = None
    if loss_cfg.perceptual_weight > 0:
        percep = PerceptualLoss(
            arch=loss_cfg.perceptual_arch,
            layer=loss_cfg.perceptual_layer,
            criterion=loss_cfg.perceptual_criterion,
            data_dir=config.data_dir,
        ).to(device)
    d_loss_fn, g_loss_fn = ADVERSARIAL[loss_cfg.adversarial]
    use_adv = net_d is not None and loss_cfg.adversarial_weight > 0
    o = config.optim
    opt_g = make_optimizer(net_g.parameters(), config, o.lr_g)
    sched_g = _make_scheduler(opt_g, config, o.lr_g)
    opt_d = sched_d = None
    if net_d is not None:
        opt_d = make_optimizer(net_d.parameters(), config, o.lr_d)
        sched_d = _make_scheduler(opt_d, config, o.lr_d)
    ema = None
    if config.train.ema_decay is not None:
        ema = AveragedModel(net_g, avg_fn=ema_avg_fn(config.train.ema_decay), use_buffers=True)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    lpips_model = None
    if is_main and config.train.lpips_net != "none":
        lpips_model = LPIPS(config.train.lpips_net, data_dir=config.data_dir).to(device)

    logger = RunLogger(
        run_dir,
        enabled=is_main,
        config=cfg_dump,
        tensorboard=config.train.tensorboard,
        wandb=config.train.wandb,
        wandb_mode=config.train.wandb_mode,
        resume_step=start_step if ckpt else None,
    )
    if is_main:
        _remove_stale_temps(run_dir, logger)
        io.atomic_write(run_dir / "config.yaml", dump_config(config).encode())
    if amp_note:
        logger.info(amp_note)
    for path, reason in pairs.skipped:
        logger.warning(f"skipped training image {path}: {reason}")
    logger.info(
        f"run {run_dir}: {len(pairs.gt)} training images from {len(config.data.train)} source(s), "
        f"{len(val_pairs.gt)} validation images from {val_dir}, device {device}, world {dinfo.world}"
    )

    best: dict[str, dict[str, float]] = {}
    evals_without_gain = 0

    def restore(state: dict[str, Any]) -> int:
        """Load a checkpoint's networks, optimisers, schedules, EMA, scaler, best scores and RNG; its patience."""
        unwrap(net_g).load_state_dict(state["net_g"])
        opt_g.load_state_dict(state["opt_g"])
        sched_g.load_state_dict(state["sched_g"])
        if net_d is not None and opt_d is not None and sched_d is not None:
            unwrap(net_d).load_state_dict(state["net_d"])
            opt_d.load_state_dict(state["opt_d"])
            sched_d.load_state_dict(state["sched_d"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        scaler.load_state_dict(state["scaler"])
        # The optimisers' saved LRs follow the old plan; set this step's LR from the config (re-planned).
        at = int(state["step"])
        for opt, base in ((opt_g, o.lr_g), (opt_d, o.lr_d)):
            for group in opt.param_groups if opt is not None else []:
                group["lr"] = base * lr_factor(at, config, base)
        best.clear()
        best.update(state.get("best", {}))
        rngs = state["rng"]
        set_rng_state(rngs[dinfo.rank] if dinfo.rank < len(rngs) else rngs[0])
        return int(state.get("evals_without_gain", 0))

    if ckpt is not None:
        evals_without_gain = restore(ckpt)
        logger.info(f"resumed from {run_dir / 'checkpoints' / 'latest.pt'} at step {start_step}")
    if dinfo.world > 1:
        net_g = DistributedDataParallel(net_g)
        if net_d is not None:
            net_d = DistributedDataParallel(net_d)

    def gather_rng() -> list[dict[str, Any]]:
        state = rng_state()
        if dinfo.world == 1:
            return [state]
        out: list[Any] = [None] * dinfo.world
        dist.all_gather_object(out, state)
        return out

    def state_dict(step: int) -> dict[str, Any]:
        return {
            "step": step,
            "config": cfg_dump,
            "net_g": unwrap(net_g).state_dict(),
            "opt_g": opt_g.state_dict(),
            "sched_g": sched_g.state_dict(),
            "net_d": unwrap(net_d).state_dict() if net_d is not None else None,
            "opt_d": opt_d.state_dict() if opt_d is not None else None,
            "sched_d": sched_d.state_dict() if sched_d is not None else None,
            "ema": ema.state_dict() if ema is not None else None,
            "ema_generator": ema.module.state_dict() if ema is not None else None,
            "scaler": scaler.state_dict(),
            "best": best,
            "evals_without_gain": evals_without_gain,
        }

    def export_generator(path: Path, step: int, extra: dict[str, str]) -> None:
        model = ema.module if ema is not None else unwrap(net_g)
        arch_kwargs = {"scale": scale, **config.model.args}
        meta = {"step": str(step), "run": config.name, **extra}
        save_weights(model, path, arch=config.model.arch, arch_kwargs=arch_kwargs, meta=meta)

    ckpt_dir = run_dir / "checkpoints"
    total = config.train.steps
    bar = _progress(total, start_step, is_main)
    # A partly filled log window is part of the state, so rows after a resume equal an uninterrupted run's.
    window, counts, window_n = _log_window(ckpt)
    collapse_run = 0
    t_window = time.perf_counter()
    t_start = time.perf_counter()
    step = start_step
    stop_reason = "finished"
    last_saved = start_step if ckpt else None  # the step latest.pt holds
    rollbacks = 0
    # Steps whose batch gave a non-finite loss before a rollback: replayed without an update, as the same
    # state and batch would (deterministically) give the same NaN again.
    skip_steps: set[int] = set()
    nonfinite: NonFiniteLoss | None = None
    autocast = torch.autocast(device.type, dtype=amp_dtype, enabled=amp != "none")
    net_g.train()
    if net_d is not None:
        net_d.train()
    try:
        while True:  # once, plus once more after each rollback (the loader restarts at the restored step)
            rolled_back = False
            loader = _loader(dataset, step, total, config, dinfo, device)
            for lq, gt in loader:
                lq = lq.to(device, non_blocking=True)
                gt = gt.to(device, non_blocking=True)
                if config.train.channels_last:
                    lq, gt = (
                        lq.contiguous(memory_format=torch.channels_last),
                        gt.contiguous(memory_format=torch.channels_last),
                    )
                logs: dict[str, float] = {}
                train_g = step >= o.d_warmup_steps or net_d is None
                skip = step + 1 in skip_steps
                bad: str | None = None

                # Generator step. D is a fixed judge here: its weights get no gradients (cheaper, and G's
                # loss must never move D). The unwrapped D is used so DDP does not wait for D's gradients.
                if skip:
                    pass
                elif train_g:
                    with autocast:
                        sr = net_g(lq)
                        loss_g = torch.zeros((), device=device)
                        if loss_cfg.pixel_weight > 0:  # 0: no content term at all (the vanilla-GAN baseline)
                            l_pix = loss_cfg.pixel_weight * pix_fn(sr.float(), gt)
                            loss_g = loss_g + l_pix
                            logs["l_pix"] = l_pix.item()
                        if percep is not None:
                            l_percep = loss_cfg.perceptual_weight * percep(sr, gt)
                            loss_g = loss_g + l_percep
                            logs["l_percep"] = l_percep.item()
                        if use_adv and net_d is not None:
                            d_plain = unwrap(net_d)
                            d_plain.requires_grad_(False)
                            fake_logits = d_plain(sr).float()
                            # Only the relativistic loss compares with real images; no graph needed for them.
                            real_logits = (
                                d_plain(gt).float().detach() if loss_cfg.adversarial == "ragan" else fake_logits
                            )
                            l_adv = loss_cfg.adversarial_weight * g_loss_fn(real_logits, fake_logits)
                            loss_g = loss_g + l_adv
                            logs["l_adv"] = l_adv.item()
                            d_plain.requires_grad_(True)
                    logs["loss_g"] = loss_g.item()
                    # The terms' .item()s above are the host syncs logging needs anyway: checked, no new sync.
                    bad = _first_nonfinite(logs, dinfo, device)
                    if bad is None:
                        _optimizer_step(loss_g, opt_g, net_g, scaler, o.grad_clip)
                        if ema is not None:
                            ema.update_parameters(unwrap(net_g))
                else:
                    # D warm-up: G is only a source of fakes. Eval mode so its BatchNorm statistics stay put.
                    unwrap(net_g).eval()
                    with torch.no_grad(), autocast:
                        sr = net_g(lq)
                    unwrap(net_g).train()

                # Discriminator step on the same batch. sr.detach(): D's loss must not reach G.
                if not skip and bad is None and net_d is not None and opt_d is not None:
                    with autocast:
                        real_logits = net_d(gt).float()
                        fake_logits = net_d(sr.detach()).float()
                        loss_d = d_loss_fn(real_logits, fake_logits)
                    logs["loss_d"] = loss_d.item()
                    bad = _first_nonfinite(logs, dinfo, device)
                    if bad is None:
                        _optimizer_step(loss_d, opt_d, net_d, scaler, o.grad_clip)
                        d_fake = torch.sigmoid(fake_logits).mean().item()
                        logs.update(d_real=torch.sigmoid(real_logits).mean().item(), d_fake=d_fake)
                        collapse_run = collapse_run + 1 if d_fake < config.train.d_collapse_threshold else 0
                        if collapse_run == config.train.d_collapse_steps:
                            logger.warning(
                                f"step {step + 1}: the discriminator is winning outright: mean D(G(z)) < "
                                f"{config.train.d_collapse_threshold} for {collapse_run} steps. The generator gets "
                                "little adversarial signal; consider a lower optim.lr_d, a higher "
                                "loss.adversarial_weight, or loss.adversarial=ragan."
                            )

                if bad is not None:
                    # The bad step is not applied (no optimizer step for the network whose loss it is) and
                    # nothing of it is saved: latest.pt still holds the last good state.
                    value = f"{logs[bad]}" if bad in logs else "not finite (on another rank)"
                    what = f"step {step + 1}: loss term {bad} is {value}"
                    can_roll = config.train.on_nonfinite == "rollback" and last_saved is not None
                    if can_roll and rollbacks < config.train.max_rollbacks:
                        rollbacks += 1
                        skip_steps.add(step + 1)
                        logger.warning(
                            f"{what}; rolling back to latest.pt at step {last_saved} (rollback {rollbacks} of at "
                            f"most {config.train.max_rollbacks}); step {step + 1}'s batch will be skipped"
                        )
                        state = load_checkpoint(ckpt_dir / "latest.pt")
                        evals_without_gain = restore(state)
                        step = int(state["step"])
                        window, counts, window_n = _log_window(state)
                        collapse_run, t_window = 0, time.perf_counter()
                        logger.rewind(step)
                        bar.n = step
                        bar.refresh()
                        rolled_back = True
                        break
                    kept = (
                        f"latest checkpoint at step {last_saved} kept"
                        if last_saved is not None
                        else "no checkpoint was written yet"
                    )
                    after = f" after {rollbacks} rollback(s)" if rollbacks else ""
                    stop_reason = f"{what}; training stopped{after}, {kept}"
                    nonfinite = NonFiniteLoss(stop_reason)
                    logger.warning(stop_reason, stderr=False)  # the raised NonFiniteLoss carries it to the user
                    break

                if not skip:  # GradScaler.update needs an optimizer step since the last one
                    scaler.update()
                # The LRs this step trained with (logged before the schedule moves on).
                logs["lr_g"] = opt_g.param_groups[0]["lr"]
                if opt_d is not None:
                    logs["lr_d"] = opt_d.param_groups[0]["lr"]
                with warnings.catch_warnings():
                    # During D warm-up (and a skipped step) the schedules advance without an optimizer step.
                    warnings.filterwarnings(
                        "ignore", message=".*lr_scheduler.step.*optimizer.step", category=UserWarning
                    )
                    sched_g.step()
                    if sched_d is not None:
                        sched_d.step()
                step += 1

                for k, v in logs.items():
                    window[k] = window.get(k, 0.0) + v
                    counts[k] = counts.get(k, 0) + 1
                window_n += 1
                if step % config.train.log_every == 0 or step == total:
                    elapsed = time.perf_counter() - t_window
                    # Each value is averaged over the steps that produced it (G losses skip D warm-up steps).
                    row = {k: v / counts[k] for k, v in window.items()}
                    row["sec_per_step"] = elapsed / window_n
                    row["img_per_s"] = window_n * config.data.batch_size * dinfo.world / elapsed
                    logger.train_row(step, row)
                    bar.set_postfix(
                        {
                            k: f"{row[k]:.4g}"
                            for k in ("loss_g", "loss_d", "d_real", "d_fake", "lr_g", "img_per_s")
                            if k in row
                        },
                        refresh=False,
                    )
                    window, counts, window_n, t_window = {}, {}, 0, time.perf_counter()
                bar.update(1)

                is_val = step % config.train.val_every == 0 or step == total
                if is_val and is_main:
                    evals_without_gain = _validate_and_keep_best(
                        step,
                        net_g,
                        ema,
                        val_pairs,
                        config,
                        device,
                        lpips_model,
                        logger,
                        best,
                        evals_without_gain,
                        export_generator,
                        run_dir,
                    )
                if step % config.train.save_every == 0 and is_main:
                    export_generator(ckpt_dir / f"generator_step{step:07d}.safetensors", step, {"kind": "milestone"})
                    if config.train.keep_last is not None:
                        _prune_milestones(ckpt_dir, config.train.keep_last, logger)
                stop_now = config.train.early_stop_metric is not None and evals_without_gain >= config.train.patience
                if dinfo.world > 1:
                    flag = torch.tensor([int(stop_now)], device=device)
                    dist.broadcast(flag, src=0)
                    stop_now = bool(flag.item())
                if is_val or step % config.train.save_every == 0 or step == total or stop_now:
                    rngs = gather_rng()
                    if is_main:
                        log_window = {"sums": window, "counts": counts, "n": window_n}
                        save_checkpoint(
                            ckpt_dir / "latest.pt", {**state_dict(step), "rng": rngs, "log_window": log_window}
                        )
                    last_saved = step
                if stop_now:
                    stop_reason = (
                        f"early stop: no {config.train.early_stop_metric} gain in {config.train.patience} validations"
                    )
                    logger.info(f"step {step}: {stop_reason}")
                    break
            if not rolled_back:
                break
    except BaseException as err:
        stop_reason = f"error: {type(err).__name__}: {err}"
        logger.warning(f"step {step}: training stopped by {stop_reason}")
        raise
    finally:
        bar.close()
        wall = time.perf_counter() - t_start
        if is_main:
            logger.write_json(
                "summary.json",
                {
                    "run": config.name,
                    "step": step,
                    "steps_this_session": step - start_step,
                    "wall_seconds_this_session": wall,
                    "stop_reason": stop_reason,
                    "device": str(device),
                    "world_size": dinfo.world,
                    "best": best,
                    "amp": config.train.amp,
                    "rollbacks": rollbacks,
                    "memory": memory_report(device),
                },
            )
        logger.close()
    if nonfinite is not None:
        raise nonfinite
    return run_dir


def _validate_and_keep_best(
    step: int,
    net_g: nn.Module,
    ema: AveragedModel | None,
    val_pairs: PairSet,
    config: Config,
    device: torch.device,
    lpips_model: LPIPS | None,
    logger: RunLogger,
    best: dict[str, dict[str, float]],
    evals_without_gain: int,
    export_generator: Any,
    run_dir: Path,
) -> int:
    """Score the (EMA) generator; write per-image CSV/JSON, the grid, best_* weights. Returns the patience count."""
    from srkit.evaluate import write_rows_csv

    model = ema.module if ema is not None else unwrap(net_g)
    set_name = "split-val" if config.data.val == "split" else Path(config.data.val).name
    result = validate(
        model, val_pairs, scale=config.model.scale, device=device, lpips_model=lpips_model, set_name=set_name
    )
    s = result.summary
    logger.val_row(step, {k: v for k, v in s.items() if k != "images"})
    val_dir = run_dir / "val"
    write_rows_csv(val_dir / f"step{step:07d}.csv", result.rows)
    logger.write_json(f"val/step{step:07d}.json", {"step": step, "set": set_name, **s})
    io.write_image(run_dir / "samples" / f"step{step:07d}.png", result.grid)
    logger.image(step, "val/samples", result.grid)
    parts = [f"{m} {s[f'{m}_mean']:.4f}" for m in ("psnr", "ssim", "lpips") if s.get(f"{m}_mean") is not None]
    logger.info(f"step {step} val {set_name}: " + ", ".join(parts))
    gained = False
    for metric, better in METRIC_BETTER.items():
        value = s.get(f"{metric}_mean")
        if value is None:
            continue
        old = best.get(metric)
        if old is None or better(float(value), old["value"]) != old["value"]:
            best[metric] = {"value": float(value), "step": step}
            export_generator(
                run_dir / "checkpoints" / f"best_{metric}.safetensors",
                step,
                {"kind": f"best_{metric}", metric: f"{value:.6f}", "val_set": set_name},
            )
            if metric == config.train.early_stop_metric:
                gained = True
    logger.write_json("best.json", best)
    return 0 if gained or config.train.early_stop_metric is None else evals_without_gain + 1
