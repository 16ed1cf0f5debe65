"""Each GAN loss against values worked out by hand from its formula (plain math, not torch's BCE)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from srkit.losses import ADVERSARIAL, artifact_loss, gaussian_lowpass, ldl_artifact_map, lowpass_loss, pixel_loss

REAL = [2.0, -1.0]  # D's logits for two real images
FAKE = [0.5, -0.5]  # and for two generated ones


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def _bce(logits: list[float], target: float) -> float:
    """Mean binary cross-entropy of sigmoid(logits) against a constant target, from its definition."""
    out = []
    for z in logits:
        p = 1 / (1 + math.exp(-z))
        out.append(-(target * math.log(p) + (1 - target) * math.log(1 - p)))
    return sum(out) / len(out)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _hand(name: str) -> tuple[float, float]:
    """(D loss, G loss) for REAL / FAKE logits."""
    if name == "vanilla":
        # D: -log D(x) - log(1 - D(G(z))); G: the non-saturating -log D(G(z)) (Goodfellow et al. 2014).
        d = _mean([_softplus(-r) for r in REAL]) + _mean([_softplus(f) for f in FAKE])
        return d, _mean([_softplus(-f) for f in FAKE])
    if name == "lsgan":
        # Mao et al. 2017 with a = 0, b = c = 1: D pushes real to 1 and fake to 0, G pushes fake to 1.
        d = 0.5 * (_mean([(r - 1) ** 2 for r in REAL]) + _mean([f**2 for f in FAKE]))
        return d, 0.5 * _mean([(f - 1) ** 2 for f in FAKE])
    if name == "ragan":
        # ESRGAN eq. 1-2: D_Ra(x, y) = sigmoid(C(x) - mean C(y)); G swaps the targets.
        rel_real = [r - _mean(FAKE) for r in REAL]
        rel_fake = [f - _mean(REAL) for f in FAKE]
        d = 0.5 * (_bce(rel_real, 1.0) + _bce(rel_fake, 0.0))
        g = 0.5 * (_bce(rel_real, 0.0) + _bce(rel_fake, 1.0))
        return d, g
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["vanilla", "lsgan", "ragan"])
def test_adversarial_losses_match_their_formulas(name: str) -> None:
    d_loss, g_loss = ADVERSARIAL[name]
    real, fake = torch.tensor(REAL, dtype=torch.float64), torch.tensor(FAKE, dtype=torch.float64)
    want_d, want_g = _hand(name)
    assert d_loss(real, fake).item() == pytest.approx(want_d, rel=1e-12)
    assert g_loss(real, fake).item() == pytest.approx(want_g, rel=1e-12)


def test_every_adversarial_loss_is_checked() -> None:
    assert sorted(ADVERSARIAL) == ["lsgan", "ragan", "vanilla"]  # a new one needs its formula above


# An undecided D vs a confident, correct one: logits 0 vs far apart, or (LSGAN regresses its outputs on the
# targets 1 and 0) outputs 0.5 vs the targets themselves.
@pytest.mark.parametrize(
    ("name", "undecided", "real", "fake"),
    [("vanilla", 0.0, 3.0, -3.0), ("lsgan", 0.5, 1.0, 0.0), ("ragan", 0.0, 3.0, -3.0)],
)
def test_a_confident_discriminator_wins(name: str, undecided: float, real: float, fake: float) -> None:
    d_loss, g_loss = ADVERSARIAL[name]
    mid = torch.full((4,), undecided)
    sure_real, sure_fake = torch.full((4,), real), torch.full((4,), fake)
    assert d_loss(sure_real, sure_fake).item() < d_loss(mid, mid).item()
    assert g_loss(sure_real, sure_fake).item() > g_loss(mid, mid).item()  # the generator is being caught


def test_pixel_losses() -> None:
    sr, gt = torch.tensor([0.0, 0.5, 1.0]), torch.tensor([0.25, 0.5, 0.0])
    assert pixel_loss("l1")(sr, gt).item() == pytest.approx((0.25 + 0 + 1) / 3)
    assert pixel_loss("mse")(sr, gt).item() == pytest.approx((0.0625 + 0 + 1) / 3)
    with pytest.raises(ValueError, match="l1"):
        pixel_loss("huber")


# LDL artifact map (Liang et al. 2022) ------------------------------------------------------------------------


def _ldl_by_hand(sr: np.ndarray, ema: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """The map from its definition, pixel by pixel: var(R) ** (1/5) * var(R in the 7x7 window), R = sum_c |gt - sr|,
    zero where the EMA model's residual is larger."""
    r = np.abs(gt - sr).sum(0)
    r_ema = np.abs(gt - ema).sum(0)
    patch = r.var(ddof=1) ** (1 / 5)
    padded = np.pad(r, 3, mode="reflect")
    out = np.zeros_like(r)
    for i in range(r.shape[0]):
        for j in range(r.shape[1]):
            out[i, j] = patch * padded[i : i + 7, j : j + 7].var(ddof=1)
    out[r < r_ema] = 0
    return out


def test_ldl_artifact_map_matches_its_definition() -> None:
    rng = np.random.default_rng(0)
    gt, sr, ema = (rng.random((3, 10, 12)) for _ in range(3))
    got = ldl_artifact_map(*(torch.from_numpy(a)[None].float() for a in (sr, ema, gt)))
    assert got.shape == (1, 1, 10, 12)
    np.testing.assert_allclose(got[0, 0].numpy(), _ldl_by_hand(sr, ema, gt), rtol=1e-4, atol=1e-6)
    assert 0 < float((got == 0).float().mean()) < 1  # some pixels kept, some zeroed by the EMA comparison


def test_artifact_loss_is_zero_where_the_ema_is_worse_and_passes_gradients() -> None:
    gt = torch.rand(2, 3, 16, 16)
    sr = (gt + 0.1 * torch.randn_like(gt)).requires_grad_(True)
    far_ema = gt + 1.0  # the EMA copy is worse everywhere: nothing counts as an artifact of the current model
    assert float(artifact_loss(sr, far_ema, gt)) == 0.0
    loss = artifact_loss(sr, gt.clone(), gt)  # the EMA copy is perfect: every irregular residual is an artifact
    loss.backward()
    assert float(loss) > 0 and sr.grad is not None and float(sr.grad.abs().sum()) > 0


def test_multi_layer_perceptual_loss_is_the_weighted_sum_of_single_layer_losses() -> None:
    """Weighted layers (Real-ESRGAN's form) == sum of w_i * the one-layer loss at each tap, from one trunk."""
    from srkit.losses import PerceptualLoss

    torch.manual_seed(0)
    weights = {"conv1_2": 0.1, "relu2_2": 0.5, "conv3_3": 2.0}
    multi = PerceptualLoss(arch="vgg16", layers=weights, criterion="l1", weights=None)
    assert multi.vgg.layer == "conv3_3"  # cut after the deepest tap, whatever the dict's order
    sr = torch.rand(2, 3, 32, 32, requires_grad=True)
    gt = torch.rand(2, 3, 32, 32)
    expected = 0.0
    for name, w in weights.items():
        single = PerceptualLoss(arch="vgg16", layer=name, criterion="l1", weights=None)
        single.vgg.load_state_dict(multi.vgg.state_dict(), strict=False)  # same (random) trunk up to `name`
        expected += w * single(sr, gt).item()
    value = multi(sr, gt)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0  # gradients reach the image, not the frozen VGG
    assert all(p.grad is None for p in multi.vgg.parameters())


def test_multi_layer_perceptual_loss_refuses_unknown_or_doubled_layers() -> None:
    from srkit.losses import PerceptualLoss

    with pytest.raises(ValueError, match="conv5_4"):
        PerceptualLoss(arch="vgg16", layers={"conv5_4": 1.0}, weights=None)  # a vgg19 name
    with pytest.raises(ValueError, match="not both"):
        PerceptualLoss(arch="vgg16", layer="conv5_3", layers={"conv5_3": 1.0}, weights=None)


def test_normalized_perceptual_distance_matches_its_definition_and_ignores_feature_scale() -> None:
    """normalize: mean over positions of ||f/|f| - g/|g|||^2 over channels, by hand; scaling a feature map is free."""
    from srkit.losses import PerceptualLoss

    torch.manual_seed(1)
    loss = PerceptualLoss(arch="vgg16", layers={"relu1_2": 1.0, "relu2_2": 0.5}, normalize=True, weights=None)
    sr, gt = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    expected = 0.0
    for (_name, w), f, g in zip(
        loss.layers.items(), loss.vgg.taps(sr, list(loss.layers)), loss.vgg.taps(gt, list(loss.layers)), strict=True
    ):
        fa = f.double().numpy()
        ga = g.double().numpy()
        fa = fa / (np.sqrt((fa**2).sum(axis=1, keepdims=True)) + 1e-10)
        ga = ga / (np.sqrt((ga**2).sum(axis=1, keepdims=True)) + 1e-10)
        expected += w * float(((fa - ga) ** 2).sum(axis=1).mean())
    assert loss(sr, gt).item() == pytest.approx(expected, rel=1e-4)
    assert 0 < expected < 4 * 1.5  # each term is 2 - 2 cos, at most 4
    # unit vectors: the distance of a feature map to twice itself is 0 (the raw L2 one is not)
    f = loss.vgg.taps(sr, ["relu1_2"])[0]
    assert loss._distance(f, 2 * f).item() == pytest.approx(0.0, abs=1e-6)
    assert PerceptualLoss(arch="vgg16", layer="relu1_2", weights=None)._distance(f, 2 * f).item() > 0


def _gauss_blur_by_hand(img: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W) blurred by a normalised Gaussian of radius ceil(3 sigma), borders mirrored without repeating the
    edge pixel (numpy's 'reflect'), as two 1-D passes written out loop by loop."""
    radius = math.ceil(3 * sigma)
    taps = [math.exp(-(k * k) / (2 * sigma * sigma)) for k in range(-radius, radius + 1)]
    taps = [t / sum(taps) for t in taps]
    padded = np.pad(img, radius, mode="reflect")
    h, w = img.shape
    rows = np.zeros((h + 2 * radius, w))
    for x in range(w):
        rows[:, x] = sum(t * padded[:, x + i] for i, t in enumerate(taps))
    out = np.zeros((h, w))
    for y in range(h):
        out[y] = sum(t * rows[y + i] for i, t in enumerate(taps))
    return out


def test_gaussian_lowpass_matches_a_hand_blur() -> None:
    rng = np.random.default_rng(3)
    img = rng.random((2, 3, 20, 17))
    got = gaussian_lowpass(torch.from_numpy(img), 1.5).numpy()
    for n in range(2):
        for c in range(3):
            np.testing.assert_allclose(got[n, c], _gauss_blur_by_hand(img[n, c], 1.5), atol=1e-6)
    flat = torch.full((1, 3, 12, 12), 0.3, dtype=torch.float64)
    assert torch.allclose(gaussian_lowpass(flat, 2.0), flat)  # a normalised kernel keeps a flat image


def test_lowpass_loss_sees_only_low_frequencies() -> None:
    rng = np.random.default_rng(4)
    gt = torch.from_numpy(rng.random((1, 3, 32, 32))).float()
    # A one-pixel checkerboard (the highest frequency) on top of HR: low-passed it almost vanishes...
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 0.2 - 0.1
    high = gt + checker
    # ...while a constant shift of the same L1 size passes the low-pass whole.
    shift = gt + 0.1
    l1 = lowpass_loss("l1", 1.5)
    assert pixel_loss("l1")(high, gt).item() == pytest.approx(0.1, rel=1e-5)
    assert l1(shift, gt).item() == pytest.approx(0.1, rel=1e-5)
    assert l1(high, gt).item() < 0.01
    noisy = gt + torch.from_numpy(rng.normal(0, 0.05, (1, 3, 32, 32))).float()
    by_hand = np.mean(
        [
            np.abs(
                _gauss_blur_by_hand(noisy[0, c].double().numpy(), 1.5)
                - _gauss_blur_by_hand(gt[0, c].double().numpy(), 1.5)
            )
            for c in range(3)
        ]
    )
    assert l1(noisy, gt).item() == pytest.approx(by_hand, rel=1e-4)
    mse = lowpass_loss("mse", 1.5)
    assert mse(shift, gt).item() == pytest.approx(0.01, rel=1e-4)


def test_lowpass_loss_passes_gradients_and_checks_sigma() -> None:
    sr = torch.rand(2, 3, 24, 24, requires_grad=True)
    lowpass_loss("l1", 1.0)(sr, torch.rand(2, 3, 24, 24)).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0 and torch.isfinite(sr.grad).all()
    with pytest.raises(ValueError, match="sigma must be > 0"):
        lowpass_loss("l1", 0.0)
