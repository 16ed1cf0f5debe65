"""One training step, written out once: the generator update, then the discriminator update on the same batch.

Each half is callable alone (benchmarks/train_throughput.py times them). The GAN variants differ only in
the loss pair passed in (losses.ADVERSARIAL), never in this code. A loss term that is NaN/inf is caught
before its optimizer step, so a bad batch never reaches the weights.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from srkit.losses import artifact_loss

LOSS_TERMS = ("l_pix", "l_low", "l_percep", "l_adv", "l_artif", "loss_g", "loss_d")  # in the order a step computes them

Logs = dict[str, float]
# Given a step's logged loss terms, the first that is not finite (None: all are). The DDP version asks
# every rank, so all of them skip the same optimizer step.
FiniteCheck = Callable[[Logs], "str | None"]
AdversarialLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (real_logits, fake_logits) -> loss


def unwrap(net: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel wrapper."""
    return net.module if isinstance(net, DistributedDataParallel) else net


def first_nonfinite(logs: Logs) -> str | None:
    """The first loss term in `logs` that is NaN/inf, in LOSS_TERMS order."""
    return next((k for k in LOSS_TERMS if k in logs and not math.isfinite(logs[k])), None)


@dataclass
class Objective:
    """The generator's loss: weighted pixel, low-passed pixel, perceptual and adversarial terms (weight 0 leaves
    one out)."""

    pixel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    pixel_weight: float = 1.0
    lowpass: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # losses.lowpass_loss, or None
    lowpass_weight: float = 0.0
    perceptual: nn.Module | None = None  # a losses.PerceptualLoss, or None for no perceptual term
    perceptual_weight: float = 0.0
    g_adversarial: AdversarialLoss | None = None  # the generator's side of a losses.ADVERSARIAL pair
    adversarial_weight: float = 0.0
    relativistic: bool = False  # RaGAN: the generator's loss also looks at D's logits for real images
    artifact_weight: float = 0.0  # LDL's artifact term (losses.artifact_loss); needs the EMA generator


@dataclass
class Update:
    """How a loss becomes an optimizer step: the autocast region, fp16 loss scaling, gradient clipping."""

    autocast: contextlib.AbstractContextManager[object] = field(default_factory=contextlib.nullcontext)
    scaler: torch.amp.GradScaler = field(default_factory=lambda: torch.amp.GradScaler("cpu", enabled=False))
    grad_clip: float | None = None

    def backward(self, loss: torch.Tensor) -> None:
        """Add the loss's gradients (loss-scaled under fp16) to what the parameters hold."""
        self.scaler.scale(loss).backward()

    def step(self, opt: torch.optim.Optimizer, net: nn.Module) -> None:
        """Clip the summed gradients (when asked) and step."""
        if self.grad_clip is not None:
            self.scaler.unscale_(opt)  # clip the true gradients, not the loss-scaled ones
            nn.utils.clip_grad_norm_(net.parameters(), self.grad_clip)
        self.scaler.step(opt)


def _chunks(accumulate: int, *tensors: torch.Tensor) -> list[tuple[float, tuple[torch.Tensor, ...]]]:
    """Split a batch into `accumulate` micro-batches: (share of the batch, tensors) each."""
    n = tensors[0].shape[0]
    if not 1 <= accumulate <= n:
        raise ValueError(f"gradient accumulation splits a batch of {n} into 1..{n} micro-batches, got {accumulate}")
    parts = list(zip(*(t.chunk(accumulate) for t in tensors), strict=True))
    return [(part[0].shape[0] / n, part) for part in parts]


def _add(total: Logs, logs: Logs, share: float) -> None:
    for key, value in logs.items():
        total[key] = total.get(key, 0.0) + share * value


def _generator_loss(
    net_g: nn.Module,
    lq: torch.Tensor,
    gt: torch.Tensor,
    objective: Objective,
    net_d: nn.Module | None,
    ema: nn.Module | None,
) -> tuple[torch.Tensor, torch.Tensor, Logs]:
    """G's output on lq, its weighted loss against gt, and each term's value (call inside the autocast region)."""
    logs: Logs = {}
    sr = net_g(lq)  # (N, C, h, w) -> (N, C, s*h, s*w)
    loss_g = torch.zeros((), device=sr.device)
    if objective.pixel_weight > 0:  # 0: no content term at all (the vanilla-GAN baseline)
        l_pix = objective.pixel_weight * objective.pixel(sr.float(), gt)
        loss_g = loss_g + l_pix
        logs["l_pix"] = l_pix.item()
    if objective.lowpass is not None and objective.lowpass_weight > 0:
        l_low = objective.lowpass_weight * objective.lowpass(sr.float(), gt)
        loss_g = loss_g + l_low
        logs["l_low"] = l_low.item()
    if objective.perceptual is not None and objective.perceptual_weight > 0:
        l_percep = objective.perceptual_weight * objective.perceptual(sr, gt)
        loss_g = loss_g + l_percep
        logs["l_percep"] = l_percep.item()
    if net_d is not None and objective.g_adversarial is not None and objective.adversarial_weight > 0:
        # D is a fixed judge here: its weights get no gradients (cheaper, and G's loss must never move
        # D). The unwrapped D is used so DDP does not wait for D's gradients.
        judge = unwrap(net_d)
        judge.requires_grad_(False)
        fake_logits = judge(sr).float()
        # Only the relativistic loss compares with real images; no graph is needed for them.
        real_logits = judge(gt).float().detach() if objective.relativistic else torch.empty(0)
        l_adv = objective.adversarial_weight * objective.g_adversarial(real_logits, fake_logits)
        loss_g = loss_g + l_adv
        logs["l_adv"] = l_adv.item()
        judge.requires_grad_(True)
    if objective.artifact_weight > 0:
        assert ema is not None
        with torch.no_grad():
            sr_ema = ema(lq)
        l_artif = objective.artifact_weight * artifact_loss(sr, sr_ema, gt)
        loss_g = loss_g + l_artif
        logs["l_artif"] = l_artif.item()
    logs["loss_g"] = loss_g.item()
    return sr, loss_g, logs


def generator_step(
    net_g: nn.Module,
    opt_g: torch.optim.Optimizer,
    lq: torch.Tensor,
    gt: torch.Tensor,
    *,
    objective: Objective,
    net_d: nn.Module | None = None,
    ema: nn.Module | None = None,
    update: Update | None = None,
    check: FiniteCheck = first_nonfinite,
    accumulate: int = 1,
) -> tuple[torch.Tensor, Logs, str | None]:
    """Compute G's loss on (lq, gt) and step opt_g unless a term is not finite. Returns (sr, logs, bad term).

    `ema`: the EMA generator, which LDL's artifact term compares with (objective.artifact_weight > 0).
    `accumulate`: run the batch as that many micro-batches, summing their gradients (each weighted by its share
    of the batch) before one step: the update of the whole batch at the activation memory of one micro-batch
    (up to per-micro-batch BatchNorm statistics, and RaGAN's means taken per micro-batch).
    """
    update = update or Update()
    if objective.artifact_weight > 0 and ema is None:
        raise ValueError("the LDL artifact loss needs the EMA generator (set train.ema_decay, e.g. 0.999)")
    logs: Logs = {}
    outputs = []
    opt_g.zero_grad(set_to_none=True)
    for share, (lq_part, gt_part) in _chunks(accumulate, lq, gt):
        with update.autocast:
            sr, loss_g, part_logs = _generator_loss(net_g, lq_part, gt_part, objective, net_d, ema)
        outputs.append(sr)
        _add(logs, part_logs, share)
        if first_nonfinite(part_logs) is None:  # a non-finite part is reported below; its gradients never land
            update.backward(loss_g * share if accumulate > 1 else loss_g)
    # The terms' .item()s above are the host syncs logging needs anyway: checking them adds none.
    bad = check(logs)
    if bad is None:
        update.step(opt_g, net_g)
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs), logs, bad


@torch.no_grad()
def generate_fakes(net_g: nn.Module, lq: torch.Tensor, *, update: Update | None = None) -> torch.Tensor:
    """G as a source of fakes only (discriminator warm-up), in eval mode so its BatchNorm statistics stay put."""
    plain = unwrap(net_g)
    was_training = plain.training
    plain.eval()
    try:
        with (update or Update()).autocast:
            return net_g(lq)
    finally:
        plain.train(was_training)


def discriminator_step(
    net_d: nn.Module,
    opt_d: torch.optim.Optimizer,
    sr: torch.Tensor,
    gt: torch.Tensor,
    *,
    d_loss: AdversarialLoss,
    update: Update | None = None,
    check: FiniteCheck = first_nonfinite,
    accumulate: int = 1,
) -> tuple[Logs, str | None]:
    """D's loss on real `gt` vs fake `sr`, and a step of opt_d unless it is not finite. Returns (logs, bad term).

    Logs hold loss_d and, once applied, d_real / d_fake: D's mean probability for the real and fake images.
    `accumulate`: micro-batches, as in generator_step.
    """
    update = update or Update()
    logs: Logs = {}
    probs: Logs = {}
    opt_d.zero_grad(set_to_none=True)
    for share, (sr_part, gt_part) in _chunks(accumulate, sr, gt):
        with update.autocast:
            real_logits = net_d(gt_part).float()
            fake_logits = net_d(sr_part.detach()).float()  # detach: D's loss must not reach G
            loss = d_loss(real_logits, fake_logits)
        part = {"loss_d": loss.item()}
        _add(logs, part, share)
        if first_nonfinite(part) is None:
            update.backward(loss * share if accumulate > 1 else loss)
        _add(probs, {"d_real": torch.sigmoid(real_logits).mean().item()}, share)
        _add(probs, {"d_fake": torch.sigmoid(fake_logits).mean().item()}, share)
    bad = check(logs)
    if bad is None:
        update.step(opt_d, net_d)
        logs.update(probs)
    return logs, bad
