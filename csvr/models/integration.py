"""Feature integration layer (Section III-D, Eqs. 3-5, Fig. 2) and the concat variant of Table I.

`model.fi_shape` says what f_s is when it enters the layer (DESIGN.md, "f_i as a map (Section III-D, [118])"):
  map     the V-network's last feature map (B, C', T', H', W') before global pooling, aligned to C channels by a
          1x1x1 convolution. Eq. 3 normalises "channel-wise activations", Eq. 4's gamma_d, beta_d come from a
          "convolution of f_d" and "share the same tensor dimensions" with the normalised f_s, and the mask M is
          element-wise: the adaptive attentional denormalisation of FaceShifter [118], which works on activation
          maps. f_i is then a map (B, C, T', H', W'): the generators see where things are.
  vector  f_s is the pooled embedding x* (B, C) of the context branch, handled as a (B, C, 1) map so the
          "convolution of f_d" is a pointwise Conv1d (the reading results/ before this switch were measured with).
The feature downstream tasks read is always the vector `pooled(f_i)` (B, C).

    integration = build_integration("adain", "map", dim=512, video_dim=512)
    f_i = integration(f_d, f_s, v_map)     # f_d (B, C), f_s (B, C), v_map (B, C', T', H', W')
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from csvr.config import FiShape, Integration
from csvr.models.backbones import global_pool


FiTensor = Tensor | tuple[Tensor, ...]  # f_i: a vector, a map, or (model.fi_levels > 1) maps coarsest first


def coarsest(f_i: FiTensor) -> Tensor:
    """The f_i of the V-network's last map: f_i itself, or the first of several levels."""
    return f_i[0] if isinstance(f_i, tuple) else f_i


def finer(f_i: FiTensor) -> tuple[Tensor, ...]:
    """The finer levels of a multi-level f_i (`model.fi_levels` > 1), coarse to fine; () otherwise."""
    return f_i[1:] if isinstance(f_i, tuple) else ()


def detached(f_i: FiTensor) -> FiTensor:
    return tuple(m.detach() for m in f_i) if isinstance(f_i, tuple) else f_i.detach()


def pooled(f_i: FiTensor) -> Tensor:
    """f_i as the (B, C) vector downstream tasks read: the coarsest map averaged over its positions."""
    f_i = coarsest(f_i)
    return global_pool(f_i) if f_i.dim() > 2 else f_i


class AdaINIntegration(nn.Module):
    """Eqs. 3-5 on the vector f_s = x* (`model.fi_shape=vector`)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False)  # Eq. 3: batch statistics mu, sigma
        self.gamma = nn.Conv1d(dim, dim, 1)  # gamma_d from f_d
        self.beta = nn.Conv1d(dim, dim, 1)  # beta_d from f_d
        self.mask = nn.Conv1d(dim, dim, 1)  # attention mask logits from the normalised f_s

    def forward(self, f_d: Tensor, f_s: Tensor, v_map: Tensor | None = None) -> Tensor:
        fd, fs = f_d.unsqueeze(-1), f_s.unsqueeze(-1)  # (B, C, 1)
        fs_bar = self.norm(fs)  # Eq. 3
        d = self.gamma(fd) * fs_bar + self.beta(fd)  # Eq. 4: D = gamma_d (x) fs_bar + beta_d
        m = torch.sigmoid(self.mask(fs_bar))  # M
        return ((1 - m) * d + m * fs).squeeze(-1)  # Eq. 5: f_i = (1 - M) (x) D + M (x) f_s


class ConcatIntegration(nn.Module):
    """Table I's f_i (Concat) on vectors: concatenate f_d and f_s, then a convolution back to C channels."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(2 * dim, dim, 1)

    def forward(self, f_d: Tensor, f_s: Tensor, v_map: Tensor | None = None) -> Tensor:
        return self.conv(torch.cat([f_d, f_s], dim=1).unsqueeze(-1)).squeeze(-1)


class AdaINMapIntegration(nn.Module):
    """Eqs. 3-5 on the V-network's map (`model.fi_shape=map`): f_d (B, C) and v_map (B, C', T', H', W') ->
    f_i (B, C, T', H', W'). gamma_d, beta_d are pointwise convolutions of f_d, broadcast over the positions of
    the map; M is a 3x3x3 convolution of the normalised map (FaceShifter's AAD layer [118])."""

    def __init__(self, dim: int, video_dim: int):
        super().__init__()
        self.align = nn.Conv3d(video_dim, dim, 1)  # "align the dimensions" of f_s and f_d
        self.norm = nn.BatchNorm3d(dim, affine=False)  # Eq. 3
        self.gamma = nn.Linear(dim, dim)  # a 1x1 convolution of the vector f_d
        self.beta = nn.Linear(dim, dim)
        self.mask = nn.Conv3d(dim, dim, 3, 1, 1)

    def forward(self, f_d: Tensor, f_s: Tensor, v_map: Tensor) -> Tensor:
        fs = self.align(v_map)  # (B, C, T', H', W')
        fs_bar = self.norm(fs)  # Eq. 3
        gamma, beta = (layer(f_d)[:, :, None, None, None] for layer in (self.gamma, self.beta))
        d = gamma * fs_bar + beta  # Eq. 4
        m = torch.sigmoid(self.mask(fs_bar))
        return (1 - m) * d + m * fs  # Eq. 5


class ConcatMapIntegration(nn.Module):
    """Table I's f_i (Concat) on the map: f_d broadcast over the aligned map's positions, concatenated, then a
    pointwise convolution back to C channels."""

    def __init__(self, dim: int, video_dim: int):
        super().__init__()
        self.align = nn.Conv3d(video_dim, dim, 1)
        self.conv = nn.Conv3d(2 * dim, dim, 1)

    def forward(self, f_d: Tensor, f_s: Tensor, v_map: Tensor) -> Tensor:
        fs = self.align(v_map)
        fd = f_d[:, :, None, None, None].expand_as(fs)
        return self.conv(torch.cat([fd, fs], dim=1))


class MultiLevelIntegration(nn.Module):
    """`model.fi_levels` > 1: one map integration layer per V-network level, as FaceShifter's generator integrates
    its multi-level attributes with one AAD layer per resolution [118]. (f_d, f_s, maps coarsest first) -> f_i
    maps coarsest first; [0] is the single-level layer's f_i, the feature downstream tasks pool."""

    def __init__(self, kind: Integration, dim: int, video_dims: tuple[int, ...]):
        super().__init__()
        layer = {"adain": AdaINMapIntegration, "concat": ConcatMapIntegration}[kind]
        self.levels = nn.ModuleList(layer(dim, c) for c in video_dims)

    def forward(self, f_d: Tensor, f_s: Tensor, v_maps: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return tuple(layer(f_d, f_s, m) for layer, m in zip(self.levels, v_maps, strict=True))


def build_integration(kind: Integration, shape: FiShape, dim: int, video_dim: int | tuple[int, ...]) -> nn.Module:
    """`kind` is `model.integration` (Table I), `shape` is `model.fi_shape`; `video_dim` is the V-network's
    `out_dim` (the channels of its map), or the channels of each of its `model.fi_levels` maps, coarsest first."""
    dims = video_dim if isinstance(video_dim, tuple) else (video_dim,)
    if shape == "map" and len(dims) > 1:
        return MultiLevelIntegration(kind, dim, dims)
    if shape == "map":
        return {"adain": AdaINMapIntegration, "concat": ConcatMapIntegration}[kind](dim, dims[0])
    return {"adain": AdaINIntegration, "concat": ConcatIntegration}[kind](dim)
