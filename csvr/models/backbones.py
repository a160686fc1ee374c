"""Feature extractors for CSVR: the V-network (C3D, R(2+1)D-18, R3D-18, S3D) and the I-network (R2D-10).

Every net maps its input to globally average-pooled features and has an `out_dim` attribute:

    video_net = build_video_net("r2plus1d", width=64)   # (B, 3, T, H, W) -> (B, 512)
    iframe_net = r2d10(width=64)                        # (B, 3, H, W)    -> (B, 512)

`width` is the base channel count; width=64 gives the paper's nets (the r3d_18 / r2plus1d_18 / S3D layouts
of torchvision, minus their classifiers), smaller widths scale every channel count by width/64 (tiny preset).
The nets work for T >= 4 and H, W >= 16: late pools that no longer fit the clip leave that dim unpooled.

    out_dim      width=64   width=8
    c3d            512        64
    r2plus1d       512        64
    r3d            512        64
    s3d           1024       128
    r2d10          512        64
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock as BasicBlock2d
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, Conv3DSimple
from torchvision.models.video.s3d import SepInceptionBlock3D, TemporalSeparableConv
from torchvision.ops.misc import Conv3dNormActivation

STAGE_MULTIPLIERS = (1, 2, 4, 8)  # ResNet stage widths = width * these (64..512 at width 64)


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling over every non-channel dim: (B, C, ...) -> (B, C)."""
    return x.flatten(2).mean(dim=2)


class PooledNet(nn.Module):
    """`features` followed by global average pooling over all non-channel dims: (B, C, ...) -> (B, C)."""

    def __init__(self, features: nn.Module, out_dim: int):
        super().__init__()
        self.features = features
        self.out_dim = out_dim
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_pool(self.features(x))

    def maps(self, x: torch.Tensor, levels: int) -> list[torch.Tensor]:
        """The last map at each of the network's last `levels` spatial resolutions, coarsest first: maps[0] is
        `features(x)`, maps[1] the output of the last layer before the final spatial downsampling, and so on (for
        the ResNets the outputs of stages 4, 3, 2, ...). `model.fi_levels` reads them (FaceShifter's multi-level
        attributes [118])."""
        by_size: dict[tuple[int, ...], torch.Tensor] = {}
        for layer in self.features:
            x = layer(x)
            by_size[tuple(x.shape[-2:])] = x  # a resolution keeps its first position, its latest map
        found = list(by_size.values())[::-1]
        if levels > len(found):
            raise ValueError(f"model.fi_levels={levels}, but this V-network has {len(found)} spatial resolutions "
                             f"at this input ({tuple(x.shape)}); use at most {len(found)}")
        return found[:levels]

    @torch.no_grad()
    def map_shapes(self, levels: int, frames: int, size: int) -> list[tuple[int, int, int, int]]:
        """(C', T', H', W') of `maps()` for a (1, 3, frames, size, size) clip: one dry run in eval mode."""
        was_training = self.training
        self.eval()
        try:
            return [tuple(m.shape[1:]) for m in self.maps(torch.zeros(1, 3, frames, size, size), levels)]
        finally:
            self.train(was_training)  # (B, out_dim, T', H', W') or (B, out_dim, H', W') -> (B, out_dim)


class FlexMaxPool3d(nn.MaxPool3d):
    """nn.MaxPool3d that leaves a dim unpooled when the (padded) dim is shorter than the kernel.

    Identical to nn.MaxPool3d whenever that one works; lets e.g. S3D's last (2, 2, 2) pool run at T' = 1.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, stride, padding = (_triple(v) for v in (self.kernel_size, self.stride, self.padding))
        fits = [n + 2 * p >= k for n, k, p in zip(x.shape[2:], kernel, padding)]  # per (T, H, W)
        kernel = [k if ok else 1 for k, ok in zip(kernel, fits)]
        stride = [s if ok else 1 for s, ok in zip(stride, fits)]
        padding = [p if ok else 0 for p, ok in zip(padding, fits)]
        return nn.functional.max_pool3d(x, kernel, stride, padding, self.dilation, self.ceil_mode)


def _triple(v: int | tuple[int, ...]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) convs with zero bias; BatchNorm weight 1, bias 0 (as torchvision)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _scaled(channels: int, width: int) -> int:
    """A channel count of the width-64 net, scaled to `width` (at least 1)."""
    return max(1, channels * width // 64)


def _conv_bn_relu3d(cin: int, cout: int, kernel, stride=1, padding=0) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]


# ---------------------------------------------------------------- video ResNets (R3D-18, R(2+1)D-18)

def basic_stem(width: int) -> nn.Sequential:
    """torchvision's BasicStem with `width` outputs: (B, 3, T, H, W) -> (B, width, T, H/2, W/2)."""
    return nn.Sequential(*_conv_bn_relu3d(3, width, (3, 7, 7), (1, 2, 2), (1, 3, 3)))


def r2plus1d_stem(width: int) -> nn.Sequential:
    """torchvision's R2Plus1dStem (3 -> 45 -> 64 at width 64): (B, 3, T, H, W) -> (B, width, T, H/2, W/2)."""
    mid = _scaled(45, width)
    return nn.Sequential(*_conv_bn_relu3d(3, mid, (1, 7, 7), (1, 2, 2), (0, 3, 3)),
                         *_conv_bn_relu3d(mid, width, (3, 1, 1), 1, (1, 0, 0)))


def _video_stage(inplanes: int, planes: int, blocks: int, stride: int, conv_builder) -> nn.Sequential:
    """`blocks` torchvision BasicBlocks; the first one changes width and strides like VideoResNet._make_layer."""
    downsample = None
    if stride != 1 or inplanes != planes:
        ds_stride = conv_builder.get_downsample_stride(stride)
        downsample = nn.Sequential(nn.Conv3d(inplanes, planes, 1, ds_stride, bias=False), nn.BatchNorm3d(planes))
    layers = [BasicBlock(inplanes, planes, conv_builder, stride, downsample)]
    layers += [BasicBlock(planes, planes, conv_builder) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def video_resnet(stem: nn.Module, conv_builder, width: int, blocks=(2, 2, 2, 2)) -> PooledNet:
    """Generic VideoResNet: stem (-> width channels) + 4 stages of widths width*(1, 2, 4, 8).

    Stages 2-4 stride 2 in T, H and W: (B, 3, T, H, W) -> (B, 8*width, T/8, H/16, W/16) -> pooled (B, 8*width).
    """
    layers = nn.Sequential()
    layers.add_module("stem", stem)
    inplanes = width
    for i, (mult, n) in enumerate(zip(STAGE_MULTIPLIERS, blocks)):
        planes = width * mult
        layers.add_module(f"layer{i + 1}", _video_stage(inplanes, planes, n, 1 if i == 0 else 2, conv_builder))
        inplanes = planes
    return PooledNet(layers, out_dim=inplanes)


def r3d(width: int) -> PooledNet:
    """R3D-18 (Tran et al. 2018): the torchvision r3d_18 layout without its fc at width 64."""
    return video_resnet(basic_stem(width), Conv3DSimple, width)


def r2plus1d(width: int) -> PooledNet:
    """R(2+1)D-18 (Tran et al. 2018): the torchvision r2plus1d_18 layout without its fc at width 64."""
    return video_resnet(r2plus1d_stem(width), Conv2Plus1D, width)


# ---------------------------------------------------------------- C3D

C3D_WIDTHS = (64, 128, 256, 256, 512, 512, 512, 512)  # conv1a, conv2a, conv3a/b, conv4a/b, conv5a/b
C3D_POOL_AFTER = {0: (1, 2, 2), 1: (2, 2, 2), 3: (2, 2, 2), 5: (2, 2, 2), 7: (2, 2, 2)}  # conv index -> pool


def c3d(width: int) -> PooledNet:
    """C3D (Tran et al. 2015) with BN+ReLU after each conv and global average pooling instead of fc6/fc7.

    Pools use ceil_mode (as Caffe's did), so a dim of size 1 stays 1:
    (B, 3, 16, 112, 112) -> pool5 -> (B, 8*width, 1, 4, 4) -> pooled (B, 8*width).
    """
    layers, cin = [], 3
    for i, channels in enumerate(C3D_WIDTHS):
        cout = _scaled(channels, width)
        layers += _conv_bn_relu3d(cin, cout, 3, 1, 1)
        if i in C3D_POOL_AFTER:
            layers.append(nn.MaxPool3d(C3D_POOL_AFTER[i], C3D_POOL_AFTER[i], ceil_mode=True))
        cin = cout
    return PooledNet(nn.Sequential(*layers), out_dim=cin)


# ---------------------------------------------------------------- S3D

# torchvision S3D's inception blocks (b0_out, b1_mid, b1_out, b2_mid, b2_out, b3_out); "pool" = a max-pool.
S3D_BLOCKS = ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "pool3",
              (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
              (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "pool2",
              (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128))


def s3d(width: int) -> PooledNet:
    """S3D (Xie et al. 2018): exactly torchvision's `s3d().features` at width 64 (1024-dim), scaled below.

    Global average pooling replaces torchvision's fixed AvgPool3d((2, 7, 7)), so it runs at 112x112:
    (B, 3, 16, 112, 112) -> (B, 1024, 2, 4, 4) -> pooled (B, 1024). BatchNorm keeps torchvision's eps=1e-3 but
    uses the default momentum 0.1 (torchvision's 1e-3 suits finetuning, not training from scratch).
    """
    norm = partial(nn.BatchNorm3d, eps=1e-3)
    c = partial(_scaled, width=width)
    layers = [TemporalSeparableConv(3, c(64), 7, 2, 3, norm),  # (B, c64, T/2, H/2, W/2)
              nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),  # H/4
              Conv3dNormActivation(c(64), c(64), kernel_size=1, stride=1, norm_layer=norm),
              TemporalSeparableConv(c(64), c(192), 3, 1, 1, norm),
              nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))]  # (B, c192, T/2, H/8, W/8)
    cin = c(192)
    for block in S3D_BLOCKS:
        if block == "pool3":
            layers.append(nn.MaxPool3d(3, 2, 1))  # T/4, H/16
        elif block == "pool2":
            layers.append(FlexMaxPool3d(2, 2, 0))  # T/8, H/32 (skipped along a dim already at 1)
        else:
            b0, b1m, b1, b2m, b2, b3 = (c(v) for v in block)
            layers.append(SepInceptionBlock3D(cin, b0, b1m, b1, b2m, b2, b3, norm))
            cin = b0 + b1 + b2 + b3
    return PooledNet(nn.Sequential(*layers), out_dim=cin)


# ---------------------------------------------------------------- the V-network switch

VIDEO_NETS: dict[str, Callable[[int], PooledNet]] = {"c3d": c3d, "r2plus1d": r2plus1d, "r3d": r3d, "s3d": s3d}


def build_video_net(backbone: str, width: int) -> PooledNet:
    """The V-network named by `model.backbone`: (B, 3, T, H, W) -> (B, out_dim)."""
    if backbone not in VIDEO_NETS:
        raise ValueError(f"unknown backbone {backbone!r}; valid: {sorted(VIDEO_NETS)}")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    return VIDEO_NETS[backbone](width)


# ---------------------------------------------------------------- the I-network

def r2d10(width: int) -> PooledNet:
    """R2D-10: a 2D ResNet with one BasicBlock per stage, widths width*(1, 2, 4, 8).

    (B, 3, H, W) -> stem conv7x7/2 + maxpool/2 -> (B, width, H/4, W/4) -> stages -> (B, 8*width, H/32, W/32)
    -> pooled (B, 8*width).
    """
    layers = nn.Sequential()
    layers.add_module("stem", nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                            nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)))
    inplanes = width
    for i, mult in enumerate(STAGE_MULTIPLIERS):
        planes, stride = width * mult, 1 if i == 0 else 2
        downsample = None
        if stride != 1 or inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers.add_module(f"layer{i + 1}", BasicBlock2d(inplanes, planes, stride, downsample))
        inplanes = planes
    return PooledNet(layers, out_dim=inplanes)
