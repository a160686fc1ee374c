"""Shape and wiring tests of the CSVR parts (csvr.models.*) at the tiny size, and one paper-size forward.

Run: python -m pytest tests/test_models.py -q
"""
import pytest
import torch

from csvr import losses as L
from csvr.config import apply_overrides, paper, tiny
from csvr.models.backbones import VIDEO_NETS
from csvr.models.csvr import build_csvr
from csvr.models.integration import (AdaINIntegration, AdaINMapIntegration, ConcatIntegration,
                                     ConcatMapIntegration, pooled)
from csvr.training.loop import stage_parameters
from tests.conftest import random_batch

torch.set_num_threads(1)
BACKBONES = sorted(VIDEO_NETS)


def tiny4(**overrides):
    return apply_overrides(tiny(), {"data.batch_size": 4, **overrides})


def check_parts(model, cfg, batch):
    d, c = cfg.data, cfg.model.feature_dim
    b, s, n = d.batch_size, d.size, cfg.model.joints
    k = batch["iframes"].shape[1]
    feats = model.features(batch["clip"], batch["poses"], batch["pose_mask"])
    assert feats["f_d"].shape == feats["f_s"].shape == pooled(feats["f_i"]).shape == (b, c)
    maps = model.context.video_net.maps(batch["clip"], cfg.model.fi_levels)
    f_i_shapes = [(b, c, *m.shape[2:]) for m in maps] if cfg.model.fi_shape == "map" else [(b, c)]
    f_i = feats["f_i"] if isinstance(feats["f_i"], tuple) else (feats["f_i"],)
    assert [tuple(m.shape) for m in f_i] == f_i_shapes
    assert model.context.iframe_embedding(batch["iframes"]).shape == (b, k, c)
    pred, f_d = model.pose_generator(batch["poses"], batch["pose_mask"])
    assert pred.shape == (b, d.future_len, n, 2) and f_d.shape == (b, c)
    real = model.pose_discriminator(batch["future_poses"], batch["poses"], batch["pose_mask"],
                                    batch["future_pose_mask"])
    assert real.shape == (b,)
    assert model.pose_discriminator(pred, batch["poses"], batch["pose_mask"], batch["future_pose_mask"]).shape == (b,)
    for gan, frames in ((model.reconstructor, d.clip_len), (model.predictor, d.future_len)):
        video = gan.generator(feats["f_i"])
        assert video.shape == (b, 3, frames, s, s)
        assert all(critic(video).shape == (b,) for critic in gan.discriminator.critics())  # dense = finest level
    assert all(torch.isfinite(f).all() for f in (feats["f_d"], feats["f_s"], *f_i))


@pytest.mark.parametrize("fi_shape, fi_levels, video_gan", [("map", 1, "single"), ("vector", 1, "single"),
                                                            ("map", 3, "single"), ("map", 3, "tgan2")])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_part_shapes_per_backbone(backbone, fi_shape, fi_levels, video_gan):
    """model.fi_levels=3: one f_i map per V-network resolution, coarsest first, all joining the generators."""
    cfg = tiny4(**{"model.backbone": backbone, "model.fi_shape": fi_shape, "model.fi_levels": fi_levels,
                   "model.video_gan": video_gan})
    torch.manual_seed(0)
    check_parts(build_csvr(cfg), cfg, random_batch(cfg))


def test_v_network_maps_are_its_last_map_per_resolution():
    """PooledNet.maps: [0] is the map `features` ends in; the others are the outputs of R(2+1)D's stages 3 and 2
    (the last layer at each finer resolution), each twice the size of the one before."""
    torch.manual_seed(0)
    net = VIDEO_NETS["r2plus1d"](8).eval()
    clip = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        maps = net.maps(clip, 3)
        stem_to_2 = net.features[:3](clip)
    assert torch.equal(maps[0], net.features(clip)) and torch.equal(maps[2], stem_to_2)
    assert [m.shape[-1] for m in maps] == [2, 4, 8]
    assert net.map_shapes(3, 8, 32) == [tuple(m.shape[1:]) for m in maps]
    with pytest.raises(ValueError, match="fi_levels=9"):
        net.maps(clip, 9)


@pytest.mark.parametrize("video_gan", ["single", "tgan2"])
def test_finer_f_i_levels_reach_the_generated_pixels_where_they_change(video_gan):
    """model.fi_levels=3: changing the finest f_i map (8 x 8) in its top-left quarter only, the coarse maps kept,
    changes the top-left of the frames and hardly the bottom-right; with fi_levels=1 (the paper preset) the
    generators have no parameters for finer levels, so stores of one-level models load unchanged."""
    cfg = tiny4(**{"model.video_gan": video_gan, "model.fi_levels": 3})
    torch.manual_seed(0)
    gen = build_csvr(cfg).reconstructor.generator.eval()
    c = cfg.model.feature_dim
    f_i = (torch.randn(2, c, 1, 2, 2), torch.randn(2, c, 2, 4, 4), torch.randn(2, c, 4, 8, 8))
    changed = (*f_i[:2], f_i[2].clone())
    changed[2][..., :4, :4] += 3.0
    z = torch.randn(2, gen.noise_dim)
    with torch.no_grad():
        diff = (gen(changed, z) - gen(f_i, z)).abs().mean(dim=(0, 1, 2))  # (S, S)
    q = cfg.data.size // 4
    assert diff[:q, :q].mean() > 5 * diff[-q:, -q:].mean(), diff
    one_level = build_csvr(tiny4(**{"model.video_gan": video_gan, "model.fi_levels": 1})).reconstructor.generator
    assert not any("skips" in k for k in one_level.state_dict())


LAYERS = {("adain", "map"): AdaINMapIntegration, ("concat", "map"): ConcatMapIntegration,
          ("adain", "vector"): AdaINIntegration, ("concat", "vector"): ConcatIntegration}


@pytest.mark.parametrize("layer", [2, 4, 6])
@pytest.mark.parametrize("integration,fi_shape", sorted(LAYERS))
def test_f_d_from_every_encoder_layer_and_integration(layer, integration, fi_shape):
    cfg = tiny4(**{"model.pose_encoder_layer": layer, "model.integration": integration, "model.fi_shape": fi_shape,
                   "model.fi_levels": 1})
    model = build_csvr(cfg)
    assert isinstance(model.integration, LAYERS[integration, fi_shape])
    assert model.pose_generator.head.conv[0].in_channels == model.pose_generator.encoder.widths[layer - 1]
    batch = random_batch(cfg)
    feats = model.features(batch["clip"], batch["poses"], batch["pose_mask"])
    assert feats["f_d"].shape == pooled(feats["f_i"]).shape == (4, cfg.model.feature_dim)


def test_generator_and_discriminator_parameters_partition_the_model():
    model = build_csvr(tiny4())
    g = {id(p) for p in model.generator_parameters()}
    d = {id(p) for p in model.discriminator_parameters()}
    named = dict(model.named_parameters())
    d_names = {n for n, p in named.items() if id(p) in d}
    # the discriminators are exactly D_p, D_v^r and D_v^p, by name, and everything else is the generator side
    assert d_names == {n for n in named if n.startswith(("pose_discriminator.", "reconstructor.discriminator.",
                                                         "predictor.discriminator."))}
    assert {n for n, p in named.items() if id(p) in g} == set(named) - d_names
    # the branch stages train only their own parts
    ctx = {id(p) for p in model.context.parameters()}
    assert {id(p) for p in stage_parameters(model, "context")[0]} == ctx and not stage_parameters(model, "context")[1]
    pose_g, pose_d = stage_parameters(model, "pose")
    assert {id(p) for p in pose_d} == {id(p) for p in model.pose_discriminator.parameters()}
    assert not {id(p) for p in pose_g} & ctx
    video_g, video_d = stage_parameters(model, "video")
    assert not {id(p) for p in video_g} & (ctx | {id(p) for p in model.pose_generator.encoder.parameters()})
    assert {id(p) for p in video_d} <= d


def test_adain_follows_eqs_3_to_5():
    """f_i = (1 - M) (x) (gamma(f_d) fs_bar + beta(f_d)) + M (x) f_s, with M = sigmoid(conv(fs_bar))."""
    torch.manual_seed(0)
    layer = AdaINIntegration(6).train()
    f_d, f_s = torch.randn(5, 6), torch.randn(5, 6) * 3 + 1
    fs_bar = (f_s - f_s.mean(0)) / torch.sqrt(f_s.var(0, unbiased=False) + layer.norm.eps)
    lin = lambda conv, v: v @ conv.weight[..., 0].T + conv.bias  # noqa: E731  a 1x1 Conv1d on (B, C)
    m = torch.sigmoid(lin(layer.mask, fs_bar))
    expected = (1 - m) * (lin(layer.gamma, f_d) * fs_bar + lin(layer.beta, f_d)) + m * f_s
    assert torch.allclose(layer(f_d, f_s), expected, atol=1e-5)


def test_adain_on_the_map_follows_eqs_3_to_5_per_position():
    """model.fi_shape=map: f_s = align(V map); gamma_d, beta_d from f_d broadcast over the positions; M from a
    3x3x3 convolution of the normalised map, so it differs between positions."""
    torch.manual_seed(0)
    layer = AdaINMapIntegration(6, 10).train()
    f_d, v_map = torch.randn(5, 6), torch.randn(5, 10, 2, 3, 3) * 2 + 1
    fs = torch.einsum("bcthw,oc->bothw", v_map, layer.align.weight[..., 0, 0, 0]) + layer.align.bias[:, None, None, None]
    mu, var = fs.mean((0, 2, 3, 4), keepdim=True), fs.var((0, 2, 3, 4), unbiased=False, keepdim=True)
    fs_bar = (fs - mu) / torch.sqrt(var + layer.norm.eps)
    m = torch.sigmoid(torch.nn.functional.conv3d(fs_bar, layer.mask.weight, layer.mask.bias, padding=1))
    gamma, beta = (lin(f_d)[:, :, None, None, None] for lin in (layer.gamma, layer.beta))
    expected = (1 - m) * (gamma * fs_bar + beta) + m * fs
    out = layer(f_d, None, v_map)
    assert out.shape == (5, 6, 2, 3, 3) and torch.allclose(out, expected, atol=1e-5)
    assert m.std(dim=(2, 3, 4)).min() > 0  # the mask is spatial, not one value per channel


@pytest.mark.parametrize("video_gan", ["single", "tgan2"])
def test_map_generators_render_where_the_map_changes(video_gan):
    """With f_i as a map the generators are spatially conditioned: moving f_i up in the top-left cell and down in
    the bottom-right one (the pooled f_i stays the same) changes those corners of the frames more than the two
    corners whose cells did not change."""
    cfg = tiny4(**{"model.video_gan": video_gan, "model.fi_levels": 1})
    torch.manual_seed(0)
    gen = build_csvr(cfg).reconstructor.generator.eval()
    f_i, z = torch.randn(2, cfg.model.feature_dim, 1, 2, 2), torch.randn(2, gen.noise_dim)
    changed = f_i.clone()
    changed[..., 0, 0] += 3.0
    changed[..., 1, 1] -= 3.0
    assert torch.allclose(pooled(changed), pooled(f_i), atol=1e-5)
    with torch.no_grad():
        diff = (gen(changed, z) - gen(f_i, z)).abs().mean(dim=(0, 1, 2))  # (S, S)
    q = cfg.data.size // 4
    moved = diff[:q, :q].mean() + diff[-q:, -q:].mean()
    kept = diff[:q, -q:].mean() + diff[-q:, :q].mean()
    assert moved > 1.5 * kept, (moved, kept)

def test_pose_generator_starts_at_copy_last_and_is_conditional_and_stochastic():
    cfg = tiny4()
    torch.manual_seed(0)
    gen = build_csvr(cfg).pose_generator.eval()
    batch = random_batch(cfg)
    poses, mask = batch["poses"], batch["pose_mask"]
    z = torch.randn(4, cfg.model.pose_noise_dim)
    with torch.no_grad():  # zero offsets at initialisation: exactly the copy-last-pose baseline
        start, _ = gen(poses, mask, z)
        assert torch.equal(start, L.copy_last_pose(poses, mask, cfg.data.future_len))
        torch.nn.init.normal_(gen.decoder.convs[-1].weight, std=0.1)  # as after some training
        a, _ = gen(poses, mask, z)
        b, _ = gen(poses, mask, z)
        c, _ = gen(poses, mask, z + 1)
        moved = poses.clone()
        moved[:, :-1] += 0.1  # same last pose, different history
        d, _ = gen(moved, mask, z)
    assert torch.equal(a, b) and not torch.allclose(a, c)  # stochastic in z_p
    assert not torch.allclose(a, d)  # conditional on the whole of P_in, not only on the last pose


def test_paper_size_full_forward():
    """One 16 x 112 x 112 paper-width forward through every part (C3D, the cheapest V-network on a CPU)."""
    cfg = apply_overrides(paper(), {"data.batch_size": 2, "model.backbone": "c3d"})
    torch.manual_seed(0)
    model = build_csvr(cfg).eval()
    batch = {k: v[:1] for k, v in random_batch(cfg).items()}
    with torch.no_grad():
        feats = model.features(batch["clip"], batch["poses"], batch["pose_mask"])
        assert feats["f_d"].shape == feats["f_s"].shape == (1, 512)
        assert feats["f_i"].shape == (1, 512, 1, 4, 4)  # model.fi_shape=map: C3D's last map at 16 x 112 x 112
        assert model.context.iframe_embedding(batch["iframes"]).shape == (1, 16 * 4 // 12 + 1, 512)
        pred, _ = model.pose_generator(batch["poses"], batch["pose_mask"])
        assert pred.shape == (1, 16, 33, 2)
        for gan in (model.reconstructor, model.predictor):
            video = gan.generator(feats["f_i"])
            assert video.shape == (1, 3, 16, 112, 112)
            assert gan.discriminator.critics()[-1](video).shape == (1,)  # TGAN-v2's full-resolution critic
