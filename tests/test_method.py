"""Tests that the method does what the paper says, at the level of gradients and hand-computed values
(issue: "CSVR must actually learn"): evaluation metrics by hand, the pretext baselines, sigma's effect on
gradients, Eq. 8's 1/2, and the collaborative claim (L_video reaches the pose encoder and the V-network).

Run: python -m pytest tests/test_method.py -q
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from csvr import evaluation as E
from csvr import losses as L
from csvr.config import apply_overrides, tiny
from csvr.models.csvr import build_csvr
from csvr.training.steps import stage_terms, video_weights
from tests.conftest import random_batch

torch.set_num_threads(1)


def tiny4(**overrides):
    return apply_overrides(tiny(), {"data.batch_size": 4, **overrides})


# ---------------------------------------------------------------------------------------------
# evaluation by hand


def test_retrieval_recall_at_k_by_hand():
    # 2 queries, 4 gallery items on the unit circle; query 0 is nearest to g0 (label 1), then g1 (label 0)
    angle = torch.tensor([0.0, 0.3, 1.2, 2.5])
    gallery = torch.stack([angle.cos(), angle.sin()], 1)
    gallery_labels = torch.tensor([1, 0, 0, 2])
    query = torch.tensor([[1.0, 0.05], [-0.8, 0.6]])  # q1 is nearest to g3 (angle 2.5), then g2
    query_labels = torch.tensor([0, 0])
    r = E.retrieval(query, query_labels, gallery, gallery_labels, ks=(1, 2, 3))
    # q0: order g0, g1, ... -> hit at rank 2; q1: order g3, g2, ... -> hit at rank 2
    assert r == {"retrieval_r1": 0.0, "retrieval_r2": 1.0, "retrieval_r3": 1.0}


def test_per_video_averaging_and_recognition_by_hand():
    class Fixed(torch.nn.Module):  # scores = the clip's first pixel, for 3 classes
        def forward(self, batch):
            return batch["clip"].flatten(1)[:, :3]

    # one batch of 2 videos x 2 clips; video 0's clips vote class 0 (log-probs), then class 1 weakly
    clip = torch.zeros(2, 2, 3, 1, 1, 1)
    clip[0, 0, :, 0, 0, 0] = torch.tensor([3.0, 0.0, 0.0])
    clip[0, 1, :, 0, 0, 0] = torch.tensor([0.0, 1.0, 0.0])
    clip[1, 0, :, 0, 0, 0] = torch.tensor([0.0, 0.0, 2.0])
    clip[1, 1, :, 0, 0, 0] = torch.tensor([0.0, 0.0, 2.0])
    loader = [{"clip": clip, "label": torch.tensor([0, 1])}]
    probs, labels = E.video_scores(Fixed(), loader, torch.device("cpu"))
    p00 = (torch.tensor([3.0, 0, 0]).softmax(0) + torch.tensor([0, 1.0, 0]).softmax(0)) / 2
    assert torch.allclose(probs[0], p00) and labels.tolist() == [0, 1]
    rec = E.recognition(probs, labels, 3)
    assert rec["top1"] == 0.5 and rec["confusion"].tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    assert rec["per_class"][0] == 1.0 and rec["per_class"][1] == 0.0 and np.isnan(rec["per_class"][2])
    assert rec["mean_class_acc"] == 0.5
    assert E.group_accuracy(rec["per_class"], ["motion", "context", None]) == {"motion": 1.0, "context": 0.0}


def test_knn_votes_by_hand():
    gallery = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])
    votes = E.knn_scores(torch.tensor([[1.0, 0.02]]), gallery, labels, classes=3, k=2, temperature=0.5)
    sims = torch.nn.functional.normalize(torch.tensor([[1.0, 0.02]]), dim=1) @ \
        torch.nn.functional.normalize(gallery[:2], dim=1).T
    w = (sims[0] / 0.5).exp()
    assert torch.allclose(votes[0], torch.tensor([w[0], w[1], 0.0]) / w.sum())


def test_linear_probe_learns_a_linear_rule_and_not_shuffled_labels():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 8, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + 2 * (x[:, 2] > 0).long()  # 4 classes, linear in the features
    probs = E.linear_probe(x[:200], y[:200], x[200:], classes=4, seed=0)
    assert probs.shape == (100, 4) and torch.allclose(probs.sum(1), torch.ones(100))
    assert (probs.argmax(1) == y[200:]).float().mean() >= 0.85
    shuffled = E.linear_probe(x[:200], y[:200][torch.randperm(200, generator=g)], x[200:], classes=4, seed=0)
    assert (shuffled.argmax(1) == y[200:]).float().mean() < 0.5  # labels unrelated to features: near chance


# ---------------------------------------------------------------------------------------------
# pretext baselines by hand


def test_pose_baselines_by_hand():
    poses = torch.zeros(1, 3, 2, 2)
    poses[0, :, 0] = torch.tensor([[0.1, 0.5], [0.2, 0.5], [0.3, 0.5]])  # joint 0 moves +0.1 in x per frame
    poses[0, :, 1] = torch.tensor([[0.7, 0.7], [0.0, 0.0], [0.0, 0.0]])  # joint 1 seen only in frame 0
    mask = torch.tensor([[[True, True], [True, False], [True, False]]])
    last = L.copy_last_pose(poses, mask, 2)
    assert torch.allclose(last[0, :, 0], torch.tensor([[0.3, 0.5], [0.3, 0.5]]))
    assert torch.allclose(last[0, :, 1], torch.tensor([[0.7, 0.7], [0.7, 0.7]]))  # its last *seen* position
    velocity = L.constant_velocity_pose(poses, mask, 2)
    assert torch.allclose(velocity[0, :, 0], torch.tensor([[0.4, 0.5], [0.5, 0.5]]))
    assert torch.allclose(velocity[0, :, 1], torch.tensor([[0.7, 0.7], [0.7, 0.7]]))  # no velocity known


def test_mean_frame_and_context_chance_by_hand():
    video = torch.arange(8.0).view(1, 1, 4, 1, 2)  # frames [0,1], [2,3], [4,5], [6,7]
    mean = L.mean_frame(video)
    assert torch.equal(mean[0, 0, :, 0], torch.tensor([[3.0, 4.0]] * 4))
    assert L.mean_frame(video, 2).shape == (1, 1, 2, 1, 2)
    assert L.pixel_l2(mean, video) == pytest.approx((9 + 1 + 1 + 9) / 4)  # per pixel, mean over T, H, W
    mask = torch.tensor([[True, True], [True, False], [True, False]])  # 4 valid I-frames: 2 + 1 + 1
    assert L.context_chance(mask).item() == pytest.approx((2 / 4 + 1 / 4 + 1 / 4) / 3)


def test_context_matching_by_raw_pixels_finds_each_clips_own_iframes():
    """context_acc_pixels: a clip whose I-frames are its own frames is matched by pixels; shuffled I-frames are not."""
    cfg = apply_overrides(tiny(), {"data.batch_size": 4, "data.size": 16})
    torch.manual_seed(0)
    model = build_csvr(cfg)
    batch = random_batch(cfg)
    batch["clip"] = torch.randn_like(batch["clip"][:, :, :1]).expand_as(batch["clip"]).contiguous()  # static clips
    own = batch["clip"][:, :, 0][:, None].expand_as(batch["iframes"]).contiguous()
    batch["iframes"], batch["iframe_mask"] = own, torch.ones_like(batch["iframe_mask"])
    assert E.pretext_metrics(model, [batch], None, torch.device("cpu"))["context_acc_pixels"] == 1.0
    batch["iframes"] = own.roll(1, dims=0)  # every clip now holds the next clip's I-frames
    assert E.pretext_metrics(model, [batch], None, torch.device("cpu"))["context_acc_pixels"] == 0.0


def test_pretext_means_are_over_clips_whatever_the_batching():
    """A short last batch counts with its clips: [3 clips, 1 clip] gives the means of [4 clips]."""
    cfg = apply_overrides(tiny(), {"data.batch_size": 4, "data.size": 16})
    torch.manual_seed(0)
    model = build_csvr(cfg)
    batch = random_batch(cfg)
    whole = E.pretext_metrics(model, [batch], None, torch.device("cpu"))
    parts = E.pretext_metrics(model, [{k: v[:3] for k, v in batch.items()}, {k: v[3:] for k, v in batch.items()}],
                              None, torch.device("cpu"))
    for key in ("video_l2_mean_frame", "video_l2_mean_frame_future"):  # (the generators draw fresh noise)
        assert parts[key] == pytest.approx(whole[key], rel=1e-5), key


def test_person_region_and_its_l2_by_hand():
    """The box spans every visible joint of every frame, widened by the margin; invisible joints do not count."""
    poses = torch.tensor([[[[0.30, 0.20], [0.9, 0.9]], [[0.50, 0.60], [0.9, 0.9]]]])  # (1, T=2, J=2, 2)
    mask = torch.tensor([[[True, False], [True, False]]])  # joint 1 (far corner) never visible
    region = L.person_region(poses, mask, size=10, margin=0.1)[0, 0, 0]  # (10, 10): rows y, columns x
    columns = region.any(0).nonzero().flatten().tolist()
    rows = region.any(1).nonzero().flatten().tolist()
    assert columns == [2, 3, 4, 5] and rows == [1, 2, 3, 4, 5, 6]  # centres in [0.2, 0.6] x [0.1, 0.7]
    assert region.sum() == len(columns) * len(rows)
    assert not L.person_region(poses, torch.zeros_like(mask), size=10).any()
    pred, target = torch.zeros(1, 3, 2, 10, 10), torch.zeros(1, 3, 2, 10, 10)
    pred[:, 0, :, 3, 3] = 2.0  # one pixel in the box, off by 2 in one channel, in both frames
    pred[:, 0, :, 9, 9] = 5.0  # outside the box: not counted
    box = L.person_region(poses, mask, size=10, margin=0.1)
    assert L.region_pixel_l2(pred, target, box) == pytest.approx(4.0 * 2 / (2 * 24))
    assert L.region_pixel_l2(pred, target, torch.zeros_like(box)) is None


def test_person_metrics_only_where_a_person_is_seen():
    cfg = apply_overrides(tiny(), {"data.batch_size": 2, "data.size": 16})
    torch.manual_seed(0)
    model = build_csvr(cfg)
    batch = random_batch(cfg)
    mean = torch.zeros(3, 16, 16)
    seen = E.pretext_metrics(model, [batch], None, torch.device("cpu"), mean)
    assert {"video_l2_person", "video_l2_person_mean_frame", "video_l2_person_train_mean"} <= set(seen)
    assert seen["video_l2_person_mean_frame"] < seen["video_l2_person_train_mean"]  # noise clips: mean is closer
    unseen = E.pretext_metrics(model, [dict(batch, pose_mask=torch.zeros_like(batch["pose_mask"]))], None,
                               torch.device("cpu"), mean)
    assert "video_l2_person" not in unseen and "video_l2_reconstruct" in unseen


def test_train_mean_frame_and_the_unconditional_baseline_by_hand():
    """mean_frame_of averages every frame of every clip; pretext_metrics scores it against both targets."""
    a = torch.zeros(1, 3, 2, 1, 1)
    b = torch.ones(1, 3, 2, 1, 1) * 4
    assert torch.equal(E.mean_frame_of([{"clip": a}, {"clip": b}]), torch.full((3, 1, 1), 2.0))
    cfg = apply_overrides(tiny(), {"data.batch_size": 2, "data.size": 16})
    torch.manual_seed(0)
    model = build_csvr(cfg)
    batch = random_batch(cfg)
    mean = torch.full((3, 16, 16), 0.5)
    m = E.pretext_metrics(model, [batch], None, torch.device("cpu"), mean)
    expected = (batch["clip"] - 0.5).pow(2).sum(1).mean()  # 3 channels summed, mean over B, T, H, W
    assert m["video_l2_train_mean"] == pytest.approx(float(expected), rel=1e-5)
    assert m["video_l2_train_mean_future"] == pytest.approx(float((batch["future"] - 0.5).pow(2).sum(1).mean()),
                                                           rel=1e-5)
    assert "video_l2_train_mean" not in E.pretext_metrics(model, [batch], None, torch.device("cpu"))


# ---------------------------------------------------------------------------------------------
# Eq. 8 and Eq. 9 on gradients


def _grads(cfg, part: str, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    model = build_csvr(cfg)
    batch = random_batch(cfg)
    torch.manual_seed(1)
    terms = stage_terms(model, batch, "joint", cfg, mode="one_stage")
    (terms.d + terms.g).backward()  # one backward serves both players (OSGAN)
    return torch.cat([p.grad.flatten() for p in model.get_submodule(part).parameters() if p.grad is not None])


@pytest.mark.parametrize("on_d", [False, True])
@pytest.mark.parametrize("key, part", [("loss.sigma_p", "pose_generator.decoder"),
                                       ("loss.sigma_c", "context.iframe_head")])
def test_sigma_scales_its_branch_gradients_proportionally(key, part, on_d):
    """Parts that only one branch's loss trains get gradients exactly proportional to that branch's sigma
    (adversarial and L2 parts together), whether or not sigma also scales the discriminator."""
    switch = {"loss.sigma_scales_discriminator": on_d}
    base = _grads(tiny4(**{key: 0.5, **switch}), part)
    doubled = _grads(tiny4(**{key: 1.0, **switch}), part)
    assert base.abs().sum() > 0
    assert torch.allclose(doubled, 2 * base, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("on_d, ratio", [(True, 2.0), (False, 1.0)])
def test_sigma_on_the_discriminator_side_scales_its_gradients(on_d, ratio):
    """Eq. 9's literal reading weights the whole min-max L_pose: D_p's gradients (loss and gradient penalty)
    scale with sigma_p when loss.sigma_scales_discriminator, and do not otherwise."""
    switch = {"loss.sigma_scales_discriminator": on_d}
    base = _grads(tiny4(**{"loss.sigma_p": 0.5, **switch}), "pose_discriminator")
    doubled = _grads(tiny4(**{"loss.sigma_p": 1.0, **switch}), "pose_discriminator")
    assert base.abs().sum() > 0
    assert torch.allclose(doubled, ratio * base, rtol=1e-4, atol=1e-7)
    video_d = [_grads(tiny4(**{"loss.sigma_p": v, **switch}), "reconstructor.discriminator") for v in (0.5, 1.0)]
    assert torch.allclose(video_d[0], video_d[1], rtol=1e-4, atol=1e-7)  # sigma_p leaves D_v alone


def test_video_adversarial_weighs_only_the_video_games():
    """loss.video_adversarial scales D_v's gradients (its whole loss is adversarial) and leaves D_p's alone;
    loss.pose_adversarial does the reverse."""
    video_d = [_grads(tiny4(**{"loss.video_adversarial": v}), "reconstructor.discriminator") for v in (0.5, 1.0)]
    assert video_d[0].abs().sum() > 0
    assert torch.allclose(video_d[1], 2 * video_d[0], rtol=1e-4, atol=1e-7)
    pose_d = [_grads(tiny4(**{"loss.video_adversarial": v}), "pose_discriminator") for v in (0.5, 1.0)]
    assert torch.allclose(pose_d[0], pose_d[1], rtol=1e-4, atol=1e-7)
    video_d = [_grads(tiny4(**{"loss.pose_adversarial": v}), "reconstructor.discriminator") for v in (0.5, 1.0)]
    assert torch.allclose(video_d[0], video_d[1], rtol=1e-4, atol=1e-7)


def test_eq8_halves_each_video_loss():
    assert video_weights("both") == {"reconstruct": 0.5, "predict": 0.5}
    both = _grads(tiny4(), "reconstructor.generator")
    alone = _grads(tiny4(**{"loss.generation_target": "reconstruct"}), "reconstructor.generator")
    assert torch.allclose(both, alone / 2, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("part", ["pose_generator.encoder", "context.video_net"])
def test_video_loss_reaches_both_encoders_in_the_joint_stage(part):
    """The collaborative claim: with sigma_p = sigma_c = 0 only L_video is left, and it still trains the pose
    encoder and the V-network (through f_i)."""
    grads = _grads(tiny4(**{"loss.sigma_p": 0.0, "loss.sigma_c": 0.0}), part)
    assert grads.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# loss.context_negatives (Section IV-B: three negative frames from other videos)


def test_negatives_are_drawn_from_other_videos_only():
    b, k = 5, 3
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    own_block = torch.eye(b, dtype=torch.bool).repeat_interleave(k, dim=1)
    others = mask.reshape(1, -1).expand(b, -1) & ~own_block
    torch.manual_seed(0)
    seen = torch.zeros_like(others, dtype=torch.int64)
    for _ in range(200):
        chosen = L.sample_negatives(others, 3)
        assert (chosen.sum(1) == 3).all() and not (chosen & ~others).any()  # 3, valid, never the anchor's own
        seen += chosen
    assert ((seen > 0) == others).all()  # every candidate gets drawn sometimes


def test_mi_infonce_with_three_negatives():
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(6, 8, generator=g), torch.randn(6, 2, 8, generator=g)
    mask = torch.ones(6, 2, dtype=torch.bool)
    every = L.mi_infonce(x, z, mask, 0.1)
    assert torch.allclose(L.mi_infonce(x, z, mask, 0.1, negatives=100), every)  # more than there are = all
    torch.manual_seed(1)
    three = L.mi_infonce(x, z, mask, 0.1, negatives=3)
    assert three < every  # fewer negatives in the denominator
    # by hand for anchor-wise draws: rebuild the same draw and compute Eq. 2 over own + chosen
    torch.manual_seed(1)
    own_block = torch.eye(6, dtype=torch.bool).repeat_interleave(2, dim=1)
    chosen = L.sample_negatives(~own_block, 3)
    sim = torch.nn.functional.normalize(x, dim=-1) @ torch.nn.functional.normalize(z, dim=-1).reshape(12, -1).T / 0.1
    pos = (sim.exp() * own_block).sum(1)
    expected = -(pos / (pos + (sim.exp() * chosen).sum(1))).log().mean()
    assert torch.allclose(three, expected, atol=1e-5)
    assert torch.allclose(L.infonce(x, z[:, 0], 0.1, negatives=100), L.infonce(x, z[:, 0], 0.1))
