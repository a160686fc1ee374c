"""Video generating networks (Section III-D, Eqs. 6-8): TGAN-v2-style generators, R3D-style discriminators.

Generator G_v(z_v | f_i), after TGAN v2 (Saito et al.): a temporal generator turns [f_i ; z] into one latent
per frame with 1D convolutions along time, and an image generator shared across frames renders each
latent by nearest-upsampling conv blocks. The reconstructor renders the current clip, the predictor the
future clip; they have the same structure.
Discriminator D_v: a 3D residual network (R3D blocks, no batch norm so the one-stage update's per-sample
gradient scaling stays exact) -> one logit per clip.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
        self.fc = nn.Linear(latent, widths[0] * self.seed_size ** 2)
        blocks = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        self.blocks = nn.Sequential(nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True), *blocks,
                                    nn.Conv2d(widths[-1], 3, 3, 1, 1))

    def forward(self, h: Tensor) -> Tensor:
        x = self.fc(h).view(len(h), -1, self.seed_size, self.seed_size)
        return self.blocks(x)


class VideoGenerator(nn.Module):
    """G_v(z_v | f_i) -> (B, 3, T, S, S) in the normalised pixel space of the data loader."""

    def __init__(self, cond_dim: int, noise_dim: int, frames: int, size: int, channels: int):
        super().__init__()
        self.noise_dim = noise_dim
        self.temporal = TemporalGenerator(cond_dim + noise_dim, channels, frames)
        self.image = ImageGenerator(channels, channels, size)

    def forward(self, f_i: Tensor, z: Tensor | None = None) -> Tensor:
        if z is None:
            z = torch.randn(len(f_i), self.noise_dim, device=f_i.device, dtype=f_i.dtype)
        latents = self.temporal(torch.cat([f_i, z], dim=1))  # (B, T, L)
        b, t = latents.shape[:2]
        frames = self.image(latents.flatten(0, 1))  # (B*T, 3, S, S)
        return frames.view(b, t, *frames.shape[1:]).transpose(1, 2)  # (B, 3, T, S, S)


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


class VideoGAN(nn.Module):
    """One generator/discriminator pair (the reconstructor G_v^r/D_v^r or the predictor G_v^p/D_v^p)."""

    def __init__(self, generator: VideoGenerator, discriminator: VideoDiscriminator):
        super().__init__()
        self.generator, self.discriminator = generator, discriminator


def build_video_gan(cond_dim: int, noise_dim: int, frames: int, size: int, gen_channels: int,
                    disc_channels: int) -> VideoGAN:
    return VideoGAN(VideoGenerator(cond_dim, noise_dim, frames, size, gen_channels), VideoDiscriminator(disc_channels))
