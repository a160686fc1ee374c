"""Video generating networks (Section III-D, Eqs. 6-8): G_v and D_v of the reconstructor and the predictor.

Section III-D builds the video GANs "based on TGAN v2" (Saito et al., "Train Sparsely, Generate Densely",
IJCV 2020). `model.video_gan` picks one of two builds (DESIGN.md, "TGAN-v2 as published (Section III-D)"):
  tgan2   as published: an abstract-map generator (ConvLSTM over per-frame maps) whose rendering blocks
          output a video at each of L levels, coarse to fine; a subsampling layer between levels halves the
          frames, so the full-resolution level sees T / 2^(L-1) frames in training ("train sparsely"); one
          3D-ResNet discriminator per level scores that level's video. At inference every frame is rendered at
          full resolution ("generate densely").
  single  one level: a temporal generator (1D convs over time) and a per-frame image generator, scored by
          one 3D-ResNet discriminator (how results/ was measured; the tiny preset keeps it).
Both generators take f_i as a vector (B, C) or, with `model.fi_shape=map`, as a map (B, C, T', H', W'): the
pooled map drives the temporal path as a vector does, and the map itself, resized to the generator's seed grid
and frame count, is added to the seed maps through a 3x3 convolution (a spatial condition, as pix2pix's
encoder-decoder gives its decoder). With `model.fi_levels` > 1, f_i is a tuple of maps, coarsest first: the first
is that map, each finer one joins the frames through its own 3x3 convolution where they reach its resolution
(FaceShifter's generator takes its multi-level attributes the same way [118]). Both share the API:
`generator(f_i, z=None) -> (B, 3, T, S, S)` (dense) and
`generator.levels(f_i, z=None) -> [(video_k, frame_indices_k), ...]` (training); every discriminator lists its
per-level critics with `critics()`. The discriminators have no batch norm, so the one-stage update's
per-sample gradient scaling stays exact.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from csvr.config import VideoGanKind
from csvr.models.integration import FiTensor, coarsest, finer, pooled


def upsample_steps(size: int) -> int:
    """How many x2 upsamplings render `size` from a small seed (112 -> 7 x 2^4, 32 -> 4 x 2^3)."""
    steps = 0
    while steps < 4 and size % 2 ** (steps + 1) == 0 and size // 2 ** (steps + 1) >= 4:
        steps += 1
    return steps


class TemporalGenerator(nn.Module):
    """[f_i ; z] (B, C + Z) -> per-frame latents (B, T, L)."""

    def __init__(self, in_dim: int, latent: int, frames: int):
        super().__init__()
        self.frames, self.latent = frames, latent
        self.fc = nn.Linear(in_dim, latent * frames)
        self.conv = nn.Sequential(nn.BatchNorm1d(latent), nn.ReLU(inplace=True), nn.Conv1d(latent, latent, 3, 1, 1),
                                  nn.BatchNorm1d(latent), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x).view(len(x), self.latent, self.frames)
        return self.conv(h).transpose(1, 2)


class ImageGenerator(nn.Module):
    """Per-frame latent (N, L) -> frame (N, 3, S, S)."""

    def __init__(self, latent: int, channels: int, size: int):
        super().__init__()
        steps = upsample_steps(size)
        self.seed_size = size // 2 ** steps
        widths = [max(channels // 2 ** i, 8) for i in range(steps + 1)]
        self.widths = {self.seed_size * 2 ** i: w for i, w in enumerate(widths)}  # resolution -> channels there
        self.fc = nn.Linear(latent, widths[0] * self.seed_size ** 2)
        blocks = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        self.blocks = nn.Sequential(nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True), *blocks,
                                    nn.Conv2d(widths[-1], 3, 3, 1, 1))

    def forward(self, h: Tensor, seed: Tensor | None = None, skips: dict[int, Tensor] | None = None) -> Tensor:
        """`seed` (N, widths[0], s, s), when given, is added to the seed map made from `h`; each of `skips`
        (resolution r -> (N, widths at r, r, r)) is added where the frames reach resolution r."""
        x = self.fc(h).view(len(h), -1, self.seed_size, self.seed_size)
        x = x if seed is None else x + seed
        skips = dict(skips or {})
        if self.seed_size in skips:
            x = x + skips.pop(self.seed_size)
        for layer in self.blocks:
            x = layer(x)
            if isinstance(layer, nn.ReLU) and x.shape[-1] in skips:
                x = x + skips.pop(x.shape[-1])
        return x


class SpatialCondition(nn.Module):
    """f_i map (B, C, T', H', W') -> per-frame seed maps (B, T, out, s, s): resized (trilinear) to the generator's
    frame count and seed grid, then a 3x3 convolution per frame."""

    def __init__(self, cond_dim: int, out_channels: int, frames: int, seed_size: int):
        super().__init__()
        self.frames, self.seed_size = frames, seed_size
        self.conv = nn.Conv2d(cond_dim, out_channels, 3, 1, 1)

    def forward(self, f_i: Tensor) -> Tensor:
        if f_i.dim() == 2:  # a vector is a map with one position
            f_i = f_i[:, :, None, None, None]
        grid = F.interpolate(f_i, size=(self.frames, self.seed_size, self.seed_size), mode="trilinear",
                             align_corners=False)
        return _per_frame(self.conv, grid.transpose(1, 2))


def skip_conditions(cond_dim: int, frames: int, skip_sizes: tuple[int, ...], widths: dict[int, int]) -> nn.ModuleList:
    """One `SpatialCondition` per finer f_i level (`model.fi_levels` > 1): resized to the smallest resolution the
    generator renders at or above the level's size (the level's own size where the generator renders it, as for
    the ResNets' 8 / 4 / 2 px maps at 32 px), to the generator's width there."""
    def joins(r: int) -> int:
        above = [g for g in sorted(widths) if g >= r]
        if not above:
            raise ValueError(f"an f_i map of {r} px is finer than the generated frames ({max(widths)} px): lower "
                             "model.fi_levels")
        return above[0]

    return nn.ModuleList(SpatialCondition(cond_dim, widths[joins(r)], frames, joins(r)) for r in skip_sizes)


def _skip_maps(conditions: nn.ModuleList, f_i: FiTensor) -> dict[int, Tensor]:
    """The finer f_i levels as per-frame maps (B, T, c, r, r), summed by the resolution r where they join."""
    out: dict[int, Tensor] = {}
    for cond, level in zip(conditions, finer(f_i), strict=True):
        out[cond.seed_size] = out[cond.seed_size] + cond(level) if cond.seed_size in out else cond(level)
    return out


class VideoGenerator(nn.Module):
    """G_v(z_v | f_i) -> (B, 3, T, S, S) in the normalised pixel space of the data loader. `skip_sizes` are the
    resolutions of the finer f_i maps (`model.fi_levels` > 1), each added where the frames reach its size."""

    def __init__(self, cond_dim: int, noise_dim: int, frames: int, size: int, channels: int, spatial: bool = False,
                 skip_sizes: tuple[int, ...] = ()):
        super().__init__()
        self.noise_dim = noise_dim
        self.temporal = TemporalGenerator(cond_dim + noise_dim, channels, frames)
        self.image = ImageGenerator(channels, channels, size)
        self.spatial = (SpatialCondition(cond_dim, self.image.fc.out_features // self.image.seed_size ** 2, frames,
                                         self.image.seed_size) if spatial else None)
        self.skips = skip_conditions(cond_dim, frames, skip_sizes, self.image.widths)

    def forward(self, f_i: FiTensor, z: Tensor | None = None) -> Tensor:
        coarse = coarsest(f_i)
        if z is None:
            z = torch.randn(len(coarse), self.noise_dim, device=coarse.device, dtype=coarse.dtype)
        latents = self.temporal(torch.cat([pooled(f_i), z], dim=1))  # (B, T, L)
        b, t = latents.shape[:2]
        seed = self.spatial(coarse).flatten(0, 1) if self.spatial is not None else None
        skips = {r: m.flatten(0, 1) for r, m in _skip_maps(self.skips, f_i).items()}
        frames = self.image(latents.flatten(0, 1), seed, skips)  # (B*T, 3, S, S)
        return frames.view(b, t, *frames.shape[1:]).transpose(1, 2)  # (B, 3, T, S, S)

    def levels(self, f_i: FiTensor, z: Tensor | None = None) -> list[tuple[Tensor, Tensor]]:
        """One level: the dense video and all its frame indices."""
        video = self(f_i, z)
        return [(video, torch.arange(video.shape[2], device=video.device))]


class GenBlock(nn.Module):
    """TGAN-v2's residual up-block on frames: BN-ReLU-up(x2)-conv3-BN-ReLU-conv3, plus up(x2)-conv1 skip."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.residual = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(), nn.Upsample(scale_factor=2, mode="nearest"),
                                      nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.ReLU(),
                                      nn.Conv2d(c_out, c_out, 3, 1, 1))
        self.skip = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(x) + self.skip(x)


class ConvLSTMCell(nn.Module):
    """One ConvLSTM layer (3x3 gates) over (N, C, s, s) maps."""

    def __init__(self, channels: int):
        super().__init__()
        self.gates = nn.Conv2d(2 * channels, 4 * channels, 3, 1, 1)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class AbstractMapGenerator(nn.Module):
    """TGAN-v2's temporal part: [f_i ; z] -> one abstract map per frame (B, T, C, s, s).

    A linear layer makes the first input map; a stack of ConvLSTMs unrolls it over T steps (zero input after
    the first), as in TGAN-v2's CLSTM generator."""

    def __init__(self, in_dim: int, channels: int, frames: int, seed_size: int, layers: int = 2):
        super().__init__()
        self.channels, self.frames, self.seed_size = channels, frames, seed_size
        self.fc = nn.Linear(in_dim, channels * seed_size ** 2)
        self.cells = nn.ModuleList(ConvLSTMCell(channels) for _ in range(layers))

    def forward(self, x: Tensor) -> Tensor:
        first = self.fc(x).view(len(x), self.channels, self.seed_size, self.seed_size)
        states = [(torch.zeros_like(first), torch.zeros_like(first)) for _ in self.cells]
        maps = []
        for t in range(self.frames):
            h = first if t == 0 else torch.zeros_like(first)
            for k, cell in enumerate(self.cells):
                states[k] = cell(h, states[k])
                h = states[k][0]
            maps.append(h)
        return torch.stack(maps, dim=1)  # (B, T, C, s, s)


def _per_frame(module: nn.Module, h: Tensor) -> Tensor:
    """Apply a 2D module to every frame of (B, T, C, H, W)."""
    b, t = h.shape[:2]
    out = module(h.flatten(0, 1))
    return out.view(b, t, *out.shape[1:])


def tgan2_levels(size: int, frames: int, max_levels: int = 4) -> int:
    """Rendering levels derived from the crop size and the frame count (`model.video_levels=0`): as many as
    TGAN-v2's four while the coarsest level stays >= 8 px and every level halves the size and the frames
    exactly (112 -> 14/28/56/112 px at 16/8/4/2 frames; 32 -> 8/16/32 px at 8/4/2 frames)."""
    levels = 1
    while (levels < max_levels and size % 2 ** levels == 0 and size // 2 ** levels >= 8
           and frames % 2 ** levels == 0):
        levels += 1
    return levels


class MultiLevelGenerator(nn.Module):
    """TGAN-v2's generator G_v(z_v | f_i) (Saito et al., IJCV 2020, "Train Sparsely, Generate Densely").

    Abstract maps (B, T, C, s, s) -> level 1 blocks -> render at size / 2^(L-1); each further level halves the
    frames (a subsampling layer: every second frame from a random offset), applies one up-block and renders at
    twice the previous size. `levels()` is that sparse training output; `forward()` is the dense inference
    output: every frame through every block, rendered at the full size only.
    """

    def __init__(self, cond_dim: int, noise_dim: int, frames: int, size: int, channels: int, levels: int,
                 spatial: bool = False, skip_sizes: tuple[int, ...] = ()):
        super().__init__()
        if size % 2 ** (levels - 1) or frames % 2 ** (levels - 1):
            raise ValueError(f"{levels} levels need size ({size}) and frames ({frames}) divisible by "
                             f"{2 ** (levels - 1)}")
        self.noise_dim, self.frames, self.subsample = noise_dim, frames, 2
        coarse_size = size // 2 ** (levels - 1)
        steps = upsample_steps(coarse_size)
        widths = [max(channels // 2 ** i, 8) for i in range(steps + levels)]
        seed = coarse_size // 2 ** steps
        self.abstract = AbstractMapGenerator(cond_dim + noise_dim, channels, frames, seed)
        self.spatial = SpatialCondition(cond_dim, channels, frames, seed) if spatial else None
        self.skips = skip_conditions(cond_dim, frames, skip_sizes, {seed * 2 ** i: w for i, w in enumerate(widths)})
        first = nn.Sequential(*(GenBlock(widths[i], widths[i + 1]) for i in range(steps)))
        self.blocks = nn.ModuleList([first, *(GenBlock(widths[steps + k - 1], widths[steps + k])
                                              for k in range(1, levels))])
        self.renders = nn.ModuleList(nn.Sequential(nn.BatchNorm2d(widths[steps + k]), nn.ReLU(),
                                                   nn.Conv2d(widths[steps + k], 3, 3, 1, 1)) for k in range(levels))

    def _maps(self, f_i: FiTensor, z: Tensor | None) -> tuple[Tensor, dict[int, Tensor]]:
        """The abstract maps (B, T, C, s, s) with the coarsest f_i added, and the finer f_i levels by resolution."""
        coarse = coarsest(f_i)
        if z is None:
            z = torch.randn(len(coarse), self.noise_dim, device=coarse.device, dtype=coarse.dtype)
        maps = self.abstract(torch.cat([pooled(f_i), z], dim=1))  # (B, T, C, s, s)
        skips = _skip_maps(self.skips, f_i)
        if maps.shape[-1] in skips:
            maps = maps + skips.pop(maps.shape[-1])
        return (maps if self.spatial is None else maps + self.spatial(coarse)), skips

    @staticmethod
    def _block(block: nn.Module, h: Tensor, frames: Tensor, skips: dict[int, Tensor]) -> Tensor:
        """A level's up-blocks on every frame of h; a finer f_i level joins (at h's frames) where sizes match."""
        for up in (block if isinstance(block, nn.Sequential) else [block]):
            h = _per_frame(up, h)
            if h.shape[-1] in skips:
                h = h + skips[h.shape[-1]].index_select(1, frames)
        return h

    def levels(self, f_i: FiTensor, z: Tensor | None = None) -> list[tuple[Tensor, Tensor]]:
        """Sparse training output: per level (video (B, 3, T_k, S_k, S_k), frame indices (T_k,) into the dense
        clip), coarsest first; T_k = T / 2^k, S_k = size / 2^(L-1-k)."""
        h, skips = self._maps(f_i, z)
        frames = torch.arange(self.frames, device=h.device)
        out = []
        for k, (block, render) in enumerate(zip(self.blocks, self.renders)):
            if k > 0:  # subsampling layer
                offset = int(torch.randint(self.subsample, ()))
                h, frames = h[:, offset::self.subsample], frames[offset::self.subsample]
            h = self._block(block, h, frames, skips)
            out.append((_per_frame(render, h).transpose(1, 2), frames))
        return out

    def forward(self, f_i: FiTensor, z: Tensor | None = None) -> Tensor:
        """Dense output (B, 3, T, S, S): every frame rendered at full resolution (inference)."""
        h, skips = self._maps(f_i, z)
        frames = torch.arange(self.frames, device=h.device)
        for block in self.blocks:
            h = self._block(block, h, frames, skips)
        return _per_frame(self.renders[-1], h).transpose(1, 2)


class ResBlock3d(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, c_out, 3, stride, 1)
        self.conv2 = nn.Conv3d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv3d(c_in, c_out, 1, stride) if (stride != 1 or c_in != c_out) else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.2)), 0.2))
        return h + self.skip(x)


class VideoDiscriminator(nn.Module):
    """R3D-style D_v: stem + 4 residual 3D stages (widths c, 2c, 4c, 8c) -> (B,) logits."""

    def __init__(self, channels: int):
        super().__init__()
        c = channels
        self.stem = nn.Conv3d(3, c, (3, 3, 3), (1, 2, 2), 1)
        self.stages = nn.Sequential(ResBlock3d(c, c, 1), ResBlock3d(c, 2 * c, 2), ResBlock3d(2 * c, 4 * c, 2),
                                    ResBlock3d(4 * c, 8 * c, 2))
        self.fc = nn.Linear(8 * c, 1)

    def forward(self, video: Tensor) -> Tensor:
        h = F.leaky_relu(self.stages(self.stem(video)), 0.2)
        return self.fc(h.mean(dim=(2, 3, 4))).squeeze(1)

    def critics(self) -> list[nn.Module]:
        return [self]


class MultiLevelDiscriminator(nn.Module):
    """TGAN-v2's discriminator: one 3D-ResNet per level, each scoring the video of its level."""

    def __init__(self, channels: int, levels: int):
        super().__init__()
        self.levels = nn.ModuleList(VideoDiscriminator(channels) for _ in range(levels))

    def forward(self, videos: list[Tensor]) -> list[Tensor]:
        return [critic(v) for critic, v in zip(self.levels, videos, strict=True)]  # [(B,)] * L

    def critics(self) -> list[nn.Module]:
        return list(self.levels)


class VideoGAN(nn.Module):
    """One generator/discriminator pair (the reconstructor G_v^r/D_v^r or the predictor G_v^p/D_v^p)."""

    def __init__(self, generator: VideoGenerator | MultiLevelGenerator,
                 discriminator: VideoDiscriminator | MultiLevelDiscriminator):
        super().__init__()
        self.generator, self.discriminator = generator, discriminator


def level_target(video: Tensor, frames: Tensor, factor: int) -> Tensor:
    """A real video (B, 3, T, S, S) seen as one level: the level's frames, average-pooled by `factor` in space
    (TGAN-v2 pools the real video the same way for each level's discriminator)."""
    video = video.index_select(2, frames)
    return F.avg_pool3d(video, (1, factor, factor)) if factor > 1 else video


def _single(cond_dim: int, noise_dim: int, frames: int, size: int, gen_channels: int, disc_channels: int,
            levels: int, spatial: bool, skip_sizes: tuple[int, ...]) -> VideoGAN:
    return VideoGAN(VideoGenerator(cond_dim, noise_dim, frames, size, gen_channels, spatial, skip_sizes),
                    VideoDiscriminator(disc_channels))


def _tgan2(cond_dim: int, noise_dim: int, frames: int, size: int, gen_channels: int, disc_channels: int,
           levels: int, spatial: bool, skip_sizes: tuple[int, ...]) -> VideoGAN:
    levels = levels or tgan2_levels(size, frames)
    return VideoGAN(MultiLevelGenerator(cond_dim, noise_dim, frames, size, gen_channels, levels, spatial, skip_sizes),
                    MultiLevelDiscriminator(disc_channels, levels))


VIDEO_GANS = {"single": _single, "tgan2": _tgan2}  # model.video_gan


def build_video_gan(cond_dim: int, noise_dim: int, frames: int, size: int, gen_channels: int,
                    disc_channels: int, kind: VideoGanKind = "single", levels: int = 0,
                    spatial: bool = False, skip_sizes: tuple[int, ...] = ()) -> VideoGAN:
    """`kind` is `model.video_gan`; `levels` is `model.video_levels` (tgan2 only; 0 = `tgan2_levels(size,
    frames)`); `spatial`: the generators take f_i maps (`model.fi_shape=map`); `skip_sizes`: the resolutions of
    the finer f_i maps (`model.fi_levels` > 1), coarse to fine."""
    return VIDEO_GANS[kind](cond_dim, noise_dim, frames, size, gen_channels, disc_channels, levels, spatial,
                            skip_sizes)
