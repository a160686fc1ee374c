"""Hand-computed checks of csvr.losses and of the one-stage GAN update (csvr.osgan, csvr.training.steps).

Run: python -m pytest tests/test_losses.py -q
"""
import math

import pytest
import torch
from torch import nn

from csvr import losses as L
from csvr.config import apply_overrides, tiny
from csvr.models.csvr import build_csvr
from csvr.osgan import generator_scale, one_stage
from csvr.training.steps import pose_terms, video_terms
from tests.conftest import assert_one_stage_equals_phases, backward_for, random_batch

torch.set_num_threads(1)
LOG2 = math.log(2.0)


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / (math.hypot(*a) * math.hypot(*b))


# ---------------------------------------------------------------------------------------------
# context matching


def test_mi_infonce_equals_infonce_with_one_iframe_per_clip():
    g = torch.Generator().manual_seed(0)
    b, k, c = 5, 3, 8
    x, z = torch.randn(b, c, generator=g), torch.randn(b, k, c, generator=g)
    slot = torch.tensor([0, 2, 1, 1, 0])
    mask = torch.zeros(b, k, dtype=torch.bool)
    mask[torch.arange(b), slot] = True
    expected = L.infonce(x, z[torch.arange(b), slot], 0.1)
    assert torch.allclose(L.mi_infonce(x, z, mask, 0.1), expected, atol=1e-5)
    # and the dispatch for Table IV's InfoNCE picks that one valid I-frame
    assert torch.allclose(L.context_loss("infonce", x, z, mask, 0.1), expected, atol=1e-5)


def mi_infonce_by_hand(x, z, mask, tau):
    """Eq. 2 with plain python: positives = valid I-frames of clip i, negatives = valid I-frames of the others."""
    total = 0.0
    for i, xi in enumerate(x):
        pos = sum(math.exp(_cos(zk, xi) / tau) for zk, m in zip(z[i], mask[i]) if m)
        neg = sum(math.exp(_cos(zk, xi) / tau) for j in range(len(x)) if j != i for zk, m in zip(z[j], mask[j]) if m)
        total += -math.log(pos / (pos + neg))
    return total / len(x)


@pytest.mark.parametrize("mask", [[[1, 1], [1, 1]], [[1, 1], [1, 0]], [[1, 0], [1, 1]]])
def test_mi_infonce_two_positives_by_hand(mask):
    x = [[1.0, 0.0], [0.0, 2.0]]  # B=2, C=2
    z = [[[3.0, 1.0], [0.6, 0.8]], [[-1.0, 2.0], [1.0, 1.0]]]  # K=2 I-frames per clip
    tau = 0.5
    got = L.mi_infonce(torch.tensor(x), torch.tensor(z), torch.tensor(mask, dtype=torch.bool), tau)
    assert got.item() == pytest.approx(mi_infonce_by_hand(x, z, mask, tau), rel=1e-5)


def test_infonce_is_cross_entropy_of_cosine_logits():
    x = [[1.0, 0.0], [1.0, 1.0], [0.0, -2.0]]
    z = [[2.0, 0.5], [-1.0, 1.0], [0.3, -1.0]]
    tau = 0.2
    total = 0.0
    for i in range(3):
        logits = [_cos(x[i], z[j]) / tau for j in range(3)]
        total += -(logits[i] - math.log(sum(math.exp(v) for v in logits)))
    got = L.infonce(torch.tensor(x), torch.tensor(z), tau)
    assert got.item() == pytest.approx(total / 3, rel=1e-5)


def test_l2_context():
    x = torch.tensor([[3.0, 4.0], [0.0, 5.0]])
    z = torch.tensor([[1.0, 0.0], [0.0, 0.1]])
    # clip 0: |(0.6, 0.8) - (1, 0)|^2 = 0.16 + 0.64 = 0.8; clip 1: same direction -> 0
    assert L.l2_context(x, z).item() == pytest.approx(0.4, rel=1e-6)


def test_pick_one_iframe_only_picks_valid_slots():
    z = torch.arange(4 * 3, dtype=torch.float32).view(4, 3, 1)
    mask = torch.tensor([[1, 0, 0], [0, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    for seed in range(20):
        picked = L.pick_one_iframe(z, mask, torch.Generator().manual_seed(seed)).squeeze(1).long()
        slot = picked - torch.arange(4) * 3
        assert mask[torch.arange(4), slot].all()
        assert slot[0] == 0 and slot[1] == 2


def test_context_accuracy():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    z = torch.tensor([[[1.0, 0.0], [0.0, 1.0]],  # clip 0 matches its own z[0, 0] (slot 1 is padding)
                      [[-1.0, -1.0], [0.0, -1.0]],  # clip 1's own I-frames point away from it
                      [[0.0, 1.0], [-1.0, 0.0]]])  # clip 1 matches z[2, 0]; clip 2's exact match is padding
    mask = torch.tensor([[1, 0], [1, 1], [1, 0]], dtype=torch.bool)
    # clip 0 -> z[0,0] right; clip 1 -> z[2,0] wrong; clip 2 -> z[1,0] (cos .71) wrong
    assert L.context_accuracy(x, z, mask).item() == pytest.approx(1 / 3)
    mask[2, 1] = True  # unmask clip 2's exact match
    assert L.context_accuracy(x, z, mask).item() == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------------
# adversarial terms


def test_adversarial_terms_at_logit_zero():
    zero = torch.zeros(6)
    assert L.d_loss(zero, zero).item() == pytest.approx(2 * LOG2)  # -log(1/2) - log(1 - 1/2)
    assert L.g_adv_loss(zero).item() == pytest.approx(LOG2)
    assert L.d_fake_loss(zero).item() == pytest.approx(LOG2)
    confident = torch.full((3,), 30.0)
    assert L.d_loss(confident, -confident).item() == pytest.approx(0.0, abs=1e-6)
    assert L.g_adv_loss(-confident).item() == pytest.approx(30.0, rel=1e-6)


@pytest.mark.parametrize("lipschitz, expected", [(1.0, 0.0), (2.0, 1.0), (0.5, 0.25)])
def test_gradient_penalty_of_linear_critics(lipschitz, expected):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3 * 5, generator=g)
    w = (lipschitz * w / w.norm()).requires_grad_(True)
    critic = lambda p: p.flatten(1) @ w  # noqa: E731  f(x) = w.x, grad norm = ||w|| everywhere
    real, fake = torch.randn(4, 3, 5, generator=g), torch.randn(4, 3, 5, generator=g, requires_grad=True)
    gp = L.gradient_penalty(critic, real, fake)
    assert gp.item() == pytest.approx(expected, abs=1e-5)
    gp.backward()
    assert fake.grad is None  # the fake enters detached


def test_gradient_penalty_trains_the_critic():
    critic = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        critic.weight.fill_(1.0)  # ||w|| = 2
    gp = L.gradient_penalty(lambda p: critic(p).squeeze(1), torch.randn(3, 4), torch.randn(3, 4))
    gp.backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w|| = w
    assert torch.allclose(critic.weight.grad, torch.ones(1, 4), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# reconstruction terms and metrics


def test_masked_pose_l2_by_hand_and_ignores_masked_joints():
    target = torch.zeros(1, 2, 3, 2)  # B=1, T'=2, N=3
    pred = torch.tensor([[[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]],
                          [[1.0, 1.0], [0.0, 0.0], [9.0, 9.0]]]])
    mask = torch.tensor([[[1, 1, 0], [1, 1, 0]]], dtype=torch.bool)
    # valid squared errors 1, 4, 2, 0 -> mean 7/4, times N = 3
    assert L.masked_pose_l2(pred, target, mask).item() == pytest.approx(3 * 7 / 4)
    moved = pred.clone()
    moved[0, 1, 2] = torch.tensor([-100.0, 42.0])  # a masked joint
    assert L.masked_pose_l2(moved, target, mask).item() == pytest.approx(3 * 7 / 4)
    moved[0, 1, 1] = torch.tensor([1.0, 0.0])  # a valid one
    assert L.masked_pose_l2(moved, target, mask).item() == pytest.approx(3 * 8 / 4)
    # all valid: the paper's (1/T') sum_t ||p_t - p'_t||^2 (squared norm over all joints, averaged over frames)
    full = torch.ones_like(mask)
    per_frame = (pred - target).pow(2).sum((2, 3))
    assert L.masked_pose_l2(pred, target, full).item() == pytest.approx(per_frame.mean().item())
    assert L.pose_mse(pred, target, mask).item() == pytest.approx(7 / 4 / 2)


def test_pixel_l2():
    target = torch.zeros(2, 3, 2, 2, 2)
    pred = torch.ones(2, 3, 2, 2, 2)
    pred[1] = 2.0
    # per pixel: sum over RGB of squared error = 3 (sample 0) and 12 (sample 1); mean over B, T, H, W
    assert L.pixel_l2(pred, target).item() == pytest.approx(7.5)


@pytest.mark.parametrize("k", [2, 5, 10])
def test_inception_score(k):
    assert L.inception_score(torch.full((4 * k, k), 1.0 / k)) == pytest.approx(1.0, abs=1e-5)
    assert L.inception_score(torch.eye(k)) == pytest.approx(k, rel=1e-5)
    assert L.inception_score(torch.eye(k).repeat(3, 1), splits=3) == pytest.approx(k, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# one-stage GAN update (OSGAN)


def _grads(params):
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def _zero(*modules):
    for m in modules:
        m.zero_grad(set_to_none=True)


@pytest.mark.parametrize("g_weight, d_weight", [(1.0, 1.0), (0.75, 1.0), (0.5, 2.0)])
def test_one_stage_gives_both_players_their_own_gradient(g_weight, d_weight):
    torch.manual_seed(0)
    gen = nn.Linear(3, 4).double()
    disc = nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1)).double()
    critic = lambda v: disc(v).squeeze(1)  # noqa: E731
    z, real = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)

    # reference: a separate discriminator step and a separate non-saturating generator step
    (d_weight * L.d_loss(critic(real), critic(gen(z).detach()))).backward()
    ref_d = _grads(disc.parameters())
    _zero(gen, disc)
    (g_weight * L.g_adv_loss(critic(gen(z)))).backward()
    ref_g = _grads(gen.parameters())
    _zero(gen, disc)

    fake_in, scale = one_stage(gen(z))
    fake_logits = critic(fake_in)
    scale.copy_(generator_scale(fake_logits, g_weight, d_weight))
    (d_weight * L.d_loss(critic(real), fake_logits)).backward()
    for got, want in zip(_grads(disc.parameters()), ref_d):
        assert torch.allclose(got, want, atol=1e-10)
    for got, want in zip(_grads(gen.parameters()), ref_g):
        assert torch.allclose(got, want, atol=1e-10)
    assert any(g.abs().sum() > 0 for g in ref_g)


@pytest.fixture(scope="module")
def pose_setup():
    torch.set_num_threads(1)
    cfg = apply_overrides(tiny(), {"data.batch_size": 4, "model.fi_levels": 1})  # f_i below is one vector
    torch.manual_seed(0)
    model = build_csvr(cfg).double().train()
    batch = {k: v.double() if v.is_floating_point() else v for k, v in random_batch(cfg).items()}
    return cfg, model, batch


@pytest.mark.parametrize("gp", [0.0, 10.0])
def test_pose_terms_one_stage_matches_separate_phases(pose_setup, gp):
    cfg, model, batch = pose_setup
    lc = apply_overrides(cfg, {"loss.gp_weight": gp, "loss.pose_l2": 0.5, "loss.pose_adversarial": 2.0}).loss
    disc, gen = model.pose_discriminator, model.pose_generator
    g_params = [*gen.encoder.parameters(), *gen.decoder.parameters()]

    def run(mode):
        _zero(model)
        torch.manual_seed(1)  # same z_p and GP interpolates in every mode
        t = pose_terms(model, batch, lc, mode, g_weight=0.75)
        backward_for(t, mode)
        return _grads(disc.parameters()), _grads(g_params)

    assert_one_stage_equals_phases(run)


def test_video_terms_one_stage_matches_separate_phases(pose_setup):
    cfg, model, batch = pose_setup
    gan = model.predictor
    f_i = torch.randn(4, cfg.model.feature_dim, dtype=torch.float64)

    def run(mode):
        _zero(model)
        torch.manual_seed(2)  # same z_v in every mode
        t = video_terms(gan, f_i, batch["future"], "predict", cfg.loss, mode, g_weight=0.5)
        backward_for(t, mode)
        return _grads(gan.discriminator.parameters()), _grads(gan.generator.parameters())

    assert_one_stage_equals_phases(run)
