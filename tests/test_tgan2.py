"""TGAN-v2 as published (Section III-D; Saito et al., IJCV 2020): multi-level rendering with frame subsampling,
one 3D-ResNet discriminator per level, dense generation at inference, and its losses (Eqs. 6-7) under the
one-stage update. `model.video_gan=single` stays the single-level GAN the tiny preset measured results/ with.

Run: python -m pytest tests/test_tgan2.py -q
"""
from __future__ import annotations

import json

import pytest
import torch

from csvr import losses as L
from csvr.config import ConfigError, apply_overrides, paper, tiny
from csvr.models.csvr import build_csvr
from csvr.models.video_gan import (MultiLevelDiscriminator, MultiLevelGenerator, VideoDiscriminator, build_video_gan,
                                   level_target, tgan2_levels)
from csvr.training.steps import _adversarial, stage_terms, video_terms
from tests.conftest import assert_one_stage_equals_phases, backward_for, random_batch

torch.set_num_threads(1)


def _tgan2(**overrides):
    return apply_overrides(tiny(), {"data.batch_size": 4, "model.video_gan": "tgan2", "model.fi_levels": 1,
                                    **overrides})


def _grads(params):
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]


@pytest.mark.parametrize("size, frames, levels", [(32, 8, 3), (112, 16, 4), (128, 16, 4), (64, 16, 4), (32, 4, 3),
                                                  (16, 8, 2), (24, 8, 2)])
def test_levels_are_derived_from_size_and_frames(size, frames, levels):
    assert tgan2_levels(size, frames) == levels
    assert size % 2 ** (levels - 1) == 0 and size // 2 ** (levels - 1) >= 8 and frames % 2 ** (levels - 1) == 0


@pytest.mark.parametrize("size, frames, levels", [(32, 8, 3), (112, 16, 4), (32, 8, 2)])
def test_generator_renders_every_level_at_its_resolution_and_frame_count(size, frames, levels):
    torch.manual_seed(0)
    gen = MultiLevelGenerator(16, 8, frames, size, 16, levels).train()
    out = gen.levels(torch.randn(3, 16))
    assert len(out) == levels
    previous = torch.arange(frames)
    for k, (video, idx) in enumerate(out):
        s = size // 2 ** (levels - 1 - k)
        assert video.shape == (3, 3, frames // 2 ** k, s, s)
        assert idx.shape == (frames // 2 ** k,)
        # a subsampling layer keeps every second frame of the previous level, from an offset of 0 or 1
        assert set(idx.tolist()) <= set(previous.tolist())
        if k > 0:
            assert torch.equal(idx, previous[int(previous.tolist().index(idx[0])) % 2::2])
            assert set(torch.diff(idx).tolist()) <= {2 ** k}
        previous = idx
    assert out[-1][0].shape[2] == frames // 2 ** (levels - 1)  # the full resolution sees the fewest frames


def test_subsampling_offsets_are_random():
    torch.manual_seed(0)
    gen = MultiLevelGenerator(16, 8, 8, 32, 16, 3)
    finest = {tuple(gen.levels(torch.randn(2, 16))[-1][1].tolist()) for _ in range(20)}
    assert finest == {(0, 4), (1, 5), (2, 6), (3, 7)}


@pytest.mark.parametrize("size, frames, levels", [(32, 8, 3), (112, 16, 4)])
def test_dense_output_is_every_frame_at_full_resolution_and_agrees_with_the_sparse_output(size, frames, levels):
    """Generate densely: (B, 3, T, S, S); its frames at the finest level's indices are that level's video
    (the blocks act frame by frame and batch norm is in inference mode)."""
    torch.manual_seed(0)
    gen = MultiLevelGenerator(16, 8, frames, size, 16, levels)
    for m in gen.modules():  # train a little so batch norm's running statistics are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    gen.eval()
    f_i, z = torch.randn(2, 16), torch.randn(2, 8)
    with torch.no_grad():
        dense = gen(f_i, z)
        finest, idx = gen.levels(f_i, z)[-1]
    assert dense.shape == (2, 3, frames, size, size)
    assert torch.allclose(dense[:, :, idx], finest, atol=1e-5)
    assert not torch.allclose(dense[:, :, :1], dense[:, :, 1:2])  # frames differ


def test_level_target_subsamples_frames_and_average_pools_space():
    video = torch.randn(2, 3, 8, 8, 8)
    idx = torch.tensor([1, 5])
    got = level_target(video, idx, 4)
    want = video[:, :, [1, 5]].reshape(2, 3, 2, 2, 4, 2, 4).mean(dim=(4, 6))
    assert got.shape == (2, 3, 2, 2, 2) and torch.allclose(got, want, atol=1e-6)
    assert torch.equal(level_target(video, torch.arange(8), 1), video)


def test_build_switch_and_presets():
    assert paper().model.video_gan == "tgan2" and tiny().model.video_gan == "single"
    cfg = _tgan2()
    model = build_csvr(cfg)
    for gan in (model.reconstructor, model.predictor):
        assert isinstance(gan.generator, MultiLevelGenerator) and isinstance(gan.discriminator, MultiLevelDiscriminator)
        assert len(gan.discriminator.critics()) == len(gan.generator.blocks) == 3
        assert all(isinstance(c, VideoDiscriminator) for c in gan.discriminator.critics())
    assert len(build_csvr(_tgan2(**{"model.video_levels": 2})).reconstructor.discriminator.critics()) == 2
    single = build_video_gan(32, 16, 8, 32, 32, 8, "single")
    assert single.discriminator.critics() == [single.discriminator]
    # the per-level discriminators are discriminator parameters (the one-stage update and the alternating phases)
    d_ids = {id(p) for p in model.discriminator_parameters()}
    assert all(id(p) in d_ids for c in model.predictor.discriminator.critics() for p in c.parameters())
    assert not {id(p) for p in model.predictor.generator.parameters()} & d_ids
    with pytest.raises(ConfigError, match="model.video_levels=5"):
        _tgan2(**{"model.video_levels": 5})  # 8 frames cannot be halved four times
    with pytest.raises(ConfigError, match="model.video_levels"):
        _tgan2(**{"model.video_levels": -1})


@pytest.fixture(scope="module")
def tgan2_setup():
    cfg = _tgan2()
    torch.manual_seed(0)
    model = build_csvr(cfg).double().train()
    batch = {k: v.double() if v.is_floating_point() else v for k, v in random_batch(cfg).items()}
    return cfg, model, batch


def test_each_levels_discriminator_and_block_gets_gradients(tgan2_setup):
    cfg, model, batch = tgan2_setup
    gan = model.reconstructor
    model.zero_grad(set_to_none=True)
    f_i = torch.randn(4, cfg.model.feature_dim, dtype=torch.float64)
    t = video_terms(gan, f_i, batch["clip"], "reconstruct", cfg.loss, "one_stage", g_weight=1.0)
    (t.d + t.g).backward()
    for critic in gan.discriminator.critics():
        assert sum(p.grad.abs().sum() for p in critic.parameters() if p.grad is not None) > 0
    for part in (*gan.generator.blocks, *gan.generator.renders, gan.generator.abstract):
        assert sum(p.grad.abs().sum() for p in part.parameters() if p.grad is not None) > 0
    assert {f"reconstruct/level{k}/{x}" for k in range(3) for x in ("d_real", "d_fake", "g_adv", "l2")} <= set(t.logs)
    assert torch.equal(t.logs["reconstruct/l2"], t.logs["reconstruct/level2/l2"])


@pytest.mark.parametrize("adversarial, video_l2", [(1.0, 1.0), (2.0, 0.5)])
def test_one_stage_matches_separate_phases_with_one_discriminator_per_level(tgan2_setup, adversarial, video_l2):
    """OSGAN stays exact: one backward of d + g gives every level's discriminator its own gradient and the
    generator the gradient of its own loss, as a discriminator phase and a generator phase would."""
    cfg, model, batch = tgan2_setup
    lc = apply_overrides(cfg, {"loss.video_adversarial": adversarial, "loss.video_l2": video_l2}).loss
    gan = model.predictor
    f_i = torch.randn(4, cfg.model.feature_dim, dtype=torch.float64)

    def run(mode):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(2)  # same z_v and the same subsampling offsets in every mode
        t = video_terms(gan, f_i, batch["future"], "predict", lc, mode, g_weight=0.5)
        backward_for(t, mode)
        return _grads(gan.discriminator.parameters()), _grads(gan.generator.parameters())

    assert_one_stage_equals_phases(run)


def test_adversarial_term_is_the_mean_over_levels_and_l2_is_the_finest_levels(tgan2_setup):
    cfg, model, batch = tgan2_setup
    lc = apply_overrides(cfg, {"loss.video_adversarial": 2.0, "loss.video_l2": 0.5}).loss
    gan, target = model.reconstructor, batch["clip"]
    f_i = torch.randn(4, cfg.model.feature_dim, dtype=torch.float64)
    with torch.no_grad():
        torch.manual_seed(3)
        levels = gan.generator.levels(f_i)
        torch.manual_seed(3)
        g = video_terms(gan, f_i, target, "reconstruct", lc, "g", g_weight=0.5)
        torch.manual_seed(3)
        d = video_terms(gan, f_i, target, "reconstruct", lc, "d", g_weight=0.5)
    fakes = [v for v, _ in levels]
    reals = [level_target(target, idx, target.shape[-1] // v.shape[-1]) for v, idx in levels]
    logits = [(c(r), c(f)) for c, r, f in zip(gan.discriminator.critics(), reals, fakes)]
    g_adv = torch.stack([L.g_adv_loss(f) for _, f in logits]).mean()
    finest_l2 = L.pixel_l2(fakes[-1], target[:, :, levels[-1][1]])
    assert torch.allclose(g.g, 0.5 * (2.0 * g_adv + 0.5 * finest_l2))
    assert torch.allclose(d.d, 2.0 * torch.stack([L.d_loss(r, f) for r, f in logits]).mean())
    assert torch.allclose(g.logs["reconstruct/l2"], L.pixel_l2(fakes[-1], target[:, :, levels[-1][1]]))


def test_single_is_the_single_level_loss_it_was():
    """model.video_gan=single: one level, the dense video, and exactly the former one-pair loss."""
    cfg = apply_overrides(tiny(), {"data.batch_size": 4, "model.fi_levels": 1})
    torch.manual_seed(0)
    model = build_csvr(cfg).double().train()
    batch = {k: v.double() if v.is_floating_point() else v for k, v in random_batch(cfg).items()}
    gan, f_i = model.reconstructor, torch.randn(4, cfg.model.feature_dim, dtype=torch.float64)
    for mode in ("one_stage", "d", "g"):
        torch.manual_seed(4)
        got = video_terms(gan, f_i, batch["clip"], "reconstruct", cfg.loss, mode, g_weight=0.5)
        torch.manual_seed(4)
        fake = gan.generator(f_i)
        want = _adversarial(gan.discriminator, batch["clip"], fake, L.pixel_l2(fake, batch["clip"]), "reconstruct",
                            cfg.loss.video_adversarial, mode, 0.5, cfg.loss.video_l2, 0.0)
        assert set(got.logs) == set(want.logs) == ({"reconstruct/l2", "reconstruct/g_adv"} if mode == "g" else
                                                   {"reconstruct/l2", "reconstruct/g_adv", "reconstruct/d_real",
                                                    "reconstruct/d_fake"})
        assert torch.allclose(torch.as_tensor(got.d + got.g), torch.as_tensor(want.d + want.g), rtol=1e-12)


@pytest.mark.parametrize("stage", ["video", "joint"])
def test_video_and_joint_stages_run_with_tgan2(tgan2_setup, stage):
    cfg, model, batch = tgan2_setup
    model.zero_grad(set_to_none=True)
    t = stage_terms(model, batch, stage, cfg, "one_stage")
    (t.d + t.g).backward()
    assert torch.isfinite(t.d + t.g)
    assert {"reconstruct/l2", "predict/l2", "predict/level0/d_real"} <= set(t.logs)


@pytest.mark.slow
def test_train_cli_runs_with_tgan2(tmp_path, monkeypatch, capsys):
    from csvr import train

    monkeypatch.setattr(train, "RUNS", tmp_path)
    assert train.main(["--preset", "tiny", "--steps", "2", "--set", "model.video_gan=tgan2",
                       "--set", "data.max_videos=8"]) == 0  # 8 train / 8 test videos: the wiring, not a result
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    result = next(e for e in lines if e["kind"] == "result")
    assert "pretext/video_l2_reconstruct" in result and "eval/synthetic/retrieval_r1" in result
    logged = {k for e in lines if e["kind"] == "log" for k in e}
    assert {f"train/{stage}/{gan}/level{k}/d_real" for stage in ("video", "joint") for gan in ("reconstruct", "predict")
            for k in range(3)} <= logged
    ran = json.loads((train.latest_run_dir(tmp_path) / "artifacts" / "config.json").read_text())
    assert ran["model"]["video_gan"] == "tgan2"


def test_video_gan_fields_key_the_video_and_joint_stages_only():
    from csvr.stages.table import STAGE_KEYS, stage_key

    for key in ("model.video_gan", "model.video_levels"):
        assert key in STAGE_KEYS["video"] and key in STAGE_KEYS["joint"]
        assert key not in STAGE_KEYS["pose"] and key not in STAGE_KEYS["context"]
    single, multi = tiny(), apply_overrides(tiny(), {"model.video_gan": "tgan2"})
    assert stage_key("video", single) != stage_key("video", multi) != stage_key("video", apply_overrides(
        multi, {"model.video_levels": 2}))
    assert stage_key("context", single) == stage_key("context", multi)
