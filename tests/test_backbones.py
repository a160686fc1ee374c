"""Shape, gradient and layout tests for csvr.models.backbones. Run: python -m pytest tests/test_backbones.py -q"""
import pytest
import torch
from torchvision.models import video as tv_video
from torchvision.models.resnet import BasicBlock

from csvr.models.backbones import FlexMaxPool3d, VIDEO_NETS, build_video_net, r2d10

torch.set_num_threads(1)
BACKBONES = sorted(VIDEO_NETS)
OUT_DIM_64 = {"c3d": 512, "r2plus1d": 512, "r3d": 512, "s3d": 1024}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("backbone", BACKBONES)
def test_tiny_forward_backward(backbone):
    torch.manual_seed(0)
    net = build_video_net(backbone, width=8)
    feats = net(torch.randn(2, 3, 8, 32, 32))  # the tiny preset's clip
    assert feats.shape == (2, net.out_dim)
    assert net.out_dim == OUT_DIM_64[backbone] // 8
    feats.square().mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_smallest_supported_clip(backbone):
    net = build_video_net(backbone, width=4).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 4, 16, 16)).shape == (1, net.out_dim)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_paper_size_forward(backbone):
    net = build_video_net(backbone, width=64).eval()
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 16, 112, 112))
    assert feats.shape == (1, OUT_DIM_64[backbone]) and net.out_dim == OUT_DIM_64[backbone]


@pytest.mark.parametrize("backbone, reference", [("r3d", tv_video.r3d_18), ("r2plus1d", tv_video.r2plus1d_18)])
def test_video_resnet_matches_torchvision(backbone, reference):
    tv, ours = reference(), build_video_net(backbone, 64)
    assert n_params(ours) == n_params(tv) - n_params(tv.fc)
    theirs = {k: v.shape for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.features.state_dict().items()} == theirs  # torchvision weights load


def test_s3d_matches_torchvision_features():
    ours = build_video_net("s3d", 64).features.state_dict()
    theirs = tv_video.s3d().features.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_flex_pool_equals_maxpool_when_it_fits_and_skips_short_dims():
    pool, x = FlexMaxPool3d(2, 2, 0), torch.randn(1, 2, 4, 6, 6)
    assert torch.equal(pool(x), torch.nn.MaxPool3d(2, 2, 0)(x))
    assert pool(torch.randn(1, 2, 1, 6, 6)).shape == (1, 2, 1, 3, 3)


@pytest.mark.parametrize("size, width", [(112, 64), (32, 8)])
def test_r2d10_shapes(size, width):
    net = r2d10(width).eval()
    with torch.no_grad():
        feats = net(torch.randn(2, 3, size, size))
    assert feats.shape == (2, 8 * width) and net.out_dim == 8 * width
    stages = [getattr(net.features, f"layer{i}") for i in range(1, 5)]
    assert all(isinstance(s, BasicBlock) for s in stages)  # one BasicBlock per stage


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="c3d.*r2plus1d.*r3d.*s3d"):
        build_video_net("resnet50", 64)
