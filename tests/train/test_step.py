"""train.step: each half of a GAN step alone, what it may and may not touch, and the NaN guard."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from srkit.archs import SRGANDiscriminator, SRResNet
from srkit.losses import ADVERSARIAL
from srkit.train.step import Objective, discriminator_step, generate_fakes, generator_step


def _nets() -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net_g = SRResNet(width=8, num_blocks=1)
    net_d = SRGANDiscriminator(channels=(8, 8, 16, 16), hidden=16)
    lq, gt = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    return net_g, net_d, lq, gt


def _same(a: nn.Module, b: nn.Module, *, buffers: bool = True) -> bool:
    pick = (lambda m: m.state_dict().values()) if buffers else (lambda m: [p.detach() for p in m.parameters()])
    return all(torch.equal(x, y) for x, y in zip(pick(a), pick(b), strict=True))


def test_generator_step_moves_g_only() -> None:
    net_g, net_d, lq, gt = _nets()
    d_before, g_before = copy.deepcopy(net_d), copy.deepcopy(net_g)
    _, g_loss = ADVERSARIAL["vanilla"]
    objective = Objective(pixel=F.l1_loss, g_adversarial=g_loss, adversarial_weight=0.001)
    sr, logs, bad = generator_step(
        net_g, torch.optim.Adam(net_g.parameters(), 1e-3), lq, gt, objective=objective, net_d=net_d
    )
    assert bad is None and sr.shape == gt.shape
    assert set(logs) == {"l_pix", "l_adv", "loss_g"}
    assert logs["loss_g"] == pytest.approx(logs["l_pix"] + logs["l_adv"], rel=1e-6)
    assert not _same(net_g, g_before)
    # D judged and was not trained: same weights, no gradients (its BatchNorm statistics did see the fakes,
    # as D is in training mode, the same as in SRGAN's reference training).
    assert _same(net_d, d_before, buffers=False) and all(p.grad is None for p in net_d.parameters())
    assert all(p.requires_grad for p in net_d.parameters())  # and trainable again afterwards


def test_discriminator_step_moves_d_only() -> None:
    net_g, net_d, lq, gt = _nets()
    sr = net_g(lq)  # with a graph back to G, as after a generator step
    d_before = copy.deepcopy(net_d)
    d_loss, _ = ADVERSARIAL["vanilla"]
    logs, bad = discriminator_step(net_d, torch.optim.Adam(net_d.parameters(), 1e-3), sr, gt, d_loss=d_loss)
    assert bad is None and set(logs) == {"loss_d", "d_real", "d_fake"}
    assert 0 < logs["d_real"] < 1 and 0 < logs["d_fake"] < 1
    assert not _same(net_d, d_before)
    assert all(p.grad is None for p in net_g.parameters())  # sr was detached: D's loss never reaches G


def test_a_nonfinite_term_is_reported_and_not_applied() -> None:
    net_g, _, lq, gt = _nets()
    before = copy.deepcopy(net_g)

    def broken(sr: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(sr, target) * float("nan")

    _, logs, bad = generator_step(
        net_g, torch.optim.Adam(net_g.parameters(), 1e-3), lq, gt, objective=Objective(pixel=broken)
    )
    assert bad == "l_pix" and logs["l_pix"] != logs["l_pix"]  # NaN
    # No optimizer step: the weights are as they were. (The forward pass did update BatchNorm's running
    # statistics; the loop never saves them from a bad step: it stops or rolls back to latest.pt.)
    assert _same(net_g, before, buffers=False)


def test_generate_fakes_keeps_batchnorm_statistics() -> None:
    net_g, _, lq, _ = _nets()
    before = copy.deepcopy(net_g)
    fakes = generate_fakes(net_g, lq)
    assert fakes.shape == (2, 3, 32, 32) and not fakes.requires_grad
    assert _same(net_g, before) and net_g.training  # running stats unchanged, mode restored


def test_ldl_artifact_term_uses_the_ema_generator() -> None:
    net_g, _, lq, gt = _nets()
    ema = copy.deepcopy(net_g).eval()
    objective = Objective(pixel=F.l1_loss, artifact_weight=1.0)
    opt = torch.optim.Adam(net_g.parameters(), 1e-3)
    with pytest.raises(ValueError, match="needs the EMA generator"):
        generator_step(net_g, opt, lq, gt, objective=objective)
    ema_before = copy.deepcopy(ema)
    _, logs, bad = generator_step(net_g, opt, lq, gt, objective=objective, ema=ema)
    assert bad is None and set(logs) == {"l_pix", "l_artif", "loss_g"}
    assert logs["l_artif"] > 0 and logs["loss_g"] == pytest.approx(logs["l_pix"] + logs["l_artif"], rel=1e-6)
    assert _same(ema, ema_before)  # the EMA copy is only looked at


def test_unet_discriminator_trains_against_the_generator() -> None:
    from srkit.archs import UNetDiscriminatorSN

    net_g, _, lq, gt = _nets()
    net_d = UNetDiscriminatorSN(width=8)
    d_loss, g_loss = ADVERSARIAL["vanilla"]
    objective = Objective(pixel=F.l1_loss, g_adversarial=g_loss, adversarial_weight=0.1)
    sr, logs, bad = generator_step(
        net_g, torch.optim.Adam(net_g.parameters(), 1e-3), lq, gt, objective=objective, net_d=net_d
    )
    assert bad is None and logs["l_adv"] > 0
    d_logs, bad = discriminator_step(net_d, torch.optim.Adam(net_d.parameters(), 1e-3), sr, gt, d_loss=d_loss)
    assert bad is None and 0 < d_logs["d_real"] < 1


def test_gradient_accumulation_gives_the_whole_batch_update() -> None:
    # No BatchNorm (its statistics are per micro-batch by design) and mean losses: 2 halves == the batch.
    from srkit.archs import PixelShuffleGenerator

    torch.manual_seed(0)
    whole_g = PixelShuffleGenerator(width=8, num_convs=2)
    whole_d = SRGANDiscriminator(channels=(8, 8), hidden=8)
    for m in whole_d.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()  # fixed statistics for the comparison (train mode would normalise each half by itself)
    split_g, split_d, init_g = copy.deepcopy(whole_g), copy.deepcopy(whole_d), copy.deepcopy(whole_g)
    lq, gt = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 32, 32)
    d_loss, g_loss = ADVERSARIAL["vanilla"]
    objective = Objective(pixel=F.l1_loss, g_adversarial=g_loss, adversarial_weight=0.01)
    results = []
    for net_g, net_d, accumulate in ((whole_g, whole_d, 1), (split_g, split_d, 2)):
        opt_g = torch.optim.SGD(net_g.parameters(), lr=0.1)
        opt_d = torch.optim.SGD(net_d.parameters(), lr=0.1)
        sr, g_logs, _ = generator_step(net_g, opt_g, lq, gt, objective=objective, net_d=net_d, accumulate=accumulate)
        d_logs, _ = discriminator_step(net_d, opt_d, sr, gt, d_loss=d_loss, accumulate=accumulate)
        results.append((sr, g_logs | d_logs))
    (sr_a, logs_a), (sr_b, logs_b) = results
    assert torch.allclose(sr_a, sr_b, atol=1e-6)
    assert logs_a.keys() == logs_b.keys() and all(logs_a[k] == pytest.approx(logs_b[k], rel=1e-5) for k in logs_a)
    for a, b in ((whole_g, split_g), (whole_d, split_d)):
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            assert torch.allclose(pa, pb, atol=1e-6)
    assert not _same(whole_g, init_g)  # and a step was taken
    with pytest.raises(ValueError, match=r"into 1\.\.4 micro-batches, got 5"):
        generator_step(whole_g, opt_g, lq, gt, objective=objective, accumulate=5)


def test_lowpass_term_is_weighted_and_logged() -> None:
    from srkit.losses import lowpass_loss

    net_g, _, lq, gt = _nets()
    objective = Objective(pixel=F.l1_loss, lowpass=lowpass_loss("l1", 1.0), lowpass_weight=5.0)
    sr, logs, bad = generator_step(net_g, torch.optim.Adam(net_g.parameters(), 1e-3), lq, gt, objective=objective)
    assert bad is None and set(logs) == {"l_pix", "l_low", "loss_g"}
    expected = 5.0 * lowpass_loss("l1", 1.0)(sr.detach().float(), gt).item()
    assert logs["l_low"] == pytest.approx(expected, rel=1e-5)
    assert logs["loss_g"] == pytest.approx(logs["l_pix"] + logs["l_low"], rel=1e-6)
