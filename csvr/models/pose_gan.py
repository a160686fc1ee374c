"""Pose prediction branch (Section III-B, Eq. 1): a 1D temporal CNN conditional GAN.

G_p: a 6-layer temporal encoder over the current poses P_in (B, T, N, 2) and their visibility mask, and a
decoder that outputs all T' future poses at once from the encoding and noise z_p. The dynamic motion
feature f_d is read from the configured encoder layer (Table III) and brought to the size of f_s by a
1x1 convolution and a two-layer MLP (the "conv + MLP" of Section III-B).
D_p(P | P_in): a 1D CNN over the input poses followed by the (real or generated) future poses.
No batch norm in D_p: the gradient penalty and the one-stage update treat samples independently.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from csvr.losses import last_seen_pose


def _pose_input(poses: Tensor, mask: Tensor) -> Tensor:
    """(B, T, N, 2) poses + (B, T, N) mask -> (B, 3N, T) channels: masked x, masked y, mask."""
    m = mask.unsqueeze(-1).to(poses.dtype)
    x = torch.cat([poses * m, m], dim=-1)  # (B, T, N, 3)
    return x.flatten(2).transpose(1, 2)


class PoseEncoder(nn.Module):
    """Six Conv1d layers along time; layers 3 and 5 halve the temporal length."""

    def __init__(self, joints: int, channels: int):
        super().__init__()
        strides = (1, 1, 2, 1, 2, 1)
        widths = (channels, channels, 2 * channels, 2 * channels, 4 * channels, 4 * channels)
        layers, c_in = [], 3 * joints
        for c_out, s in zip(widths, strides):
            layers.append(nn.Sequential(nn.Conv1d(c_in, c_out, 3, s, 1), nn.BatchNorm1d(c_out), nn.LeakyReLU(0.2)))
            c_in = c_out
        self.layers = nn.ModuleList(layers)
        self.widths = widths

    def forward(self, poses: Tensor, mask: Tensor) -> list[Tensor]:
        h, feats = _pose_input(poses, mask), []
        for layer in self.layers:
            h = layer(h)
            feats.append(h)  # layer l: (B, widths[l-1], T_l)
        return feats


class MotionHead(nn.Module):
    """conv + MLP after encoder layer l: (B, c_l, T_l) -> f_d (B, C)."""

    def __init__(self, in_channels: int, feature_dim: int, hidden: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(in_channels, hidden, 1), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True))
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, feature_dim))

    def forward(self, h: Tensor) -> Tensor:
        return self.mlp(self.conv(h).mean(dim=2))


class PoseDecoder(nn.Module):
    """Encoding (B, c, T_6) + z_p (B, Z) -> T' future poses at once, as offsets from the last seen pose."""

    def __init__(self, joints: int, channels: int, in_len: int, future_len: int, noise_dim: int):
        super().__init__()
        self.joints, self.future_len = joints, future_len
        self.fc = nn.Linear(4 * channels * in_len + noise_dim, channels * future_len)
        self.convs = nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.Conv1d(channels, channels, 3, 1, 1), nn.BatchNorm1d(channels), nn.LeakyReLU(0.2),
            nn.Conv1d(channels, 2 * joints, 3, 1, 1),
        )
        # Zero offsets at initialisation: G_p starts as the copy-last-pose baseline and learns the motion
        # from there (a random first layer would start it far worse than that baseline).
        nn.init.zeros_(self.convs[-1].weight)
        nn.init.zeros_(self.convs[-1].bias)

    def forward(self, code: Tensor, z: Tensor, last_pose: Tensor) -> Tensor:
        h = self.fc(torch.cat([code.flatten(1), z], dim=1)).view(len(z), -1, self.future_len)
        offsets = self.convs(h).transpose(1, 2).reshape(len(z), self.future_len, self.joints, 2)
        return last_pose.unsqueeze(1) + offsets  # P_gen: (B, T', N, 2)


class PoseGenerator(nn.Module):
    """G_p(z_p | P_in) with the motion feature f_d read from encoder layer `feature_layer` (1-based)."""

    def __init__(self, encoder: PoseEncoder, decoder: PoseDecoder, head: MotionHead, feature_layer: int,
                 noise_dim: int):
        super().__init__()
        self.encoder, self.decoder, self.head = encoder, decoder, head
        self.feature_layer, self.noise_dim = feature_layer, noise_dim

    def forward(self, poses: Tensor, mask: Tensor, z: Tensor | None = None) -> tuple[Tensor, Tensor]:
        feats = self.encoder(poses, mask)
        if z is None:
            z = torch.randn(len(poses), self.noise_dim, device=poses.device, dtype=poses.dtype)
        pred = self.decoder(feats[-1], z, last_seen_pose(poses, mask)[0])
        return pred, self.head(feats[self.feature_layer - 1])

    def motion_feature(self, poses: Tensor, mask: Tensor) -> Tensor:
        """f_d: (B, C)."""
        return self.head(self.encoder(poses, mask)[self.feature_layer - 1])


class PoseDiscriminator(nn.Module):
    """D_p(P | P_in): Conv1d over the time axis of [P_in ; P] -> one logit per sample."""

    def __init__(self, joints: int, channels: int):
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv1d(3 * joints, c, 3, 1, 1), nn.LeakyReLU(0.2),
            nn.Conv1d(c, 2 * c, 3, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv1d(2 * c, 4 * c, 3, 2, 1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4 * c, 1),
        )

    def forward(self, future: Tensor, poses: Tensor, mask: Tensor, future_mask: Tensor) -> Tensor:
        """future: (B, T', N, 2) real or generated; both are masked with the real future's mask so the
        missing-joint pattern cannot tell them apart. Returns (B,) logits."""
        seq = torch.cat([_pose_input(poses, mask), _pose_input(future, future_mask)], dim=2)  # (B, 3N, T+T')
        return self.net(seq).squeeze(1)


def build_pose_gan(joints: int, channels: int, clip_len: int, future_len: int, noise_dim: int,
                   feature_dim: int, hidden: int, feature_layer: int) -> tuple[PoseGenerator, PoseDiscriminator]:
    encoder = PoseEncoder(joints, channels)
    enc_len = (((clip_len - 1) // 2 + 1) - 1) // 2 + 1  # two stride-2 layers
    decoder = PoseDecoder(joints, channels, enc_len, future_len, noise_dim)
    discriminator = PoseDiscriminator(joints, channels)
    # built last, so the pose GAN's initialisation does not depend on the head's (Table III) settings
    head = MotionHead(encoder.widths[feature_layer - 1], feature_dim, hidden)
    return PoseGenerator(encoder, decoder, head, feature_layer, noise_dim), discriminator
